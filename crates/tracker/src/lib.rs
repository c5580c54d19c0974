//! The troca swarm tracker as a library: [`run`] answers seed 004's REG, LST, UPD and END over UDP
//! until a shutdown token is cancelled. It only knows which peer (by the source address of its
//! packets) shares which files; file bytes never pass through it. [`client`] is the peers' side.
//!
//! All state lives on the one task that owns the socket, so there are no locks; a tracker's work
//! per packet is a few hash-map operations.

pub mod client;
mod cookie;
mod state;

use state::State;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use troca_proto::tracker::{Answer, Datagram, Request, MAX_DATAGRAM};

/// How a tracker runs.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// How long a registration lasts unless refreshed (any REG, UPD from the peer refreshes it).
    pub lifetime: Duration,
    pub max_files_per_peer: usize,
    pub max_peers_per_ip: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(300),
            max_files_per_peer: 10_000,
            max_peers_per_ip: 64,
        }
    }
}

/// Counters, readable while the tracker runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    /// Malformed datagrams, dropped without an answer.
    pub dropped: AtomicU64,
    /// Requests refused for a missing or stale cookie.
    pub bad_cookies: AtomicU64,
    pub peers: AtomicU64,
    pub files: AtomicU64,
}

/// Serves on `socket` until `shutdown` is cancelled.
pub async fn run(
    socket: UdpSocket,
    config: TrackerConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut state = State::new(config, cookie::Cookies::new()?);
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = sweep.tick() => {
                state.expire(Instant::now());
                stats.peers.store(state.peer_count() as u64, Ordering::Relaxed);
                stats.files.store(state.file_count() as u64, Ordering::Relaxed);
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(e) => {
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let Some((answer, proven)) = handle(&mut state, &stats, &buf[..n], from) else {
            continue;
        };
        out.clear();
        answer.encode(&mut out);
        // Never answer an address that has not proven itself with more than it sent.
        if !proven && out.len() > n {
            continue;
        }
        let _ = socket.send_to(&out, from).await;
    }
}

/// The answer to a packet, and whether its sender proved it receives at its address (a valid
/// cookie). `None`: drop the packet.
fn handle(
    state: &mut State,
    stats: &Stats,
    packet: &[u8],
    from: SocketAddr,
) -> Option<(Datagram<Answer>, bool)> {
    let Ok(req) = Datagram::<Request>::decode(packet) else {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let now = Instant::now();
    let proven = state.cookies.valid(from, req.cookie, now);
    let body = if matches!(req.body, Request::Connect) {
        Answer::Cookie(state.cookies.issue(from, now))
    } else if !proven {
        stats.bad_cookies.fetch_add(1, Ordering::Relaxed);
        // An empty error is smaller than any request that carries a cookie.
        Answer::Error {
            code: troca_proto::tracker::codes::BAD_COOKIE,
            message: String::new(),
        }
    } else {
        state.apply(req.body, from, now)
    };
    let answer = Datagram {
        txn: req.txn,
        cookie: 0,
        body,
    };
    Some((answer, proven))
}
