//! What the tracker knows: peers by source address, and an index of files by id.

use crate::cookie::Cookies;
use crate::torrents::Torrents;
use crate::TrackerConfig;
use indexmap::IndexSet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use troca_proto::tracker::{
    codes, listed_len, Answer, FileInfo, Listed, PeerAddr, Request, Secret, UpdateMode,
    MAX_DATAGRAM, PAGE_OVERHEAD,
};
use troca_proto::Hash;

#[derive(Debug)]
struct Peer {
    /// Where others download from: the packets' source IP and the TCP port it registered,
    /// with the key its TLS shows.
    serves_at: PeerAddr,
    /// Only a hash of the secret is kept.
    secret: blake3::Hash,
    /// Its own claims: each file's size and name as this peer gives them.
    files: HashMap<Hash, FileInfo>,
    expires: Instant,
}

/// A claim: a file id with the size its holders give. Claims of one id with different sizes
/// are kept and listed apart, each with its own holders; only the true one verifies against the
/// id, so a liar's size harms no one who tries them all.
type Claim = (Hash, u64);

#[derive(Debug, Default)]
struct Indexed {
    /// Peers (by source address) that make this claim; an `IndexSet` so a random pick and a
    /// removal are both O(1).
    holders: IndexSet<SocketAddr>,
    /// How many holders give each name: the one most give is listed.
    names: HashMap<String, u32>,
}

impl Indexed {
    fn name(&self) -> String {
        self.names
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    }
}

/// The most peers listed with one file (each with its key, 20 fill about 800 bytes of a
/// datagram; fewer are listed when a long name leaves less room).
const LISTED_PEERS: usize = 20;
/// The most peers of one address (an IPv6 /64) listed with one file before every other address
/// has had its turn, so no one address can crowd out the others.
const LISTED_PER_ADDRESS: usize = 2;
/// The most index entries one LST looks at, matching or not: a listing by name costs the same
/// however many files the tracker knows.
pub(crate) const LIST_SCAN: usize = 2_048;

#[derive(Debug)]
pub(crate) struct State {
    config: TrackerConfig,
    pub(crate) cookies: Cookies,
    peers: HashMap<SocketAddr, Peer>,
    /// What each address holds, by [`address_key`] (an IPv4 address, an IPv6 /64).
    per_ip: HashMap<u128, PerIp>,
    index: BTreeMap<Claim, Indexed>,
    /// Claims by the last part of their names (as given by any holder), for LST by name.
    by_name: HashMap<String, BTreeSet<Claim>>,
    /// Files registered over all peers (one shared by three peers counts three).
    registered: usize,
    rng: u64,
    /// BitTorrent swarms (BEP 15), by info-hash.
    pub(crate) torrents: Torrents,
}

/// What one address holds.
#[derive(Debug, Default)]
struct PerIp {
    peers: usize,
    files: usize,
}

fn error(code: u16, message: &str) -> Answer {
    Answer::Error {
        code,
        message: message.to_owned(),
    }
}

