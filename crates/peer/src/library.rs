//! The files a peer shares: found by walking its folder, identified by their BLAKE3 hash, with
//! their piece hashes computed once per (size, modification time) and kept in memory.
//!
//! Hidden files and folders (names starting with `.`), symbolic links and anything that is not a
//! regular file are never shared: partial downloads live in the hidden `.troca-swarm` folder, and
//! a link could point outside the folder. With `only_images`, a file is shared only if its first
//! bytes are an image's signature (what it is, not what its name says).

use crate::spread::Spread;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use troca_proto::pieces::Layout;
use troca_proto::tracker::FileInfo;
use troca_proto::{Hash, MAX_SHORT_STR};

/// One shared file.
#[derive(Debug)]
pub struct SharedFile {
    pub path: PathBuf,
    /// Its path below the shared folder, with `/` separators: the name others see.
    pub name: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub id: Hash,
    /// The chaining value of each piece (see `troca_proto::pieces`).
    pub pieces: Arc<[Hash]>,
    /// How far its pieces went, for initial seeding (see [`crate::spread`]): for a file found
    /// in the folder, not for one downloaded here (others in the crowd hold its pieces too).
    pub spread: Option<Mutex<Spread>>,
}

impl SharedFile {
    pub fn info(&self) -> FileInfo {
        FileInfo {
            id: self.id,
            size: self.size,
            name: self.name.clone(),
        }
    }

    /// Whether the file on disk is still the one that was hashed.
    pub fn unchanged(&self, meta: &std::fs::Metadata) -> bool {
        meta.len() == self.size && troca_net::transfer::mtime_ns(meta) == self.mtime_ns
    }
}

/// What a rescan changed, as the tracker needs to hear it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<FileInfo>,
    pub removed: Vec<FileInfo>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The shared folder and what is known about its files.
#[derive(Debug)]
pub struct Library {
    dir: PathBuf,
    only_images: bool,
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_path: HashMap<PathBuf, Arc<SharedFile>>,
    /// One file per id (several paths may hold the same bytes; any of them will do).
    by_id: HashMap<Hash, Arc<SharedFile>>,
}

impl Inner {
    /// The files as registered: one per id, named after the first path in name order.
    fn listing(&self) -> HashMap<Hash, FileInfo> {
        let mut files: Vec<&Arc<SharedFile>> = self.by_path.values().collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = HashMap::new();
        for f in files {
            out.entry(f.id).or_insert_with(|| f.info());
        }
        out
    }
}

/// The folder below the shared one where partial downloads are kept (hidden, so never shared).
pub const PARTIAL_DIR: &str = ".troca-swarm";

