//! The request history, in SQLite under the state folder so it survives restarts.
//!
//! Recording never waits on the disk: a connection appends its entry, as JSON, to one of a few
//! in-memory spools (the one of its thread, so locks are rarely contended and nothing crosses
//! between threads per request), and a writer thread stores what has gathered every few tens of
//! milliseconds, in one transaction, then trims the log to the configured number of entries.
//! Queries first ask the writer to flush, so a client sees its own requests.
//!
//! Entries are stored in batches, one row of `request_batches` per batch holding a JSON array of
//! entries. A row per request cost ~1.6 µs of the writer's CPU per request inside a busy hub (6% of
//! what a 4 KiB download costs it); a batch row costs a fraction of that, and the history is
//! written far more often than it is read. The `history` view turns the batches back into one row
//! per request for anyone looking with `sqlite3`.

use super::{db_err, open_db};
use crate::error::HubError;
use crate::records::{Entry, History, Page, PageQuery, MAX_SCAN};
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use troca_proto::msg::{HistoryEntry, MAX_HISTORY_PAGE};

/// Entries waiting for the writer. Past this, entries are dropped (and counted) rather than
/// slowing the connections down.
const QUEUE: usize = 131_072;

/// How long the writer gathers entries before committing them.
const LINGER: std::time::Duration = std::time::Duration::from_millis(50);

/// Spools: more than the threads that serve connections on most machines, so each thread
/// usually has one to itself.
const SPOOLS: usize = 8;

/// Entries recorded and not yet stored: their JSON back to back, and for each its start time and
/// where it ends.
#[derive(Debug, Default)]
struct Spooled {
    json: Vec<u8>,
    entries: Vec<(i64, usize)>,
}

/// A spool on a cache line of its own, so two threads appending to neighbours do not slow
/// each other down.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Spool(Mutex<Spooled>);

#[derive(Debug)]
struct Spools {
    spools: [Spool; SPOOLS],
    /// Set by the writer before it blocks with nothing to do; whoever records next wakes it.
    idle: AtomicBool,
}

impl Spools {
    fn is_empty(&self) -> bool {
        self.spools.iter().all(|s| {
            s.0.lock()
                .expect("history spool poisoned")
                .entries
                .is_empty()
        })
    }
}

#[derive(Debug)]
enum Cmd {
    /// Entries arrived while the writer was idle.
    Wake,
    /// Store everything recorded so far, then answer.
    Flush(SyncSender<()>),
}

/// The request history in SQLite. With a retention of 0 it records nothing.
#[derive(Debug)]
pub struct SqliteHistory {
    spools: Option<Arc<Spools>>,
    tx: Option<SyncSender<Cmd>>,
    path: PathBuf,
    reader: Mutex<Connection>,
    keep: u64,
    dropped: AtomicU64,
}

/// The spool of the calling thread.
fn my_spool() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SPOOLS;
    }
    MINE.with(|m| *m)
}

/// Moves the entries of the first schema's `history` table (one row per request) into batches,
/// once. Safe against another process opening the database at the same moment: the check and
/// the move are one immediate transaction.
pub(super) fn migrate_flat_history(db: &mut Connection) -> rusqlite::Result<()> {
    let flat = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'";
    if !db.prepare(flat)?.exists([])? {
        return Ok(());
    }
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if tx.prepare(flat)?.exists([])? {
        let old: Vec<Loaded> = tx
            .prepare(
                "SELECT time_ns, client, address, op, target, ok, NULLIF(error, ''), bytes,
                        duration_us
                 FROM history ORDER BY id",
            )?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get::<_, i64>(7)? as u64,
                    r.get::<_, i64>(8)? as u64,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut next = next_seq(&tx)?;
        let mut text = Vec::new();
        for batch in old.chunks(BATCH_MAX) {
            let json: Vec<Vec<u8>> = batch
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<_, _>>()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            batch_text(&mut text, json.iter().map(Vec::as_slice));
            insert_batch(&tx, next, batch.len(), &text)?;
            next += batch.len() as i64;
        }
        tx.execute_batch("DROP TABLE history;")?;
    }
    tx.commit()
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

/// One entry as stored: a JSON array, in the order the `history` view names its columns. This
/// and [`Loaded`] are the storage format, and [`stored`] and [`loaded`] the only code that
/// knows the order.
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

fn stored<'a>(e: &Entry<'a>) -> Stored<'a> {
    (
        e.time_ns,
        e.client,
        e.address,
        e.op,
        e.target,
        e.ok,
        e.error,
        e.bytes,
        e.duration_us,
    )
}