impl State {
    pub(crate) fn new(config: TrackerConfig, cookies: Cookies) -> Self {
        // Where peers are picked from varies per tracker; it need not be secret.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            cookies,
            peers: HashMap::new(),
            per_ip: HashMap::new(),
            index: BTreeMap::new(),
            by_name: HashMap::new(),
            registered: 0,
            rng: seed | 1,
            torrents: Torrents::new(
                config.lifetime,
                crate::torrents::Bounds {
                    peers: config.max_torrent_peers,
                    peers_per_ip: config.max_torrent_peers_per_ip,
                },
                seed,
            ),
            config,
        }
    }

    pub(crate) fn lifetime(&self) -> std::time::Duration {
        self.config.lifetime
    }

    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn file_count(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn apply(&mut self, req: Request, from: SocketAddr, now: Instant) -> Answer {
        match req {
            Request::Connect => unreachable!("answered before"),
            Request::Register {
                port,
                secret,
                key,
                files,
            } => {
                let serves_at = PeerAddr {
                    addr: SocketAddr::new(from.ip(), port),
                    key,
                };
                self.register(from, serves_at, &secret, files, now)
            }
            Request::Update {
                secret,
                mode,
                files,
            } => match self.check(from, &secret) {
                Err(a) => a,
                Ok(()) => self.update(from, mode, files, now),
            },
            Request::End { secret } => match self.check(from, &secret) {
                Err(a) => a,
                Ok(()) => {
                    self.remove_peer(from);
                    Answer::Ok
                }
            },
            Request::List {
                filter,
                id,
                cursor,
                whole_name,
            } => self.list(&filter, id, cursor, whole_name),
        }
    }

    fn check(&self, from: SocketAddr, secret: &Secret) -> Result<(), Answer> {
        match self.peers.get(&from) {
            None => Err(error(
                codes::NOT_REGISTERED,
                "not registered; send REG first",
            )),
            Some(p) if p.secret != blake3::hash(secret) => {
                Err(error(codes::WRONG_SECRET, "wrong secret"))
            }
            Some(_) => Ok(()),
        }
    }

    fn register(
        &mut self,
        from: SocketAddr,
        serves_at: PeerAddr,
        secret: &Secret,
        files: Vec<FileInfo>,
        now: Instant,
    ) -> Answer {
        if let Some(p) = self.peers.get(&from) {
            if p.secret != blake3::hash(secret) {
                return error(
                    codes::WRONG_SECRET,
                    "this address is registered with another secret",
                );
            }
        } else {
            let ip = self.per_ip.entry(address_key(from.ip())).or_default();
            if ip.peers >= self.config.max_peers_per_ip {
                return error(codes::TOO_MANY_PEERS, "too many peers from this address");
            }
            if self.peers.len() >= self.config.max_peers {
                return error(codes::TOO_MANY_PEERS, "the tracker is full: too many peers");
            }
            ip.peers += 1;
            self.peers.insert(
                from,
                Peer {
                    serves_at,
                    secret: blake3::hash(secret),
                    files: HashMap::new(),
                    expires: now,
                },
            );
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.serves_at = serves_at;
        }
        self.update(from, UpdateMode::Replace, files, now)
    }

    /// Whether `from` may add `adding` more files: per peer, per address and in all.
    fn room_for(&self, from: SocketAddr, held: usize, adding: usize) -> Result<(), Answer> {
        let c = &self.config;
        if held + adding > c.max_files_per_peer {
            return Err(error(codes::TOO_MANY_FILES, "too many files for one peer"));
        }
        let ip = self
            .per_ip
            .get(&address_key(from.ip()))
            .map_or(0, |p| p.files);
        if ip + adding > c.max_files_per_ip {
            return Err(error(
                codes::TOO_MANY_FILES,
                "too many files from this address",
            ));
        }
        if self.registered + adding > c.max_files {
            return Err(error(
                codes::TOO_MANY_FILES,
                "the tracker is full: too many files",
            ));
        }
        Ok(())
    }

    fn update(
        &mut self,
        from: SocketAddr,
        mode: UpdateMode,
        files: Vec<FileInfo>,
        now: Instant,
    ) -> Answer {
        let lifetime = self.config.lifetime;
        let Some(peer) = self.peers.get_mut(&from) else {
            return error(codes::NOT_REGISTERED, "not registered");
        };
        peer.expires = now + lifetime;
        let removed: Vec<FileInfo> = match mode {
            UpdateMode::Replace => peer.files.drain().map(|(_, f)| f).collect(),
            UpdateMode::Remove => files
                .iter()
                .filter_map(|f| peer.files.remove(&f.id))
                .collect(),
            UpdateMode::Add => files
                .iter()
                .filter_map(|f| peer.files.remove(&f.id))
                .collect(),
        };
        for f in &removed {
            self.unindex(f, from);
        }
        if mode == UpdateMode::Remove {
            return Answer::Ok;
        }
        if let Some((f, e)) = files.iter().find_map(|f| {
            troca_proto::RemoteName::parse(&f.name)
                .err()
                .map(|e| (f, e))
        }) {
            let shown: String = f
                .name
                .chars()
                .take(64)
                .flat_map(char::escape_debug)
                .collect();
            return error(
                codes::BAD_NAME,
                &format!("file name \"{shown}\" refused: {e}"),
            );
        }
        let held = self.peers.get(&from).map_or(0, |p| p.files.len());
        if let Err(refusal) = self.room_for(from, held, files.len()) {
            return refusal;
        }
        for f in files {
            if let Some(peer) = self.peers.get_mut(&from) {
                if peer.files.insert(f.id, f.clone()).is_none() {
                    self.index_claim(f, from);
                }
            }
        }
        Answer::Ok
    }

    fn index_claim(&mut self, f: FileInfo, holder: SocketAddr) {
        let claim = (f.id, f.size);
        let entry = self.index.entry(claim).or_default();
        entry.holders.insert(holder);
        *entry.names.entry(f.name.clone()).or_default() += 1;
        self.by_name
            .entry(last_part(&f.name).to_owned())
            .or_default()
            .insert(claim);
        self.registered += 1;
        self.per_ip
            .entry(address_key(holder.ip()))
            .or_default()
            .files += 1;
    }

    fn unindex(&mut self, f: &FileInfo, holder: SocketAddr) {
        let claim = (f.id, f.size);
        let Some(entry) = self.index.get_mut(&claim) else {
            return;
        };
        if !entry.holders.swap_remove(&holder) {
            return;
        }
        self.registered -= 1;
        if let Some(ip) = self.per_ip.get_mut(&address_key(holder.ip())) {
            ip.files -= 1;
        }
        let name_gone = match entry.names.get_mut(&f.name) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                entry.names.remove(&f.name);
                true
            }
        };
        if entry.holders.is_empty() {
            self.index.remove(&claim);
        }
        // The claim stays under this name while another holder gives a name with this last part.
        let still_named = self
            .index
            .get(&claim)
            .is_some_and(|e| e.names.keys().any(|n| last_part(n) == last_part(&f.name)));
        if name_gone && !still_named {
            let key = last_part(&f.name);
            if let Some(set) = self.by_name.get_mut(key) {
                set.remove(&claim);
                if set.is_empty() {
                    self.by_name.remove(key);
                }
            }
        }
    }

    fn remove_peer(&mut self, from: SocketAddr) {
        if let Some(peer) = self.peers.remove(&from) {
            for f in peer.files.values() {
                self.unindex(f, from);
            }
            if let Some(ip) = self.per_ip.get_mut(&address_key(from.ip())) {
                ip.peers -= 1;
                if ip.peers == 0 {
                    self.per_ip.remove(&address_key(from.ip()));
                }
            }
        }
    }

    /// Drops registrations that were not refreshed in time.
    pub(crate) fn expire(&mut self, now: Instant) {
        let stale: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(a, _)| *a)
            .collect();
        for a in stale {
            self.remove_peer(a);
        }
    }

    /// One page of the files matching `id`, or whose name is `filter` (or ends with
    /// `/filter`) when `whole_name`, or contains `filter`, from `cursor` on (the first four
    /// bytes of the id to resume at), filling a datagram. At most [`LIST_SCAN`] entries are
    /// looked at; `next` says where to go on, even after a page that found nothing.
    fn list(&mut self, filter: &str, id: Option<Hash>, cursor: u32, whole_name: bool) -> Answer {
        let start = resume_at(cursor);
        let claims: Vec<(Claim, bool)> = match (id, whole_name) {
            (Some(want), _) => self
                .index
                .range((want, 0)..=(want, u64::MAX))
                .filter(|(c, _)| **c >= start)
                .map(|(c, _)| (*c, true))
                .take(LIST_SCAN)
                .collect(),
            (None, true) => self
                .by_name
                .get(last_part(filter))
                .into_iter()
                .flat_map(|set| set.range(start..))
                .take(LIST_SCAN)
                .map(|c| (*c, true))
                .collect(),
            (None, false) => {
                let finder = memchr::memmem::Finder::new(filter.as_bytes());
                self.index
                    .range(start..)
                    .take(LIST_SCAN)
                    .map(|(c, e)| {
                        let hit = filter.is_empty()
                            || e.names.keys().any(|n| finder.find(n.as_bytes()).is_some());
                        (*c, hit)
                    })
                    .collect()
            }
        };
        let scanned_all = claims.len() < LIST_SCAN;
        let mut files = Vec::new();
        let mut used = PAGE_OVERHEAD;
        for (claim, hit) in &claims {
            if !hit {
                continue;
            }
            let Some(listed) = self.listed(claim, filter, whole_name) else {
                continue;
            };
            let len = listed_len(&listed);
            if used + len > MAX_DATAGRAM {
                return Answer::Page {
                    files,
                    next: Some(cursor_of(claim)),
                };
            }
            used += len;
            files.push(listed);
        }
        let next = match claims.last() {
            Some(last) if !scanned_all => self.after(&last.0).map(|c| cursor_of(&c)),
            _ => None,
        };
        Answer::Page { files, next }
    }

    /// The claim after `claim` in the index, if any.
    fn after(&self, claim: &Claim) -> Option<Claim> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.index
            .range((Excluded(*claim), Unbounded))
            .next()
            .map(|(c, _)| *c)
    }

    /// A claim as listed: the name most of its holders give (the one matching, for a lookup by
    /// name) and a random sample of its holders, at most [`LISTED_PER_ADDRESS`] per address.
    fn listed(&mut self, claim: &Claim, filter: &str, whole_name: bool) -> Option<Listed> {
        let random = [self.next_random(), self.next_random()];
        let entry = self.index.get(claim)?;
        let name = if whole_name {
            let wanted = |n: &&String| *n == filter || n.ends_with(&format!("/{filter}"));
            let mut matching: Vec<(&String, &u32)> =
                entry.names.iter().filter(|(n, _)| wanted(n)).collect();
            matching.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            matching.first()?.0.clone()
        } else {
            entry.name()
        };
        let mut listed = Listed {
            file: FileInfo {
                id: claim.0,
                size: claim.1,
                name,
            },
            peers: self.sample(&entry.holders, random),
        };
        // A page must hold at least one file whole, or a client would page on the spot.
        while PAGE_OVERHEAD + listed_len(&listed) > MAX_DATAGRAM {
            listed.peers.pop();
        }
        Some(listed)
    }

    /// Up to [`LISTED_PEERS`] of `holders`' servers, in a random order: first at most
    /// [`LISTED_PER_ADDRESS`] per address, so every address gets in before any gets more, then
    /// the rest (peers behind one NAT, or on one machine, are all listed when there is room).
    fn sample(&self, holders: &IndexSet<SocketAddr>, random: [u64; 2]) -> Vec<PeerAddr> {
        let n = holders.len();
        if n == 0 {
            return Vec::new();
        }
        let start = (random[0] % n as u64) as usize;
        let step = coprime_step(n, random[1]);
        let probes = n.min(64 * LISTED_PEERS);
        let order = (0..probes).filter_map(|k| holders.get_index((start + k * step) % n));
        let mut per_address: HashMap<u128, usize> = HashMap::new();
        let (mut out, mut later) = (Vec::new(), Vec::new());
        for h in order {
            let Some(peer) = self.peers.get(h) else {
                continue;
            };
            let seen = per_address.entry(address_key(h.ip())).or_default();
            *seen += 1;
            if *seen > LISTED_PER_ADDRESS {
                later.push(peer.serves_at);
            } else {
                out.push(peer.serves_at);
                if out.len() == LISTED_PEERS {
                    return out;
                }
            }
        }
        let room = LISTED_PEERS - out.len();
        out.extend(later.into_iter().take(room));
        out
    }

    /// xorshift64*: enough to spread picks, not a secret.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The last part of a `/`-separated name.
