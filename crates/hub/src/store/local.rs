//! [`LocalStore`]: the shared folder on this machine ([`Share`], reached through descriptors
//! beneath its root) and the partial uploads in the state folder ([`Partials`]).

use super::share::{is_not_found, Share, Slot};
use super::uploads::{KeepFree, PartialBudget, PartialInfo, Partials};
use super::Version;
use super::{
    Body, FindQuery, Kind, ListPage, ListQuery, PlaceCheck, Seen, SmallFile, Store, StoredFile,
};
use super::{Claim, CopiedFile, CopySteps, CopyTo, Matches, PartialUpload, Retimed};
use crate::error::HubError;
use rustix::fs::FileType;
use rustix::io::Errno;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use troca_net::transfer::mtime_ns;
use troca_proto::{Hash, RemoteName};

/// A folder on this machine, with the hub's partial uploads in its state folder.
#[derive(Debug)]
pub struct LocalStore {
    pub(super) share: Share,
    pub(super) partials: Partials,
}

/// The version a file's metadata describes.
pub(crate) fn version_of(meta: &std::fs::Metadata) -> Version {
    Version {
        size: meta.len(),
        modified_ns: mtime_ns(meta),
    }
}

fn kind_of(t: FileType) -> Kind {
    match t {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Folder,
        _ => Kind::Other,
    }
}

impl LocalStore {
    /// Opens (creating if needed) the shared folder `root` and the state folder `state`.
    pub fn open(
        root: &Path,
        state: &Path,
        budget: PartialBudget,
        keep_free: KeepFree,
    ) -> Result<Self, HubError> {
        let share = Share::open(root, state)?;
        let partials = Partials::open(share.state_dir(), budget, keep_free)?;
        Ok(Self { share, partials })
    }

    /// Lists no link that leads to a name `hidden` covers ([`Share::hiding`]).
    pub fn hiding(mut self, hidden: std::sync::Arc<crate::hidden::Hidden>) -> Self {
        self.share = self.share.hiding(hidden);
        self
    }

    /// The state folder, resolved (the hub's records live there).
    pub fn state_dir(&self) -> &Path {
        self.share.state_dir()
    }

    /// The slot of `name`, or `None` when a folder on the way is missing.
    fn existing_slot(&self, name: &RemoteName) -> Result<Option<Slot>, HubError> {
        match self.share.slot(name, false) {
            Ok(slot) => Ok(Some(slot)),
            Err(HubError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Bytes copied, then read back and hashed, per step of a copy.
const COPY_STEP: usize = 1 << 20;
/// From this size on, a copy is read back and hashed on a second thread while it is made.
const COPY_ALONGSIDE: u64 = 16 << 20;

/// Copies the first `size` bytes of `src` to `dst` (at the same offsets), by the kernel where
/// it can (else read and written here), and returns the hash of what `dst` holds after. A
/// large copy is hashed on another thread, a step behind, so hashing costs no time of its own.
fn copy_and_hash(src: &File, dst: &File, size: u64, steps: &CopySteps) -> std::io::Result<Hash> {
    let step_done = |n: usize| {
        steps.add(n as u64);
        match steps.stopped() {
            true => Err(std::io::Error::other("the copy was stopped")),
            false => Ok(()),
        }
    };
    if size < COPY_ALONGSIDE {
        let mut hasher = Hasher::new();
        copy_steps(src, dst, size, |at, n| {
            hasher.step(dst, at, n)?;
            step_done(n)
        })?;
        return Ok(hasher.hash());
    }
    std::thread::scope(|scope| {
        let (queue, done) = std::sync::mpsc::sync_channel::<(u64, usize)>(8);
        let hashing = scope.spawn(move || {
            let mut hasher = Hasher::new();
            for (at, n) in done {
                hasher.step(dst, at, n)?;
            }
            Ok::<_, std::io::Error>(hasher.hash())
        });
        let copied = copy_steps(src, dst, size, |at, n| {
            // The hasher stopped (it failed): its error says why.
            queue
                .send((at, n))
                .map_err(|_| std::io::Error::other("hashing stopped"))?;
            step_done(n)
        });
        drop(queue);
        let hashed = hashing
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("hashing failed")));
        match (copied, hashed) {
            (Ok(()), hashed) => hashed,
            (Err(_), Err(e)) | (Err(e), Ok(_)) => Err(e),
        }
    })
}

/// A copy's hash, made from what the copy holds, read back a step at a time.
struct Hasher {
    hasher: blake3::Hasher,
    buf: troca_net::IoBuf,
}

impl Hasher {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            buf: troca_net::IoBuf::new(COPY_STEP),
        }
    }

