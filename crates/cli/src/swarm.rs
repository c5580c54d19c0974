//! `troca tracker` (runs a tracker), `troca swarm ls` and `troca swarm get` (ask one, download
//! from its peers). `troca peer` is in `peer.rs`.

use crate::args::{Global, Seed, SwarmCommand};
use crate::output::{self, print_json};
use crate::progress::Bar;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use troca_peer::download::{self, Options, Outcome};
use troca_peer::{Peer, PeerConfig, ServerConfig};
use troca_proto::tracker::Listed;
use troca_tracker::client::TrackerClient;
use troca_tracker::metrics::TrackerMetrics;
use troca_tracker::{Stats, TrackerConfig};

pub fn tracker(
    listen: &[String],
    lifetime: Duration,
    stats_every: Duration,
    metrics: Option<&str>,
    limits: &crate::args::TrackerLimits,
) -> Result<ExitCode> {
    if listen.len() > 2 {
        anyhow::bail!("at most two --listen addresses (one IPv4, one IPv6)");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let signals = crate::serve::Signals::catch()?;
        let mut sockets = Vec::new();
        for addr in listen {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            println!("listening on {}", socket.local_addr()?);
            sockets.push(socket);
        }
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        if let Some(listener) = crate::serve::metrics_listener(metrics).await? {
            println!("metrics http://{}/metrics", listener.local_addr()?);
            let (from, registry) = (Arc::clone(&stats), Arc::new(TrackerMetrics::new()));
            let render: troca_web::metrics::Render = Arc::new(move || {
                let text = registry.encode(&from);
                Box::pin(async move { text })
            });
            tokio::spawn(troca_web::metrics::serve(listener, render, stop.clone()));
        }
        std::io::stdout().flush()?;
        let config = tracker_config(lifetime, limits);
        let server = tokio::spawn(troca_tracker::run_on(
            sockets,
            config,
            Arc::clone(&stats),
            stop.clone(),
        ));
        let printer = (!stats_every.is_zero())
            .then(|| tokio::spawn(print_stats(Arc::clone(&stats), stats_every)));
        signals.wait().await;
        stop.cancel();
        if let Some(p) = printer {
            p.abort();
        }
        server.await??;
        Ok(ExitCode::SUCCESS)
    })
}

/// The tracker's configuration from its command line.
fn tracker_config(lifetime: Duration, limits: &crate::args::TrackerLimits) -> TrackerConfig {
    TrackerConfig {
        lifetime,
        max_peers: limits.max_peers,
        max_peers_per_ip: limits.max_peers_per_ip,
        max_files_per_peer: limits.max_files_per_peer,
        max_files_per_ip: limits.max_files_per_ip,
        max_files: limits.max_files,
        max_torrent_peers: limits.max_torrent_peers,
        max_torrent_peers_per_ip: limits.max_torrent_peers_per_ip,
    }
}

/// Prints what the tracker holds and serves on stderr every `every`, until aborted.
async fn print_stats(stats: Arc<Stats>, every: Duration) {
    let mut last = 0;
    loop {
        tokio::time::sleep(every).await;
        let n = stats.requests.load(Ordering::Relaxed);
        let count = |c: &std::sync::atomic::AtomicU64, one, many| {
            output::count(c.load(Ordering::Relaxed), one, many)
        };
        let unrecorded = stats.torrent_peers_unrecorded.load(Ordering::Relaxed);
        let full = if unrecorded == 0 {
            String::new()
        } else {
            format!(
                ", {} not remembered for lack of room (--max-torrent-peers, \
                 --max-torrent-peers-per-ip)",
                output::count(unrecorded, "BitTorrent peer", "BitTorrent peers")
            )
        };
        eprintln!(
            "troca tracker: {}, {}, {}, {}, {:.1} requests/s, {} dropped, {}{full}",
            count(&stats.peers, "peer", "peers"),
            count(&stats.files, "file", "files"),
            count(&stats.torrents, "torrent", "torrents"),
            count(&stats.torrent_peers, "BitTorrent peer", "BitTorrent peers"),
            (n - last) as f64 / every.as_secs_f64(),
            stats.dropped.load(Ordering::Relaxed),
            count(&stats.bad_cookies, "bad cookie", "bad cookies"),
        );
        last = n;
    }
}

/// The tracker's address, resolved.
pub async fn resolve(tracker: &str) -> Result<SocketAddr> {
    let tracker = crate::client::with_default_port(tracker, 13377);
    let found = tokio::net::lookup_host(&tracker)
        .await
        .with_context(|| format!("cannot resolve {tracker}"))?
        .next();
    found.with_context(|| format!("no address for {tracker}"))
}

pub fn main(global: &Global, cmd: SwarmCommand) -> Result<ExitCode> {
    // A download serves other peers while it runs: more than one thread.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cmd {
            SwarmCommand::Ls { tracker, filter } => {
                let mut client = TrackerClient::new(resolve(&tracker.addr).await?).await?;
                let files = client.list(filter.as_deref().unwrap_or(""), None).await?;
                print_listing(global.json, &files)?;
                Ok(ExitCode::SUCCESS)
            }
            SwarmCommand::Get {
                tracker,
                what,
                output,
                plaintext,
                listen,
                seed,
                no_share,
                upload_slots,
            } => {
                std::fs::create_dir_all(&output)
                    .with_context(|| format!("cannot create {}", output.display()))?;
                let get = Get {
                    tracker: resolve(&tracker.addr).await?,
                    what,
                    output,
                    plaintext: plaintext || global.plaintext,
                    upload_slots,
                };
                if no_share {
                    get.only(global).await
                } else {
                    get.sharing(global, &listen, seed).await
                }
            }
        }
    })
}

