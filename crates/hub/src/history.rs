//! The request history, in SQLite under the state folder so it survives restarts.
//!
//! Recording never waits on the disk: connections hand entries to a writer thread, which inserts
//! them in batches (one transaction per batch) and trims the table to the configured number of
//! entries. Queries first ask the writer to flush, so a client sees its own requests.

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
    let db = Connection::open(path).map_err(|e| db_err(path, e))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         -- A plain rowid key (no AUTOINCREMENT) and no secondary index: each insert touches one
         -- B-tree. Queries read newest-first and stop after `limit` matches.
         CREATE TABLE IF NOT EXISTS history (
             id INTEGER PRIMARY KEY,
             time_ns INTEGER NOT NULL,
             client TEXT NOT NULL,
             address TEXT NOT NULL,
             op TEXT NOT NULL,
             target TEXT NOT NULL,
             ok INTEGER NOT NULL,
             error TEXT NOT NULL,
             bytes INTEGER NOT NULL,
             duration_us INTEGER NOT NULL
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
    Ok(db)
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
        let mut stmt = db
            .prepare(
                "SELECT time_ns, client, address, op, target, ok, error, bytes, duration_us
                 FROM history
                 WHERE (?1 IS NULL OR client = ?1) AND (?2 IS NULL OR op = ?2)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(|e| db_err(&self.path, e))?;
        let rows = stmt
            .query_map(params![client, op, limit], |r| {
                Ok(HistoryEntry {
                    time_ns: r.get(0)?,
                    client: r.get(1)?,
                    address: r.get(2)?,
                    op: r.get(3)?,
                    target: r.get(4)?,
                    ok: r.get(5)?,
                    error: r.get(6)?,
                    bytes: r.get::<_, i64>(7)? as u64,
                    duration_us: r.get::<_, i64>(8)? as u64,
                })
            })
            .map_err(|e| db_err(&self.path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| db_err(&self.path, e))
    }
}

/// The writer thread: batches entries into transactions, trims old ones, answers flushes.
///
/// It blocks only while the hub is idle. Under load it sleeps between batches and then takes
/// everything queued without waiting, so connections never have to wake it: a wake-up per entry
/// (a futex call and a context switch on the sender's side) cost more than the insert itself.
fn writer(mut db: Connection, rx: Receiver<Cmd>, keep: u64) {
    let mut since_trim = 0u64;
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
            commit(&mut db, std::mem::take(&mut batch), keep, &mut since_trim);
        }
    }
}

/// Rows per INSERT statement: one statement per row spends most of its time setting up and
/// stepping the statement, not storing the row.
const ROWS_PER_INSERT: usize = 64;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO history (time_ns, client, address, op, target, ok, error, bytes, duration_us) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?)");
    }
    sql
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, rows: &[Record]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(&insert_sql(rows.len()))?;
    let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 9);
    let numbers: Vec<(i64, i64)> = rows
        .iter()
        .map(|e| (e.bytes as i64, e.duration_us as i64))
        .collect();
    let texts: Vec<(&str, &str)> = rows.iter().map(|e| (&*e.client, &*e.address)).collect();
    for (i, e) in rows.iter().enumerate() {
        params.push(&e.time_ns);
        params.push(&texts[i].0);
        params.push(&texts[i].1);
        params.push(&e.op);
        params.push(&e.target);
        params.push(&e.ok);
        params.push(&e.error);
        params.push(&numbers[i].0);
        params.push(&numbers[i].1);
    }
    stmt.execute(params.as_slice())?;
    Ok(())
}

fn commit(db: &mut Connection, batch: Vec<Cmd>, keep: u64, since_trim: &mut u64) {
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
        for rows in records.chunks(ROWS_PER_INSERT) {
            insert_rows(&tx, rows)?;
        }
        *since_trim += records.len() as u64;
        // Trim now and then, not on every batch.
        if *since_trim >= 1024 || !flushes.is_empty() {
            tx.execute(
                "DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?1",
                params![keep as i64],
            )?;
            *since_trim = 0;
        }
        tx.commit()
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
    fn a_retention_of_zero_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = HistoryLog::open(&dir.path().join("db"), 0).unwrap();
        log.record(entry(1, "get"));
        assert!(log.query(10, None, None).unwrap().is_empty());
    }
}
