//! The hot-file cache: whole small files kept in memory, least recently used evicted
//! first, within a byte budget, so repeated downloads of popular small files do not touch the
//! store. Entries are keyed by name and served only for the exact version (size and mtime) they
//! were read at; uploads and deletions through the hub drop their entry at once.

use crate::store::Version;
use lru::LruCache;
use std::sync::{Arc, Mutex};
use troca_proto::Hash;

/// Counters for `troca status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

#[derive(Debug)]
struct Cached {
    version: Version,
    hash: Hash,
    data: Arc<[u8]>,
}

#[derive(Debug)]
pub struct HotCache {
    budget: u64,
    max_file: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    lru: LruCache<String, Cached>,
    stats: CacheStats,
}

impl HotCache {
    /// A cache of at most `budget` bytes holding files of at most `max_file` bytes; either 0
    /// turns it off.
    pub fn new(budget: u64, max_file: u64) -> Self {
        Self {
            budget,
            max_file: if budget == 0 { 0 } else { max_file.min(budget) },
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                stats: CacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("cache poisoned")
    }

    /// Whether a file of `size` bytes would be cached.
    pub fn wants(&self, size: u64) -> bool {
        size <= self.max_file && self.max_file > 0
    }

    /// The cached bytes and hash of `name`, if they are of this very version.
    pub fn get(&self, name: &str, version: Version) -> Option<(Arc<[u8]>, Hash)> {
        let mut inner = self.lock();
        let fresh = match inner.lru.get(name) {
            Some(c) if c.version == version => Some((Arc::clone(&c.data), c.hash)),
            Some(_) => None,
            None => None,
        };
        match fresh {
            Some(hit) => {
                inner.stats.hits += 1;
                Some(hit)
            }
            None => {
                // A stale entry (the file changed on disk) goes now.
                if let Some(stale) = inner.lru.pop(name) {
                    inner.stats.bytes -= stale.data.len() as u64;
                }
                inner.stats.misses += 1;
                None
            }
        }
    }

    /// Keeps a file just read from disk, evicting the least recently used to make room.
    pub fn insert(&self, name: &str, version: Version, hash: Hash, data: Arc<[u8]>) {
        let size = data.len() as u64;
        if !self.wants(size) || size != version.size {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.lru.pop(name) {
            inner.stats.bytes -= old.data.len() as u64;
        }
        while inner.stats.bytes + size > self.budget {
            match inner.lru.pop_lru() {
                Some((_, evicted)) => {
                    inner.stats.bytes -= evicted.data.len() as u64;
                    inner.stats.evictions += 1;
                }
                None => break,
            }
        }
        inner.stats.bytes += size;
        inner.lru.put(
            name.to_owned(),
            Cached {
                version,
                hash,
                data,
            },
        );
    }

    /// Drops `name` (it was replaced or deleted).
    pub fn invalidate(&self, name: &str) {
        let mut inner = self.lock();
        if let Some(old) = inner.lru.pop(name) {
            inner.stats.bytes -= old.data.len() as u64;
        }
    }

    /// Drops every entry of `name` or beneath it (a folder moved or deleted).
    pub fn invalidate_beneath(&self, name: &str) {
        let mut inner = self.lock();
        let stale: Vec<String> = inner
            .lru
            .iter()
            .filter(|(p, _)| is_at_or_beneath(p, name))
            .map(|(p, _)| p.clone())
            .collect();
        for p in stale {
            if let Some(old) = inner.lru.pop(&p) {
                inner.stats.bytes -= old.data.len() as u64;
            }
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.lru.len() as u64,
            ..inner.stats
        }
    }
}

/// Whether `name` is `folder` or a name inside it.
pub(crate) fn is_at_or_beneath(name: &str, folder: &str) -> bool {
    name.strip_prefix(folder)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Arc<[u8]> {
        vec![7u8; n].into()
    }

    #[test]
    fn serves_only_the_exact_version_and_evicts_least_recently_used() {
        let c = HotCache::new(100, 60);
        let v = |size, modified_ns| Version { size, modified_ns };
        c.insert("a", v(40, 1), [1; 32], data(40));
        c.insert("b", v(40, 1), [2; 32], data(40));
        assert!(c.get("a", v(40, 1)).is_some()); // a is now the most recent
        c.insert("d", v(40, 1), [3; 32], data(40)); // evicts b
        assert!(c.get("b", v(40, 1)).is_none());
        assert!(
            c.get("a", v(40, 2)).is_none(),
            "another mtime is another file"
        );
        assert!(
            c.get("a", v(40, 1)).is_none(),
            "and the stale entry is gone"
        );
        c.insert("big", v(61, 1), [0; 32], data(61));
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.hits, s.evictions), (1, 40, 1, 1));
        assert_eq!(s.misses, 3);
        c.invalidate("d");
        assert_eq!(c.stats().bytes, 0);
        c.insert("dir/x", v(1, 1), [0; 32], data(1));
        c.insert("dirt", v(1, 1), [0; 32], data(1));
        c.invalidate_beneath("dir");
        assert!(c.get("dirt", v(1, 1)).is_some());
        assert!(c.get("dir/x", v(1, 1)).is_none());
    }

    #[test]
    fn a_zero_budget_turns_it_off() {
        let c = HotCache::new(0, 1 << 20);
        assert!(!c.wants(1));
        c.insert(
            "a",
            Version {
                size: 1,
                modified_ns: 1,
            },
            [0; 32],
            data(1),
        );
        assert_eq!(c.stats().entries, 0);
    }
}
