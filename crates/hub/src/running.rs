//! Resumable uploads running on this hub, by name, with the owner each runs for. A client whose
//! link dies without a word (a half-open connection: a laptop that changed networks, a NAT that
//! forgot the flow) leaves its upload holding the name until `--stall-timeout`; when the same
//! owner comes back on a new connection for the same name, the old upload is stopped at once
//! and the new one takes it up where its bytes end. Another owner is still told the name is busy.
//! Hubs sharing a database ask each other on a PostgreSQL channel
//! ([`crate::pg::UPLOADS_CHANNEL`]), so the owner's new try may come through any of them.

use crate::pg::{Db, Notice, UPLOADS_CHANNEL};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// The uploads of this hub that their owner may take over.
#[derive(Debug, Default)]
pub(crate) struct Running {
    uploads: Mutex<HashMap<String, Entry>>,
    next_id: AtomicU64,
    /// The database shared with other hubs, to ask them (`None`: a hub on its own).
    group: Option<Db>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    owner: [u8; 32],
    stop: CancellationToken,
    gone: watch::Receiver<()>,
}

/// An upload's place in [`Running`], shared by its connection and its file writer: when both
/// have let go (the last bytes written), the name is free for the owner's next try.
#[derive(Debug)]
pub struct RunningUpload {
    running: Arc<Running>,
    name: String,
    id: u64,
    stop: CancellationToken,
    _gone: watch::Sender<()>,
}

/// The end of an upload stopped for its owner, to wait on.
#[derive(Debug)]
pub(crate) struct Gone(watch::Receiver<()>);

impl Running {
    /// The uploads of a hub in a group sharing `db`: what the others ask of it is heard (until
    /// the hub goes), and it may ask them.
    pub(crate) fn in_group(db: Db) -> Arc<Self> {
        let notices = db.notices();
        let running = Arc::new(Self {
            group: Some(db),
            ..Self::default()
        });
        tokio::spawn(hear(Arc::downgrade(&running), notices));
        running
    }

    /// Asks the other hubs of the group to stop `name`'s upload if `owner` runs it there; false
    /// if there is no group to ask (or it cannot be reached).
    pub(crate) async fn ask_others(&self, name: &str, owner: &[u8; 32]) -> bool {
        let Some(db) = &self.group else {
            return false;
        };
        let asking = format!("{}:{name}", blake3::Hash::from(*owner).to_hex());
        let Ok(conn) = db.get().await else {
            return false;
        };
        let channel = UPLOADS_CHANNEL.to_owned();
        conn.execute("SELECT pg_notify($1, $2)", &[&channel, &asking])
            .await
            .is_ok()
    }

    /// Enters `name`'s upload, run for `owner`.
    pub(crate) fn register(self: &Arc<Self>, name: &str, owner: [u8; 32]) -> Arc<RunningUpload> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let (tx, rx) = watch::channel(());
        let entry = Entry {
            id,
            owner,
            stop: stop.clone(),
            gone: rx,
        };
        self.uploads
            .lock()
            .expect("running uploads poisoned")
            .insert(name.to_owned(), entry);
        Arc::new(RunningUpload {
            running: Arc::clone(self),
            name: name.to_owned(),
            id,
            stop,
            _gone: tx,
        })
    }

    /// Stops `name`'s upload if `owner` runs it; `None` if no upload of it runs here for them.
    pub(crate) fn stop(&self, name: &str, owner: &[u8; 32]) -> Option<Gone> {
        let uploads = self.uploads.lock().expect("running uploads poisoned");
        let entry = uploads.get(name)?;
        // Compared in constant time, as everything derived from a secret.
        if blake3::Hash::from(entry.owner) != blake3::Hash::from(*owner) {
            return None;
        }
        entry.stop.cancel();
        Some(Gone(entry.gone.clone()))
    }
}

/// Stops what the other hubs ask for, while `running` lives.
async fn hear(running: Weak<Running>, mut notices: broadcast::Receiver<Notice>) {
    loop {
        let heard = notices.recv().await;
        let Some(running) = running.upgrade() else {
            return;
        };
        match heard {
            Ok(Notice::TakeOver(asked)) => {
                let Some((owner, name)) = asked.split_once(':') else {
                    continue;
                };
                if let Ok(owner) = blake3::Hash::from_hex(owner) {
                    if running.stop(name, owner.as_bytes()).is_some() {
                        tracing::info!(%name, "an upload taken over by its owner through another hub");
                    }
                }
            }
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl RunningUpload {
    /// Cancelled when the owner takes the upload over from another connection.
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }
}

impl Drop for RunningUpload {
    fn drop(&mut self) {
        let mut uploads = self
            .running
            .uploads
            .lock()
            .expect("running uploads poisoned");
        if uploads.get(&self.name).is_some_and(|e| e.id == self.id) {
            uploads.remove(&self.name);
        }
    }
}

impl Gone {
    /// Waits until the stopped upload has let go of its name.
    pub(crate) async fn wait(mut self) {
        // Never changed: it returns when the sender goes, with the last holder.
        while self.0.changed().await.is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_owner_stops_an_upload_and_waits_for_its_last_holder() {
        let running = Arc::new(Running::default());
        let upload = running.register("a.bin", [1; 32]);
        let writer = Arc::clone(&upload);
        assert!(running.stop("a.bin", &[2; 32]).is_none(), "another owner");
        assert!(running.stop("b.bin", &[1; 32]).is_none(), "another name");
        assert!(!upload.stopped().is_cancelled());

        let gone = running.stop("a.bin", &[1; 32]).expect("its owner");
        assert!(upload.stopped().is_cancelled());
        let waiting = tokio::spawn(gone.wait());
        drop(upload);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the writer still holds it");
        drop(writer);
        waiting.await.unwrap();
        assert!(running.stop("a.bin", &[1; 32]).is_none(), "forgotten");
    }

    #[test]
    fn an_older_entry_going_does_not_forget_a_newer_one() {
        let running = Arc::new(Running::default());
        let old = running.register("a.bin", [1; 32]);
        let new = running.register("a.bin", [1; 32]);
        drop(old);
        assert!(running.stop("a.bin", &[1; 32]).is_some());
        assert!(new.stopped().is_cancelled());
    }
}
