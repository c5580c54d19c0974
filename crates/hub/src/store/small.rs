//! A batch of small files on the local disk: each written to a file without a name in its
//! folder (`O_TMPFILE`; where that is not possible, or a file replaces another, to a file in
//! `STATE/uploads/small/`), then the whole batch made durable with one `syncfs`, linked or
//! renamed into place, and each folder that received a file fsync'd once. No file is visible
//! under its name before it is durable, and a batch of 500 files costs two or three flushes
//! instead of a thousand. A batch of a few files fsyncs each instead: `syncfs` would also wait
//! for whatever else is being written to the disk (a large upload, say), which a few files
//! should not.

use super::local::{slot_seen, LocalStore};
use super::share::Slot;
use super::{Claim, PlaceCheck, SmallFile, Version};
use crate::error::HubError;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use troca_net::durable::in_parallel;
use troca_proto::RemoteName;

/// Batches of at most this many files fsync each file rather than the whole filesystem.
const SYNC_EACH_MAX: usize = 4;

/// A file of the batch that passed its checks and is written, not yet under its name.
struct Staged {
    index: usize,
    name: RemoteName,
    slot: Slot,
    written: Written,
    replace: bool,
    _claim: Claim,
}

/// Where a staged file's bytes are until it is placed.
enum Written {
    /// A file without a name, in its folder (see [`Slot::create_unnamed`]).
    Unnamed(Unnamed),
    /// A file in the batch folder, renamed into place.
    Named(PathBuf),
}

impl Written {
    /// Drops what was written.
    fn discard(self) {
        if let Written::Named(path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Files held open without a name, hub-wide. Each holds a descriptor until its batch is
/// placed, so together they may take only a share of the process's descriptors (an eighth),
/// the rest being for connections; a file beyond that is written in the batch folder.
static UNNAMED_OPEN: AtomicUsize = AtomicUsize::new(0);

fn unnamed_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let open = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let open = open.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        (open / 8).clamp(16, 16 * 1024)
    })
}

/// A file without a name, counted in [`UNNAMED_OPEN`] while it is open.
struct Unnamed(std::fs::File);

