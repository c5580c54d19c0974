//! Token checks remembered in memory, so that a request with a token (each HTTP and WebDAV
//! request carries one) needs no database, nor a hand-off to the blocking pool, while nothing
//! about tokens has changed.
//!
//! What is remembered is forgotten, all at once, as soon as the records may have changed:
//! - SQLite: a connection of the memo's own asks `PRAGMA data_version`, which moves with
//!   every commit by any other connection, this hub's or another process's (`troca token
//!   revoke` on the same state folder). Asked at most once a millisecond (it costs about
//!   1.5 µs, as much as the rest of a small file's request), so another process's change is
//!   seen within one; while another thread holds that connection, the lookup goes to the
//!   records instead.
//! - PostgreSQL: a trigger announces every change to a token on `troca_tokens`; while the
//!   hub's listening connection is down, nothing is remembered.
//!
//! Changes made through this hub (revoking, a new quota) forget at once, whatever the backend.
//! A grant is kept until its token (or its maker) expires, and at most a minute. Links that
//! count their downloads are never kept: each download goes to the records anyway. A lookup
//! that began before a change and ends after it is not kept (a generation number says so).

use super::{Amount, Grant, LinkFetch, NewToken, TokenInfo, TokenSpec, Tokens};
use crate::error::HubError;
use crate::pg::Notice;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest a grant is kept without being looked up again.
const MAX_AGE_NS: i64 = 60_000_000_000;

/// How often the SQLite watch asks whether anything changed, at most.
const ASK_EVERY_NS: i64 = 1_000_000;

/// The most grants kept; past it, all are forgotten (only valid tokens are kept, so a client
/// guessing tokens fills nothing).
const MAX_KEPT: usize = 4096;

/// How a memo hears that the records changed.
#[derive(Debug)]
pub enum Watch {
    /// A SQLite database's own connection, and the `data_version` last seen on it.
    Sqlite(SqliteWatch),
    /// Announcements from PostgreSQL, heard by a task that sets `live` while they can be
    /// trusted.
    Announced(Arc<AtomicBool>),
}

#[derive(Debug)]
pub struct SqliteWatch {
    /// The connection, and the `data_version` last seen on it.
    db: Mutex<(rusqlite::Connection, i64)>,
    /// When it was last asked (ns since the epoch).
    asked_ns: AtomicI64,
    /// How long an answer holds.
    every_ns: i64,
}

impl Watch {
    /// Watches the SQLite database at `path` through a connection of its own.
    pub fn sqlite(path: &Path) -> Result<Self, HubError> {
        Self::sqlite_every(path, ASK_EVERY_NS)
    }

    /// [`Watch::sqlite`], asking at most once every `every_ns`.
    fn sqlite_every(path: &Path, every_ns: i64) -> Result<Self, HubError> {
        let err = |e| super::sqlite::db_err(path, e);
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = rusqlite::Connection::open_with_flags(path, flags).map_err(err)?;
        let seen = data_version(&db).map_err(err)?;
        Ok(Self::Sqlite(SqliteWatch {
            db: Mutex::new((db, seen)),
            asked_ns: AtomicI64::new(crate::pg::now_ns()),
            every_ns,
        }))
    }
}

fn data_version(db: &rusqlite::Connection) -> rusqlite::Result<i64> {
    db.prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))
}

/// [`Tokens`] that remember what valid tokens grant.
pub struct RememberedTokens {
    records: Arc<dyn Tokens>,
    watch: Watch,
    memo: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    /// Moves each time everything is forgotten.
    generation: u64,
    kept: HashMap<[u8; 32], Kept>,
}

struct Kept {
    grant: Grant,
    /// Until when it may be used (ns since the epoch).
    until_ns: i64,
}

