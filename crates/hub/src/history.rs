//! The request history, in SQLite under the state folder so it survives restarts.
//!
//! Recording never waits on the disk: connections hand entries to a writer thread, which stores
//! what has gathered every few tens of milliseconds, in one transaction, and trims the log to the
//! configured number of entries. Queries first ask the writer to flush, so a client sees its own
//! requests.
//!
//! Entries are stored in batches, one row of `request_batches` per batch holding a JSON array of
//! entries. A row per request cost ~1.6 µs of the writer's CPU per request inside a busy hub (6% of
//! what a 4 KiB download costs it); a batch row costs a fraction of that, and the history is
//! written far more often than it is read. The `history` view turns the batches back into one row
//! per request for anyone looking with `sqlite3`.

use crate::error::HubError;
use crate::service::now_ns;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use troca_proto::msg::HistoryEntry;

/// Entries waiting for the writer. Past this, entries are dropped (and counted) rather than
/// slowing the connections down.
const QUEUE: usize = 65_536;

/// How long the writer gathers entries before committing them.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// One request as the connections hand it over: shared strings and a static op name, so
/// recording allocates as little as possible on the request path.
#[derive(Debug, Clone)]
pub struct Record {
    pub time_ns: i64,
    pub client: Arc<str>,
    pub address: Arc<str>,
    pub op: &'static str,
    pub target: String,
    pub ok: bool,
    pub error: String,
    pub bytes: u64,
    pub duration_us: u64,
}

enum Cmd {
    Record(Record),
    Flush(SyncSender<()>),
}

/// The history log. With a retention of 0 it records nothing.
#[derive(Debug)]
pub struct HistoryLog {
    tx: Option<SyncSender<Cmd>>,
    path: PathBuf,
    reader: Mutex<Connection>,
    keep: u64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Record(_) => "Record",
            Cmd::Flush(_) => "Flush",
        })
    }
}

pub(crate) fn open_db(path: &Path) -> Result<Connection, HubError> {
    let mut db = Connection::open(path).map_err(|e| db_err(path, e))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         -- Requests in the order they finished: `entries` is a JSON array of `count` entries,
         -- each [time_ns, client, address, op, target, ok, error, bytes, duration_us], the
         -- first of them request number `first` (numbers count from 1 and never repeat).
         CREATE TABLE IF NOT EXISTS request_batches (
             id INTEGER PRIMARY KEY,
             first INTEGER NOT NULL,
             count INTEGER NOT NULL,
             entries TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS tokens (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             hash BLOB NOT NULL UNIQUE,
             role TEXT NOT NULL,
             label TEXT NOT NULL,
             created_ns INTEGER NOT NULL,
             revoked INTEGER NOT NULL DEFAULT 0
         );
         CREATE TABLE IF NOT EXISTS owners (
             name TEXT PRIMARY KEY,
             token_id INTEGER NOT NULL
         );",
    )
    .map_err(|e| db_err(path, e))?;
    migrate_flat_history(&mut db).map_err(|e| db_err(path, e))?;
    db.execute_batch(
        "CREATE VIEW IF NOT EXISTS history AS
             SELECT b.first + e.key AS seq, e.value ->> 0 AS time_ns, e.value ->> 1 AS client,
                    e.value ->> 2 AS address, e.value ->> 3 AS op, e.value ->> 4 AS target,
                    e.value ->> 5 AS ok, e.value ->> 6 AS error, e.value ->> 7 AS bytes,
                    e.value ->> 8 AS duration_us
             FROM request_batches b, json_each(b.entries) e;",
    )
    .map_err(|e| db_err(path, e))?;
    Ok(db)
}