/// What `troca swarm get` was asked for.
struct Get {
    tracker: SocketAddr,
    what: String,
    output: std::path::PathBuf,
    plaintext: bool,
    upload_slots: usize,
}

impl Get {
    fn options(&self, global: &Global) -> Options {
        Options {
            client_name: crate::client::client_name(global),
            allow_plaintext: self.plaintext,
            ..Options::default()
        }
    }

    /// Downloads without sharing (`--no-share`): a client of the swarm only.
    async fn only(self, global: &Global) -> Result<ExitCode> {
        let mut client = TrackerClient::new(self.tracker).await?;
        let found = troca_peer::lookup::find(&mut client, &self.what).await?;
        let bar = Arc::new(Bar::new(
            &download::local_name(&found.wanted()),
            global.quiet,
        ));
        let options = self.options(global);
        let outcome = download::download_found(&found, &[], &self.output, &options, bar).await?;
        print_outcome(global, &outcome)?;
        Ok(ExitCode::SUCCESS)
    }

    /// Downloads as a peer of the swarm: each piece it holds is served to the others (the
    /// tracker lists it as a holder from the start), and with `--seed` the whole file after.
    async fn sharing(self, global: &Global, listen: &str, seed: Option<Seed>) -> Result<ExitCode> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        if addr.ip().is_loopback() && !self.tracker.ip().is_loopback() && !global.quiet {
            eprintln!(
                "troca: sharing the download on {addr}, which other machines cannot reach; \
                 use --listen 0.0.0.0:0 to share with them (or --no-share)"
            );
        }
        let config = PeerConfig {
            dir: self.output.clone(),
            only_images: false,
            tracker: self.tracker,
            refresh: Duration::from_secs(60),
            server: ServerConfig {
                upload_slots: self.upload_slots,
                ..ServerConfig::default()
            },
            download: self.options(global),
            identity: crate::peer::identity(self.plaintext)?,
            share_folder: false,
        };
        let shutdown = CancellationToken::new();
        let signals = crate::serve::Signals::catch()?;
        let peer = Peer::start(listener, config, shutdown.clone()).await?;
        let bar = Arc::new(Bar::new(&self.what, global.quiet));
        let fetched = peer.fetch(&self.what, bar).await;
        let outcome = match fetched {
            Ok(o) => o,
            Err(e) => {
                let _ = peer.stop().await;
                return Err(e.into());
            }
        };
        // Said as the user named the folder, as `--no-share` says it.
        let mut outcome = outcome;
        if let Some(file) = outcome.path.file_name() {
            outcome.path = self.output.join(file);
        }
        print_outcome(global, &outcome)?;
        if let Some(seed) = seed {
            let name = outcome.path.display();
            match seed {
                Seed::For(d) => {
                    eprintln!("troca: sharing {name} for {}", humantime(d));
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = signals.wait() => {}
                    }
                }
                Seed::UntilStopped => {
                    eprintln!("troca: sharing {name} until stopped (Ctrl-C)");
                    signals.wait().await;
                }
            }
        }
        if let Err(e) = peer.stop().await {
            // The file is here and verified; a tracker that did not hear us leave drops this
            // peer when its registration lapses.
            crate::peer::unheard_leave(&e);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A duration as people write it: `90s`, `10m`, `2h`.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

pub fn print_listing(json: bool, files: &[Listed]) -> Result<()> {
    if files.is_empty() && !json {
        // On stderr, so scripts reading stdout still see nothing.
        eprintln!("troca: no files on the swarm match");
    }
    if json {
        let rows: Vec<_> = files
            .iter()
            .map(|l| {
                serde_json::json!({
                    "id": troca_proto::hex(&l.file.id),
                    "name": l.file.name,
                    "size": l.file.size,
                    "peers": l.peers.iter().map(|p| p.addr.to_string()).collect::<Vec<_>>(),
                    "keys": l.peers.iter().map(|p| p.key.map(|k| k.to_string())).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&rows)?;
    } else {
        for l in files {
            let id = troca_proto::hex(&l.file.id);
            println!(
                "{}  {:>10}  {:>3} {}  {}",
                &id[..16],
                output::size(l.file.size),
                l.peers.len(),
                if l.peers.len() == 1 { "peer " } else { "peers" },
                output::safe(&l.file.name)
            );
        }
    }
    Ok(())
}

/// Where a swarm download went and which peers gave what.
pub fn print_outcome(global: &Global, o: &Outcome) -> Result<()> {
    let id = troca_proto::hex(&o.id);
    if global.json {
        let peers: Vec<_> = o
            .peers
            .iter()
            .map(|p| {
                serde_json::json!({
                    "address": p.addr.to_string(),
                    "pieces": p.pieces,
                    "bytes": p.bytes,
                    "bad_pieces": p.bad_pieces,
                    "dropped": p.dropped,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "id": id,
            "blake3": id,
            "path": o.path.display().to_string(),
            "size": o.size,
            "pieces": o.pieces,
            "resumed_pieces": o.resumed_pieces,
            "peers": peers,
        }));
    }
    if !global.quiet {
        let helped = o.peers.iter().filter(|p| p.pieces > 0).count();
        eprintln!(
            "troca: saved {} ({}, {}, verified) from {}",
            o.path.display(),
            output::size(o.size),
            output::count(o.pieces, "piece", "pieces"),
            output::count(helped as u64, "peer", "peers"),
        );
        for p in &o.peers {
            match &p.dropped {
                Some(why) => eprintln!("  {}  dropped: {}", p.addr, output::safe(why)),
                None => eprintln!(
                    "  {}  {}, {}",
                    p.addr,
                    output::count(p.pieces, "piece", "pieces"),
                    output::size(p.bytes)
                ),
            }
        }
    }
    println!("{}", o.path.display());
    Ok(())
}
