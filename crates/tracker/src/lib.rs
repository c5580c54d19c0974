//! The troca swarm tracker as a library: [`run`] answers REG, LST, UPD and END over UDP
//! until a shutdown token is cancelled, and on the same port BitTorrent's UDP tracker protocol
//! (BEP 15: connect, announce, scrape), told apart by the first bytes of each datagram. It only
//! knows which peer (by the source address of its packets) shares which files; file bytes never
//! pass through it. [`client`] is the troca peers' side.
//!
//! All state lives on the one task that owns the sockets (one IPv4 and one IPv6 at most), so there
//! are no locks; a tracker's work per packet is a few hash-map operations. After each wake-up it
//! drains every datagram already queued before waiting again.

pub mod client;
mod cookie;
pub mod metrics;
mod state;
mod torrents;

use state::State;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use troca_proto::bep15;
use troca_proto::tracker::{Answer, Datagram, Request, MAX_DATAGRAM};

/// How a tracker runs.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// How long a registration lasts unless refreshed (any REG, UPD from the peer refreshes it).
    pub lifetime: Duration,
    pub max_files_per_peer: usize,
    /// Peers registered from one address: an IPv4 address, or an IPv6 /64 (what one
    /// subscriber gets, so one cannot take all the room by using many of its addresses).
    pub max_peers_per_ip: usize,
    /// Files registered by all the peers of one address (grouped as for `max_peers_per_ip`).
    pub max_files_per_ip: usize,
    /// Peers registered in all.
    pub max_peers: usize,
    /// Files registered over all peers (one shared by three peers counts three): the tracker's
    /// memory is about 200 bytes each.
    pub max_files: usize,
    /// BitTorrent peers remembered over all info-hashes (beyond it, announces are answered but
    /// not recorded).
    pub max_torrent_peers: usize,
    /// BitTorrent peers remembered from one address (an IPv4 address or an IPv6 /64), over all
    /// info-hashes: one address cannot fill the table and keep everyone else out of it.
    pub max_torrent_peers_per_ip: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            lifetime: Duration::from_secs(300),
            max_files_per_peer: 10_000,
            max_peers_per_ip: 64,
            max_files_per_ip: 20_000,
            max_peers: 100_000,
            max_files: 1_000_000,
            max_torrent_peers: 1_000_000,
            max_torrent_peers_per_ip: 10_000,
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
    /// BitTorrent info-hashes with peers, and those peers.
    pub torrents: AtomicU64,
    pub torrent_peers: AtomicU64,
    /// BitTorrent announces of a new peer answered but not remembered: the table, or its
    /// address's share of it, was full.
    pub torrent_peers_unrecorded: AtomicU64,
    /// Well-formed requests by kind (see [`KINDS`]).
    pub kinds: [AtomicU64; KINDS.len()],
    /// Datagrams sent in answer.
    pub answers: AtomicU64,
}

/// The kinds of request counted in [`Stats::kinds`]: troca's, then BEP 15's.
pub const KINDS: [&str; 8] = [
    "connect",
    "register",
    "list",
    "update",
    "end",
    "bt_connect",
    "bt_announce",
    "bt_scrape",
];

fn count_kind(stats: &Stats, kind: usize) {
    stats.kinds[kind].fetch_add(1, Ordering::Relaxed);
}

/// Serves on `socket` until `shutdown` is cancelled.
pub async fn run(
    socket: UdpSocket,
    config: TrackerConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run_on(vec![socket], config, stats, shutdown).await
}

/// Serves on one or two sockets (an IPv4 and an IPv6 one, say) until `shutdown` is cancelled.
pub async fn run_on(
    sockets: Vec<UdpSocket>,
    config: TrackerConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    assert!(
        (1..=2).contains(&sockets.len()),
        "one or two sockets, not {}",
        sockets.len()
    );
    let mut state = State::new(config, cookie::Cookies::new()?);
    let (mut buf, mut buf2) = (vec![0u8; 2048], vec![0u8; 2048]);
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let second = sockets.get(1);
    loop {
        let (i, first) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = sweep.tick() => {
                let now = Instant::now();
                state.expire(now);
                state.torrents.expire(now);
                stats.peers.store(state.peer_count() as u64, Ordering::Relaxed);
                stats.files.store(state.file_count() as u64, Ordering::Relaxed);
                stats.torrents.store(state.torrents.torrent_count() as u64, Ordering::Relaxed);
                stats.torrent_peers.store(state.torrents.peer_count() as u64, Ordering::Relaxed);
                stats.torrent_peers_unrecorded.store(state.torrents.unrecorded(), Ordering::Relaxed);
                continue;
            }
            r = sockets[0].recv_from(&mut buf) => (0, r),
            r = async { second.expect("guarded").recv_from(&mut buf2).await }, if second.is_some() => (1, r),
        };
        let socket = &sockets[i];
        let buf = if i == 0 { &mut buf } else { &mut buf2 };
        let mut next = first;
        // Everything already queued is answered before waiting again: one wake-up, many packets.
        loop {
            match next {
                Ok((n, from)) => {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    out.clear();
                    let proven = handle(&mut state, &stats, &buf[..n], from, &mut out);
                    // Never answer an address that has not proven itself with more than it sent.
                    if let Some(proven) = proven {
                        if proven || out.len() <= n {
                            stats.answers.fetch_add(1, Ordering::Relaxed);
                            send(socket, &out, from).await;
                        }
                    }
                }
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                Err(e) => tracing::debug!(error = %e, "recv failed"),
            }
            next = match socket.try_recv_from(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                other => other,
            };
        }
    }
}

