//! The request history in PostgreSQL: one row per request, every hub of the group writing to
//! the same table, so `troca history` on any hub shows them all. Recording never waits: entries
//! queue in memory (bounded; under overload the excess is dropped and counted) and a task
//! writes what has queued in one statement.

use crate::error::HubError;
use crate::pg::{block, db_err, Db};
use crate::records::{Entry, History, Page, PageQuery, MAX_SCAN};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use troca_proto::msg::HistoryEntry;

/// Entries waiting to be written, at most.
const QUEUE: usize = 100_000;
/// Rows written in one statement, at most.
const BATCH: usize = 2_000;
/// How long the writer lets entries gather after writing a few.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

/// The group's request history.
#[derive(Debug)]
pub struct PgHistory {
    db: Db,
    keep: u64,
    queue: Arc<Queue>,
}

/// An entry waiting to be written: its texts in one allocation.
#[derive(Debug)]
struct Queued {
    time_ns: i64,
    ok: bool,
    bytes: u64,
    duration_us: u64,
    /// client, address, op, target and error, one after the other; `ends` says where each ends.
    text: String,
    ends: [u32; 5],
}

impl Queued {
    fn new(e: &Entry<'_>) -> Self {
        let parts = [
            e.client,
            e.address,
            e.op,
            e.target,
            e.error.unwrap_or_default(),
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 5];
        for (i, p) in parts.iter().enumerate() {
            text.push_str(p);
            ends[i] = text.len() as u32;
        }
        Self {
            time_ns: e.time_ns,
            ok: e.ok,
            bytes: e.bytes,
            duration_us: e.duration_us,
            text,
            ends,
        }
    }

