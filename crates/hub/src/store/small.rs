//! A batch of small files on the local disk: each written to its own file in
//! `STATE/uploads/small/`, then the whole batch made durable with one `syncfs`, renamed into
//! place, and each folder that received a file fsync'd once. No file is visible under its name
//! before it is durable, and a batch of 500 files costs two or three flushes instead of a
//! thousand. A batch of a few files fsyncs each instead: `syncfs` would also wait for whatever
//! else is being written to the disk (a large upload, say), which a few files should not.

use super::local::{slot_kind, LocalStore};
use super::share::Slot;
use super::{Claim, PlaceCheck, SmallFile, Version};
use crate::error::HubError;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use troca_proto::RemoteName;

/// Batches of at most this many files fsync each file rather than the whole filesystem.
const SYNC_EACH_MAX: usize = 4;

/// A file of the batch that passed its checks and is written, not yet under its name.
struct Staged {
    index: usize,
    name: RemoteName,
    /// The name's folder, when it existed at the check (else made when placing).
    slot: Option<Slot>,
    temp: PathBuf,
    replace: bool,
    _claim: Claim,
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
    let mut staged = Vec::new();
    // One lookup per folder, not per file: the files of a batch mostly share a few.
    let mut folders: HashMap<String, Option<Slot>> = HashMap::new();
    for (index, file) in files.into_iter().enumerate() {
        match stage(store, index, file, &dir, &mut folders, check, sync_each) {
            Ok(s) => staged.push(s),
            Err(e) => answers[index] = Some(Err(e)),
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

/// Checks where one file goes and writes it to the batch folder (durably if `sync`).
fn stage(
    store: &LocalStore,
    index: usize,
    file: SmallFile,
    dir: &Path,
    folders: &mut HashMap<String, Option<Slot>>,
    check: PlaceCheck<'_>,
    sync: bool,
) -> Result<Staged, HubError> {
    let name = file.name;
    let slot = slot_for(store, &name, folders)?;
    let kind = match &slot {
        Some(slot) => slot_kind(slot, &name)?,
        None => None,
    };
    check(&name, kind, file.replace)?;
    let temp = dir.join(format!(
        "{index}-{}",
        blake3::hash(name.as_str().as_bytes()).to_hex()
    ));
    if let Err(e) = write_new(&temp, &file.data, sync) {
        // Half-written (a full disk): gone, so the name can be tried again.
        let _ = std::fs::remove_file(&temp);
        return Err(HubError::io(format!("cannot store {name}"), e));
    }
    Ok(Staged {
        index,
        slot,
        name,
        temp,
        replace: file.replace,
        _claim: file.claim,
    })
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
        false => sync_filesystem(&store.partials.small_dir()),
    };
    if let Err(e) = durable {
        for s in &staged {
            let _ = std::fs::remove_file(&s.temp);
        }
        return staged
            .into_iter()
            .map(|s| {
                let e = std::io::Error::new(e.kind(), e.to_string());
                let refused = HubError::io("cannot make the files durable", e);
                (s.index, Err(refused))
            })
            .collect();
    }
    let mut folders: HashMap<PathBuf, Slot> = HashMap::new();
    let mut out = Vec::with_capacity(staged.len());
    for s in staged {
        let result = place(store, &s, &mut folders);
        if result.is_err() {
            let _ = std::fs::remove_file(&s.temp);
        }
        out.push((s.index, result));
    }
    for (dir, slot) in &folders {
        if let Err(e) = slot.sync_dir() {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot fsync a folder");
        }
    }
    out
}

/// Renames one staged file under its name; returns the version stored.
fn place(
    store: &LocalStore,
    s: &Staged,
    folders: &mut HashMap<PathBuf, Slot>,
) -> Result<Version, HubError> {
    let slot = match &s.slot {
        Some(slot) => slot.sibling(s.name.file_name()),
        None => store.share.slot(&s.name, true)?,
    };
    slot.place_unsynced(&s.temp, s.replace)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EISDIR) => HubError::NotAFile(s.name.to_string()),
            _ if e.kind() == std::io::ErrorKind::AlreadyExists => {
                HubError::AlreadyExists(s.name.to_string())
            }
            _ => HubError::io(format!("cannot store {}", s.name), e),
        })?;
    let version = slot
        .version()
        .map_err(|e| HubError::io(format!("cannot store {}", s.name), e))?;
    folders.entry(slot.dir_path().to_path_buf()).or_insert(slot);
    Ok(version)
}

/// Creates `path` (which must not exist) holding `data`, made durable if `sync`.
fn write_new(path: &Path, data: &[u8], sync: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)?;
    if sync {
        f.sync_data()?;
    }
    Ok(())
}

/// Flushes everything written on the filesystem that holds `path`: one flush for a whole batch
/// rather than one per file.
fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}
