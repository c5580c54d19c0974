//! `troca-loadgen`: drives a hub through the real client library for the benchmarks.
//!
//! - `get`: N connections each download random files under a prefix (hash-verified, as the CLI
//!   does) for a fixed time; prints requests/s and latency percentiles as one JSON line. With
//!   `--pipeline K` each connection keeps K requests in flight, as a folder download does, so
//!   that the load generator costs less per request than the hubs it measures.
//! - `idle`: opens N connections, completes the handshake on each, holds them, and checks the
//!   hub still answers a listing on a fresh connection meanwhile.
//!
//! - `tracker` and `udp-echo`: see [`tracker`].
//!
//! It runs on one thread, like redis-benchmark, so it competes with the hub for as little CPU as
//! possible on a small machine.

mod s3put;
mod tracker;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::time::{Duration, Instant};
use troca_net::batch::get_pipelined;
use troca_net::transfer::download_to_writer;
use troca_net::{ClientOptions, HubClient, NoProgress};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:13370")]
    hub: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Get {
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Download the files whose names start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Requests kept in flight on each connection (1: each waits for its answer).
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
    },
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 5)]
        hold_seconds: u64,
    },
    /// Simulated peers send REG/LST/UPD to a tracker (or, with --echo, to `udp-echo`).
    Tracker {
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The target is `udp-echo`: send the same datagrams, expect them back.
        #[arg(long)]
        echo: bool,
    },
    /// A file sent straight to an S3 bucket as a multipart upload (the upload baseline).
    S3Put {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 8 << 20)]
        part: usize,
        #[arg(long, default_value_t = 4)]
        in_flight: usize,
        file: std::path::PathBuf,
    },
    /// Every file of a folder sent straight to an S3 bucket, one PUT each, several at a time
    /// (the small-files upload baseline).
    S3PutFiles {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        dir: std::path::PathBuf,
    },
    /// The objects named on stdin read straight from an S3 bucket, several at a time, each
    /// into a file of DIR (the small-files download baseline).
    S3GetKeys {
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long, default_value_t = 16)]
        in_flight: usize,
        dir: std::path::PathBuf,
    },
    /// A UDP server that answers each datagram with itself (the tracker benchmark's baseline).
    UdpEcho {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn main() -> Result<()> {
    troca_net::raise_fd_limit();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.mode {
            Mode::Get {
                connections,
                seconds,
                prefix,
                pipeline,
            } => {
                let load = GetLoad {
                    connections,
                    seconds,
                    pipeline,
                };
                get(&args.hub, &prefix, load).await
            }
            Mode::Idle {
                connections,
                hold_seconds,
            } => idle(&args.hub, connections, hold_seconds).await,
            Mode::Tracker {
                target,
                clients,
                seconds,
                echo,
            } => tracker::load(target, clients, seconds, echo).await,
            Mode::UdpEcho { listen } => tracker::echo(&listen).await,
            Mode::S3Put {
                endpoint,
                bucket,
                key,
                part,
                in_flight,
                file,
            } => s3put::put(&endpoint, &bucket, &file, &key, part, in_flight).await,
            Mode::S3PutFiles {
                endpoint,
                bucket,
                prefix,
                in_flight,
                dir,
            } => s3put::put_files(&endpoint, &bucket, &dir, &prefix, in_flight).await,
            Mode::S3GetKeys {
                endpoint,
                bucket,
                in_flight,
                dir,
            } => s3put::get_keys(&endpoint, &bucket, &dir, in_flight).await,
        }
    })
}

/// The hub's key from TROCA_HUB_KEY (TLS), or plaintext when it is not set (a hub run with
/// --plaintext).
fn options() -> ClientOptions {
    let key = std::env::var("TROCA_HUB_KEY")
        .ok()
        .and_then(|k| k.parse::<troca_proto::key::HubKey>().ok());
    ClientOptions {
        name: "loadgen".into(),
        token: None,
        owner_key: None,
        trust: key.map_or(troca_net::Trust::Plaintext, |k| {
            troca_net::Trust::Key(Some(k))
        }),
        roots: None,
        silence: None,
        pacer: None,
    }
}

/// How hard `get` drives a hub.
#[derive(Clone, Copy)]
struct GetLoad {
    connections: usize,
    seconds: u64,
    pipeline: usize,
}

async fn get(hub: &str, prefix: &str, load: GetLoad) -> Result<()> {
    let names: Vec<String> = HubClient::connect(hub, &options())
        .await?
        .list(prefix)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    if names.is_empty() {
        bail!("no files under {prefix:?}");
    }
    let names = std::rc::Rc::new(names);
    let deadline = Instant::now() + Duration::from_secs(load.seconds);
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::new();
    for worker in 0..load.connections {
        let (names, hub) = (names.clone(), hub.to_owned());
        tasks.push(local.spawn_local(async move {
            let client = HubClient::connect(&hub, &options()).await?;
            // A cheap deterministic spread over the files, different per worker.
            let mut i = worker * 7919;
            let pick = move || {
                let name = names[i % names.len()].clone();
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    >> 1;
                name
            };
            requests(client, pick, load.pipeline, deadline).await
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    local
        .run_until(async {
            for t in tasks {
                all.extend(t.await.context("worker panicked")??);
            }
            anyhow::Ok(())
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p| percentile_us(&all, p);
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(),
            "seconds": secs,
            "rps": all.len() as f64 / secs,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
        })
    );
    Ok(())
}

/// One connection's downloads of `pick`'s names until `deadline`, `pipeline` at a time; the
/// time each waited for its answer.
async fn requests(
    mut client: HubClient,
    mut pick: impl FnMut() -> String,
    pipeline: usize,
    deadline: Instant,
) -> Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    if pipeline <= 1 {
        while Instant::now() < deadline {
            let start = Instant::now();
            download_to_writer(
                &mut client,
                &pick(),
                &mut std::io::sink(),
                &NoProgress,
                &mut Default::default(),
            )
            .await?;
            latencies.push(start.elapsed());
        }
        return Ok(latencies);
    }
    let (mut asked, mut answered) = (Vec::new(), Vec::new());
    let next = || {
        (Instant::now() < deadline).then(|| {
            asked.push(Instant::now());
            pick()
        })
    };
    let got = |_: &str, _: &[u8]| answered.push(Instant::now());
    get_pipelined(&mut client, pipeline, next, got).await?;
    // Answers come in the order asked.
    latencies.extend(answered.iter().zip(&asked).map(|(a, s)| *a - *s));
    Ok(latencies)
}

async fn idle(hub: &str, connections: usize, hold_seconds: u64) -> Result<()> {
    let mut held = Vec::with_capacity(connections);
    for i in 0..connections {
        let c = HubClient::connect(hub, &options())
            .await
            .with_context(|| format!("connection {i}"))?;
        held.push(c);
    }
    let start = Instant::now();
    let files = HubClient::connect(hub, &options())
        .await?
        .list("")
        .await?
        .len();
    let list_ms = start.elapsed().as_secs_f64() * 1e3;
    tokio::time::sleep(Duration::from_secs(hold_seconds)).await;
    // Every held connection is still served.
    let mut alive = 0;
    for c in held.iter_mut().step_by((connections / 100).max(1)) {
        if c.list("").await.is_ok() {
            alive += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "held": held.len(),
            "sampled_alive": alive,
            "sampled": held.iter().step_by((connections / 100).max(1)).count(),
            "list_files": files,
            "list_ms_while_held": list_ms,
        })
    );
    Ok(())
}

/// The `p` quantile of sorted, non-empty latencies, in microseconds.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e6
}
