//! Remembered BLAKE3 hashes of shared files, keyed by name and version (size and modification
//! time), so a file is hashed once rather than on every request, and not again after a restart:
//! the hub keeps them in its state database, and the most recently used in memory (at most
//! `--hash-cache`). A file changed on disk has a new size or mtime and so misses; the client's
//! end-to-end check catches the rest.

use crate::error::HubError;
use crate::store::Version;
use lru::LruCache;
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Mutex;
use troca_proto::Hash;

/// A file's hash, for the version it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub name: String,
    pub version: Version,
    pub hash: Hash,
}

/// Hashes in memory, at most `--hash-cache` of them (the most recently used), in front of the
/// state database, which keeps them all: memory does not grow with the number of files shared,
/// the map never grows (its room is taken at start, so no insert stalls to rehash it), and a
/// hub with millions of files starts without reading them.
#[derive(Debug)]
pub struct HashCache {
    known: Mutex<Known>,
    /// Where they are kept across restarts, once attached: one connection writes, another
    /// reads (a lookup never waits for a batch's transaction).
    db: Mutex<Option<Connection>>,
    reader: Mutex<Option<Connection>>,
}

/// The hashes in memory, and how many changes were made to them (a hash read from the
/// database is kept only if none was made meanwhile: it could be one just replaced or
/// forgotten).
#[derive(Debug)]
struct Known {
    lru: LruCache<String, (Version, Hash)>,
    changes: u64,
}

/// How many hashes are kept in memory by default.
pub const DEFAULT_ENTRIES: usize = 100_000;

impl Default for HashCache {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES)
    }
}

