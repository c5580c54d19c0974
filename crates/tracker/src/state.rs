//! What the tracker knows: peers by source address, and an index of files by id.

use crate::cookie::Cookies;
use crate::torrents::Torrents;
use crate::TrackerConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use troca_proto::tracker::{
    codes, listed_len, Answer, FileInfo, Listed, Request, Secret, UpdateMode, MAX_DATAGRAM,
    PAGE_OVERHEAD,
};
use troca_proto::Hash;

#[derive(Debug)]
struct Peer {
    /// Where others download from: the packets' source IP and the TCP port it registered.
    serves_at: SocketAddr,
    /// Only a hash of the secret is kept.
    secret: blake3::Hash,
    files: HashMap<Hash, FileInfo>,
    expires: Instant,
}

#[derive(Debug)]
struct Indexed {
    file: FileInfo,
    /// Peers (by source address) that have it.
    holders: BTreeSet<SocketAddr>,
}

#[derive(Debug)]
pub(crate) struct State {
    config: TrackerConfig,
    pub(crate) cookies: Cookies,
    peers: HashMap<SocketAddr, Peer>,
    per_ip: HashMap<IpAddr, usize>,
    index: BTreeMap<Hash, Indexed>,
    /// BitTorrent swarms (BEP 15), by info-hash.
    pub(crate) torrents: Torrents,
}

fn error(code: u16, message: &str) -> Answer {
    Answer::Error {
        code,
        message: message.to_owned(),
    }
}

impl State {
    pub(crate) fn new(config: TrackerConfig, cookies: Cookies) -> Self {
        Self {
            cookies,
            peers: HashMap::new(),
            per_ip: HashMap::new(),
            index: BTreeMap::new(),
            torrents: Torrents::new(
                config.lifetime,
                config.max_torrent_peers,
                // Where peers are picked from varies per tracker; it need not be secret.
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
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
                files,
            } => self.register(from, port, &secret, files, now),
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
            Request::List { filter, id, cursor } => self.list(&filter, id, cursor),
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
        port: u16,
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
            let n = self.per_ip.get(&from.ip()).copied().unwrap_or(0);
            if n >= self.config.max_peers_per_ip {
                return error(codes::TOO_MANY_PEERS, "too many peers from this address");
            }
            *self.per_ip.entry(from.ip()).or_default() += 1;
            self.peers.insert(
                from,
                Peer {
                    serves_at: SocketAddr::new(from.ip(), port),
                    secret: blake3::hash(secret),
                    files: HashMap::new(),
                    expires: now,
                },
            );
        }
        if let Some(p) = self.peers.get_mut(&from) {
            p.serves_at = SocketAddr::new(from.ip(), port);
        }
        self.update(from, UpdateMode::Replace, files, now)
    }

    fn update(
        &mut self,
        from: SocketAddr,
        mode: UpdateMode,
        files: Vec<FileInfo>,
        now: Instant,
    ) -> Answer {
        let lifetime = self.config.lifetime;
        let max = self.config.max_files_per_peer;
        let Some(peer) = self.peers.get_mut(&from) else {
            return error(codes::NOT_REGISTERED, "not registered");
        };
        peer.expires = now + lifetime;
        let removed: Vec<Hash> = match mode {
            UpdateMode::Replace => peer.files.drain().map(|(id, _)| id).collect(),
            UpdateMode::Remove => files
                .iter()
                .filter_map(|f| peer.files.remove(&f.id).map(|_| f.id))
                .collect(),
            UpdateMode::Add => Vec::new(),
        };
        let added: Vec<FileInfo> = if mode == UpdateMode::Remove {
            Vec::new()
        } else {
            if peer.files.len() + files.len() > max {
                return error(codes::TOO_MANY_FILES, "too many files for one peer");
            }
            for f in &files {
                peer.files.insert(f.id, f.clone());
            }
            files
        };
        for id in removed {
            self.unindex(&id, from);
        }
        for f in added {
            self.index
                .entry(f.id)
                .or_insert_with(|| Indexed {
                    file: f.clone(),
                    holders: BTreeSet::new(),
                })
                .holders
                .insert(from);
        }
        Answer::Ok
    }

    fn unindex(&mut self, id: &Hash, holder: SocketAddr) {
        if let Some(entry) = self.index.get_mut(id) {
            entry.holders.remove(&holder);
            if entry.holders.is_empty() {
                self.index.remove(id);
            }
        }
    }

    fn remove_peer(&mut self, from: SocketAddr) {
        if let Some(peer) = self.peers.remove(&from) {
            for id in peer.files.keys() {
                self.unindex(id, from);
            }
            if let Some(n) = self.per_ip.get_mut(&from.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&from.ip());
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

    /// One page of the files matching `filter` (a name substring) or `id`, from `cursor` (the
    /// position in the matching list) on, filling a datagram.
    fn list(&self, filter: &str, id: Option<Hash>, cursor: u32) -> Answer {
        // One searcher for the whole scan: `str::contains` would build one per name, which
        // dominated the tracker's profile under a listing-heavy load.
        let finder = memchr::memmem::Finder::new(filter.as_bytes());
        let by_name =
            |e: &&Indexed| filter.is_empty() || finder.find(e.file.name.as_bytes()).is_some();
        let matching: Box<dyn Iterator<Item = (&Hash, &Indexed)>> = match id {
            // By id: a lookup, not a scan.
            Some(want) => Box::new(self.index.get_key_value(&want).into_iter()),
            None => Box::new(self.index.iter()),
        };
        let matching = matching.filter(|(_, e)| by_name(e));
        let mut files = Vec::new();
        let mut used = PAGE_OVERHEAD;
        let mut next = None;
        for (pos, (_, e)) in matching.enumerate().skip(cursor as usize) {
            let listed = Listed {
                file: e.file.clone(),
                peers: e
                    .holders
                    .iter()
                    .filter_map(|h| self.peers.get(h).map(|p| p.serves_at))
                    .take(32)
                    .collect(),
            };
            let len = listed_len(&listed);
            if used + len > MAX_DATAGRAM {
                next = Some(pos as u32);
                break;
            }
            used += len;
            files.push(listed);
        }
        Answer::Page { files, next }
    }
}
