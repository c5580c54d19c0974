//! Copies within the share ([`Hub::copy`]): a file, or a folder with everything in it. Each
//! file is placed as an upload is (the caller's rights, its quotas, the locks, its owner
//! record, the caches), while its bytes are copied by the store itself: by the kernel on a
//! local disk, not at all on an object store (a new name for the same object). No byte
//! crosses the network.

use crate::access::Caller;
use crate::error::HubError;
use crate::quota::{Amount, QuotaHold};
use crate::records::Owned;
use crate::service::{blocking, parse_folder, Hub};
use crate::small::{MAX_BATCH_BYTES, MAX_BATCH_FILES};
use crate::store::{parse, CopySteps, CopyTo, Kind, ListQuery, Seen};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use troca_proto::msg::PutSmall;
use troca_proto::RemoteName;

/// A copy done: where it went, and the files and bytes it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyDone {
    pub name: String,
    pub files: u64,
    pub bytes: u64,
}

/// How far a running copy has come, for a face to show (and to say it is still at work). A
/// copy whose face stops waiting for it (its client gone) stops at its next step, leaving no
/// half-written file.
#[derive(Debug, Default)]
pub struct CopyProgress {
    files: AtomicU64,
    steps: CopySteps,
}

impl CopyProgress {
    /// The files and bytes copied so far (a file's bytes as they are copied).
    pub fn so_far(&self) -> (u64, u64) {
        (self.files.load(Ordering::Relaxed), self.steps.bytes())
    }

    fn stopped(&self) -> bool {
        self.steps.stopped()
    }

    fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    fn done(&self, name: RemoteName) -> CopyDone {
        let (files, bytes) = self.so_far();
        CopyDone {
            name: name.to_string(),
            files,
            bytes,
        }
    }
}

/// Stops a copy (at its next step) once what waits for it is dropped: a blocking task runs
/// on by itself.
struct StopWhenDropped(Arc<CopyProgress>);

impl Drop for StopWhenDropped {
    fn drop(&mut self) {
        self.0.steps.stop();
    }
}

impl Hub {
    /// Copies a file or a folder. `to` naming an existing folder, or ending in `/`, means
    /// inside it, as `cp` does. A file there is replaced only with `force` (and the right to
    /// replace it); a folder is copied only to a name that holds nothing, and what it holds
    /// that the caller does not see (names the hub hides) stays behind. A copy that fails
    /// half-way keeps the files it made.
    pub async fn copy(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        force: bool,
        caller: &Caller,
        progress: &Arc<CopyProgress>,
    ) -> Result<CopyDone, HubError> {
        let source = parse_folder(from)?;
        let target = parse_folder(to)?;
        let into = to.ends_with('/');
        let (hub, caller, progress) = (Arc::clone(self), caller.clone(), Arc::clone(progress));
        let _stop = StopWhenDropped(Arc::clone(&progress));
        blocking(move || hub.copy_blocking(&caller, source, target, into, force, &progress)).await
    }

    fn copy_blocking(
        &self,
        caller: &Caller,
        source: RemoteName,
        target: RemoteName,
        into: bool,
        force: bool,
        progress: &CopyProgress,
    ) -> Result<CopyDone, HubError> {
        // Before any lookup, so that a refusal says nothing of what is there.
        caller.must_reach_inside(source.as_str())?;
        caller.must_reach(target.as_str())?;
        let Some(kind) = self.store().kind(&source)? else {
            return Err(HubError::NotFound(source.to_string()));
        };
        let target = self.destination(&source, target, into, "copy")?;
        if kind == Kind::Folder {
            self.copy_folder(caller, &source, &target, progress)?;
        } else {
            self.copy_one(caller, &source, &target, force, progress)?;
        }
        Ok(progress.done(target))
    }

