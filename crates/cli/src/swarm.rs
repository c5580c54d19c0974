//! `troca tracker` (runs a tracker) and `troca swarm ls` (asks one). Peers and multi-source
//! downloads (`troca peer`, `troca swarm get`) are not written yet.

use crate::args::{Global, SwarmCommand};
use crate::output::{self, print_json};
use anyhow::{Context, Result};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use troca_tracker::client::TrackerClient;
use troca_tracker::{Stats, TrackerConfig};

pub fn tracker(listen: &str, lifetime: Duration, stats_every: Duration) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        println!("listening on {}", socket.local_addr()?);
        std::io::stdout().flush()?;
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let config = TrackerConfig {
            lifetime,
            ..TrackerConfig::default()
        };
        let server = tokio::spawn(troca_tracker::run(socket, config, Arc::clone(&stats), stop.clone()));
        let printer = (!stats_every.is_zero()).then(|| {
            let stats = Arc::clone(&stats);
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(stats_every).await;
                    let n = stats.requests.load(Ordering::Relaxed);
                    eprintln!(
                        "troca tracker: {} peers, {} files, {:.1} requests/s, {} dropped, {} bad cookies",
                        stats.peers.load(Ordering::Relaxed),
                        stats.files.load(Ordering::Relaxed),
                        (n - last) as f64 / stats_every.as_secs_f64(),
                        stats.dropped.load(Ordering::Relaxed),
                        stats.bad_cookies.load(Ordering::Relaxed),
                    );
                    last = n;
                }
            })
        });
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
        if let Some(p) = printer {
            p.abort();
        }
        server.await??;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn main(global: &Global, cmd: SwarmCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            SwarmCommand::Ls { tracker, filter } => {
                let addr = tokio::net::lookup_host(&tracker)
                    .await
                    .with_context(|| format!("cannot resolve {tracker}"))?
                    .next()
                    .with_context(|| format!("no address for {tracker}"))?;
                let mut client = TrackerClient::new(addr).await?;
                let files = client.list(filter.as_deref().unwrap_or(""), None).await?;
                if global.json {
                    let rows: Vec<_> = files
                        .iter()
                        .map(|l| {
                            serde_json::json!({
                                "id": blake3::Hash::from_bytes(l.file.id).to_hex().to_string(),
                                "name": l.file.name,
                                "size": l.file.size,
                                "peers": l.peers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    print_json(&rows)?;
                } else {
                    for l in files {
                        let id = blake3::Hash::from_bytes(l.file.id).to_hex();
                        println!(
                            "{}  {:>10}  {:>3} peers  {}",
                            &id[..16],
                            output::size(l.file.size),
                            l.peers.len(),
                            l.file.name
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