fn loaded(seq: i64, e: Loaded) -> HistoryEntry {
    let (time_ns, client, address, op, target, ok, error, bytes, duration_us) = e;
    HistoryEntry {
        id: seq as u64,
        time_ns,
        client,
        address,
        op,
        target,
        ok,
        error: error.unwrap_or_default(),
        bytes,
        duration_us,
    }
}

/// Puts entries' JSON together as one JSON array.
fn batch_text<'a>(text: &mut Vec<u8>, entries: impl Iterator<Item = &'a [u8]>) {
    text.clear();
    text.push(b'[');
    for (i, json) in entries.enumerate() {
        if i > 0 {
            text.push(b',');
        }
        text.extend_from_slice(json);
    }
    text.push(b']');
}

fn insert_batch(db: &Connection, first: i64, count: usize, text: &[u8]) -> rusqlite::Result<()> {
    // Our own serde_json output: UTF-8 by construction.
    let text = std::str::from_utf8(text).map_err(|e| rusqlite::Error::Utf8Error(0, e))?;
    db.prepare_cached("INSERT INTO request_batches (first, count, entries) VALUES (?1, ?2, ?3)")?
        .execute(params![first, count as i64, text])?;
    Ok(())
}

impl SqliteHistory {
    /// Opens (creating) the history in `db_path`, keeping at most `keep` entries.
    pub fn open(db_path: &Path, keep: u64) -> Result<Self, HubError> {
        let db = open_db(db_path)?;
        let reader = Mutex::new(open_db(db_path)?);
        let mut log = Self {
            spools: None,
            tx: None,
            path: db_path.to_path_buf(),
            reader,
            keep,
            dropped: AtomicU64::new(0),
        };
        if keep == 0 {
            return Ok(log);
        }
        // The writer alone skips fsync: WAL keeps the file consistent, and an OS crash costing
        // the last moments of history is a fair price for keeping recording off the disk's path.
        db.execute_batch("PRAGMA synchronous = OFF;")
            .map_err(|e| db_err(db_path, e))?;
        let spools = Arc::new(Spools {
            spools: Default::default(),
            idle: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(SPOOLS + 16);
        let theirs = Arc::clone(&spools);
        std::thread::Builder::new()
            .name("troca-history".into())
            .spawn(move || writer(db, &theirs, rx, keep))
            .map_err(|e| HubError::io("cannot start the history writer", e))?;
        log.spools = Some(spools);
        log.tx = Some(tx);
        Ok(log)
    }
}

impl History for SqliteHistory {
    fn enabled(&self) -> bool {
        self.spools.is_some()
    }

    /// Records an entry; never blocks on the writer.
    fn append(&self, entry: &Entry<'_>) {
        let (Some(spools), Some(tx)) = (&self.spools, &self.tx) else {
            return;
        };
        {
            let mut spool = spools.spools[my_spool()]
                .0
                .lock()
                .expect("history spool poisoned");
            if spool.entries.len() >= QUEUE / SPOOLS {
                drop(spool);
                // Say so, but not once per entry: the hub is overloaded already.
                let n = self.dropped.fetch_add(1, Ordering::Relaxed);
                if n % 10_000 == 0 {
                    tracing::warn!(
                        dropped = n + 1,
                        "history writer cannot keep up; entries dropped"
                    );
                }
                return;
            }
            let spool = &mut *spool;
            serde_json::to_writer(&mut spool.json, &stored(entry)).expect("a Vec takes any write");
            spool.entries.push((entry.time_ns, spool.json.len()));
        }
        // Only the first entry after the writer went idle pays for waking it.
        if spools.idle.load(Ordering::SeqCst) && spools.idle.swap(false, Ordering::SeqCst) {
            let _ = tx.try_send(Cmd::Wake);
        }
    }

    /// Waits until everything recorded so far is in the database. Blocking.
    fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (done_tx, done_rx) = sync_channel(1);
        if tx.send(Cmd::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }

    /// One page of the history: up to `query.limit` entries (at most [`MAX_HISTORY_PAGE`]) older
    /// than `query.before`, newest first, optionally of one client name or one operation.
    /// Batches are read one at a time, newest first, and at most [`MAX_SCAN`] entries are looked
    /// at, so a request holds one page and one batch in memory and takes a bounded time whatever
    /// the history's size; the answer says where the next page starts. Blocking.
    fn backlog(&self) -> crate::records::Backlog {
        let queued = self.spools.as_ref().map_or(0, |s| {
            s.spools
                .iter()
                .map(|sp| sp.0.lock().expect("history spool poisoned").entries.len() as u64)
                .sum()
        });
        crate::records::Backlog {
            queued,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn query(&self, query: &PageQuery) -> Result<Page, HubError> {
        let limit = query.limit.min(MAX_HISTORY_PAGE) as usize;
        let mut page = Page::default();
        if limit == 0 {
            return Ok(page);
        }
        self.flush();
        let db = self.reader.lock().expect("history reader poisoned");
        let err = |e| db_err(&self.path, e);
        // Entries older than the retention may linger in a partly trimmed batch; they are not
        // part of the history any more.
        let oldest = next_seq(&db).map_err(err)? - self.keep as i64;
        let before = match i64::try_from(query.before) {
            Ok(0) | Err(_) => i64::MAX,
            Ok(b) => b,
        };
        let mut stmt = db
            .prepare(
                "SELECT first, entries FROM request_batches WHERE first < ?1 ORDER BY first DESC",
            )
            .map_err(err)?;
        let mut rows = stmt.query([before]).map_err(err)?;
        let mut scanned = 0;
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
                let e = loaded(first + i as i64, e);
                let seq = first + i as i64;
                if seq >= before {
                    continue;
                }
                if seq < oldest {
                    return Ok(page);
                }
                scanned += 1;
                if query.matches(&e) {
                    page.entries.push(e);
                }
                if page.entries.len() >= limit || scanned >= MAX_SCAN {
                    page.next = seq as u64;
                    return Ok(page);
                }
            }
        }
        Ok(page)
    }
}

/// The writer thread: stores what the spools gathered, trims old entries, answers flushes.
///
/// Under load it wakes every [`LINGER`] (or at once for a flush) and takes everything gathered,
/// so connections never have to wake it: a wake-up per entry (a futex call and a context switch
/// on the recording side) would cost more than storing the entry. With nothing to do it blocks
/// until the next entry or flush.
fn writer(mut db: Connection, spools: &Spools, rx: Receiver<Cmd>, keep: u64) {
    let mut next = match next_seq(&db) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the history; recording nothing");
            return;
        }
    };
    let mut taken: Vec<Spooled> = (0..SPOOLS).map(|_| Spooled::default()).collect();
    let mut held = Held::default();
    let mut flushes: Vec<SyncSender<()>> = Vec::new();
    loop {
        let mut closed = false;
        if flushes.is_empty() {
            // Entries held back (the disk was full) are tried again every second.
            let wait = if held.entries.is_empty() {
                LINGER
            } else {
                RETRY
            };
            match rx.recv_timeout(wait) {
                Ok(Cmd::Flush(done)) => flushes.push(done),
                Ok(Cmd::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        flushes.extend(rx.try_iter().filter_map(|c| match c {
            Cmd::Flush(done) => Some(done),
            Cmd::Wake => None,
        }));
        // Swap each spool for an empty one (keeping the buffers' capacity), then store.
        for (spool, mine) in spools.spools.iter().zip(&mut taken) {
            std::mem::swap(&mut *spool.0.lock().expect("history spool poisoned"), mine);
        }
        let stored = commit(&mut db, &mut taken, &mut held, keep, &mut next);
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if closed {
            return;
        }
        if stored == 0 && held.entries.is_empty() {
            // Idle. Announce it first, then look again: an entry recorded meanwhile either
            // shows up now or sees the flag and wakes us.
            spools.idle.store(true, Ordering::SeqCst);
            if spools.is_empty() {
                match rx.recv() {
                    Ok(Cmd::Flush(done)) => flushes.push(done),
                    Ok(Cmd::Wake) => {}
                    Err(_) => return,
                }
            }
            spools.idle.store(false, Ordering::SeqCst);
        }
    }
}

/// How often entries held back by a failed write are tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Entries whose write failed (a full disk, most likely), kept in memory, at most [`QUEUE`] of
/// them (the oldest go first), until a write succeeds.
#[derive(Debug, Default)]
struct Held {
    entries: Vec<(i64, Vec<u8>)>,
    /// Entries given up because too many were held.
    dropped: u64,
}

/// Stores the held and taken entries in start-time order, in batches, and trims; returns how
/// many there were. On failure they are held for the next try. Leaves the spools empty for
/// reuse.
fn commit(
    db: &mut Connection,
    taken: &mut [Spooled],
    held: &mut Held,
    keep: u64,
    next: &mut i64,
) -> usize {
    let mut order: Vec<(i64, &[u8])> = held.entries.iter().map(|(t, j)| (*t, &j[..])).collect();
    for spool in taken.iter() {
        let mut start = 0;
        for &(time_ns, end) in &spool.entries {
            order.push((time_ns, &spool.json[start..end]));
            start = end;
        }
    }
    let count = order.len();
    if count > 0 {
        order.sort_by_key(|&(time_ns, _)| time_ns);
        let result = (|| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            let mut n = *next;
            let mut text = Vec::new();
            for chunk in order.chunks(BATCH_MAX) {
                batch_text(&mut text, chunk.iter().map(|&(_, json)| json));
                insert_batch(&tx, n, chunk.len(), &text)?;
                n += chunk.len() as i64;
            }
            trim(&tx, n - keep as i64)?;
            tx.commit()?;
            *next = n;
            Ok(())
        })();
        match result {
            Ok(()) if !held.entries.is_empty() => {
                tracing::info!(entries = held.entries.len(), "history written again");
                held.entries.clear();
            }
            Ok(()) => {}
            Err(e) => {
                if held.entries.is_empty() {
                    tracing::warn!(error = %e, "cannot record history; holding entries in memory");
                }
                let mut kept: Vec<(i64, Vec<u8>)> =
                    order.iter().map(|&(t, j)| (t, j.to_vec())).collect();
                if kept.len() > QUEUE {
                    let over = kept.len() - QUEUE;
                    kept.drain(..over);
                    held.dropped += over as u64;
                    tracing::warn!(
                        dropped = held.dropped,
                        "history entries dropped: held too long"
                    );
                }
                held.entries = kept;
            }
        }
    }
    for spool in taken.iter_mut() {
        spool.json.clear();
        spool.entries.clear();
    }
    count
}

/// Drops the batches that hold nothing but entries numbered below `oldest`: the oldest ones,
/// found by their key, so trimming never scans the table.
fn trim(db: &Connection, oldest: i64) -> rusqlite::Result<()> {
    let mut stmt = db.prepare_cached(
        "DELETE FROM request_batches
         WHERE id = (SELECT MIN(id) FROM request_batches) AND first + count <= ?1",
    )?;
    while stmt.execute(params![oldest])? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The first page of a query, its entries only.
    fn q(
        log: &SqliteHistory,
        limit: u32,
        client: Option<&str>,
        op: Option<&str>,
    ) -> Vec<HistoryEntry> {
        let query = PageQuery {
            limit,
            before: 0,
            client: client.map(str::to_owned),
            op: op.map(str::to_owned),
        };
        log.query(&query).unwrap().entries
    }

    use super::*;

    /// An entry as a test makes it (owned, unlike [`Entry`]).
    struct Record {
        time_ns: i64,
        client: &'static str,
        op: &'static str,
        target: String,
        ok: bool,
        error: String,
        bytes: u64,
    }

    fn entry(i: i64, op: &'static str) -> Record {
        Record {
            time_ns: i,
            client: if i % 2 == 0 { "even" } else { "odd" },
            op,
            target: format!("f{i}"),
            ok: i % 3 != 0,
            error: String::new(),
            bytes: i as u64,
        }
    }

    trait RecordIt {
        fn record(&self, r: Record);
    }

    impl RecordIt for SqliteHistory {
        fn record(&self, r: Record) {
            self.append(&Entry {
                time_ns: r.time_ns,
                client: r.client,
                address: "127.0.0.1:1",
                op: r.op,
                target: &r.target,
                ok: r.ok,
                error: (!r.error.is_empty()).then_some(r.error.as_str()),
                bytes: r.bytes,
                duration_us: 1,
            });
        }
    }

    #[test]
    fn pages_are_bounded_walk_everything_once_and_a_scan_stops_early() {
        let dir = tempfile::tempdir().unwrap();
        let log = SqliteHistory::open(&dir.path().join("troca.db"), 1_000_000).unwrap();
        let total = MAX_SCAN as i64 + 2_500;
        for i in 0..total {
            log.record(entry(i, if i == 5 { "put" } else { "get" }));
            if i % 8_192 == 0 {
                log.flush(); // One thread's spool holds a part of the queue.
            }
        }
        let page = |limit, before, op: Option<&str>| {
            let query = PageQuery {
                limit,
                before,
                client: None,
                op: op.map(str::to_owned),
            };
            log.query(&query).unwrap()
        };
        // However many are asked for, a page holds at most MAX_HISTORY_PAGE.
        let first = page(u32::MAX, 0, None);
        assert_eq!(first.entries.len(), MAX_HISTORY_PAGE as usize);
        assert_eq!(first.entries[0].time_ns, total - 1, "newest first");
        assert_eq!(first.next, first.entries.last().unwrap().id);
        // Following the cursor visits every entry once, in order.
        let (mut seen, mut before, mut last_id) = (0, 0, u64::MAX);
        loop {
            let p = page(1_000, before, None);
            for e in &p.entries {
                assert!(e.id < last_id);
                last_id = e.id;
            }
            seen += p.entries.len() as i64;
            if p.next == 0 {
                break;
            }
            before = p.next;
        }
        assert_eq!(seen, total);
        // A filter matching one old entry: the first page gives up after MAX_SCAN entries and
        // says where to go on; the next page finds it.
        let p = page(10, 0, Some("put"));
        assert!(p.entries.is_empty());
        assert_ne!(p.next, 0);
        let p = page(10, p.next, Some("put"));
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].time_ns, 5);
        assert!(
            page(0, 0, None).entries.is_empty(),
            "limit 0 asks for nothing"
        );
    }