    /// Copies folder `source` to `target`, which must hold nothing yet: its files and its
    /// empty folders, a page of the listing at a time (in constant memory, whatever it holds).
    /// Small files go in batches made durable together, as a folder's small uploads do.
    fn copy_folder(
        &self,
        caller: &Caller,
        source: &RemoteName,
        target: &RemoteName,
        progress: &CopyProgress,
    ) -> Result<(), HubError> {
        self.make_copied_folder(caller, target, true)?;
        let prefix = format!("{source}/");
        let mut after: Option<String> = None;
        let mut batch = SmallCopies::default();
        let mut named = Vec::new();
        let batched = !self.store().copies_by_name();
        loop {
            let page = self
                .store()
                .list(ListQuery::after(&prefix, after.as_deref()))?;
            for entry in page.entries.iter().filter(|e| caller.sees(&e.name)) {
                if progress.stopped() {
                    return Err(HubError::ConnectionEnded(
                        "the client left before the copy ended".into(),
                    ));
                }
                let rest = &entry.name[prefix.len()..];
                let to = parse(&format!("{target}/{}", rest.trim_end_matches('/')))?;
                let from = parse(entry.name.trim_end_matches('/'))?;
                if entry.name.ends_with('/') {
                    self.make_copied_folder(caller, &to, false)?;
                } else if !batched {
                    named.push(NamedCopy { from, to });
                    if named.len() >= MAX_BATCH_FILES {
                        self.copy_by_name(caller, &mut named, progress)?;
                    }
                } else if batched && entry.size <= SMALL_COPY && batch.has_memory(self) {
                    if !batch.fits(entry.size) {
                        self.store_copies(caller, &mut batch, progress)?;
                    }
                    if let Some(to) = batch.take(self, &from, to)? {
                        // It grew since it was listed: copied alone.
                        self.copy_one(caller, &from, &to, false, progress)?;
                    }
                } else {
                    self.copy_one(caller, &from, &to, false, progress)?;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => {
                    self.copy_by_name(caller, &mut named, progress)?;
                    return self.store_copies(caller, &mut batch, progress);
                }
            }
        }
    }

    /// Stores the small files gathered, together, as a batch of small uploads by `caller`
    /// (checked, recorded); the first refusal ends the copy.
    fn store_copies(
        &self,
        caller: &Caller,
        batch: &mut SmallCopies,
        progress: &CopyProgress,
    ) -> Result<(), HubError> {
        let (files, sources) = batch.drain();
        if files.is_empty() {
            return Ok(());
        }
        let answers = self.put_small_batch(files, caller);
        let props = self.owners().may_have_props();
        for (answer, from) in answers.into_iter().zip(sources) {
            let done = answer?;
            progress.steps.add(done.size);
            progress.file_done();
            if props {
                self.owners().copy_props(from.as_str(), &done.name)?;
            }
        }
        Ok(())
    }

    /// Copies the files gathered on a store that copies by name, as [`Hub::copy_one`] would
    /// each, their new names given together; the first refusal ends the copy (once the
    /// copies made before it are recorded).
    fn copy_by_name(
        &self,
        caller: &Caller,
        named: &mut Vec<NamedCopy>,
        progress: &CopyProgress,
    ) -> Result<(), HubError> {
        let mut ready = Vec::with_capacity(named.len());
        for NamedCopy { from, to } in named.drain(..) {
            let file = self.open_reached(&from)?;
            let size = file.version.size;
            // What `to` holds is the change's to judge: a copy goes only to a new name.
            caller.may_create(self.tokens(), self.config().read_only, to.as_str())?;
            self.check_place(caller, &to, Seen::default(), false)?;
            let quota = self.hold_copy(caller, &to, size, false)?;
            ready.push((from, to, file, quota));
        }
        let how: Vec<_> = ready
            .iter()
            .map(|(from, to, file, _)| {
                let to = CopyTo {
                    name: to,
                    replace: false,
                    from: caller.from,
                    expect: self.known_hash(from, file),
                    steps: &progress.steps,
                };
                (file, to)
            })
            .collect();
        let copied = self.store().copy_batch(&how);
        drop(how);
        let (mut owned, mut first_refusal) = (Vec::new(), None);
        for ((from, to, _, quota), copied) in ready.into_iter().zip(copied) {
            let copied = match copied {
                Ok(copied) => copied,
                Err(e) => {
                    first_refusal.get_or_insert(e);
                    continue;
                }
            };
            self.cache().invalidate(to.as_str());
            self.hashes()
                .insert(to.as_str(), copied.version, copied.hash);
            owned.push(Owned {
                name: to.to_string(),
                owner: caller.as_owner(),
                version: copied.version,
            });
            if let Some(quota) = quota {
                quota.keep();
            }
            if self.owners().may_have_props() {
                self.owners().copy_props(from.as_str(), to.as_str())?;
            }
            progress.file_done();
        }
        // The copying caller owns the copies, as it would files it uploaded.
        self.owners().set_owners(&owned)?;
        first_refusal.map_or(Ok(()), Err)
    }

    /// Makes folder `name` of a copy (and those on the way), as `mkdir` would; the first, the
    /// copy's own (`new`), must not be there yet.
    fn make_copied_folder(
        &self,
        caller: &Caller,
        name: &RemoteName,
        new: bool,
    ) -> Result<(), HubError> {
        caller.may_create(self.tokens(), self.config().read_only, name.as_str())?;
        self.check_lock(caller, name.as_str(), false)?;
        // A folder takes an inode, as a file does.
        let quota = self.count_upload(caller, Amount { bytes: 0, files: 1 })?;
        let made = self.store().make_folder(name)?;
        if new && !made {
            return Err(HubError::FolderInTheWay(format!("{name}/")));
        }
        if let (true, Some(quota)) = (made, quota) {
            quota.keep();
        }
        Ok(())
    }

    /// Holds a copy's file against `caller`'s quotas (its address's and its token's), as an
    /// upload of `size` bytes to `to` would.
    fn hold_copy(
        &self,
        caller: &Caller,
        to: &RemoteName,
        size: u64,
        force: bool,
    ) -> Result<Option<QuotaHold>, HubError> {
        let files = 1;
        let address = self.count_upload(caller, Amount { bytes: size, files })?;
        let token = self
            .count_token_upload(caller, &[(Some(to), size, force)])
            .into_hold()?;
        Ok(QuotaHold::join(address, token))
    }

    /// Copies file `from` to `to`, placed as an upload of it by `caller` would be.
    fn copy_one(
        &self,
        caller: &Caller,
        from: &RemoteName,
        to: &RemoteName,
        force: bool,
        progress: &CopyProgress,
    ) -> Result<(), HubError> {
        let file = self.open_reached(from)?;
        let size = file.version.size;
        self.may_upload(caller, to, force)?;
        self.check_lock(caller, to.as_str(), false)?;
        let quota = self.hold_copy(caller, to, size, force)?;
        let expect = self.known_hash(from, &file);
        let how = CopyTo {
            name: to,
            replace: force,
            from: caller.from,
            expect,
            steps: &progress.steps,
        };
        let copied = self.store().copy_file(&file, how)?;
        self.cache().invalidate(to.as_str());
        // The copying caller owns the copy, as it would a file it uploaded.
        self.owners()
            .set_owner(to.as_str(), caller.as_owner(), copied.version)?;
        self.hashes()
            .insert(to.as_str(), copied.version, copied.hash);
        if let Some(quota) = quota {
            quota.keep();
        }
        if self.owners().may_have_props() {
            self.owners().copy_props(from.as_str(), to.as_str())?;
        }
        progress.file_done();
        Ok(())
    }
}

/// A file of a folder copy on a store that copies by name, waiting to be named with others.
struct NamedCopy {
    from: RemoteName,
    to: RemoteName,
}

/// The largest file a folder copy gathers into a batch rather than copying alone.
const SMALL_COPY: u64 = 256 * 1024;

/// Small files of a folder copy, read and hashed, waiting to be stored together. The copy
/// holds a batch's share of the hub's batch memory (`--batch-memory`) for them; when none is
/// free, nothing is gathered and each file is copied alone.
#[derive(Debug, Default)]
struct SmallCopies {
    files: Vec<PutSmall>,
    sources: Vec<RemoteName>,
    bytes: usize,
    memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl SmallCopies {
    /// Whether the copy holds batch memory, taken when first asked (kept to its end).
    fn has_memory(&mut self, hub: &Hub) -> bool {
        if self.memory.is_none() {
            let kib = (MAX_BATCH_BYTES >> 10) as u32;
            self.memory = Arc::clone(hub.batch_memory())
                .try_acquire_many_owned(kib)
                .ok();
        }
        self.memory.is_some()
    }

    /// Whether a file of `size` fits in the batch as it is.
    fn fits(&self, size: u64) -> bool {
        self.files.len() < MAX_BATCH_FILES && self.bytes as u64 + size <= MAX_BATCH_BYTES as u64
    }

    /// Reads `from` whole and gathers it to go to `to`, with its source's time and the hash
    /// the hub knows for it (checked against what was read when the batch is stored) or that
    /// of what was read. A file larger than a small copy now is not read: `to` comes back.
    fn take(
        &mut self,
        hub: &Hub,
        from: &RemoteName,
        to: RemoteName,
    ) -> Result<Option<RemoteName>, HubError> {
        let file = hub.open_reached(from)?;
        if file.version.size > SMALL_COPY || !self.fits(file.version.size) {
            return Ok(Some(to));
        }
        let mut data = vec![0; file.version.size as usize];
        file.read_exact_at(&mut data, 0)
            .map_err(|e| HubError::io(format!("cannot read {from}"), e))?;
        let known = hub.known_hash(from, &file);
        let blake3 = known.unwrap_or_else(|| *blake3::hash(&data).as_bytes());
        self.bytes += data.len();
        self.files.push(PutSmall {
            name: to.to_string(),
            force: false,
            blake3,
            modified_ns: file.version.modified_ns,
            data,
        });
        self.sources.push(from.clone());
        Ok(None)
    }

    /// The files gathered and their sources, in order.
    fn drain(&mut self) -> (Vec<PutSmall>, Vec<RemoteName>) {
        self.bytes = 0;
        (
            std::mem::take(&mut self.files),
            std::mem::take(&mut self.sources),
        )
    }
}
