//! Remembered BLAKE3 hashes of shared files, keyed by name and version (size and modification
//! time), so a file
//! is hashed once rather than on every request, and not again after a restart: the hub keeps them
//! in its state database too. A file changed on disk has a new size or mtime and so misses; the
//! client's end-to-end check catches the rest.

use crate::error::HubError;
use crate::store::Version;
use rusqlite::{params, Connection};
use std::collections::HashMap;
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

#[derive(Debug, Default)]
pub struct HashCache {
    known: Mutex<HashMap<String, (Version, Hash)>>,
    /// Where they are kept across restarts, once attached.
    db: Mutex<Option<Connection>>,
}

impl HashCache {
    /// Keeps the hashes in the database at `path` from now on, and loads those already there.
    pub fn attach(&self, path: &Path) -> Result<(), HubError> {
        // The table is made with the rest of the schema (`records/sqlite`).
        let db = crate::records::sqlite::open_db(path)?;
        self.load(&db)
            .map_err(|e| crate::records::sqlite::db_err(path, e))?;
        *self.db.lock().expect("hash cache poisoned") = Some(db);
        Ok(())
    }

    fn load(&self, db: &Connection) -> rusqlite::Result<()> {
        {
            let mut known = self.known.lock().expect("hash cache poisoned");
            let mut stmt = db.prepare("SELECT path, size, mtime_ns, hash FROM hashes")?;
            let rows = stmt.query_map([], |r| {
                let hash: Vec<u8> = r.get(3)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    hash,
                ))
            })?;
            for row in rows {
                let (p, size, mtime, hash) = row?;
                if let Ok(hash) = <Hash>::try_from(hash.as_slice()) {
                    let version = Version {
                        size: size as u64,
                        modified_ns: mtime,
                    };
                    known.insert(p, (version, hash));
                }
            }
        }
        Ok(())
    }

    /// The hash of `name` if it was computed for this very version.
    pub fn get(&self, name: &str, version: Version) -> Option<Hash> {
        let known = self.known.lock().expect("hash cache poisoned");
        match known.get(name) {
            Some(&(v, h)) if v == version => Some(h),
            _ => None,
        }
    }

    /// Remembers a hash (once per version of a file, so the database write is rare).
    pub fn insert(&self, name: &str, version: Version, hash: Hash) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let saved = db
                .prepare_cached(
                    "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| {
                    s.execute(params![name, version.size as i64, version.modified_ns, hash.as_slice()])
                });
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot save a file hash");
            }
        }
        self.known
            .lock()
            .expect("hash cache poisoned")
            .insert(name.to_owned(), (version, hash));
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
        let mut known = self.known.lock().expect("hash cache poisoned");
        for r in hashes {
            known.insert(r.name, (r.version, r.hash));
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
        self.known
            .lock()
            .expect("hash cache poisoned")
            .retain(|n, _| !crate::cache::is_at_or_beneath(n, name));
    }

    pub fn forget(&self, name: &str) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let _ = db.execute("DELETE FROM hashes WHERE path = ?1", params![name]);
        }
        self.known.lock().expect("hash cache poisoned").remove(name);
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
