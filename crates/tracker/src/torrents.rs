//! What the tracker knows for BitTorrent clients (BEP 15): for each info-hash, the peers that
//! announced it, known by their packets' source IP and the port they announced.
//!
//! A swarm keeps its peers in a vector (with an index by address), so picking `numwant` of them is
//! a slice from a random starting point, and leaving is a `swap_remove`.

use std::collections::HashMap;
// A fast hasher with a per-process random seed: info-hashes and addresses come from the network,
// so the seed keeps them from being chosen to collide, and SipHash cost a tenth of the time here.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use crate::state::address_key;
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

    /// Forgets a peer; false if the swarm did not know it.
    fn remove(&mut self, addr: PeerAddr) -> bool {
        let Some(i) = self.find(addr) else {
            return false;
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
        true
    }

    /// Notes a known peer's state and when it expires; false if the swarm does not know it.
    fn refresh(&mut self, addr: PeerAddr, seeder: bool, expires: u32) -> bool {
        let Some(i) = self.find(addr) else {
            return false;
        };
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
        true
    }

    fn add(&mut self, peer: Peer) {
        if peer.seeder {
            self.seeders += 1;
        }
        self.push(peer);
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
    bounds: Bounds,
    peers: usize,
    /// Peers remembered from each address (see [`address_key`]).
    per_ip: Map<u128, u32>,
    /// Announces of a new peer answered but not remembered, for want of room.
    unrecorded: u64,
    /// A cheap generator for where to start picking peers (no need for strength here).
    rng: u64,
}

/// How many BitTorrent peers the tracker remembers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Over all info-hashes.
    pub peers: usize,
    /// From one address, over all info-hashes.
    pub peers_per_ip: usize,
}

/// An announce's answer, before encoding.
#[derive(Debug)]
pub(crate) struct Answer {
    pub leechers: u32,
    pub seeders: u32,
    pub peers: Vec<SocketAddr>,
}

impl Torrents {
    pub(crate) fn new(lifetime: Duration, bounds: Bounds, seed: u64) -> Self {
        Self {
            swarms: Map::default(),
            lifetime,
            epoch: Instant::now(),
            bounds,
            peers: 0,
            per_ip: Map::default(),
            unrecorded: 0,
            rng: seed | 1,
        }
    }

    /// Announces of a new peer answered without remembering it, since the tracker started.
    pub(crate) fn unrecorded(&self) -> u64 {
        self.unrecorded
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
        let key = address_key(source.ip());
        let swarm = self.swarms.entry(a.info_hash).or_default();
        let seeder = a.left == 0;
        if a.event == Event::Stopped {
            if swarm.remove(addr) {
                self.peers -= 1;
                forget_one(&mut self.per_ip, key);
            }
        } else {
            if !swarm.refresh(addr, seeder, expires) {
                let from_here = self.per_ip.get(&key).map_or(0, |&n| n as usize);
                if self.peers < self.bounds.peers && from_here < self.bounds.peers_per_ip {
                    swarm.add(Peer {
                        addr,
                        seeder,
                        expires,
                    });
                    self.peers += 1;
                    *self.per_ip.entry(key).or_default() += 1;
                } else {
                    // Full: the announce is answered, but the new peer is not remembered.
                    self.unrecorded += 1;
                }
            }
            if a.event == Event::Completed {
                swarm.completed += 1;
            }
        }

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
        let per_ip = &mut self.per_ip;
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
                forget_one(per_ip, address_key(a.get().ip()));
            }
            !s.peers.is_empty()
        });
        self.peers -= removed;
    }
}

