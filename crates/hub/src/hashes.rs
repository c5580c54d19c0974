//! Remembered BLAKE3 hashes of shared files, keyed by path, size and modification time, so a file
//! is hashed once rather than on every request, and not again after a restart: the hub keeps them
//! in its state database too. A file changed on disk has a new size or mtime and so misses; the
//! client's end-to-end check catches the rest.

use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use troca_proto::Hash;

#[derive(Debug, Default)]
pub struct HashCache {
    known: Mutex<HashMap<PathBuf, (u64, i64, Hash)>>,
    /// Where they are kept across restarts, once attached.
    db: Mutex<Option<Connection>>,
}

impl HashCache {
    /// Keeps the hashes in the database at `path` from now on, and loads those already there.
    pub fn attach(&self, path: &Path) -> rusqlite::Result<()> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS hashes (
                 path TEXT PRIMARY KEY,
                 size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL,
                 hash BLOB NOT NULL
             );",
        )?;
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
                    known.insert(PathBuf::from(p), (size as u64, mtime, hash));
                }
            }
        }
        *self.db.lock().expect("hash cache poisoned") = Some(db);
        Ok(())
    }

    /// The hash of `path` if it was computed for this exact size and mtime.
    pub fn get(&self, path: &Path, size: u64, mtime_ns: i64) -> Option<Hash> {
        let known = self.known.lock().expect("hash cache poisoned");
        match known.get(path) {
            Some(&(s, m, h)) if s == size && m == mtime_ns => Some(h),
            _ => None,
        }
    }

    /// Remembers a hash (once per version of a file, so the database write is rare).
    pub fn insert(&self, path: PathBuf, size: u64, mtime_ns: i64, hash: Hash) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let saved = db.execute(
                "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)",
                params![path.to_string_lossy(), size as i64, mtime_ns, hash.as_slice()],
            );
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot save a file hash");
            }
        }
        self.known
            .lock()
            .expect("hash cache poisoned")
            .insert(path, (size, mtime_ns, hash));
    }

    /// [`HashCache::insert`] for many files, in one database transaction.
    pub fn insert_many(&self, hashes: Vec<(PathBuf, u64, i64, Hash)>) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_mut() {
            let saved = (|| -> rusqlite::Result<()> {
                let tx = db.transaction()?;
                for (path, size, mtime_ns, hash) in &hashes {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO hashes (path, size, mtime_ns, hash) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![path.to_string_lossy(), *size as i64, mtime_ns, hash.as_slice()])?;
                }
                tx.commit()
            })();
            if let Err(e) = saved {
                tracing::warn!(error = %e, "cannot save file hashes");
            }
        }
        let mut known = self.known.lock().expect("hash cache poisoned");
        for (path, size, mtime_ns, hash) in hashes {
            known.insert(path, (size, mtime_ns, hash));
        }
    }

    /// Forgets every hash at `path` or beneath it (a folder moved or deleted): a different file
    /// could later appear there with the same size and mtime.
    pub fn forget_beneath(&self, path: &Path) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let p = path.to_string_lossy();
            let _ = db.execute(
                "DELETE FROM hashes WHERE path = ?1 OR substr(path, 1, length(?1) + 1) = ?1 || '/'",
                params![p],
            );
        }
        self.known
            .lock()
            .expect("hash cache poisoned")
            .retain(|p, _| !p.starts_with(path));
    }

    pub fn forget(&self, path: &Path) {
        if let Some(db) = self.db.lock().expect("hash cache poisoned").as_ref() {
            let _ = db.execute(
                "DELETE FROM hashes WHERE path = ?1",
                params![path.to_string_lossy()],
            );
        }
        self.known.lock().expect("hash cache poisoned").remove(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_size_or_mtime_misses() {
        let c = HashCache::default();
        let p = PathBuf::from("/x");
        c.insert(p.clone(), 10, 5, [1; 32]);
        assert_eq!(c.get(&p, 10, 5), Some([1; 32]));
        assert_eq!(c.get(&p, 11, 5), None);
        assert_eq!(c.get(&p, 10, 6), None);
        c.forget(&p);
        assert_eq!(c.get(&p, 10, 5), None);
    }

    #[test]
    fn hashes_survive_a_restart_once_attached() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("troca.db");
        let c = HashCache::default();
        c.attach(&db).unwrap();
        c.insert(PathBuf::from("/a"), 1, 2, [3; 32]);
        c.insert(PathBuf::from("/b"), 4, 5, [6; 32]);
        c.forget(Path::new("/b"));
        drop(c);
        let again = HashCache::default();
        again.attach(&db).unwrap();
        assert_eq!(again.get(Path::new("/a"), 1, 2), Some([3; 32]));
        assert_eq!(again.get(Path::new("/b"), 4, 5), None);
    }
}