impl std::fmt::Debug for RememberedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RememberedTokens")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl RememberedTokens {
    pub fn new(records: Arc<dyn Tokens>, watch: Watch) -> Arc<Self> {
        Arc::new(Self {
            records,
            watch,
            memo: Mutex::default(),
        })
    }

    /// Forgets everything when `notices` say tokens changed, and remembers nothing while
    /// they may be missed (the hub's listening connection down).
    pub fn hear(self: &Arc<Self>, notices: tokio::sync::broadcast::Receiver<Notice>) {
        if let Watch::Announced(live) = &self.watch {
            tokio::spawn(hear(Arc::downgrade(self), Arc::clone(live), notices));
        }
    }

    /// Whether what is remembered may be used now, forgetting it if the records changed.
    fn current(&self) -> bool {
        match &self.watch {
            Watch::Announced(live) => live.load(Ordering::Acquire),
            Watch::Sqlite(watch) => {
                let now = crate::pg::now_ns();
                let asked = watch.asked_ns.load(Ordering::Acquire);
                if now.saturating_sub(asked) < watch.every_ns {
                    return true;
                }
                let Ok(mut db) = watch.db.try_lock() else {
                    return false;
                };
                let (conn, seen) = &mut *db;
                let current = match data_version(conn) {
                    Ok(v) if v == *seen => true,
                    Ok(v) => {
                        *seen = v;
                        self.forget_all();
                        true
                    }
                    Err(_) => false,
                };
                if current {
                    watch.asked_ns.store(now, Ordering::Release);
                }
                current
            }
        }
    }

    fn forget_all(&self) {
        let mut memo = self.memo.lock().expect("token memo poisoned");
        memo.generation += 1;
        memo.kept.clear();
    }

    fn generation(&self) -> u64 {
        self.memo.lock().expect("token memo poisoned").generation
    }

    /// Keeps `grant` for `token`, unless tokens changed since `generation`.
    fn keep(&self, token: &str, grant: &Grant, generation: u64) {
        if grant.max_downloads > 0 || grant.token_id.is_none() {
            return;
        }
        let now = crate::pg::now_ns();
        let until_ns = grant
            .until_ns
            .unwrap_or(i64::MAX)
            .min(now.saturating_add(MAX_AGE_NS));
        let mut memo = self.memo.lock().expect("token memo poisoned");
        if memo.generation != generation {
            return;
        }
        if memo.kept.len() >= MAX_KEPT {
            memo.kept.clear();
        }
        let grant = grant.clone();
        memo.kept.insert(key(token), Kept { grant, until_ns });
    }
}

fn key(token: &str) -> [u8; 32] {
    *super::sqlite::tokens::hash(token).as_bytes()
}

