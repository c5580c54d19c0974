//! Many small files at once: a batch of `PutSmall` uploads stored together. Each file is checked
//! (name, rights, its hash), written to its own file in `STATE/uploads/small/`, then the whole
//! batch is made durable with one `syncfs`, renamed into place, and each folder that received a
//! file is fsync'd once. No file is visible under its name before it is durable, and a batch of
//! 500 files costs two or three flushes instead of a thousand.

use crate::access::Caller;
use crate::error::HubError;
use crate::service::Hub;
use crate::share::Slot;
use crate::tokens::Owner;
use crate::uploads::Claim;
use rustix::fs::FileType;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use troca_net::transfer::mtime_ns;
use troca_proto::msg::{PutDone, PutSmall};
use troca_proto::{Hash, RemoteName};

/// The most files one batch holds.
pub const MAX_BATCH_FILES: usize = 1024;
/// The most bytes one batch holds: a connection takes this much of the hub's batch memory
/// (`--batch-memory`) while it gathers and stores a batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A file of the batch that passed its checks and is written, not yet under its name.
struct Staged {
    index: usize,
    name: RemoteName,
    /// The name's folder, when it existed at the check (else made when placing).
    slot: Option<Slot>,
    temp: PathBuf,
    force: bool,
    hash: Hash,
    size: u64,
    _claim: Claim,
}

impl Hub {
    /// Stores small files in batches; one answer per file, in order, as if sent one by one: a
    /// name that comes again starts a new batch, so it sees the file stored before it. Blocking.
    pub fn put_small_batch(
        &self,
        files: Vec<PutSmall>,
        caller: &Caller,
    ) -> Vec<Result<PutDone, HubError>> {
        let mut answers = Vec::with_capacity(files.len());
        let mut run = Vec::new();
        let mut names = std::collections::HashSet::new();
        for f in files {
            if !names.insert(f.name.clone()) {
                answers.extend(self.put_small_run(std::mem::take(&mut run), caller));
                names.clear();
                names.insert(f.name.clone());
            }
            run.push(f);
        }
        answers.extend(self.put_small_run(run, caller));
        answers
    }

