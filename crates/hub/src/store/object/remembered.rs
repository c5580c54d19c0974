//! What a hub remembers of the names of an object store, so a download of a popular file costs
//! no database round trip: name → (version, hash, object). Every change to names is announced
//! by the hub that makes it (PostgreSQL `NOTIFY`, delivered when its transaction commits), and
//! each hub forgets what the announcement names; its own changes it forgets at once. If
//! announcements are missed (too many at once) everything is forgotten; while the hub's session
//! is lost (until a new one listens), nothing is remembered.

use super::catalog::FileRow;
use crate::pg::Notice;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

/// Names remembered at most.
const ENTRIES: usize = 100_000;

#[derive(Debug)]
pub struct Remembered {
    rows: Mutex<LruCache<String, FileRow>>,
    /// Bumped by every change heard of: a row read before it must not be kept after it.
    changes: AtomicU64,
    live: AtomicBool,
}

/// What to forget, as announced.
pub enum Forget<'a> {
    File(&'a str),
    Tree(&'a str),
}

impl Forget<'_> {
    /// The announcement of this change.
    pub fn notice(&self) -> String {
        match self {
            Forget::File(n) => format!("f:{n}"),
            Forget::Tree(n) => format!("t:{n}"),
        }
    }
}

impl Remembered {
    /// Starts listening to `notices`.
    pub fn new(notices: Receiver<Notice>) -> Arc<Self> {
        let me = Arc::new(Self {
            rows: Mutex::new(LruCache::new(NonZeroUsize::new(ENTRIES).expect("not zero"))),
            changes: AtomicU64::new(0),
            live: AtomicBool::new(true),
        });
        tokio::spawn(hear(Arc::downgrade(&me), notices));
        me
    }

    /// The row of `name`, if remembered.
    pub fn get(&self, name: &str) -> Option<FileRow> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.rows.lock().expect("names poisoned").get(name).cloned()
    }

    /// A mark to give [`Remembered::keep`] with a row read after it.
    pub fn mark(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Keeps `row`, read after `mark`, unless a change was heard of since.
    pub fn keep(&self, name: &str, row: FileRow, mark: u64) {
        let mut rows = self.rows.lock().expect("names poisoned");
        if self.live.load(Ordering::Acquire) && self.changes.load(Ordering::Acquire) == mark {
            rows.put(name.to_owned(), row);
        }
    }

    pub fn forget(&self, what: Forget<'_>) {
        let mut rows = self.rows.lock().expect("names poisoned");
        self.changes.fetch_add(1, Ordering::AcqRel);
        match what {
            Forget::File(n) => {
                rows.pop(n);
            }
            Forget::Tree(t) => {
                let beneath = format!("{t}/");
                let gone: Vec<String> = rows
                    .iter()
                    .filter(|(k, _)| *k == t || k.starts_with(&beneath))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    rows.pop(&k);
                }
            }
        }
    }

    fn forget_all(&self) {
        let mut rows = self.rows.lock().expect("names poisoned");
        self.changes.fetch_add(1, Ordering::AcqRel);
        rows.clear();
    }
}

async fn hear(me: std::sync::Weak<Remembered>, mut notices: Receiver<Notice>) {
    // The session listening now (an older one's end, heard late, changes nothing).
    let mut current = 1;
    loop {
        let heard = notices.recv().await;
        let Some(me) = me.upgrade() else { return };
        match heard {
            Ok(Notice::Changed(n)) => match n.split_once(':') {
                Some(("f", name)) => me.forget(Forget::File(name)),
                Some(("t", name)) => me.forget(Forget::Tree(name)),
                _ => me.forget_all(),
            },
            Ok(Notice::TakeOver(_) | Notice::Tokens) => {}
            Err(RecvError::Lagged(_)) => me.forget_all(),
            Ok(Notice::Lost(n)) if n >= current => {
                // Changes may go unheard: remember nothing until a session listens again.
                me.live.store(false, Ordering::Release);
                me.forget_all();
            }
            Ok(Notice::Lost(_)) => {}
            Ok(Notice::Listening(n)) => {
                // What was announced in between is lost: start afresh.
                current = current.max(n);
                me.forget_all();
                me.live.store(true, Ordering::Release);
            }
            Err(RecvError::Closed) => {
                me.live.store(false, Ordering::Release);
                me.forget_all();
                return;
            }
        }
    }
}