impl HashCache {
    /// A cache of at most `entries` hashes in memory (at least one).
    pub fn new(entries: usize) -> Self {
        let entries = NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            known: Mutex::new(Known {
                lru: LruCache::new(entries),
                changes: 0,
            }),
            db: Mutex::new(None),
            reader: Mutex::new(None),
        }
    }

    /// Keeps the hashes in the database at `path` from now on, and reads those already there
    /// when asked for.
    pub fn attach(&self, path: &Path) -> Result<(), HubError> {
        // The table is made with the rest of the schema (`records/sqlite`).
        let db = crate::records::sqlite::open_db(path)?;
        let reader = crate::records::sqlite::open_db(path)?;
        *self.db.lock().expect("hash cache poisoned") = Some(db);
        *self.reader.lock().expect("hash cache poisoned") = Some(reader);
        Ok(())
    }

    /// The hash of `name` if it was computed for this very version: from memory, else from the
    /// database (a lookup by primary key), which holds every hash remembered.
    pub fn get(&self, name: &str, version: Version) -> Option<Hash> {
        let changes = {
            let mut known = self.lock();
            if let Some(&(v, h)) = known.lru.get(name) {
                if v == version {
                    return Some(h);
                }
            }
            known.changes
        };
        let (v, h) = self.stored(name)?;
        let mut known = self.lock();
        if known.changes == changes {
            known.lru.put(name.to_owned(), (v, h));
        }
        (v == version).then_some(h)
    }

    /// [`HashCache::get`] for a listing's page of files: those in memory from there (without
    /// making them the most recently used: a listing is a scan), the rest in one query, and none
    /// of those kept in memory.
    pub fn get_page(&self, files: &[(&str, Version)]) -> Vec<Option<Hash>> {
        let mut found: Vec<Option<Hash>> = Vec::with_capacity(files.len());
        let mut missed: Vec<&str> = Vec::new();
        {
            let known = self.lock();
            for &(name, version) in files {
                let hit = known.lru.peek(name).filter(|(v, _)| *v == version);
                if hit.is_none() {
                    missed.push(name);
                }
                found.push(hit.map(|&(_, h)| h));
            }
        }
        if missed.is_empty() {
            return found;
        }
        let stored = self.stored_many(&missed);
        for (slot, &(name, version)) in found.iter_mut().zip(files) {
            if slot.is_none() {
                *slot = stored
                    .get(name)
                    .filter(|(v, _)| *v == version)
                    .map(|&(_, h)| h);
            }
        }
        found
    }

    /// The rows of `names` in the database, in one query.
    fn stored_many(&self, names: &[&str]) -> HashMap<String, (Version, Hash)> {
        let reader = self.reader.lock().expect("hash cache poisoned");
        let Some(db) = reader.as_ref() else {
            return HashMap::new();
        };
        let list = serde_json::to_string(names).unwrap_or_default();
        let rows = db
            .prepare_cached(
                "SELECT path, size, mtime_ns, hash FROM hashes
                 WHERE path IN (SELECT value FROM json_each(?1))",
            )
            .and_then(|mut s| {
                s.query_map(params![list], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            });
        let rows = rows.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read file hashes");
            Vec::new()
        });
        rows.into_iter()
            .filter_map(|(path, size, modified_ns, hash)| {
                let hash = <Hash>::try_from(hash.as_slice()).ok()?;
                let version = Version {
                    size: size as u64,
                    modified_ns,
                };
                Some((path, (version, hash)))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().expect("hash cache poisoned")
    }

    /// `name`'s row in the database.
    fn stored(&self, name: &str) -> Option<(Version, Hash)> {
        self.stored_many(&[name]).remove(name)
    }

    /// Remembers a hash (once per version of a file, so the database write is rare).
    pub fn insert(&self, name: &str, version: Version, hash: Hash) {
        self.insert_many(vec![Remembered {
            name: name.to_owned(),
            version,
            hash,
        }]);
    }

    /// [`HashCache::insert`] for many files, in one database transaction.
    pub fn insert_many(&self, hashes: Vec<Remembered>) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_mut() {
            let saved = (|| -> rusqlite::Result<()> {
                let tx = db.transaction()?;
                for r in &hashes {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        r.name,
                        r.version.size as i64,
                        r.version.modified_ns,
                        r.hash.as_slice()
                    ])?;
                }
                tx.commit()
            })();
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot save file hashes");
            }
        }
        let mut known = self.lock();
        known.changes += 1;
        for r in hashes {
            known.lru.put(r.name, (r.version, r.hash));
        }
    }

    /// Forgets every hash of `name` or beneath it (a folder moved or deleted): a different file
    /// could later appear there with the same size and mtime.
    pub fn forget_beneath(&self, name: &str) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let _ = db.execute(
                "DELETE FROM hashes WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'",
                params![name],
            );
        }
        let mut known = self.lock();
        known.changes += 1;
        let gone: Vec<String> = known
            .lru
            .iter()
            .filter(|(n, _)| crate::cache::is_at_or_beneath(n, name))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            known.lru.pop(&n);
        }
    }

    pub fn forget(&self, name: &str) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let _ = db.execute("DELETE FROM hashes WHERE path = ?1", params![name]);
        }
        let mut known = self.lock();
        known.changes += 1;
        known.lru.pop(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_size_or_mtime_misses() {
        let c = HashCache::default();
        let v = |size, modified_ns| Version { size, modified_ns };
        c.insert("x", v(10, 5), [1; 32]);
        assert_eq!(c.get("x", v(10, 5)), Some([1; 32]));
        assert_eq!(c.get("x", v(11, 5)), None);
        assert_eq!(c.get("x", v(10, 6)), None);
        c.insert("dir/y", v(1, 1), [2; 32]);
        c.insert("dirt", v(1, 1), [3; 32]);
        c.forget_beneath("dir");
        assert_eq!(c.get("dir/y", v(1, 1)), None);
        assert_eq!(c.get("dirt", v(1, 1)), Some([3; 32]));
        c.forget("x");
        assert_eq!(c.get("x", v(10, 5)), None);
    }

    fn sized(size: u64) -> Version {
        Version {
            size,
            modified_ns: 7,
        }
    }

    /// A cache of two hashes in memory on a new database, after `{prefix}f0` to `{prefix}f4`
    /// (file `i` of size `i`, hash `[i; 32]`) were remembered.
    fn five_in_a_cache_of_two(prefix: &str) -> (tempfile::TempDir, HashCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = HashCache::new(2);
        c.attach(&dir.path().join("troca.db")).unwrap();
        for i in 0..5u8 {
            c.insert(&format!("{prefix}f{i}"), sized(i.into()), [i; 32]);
        }
        (dir, c)
    }

    /// Memory holds the most recently used hashes only; the database answers for the rest,
    /// and a forgotten or replaced one is not brought back from it.
    #[test]
    fn memory_keeps_only_the_newest_and_the_database_the_rest() {
        let (_dir, c) = five_in_a_cache_of_two("");
        let v = sized;
        assert_eq!(c.lock().lru.len(), 2, "memory stays within its bound");
        for i in 0..5u8 {
            assert_eq!(c.get(&format!("f{i}"), v(i.into())), Some([i; 32]), "f{i}");
        }
        assert_eq!(c.lock().lru.len(), 2);
        c.insert("f0", v(9), [9; 32]);
        assert_eq!(c.get("f0", v(0)), None, "the old version is gone");
        assert_eq!(c.get("f0", v(9)), Some([9; 32]));
        c.forget("f1");
        c.forget_beneath("f2");
        assert_eq!(c.get("f1", v(1)), None);
        assert_eq!(c.get("f2", v(2)), None);
        assert_eq!(c.get("f3", v(3)), Some([3; 32]));
    }

    /// A listing's page finds hashes in memory and in the database alike, only for the very
    /// version, and keeps none of those it read in memory.
    #[test]
    fn a_page_finds_hashes_in_memory_and_in_the_database() {
        let (_dir, c) = five_in_a_cache_of_two("d/");
        let v = sized;
        let page = [
            ("d/f0", v(0)),
            ("d/f1", v(1)),
            ("d/f2", v(99)),
            ("d/f3", v(3)),
            ("d/f4", v(4)),
            ("d/never", v(1)),
        ];
        let found = c.get_page(&page);
        let want = [
            Some([0; 32]),
            Some([1; 32]),
            None,
            Some([3; 32]),
            Some([4; 32]),
            None,
        ];
        assert_eq!(found, want);
        let in_memory: Vec<String> = c.lock().lru.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            in_memory,
            ["d/f4", "d/f3"],
            "the page left memory as it was"
        );
    }

    /// Without a database (a hub on an object store keeps hashes in its catalog) memory is
    /// all there is, and still bounded.
    #[test]
    fn without_a_database_the_oldest_are_forgotten() {
        let c = HashCache::new(3);
        let v = Version {
            size: 1,
            modified_ns: 1,
        };
        for i in 0..10u8 {
            c.insert(&format!("f{i}"), v, [i; 32]);
        }
        assert_eq!(c.lock().lru.len(), 3);
        assert_eq!(c.get("f0", v), None);
        assert_eq!(c.get("f9", v), Some([9; 32]));
    }

    #[test]
    fn hashes_survive_a_restart_once_attached() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("troca.db");
        let c = HashCache::default();
        c.attach(&db).unwrap();
        let v = |size, modified_ns| Version { size, modified_ns };
        c.insert("a", v(1, 2), [3; 32]);
        c.insert("b", v(4, 5), [6; 32]);
        c.forget("b");
        drop(c);
        let again = HashCache::default();
        again.attach(&db).unwrap();
        assert_eq!(again.get("a", v(1, 2)), Some([3; 32]));
        assert_eq!(again.get("b", v(4, 5)), None);
    }
}