    /// Hashes the `n` bytes of `file` at `at` (the next after those hashed).
    fn step(&mut self, file: &File, at: u64, n: usize) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut self.buf[..n], at)?;
        self.hasher.update(&self.buf[..n]);
        Ok(())
    }

    fn hash(&self) -> Hash {
        *self.hasher.finalize().as_bytes()
    }
}

/// Copies `size` bytes of `src` to `dst` in steps of at most [`COPY_STEP`], by the kernel
/// where it can, calling `copied` after each with where it began and its length.
fn copy_steps(
    src: &File,
    dst: &File,
    size: u64,
    mut copied: impl FnMut(u64, usize) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf: Option<troca_net::IoBuf> = None;
    let (mut at, mut by_kernel) = (0u64, true);
    let ended = || std::io::Error::other("the source ended early: it changed while it was copied");
    while at < size {
        let want = COPY_STEP.min((size - at) as usize);
        let n = if by_kernel {
            let (mut a, mut b) = (at, at);
            match rustix::fs::copy_file_range(src, Some(&mut a), dst, Some(&mut b), want) {
                Ok(0) => return Err(ended()),
                Ok(n) => n,
                // Another file system, or one that cannot: copied here instead.
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                    by_kernel = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            let step = &mut buf.get_or_insert_with(|| troca_net::IoBuf::new(COPY_STEP))[..want];
            let n = src.read_at(step, at)?;
            if n == 0 {
                return Err(ended());
            }
            dst.write_all_at(&step[..n], at)?;
            n
        };
        copied(at, n)?;
        at += n as u64;
    }
    Ok(())
}

/// What a slot holds now.
pub(super) fn slot_kind(slot: &Slot, name: &RemoteName) -> Result<Option<Kind>, HubError> {
    slot.kind()
        .map(|k| k.map(kind_of))
        .map_err(|e| HubError::io(format!("cannot reach {name}"), e))
}

/// What the slot's name holds, and a file's version, in one look.
pub(super) fn slot_seen(slot: &Slot, name: &RemoteName) -> Result<Seen, HubError> {
    match slot.seen() {
        Ok(Some((kind, version))) => Ok(Seen {
            kind: Some(kind_of(kind)),
            version,
        }),
        Ok(None) => Ok(Seen::default()),
        Err(e) => Err(HubError::io(format!("cannot reach {name}"), e)),
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.share.root().display().to_string()
    }

    fn health(&self, _within: std::time::Duration) -> Result<(), HubError> {
        self.share.health()
    }

    fn unserved(&self, budget: u64) -> Option<super::share::Unserved> {
        Some(self.share.unserved(budget))
    }

    fn list(&self, query: ListQuery<'_>) -> Result<ListPage, HubError> {
        Ok(self.share.list(query))
    }

    fn find(&self, query: FindQuery<'_>) -> Result<Matches, HubError> {
        Ok(self.share.find(query))
    }

    fn each_file_beneath(
        &self,
        folder: &RemoteName,
        each: &mut dyn FnMut(&str) -> Result<(), HubError>,
    ) -> Result<(), HubError> {
        self.share.each_file_beneath(folder, each)
    }

    fn has_links(&self) -> bool {
        true
    }

    fn kind(&self, name: &RemoteName) -> Result<Option<Kind>, HubError> {
        match self.existing_slot(name)? {
            Some(slot) => slot_kind(&slot, name),
            None => Ok(None),
        }
    }

    fn changed_outside(&self) -> bool {
        true
    }

    fn seen(&self, name: &RemoteName) -> Result<Seen, HubError> {
        match self.existing_slot(name)? {
            Some(slot) => slot_seen(&slot, name),
            None => Ok(Seen::default()),
        }
    }

    /// One lookup of each folder in turn (its descriptor held while its names come, then
    /// closed), rather than one per name.
    fn seen_each(&self, names: &[RemoteName]) -> Vec<Result<Seen, HubError>> {
        let mut folder: Option<(&str, Option<Slot>)> = None;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let parent = name.as_str().rsplit_once('/').map_or("", |(p, _)| p);
            if folder.as_ref().is_none_or(|(known, _)| *known != parent) {
                match self.existing_slot(name) {
                    Ok(slot) => folder = Some((parent, slot)),
                    Err(e) => {
                        folder = None;
                        out.push(Err(e));
                        continue;
                    }
                }
            }
            let slot = folder.as_ref().and_then(|(_, s)| s.as_ref());
            out.push(match slot {
                Some(s) => slot_seen(&s.sibling(name.file_name()), name),
                None => Ok(Seen::default()),
            });
        }
        out
    }

    fn open(&self, name: &RemoteName) -> Result<StoredFile, HubError> {
        let file = self.share.open_existing(name)?;
        let meta = file
            .metadata()
            .map_err(|e| HubError::io(format!("cannot stat {name}"), e))?;
        if meta.is_dir() {
            return Err(HubError::NotAFile(name.to_string()));
        }
        // A FIFO, a socket or a device is not shared: as if nothing were there.
        if !meta.is_file() {
            return Err(HubError::NotFound(name.to_string()));
        }
        Ok(StoredFile {
            version: version_of(&meta),
            body: Body::File(file),
            hash: None,
        })
    }

    fn begin_upload(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
        from: Option<IpAddr>,
    ) -> Result<PartialUpload, HubError> {
        self.partials
            .begin(name, size, source_mtime_ns, from)
            .map(PartialUpload::Local)
    }

    fn resumable(
        &self,
        name: &RemoteName,
        size: u64,
        source_mtime_ns: i64,
    ) -> Result<u64, HubError> {
        Ok(self.partials.resumable(name, size, source_mtime_ns))
    }

    fn commit(&self, upload: PartialUpload, replace: bool) -> Result<Version, HubError> {
        let PartialUpload::Local(upload) = upload else {
            return Err(HubError::Internal("an upload of another store".into()));
        };
        let name = upload.name.clone();
        let saved = |e| HubError::io(format!("cannot save {name}"), e);
        troca_net::durable::set_modified_ns(&upload.file, upload.modified_ns).map_err(saved)?;
        upload.file.sync_all().map_err(saved)?;
        // The hash covers what arrived; the length proves all of it was stored.
        let stored = upload.file.metadata().map_err(saved)?.len();
        if stored != upload.size {
            let e = std::io::Error::other(format!("{stored} of {} bytes stored", upload.size));
            upload.discard();
            return Err(saved(e));
        }
        let slot = match self.share.slot(&name, true) {
            Ok(slot) => slot,
            Err(e) => {
                // The name cannot be stored (its folder went away, say): nothing to resume.
                upload.discard();
                return Err(e);
            }
        };
        if slot_kind(&slot, &name).is_ok_and(|k| k == Some(Kind::Folder)) {
            return Err(HubError::FolderInTheWay(format!("{name}/")));
        }
        slot.place(&upload.part, replace).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                HubError::AlreadyExists(name.to_string())
            } else {
                HubError::io(format!("cannot store {name}"), e)
            }
        })?;
        upload.completed();
        slot.version().map_err(saved)
    }

    /// Written as an upload is (a partial file, made durable, then named), by the kernel
    /// (`copy_file_range`: a reflink where the file system shares blocks), each step read
    /// back and hashed while it is in the cache.
    fn copy_file(&self, source: &StoredFile, to: CopyTo<'_>) -> Result<CopiedFile, HubError> {
        let Body::File(src) = &source.body else {
            return Err(HubError::Internal("a copy from another store".into()));
        };
        let size = source.version.size;
        let name = to.name;
        let PartialUpload::Local(mut partial) =
            self.begin_upload(name.clone(), size, 0, to.from)?
        else {
            return Err(HubError::Internal("an upload of another store".into()));
        };
        partial.modified_ns = source.version.modified_ns;
        let copied = copy_and_hash(src, &partial.file, size, to.steps).and_then(|hash| {
            if source.unchanged() {
                Ok(hash)
            } else {
                Err(std::io::Error::other(
                    "the source changed while it was copied",
                ))
            }
        });
        let hash = match copied {
            Ok(hash) => hash,
            Err(e) => {
                partial.discard();
                return Err(HubError::io(format!("cannot copy to {name}"), e));
            }
        };
        if to.expect.is_some_and(|expect| expect != hash) {
            partial.discard();
            return Err(HubError::Integrity(name.to_string()));
        }
        partial.offset = size;
        let version = self.commit(PartialUpload::Local(partial), to.replace)?;
        Ok(CopiedFile { version, hash })
    }

    fn claim_batch(&self, names: &[&RemoteName], bytes: u64) -> Vec<Result<Claim, HubError>> {
        self.partials
            .claim_batch(names, bytes)
            .into_iter()
            .map(|c| c.map(Claim::Local))
            .collect()
    }

    fn store_batch(
        &self,
        files: Vec<SmallFile>,
        check: PlaceCheck<'_>,
    ) -> Vec<Result<Version, HubError>> {
        super::small::store_batch(self, files, check)
    }

    fn remove(&self, name: &RemoteName) -> Result<(), HubError> {
        let slot = self.share.slot(name, false)?;
        slot.remove().map_err(|e| {
            if is_not_found(&e) {
                HubError::NotFound(name.to_string())
            } else {
                HubError::io(format!("cannot delete {name}"), e)
            }
        })
    }

    fn remove_tree(&self, folder: &RemoteName) -> Result<u64, HubError> {
        self.share.remove_tree(folder)
    }

    fn rename(&self, from: &RemoteName, to: &RemoteName, replace: bool) -> Result<(), HubError> {
        let source = self.share.slot(from, false)?;
        let target = self.share.slot(to, true)?;
        self.share
            .rename(&source, &target, replace)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) => HubError::AlreadyExists(to.to_string()),
                // A folder there (empty or not), or a folder moved onto a file: no
                // replacing makes either right.
                Some(libc::ENOTEMPTY) | Some(libc::EISDIR) => {
                    HubError::FolderInTheWay(format!("{to}/"))
                }
                Some(libc::ENOTDIR) => HubError::FolderOverFile(to.to_string()),
                _ if is_not_found(&e) => HubError::NotFound(from.to_string()),
                _ => HubError::io(format!("cannot move {from} to {to}"), e),
            })
    }

    fn room(&self) -> Option<u64> {
        Some(self.partials.room())
    }

    fn set_modified(&self, name: &RemoteName, modified_ns: i64) -> Result<Retimed, HubError> {
        let file = self.share.open_existing(name)?;
        let fail = |e| HubError::io(format!("cannot set the time of {name}"), e);
        let meta = file.metadata().map_err(fail)?;
        if meta.is_dir() {
            return Err(HubError::NotAFile(name.to_string()));
        }
        if !meta.is_file() {
            return Err(HubError::NotFound(name.to_string()));
        }
        // Through the descriptor opened beneath the root: the name cannot be swapped for a
        // link meanwhile. Setting a time needs the file's owner, not write access.
        troca_net::durable::set_modified_ns(&file, modified_ns).map_err(fail)?;
        Ok(Retimed {
            before: version_of(&meta),
            after: version_of(&file.metadata().map_err(fail)?),
        })
    }

    fn make_folder(&self, name: &RemoteName) -> Result<bool, HubError> {
        self.share.make_folder(name)
    }

    fn partials(&self) -> Vec<PartialInfo> {
        self.partials.list()
    }

    fn remove_partial(&self, key: &str) -> Result<bool, HubError> {
        self.partials.remove(key)
    }

    fn clean_partials(&self, ttl: Duration) -> usize {
        self.partials.clean(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::uploads::{KeepFree, PartialBudget, PartialLimit};

    fn store_in(dir: &tempfile::TempDir) -> (LocalStore, std::path::PathBuf) {
        let root = dir.path().join("share");
        let budget = PartialBudget {
            per_address: PartialLimit::NONE,
            total: PartialLimit::NONE,
        };
        let store =
            LocalStore::open(&root, &root.join(".troca"), budget, KeepFree::Bytes(0)).unwrap();
        (store, root)
    }

    /// A copy holds the source's bytes and time under its new name, with their hash; one
    /// that does not match the hash expected is not kept, nor is anything half-written.
    #[test]
    fn a_copy_is_the_source_byte_for_byte_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, root) = store_in(&dir);
        // Several steps and a part of one.
        let data: Vec<u8> = (0..COPY_STEP * 2 + 77)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(root.join("src.bin"), &data).unwrap();
        let name = |n: &str| RemoteName::parse(n).unwrap();
        let source = store.open(&name("src.bin")).unwrap();
        let to = name("in/copy.bin");
        let steps = CopySteps::default();
        let how = CopyTo {
            name: &to,
            replace: false,
            from: None,
            expect: Some(*blake3::hash(&data).as_bytes()),
            steps: &steps,
        };
        let copied = store.copy_file(&source, how).unwrap();
        assert_eq!(std::fs::read(root.join("in/copy.bin")).unwrap(), data);
        assert_eq!(&copied.hash, blake3::hash(&data).as_bytes());
        assert_eq!(copied.version, source.version);
        // Not over it without `replace`.
        let again = store.copy_file(&source, how);
        assert!(
            matches!(again, Err(HubError::AlreadyExists(_))),
            "{again:?}"
        );
        // A hash that does not match: refused, nothing named, no partial data left.
        let other = name("other.bin");
        let wrong = CopyTo {
            name: &other,
            expect: Some([9; 32]),
            ..how
        };
        let refused = store.copy_file(&source, wrong);
        assert!(
            matches!(refused, Err(HubError::Integrity(_))),
            "{refused:?}"
        );
        assert!(!root.join("other.bin").exists());
        assert!(store.partials().is_empty());
    }

    /// Copied by the kernel or, into another file system (memory), which the kernel does not
    /// copy between, by hand; hashed as it goes or, for a large copy, alongside: the same
    /// bytes and hash every way.
    #[test]
    fn every_way_of_copying_gives_the_same_bytes_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        for size in [COPY_STEP + 5, COPY_ALONGSIDE as usize + 5] {
            let data: Vec<u8> = (0..size).map(|i| (i % 13) as u8).collect();
            std::fs::write(dir.path().join("a"), &data).unwrap();
            let src = File::open(dir.path().join("a")).unwrap();
            for into in [dir.path(), other.path()] {
                let dst = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(into.join("b"))
                    .unwrap();
                let steps = CopySteps::default();
                let hash = copy_and_hash(&src, &dst, size as u64, &steps).unwrap();
                assert_eq!(steps.bytes(), size as u64);
                assert!(std::fs::read(into.join("b")).unwrap() == data, "{size}");
                assert_eq!(&hash, blake3::hash(&data).as_bytes(), "{size}");
                // A source shorter than said: an error, not a short copy.
                assert!(copy_and_hash(&src, &dst, size as u64 + 1, &steps).is_err());
                // Stopped: an error at the next step.
                steps.stop();
                assert!(copy_and_hash(&src, &dst, size as u64, &steps).is_err());
            }
        }
    }

    /// Looking at many names a folder at a time sees what looking at each alone sees: files,
    /// folders, links, nothing, and names in folders that are missing or are files.
    #[test]
    fn names_seen_a_folder_at_a_time_are_seen_as_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, root) = store_in(&dir);
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/one.txt"), "1").unwrap();
        std::fs::write(root.join("a/two.txt"), "22").unwrap();
        std::fs::write(root.join("a/b/three.txt"), "333").unwrap();
        std::fs::write(root.join("top.txt"), "4444").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("a/link")).unwrap();
        let names: Vec<RemoteName> = [
            "a/b",
            "a/b/three.txt",
            "a/gone.txt",
            "a/link",
            "a/one.txt",
            "a/two.txt",
            "missing/x.txt",
            "top.txt",
            "top.txt/inside",
            "a/one.txt",
        ]
        .iter()
        .map(|n| RemoteName::parse(n).unwrap())
        .collect();
        let each: Vec<String> = store
            .seen_each(&names)
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        let alone: Vec<String> = names
            .iter()
            .map(|n| format!("{:?}", store.seen(n)))
            .collect();
        assert_eq!(each, alone);
        let sizes: Vec<Option<u64>> = store
            .seen_each(&names)
            .into_iter()
            .map(|s| s.ok().and_then(|s| s.version).map(|v| v.size))
            .collect();
        let want = [
            None,
            Some(3),
            None,
            None,
            Some(1),
            Some(2),
            None,
            Some(4),
            None,
            Some(1),
        ];
        assert_eq!(sizes, want);
    }
}
