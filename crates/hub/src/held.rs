//! The queue of small uploads held in memory that wait to be stored together (the group
//! commit `small.rs` runs): who stores next, and which jobs go in the next batch.

use crate::access::Caller;
use crate::error::HubError;
use crate::store::{SmallFile, Version};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Held uploads waiting to be stored, and whether a store is running.
#[derive(Debug, Default)]
pub(crate) struct HeldQueue(Mutex<Waiting>);

#[derive(Debug, Default)]
struct Waiting {
    jobs: Vec<Held>,
    storing: bool,
}

/// One held upload to store, and where its answer goes.
#[derive(Debug)]
pub(crate) struct Held {
    pub file: SmallFile,
    pub caller: Caller,
    pub answer: oneshot::Sender<Result<Version, HubError>>,
    /// The upload's share of `--batch-memory`, held until it is stored.
    pub memory: tokio::sync::OwnedSemaphorePermit,
}

impl HeldQueue {
    /// Queues a job; true if no store is running, so the caller must start one.
    pub(crate) fn push(&self, job: Held) -> bool {
        let mut w = self.0.lock().expect("held queue poisoned");
        w.jobs.push(job);
        !std::mem::replace(&mut w.storing, true)
    }

    /// The next jobs to store together (at most `max`), or `None` (and the store ends) when
    /// there are none.
    pub(crate) fn next(&self, max: usize) -> Option<Vec<Held>> {
        let mut w = self.0.lock().expect("held queue poisoned");
        if w.jobs.is_empty() {
            w.storing = false;
            return None;
        }
        let n = w.jobs.len().min(max);
        Some(w.jobs.drain(..n).collect())
    }
}

/// Ends the store if it unwinds: the jobs it held are dropped (their waiters hear so) and the
/// next upload starts a new store.
pub(crate) struct Storing<'a>(pub &'a HeldQueue);

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(mut w) = self.0 .0.lock() {
                w.jobs.clear();
                w.storing = false;
            }
        }
    }
}