async fn hear(
    me: std::sync::Weak<RememberedTokens>,
    live: Arc<AtomicBool>,
    mut notices: tokio::sync::broadcast::Receiver<Notice>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut current = 1;
    loop {
        let heard = notices.recv().await;
        let Some(me) = me.upgrade() else { return };
        match heard {
            Ok(Notice::Tokens) | Err(RecvError::Lagged(_)) => me.forget_all(),
            Ok(Notice::Lost(n)) if n >= current => {
                live.store(false, Ordering::Release);
                me.forget_all();
            }
            Ok(Notice::Listening(n)) => {
                current = current.max(n);
                me.forget_all();
                live.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(RecvError::Closed) => {
                live.store(false, Ordering::Release);
                me.forget_all();
                return;
            }
        }
    }
}

impl Tokens for RememberedTokens {
    fn check(&self, token: &str) -> Result<Option<Grant>, HubError> {
        // Changes before the check are taken in first: what it finds is kept until the next.
        let current = self.current();
        let generation = self.generation();
        let grant = self.records.check(token)?;
        if let Some(g) = grant.as_ref().filter(|_| current) {
            self.keep(token, g, generation);
        }
        Ok(grant)
    }

    fn remembered(&self, token: &str) -> Option<Grant> {
        if !self.current() {
            return None;
        }
        let memo = self.memo.lock().expect("token memo poisoned");
        let kept = memo.kept.get(&key(token))?;
        (kept.until_ns > crate::pg::now_ns()).then(|| kept.grant.clone())
    }

    fn admin(&self, token: &str) -> Option<Grant> {
        self.records.admin(token)
    }

    fn create(&self, spec: TokenSpec<'_>, now_ns: i64) -> Result<NewToken, HubError> {
        self.records.create(spec, now_ns)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, HubError> {
        self.records.list()
    }

    fn revoke(&self, id: i64) -> Result<bool, HubError> {
        let done = self.records.revoke(id);
        // At once on this hub, whatever the announcement's delay.
        self.forget_all();
        done
    }

    fn set_quota(&self, id: i64, quota: Amount) -> Result<bool, HubError> {
        let done = self.records.set_quota(id, quota);
        self.forget_all();
        done
    }

    fn maker(&self, id: i64) -> Result<Option<i64>, HubError> {
        self.records.maker(id)
    }

    fn forget_links(&self, before_ns: i64) -> Result<u64, HubError> {
        self.records.forget_links(before_ns)
    }

    fn check_resume(&self, token: &str, fetch: &LinkFetch<'_>) -> Result<Option<Grant>, HubError> {
        self.records.check_resume(token, fetch)
    }

    fn count_download(&self, id: i64, fetch: &LinkFetch<'_>) -> Result<bool, HubError> {
        self.records.count_download(id, fetch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::sqlite::tokens::SqliteTokens;
    use crate::records::{Role, SHARED_BY_ADMIN_FILE};

    fn spec(
        expires_ns: Option<i64>,
        made_by: Option<i64>,
        max_downloads: u64,
    ) -> TokenSpec<'static> {
        TokenSpec {
            role: Role::Read,
            label: "guest",
            expires_ns,
            folder: None,
            quota: Amount::default(),
            made_by,
            max_downloads,
        }
    }

    /// A memo that asks SQLite with each lookup (the hub asks once a millisecond).
    fn open(dir: &Path) -> Arc<RememberedTokens> {
        let (tokens, _) = SqliteTokens::open(dir).unwrap();
        let watch = Watch::sqlite_every(&crate::records::sqlite::db_path(dir), 0).unwrap();
        RememberedTokens::new(Arc::new(tokens), watch)
    }

    #[test]
    fn a_grant_is_remembered_once_checked_and_forgotten_when_another_process_revokes_it() {
        let dir = tempfile::tempdir().unwrap();
        let memo = open(dir.path());
        let made = memo.create(spec(None, None, 0), 0).unwrap();
        assert_eq!(memo.remembered(&made.secret), None, "not checked yet");
        let checked = memo.check(&made.secret).unwrap().unwrap();
        assert_eq!(memo.remembered(&made.secret), Some(checked));
        assert_eq!(memo.remembered("troca_wrong"), None);

        // `troca token revoke` on the same state folder: another process, another connection.
        let (other, _) = SqliteTokens::open(dir.path()).unwrap();
        assert!(other.revoke(made.id).unwrap());
        assert_eq!(memo.remembered(&made.secret), None, "forgotten at once");
        assert_eq!(memo.check(&made.secret).unwrap(), None);
    }

    #[test]
    fn a_grant_is_not_kept_past_its_expiry_nor_for_a_link_that_counts_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let memo = open(dir.path());
        let now = crate::pg::now_ns();
        let soon = memo
            .create(spec(Some(now + 300_000_000), None, 0), now)
            .unwrap();
        assert!(memo.check(&soon.secret).unwrap().is_some());
        assert!(memo.remembered(&soon.secret).is_some());
        while crate::pg::now_ns() < now + 300_000_000 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(memo.remembered(&soon.secret), None, "expired");

        let counted = memo
            .create(spec(None, Some(SHARED_BY_ADMIN_FILE), 1), now)
            .unwrap();
        assert!(memo.check(&counted.secret).unwrap().is_some());
        assert_eq!(memo.remembered(&counted.secret), None);
    }

    #[test]
    fn a_link_expires_with_the_token_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let memo = open(dir.path());
        let now = crate::pg::now_ns();
        let maker = memo
            .create(spec(Some(now + 200_000_000), None, 0), now)
            .unwrap();
        let link = memo.create(spec(None, Some(maker.id), 0), now).unwrap();
        let grant = memo.check(&link.secret).unwrap().unwrap();
        assert_eq!(grant.until_ns, Some(now + 200_000_000));
    }

    #[test]
    fn a_check_that_began_before_a_change_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let memo = open(dir.path());
        let made = memo.create(spec(None, None, 0), 0).unwrap();
        let grant = memo.records.check(&made.secret).unwrap().unwrap();
        let before = memo.generation();
        assert!(memo.revoke(made.id).unwrap());
        memo.keep(&made.secret, &grant, before);
        assert_eq!(memo.remembered(&made.secret), None);
    }
}

#[cfg(test)]
mod asked_once_a_millisecond {
    use super::*;
    use crate::records::sqlite::tokens::SqliteTokens;
    use crate::records::Role;

    /// Within its millisecond the watch answers from memory; past it, it asks, and a change
    /// another process made is seen.
    #[test]
    fn another_process_change_is_seen_once_the_watch_asks_again() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let path = crate::records::sqlite::db_path(dir.path());
        let hour = 3_600_000_000_000;
        let memo =
            RememberedTokens::new(Arc::new(tokens), Watch::sqlite_every(&path, hour).unwrap());
        let spec = TokenSpec {
            role: Role::Read,
            label: "guest",
            expires_ns: None,
            folder: None,
            quota: Amount::default(),
            made_by: None,
            max_downloads: 0,
        };
        let made = memo.create(spec, 0).unwrap();
        assert!(memo.check(&made.secret).unwrap().is_some());
        let (other, _) = SqliteTokens::open(dir.path()).unwrap();
        assert!(other.revoke(made.id).unwrap());
        assert!(
            memo.remembered(&made.secret).is_some(),
            "not asked again within its time"
        );
        let Watch::Sqlite(watch) = &memo.watch else {
            unreachable!()
        };
        watch.asked_ns.store(0, Ordering::Release);
        assert_eq!(memo.remembered(&made.secret), None, "asked, and forgotten");
    }
}