    /// One batch of distinct names.
    fn put_small_run(
        &self,
        batch: Vec<PutSmall>,
        caller: &Caller,
    ) -> Vec<Result<PutDone, HubError>> {
        let mut answers: Vec<Option<Result<PutDone, HubError>>> = Vec::new();
        answers.resize_with(batch.len(), || None);
        if let Err(e) = caller.may_create(&self.tokens, self.config.read_only) {
            return batch.iter().map(|_| Err(again(&e))).collect();
        }
        let staged = self.stage(batch, caller, &mut answers);
        for (index, result) in self.commit(staged, caller) {
            answers[index] = Some(result);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(HubError::BadRequest("not stored".into()))))
            .collect()
    }

    /// Checks each file and writes the ones that pass to the batch folder.
    fn stage(
        &self,
        batch: Vec<PutSmall>,
        caller: &Caller,
        answers: &mut [Option<Result<PutDone, HubError>>],
    ) -> Vec<Staged> {
        let names: Vec<Result<RemoteName, HubError>> = batch
            .iter()
            .map(|p| {
                RemoteName::parse(&p.name).map_err(|reason| HubError::InvalidName {
                    name: p.name.clone(),
                    reason,
                })
            })
            .collect();
        let valid: Vec<&RemoteName> = names.iter().filter_map(|n| n.as_ref().ok()).collect();
        let bytes: u64 = batch.iter().map(|p| p.data.len() as u64).sum();
        let mut claims = self.partials.claim_batch(&valid, bytes).into_iter();
        let dir = self.partials.small_dir();
        let mut staged = Vec::new();
        // One lookup per folder, not per file: the files of a batch mostly share a few.
        let mut folders: HashMap<String, Option<Slot>> = HashMap::new();
        for (index, (put, name)) in batch.into_iter().zip(names).enumerate() {
            let checked = name
                .and_then(|name| Ok((claims.next().expect("one claim per name")?, name)))
                .and_then(|(claim, name)| {
                    let slot = self.slot_for(&name, &mut folders)?;
                    self.check_small(&put, &name, slot.as_ref(), caller)?;
                    let temp = dir.join(format!(
                        "{index}-{}",
                        blake3::hash(name.as_str().as_bytes()).to_hex()
                    ));
                    write_new(&temp, &put.data)
                        .map_err(|e| HubError::io(format!("cannot store {name}"), e))?;
                    Ok(Staged {
                        index,
                        slot,
                        name,
                        temp,
                        force: put.force,
                        hash: put.blake3,
                        size: put.data.len() as u64,
                        _claim: claim,
                    })
                });
            match checked {
                Ok(s) => staged.push(s),
                Err(e) => answers[index] = Some(Err(e)),
            }
        }
        staged
    }

    /// The slot of `name` from the batch's folders (looked up once per folder); `None` if its
    /// folder does not exist yet.
    fn slot_for(
        &self,
        name: &RemoteName,
        folders: &mut HashMap<String, Option<Slot>>,
    ) -> Result<Option<Slot>, HubError> {
        let parent = name.as_str().rsplit_once('/').map_or("", |(p, _)| p);
        if let Some(known) = folders.get(parent) {
            return Ok(known.as_ref().map(|s| s.sibling(name.file_name())));
        }
        let slot = match self.share.slot(name, false) {
            Ok(slot) => Some(slot),
            Err(HubError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let answer = slot.as_ref().map(|s| s.sibling(name.file_name()));
        folders.insert(parent.to_owned(), slot);
        Ok(answer)
    }

    /// The checks a `Put` gets: the hash, what is at the name, the right to replace it.
    fn check_small(
        &self,
        put: &PutSmall,
        name: &RemoteName,
        slot: Option<&Slot>,
        caller: &Caller,
    ) -> Result<(), HubError> {
        if *blake3::hash(&put.data).as_bytes() != put.blake3 {
            return Err(HubError::Integrity(name.to_string()));
        }
        let exists = match slot.map(Slot::kind) {
            Some(Ok(Some(FileType::Directory))) => {
                return Err(HubError::NotAFile(name.to_string()))
            }
            Some(Ok(kind)) => kind.is_some(),
            Some(Err(e)) => return Err(HubError::io(format!("cannot reach {name}"), e)),
            None => false,
        };
        if exists {
            if !put.force {
                return Err(HubError::AlreadyExists(name.to_string()));
            }
            self.check_change(caller, name, "replacing")?;
        }
        Ok(())
    }

    /// Makes the staged files durable together, renames each into place, fsyncs each folder
    /// once, and records owners and hashes in one transaction each.
    fn commit(
        &self,
        staged: Vec<Staged>,
        caller: &Caller,
    ) -> Vec<(usize, Result<PutDone, HubError>)> {
        if staged.is_empty() {
            return Vec::new();
        }
        if let Err(e) = sync_filesystem(&self.partials.small_dir()) {
            for s in &staged {
                let _ = std::fs::remove_file(&s.temp);
            }
            return staged
                .into_iter()
                .map(|s| {
                    let e = std::io::Error::new(e.kind(), e.to_string());
                    (
                        s.index,
                        Err(HubError::io("cannot make the files durable", e)),
                    )
                })
                .collect();
        }
        let uploader = Owner {
            token_id: caller.grant.and_then(|g| g.token_id),
            key_hash: caller.owner_key,
        };
        let mut folders: HashMap<PathBuf, Slot> = HashMap::new();
        let mut out = Vec::with_capacity(staged.len());
        let mut placed = Vec::with_capacity(staged.len());
        for s in staged {
            let result = self.place_small(&s, &mut folders);
            if result.is_err() {
                let _ = std::fs::remove_file(&s.temp);
            }
            out.push((
                s.index,
                result.map(|target| {
                    placed.push((s.name.clone(), target, s.hash));
                    PutDone {
                        name: s.name.to_string(),
                        size: s.size,
                        blake3: s.hash,
                    }
                }),
            ));
        }
        for (dir, slot) in &folders {
            if let Err(e) = slot.sync_dir() {
                tracing::warn!(folder = %dir.display(), error = %e, "cannot fsync a folder");
            }
        }
        let owners: Vec<(String, Owner)> = placed
            .iter()
            .map(|(n, _, _)| (n.to_string(), uploader))
            .collect();
        if let Err(e) = self.tokens.set_owners(&owners) {
            tracing::warn!(error = %e, "cannot record the owners of a batch");
        }
        let hashes: Vec<(PathBuf, u64, i64, Hash)> = placed
            .into_iter()
            .filter_map(|(_, target, hash)| {
                self.cache.invalidate(&target);
                let meta = target.metadata().ok()?;
                Some((target, meta.len(), mtime_ns(&meta), hash))
            })
            .collect();
        self.share.hashes.insert_many(hashes);
        out
    }

    /// Renames one staged file under its name; returns its real path.
    fn place_small(
        &self,
        s: &Staged,
        folders: &mut HashMap<PathBuf, Slot>,
    ) -> Result<PathBuf, HubError> {
        let slot = match &s.slot {
            Some(slot) => slot.sibling(s.name.file_name()),
            None => self.share.slot(&s.name, true)?,
        };
        let target = slot.path();
        slot.place_unsynced(&s.temp, s.force)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EISDIR) => HubError::NotAFile(s.name.to_string()),
                _ if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    HubError::AlreadyExists(s.name.to_string())
                }
                _ => HubError::io(format!("cannot store {}", s.name), e),
            })?;
        folders.entry(slot.dir_path().to_path_buf()).or_insert(slot);
        Ok(target)
    }
}

/// Creates `path` (which must not exist) holding `data`, without syncing it.
fn write_new(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(data)
}

/// Flushes everything written on the filesystem that holds `path`: one flush for a whole batch
/// rather than one per file.
fn sync_filesystem(path: &std::path::Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(path)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}

/// The same refusal again, for every file of a batch refused as a whole.
fn again(e: &HubError) -> HubError {
    match e {
        HubError::Forbidden(m) => HubError::Forbidden(m.clone()),
        HubError::Unauthorized(m) => HubError::Unauthorized(m.clone()),
        other => HubError::BadRequest(other.to_string()),
    }
}