impl Library {
    pub fn new(dir: PathBuf, only_images: bool) -> Self {
        Self {
            dir,
            only_images,
            inner: RwLock::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file with this id, if shared.
    pub fn get(&self, id: &Hash) -> Option<Arc<SharedFile>> {
        self.inner
            .read()
            .expect("not poisoned")
            .by_id
            .get(id)
            .cloned()
    }

    /// Every shared file, one per id, sorted by name.
    pub fn files(&self) -> Vec<FileInfo> {
        let mut v: Vec<FileInfo> = self
            .inner
            .read()
            .expect("not poisoned")
            .listing()
            .into_values()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Walks the folder again: hashes new and changed files, forgets vanished ones, and says
    /// what the tracker must be told. Blocking (it reads files); run it off the async threads.
    pub fn scan(&self) -> io::Result<Changes> {
        let before = self.inner.read().expect("not poisoned").listing();
        let known: HashMap<PathBuf, Arc<SharedFile>> =
            self.inner.read().expect("not poisoned").by_path.clone();
        let mut by_path = HashMap::new();
        let walker = walkdir::WalkDir::new(&self.dir)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.depth() == 0 => return Err(e.into()),
                Err(e) => {
                    tracing::warn!("skipping: {e}");
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let Some(name) = share_name(&self.dir, entry.path()) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if let Some(old) = known.get(entry.path()) {
                if old.unchanged(&meta) {
                    by_path.insert(entry.path().to_path_buf(), Arc::clone(old));
                    continue;
                }
            }
            match self.examine(entry.path(), name, &meta) {
                Ok(Some(f)) => {
                    by_path.insert(entry.path().to_path_buf(), Arc::new(f));
                }
                Ok(None) => {}
                // A file that vanished or cannot be read is simply not shared.
                Err(e) => tracing::warn!("not sharing {}: {e}", entry.path().display()),
            }
        }
        let by_id = by_id(&by_path);
        let mut inner = self.inner.write().expect("not poisoned");
        *inner = Inner { by_path, by_id };
        let after = inner.listing();
        drop(inner);
        Ok(diff(&before, &after))
    }

    /// Shares a file this peer just downloaded and verified, without hashing it again.
    pub fn add_verified(&self, path: &Path, id: Hash, pieces: Arc<[Hash]>) -> io::Result<Changes> {
        let meta = std::fs::metadata(path)?;
        let Some(name) = share_name(&self.dir, path) else {
            return Ok(Changes::default());
        };
        if self.only_images && !is_image(path)? {
            return Ok(Changes::default());
        }
        let file = Arc::new(SharedFile {
            path: path.to_path_buf(),
            name,
            size: meta.len(),
            mtime_ns: troca_net::transfer::mtime_ns(&meta),
            id,
            pieces,
            spread: None,
        });
        let mut inner = self.inner.write().expect("not poisoned");
        let before = inner.listing();
        inner.by_path.insert(path.to_path_buf(), file);
        inner.by_id = by_id(&inner.by_path);
        let after = inner.listing();
        Ok(diff(&before, &after))
    }

    /// Hashes one file, or says it is not to be shared.
    fn examine(
        &self,
        path: &Path,
        name: String,
        meta: &std::fs::Metadata,
    ) -> io::Result<Option<SharedFile>> {
        if self.only_images && !is_image(path)? {
            return Ok(None);
        }
        let mut file = File::open(path)?;
        let (id, pieces) = hash_pieces(&mut file, meta.len())?;
        // A file written to while it was read is left for the next scan (its writer's last
        // change wakes the watcher again).
        let after = file.metadata()?;
        if after.len() != meta.len()
            || troca_net::transfer::mtime_ns(&after) != troca_net::transfer::mtime_ns(meta)
        {
            return Err(io::Error::other("it changed while it was read"));
        }
        Ok(Some(SharedFile {
            path: path.to_path_buf(),
            name,
            size: meta.len(),
            mtime_ns: troca_net::transfer::mtime_ns(meta),
            id,
            spread: Some(Mutex::new(Spread::new(pieces.len()))),
            pieces: pieces.into(),
        }))
    }
}

fn by_id(by_path: &HashMap<PathBuf, Arc<SharedFile>>) -> HashMap<Hash, Arc<SharedFile>> {
    by_path.values().map(|f| (f.id, Arc::clone(f))).collect()
}

fn diff(before: &HashMap<Hash, FileInfo>, after: &HashMap<Hash, FileInfo>) -> Changes {
    let mut changes = Changes {
        added: after
            .iter()
            .filter(|(id, f)| before.get(*id) != Some(f))
            .map(|(_, f)| f.clone())
            .collect(),
        removed: before
            .iter()
            .filter(|(id, _)| !after.contains_key(*id))
            .map(|(_, f)| f.clone())
            .collect(),
    };
    changes.added.sort_by(|a, b| a.name.cmp(&b.name));
    changes.removed.sort_by(|a, b| a.name.cmp(&b.name));
    changes
}

/// The name a file is shared under: its path below `dir` with `/` separators, if it is valid
/// UTF-8 and fits the tracker's limit.
fn share_name(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let name = parts?.join("/");
    (name.len() <= MAX_SHORT_STR && troca_proto::RemoteName::parse(&name).is_ok()).then_some(name)
}

/// Whether a file's first bytes are an image's signature (JPEG, PNG, GIF, WebP, BMP, TIFF, ICO,
/// HEIF, AVIF, …), like Python's `imghdr` that the seed used.
pub fn is_image(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 64];
    let mut file = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(infer::is_image(&head[..n]))
}

/// Reads a file of `len` bytes once and returns its id and piece hashes.
pub fn hash_pieces(file: &mut File, len: u64) -> io::Result<(Hash, Vec<Hash>)> {
    let layout = Layout::for_len(len);
    let mut buf = troca_net::IoBuf::new(troca_net::CACHE_CHUNK);
    let mut pieces = Vec::with_capacity(layout.count() as usize);
    for index in 0..layout.count() {
        let (_, piece_len) = layout.range(index);
        let mut hasher = layout.piece_hasher(index);
        let mut left = piece_len;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        pieces.push(layout.finish_piece(&hasher));
    }
    let id = layout
        .root(&pieces)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((id, pieces))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn ids_are_the_blake3_of_the_contents_and_pieces_merge_up_to_them() {
        let d = tempfile::tempdir().unwrap();
        let piece = troca_proto::pieces::MIN_PIECE as usize;
        let big: Vec<u8> = (0..3 * piece + 5).map(|i| (i % 251) as u8).collect();
        write(d.path(), "big.bin", &big);
        write(d.path(), "sub/small.txt", b"hello");
        let lib = Library::new(d.path().to_path_buf(), false);
        let changes = lib.scan().unwrap();
        let names: Vec<_> = changes.added.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["big.bin", "sub/small.txt"]);
        let id = *blake3::hash(&big).as_bytes();
        let f = lib.get(&id).expect("shared under its hash");
        assert_eq!(f.pieces.len(), 4);
        Layout::for_len(big.len() as u64)
            .verify(&id, &f.pieces)
            .unwrap();
        assert!(lib.get(blake3::hash(b"hello").as_bytes()).is_some());
    }

    #[test]
    fn hidden_files_partials_and_links_are_not_shared() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), ".secret", b"x");
        write(d.path(), ".troca-swarm/abc.part", b"y");
        write(d.path(), "ok.txt", b"z");
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("link")).unwrap();
        let lib = Library::new(d.path().to_path_buf(), false);
        lib.scan().unwrap();
        let names: Vec<_> = lib.files().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["ok.txt"]);
    }

    #[test]
    fn a_rescan_reports_added_changed_and_removed_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.txt", b"one");
        write(d.path(), "b.txt", b"two");
        let lib = Library::new(d.path().to_path_buf(), false);
        lib.scan().unwrap();
        assert!(lib.scan().unwrap().is_empty(), "nothing changed");
        std::fs::remove_file(d.path().join("a.txt")).unwrap();
        write(d.path(), "b.txt", b"two, longer now");
        write(d.path(), "c.txt", b"three");
        let ch = lib.scan().unwrap();
        let added: Vec<_> = ch.added.iter().map(|f| f.name.as_str()).collect();
        let removed: Vec<_> = ch.removed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(added, ["b.txt", "c.txt"]);
        assert_eq!(removed, ["a.txt", "b.txt"], "b.txt's old id is gone");
    }

    #[test]
    fn only_images_goes_by_content_not_by_extension() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "fake.jpg", b"just some text, not a JPEG at all");
        write(
            d.path(),
            "real.dat",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0",
        );
        let lib = Library::new(d.path().to_path_buf(), true);
        lib.scan().unwrap();
        let names: Vec<_> = lib.files().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["real.dat"]);
    }
}