fn last_part(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The first claim a page that starts at `cursor` may list.
fn resume_at(cursor: u32) -> Claim {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&cursor.to_be_bytes());
    (id, 0)
}

/// The cursor that resumes at `claim` (and any claim before it with the same first four bytes,
/// which may be listed twice: clients merge by id).
fn cursor_of(claim: &Claim) -> u32 {
    u32::from_be_bytes(claim.0[..4].try_into().expect("4 bytes"))
}

/// A step through `0..n` that visits every index once: odd, and not sharing a factor with `n`.
fn coprime_step(n: usize, r: u64) -> usize {
    if n <= 1 {
        return 1;
    }
    let mut step = (r % n as u64) as usize | 1;
    while gcd(step, n) != 1 {
        step += 2;
    }
    step
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Addresses counted together: an IPv4 address (also as a socket bound to `[::]` sees it,
/// mapped into IPv6), or an IPv6 /64.
pub(crate) fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) >> 64) << 64 | 1 << 32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(config: TrackerConfig) -> State {
        State::new(config, Cookies::new().unwrap())
    }

    fn file(i: u32, size: u64, name: &str) -> FileInfo {
        FileInfo {
            id: *blake3::hash(&i.to_be_bytes()).as_bytes(),
            size,
            name: name.to_owned(),
        }
    }

    fn reg(s: &mut State, from: &str, secret: u8, files: Vec<FileInfo>) -> Answer {
        let req = Request::Register {
            port: 9,
            secret: [secret; 16],
            key: Some(troca_proto::key::HubKey([secret; 32])),
            files,
        };
        s.apply(req, from.parse().unwrap(), Instant::now())
    }

    fn list(s: &mut State, filter: &str, id: Option<Hash>, cursor: u32, whole: bool) -> Answer {
        let req = Request::List {
            filter: filter.to_owned(),
            id,
            cursor,
            whole_name: whole,
        };
        s.apply(req, "10.9.9.9:1".parse().unwrap(), Instant::now())
    }

    fn refused(a: &Answer, code: u16) -> bool {
        matches!(a, Answer::Error { code: c, .. } if *c == code)
    }

    #[test]
    fn files_are_bounded_per_address_and_in_all() {
        let mut s = state(TrackerConfig {
            max_files_per_ip: 30,
            max_files: 50,
            max_peers: 4,
            ..TrackerConfig::default()
        });
        let batch = |from: u32| {
            (from * 100..from * 100 + 20)
                .map(|i| file(i, 1, "f"))
                .collect()
        };
        assert_eq!(reg(&mut s, "10.0.0.1:1", 1, batch(1)), Answer::Ok);
        assert!(refused(
            &reg(&mut s, "10.0.0.1:2", 2, batch(2)),
            codes::TOO_MANY_FILES
        ));
        assert_eq!(reg(&mut s, "10.0.0.2:1", 3, batch(3)), Answer::Ok);
        assert!(refused(
            &reg(&mut s, "10.0.0.3:1", 4, batch(4)),
            codes::TOO_MANY_FILES
        ));
        assert!(refused(
            &reg(&mut s, "10.0.0.4:1", 5, vec![]),
            codes::TOO_MANY_PEERS
        ));
        // Leaving gives the room back.
        let end = Request::End { secret: [1; 16] };
        assert_eq!(
            s.apply(end, "10.0.0.1:1".parse().unwrap(), Instant::now()),
            Answer::Ok
        );
        assert_eq!(reg(&mut s, "10.0.0.5:1", 6, batch(5)), Answer::Ok);
    }

    #[test]
    fn an_ipv6_subscriber_is_one_address_for_the_bounds() {
        let mut s = state(TrackerConfig {
            max_peers_per_ip: 2,
            max_files_per_ip: 3,
            ..TrackerConfig::default()
        });
        // Two addresses of one /64 fill its peers; a third of them is refused.
        assert_eq!(
            reg(&mut s, "[2001:db8:1:1::1]:1", 1, vec![file(1, 1, "a")]),
            Answer::Ok
        );
        assert_eq!(
            reg(&mut s, "[2001:db8:1:1::2]:1", 2, vec![file(2, 1, "b")]),
            Answer::Ok
        );
        assert!(refused(
            &reg(&mut s, "[2001:db8:1:1::3]:1", 3, vec![]),
            codes::TOO_MANY_PEERS
        ));
        // Its files are counted together too.
        let more = Request::Update {
            secret: [2; 16],
            mode: UpdateMode::Add,
            files: vec![file(3, 1, "c"), file(4, 1, "d")],
        };
        let from = "[2001:db8:1:1::2]:1".parse().unwrap();
        assert!(refused(
            &s.apply(more, from, Instant::now()),
            codes::TOO_MANY_FILES
        ));
        // Another /64 is another address.
        assert_eq!(reg(&mut s, "[2001:db8:1:2::1]:1", 4, vec![]), Answer::Ok);
        // Leaving gives the room back to the /64.
        let end = Request::End { secret: [1; 16] };
        let from = "[2001:db8:1:1::1]:1".parse().unwrap();
        assert_eq!(s.apply(end, from, Instant::now()), Answer::Ok);
        assert_eq!(reg(&mut s, "[2001:db8:1:1::3]:1", 3, vec![]), Answer::Ok);
    }

    #[test]
    fn a_listing_looks_at_a_bounded_number_of_files_and_names_come_from_an_index() {
        let mut s = state(TrackerConfig::default());
        for peer in 0..5u32 {
            let files = (0..1_000)
                .map(|i| file(peer * 1_000 + i, 1, "x.bin"))
                .collect();
            let from = format!("10.0.0.{peer}:1");
            assert_eq!(reg(&mut s, &from, peer as u8, files), Answer::Ok);
        }
        let needle = file(99_999, 7, "dir/needle.txt");
        assert_eq!(
            reg(&mut s, "10.0.1.1:1", 9, vec![needle.clone()]),
            Answer::Ok
        );
        // A substring nothing matches: the first page stops after LIST_SCAN files and says
        // where to go on.
        let Answer::Page { files, next } = list(&mut s, "nothing", None, 0, false) else {
            panic!()
        };
        assert!(files.is_empty());
        assert!(next.is_some(), "the scan stopped early");
        // By whole name: one answer, from the index.
        let Answer::Page { files, next } = list(&mut s, "needle.txt", None, 0, true) else {
            panic!()
        };
        assert_eq!(next, None);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].file, needle);
        // Following the cursor through a substring listing finds every file once.
        let (mut cursor, mut seen) = (0, BTreeSet::new());
        loop {
            let Answer::Page { files, next } = list(&mut s, "", None, cursor, false) else {
                panic!()
            };
            seen.extend(files.iter().map(|l| l.file.id));
            match next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        assert_eq!(seen.len(), 5_001);
    }

    #[test]
    fn each_claim_keeps_its_size_its_holders_and_the_name_most_give() {
        let mut s = state(TrackerConfig::default());
        let honest = file(1, 100, "report.pdf");
        let mut liar = honest.clone();
        liar.size = 101;
        liar.name = "virus.exe".into();
        assert_eq!(reg(&mut s, "10.0.0.1:1", 1, vec![liar]), Answer::Ok);
        for i in 2..5u8 {
            let from = format!("10.0.0.{i}:1");
            assert_eq!(reg(&mut s, &from, i, vec![honest.clone()]), Answer::Ok);
        }
        let mut odd = honest.clone();
        odd.name = "other.pdf".into();
        assert_eq!(reg(&mut s, "10.0.0.9:1", 9, vec![odd]), Answer::Ok);
        let Answer::Page { files, .. } = list(&mut s, "", Some(honest.id), 0, false) else {
            panic!()
        };
        assert_eq!(files.len(), 2, "one entry per claimed size");
        let true_claim = files.iter().find(|l| l.file.size == 100).unwrap();
        assert_eq!(true_claim.file.name, "report.pdf");
        assert_eq!(true_claim.peers.len(), 4);
        // Each holder is listed where it serves, with the key it registered.
        let nine = true_claim
            .peers
            .iter()
            .find(|p| p.addr == "10.0.0.9:9".parse().unwrap())
            .unwrap();
        assert_eq!(nine.key, Some(troca_proto::key::HubKey([9; 32])));
        // The liar leaves: its claim goes with it.
        let end = Request::End { secret: [1; 16] };
        assert_eq!(
            s.apply(end, "10.0.0.1:1".parse().unwrap(), Instant::now()),
            Answer::Ok
        );
        let Answer::Page { files, .. } = list(&mut s, "", Some(honest.id), 0, false) else {
            panic!()
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].file.size, 100);
    }

    #[test]
    fn one_address_cannot_crowd_out_another() {
        let mut s = state(TrackerConfig::default());
        let f = file(1, 1, "a");
        for port in 1..=40u16 {
            let from = format!("10.0.0.1:{port}");
            assert_eq!(reg(&mut s, &from, port as u8, vec![f.clone()]), Answer::Ok);
        }
        assert_eq!(reg(&mut s, "10.0.0.2:50", 99, vec![f.clone()]), Answer::Ok);
        for _ in 0..20 {
            let Answer::Page { files, .. } = list(&mut s, "", Some(f.id), 0, false) else {
                panic!()
            };
            let peers = &files[0].peers;
            assert_eq!(peers.len(), LISTED_PEERS);
            assert!(peers.iter().any(|p| p.addr.ip().to_string() == "10.0.0.2"));
        }
    }

    #[test]
    fn a_longest_name_with_many_keyed_peers_still_fits_one_datagram() {
        let mut s = state(TrackerConfig::default());
        let f = file(1, 1, &"n".repeat(troca_proto::MAX_SHORT_STR));
        for i in 1..=30u8 {
            let from = format!("[fd00:0:0:{i}::1]:1");
            assert_eq!(reg(&mut s, &from, i, vec![f.clone()]), Answer::Ok);
        }
        let page = list(&mut s, "", Some(f.id), 0, false);
        let Answer::Page { files, .. } = &page else {
            panic!("{page:?}")
        };
        assert_eq!(files.len(), 1);
        assert!(files[0].peers.len() >= 10, "{}", files[0].peers.len());
        let mut out = Vec::new();
        troca_proto::tracker::Datagram {
            txn: 1,
            cookie: 0,
            body: page,
        }
        .encode(&mut out);
        assert!(out.len() <= MAX_DATAGRAM, "{}", out.len());
    }
}