/// Sends at once if the socket has room, else waits for it.
async fn send(socket: &UdpSocket, out: &[u8], to: SocketAddr) {
    match socket.try_send_to(out, to) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let _ = socket.send_to(out, to).await;
        }
        _ => {}
    }
}

/// Writes the answer to a packet into `out`, and says whether its sender proved it receives at
/// its address (a valid cookie). `None`: drop the packet.
fn handle(
    state: &mut State,
    stats: &Stats,
    packet: &[u8],
    from: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<bool> {
    if bep15::is_bep15(packet) {
        return handle_bep15(state, stats, packet, from, out);
    }
    let Ok(req) = Datagram::<Request>::decode(packet) else {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    count_kind(
        stats,
        match &req.body {
            Request::Connect => 0,
            Request::Register { .. } => 1,
            Request::List { .. } => 2,
            Request::Update { .. } => 3,
            Request::End { .. } => 4,
        },
    );
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
    Datagram {
        txn: req.txn,
        cookie: 0,
        body,
    }
    .encode(out);
    Some(proven)
}

/// BEP 15: connection ids are the same keyed cookies, marked so they never look like troca's
/// magic.
fn handle_bep15(
    state: &mut State,
    stats: &Stats,
    packet: &[u8],
    from: SocketAddr,
    out: &mut Vec<u8>,
) -> Option<bool> {
    let Ok(req) = bep15::Request::decode(packet) else {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    count_kind(
        stats,
        match &req {
            bep15::Request::Connect { .. } => 5,
            bep15::Request::Announce(_) => 6,
            bep15::Request::Scrape { .. } => 7,
        },
    );
    let now = Instant::now();
    let (connection_id, transaction_id) = match &req {
        bep15::Request::Connect { transaction_id } => {
            let connection_id = state
                .cookies
                .issue_tagged(from, bep15::CONNECTION_ID_MARK, now);
            bep15::Response::Connect {
                transaction_id: *transaction_id,
                connection_id,
            }
            .encode(out);
            return Some(false);
        }
        bep15::Request::Announce(a) => (a.connection_id, a.transaction_id),
        bep15::Request::Scrape {
            connection_id,
            transaction_id,
            ..
        } => (*connection_id, *transaction_id),
    };
    if !state
        .cookies
        .valid_tagged(from, connection_id, bep15::CONNECTION_ID_MARK, now)
    {
        stats.bad_cookies.fetch_add(1, Ordering::Relaxed);
        bep15::Response::Error {
            transaction_id,
            message: "connection id expired or invalid; connect again".into(),
        }
        .encode(out);
        return Some(false);
    }
    answer_bep15(state, req, transaction_id, from, now, out);
    Some(true)
}

/// Answers a BEP 15 announce or scrape whose connection id was checked.
fn answer_bep15(
    state: &mut State,
    req: bep15::Request,
    transaction_id: u32,
    from: SocketAddr,
    now: Instant,
    out: &mut Vec<u8>,
) {
    let interval = (state.lifetime().as_secs() / 2).max(1) as u32;
    match req {
        bep15::Request::Announce(a) => {
            let answer = state.torrents.announce(&a, from, now);
            bep15::Response::Announce {
                transaction_id,
                interval,
                leechers: answer.leechers,
                seeders: answer.seeders,
                peers: answer.peers,
            }
            .encode(out);
        }
        bep15::Request::Scrape { info_hashes, .. } => bep15::Response::Scrape {
            transaction_id,
            stats: state.torrents.scrape(&info_hashes),
        }
        .encode(out),
        bep15::Request::Connect { .. } => unreachable!("answered before the cookie check"),
    }
}
