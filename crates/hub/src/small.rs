//! Many small files at once: a batch of `PutSmall` uploads stored together. Each file is checked
//! here (name, rights, its hash) and the store keeps the batch as one (on the local disk: one
//! `syncfs` for the lot, see `store/small.rs`); owners and hashes are recorded in one
//! transaction each.
//!
//! Small uploads held in memory (a web or WebDAV `PUT`, one file per request) are stored
//! together too, by group commit: the first to finish stores itself at once, and those that
//! finish while a store runs wait for it to end, then go together in the next. One client
//! waits no longer than before; many at once share the flushes.

use crate::access::Caller;
use crate::error::HubError;
use crate::hashes::Remembered;
use crate::held::{Held, Storing};
use crate::quota::{Admitted, Amount, QuotaHold};
use crate::records::Owned;
use crate::service::Hub;
use crate::store::{parse, MemoryUpload, SmallFile, Version};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use troca_proto::msg::{PutDone, PutSmall};
use troca_proto::{Hash, RemoteName};

/// The most files one batch holds.
pub const MAX_BATCH_FILES: usize = 1024;
/// The most bytes one batch holds: a connection takes this much of the hub's batch memory
/// (`--batch-memory`) while it gathers and stores a batch.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// A file of a batch now under its name.
#[derive(Debug)]
struct Stored {
    pub remembered: Remembered,
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
        // The token and its role, once for the batch (at the folder it reaches); each name's
        // place is checked as it is stored (`check_place`).
        let reach = caller.folder().unwrap_or("").to_owned();
        if let Err(e) = caller.may_create(self.tokens(), self.config().read_only, &reach) {
            return batch.iter().map(|_| Err(again(&e))).collect();
        }
        let (batch, quota, refused) = self.admit_batch(batch, caller);
        let mut answers: Vec<Option<Result<PutDone, HubError>>> = Vec::new();
        answers.resize_with(batch.len(), || None);
        let (files, indexes) = self.checked(batch, &mut answers);
        let done: Vec<PutDone> = files
            .iter()
            .map(|f| PutDone {
                name: f.name.to_string(),
                size: f.data.len() as u64,
                blake3: f.hash,
            })
            .collect();
        let check =
            |name: &RemoteName, seen, replace| self.check_place(caller, name, seen, replace);
        let results = self.store().store_batch(files, &check);
        let mut stored = Vec::with_capacity(results.len());
        for ((index, done), result) in indexes.into_iter().zip(done).zip(results) {
            answers[index] = Some(result.map(|version| {
                stored.push(Stored {
                    remembered: Remembered {
                        name: done.name.clone(),
                        version,
                        hash: done.blake3,
                    },
                });
                done
            }));
        }
        // Recorded first: a token's quota counts its files from their records once its hold
        // is let go.
        self.stored_batch(&stored, caller);
        if let Some(quota) = quota {
            quota.keep_part(Amount {
                bytes: stored.iter().map(|s| s.remembered.version.size).sum(),
                files: stored.len() as u64,
            });
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(HubError::BadRequest("not stored".into()))))
            .chain(refused)
            .collect()
    }

    /// The files of a batch the caller's upload quota lets through (the first ones), the
    /// quota they hold, and the refusals of the rest.
    fn admit_batch(
        &self,
        mut batch: Vec<PutSmall>,
        caller: &Caller,
    ) -> (
        Vec<PutSmall>,
        Option<QuotaHold>,
        Vec<Result<PutDone, HubError>>,
    ) {
        let admitted = match self.uploader(caller) {
            Some(who) => {
                let amounts: Vec<Amount> = batch
                    .iter()
                    .map(|p| Amount {
                        bytes: p.data.len() as u64,
                        files: 1,
                    })
                    .collect();
                self.quota().admit(who, caller.from, &amounts)
            }
            None => Admitted {
                hold: None,
                count: batch.len(),
                refusal: None,
            },
        };
        // An upload link's files count against its address and its own bound too.
        let admitted = if admitted.count > 0 && caller.grant.is_some() {
            let token = self.admit_for_token(&batch[..admitted.count], caller);
            Admitted {
                hold: QuotaHold::join(admitted.hold, token.hold),
                count: token.count,
                refusal: token.refusal.or(admitted.refusal),
            }
        } else {
            admitted
        };
        let refused = batch.split_off(admitted.count);
        let refusal = admitted.refusal;
        let refused = refused
            .iter()
            .map(|_| Err(again(refusal.as_ref().expect("a refusal for the rest"))))
            .collect();
        (batch, admitted.hold, refused)
    }

    /// [`Hub::admit_batch`] for a caller with a token: its quota, if it has one. A name that
    /// does not parse adds nothing (it is refused as it is stored).
    fn admit_for_token(&self, batch: &[PutSmall], caller: &Caller) -> crate::quota::Admitted {
        let names: Vec<Option<RemoteName>> = batch.iter().map(|p| parse(&p.name).ok()).collect();
        let files: Vec<(Option<&RemoteName>, u64, bool)> = batch
            .iter()
            .zip(&names)
            .map(|(p, n)| (n.as_ref(), p.data.len() as u64, p.force))
            .collect();
        self.count_token_upload(caller, &files)
    }

    /// The files of a batch whose names parse, whose names could be claimed and whose hashes
    /// match, with their places in the batch; the others get their refusal in `answers`.
    fn checked(
        &self,
        batch: Vec<PutSmall>,
        answers: &mut [Option<Result<PutDone, HubError>>],
    ) -> (Vec<SmallFile>, Vec<usize>) {
        let names: Vec<Result<RemoteName, HubError>> =
            batch.iter().map(|p| parse(&p.name)).collect();
        let valid: Vec<&RemoteName> = names.iter().filter_map(|n| n.as_ref().ok()).collect();
        let bytes: u64 = batch.iter().map(|p| p.data.len() as u64).sum();
        let mut claims = self.store().claim_batch(&valid, bytes).into_iter();
        let (mut files, mut indexes) = (Vec::new(), Vec::new());
        for (index, (put, name)) in batch.into_iter().zip(names).enumerate() {
            let file = name
                .and_then(|name| Ok((claims.next().expect("one claim per name")?, name)))
                .and_then(|(claim, name)| {
                    if *blake3::hash(&put.data).as_bytes() != put.blake3 {
                        return Err(HubError::Integrity(name.to_string()));
                    }
                    Ok(SmallFile {
                        name,
                        data: put.data,
                        hash: put.blake3,
                        modified_ns: put.modified_ns,
                        replace: put.force,
                        claim,
                    })
                });
            match file {
                Ok(f) => {
                    files.push(f);
                    indexes.push(index);
                }
                Err(e) => answers[index] = Some(Err(e)),
            }
        }
        (files, indexes)
    }

    /// What stores a batch learns: owners, hashes, and stale cache entries dropped.
    fn stored_batch(&self, stored: &[Stored], caller: &Caller) {
        let uploader = caller.as_owner();
        let owners: Vec<Owned> = stored
            .iter()
            .map(|s| Owned {
                name: s.remembered.name.clone(),
                owner: uploader,
                version: s.remembered.version,
            })
            .collect();
        if let Err(e) = self.owners().set_owners(&owners) {
            tracing::warn!(error = %e, "cannot record the owners of a batch");
        }
        for s in stored {
            self.cache().invalidate(&s.remembered.name);
        }
        self.hashes()
            .insert_many(stored.iter().map(|s| s.remembered.clone()).collect());
    }
}