/// Moves the entries of the first schema's `history` table (one row per request) into batches,
/// once. Safe against another process opening the database at the same moment: the check and
/// the move are one immediate transaction.
fn migrate_flat_history(db: &mut Connection) -> rusqlite::Result<()> {
    let flat = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'";
    if !db.prepare(flat)?.exists([])? {
        return Ok(());
    }
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if tx.prepare(flat)?.exists([])? {
        let old: Vec<Record> = tx
            .prepare(
                "SELECT time_ns, client, address, op, target, ok, error, bytes, duration_us
                 FROM history ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(Record {
                    time_ns: r.get(0)?,
                    client: r.get::<_, String>(1)?.into(),
                    address: r.get::<_, String>(2)?.into(),
                    op: op_name(&r.get::<_, String>(3)?),
                    target: r.get(4)?,
                    ok: r.get(5)?,
                    error: r.get(6)?,
                    bytes: r.get::<_, i64>(7)? as u64,
                    duration_us: r.get::<_, i64>(8)? as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut next = next_seq(&tx)?;
        for batch in old.chunks(BATCH_MAX) {
            insert_batch(&tx, next, batch)?;
            next += batch.len() as i64;
        }
        tx.execute_batch("DROP TABLE history;")?;
    }
    tx.commit()
}

/// The operations the hub records, so an entry read back can name its operation with a static
/// string, as live entries do.
const OPS: &[&str] = &[
    "ls", "get", "head", "put", "rm", "who", "history", "status", "register", "hello", "time",
];

fn op_name(op: &str) -> &'static str {
    OPS.iter().find(|o| **o == op).copied().unwrap_or("other")
}

/// The number the next request will get.
fn next_seq(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row(
        "SELECT COALESCE(MAX(first + count), 1) FROM request_batches",
        [],
        |r| r.get(0),
    )
}

/// Entries per stored batch at most, so reading the newest few never decodes much.
const BATCH_MAX: usize = 1024;

/// One entry as stored: a JSON array, in the order the `history` view names its columns.
type Stored<'a> = (
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    bool,
    Option<&'a str>,
    u64,
    u64,
);

/// A stored entry read back (strings with escapes cannot be borrowed from the JSON text).
type Loaded = (
    i64,
    String,
    String,
    String,
    String,
    bool,
    Option<String>,
    u64,
    u64,
);

fn insert_batch(db: &Connection, first: i64, batch: &[Record]) -> rusqlite::Result<()> {
    let stored: Vec<Stored<'_>> = batch
        .iter()
        .map(|e| {
            (
                e.time_ns,
                &*e.client,
                &*e.address,
                e.op,
                e.target.as_str(),
                e.ok,
                (!e.error.is_empty()).then_some(e.error.as_str()),
                e.bytes,
                e.duration_us,
            )
        })
        .collect();
    let entries = serde_json::to_string(&stored)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    db.prepare_cached("INSERT INTO request_batches (first, count, entries) VALUES (?1, ?2, ?3)")?
        .execute(params![first, batch.len() as i64, entries])?;
    Ok(())
}

pub(crate) fn db_err(path: &Path, e: rusqlite::Error) -> HubError {
    HubError::Io {
        context: format!("database {}", path.display()),
        source: std::io::Error::other(e),
    }
}

impl HistoryLog {
    /// Opens (creating) the history in `db_path`, keeping at most `keep` entries.
    pub fn open(db_path: &Path, keep: u64) -> Result<Self, HubError> {
        let db = open_db(db_path)?;
        let reader = Mutex::new(open_db(db_path)?);
        if keep == 0 {
            return Ok(Self {
                tx: None,
                path: db_path.to_path_buf(),
                reader,
                keep,
                dropped: AtomicU64::new(0),
            });
        }
        // The writer alone skips fsync: WAL keeps the file consistent, and an OS crash costing
        // the last moments of history is a fair price for keeping recording off the disk's path.
        db.execute_batch("PRAGMA synchronous = OFF;")
            .map_err(|e| db_err(db_path, e))?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("troca-history".into())
            .spawn(move || writer(db, rx, keep))
            .map_err(|e| HubError::io("cannot start the history writer", e))?;
        Ok(Self {
            tx: Some(tx),
            path: db_path.to_path_buf(),
            reader,
            keep,
            dropped: AtomicU64::new(0),
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an entry; never blocks.
    pub fn record(&self, entry: Record) {
        let Some(tx) = &self.tx else { return };
        let sent = tx.try_send(Cmd::Record(entry));
        if let Err(TrySendError::Full(_)) = sent {
            // Say so, but not once per entry: the hub is overloaded already.
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n % 10_000 == 0 {
                tracing::warn!(
                    dropped = n + 1,
                    "history writer cannot keep up; entries dropped"
                );
            }
        }
    }

    /// Waits until everything queued so far is in the database. Blocking.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Cmd::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// The newest `limit` entries, optionally of one client name or one operation. Blocking.
    pub fn query(
        &self,
        limit: u32,
        client: Option<&str>,
        op: Option<&str>,
    ) -> Result<Vec<HistoryEntry>, HubError> {
        self.flush();
        let db = self.reader.lock().expect("history reader poisoned");
        let err = |e| db_err(&self.path, e);
        // Entries older than the retention may linger in a partly trimmed batch; they are not
        // part of the history any more.
        let oldest = next_seq(&db).map_err(err)? - self.keep as i64;
        let mut stmt = db
            .prepare("SELECT first, entries FROM request_batches ORDER BY id DESC")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut found = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let first: i64 = row.get(0).map_err(err)?;
            let text = row
                .get_ref(1)
                .map_err(err)?
                .as_str()
                .map_err(|e| err(e.into()))?;
            let batch: Vec<Loaded> = serde_json::from_str(text).map_err(|e| {
                err(rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                ))
            })?;
            for (i, e) in batch.into_iter().enumerate().rev() {
                if first + (i as i64) < oldest {
                    return Ok(found);
                }
                if client.is_some_and(|c| c != e.1) || op.is_some_and(|o| o != e.3) {
                    continue;
                }
                found.push(HistoryEntry {
                    time_ns: e.0,
                    client: e.1,
                    address: e.2,
                    op: e.3,
                    target: e.4,
                    ok: e.5,
                    error: e.6.unwrap_or_default(),
                    bytes: e.7,
                    duration_us: e.8,
                });
                if found.len() >= limit as usize {
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }
}

/// The writer thread: stores entries in batches, trims old ones, answers flushes.
///
/// It blocks only while the hub is idle. Under load it sleeps between batches and then takes
/// everything queued without waiting, so connections never have to wake it: a wake-up per entry
/// (a futex call and a context switch on the sender's side) cost more than the insert itself.
fn writer(mut db: Connection, rx: Receiver<Cmd>, keep: u64) {
    let mut next = match next_seq(&db) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the history; recording nothing");
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        loop {
            // Someone waiting on a flush is answered at once; otherwise let entries pile up.
            if !batch.iter().any(|c| matches!(c, Cmd::Flush(_))) {
                std::thread::sleep(LINGER);
            }
            batch.extend(rx.try_iter());
            if batch.is_empty() {
                break;
            }
            commit(&mut db, std::mem::take(&mut batch), keep, &mut next);
        }
    }
}

fn commit(db: &mut Connection, batch: Vec<Cmd>, keep: u64, next: &mut i64) {
    let mut flushes = Vec::new();
    let mut records = Vec::with_capacity(batch.len());
    for cmd in batch {
        match cmd {
            Cmd::Record(r) => records.push(r),
            Cmd::Flush(done) => flushes.push(done),
        }
    }
    let result = (|| -> rusqlite::Result<()> {
        let tx = db.transaction()?;
        let mut n = *next;
        for chunk in records.chunks(BATCH_MAX) {
            insert_batch(&tx, n, chunk)?;
            n += chunk.len() as i64;
        }
        // Drop the batches that hold nothing but entries past the retention: the oldest ones,
        // found by their key, so trimming never scans the table.
        let mut trim = tx.prepare_cached(
            "DELETE FROM request_batches
             WHERE id = (SELECT MIN(id) FROM request_batches) AND first + count <= ?1",
        )?;
        while trim.execute(params![n - keep as i64])? > 0 {}
        drop(trim);
        tx.commit()?;
        *next = n;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot record history");
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// A request on its way into the history: who asked what, and when. Finished once, with the
/// outcome, whichever way the request ends.
#[derive(Debug)]
pub struct Pending {
    pub client: Arc<str>,
    pub address: Arc<str>,
    pub op: &'static str,
    pub target: String,
    pub time_ns: i64,
    pub started: Instant,
}

impl Pending {
    pub fn new(client: Arc<str>, address: Arc<str>, op: &'static str, target: String) -> Self {
        Self {
            client,
            address,
            op,
            target,
            time_ns: now_ns(),
            started: Instant::now(),
        }
    }

    /// Records the request: the bytes it moved, or why it failed.
    pub fn finish(self, history: &HistoryLog, outcome: Result<u64, String>) {
        if !history.enabled() {
            return;
        }
        let (ok, error, bytes) = match outcome {
            Ok(bytes) => (true, String::new(), bytes),
            Err(e) => (false, e, 0),
        };
        history.record(Record {
            time_ns: self.time_ns,
            client: self.client,
            address: self.address,
            op: self.op,
            target: self.target,
            ok,
            error,
            bytes,
            duration_us: self.started.elapsed().as_micros() as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: i64, op: &'static str) -> Record {
        Record {
            time_ns: i,
            client: if i % 2 == 0 { "even" } else { "odd" }.into(),
            address: "127.0.0.1:1".into(),
            op,
            target: format!("f{i}"),
            ok: i % 3 != 0,
            error: String::new(),
            bytes: i as u64,
            duration_us: 1,
        }
    }

    #[test]
    fn entries_are_kept_newest_first_filtered_trimmed_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        {
            let log = HistoryLog::open(&path, 10).unwrap();
            for i in 0..25 {
                log.record(entry(i, if i < 20 { "get" } else { "put" }));
            }
            let all = log.query(100, None, None).unwrap();
            assert_eq!(all.len(), 10, "trimmed to the retention");
            assert_eq!(all[0].time_ns, 24, "newest first");
            let puts = log.query(100, None, Some("put")).unwrap();
            assert_eq!(puts.len(), 5);
            let even = log.query(100, Some("even"), None).unwrap();
            assert!(even.iter().all(|e| e.client == "even"));
        }
        let reopened = HistoryLog::open(&path, 10).unwrap();
        assert_eq!(reopened.query(3, None, None).unwrap().len(), 3);
    }

    #[test]
    fn entries_of_the_first_schema_are_kept_when_the_database_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        {
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE history (
                     id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, client TEXT NOT NULL,
                     address TEXT NOT NULL, op TEXT NOT NULL, target TEXT NOT NULL,
                     ok INTEGER NOT NULL, error TEXT NOT NULL, bytes INTEGER NOT NULL,
                     duration_us INTEGER NOT NULL);
                 INSERT INTO history VALUES (5, 10, 'ana', '10.0.0.1:5', 'put', 'a', 1, '', 3, 7);
                 INSERT INTO history VALUES (6, 20, 'bo', '10.0.0.2:6', 'rm', 'a', 0, 'denied', 0, 1);
                 INSERT INTO history VALUES (7, 30, 'ana', '10.0.0.1:5', 'get', 'a', 1, '', 3, 2);",
            )
            .unwrap();
        }
        let log = HistoryLog::open(&path, 10).unwrap();
        let all = log.query(10, None, None).unwrap();
        let seen: Vec<_> = all
            .iter()
            .map(|e| {
                (
                    e.time_ns,
                    e.client.as_str(),
                    e.op.as_str(),
                    e.ok,
                    e.error.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (30, "ana", "get", true, ""),
                (20, "bo", "rm", false, "denied"),
                (10, "ana", "put", true, ""),
            ]
        );
        assert_eq!(all[1].address, "10.0.0.2:6");
        assert_eq!((all[0].bytes, all[0].duration_us), (3, 2));
        // New entries follow the old ones; opening again migrates nothing twice.
        log.record(Record {
            error: "not_found: no file named \"a\" on the hub".into(),
            target: "ünï/\"quoted\"".into(),
            ..entry(40, "get")
        });
        log.flush();
        drop(log);
        let log = HistoryLog::open(&path, 10).unwrap();
        let all = log.query(10, None, None).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].time_ns, 40);
        assert_eq!(all[0].error, "not_found: no file named \"a\" on the hub");
        assert_eq!(all[0].target, "ünï/\"quoted\"");
        assert_eq!(log.query(10, Some("ana"), None).unwrap().len(), 2);
    }

    #[test]
    fn the_history_view_shows_one_row_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        let log = HistoryLog::open(&path, 100).unwrap();
        for i in 0..5 {
            log.record(entry(i, "get"));
        }
        log.flush();
        log.record(entry(5, "put"));
        log.flush();
        let db = Connection::open(&path).unwrap();
        let rows: Vec<(i64, i64, String, String, bool, Option<String>)> = db
            .prepare("SELECT seq, time_ns, client, op, ok, error FROM history ORDER BY seq")
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(rows[5].1, 5);
        assert_eq!(rows[5].3, "put");
        assert_eq!(rows[1].2, "odd");
        assert!(
            !rows[3].4 && rows[3].5.is_none(),
            "entry 3 failed without a message"
        );
    }

    #[test]
    fn old_batches_are_deleted_as_new_ones_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        let log = HistoryLog::open(&path, 3).unwrap();
        for i in 0..20 {
            log.record(entry(i, "get"));
            log.flush();
        }
        let kept = log.query(100, None, None).unwrap();
        assert_eq!(
            kept.iter().map(|e| e.time_ns).collect::<Vec<_>>(),
            [19, 18, 17]
        );
        let db = Connection::open(&path).unwrap();
        let batches: i64 = db
            .query_row("SELECT COUNT(*) FROM request_batches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(batches, 3, "one entry per batch here, three kept");
    }

    #[test]
    fn a_retention_of_zero_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = HistoryLog::open(&dir.path().join("db"), 0).unwrap();
        log.record(entry(1, "get"));
        assert!(log.query(10, None, None).unwrap().is_empty());
    }
}