/// One peer fewer from the address `key`.
fn forget_one(per_ip: &mut Map<u128, u32>, key: u128) {
    if let Some(n) = per_ip.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(peers: usize, peers_per_ip: usize) -> Bounds {
        Bounds {
            peers,
            peers_per_ip,
        }
    }

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
        let mut t = Torrents::new(Duration::from_secs(60), bounds(1000, 1000), 42);
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
        let mut t = Torrents::new(Duration::from_secs(60), bounds(100_000, 100_000), 3);
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
        let mut t = Torrents::new(Duration::from_secs(60), bounds(100_000, 100_000), 7);
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

    #[test]
    fn one_address_cannot_fill_the_table() {
        let mut t = Torrents::new(Duration::from_secs(60), bounds(100, 3), 5);
        let now = Instant::now();
        let greedy = SocketAddr::from(([10, 0, 0, 1], 1));
        for port in 1..=10 {
            t.announce(&announce(port, 1, Event::Started, 0), greedy, now);
        }
        assert_eq!(t.peer_count(), 3, "its share, and no more");
        assert_eq!(t.unrecorded(), 7);
        // Its known peers still refresh, and others still get in.
        t.announce(&announce(2, 0, Event::None, 0), greedy, now);
        let other = SocketAddr::from(([10, 0, 0, 2], 1));
        let seen = t.announce(&announce(9, 1, Event::Started, 50), other, now);
        assert_eq!(seen.peers.len(), 3);
        assert_eq!((seen.seeders, seen.leechers), (1, 3));
        // A peer that stops, or expires, gives its address room again.
        t.announce(&announce(1, 1, Event::Stopped, 0), greedy, now);
        t.announce(&announce(11, 1, Event::Started, 0), greedy, now);
        assert_eq!(t.peer_count(), 4);
        t.announce(&announce(12, 1, Event::Started, 0), greedy, now);
        assert_eq!(t.peer_count(), 4, "full again");
        t.expire(now + Duration::from_secs(61));
        assert_eq!(t.peer_count(), 0);
        t.announce(&announce(13, 1, Event::Started, 0), greedy, now);
        assert_eq!(t.peer_count(), 1);
    }

    #[test]
    fn an_ipv6_subscriber_counts_as_one_address_and_mapped_ipv4_as_itself() {
        let mut t = Torrents::new(Duration::from_secs(60), bounds(100, 2), 5);
        let now = Instant::now();
        for i in 1..=5u16 {
            let src: SocketAddr = format!("[2001:db8:0:1::{i:x}]:1").parse().unwrap();
            t.announce(&announce(i, 1, Event::Started, 0), src, now);
        }
        assert_eq!(t.peer_count(), 2, "one /64");
        for i in 1..=3u8 {
            let src: SocketAddr = format!("[::ffff:10.0.0.{i}]:1").parse().unwrap();
            t.announce(&announce(1, 1, Event::Started, 0), src, now);
        }
        assert_eq!(
            t.peer_count(),
            5,
            "three IPv4 addresses seen through an IPv6 socket"
        );
    }

    proptest::proptest! {
        /// Whatever arrives, the count of peers is what the swarms hold, each address's count
        /// is what it has in them and within its bound, and the total within its own.
        #[test]
        fn counts_match_the_swarms_and_stay_within_bounds(
            steps in proptest::collection::vec((0u8..6, 0u8..4, 1u16..8, 0u8..4), 1..300),
        ) {
            let mut t = Torrents::new(Duration::from_secs(60), bounds(12, 4), 9);
            let start = Instant::now();
            for (n, (ip, hash, port, what)) in steps.into_iter().enumerate() {
                let now = start + Duration::from_secs(n as u64);
                if what == 3 && n % 7 == 0 {
                    t.expire(now);
                    continue;
                }
                let event = [Event::Started, Event::None, Event::Completed, Event::Stopped][usize::from(what)];
                let mut a = announce(port, u64::from(what % 2), event, 5);
                a.info_hash = [hash; 20];
                t.announce(&a, SocketAddr::from(([10, 0, 0, ip], 1)), now);
                let held: usize = t.swarms.values().map(|s| s.peers.len()).sum();
                proptest::prop_assert_eq!(t.peer_count(), held);
                proptest::prop_assert!(held <= 12);
                let mut by_ip = Map::<u128, u32>::default();
                for s in t.swarms.values() {
                    proptest::prop_assert!(!s.peers.is_empty());
                    proptest::prop_assert_eq!(s.seeders as usize, s.peers.iter().filter(|p| p.seeder).count());
                    for p in &s.peers {
                        *by_ip.entry(address_key(p.addr.get().ip())).or_default() += 1;
                    }
                }
                proptest::prop_assert!(by_ip.values().all(|&c| c <= 4));
                proptest::prop_assert_eq!(&by_ip, &t.per_ip);
            }
        }
    }
}
