//! Remembered BLAKE3 hashes of shared files, keyed by path, size and modification time, so a file
//! is hashed once rather than on every request. A file changed on disk has a new size or mtime and
//! so misses; the client's end-to-end check catches the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use troca_proto::Hash;

#[derive(Debug, Default)]
pub struct HashCache {
    known: Mutex<HashMap<PathBuf, (u64, i64, Hash)>>,
}

impl HashCache {
    /// The hash of `path` if it was computed for this exact size and mtime.
    pub fn get(&self, path: &Path, size: u64, mtime_ns: i64) -> Option<Hash> {
        let known = self.known.lock().expect("hash cache poisoned");
        match known.get(path) {
            Some(&(s, m, h)) if s == size && m == mtime_ns => Some(h),
            _ => None,
        }
    }

    pub fn insert(&self, path: PathBuf, size: u64, mtime_ns: i64, hash: Hash) {
        self.known
            .lock()
            .expect("hash cache poisoned")
            .insert(path, (size, mtime_ns, hash));
    }

    pub fn forget(&self, path: &Path) {
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
}
