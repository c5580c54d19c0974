//! What the tracker knows for BitTorrent clients (BEP 15): for each info-hash, the peers that
//! announced it, known by their packets' source IP and the port they announced.
//!
//! A swarm keeps its peers in a vector (with an index by address), so picking `numwant` of them is
//! a slice from a random starting point, and leaving is a `swap_remove`.

use std::collections::HashMap;
// A fast hasher with a per-process random seed: info-hashes and addresses come from the network,
// so the seed keeps them from being chosen to collide, and SipHash cost a tenth of the time here.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};
use troca_proto::bep15::{Announce, Event, InfoHash, ScrapeStats};

/// Peers handed out per announce when the client asks for the default (a negative `num_want`).
pub const DEFAULT_NUM_WANT: usize = 50;
/// The most peers in one answer: what fits a 1,200-byte datagram (IPv4 6 bytes each, IPv6 18).
pub const MAX_NUM_WANT_V4: usize = 195;
pub const MAX_NUM_WANT_V6: usize = 65;

/// A peer's address in 18 bytes (the IP as IPv6, IPv4 mapped, and the port): a tracker holds
/// millions, so a full `SocketAddr` (32 bytes) would double its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PeerAddr([u8; 18]);

impl PeerAddr {
    fn new(a: SocketAddr) -> Self {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        let mut b = [0u8; 18];
        b[..16].copy_from_slice(&ip.octets());
        b[16..].copy_from_slice(&a.port().to_be_bytes());
        PeerAddr(b)
    }

    fn get(self) -> SocketAddr {
        let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&self.0[..16]).expect("16 bytes"));
        let port = u16::from_be_bytes([self.0[16], self.0[17]]);
        match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), port),
            None => SocketAddr::new(ip.into(), port),
        }
    }

    fn is_ipv6(self) -> bool {
        Ipv6Addr::from(<[u8; 16]>::try_from(&self.0[..16]).expect("16 bytes"))
            .to_ipv4_mapped()
            .is_none()
    }
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: PeerAddr,
    seeder: bool,
    /// Seconds since the tracker started.
    expires: u32,
}

/// Swarms this small find a peer by scanning; bigger ones keep an index.
const INDEX_FROM: usize = 16;

#[derive(Debug, Default)]
struct Swarm {
    peers: Vec<Peer>,
    /// Position of each peer in `peers`, once the swarm is large.
    index: Option<Map<PeerAddr, u32>>,
    seeders: u32,
    completed: u32,
}

impl Swarm {
    fn find(&self, addr: PeerAddr) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&addr).map(|&i| i as usize),
            None => self.peers.iter().position(|p| p.addr == addr),
        }
    }

    fn push(&mut self, peer: Peer) {
        self.peers.push(peer);
        match &mut self.index {
            Some(index) => {
                index.insert(peer.addr, (self.peers.len() - 1) as u32);
            }
            None if self.peers.len() > INDEX_FROM => {
                let index = self
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.addr, i as u32))
                    .collect();
                self.index = Some(index);
            }
            None => {}
        }
    }

    fn remove(&mut self, addr: PeerAddr) {
        let Some(i) = self.find(addr) else {
            return;
        };
        let gone = self.peers.swap_remove(i);
        if gone.seeder {
            self.seeders -= 1;
        }
        if let Some(index) = &mut self.index {
            index.remove(&addr);
            if let Some(moved) = self.peers.get(i) {
                index.insert(moved.addr, i as u32);
            }
        }
    }

    /// Notes a peer that announced: its state and when it expires, or a new peer if there is
    /// `room` for one.
    fn heard(&mut self, addr: PeerAddr, seeder: bool, expires: u32, room: bool) {
        match self.find(addr) {
            Some(i) => {
                let p = &mut self.peers[i];
                if p.seeder != seeder {
                    if seeder {
                        self.seeders += 1;
                    } else {
                        self.seeders -= 1;
                    }
                }
                p.seeder = seeder;
                p.expires = expires;
            }
            None if room => {
                self.push(Peer {
                    addr,
                    seeder,
                    expires,
                });
                if seeder {
                    self.seeders += 1;
                }
            }
            None => {}
        }
    }

    /// Up to `want` peers other than `to`, IPv6 or IPv4 ones as `v6` says, going round from
    /// `start`.
    fn pick(&self, want: usize, start: u64, to: PeerAddr, v6: bool) -> Vec<SocketAddr> {
        let n = self.peers.len();
        let mut peers = Vec::with_capacity(want.min(n));
        if n == 0 {
            return peers;
        }
        let start = (start % n as u64) as usize;
        for k in 0..n {
            if peers.len() == want {
                break;
            }
            let p = &self.peers[(start + k) % n];
            if p.addr != to && p.addr.is_ipv6() == v6 {
                peers.push(p.addr.get());
            }
        }
        peers
    }

    fn leechers(&self) -> u32 {
        self.peers.len() as u32 - self.seeders
    }
}