impl Hub {
    /// Stores an upload held in memory, with whatever others finish meanwhile: checked again
    /// against what its name holds now, since nothing held the name's place on disk while the
    /// bytes came.
    pub(crate) async fn store_held(
        self: &Arc<Self>,
        upload: MemoryUpload,
        hash: Hash,
        force: bool,
        caller: &Caller,
    ) -> Result<Version, HubError> {
        let (answer, answered) = oneshot::channel();
        let file = SmallFile {
            name: upload.name,
            data: upload.data,
            hash,
            modified_ns: upload.modified_ns,
            replace: force,
            claim: upload.claim,
        };
        let caller = caller.clone();
        let job = Held {
            file,
            caller,
            answer,
            memory: upload.memory,
        };
        if self.held().push(job) {
            let hub = Arc::clone(self);
            tokio::task::spawn_blocking(move || hub.store_held_batches());
        }
        answered
            .await
            .unwrap_or_else(|_| Err(HubError::Internal("the upload was not stored".into())))
    }

    /// Stores queued held uploads, a batch at a time, until none is left. Blocking.
    fn store_held_batches(&self) {
        let _storing = Storing(self.held());
        while let Some(jobs) = self.held().next(MAX_BATCH_FILES) {
            let callers: HashMap<String, Caller> = jobs
                .iter()
                .map(|j| (j.file.name.to_string(), j.caller.clone()))
                .collect();
            let check = |name: &RemoteName, seen, replace| match callers.get(name.as_str()) {
                Some(caller) => self.check_place(caller, name, seen, replace),
                None => Err(HubError::Internal("a file of no upload".into())),
            };
            let mut files = Vec::with_capacity(jobs.len());
            let mut waiting = Vec::with_capacity(jobs.len());
            for j in jobs {
                waiting.push(Waiter {
                    name: j.file.name.to_string(),
                    hash: j.file.hash,
                    owner: j.caller.as_owner(),
                    answer: j.answer,
                    _memory: j.memory,
                });
                files.push(j.file);
            }
            let results = self.store().store_batch(files, &check);
            let (mut stored, mut owners) = (Vec::new(), Vec::new());
            for (w, result) in waiting.iter().zip(&results) {
                if let Ok(version) = result {
                    self.cache().invalidate(&w.name);
                    owners.push(Owned {
                        name: w.name.clone(),
                        owner: w.owner,
                        version: *version,
                    });
                    stored.push(Remembered {
                        name: w.name.clone(),
                        version: *version,
                        hash: w.hash,
                    });
                }
            }
            if let Err(e) = self.owners().set_owners(&owners) {
                tracing::warn!(error = %e, "cannot record the owners of uploads");
            }
            self.hashes().insert_many(stored);
            // Answered once recorded: an uploader may act on its file as soon as it hears.
            for (w, result) in waiting.into_iter().zip(results) {
                let _ = w.answer.send(result);
            }
        }
    }
}

/// A held upload in the batch being stored: what is recorded of it, and who hears the answer.
struct Waiter {
    name: String,
    hash: Hash,
    owner: crate::records::Owner,
    answer: oneshot::Sender<Result<Version, HubError>>,
    /// Its share of `--batch-memory`, given back once it is stored.
    _memory: tokio::sync::OwnedSemaphorePermit,
}

/// The same refusal again, for every file of a batch refused as a whole.
fn again(e: &HubError) -> HubError {
    match e {
        HubError::Forbidden(m) => HubError::Forbidden(m.clone()),
        HubError::Unauthorized(m) => HubError::Unauthorized(m.clone()),
        HubError::Quota {
            message,
            retry_after,
        } => HubError::Quota {
            message: message.clone(),
            retry_after: *retry_after,
        },
        HubError::TokenQuota(m) => HubError::TokenQuota(m.clone()),
        other => HubError::BadRequest(other.to_string()),
    }
}