    #[test]
    fn entries_are_kept_newest_first_filtered_trimmed_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        {
            let log = SqliteHistory::open(&path, 10).unwrap();
            for i in 0..25 {
                log.record(entry(i, if i < 20 { "get" } else { "put" }));
            }
            let all = q(&log, 100, None, None);
            assert_eq!(all.len(), 10, "trimmed to the retention");
            assert_eq!(all[0].time_ns, 24, "newest first");
            let puts = q(&log, 100, None, Some("put"));
            assert_eq!(puts.len(), 5);
            let even = q(&log, 100, Some("even"), None);
            assert!(even.iter().all(|e| e.client == "even"));
        }
        let reopened = SqliteHistory::open(&path, 10).unwrap();
        assert_eq!(q(&reopened, 3, None, None).len(), 3);
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
        let log = SqliteHistory::open(&path, 10).unwrap();
        let all = q(&log, 10, None, None);
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
        let log = SqliteHistory::open(&path, 10).unwrap();
        let all = q(&log, 10, None, None);
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].time_ns, 40);
        assert_eq!(all[0].error, "not_found: no file named \"a\" on the hub");
        assert_eq!(all[0].target, "ünï/\"quoted\"");
        assert_eq!(q(&log, 10, Some("ana"), None).len(), 2);
    }

    #[test]
    fn the_history_view_shows_one_row_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("troca.db");
        let log = SqliteHistory::open(&path, 100).unwrap();
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
        let log = SqliteHistory::open(&path, 3).unwrap();
        for i in 0..20 {
            log.record(entry(i, "get"));
            log.flush();
        }
        let kept = q(&log, 100, None, None);
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
        let log = SqliteHistory::open(&dir.path().join("db"), 0).unwrap();
        log.record(entry(1, "get"));
        assert!(q(&log, 10, None, None).is_empty());
    }
}
