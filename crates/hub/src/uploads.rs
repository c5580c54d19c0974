//! Partial uploads, kept in `STATE/uploads/` until they are complete and verified.
//!
//! Each upload in progress has a `KEY.part` (the bytes so far) and a `KEY.meta` (what file they
//! belong to: size, the source's mtime, the name). A new `Put` for the same name, size and source
//! mtime resumes from the bytes held. Only one upload per name runs at once.

use crate::error::HubError;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use troca_proto::RemoteName;

/// The folder of partial uploads and the names being uploaded right now.
#[derive(Debug)]
pub struct Partials {
    dir: PathBuf,
    active: Arc<Mutex<HashSet<String>>>,
}

/// An upload in progress: the open `.part` file, positioned at `offset`, with the hash of the
/// bytes before `offset` already computed.
#[derive(Debug)]
pub struct PartialUpload {
    pub name: RemoteName,
    pub size: u64,
    pub offset: u64,
    pub file: File,
    pub hasher: blake3::Hasher,
    pub part: PathBuf,
    meta: PathBuf,
    _claim: Claim,
}

impl PartialUpload {
    /// Deletes the partial data (after a failed verification or a full disk).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.part);
        let _ = std::fs::remove_file(&self.meta);
    }

    /// Forgets the record once the data has been moved into place.
    pub fn completed(self) {
        let _ = std::fs::remove_file(&self.meta);
    }
}

/// Holds a name in the active set until dropped.
#[derive(Debug)]
struct Claim {
    name: String,
    active: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active
            .lock()
            .expect("upload set poisoned")
            .remove(&self.name);
    }
}

impl Partials {
    pub fn open(state: &Path) -> Result<Self, HubError> {
        let dir = state.join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
        Ok(Self {
            dir,
            active: Arc::default(),
        })
    }

    /// Starts or resumes the upload of `size` bytes to `name`. Blocking: may hash what is held.
    pub fn begin(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
    ) -> Result<PartialUpload, HubError> {
        let claim = self.claim(&name)?;
        let key = blake3::hash(name.as_str().as_bytes()).to_hex();
        let part = self.dir.join(format!("{}.part", &key[..32]));
        let meta = self.dir.join(format!("{}.meta", &key[..32]));
        let record = format!("v1\n{size}\n{source_mtime_ns}\n{name}\n");
        let io = |what: &str, e| HubError::io(format!("{what} for {name}"), e);

        // Resume only an upload of the very same file: same name, size and source mtime (an
        // unknown mtime, 0, never matches, since then nothing says the file is the same).
        let same =
            source_mtime_ns != 0 && std::fs::read_to_string(&meta).is_ok_and(|held| held == record);
        let held = std::fs::metadata(&part).map_or(0, |m| m.len());
        let offset = if same && held <= size { held } else { 0 };
        // Check the space before creating anything, so a refusal leaves nothing behind.
        let available = troca_net::durable::available_bytes(&self.dir);
        let needed = size - offset;
        if available < needed {
            return Err(HubError::NoSpace { needed, available });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| io("cannot open upload file", e))?;
        if offset == 0 {
            file.set_len(0)
                .map_err(|e| io("cannot reset upload file", e))?;
            std::fs::write(&meta, &record).map_err(|e| io("cannot record upload", e))?;
        }
        let mut hasher = blake3::Hasher::new();
        if offset > 0 {
            troca_net::durable::hash_prefix(&mut file, offset, &mut hasher)
                .map_err(|e| io("cannot read partial upload", e))?;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io("cannot seek upload file", e))?;
        Ok(PartialUpload {
            name,
            size,
            offset,
            file,
            hasher,
            part,
            meta,
            _claim: claim,
        })
    }

    fn claim(&self, name: &RemoteName) -> Result<Claim, HubError> {
        let mut active = self.active.lock().expect("upload set poisoned");
        if !active.insert(name.to_string()) {
            return Err(HubError::UploadInProgress(name.to_string()));
        }
        Ok(Claim {
            name: name.to_string(),
            active: Arc::clone(&self.active),
        })
    }

    /// Deletes partial uploads untouched for longer than `ttl`, except those in progress.
    /// Returns how many were removed. Blocking.
    pub fn clean(&self, ttl: Duration) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in dir.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "part") {
                continue;
            }
            let meta_path = path.with_extension("meta");
            let name = std::fs::read_to_string(&meta_path)
                .ok()
                .and_then(|m| m.lines().nth(3).map(str::to_owned));
            if name.is_some_and(|n| {
                self.active
                    .lock()
                    .expect("upload set poisoned")
                    .contains(&n)
            }) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if age.is_some_and(|a| a > ttl) {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&meta_path);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn name(s: &str) -> RemoteName {
        RemoteName::parse(s).unwrap()
    }

    #[test]
    fn a_second_upload_of_the_same_name_is_busy_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path()).unwrap();
        let first = p.begin(name("a"), 10, 1).unwrap();
        assert!(matches!(
            p.begin(name("a"), 10, 1),
            Err(HubError::UploadInProgress(_))
        ));
        drop(first);
        p.begin(name("a"), 10, 1).unwrap();
    }

    #[test]
    fn only_the_same_file_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path()).unwrap();
        let mut up = p.begin(name("a"), 10, 7).unwrap();
        up.file.write_all(b"01234").unwrap();
        drop(up);
        let up = p.begin(name("a"), 10, 7).unwrap();
        assert_eq!(up.offset, 5);
        let mut expect = blake3::Hasher::new();
        expect.update(b"01234");
        assert_eq!(up.hasher.finalize(), expect.finalize());
        drop(up);
        // Another mtime: another file; start over.
        assert_eq!(p.begin(name("a"), 10, 8).unwrap().offset, 0);
        // Unknown mtime never resumes.
        assert_eq!(p.begin(name("a"), 10, 0).unwrap().offset, 0);
    }

    #[test]
    fn clean_removes_only_old_idle_partials() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path()).unwrap();
        drop(p.begin(name("old"), 1, 1).unwrap());
        // mtimes come from a coarse clock; make sure "old" is measurably in the past.
        std::thread::sleep(Duration::from_millis(30));
        let busy = p.begin(name("busy"), 1, 1).unwrap();
        assert_eq!(p.clean(Duration::from_secs(3600)), 0);
        assert_eq!(p.clean(Duration::ZERO), 1);
        assert!(busy.part.exists());
    }
}