impl Unnamed {
    /// A new one in `slot`'s folder; `None` when the budget is spent or the filesystem cannot.
    fn create(slot: &Slot) -> Option<Unnamed> {
        if UNNAMED_OPEN.fetch_add(1, Ordering::Relaxed) >= unnamed_limit() {
            UNNAMED_OPEN.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match slot.create_unnamed() {
            Ok(file) => Some(Unnamed(file)),
            Err(_) => {
                UNNAMED_OPEN.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Drop for Unnamed {
    fn drop(&mut self) {
        UNNAMED_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A file of the batch whose place is checked and whose folder exists, not yet written.
struct Planned {
    index: usize,
    slot: Slot,
    file: SmallFile,
}

/// See [`super::Store::store_batch`].
pub(super) fn store_batch(
    store: &LocalStore,
    files: Vec<SmallFile>,
    check: PlaceCheck<'_>,
) -> Vec<Result<Version, HubError>> {
    let mut answers: Vec<Option<Result<Version, HubError>>> = Vec::new();
    answers.resize_with(files.len(), || None);
    let dir = store.partials.small_dir();
    let sync_each = files.len() <= SYNC_EACH_MAX;
    let mut planned = Vec::new();
    // One lookup per folder, not per file: the files of a batch mostly share a few.
    let mut folders: HashMap<String, Option<Slot>> = HashMap::new();
    for (index, file) in files.into_iter().enumerate() {
        match plan(store, index, file, &mut folders, check) {
            Ok(p) => planned.push(p),
            Err(e) => answers[index] = Some(Err(e)),
        }
    }
    let mut staged = Vec::with_capacity(planned.len());
    for written in in_parallel(planned, |p| write(p, &dir, sync_each)) {
        match written {
            Ok(s) => staged.push(s),
            Err((index, e)) => answers[index] = Some(Err(e)),
        }
    }
    for (index, result) in commit(store, staged, sync_each) {
        answers[index] = Some(result);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(HubError::BadRequest("not stored".into()))))
        .collect()
}

/// Checks where one file goes, making its folders if it may go there.
fn plan(
    store: &LocalStore,
    index: usize,
    file: SmallFile,
    folders: &mut HashMap<String, Option<Slot>>,
    check: PlaceCheck<'_>,
) -> Result<Planned, HubError> {
    let slot = slot_for(store, &file.name, folders)?;
    let seen = match &slot {
        Some(slot) => slot_seen(slot, &file.name)?,
        None => super::Seen::default(),
    };
    check(&file.name, seen, file.replace)?;
    let slot = match slot {
        Some(slot) => slot,
        // Allowed: its folders are made now, so that it can be written there.
        None => make_folders(store, &file.name, folders)?,
    };
    Ok(Planned { index, slot, file })
}

/// Writes one planned file (durably if `sync`): unnamed in its folder, or in the batch folder
/// `dir`.
fn write(p: Planned, dir: &Path, sync: bool) -> Result<Staged, (usize, HubError)> {
    let Planned { index, slot, file } = p;
    let name = file.name;
    let temp = || {
        dir.join(format!(
            "{index}-{}",
            blake3::hash(name.as_str().as_bytes()).to_hex()
        ))
    };
    let unnamed = (!file.replace).then(|| Unnamed::create(&slot)).flatten();
    let written = match write_staged(unnamed, temp, &file.data, file.modified_ns, sync) {
        Ok(w) => w,
        Err(e) => return Err((index, HubError::io(format!("cannot store {name}"), e))),
    };
    Ok(Staged {
        index,
        slot,
        name,
        written,
        replace: file.replace,
        _claim: file.claim,
    })
}

/// Writes one file of the batch: into `unnamed` when there is one (one folder entry made
/// when it is placed, none removed), else to a new file at `temp()`.
fn write_staged(
    unnamed: Option<Unnamed>,
    temp: impl FnOnce() -> PathBuf,
    data: &[u8],
    modified_ns: i64,
    sync: bool,
) -> std::io::Result<Written> {
    if let Some(mut f) = unnamed {
        f.0.write_all(data)?;
        troca_net::durable::set_modified_ns(&f.0, modified_ns)?;
        if sync {
            f.0.sync_data()?;
        }
        return Ok(Written::Unnamed(f));
    }
    let temp = temp();
    if let Err(e) = write_new(&temp, data, modified_ns, sync) {
        // Half-written (a full disk): gone, so the name can be tried again.
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Written::Named(temp))
}

/// The slot of `name` from the batch's folders (looked up once per folder); `None` if its
/// folder does not exist yet.
fn slot_for(
    store: &LocalStore,
    name: &RemoteName,
    folders: &mut HashMap<String, Option<Slot>>,
) -> Result<Option<Slot>, HubError> {
    let parent = name.as_str().rsplit_once('/').map_or("", |(p, _)| p);
    if let Some(known) = folders.get(parent) {
        return Ok(known.as_ref().map(|s| s.sibling(name.file_name())));
    }
    let slot = match store.share.slot(name, false) {
        Ok(slot) => Some(slot),
        Err(HubError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let answer = slot.as_ref().map(|s| s.sibling(name.file_name()));
    folders.insert(parent.to_owned(), slot);
    Ok(answer)
}

/// Makes the folders `name` needs and remembers its folder for the rest of the batch.
fn make_folders(
    store: &LocalStore,
    name: &RemoteName,
    folders: &mut HashMap<String, Option<Slot>>,
) -> Result<Slot, HubError> {
    let slot = store.share.slot(name, true)?;
    let parent = name.as_str().rsplit_once('/').map_or("", |(p, _)| p);
    folders.insert(parent.to_owned(), Some(slot.sibling(name.file_name())));
    Ok(slot)
}

/// Makes the staged files durable together (unless each `synced` already), renames each into
/// place and fsyncs each folder once.
fn commit(
    store: &LocalStore,
    staged: Vec<Staged>,
    synced: bool,
) -> Vec<(usize, Result<Version, HubError>)> {
    if staged.is_empty() {
        return Vec::new();
    }
    let durable = match synced {
        true => Ok(()),
        false => sync_filesystems(&staged, &store.partials.small_dir()),
    };
    if let Err(e) = durable {
        return staged
            .into_iter()
            .map(|s| {
                s.written.discard();
                let e = std::io::Error::new(e.kind(), e.to_string());
                let refused = HubError::io("cannot make the files durable", e);
                (s.index, Err(refused))
            })
            .collect();
    }
    let placed = in_parallel(staged, |s| {
        let result = place(&s);
        match result {
            Ok(_) => (s.index, result, Some(s.slot)),
            Err(_) => {
                s.written.discard();
                (s.index, result, None)
            }
        }
    });
    let mut folders: HashMap<PathBuf, Slot> = HashMap::new();
    let mut out = Vec::with_capacity(placed.len());
    for (index, result, slot) in placed {
        if let Some(slot) = slot {
            folders.entry(slot.dir_path().to_path_buf()).or_insert(slot);
        }
        out.push((index, result));
    }
    for (dir, slot) in &folders {
        if let Err(e) = slot.sync_dir() {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot fsync a folder");
        }
    }
    out
}

/// Puts one staged file under its name; returns the version stored.
fn place(s: &Staged) -> Result<Version, HubError> {
    let slot = &s.slot;
    let placed = match &s.written {
        Written::Unnamed(file) => slot.link_unnamed(&file.0),
        Written::Named(temp) => slot.place_unsynced(temp, s.replace),
    };
    placed.map_err(|e| match e.raw_os_error() {
        Some(libc::EISDIR) => HubError::FolderInTheWay(format!("{}/", s.name)),
        _ if e.kind() == std::io::ErrorKind::AlreadyExists => {
            HubError::AlreadyExists(s.name.to_string())
        }
        _ => HubError::io(format!("cannot store {}", s.name), e),
    })?;
    let version = match &s.written {
        // The same file, without looking its name up again (linking leaves its times as they were).
        Written::Unnamed(file) => rustix::fs::fstat(&file.0)
            .map(|st| super::share::version_of_stat(&st))
            .map_err(std::io::Error::from),
        Written::Named(_) => slot.version(),
    };
    version.map_err(|e| HubError::io(format!("cannot store {}", s.name), e))
}

/// Creates `path` (which must not exist) holding `data`, made durable if `sync`.
fn write_new(path: &Path, data: &[u8], modified_ns: i64, sync: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)?;
    troca_net::durable::set_modified_ns(&f, modified_ns)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// Flushes everything written on the filesystems that hold the staged files: one flush for a
/// whole batch rather than one per file. Unnamed files are in the share, the others in the
/// state folder (`small_dir`), which may be another filesystem.
fn sync_filesystems(staged: &[Staged], small_dir: &Path) -> std::io::Result<()> {
    let mut synced = Vec::new();
    let unnamed = staged.iter().find_map(|s| match &s.written {
        Written::Unnamed(f) => Some(&f.0),
        Written::Named(_) => None,
    });
    let named = staged
        .iter()
        .any(|s| matches!(s.written, Written::Named(_)));
    let mut sync = |fd: &std::fs::File| -> std::io::Result<()> {
        let dev = fd.metadata()?.dev();
        if !synced.contains(&dev) {
            rustix::fs::syncfs(fd)?;
            synced.push(dev);
        }
        Ok(())
    };
    if let Some(file) = unnamed {
        sync(file)?;
    }
    if named {
        sync(&std::fs::File::open(small_dir)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::uploads::{KeepFree, PartialBudget, PartialLimit};
    use crate::store::Store;

    fn files(store: &LocalStore, names: &[&str], replace: bool) -> Vec<SmallFile> {
        let names: Vec<RemoteName> = names
            .iter()
            .map(|n| RemoteName::parse(n).unwrap())
            .collect();
        let refs: Vec<&RemoteName> = names.iter().collect();
        let claims = store.claim_batch(&refs, 0);
        names
            .into_iter()
            .zip(claims)
            .map(|(name, claim)| SmallFile {
                data: format!("{name} {replace}").into_bytes(),
                hash: [0; 32],
                modified_ns: 1_500_000_000_000_000_000,
                replace,
                claim: claim.unwrap(),
                name,
            })
            .collect()
    }

    /// A batch stores each file under its name whichever way it is staged: unnamed in its
    /// folder, or (replacing, or with the hub's budget of unnamed files spent) in the batch
    /// folder; nothing is left behind.
    #[test]
    fn a_batch_is_stored_whole_however_its_files_are_staged() {
        let dir = tempfile::tempdir().unwrap();
        let budget = PartialBudget {
            per_address: PartialLimit::NONE,
            total: PartialLimit::NONE,
        };
        let root = dir.path().join("share");
        let store =
            LocalStore::open(&root, &root.join(".troca"), budget, KeepFree::Bytes(0)).unwrap();
        let allow: PlaceCheck<'_> = &|_, _, _| Ok(());
        let names = [
            "new/a.txt",
            "new/deeper/b.txt",
            "c.txt",
            "new/d.txt",
            "e.txt",
        ];
        let first = store_batch(&store, files(&store, &names, false), allow);
        assert!(first.iter().all(Result::is_ok), "{first:?}");
        let again = store_batch(&store, files(&store, &names[..2], true), allow);
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        // Every unnamed file taken: the rest go through the batch folder.
        let spent = UNNAMED_OPEN.fetch_add(usize::MAX / 2, Ordering::Relaxed);
        let more = ["new/f.txt", "g.txt"];
        let last = store_batch(&store, files(&store, &more, false), allow);
        UNNAMED_OPEN.fetch_sub(usize::MAX / 2, Ordering::Relaxed);
        assert!(
            last.iter().all(Result::is_ok),
            "{last:?} ({spent} open before)"
        );
        for (name, replaced) in names
            .iter()
            .map(|n| (n, names[..2].contains(n)))
            .chain(more.iter().map(|n| (n, false)))
        {
            let held = std::fs::read_to_string(root.join(name)).unwrap();
            assert_eq!(held, format!("{name} {replaced}"));
            // Each keeps its source's time, however it was staged.
            let at = std::fs::metadata(root.join(name)).unwrap().modified();
            let source = std::time::Duration::from_nanos(1_500_000_000_000_000_000);
            assert_eq!(at.unwrap(), std::time::UNIX_EPOCH + source, "{name}");
        }
        assert!(first
            .iter()
            .all(|v| v.as_ref().unwrap().modified_ns == 1_500_000_000_000_000_000));
        let left = std::fs::read_dir(store.partials.small_dir())
            .unwrap()
            .count();
        assert_eq!(left, 0, "the batch folder is empty");
        let taken = store_batch(&store, files(&store, &names[2..3], false), allow);
        assert!(
            matches!(taken[0], Err(HubError::AlreadyExists(_))),
            "{taken:?}"
        );
    }
}