    /// Text `i` (0 client, 1 address, 2 op, 3 target, 4 error).
    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

#[derive(Debug, Default)]
struct Queue {
    entries: Mutex<Vec<Queued>>,
    /// Wakes the writer.
    added: Notify,
    /// Entries queued so far, and written so far (for `flush`).
    appended: AtomicU64,
    written: AtomicU64,
    done: Notify,
    dropped: AtomicU64,
}

impl PgHistory {
    /// Starts the writer (on the current runtime); keeps the newest `keep` entries.
    pub fn new(db: Db, keep: u64) -> Self {
        let queue = Arc::<Queue>::default();
        if keep > 0 {
            tokio::spawn(writer(db.clone(), Arc::clone(&queue), keep));
        }
        Self { db, keep, queue }
    }
}

async fn writer(db: Db, queue: Arc<Queue>, keep: u64) {
    let mut since_trim = 0usize;
    loop {
        let notified = queue.added.notified();
        let batch: Vec<Queued> = {
            let mut q = queue.entries.lock().expect("history queue poisoned");
            let n = q.len().min(BATCH);
            q.drain(..n).collect()
        };
        if batch.is_empty() {
            // Woken by a flush, or by the first entry after an idle spell; under load, entries
            // are gathered for a moment so each statement carries many.
            notified.await;
            continue;
        }
        let n = batch.len() as u64;
        if let Err(e) = insert(&db, &batch).await {
            tracing::warn!(error = %e, lost = n, "cannot record requests");
        }
        since_trim += batch.len();
        if since_trim >= 10_000 {
            since_trim = 0;
            let _ = trim(&db, keep).await;
        }
        queue.written.fetch_add(n, Ordering::SeqCst);
        queue.done.notify_waiters();
        if n < BATCH as u64 {
            tokio::time::sleep(GATHER).await;
        }
    }
}

async fn insert(db: &Db, batch: &[Queued]) -> Result<(), HubError> {
    let c = db.get().await?;
    let text = |i: usize| batch.iter().map(|e| e.part(i)).collect::<Vec<_>>();
    let int = |f: &dyn Fn(&Queued) -> i64| batch.iter().map(f).collect::<Vec<_>>();
    let oks: Vec<bool> = batch.iter().map(|e| e.ok).collect();
    // One statement for the batch: arrays unnested into rows, in the order they arrived.
    c.execute(
        "INSERT INTO requests (time_ns, client, address, op, target, ok, error, bytes, duration_us)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::boolean[], $7::text[], $8::bigint[], $9::bigint[])",
        &[
            &int(&|e| e.time_ns),
            &text(0),
            &text(1),
            &text(2),
            &text(3),
            &oks,
            &text(4),
            &int(&|e| e.bytes as i64),
            &int(&|e| e.duration_us as i64),
        ],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn trim(db: &Db, keep: u64) -> Result<(), HubError> {
    let c = db.get().await?;
    c.execute(
        "DELETE FROM requests WHERE id <= (SELECT max(id) FROM requests) - $1",
        &[&(keep as i64)],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

impl History for PgHistory {
    fn enabled(&self) -> bool {
        self.keep > 0
    }

    fn append(&self, e: &Entry<'_>) {
        if self.keep == 0 {
            return;
        }
        {
            let mut q = self.queue.entries.lock().expect("history queue poisoned");
            if q.len() >= QUEUE {
                let n = self.queue.dropped.fetch_add(1, Ordering::Relaxed);
                if n % 10_000 == 0 {
                    tracing::warn!(dropped = n + 1, "history cannot keep up; entries dropped");
                }
                return;
            }
            q.push(Queued::new(e));
            self.queue.appended.fetch_add(1, Ordering::SeqCst);
            // Only the first entry after the writer emptied the queue wakes it.
            if q.len() > 1 {
                return;
            }
        }
        self.queue.added.notify_one();
    }

    /// Waits until every entry appended so far is written. Blocking.
    fn flush(&self) {
        if self.keep == 0 {
            return;
        }
        let target = self.queue.appended.load(Ordering::SeqCst);
        let queue = Arc::clone(&self.queue);
        block(async move {
            loop {
                let done = queue.done.notified();
                if queue.written.load(Ordering::SeqCst) >= target {
                    return;
                }
                queue.added.notify_one();
                // A lost wake-up costs at most this long.
                let _ = tokio::time::timeout(std::time::Duration::from_millis(50), done).await;
            }
        });
    }

    /// Newest first, at most [`MAX_SCAN`] rows looked at per page.
    fn backlog(&self) -> crate::records::Backlog {
        let q = &self.queue;
        crate::records::Backlog {
            queued: q.entries.lock().expect("history queue poisoned").len() as u64,
            dropped: q.dropped.load(Ordering::Relaxed),
        }
    }

    fn query(&self, query: &PageQuery) -> Result<Page, HubError> {
        let limit = i64::from(query.limit.min(troca_proto::msg::MAX_HISTORY_PAGE));
        if limit == 0 {
            return Ok(Page::default());
        }
        self.flush();
        block(async {
            let c = self.db.get().await?;
            let top: i64 = match query.before {
                0 => c
                    .query_one("SELECT coalesce(max(id), 0) + 1 FROM requests", &[])
                    .await
                    .map_err(db_err)?
                    .get(0),
                b => b as i64,
            };
            let floor = top - MAX_SCAN as i64;
            let rows = c
                .query(
                    "SELECT id, time_ns, client, address, op, target, ok, error, bytes, duration_us
                     FROM requests
                     WHERE id < $1 AND id >= $2
                       AND ($3::text IS NULL OR client = $3) AND ($4::text IS NULL OR op = $4)
                     ORDER BY id DESC LIMIT $5",
                    &[&top, &floor, &query.client, &query.op, &limit],
                )
                .await
                .map_err(db_err)?;
            let entries: Vec<HistoryEntry> = rows.iter().map(row_entry).collect();
            let next = if entries.len() as i64 == limit {
                entries.last().map_or(0, |e| e.id)
            } else {
                // Scanned the whole window: go on below it if anything is there.
                let older: Option<i64> = c
                    .query_one("SELECT max(id) FROM requests WHERE id < $1", &[&floor])
                    .await
                    .map_err(db_err)?
                    .get(0);
                older.map_or(0, |_| floor.max(0) as u64)
            };
            Ok(Page { entries, next })
        })
    }
}

fn row_entry(r: &tokio_postgres::Row) -> HistoryEntry {
    HistoryEntry {
        id: r.get::<_, i64>(0) as u64,
        time_ns: r.get(1),
        client: r.get(2),
        address: r.get(3),
        op: r.get(4),
        target: r.get(5),
        ok: r.get(6),
        error: r.get(7),
        bytes: r.get::<_, i64>(8) as u64,
        duration_us: r.get::<_, i64>(9) as u64,
    }
}