/// The BitTorrent side of the tracker's state.
#[derive(Debug)]
pub(crate) struct Torrents {
    swarms: Map<InfoHash, Swarm>,
    lifetime: Duration,
    /// Expiry times are kept as seconds since this instant (4 bytes, not an `Instant`'s 16).
    epoch: Instant,
    max_peers: usize,
    peers: usize,
    /// A cheap generator for where to start picking peers (no need for strength here).
    rng: u64,
}

/// An announce's answer, before encoding.
#[derive(Debug)]
pub(crate) struct Answer {
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Vec<SocketAddr>,
}

impl Torrents {
    pub(crate) fn new(lifetime: Duration, max_peers: usize, seed: u64) -> Self {
        Self {
            swarms: Map::default(),
            lifetime,
            epoch: Instant::now(),
            max_peers,
            peers: 0,
            rng: seed | 1,
        }
    }

    pub(crate) fn peer_count(&self) -> usize {
        self.peers
    }

    pub(crate) fn torrent_count(&self) -> usize {
        self.swarms.len()
    }

    fn seconds(&self, at: Instant) -> u32 {
        u32::try_from(at.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Records an announce from `source` and picks peers for it, of the family of `source`.
    pub(crate) fn announce(&mut self, a: &Announce, source: SocketAddr, now: Instant) -> Answer {
        let addr = PeerAddr::new(SocketAddr::new(source.ip(), a.port));
        let expires = self.seconds(now + self.lifetime);
        let room = self.peers < self.max_peers;
        let swarm = self.swarms.entry(a.info_hash).or_default();
        let before = swarm.peers.len();
        if a.event == Event::Stopped {
            swarm.remove(addr);
        } else {
            // Full: the announce is answered but a new peer is not remembered.
            swarm.heard(addr, a.left == 0, expires, room);
            if a.event == Event::Completed {
                swarm.completed += 1;
            }
        }
        let after = swarm.peers.len();
        self.peers = self.peers + after - before;

        let cap = if source.is_ipv6() {
            MAX_NUM_WANT_V6
        } else {
            MAX_NUM_WANT_V4
        };
        let want = usize::try_from(a.num_want)
            .unwrap_or(DEFAULT_NUM_WANT)
            .min(cap);
        let start = self.next_random();
        let swarm = self.swarms.get(&a.info_hash).expect("just used");
        let answer = Answer {
            leechers: swarm.leechers(),
            seeders: swarm.seeders,
            peers: swarm.pick(want, start, addr, source.is_ipv6()),
        };
        if swarm.peers.is_empty() {
            self.swarms.remove(&a.info_hash);
        }
        answer
    }

    pub(crate) fn scrape(&self, hashes: &[InfoHash]) -> Vec<ScrapeStats> {
        hashes
            .iter()
            .map(|h| {
                self.swarms
                    .get(h)
                    .map_or_else(ScrapeStats::default, |s| ScrapeStats {
                        seeders: s.seeders,
                        completed: s.completed,
                        leechers: s.leechers(),
                    })
            })
            .collect()
    }

    /// Forgets peers that have not announced within their lifetime.
    pub(crate) fn expire(&mut self, now: Instant) {
        let now = self.seconds(now);
        let mut removed = 0;
        self.swarms.retain(|_, s| {
            let stale: Vec<PeerAddr> = s
                .peers
                .iter()
                .filter(|p| p.expires <= now)
                .map(|p| p.addr)
                .collect();
            removed += stale.len();
            for a in stale {
                s.remove(a);
            }
            !s.peers.is_empty()
        });
        self.peers -= removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce(port: u16, left: u64, event: Event, num_want: i32) -> Announce {
        Announce {
            connection_id: 0,
            transaction_id: 0,
            info_hash: [7; 20],
            peer_id: [0; 20],
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip: 0,
            key: 0,
            num_want,
            port,
        }
    }

    #[test]
    fn announces_list_others_never_the_announcer_and_stopped_leaves() {
        let mut t = Torrents::new(Duration::from_secs(60), 1000, 42);
        let now = Instant::now();
        let src = |last: u8| SocketAddr::from(([10, 0, 0, last], 40000));
        let a = t.announce(&announce(6881, 0, Event::Started, -1), src(1), now);
        assert!(a.peers.is_empty());
        assert_eq!((a.seeders, a.leechers), (1, 0));
        let b = t.announce(&announce(6882, 100, Event::Started, -1), src(2), now);
        assert_eq!(b.peers, [SocketAddr::from(([10, 0, 0, 1], 6881))]);
        assert_eq!((b.seeders, b.leechers), (1, 1));
        // Never the announcer itself, whatever it asks for.
        let again = t.announce(&announce(6882, 100, Event::None, 200), src(2), now);
        assert_eq!(again.peers.len(), 1);
        assert_eq!(t.peer_count(), 2);
        t.announce(&announce(6881, 0, Event::Stopped, -1), src(1), now);
        let c = t.announce(&announce(6882, 100, Event::None, -1), src(2), now);
        assert!(c.peers.is_empty(), "the stopped peer is gone");
        assert_eq!(t.peer_count(), 1);
        t.expire(now + Duration::from_secs(61));
        assert_eq!((t.peer_count(), t.torrent_count()), (0, 0));
    }

    #[test]
    fn a_large_swarm_indexes_its_peers_and_still_removes_them() {
        let mut t = Torrents::new(Duration::from_secs(60), 100_000, 3);
        let now = Instant::now();
        let src = |i: u8| SocketAddr::from(([10, 2, 0, i], 9));
        for i in 0..40 {
            t.announce(
                &announce(1000 + u16::from(i), 1, Event::Started, 0),
                src(i),
                now,
            );
        }
        assert_eq!(t.peer_count(), 40);
        // Announcing again updates, never duplicates.
        for i in 0..40 {
            t.announce(
                &announce(1000 + u16::from(i), 0, Event::None, 0),
                src(i),
                now,
            );
        }
        assert_eq!(t.peer_count(), 40);
        assert_eq!(t.scrape(&[[7; 20]])[0].seeders, 40);
        for i in (0..40).step_by(2) {
            t.announce(
                &announce(1000 + u16::from(i), 0, Event::Stopped, 0),
                src(i),
                now,
            );
        }
        assert_eq!(t.peer_count(), 20);
        let me = SocketAddr::from(([10, 3, 0, 1], 9));
        let got = t.announce(&announce(1, 1, Event::None, 100), me, now).peers;
        assert_eq!(got.len(), 20, "the 20 left, never the asker");
        assert!(
            got.iter().all(|p| p.port() % 2 == 1 && p.ip() != me.ip()),
            "{got:?}"
        );
        assert_eq!(t.peer_count(), 21);
    }

    #[test]
    fn num_want_is_honoured_within_the_cap() {
        let mut t = Torrents::new(Duration::from_secs(60), 100_000, 7);
        let now = Instant::now();
        for i in 0..300u32 {
            let src = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 1));
            t.announce(&announce(1000, 1, Event::Started, 0), src, now);
        }
        let me = SocketAddr::from(([10, 9, 9, 9], 1));
        assert_eq!(
            t.announce(&announce(1, 1, Event::None, 10), me, now)
                .peers
                .len(),
            10
        );
        assert_eq!(
            t.announce(&announce(1, 1, Event::None, -1), me, now)
                .peers
                .len(),
            DEFAULT_NUM_WANT
        );
        assert_eq!(
            t.announce(&announce(1, 1, Event::None, 5000), me, now)
                .peers
                .len(),
            MAX_NUM_WANT_V4
        );
        // An IPv6 announcer gets IPv6 peers only (there are none here).
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert!(t
            .announce(&announce(1, 1, Event::None, 50), v6, now)
            .peers
            .is_empty());
    }
}
