//! `troca-loadgen tracker`: simulated peers hammering a tracker with troca's own mix of requests,
//! and `troca-loadgen udp-echo`, the baseline: a UDP server that answers each datagram with itself,
//! so the same load generator measures what plain loopback UDP round trips cost here.
//!
//! Each simulated peer has its own socket on its own loopback address (127.0.x.y), so the
//! tracker's per-address limit does not cap the test. It registers 10 files, then loops,
//! one request at a time: 7 in 10 are LST (a name filter matching many files, first page), 2 in
//! 10 UPD (add or remove one file), 1 in 10 REG (a refresh with the whole list). At the end each
//! sends END, so consecutive runs start from the same state.

use anyhow::{bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use troca_proto::tracker::{Answer, Datagram, FileInfo, Request, UpdateMode, MAX_DATAGRAM};

/// Runs `clients` simulated peers against `target` for `seconds`; prints one JSON line.
pub async fn load(target: SocketAddr, clients: usize, seconds: u64, echo: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(local.spawn_local(simulated_peer(target, c, deadline, echo)));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut lost = 0u64;
    local
        .run_until(async {
            for t in tasks {
                let (lat, l) = t.await.context("worker panicked")??;
                all.extend(lat);
                lost += l;
            }
            anyhow::Ok(())
        })
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if all.is_empty() {
        bail!("no answers at all");
    }
    all.sort();
    let pct = |p| crate::percentile_us(&all, p);
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(),
            "lost": lost,
            "seconds": secs,
            "rps": all.len() as f64 / secs,
            "p50_us": pct(0.50),
            "p99_us": pct(0.99),
        })
    );
    Ok(())
}

fn file(client: usize, k: usize) -> FileInfo {
    FileInfo {
        id: *blake3::hash(format!("{client}/{k}").as_bytes()).as_bytes(),
        size: (client * 1000 + k) as u64,
        name: format!("photo-{client:05}-{k:03}.jpg"),
    }
}

async fn simulated_peer(
    target: SocketAddr,
    c: usize,
    deadline: Instant,
    echo: bool,
) -> Result<(Vec<Duration>, u64)> {
    let ip = Ipv4Addr::new(127, 1 + (c / 250) as u8, (c % 250) as u8, 1);
    let socket = UdpSocket::bind((ip, 0)).await?;
    socket.connect(target).await?;
    let socket = Rc::new(socket);
    let mut txn = 0u32;
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let secret = [c as u8; 16];
    let mut files: Vec<FileInfo> = (0..10).map(|k| file(c, k)).collect();
    let mut next_file = 10;
    let mut cookie = 0u64;
    let mut latencies = Vec::new();
    let mut lost = 0;
    let mut i = 0usize;
    loop {
        let body = if !echo && cookie == 0 {
            Request::Connect
        } else if i == 0 {
            Request::Register {
                port: 6881,
                secret,
                key: Some(troca_proto::key::HubKey([7; 32])),
                files: files.clone(),
            }
        } else {
            match i % 10 {
                0 => Request::Register {
                    port: 6881,
                    secret,
                    key: Some(troca_proto::key::HubKey([7; 32])),
                    files: files.clone(),
                },
                7 => {
                    let f = file(c, next_file);
                    next_file += 1;
                    files.push(f.clone());
                    Request::Update {
                        secret,
                        mode: UpdateMode::Add,
                        files: vec![f],
                    }
                }
                8 => Request::Update {
                    secret,
                    mode: UpdateMode::Remove,
                    files: vec![files.remove(0)],
                },
                _ => Request::List {
                    filter: format!("photo-{:04}", (c * 7 + i) % 100 / 10),
                    id: None,
                    cursor: 0,
                    whole_name: false,
                },
            }
        };
        if Instant::now() >= deadline {
            // Leave, so the next run starts from the same state (not timed).
            if !echo && cookie != 0 {
                out.clear();
                Datagram {
                    txn: txn.wrapping_add(1),
                    cookie,
                    body: Request::End { secret },
                }
                .encode(&mut out);
                socket.send(&out).await?;
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await;
            }
            return Ok((latencies, lost));
        }
        txn = txn.wrapping_add(1);
        out.clear();
        let is_connect = matches!(body, Request::Connect);
        Datagram { txn, cookie, body }.encode(&mut out);
        let start = Instant::now();
        socket.send(&out).await?;
        match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
            Err(_) => {
                lost += 1;
                continue;
            }
            Ok(n) => {
                let n = n?;
                latencies.push(start.elapsed());
                if echo {
                    i += 1;
                    continue;
                }
                match Datagram::<Answer>::decode(&buf[..n]) {
                    Ok(d) => match d.body {
                        Answer::Cookie(k) => cookie = k,
                        Answer::Error { code, message } => {
                            bail!("tracker refused ({code}): {message}")
                        }
                        _ => {}
                    },
                    Err(e) => bail!("bad answer: {e}"),
                }
            }
        }
        if !is_connect {
            i += 1;
        }
    }
}

/// Answers every datagram with itself, on one thread, until killed.
pub async fn echo(listen: &str) -> Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    println!("listening on {}", socket.local_addr()?);
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..n], from).await?;
    }
}
