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

/// One simulated peer: its socket, the files it shares, and what it measured.
struct Peer {
    c: usize,
    socket: Rc<UdpSocket>,
    echo: bool,
    txn: u32,
    cookie: u64,
    secret: [u8; 16],
    files: Vec<FileInfo>,
    next_file: usize,
    /// Requests answered so far, Connects aside: what picks the next request of the mix.
    i: usize,
    buf: Vec<u8>,
    out: Vec<u8>,
    latencies: Vec<Duration>,
    lost: u64,
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
    let mut peer = Peer {
        c,
        socket: Rc::new(socket),
        echo,
        txn: 0,
        cookie: 0,
        secret: [c as u8; 16],
        files: (0..10).map(|k| file(c, k)).collect(),
        next_file: 10,
        i: 0,
        buf: vec![0u8; 2048],
        out: Vec::with_capacity(MAX_DATAGRAM),
        latencies: Vec::new(),
        lost: 0,
    };
    loop {
        let body = peer.next_request();
        if Instant::now() >= deadline {
            peer.leave().await?;
            return Ok((peer.latencies, peer.lost));
        }
        peer.ask(body).await?;
    }
}

impl Peer {
    /// The next request of the mix: a Connect while it has no cookie, a Register first, then
    /// 7 in 10 LST, 2 in 10 UPD, 1 in 10 REG.
    fn next_request(&mut self) -> Request {
        if !self.echo && self.cookie == 0 {
            return Request::Connect;
        }
        let (c, i, secret) = (self.c, self.i, self.secret);
        let register = || Request::Register {
            port: 6881,
            secret,
            key: Some(troca_proto::key::HubKey([7; 32])),
            files: self.files.clone(),
        };
        if i == 0 {
            return register();
        }
        match i % 10 {
            0 => register(),
            7 => {
                let f = file(c, self.next_file);
                self.next_file += 1;
                self.files.push(f.clone());
                Request::Update {
                    secret,
                    mode: UpdateMode::Add,
                    files: vec![f],
                }
            }
            8 => Request::Update {
                secret,
                mode: UpdateMode::Remove,
                files: vec![self.files.remove(0)],
            },
            _ => Request::List {
                filter: format!("photo-{:04}", (c * 7 + i) % 100 / 10),
                id: None,
                cursor: 0,
                whole_name: false,
            },
        }
    }

    /// Sends END, so the next run starts from the same state (not timed).
    async fn leave(&mut self) -> Result<()> {
        if self.echo || self.cookie == 0 {
            return Ok(());
        }
        self.out.clear();
        Datagram {
            txn: self.txn.wrapping_add(1),
            cookie: self.cookie,
            body: Request::End {
                secret: self.secret,
            },
        }
        .encode(&mut self.out);
        self.socket.send(&self.out).await?;
        let _ =
            tokio::time::timeout(Duration::from_millis(500), self.socket.recv(&mut self.buf)).await;
        Ok(())
    }

    /// Sends `body` and waits for its answer (half a second, else it counts as lost).
    async fn ask(&mut self, body: Request) -> Result<()> {
        self.txn = self.txn.wrapping_add(1);
        self.out.clear();
        let is_connect = matches!(body, Request::Connect);
        Datagram {
            txn: self.txn,
            cookie: self.cookie,
            body,
        }
        .encode(&mut self.out);
        let start = Instant::now();
        self.socket.send(&self.out).await?;
        let answer =
            tokio::time::timeout(Duration::from_millis(500), self.socket.recv(&mut self.buf));
        let Ok(n) = answer.await else {
            self.lost += 1;
            return Ok(());
        };
        let n = n?;
        self.latencies.push(start.elapsed());
        if self.echo {
            self.i += 1;
            return Ok(());
        }
        match Datagram::<Answer>::decode(&self.buf[..n]) {
            Ok(d) => match d.body {
                Answer::Cookie(k) => self.cookie = k,
                Answer::Error { code, message } => bail!("tracker refused ({code}): {message}"),
                _ => {}
            },
            Err(e) => bail!("bad answer: {e}"),
        }
        if !is_connect {
            self.i += 1;
        }
        Ok(())
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
