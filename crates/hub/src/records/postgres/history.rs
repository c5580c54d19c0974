//! The request history in PostgreSQL, every hub of the group writing to the same tables, so
//! `troca history` on any hub shows them all. Entries are kept in blocks: a row holds the
//! entries one hub wrote at once, encoded one after another ([`block`]), numbered from the
//! row's `first`. A row per request cost the database as much CPU as the hub spent serving
//! the request; a block costs it a small part of a microsecond an entry. Recording never waits:
//! entries are encoded into the block being filled (bounded; under overload the excess is
//! dropped and counted) and a task writes what has gathered in one statement.

use super::block;
use crate::error::HubError;
use crate::pg::{self, db_err, Db};
use crate::records::{Entry, History, Page, PageQuery, MAX_SCAN};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Entries waiting to be written, at most.
const QUEUE: usize = 100_000;
/// Their encoded bytes, at most.
const QUEUE_BYTES: usize = 32 << 20;
/// Entries in one block, at most: a page of the history reads whole blocks.
const BLOCK: u32 = 2_000;
/// How long the writer lets entries gather after writing a few.
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);
/// Blocks read at a time while a page is gathered.
const READ_BLOCKS: i64 = 4;

/// The group's request history.
#[derive(Debug)]
pub struct PgHistory {
    db: Db,
    keep: u64,
    queue: Arc<Queue>,
}

/// Entries encoded, in order, waiting to be written.
#[derive(Debug, Default)]
struct Waiting {
    blocks: Vec<Filling>,
    entries: usize,
    bytes: usize,
}

/// A block being filled.
#[derive(Debug, Default)]
struct Filling {
    data: Vec<u8>,
    count: u32,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Mutex<Waiting>,
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
        let taken = std::mem::take(&mut *queue.waiting.lock().expect("history queue poisoned"));
        if taken.entries == 0 {
            // Woken by a flush, or by the first entry after an idle spell; under load, entries
            // are gathered for a moment so each statement carries many.
            notified.await;
            continue;
        }
        let n = taken.entries as u64;
        let mut inserted = insert(&db, &taken.blocks).await;
        if let Err(HubError::ConnectionEnded(why)) = &inserted {
            db.recover(why).await;
            inserted = insert(&db, &taken.blocks).await;
        }
        if let Err(e) = inserted {
            tracing::warn!(error = %e, lost = n, "cannot record requests");
        }
        since_trim += taken.entries;
        if since_trim >= 10_000 {
            since_trim = 0;
            let _ = trim(&db, keep).await;
        }
        queue.written.fetch_add(n, Ordering::SeqCst);
        queue.done.notify_waiters();
        if n < u64::from(BLOCK) {
            tokio::time::sleep(GATHER).await;
        }
    }
}

/// Writes the blocks in one statement. Their ids are taken from `request_ids`, whose row stays
/// locked until the statement commits: blocks commit in the order of their ids, whichever hub
/// writes them, so a reader never sees a later block before an earlier one.
async fn insert(db: &Db, blocks: &[Filling]) -> Result<(), HubError> {
    let c = db.get().await?;
    let total: i64 = blocks.iter().map(|b| i64::from(b.count)).sum();
    let mut skips = Vec::with_capacity(blocks.len());
    let mut skipped = 0i64;
    for b in blocks {
        skips.push(skipped);
        skipped += i64::from(b.count);
    }
    let counts: Vec<i32> = blocks.iter().map(|b| b.count as i32).collect();
    let data: Vec<&[u8]> = blocks.iter().map(|b| b.data.as_slice()).collect();
    c.execute(
        "WITH ids AS (UPDATE request_ids SET next = next + $1 RETURNING next - $1 AS base)
         INSERT INTO request_blocks (first, count, entries)
         SELECT ids.base + b.skip, b.count, b.entries
         FROM ids, unnest($2::bigint[], $3::integer[], $4::bytea[]) AS b (skip, count, entries)",
        &[&total, &skips, &counts, &data],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Deletes the blocks whose entries are all older than the newest `keep`.
async fn trim(db: &Db, keep: u64) -> Result<(), HubError> {
    let c = db.get().await?;
    c.execute(
        "DELETE FROM request_blocks
         WHERE first + count <= (SELECT next FROM request_ids) - $1",
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
            let mut w = self.queue.waiting.lock().expect("history queue poisoned");
            if w.entries >= QUEUE || w.bytes >= QUEUE_BYTES {
                drop(w);
                let n = self.queue.dropped.fetch_add(1, Ordering::Relaxed);
                if n % 10_000 == 0 {
                    tracing::warn!(dropped = n + 1, "history cannot keep up; entries dropped");
                }
                return;
            }
            if w.blocks.last().is_none_or(|b| b.count >= BLOCK) {
                w.blocks.push(Filling::default());
            }
            let filling = w.blocks.last_mut().expect("a block is being filled");
            let before = filling.data.len();
            block::encode(&mut filling.data, e);
            filling.count += 1;
            let added = filling.data.len() - before;
            w.entries += 1;
            w.bytes += added;
            self.queue.appended.fetch_add(1, Ordering::SeqCst);
            // Only the first entry after the writer emptied the queue wakes it.
            if w.entries > 1 {
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
        pg::block(async move {
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

    fn backlog(&self) -> crate::records::Backlog {
        let q = &self.queue;
        crate::records::Backlog {
            queued: q.waiting.lock().expect("history queue poisoned").entries as u64,
            dropped: q.dropped.load(Ordering::Relaxed),
        }
    }

    /// Newest first, at most [`MAX_SCAN`] entries looked at per page.
    fn query(&self, query: &PageQuery) -> Result<Page, HubError> {
        let limit = query.limit.min(troca_proto::msg::MAX_HISTORY_PAGE) as usize;
        if limit == 0 {
            return Ok(Page::default());
        }
        self.flush();
        self.db.run(async || page(&self.db, query, limit).await)
    }
}

/// Reads blocks from the newest below `query.before` down, keeping the entries that match,
/// until the page is full or [`MAX_SCAN`] ids have been passed.
async fn page(db: &Db, query: &PageQuery, limit: usize) -> Result<Page, HubError> {
    let c = db.get().await?;
    let top: i64 = match query.before {
        0 => c
            .query_one("SELECT next FROM request_ids", &[])
            .await
            .map_err(db_err)?
            .get(0),
        b => b as i64,
    };
    let floor = top - MAX_SCAN as i64;
    let mut entries = Vec::new();
    let mut below = top;
    'blocks: loop {
        let rows = c
            .query(
                "SELECT first, count, entries FROM request_blocks
                 WHERE first < $1 AND first + count > $2 ORDER BY first DESC LIMIT $3",
                &[&below, &floor, &READ_BLOCKS],
            )
            .await
            .map_err(db_err)?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let first: i64 = row.get(0);
            let count: i32 = row.get(1);
            let data: &[u8] = row.get(2);
            let block = block::decode(data, first as u64, count as usize).map_err(|e| {
                HubError::Internal(format!("the history block from id {first} is damaged: {e}"))
            })?;
            let wanted = |e: &&block::Stored<'_>| {
                (e.id as i64) < top
                    && (e.id as i64) >= floor
                    && query.matches_names(e.entry.client, e.entry.op)
            };
            for e in block.iter().rev().filter(wanted) {
                entries.push(e.to_entry());
                if entries.len() == limit {
                    break 'blocks;
                }
            }
            below = first;
        }
    }
    let next = if entries.len() == limit {
        entries.last().map_or(0, |e| e.id)
    } else if floor > 1 {
        // Scanned the whole window: go on below it if anything is there.
        let older = c
            .query_opt(
                "SELECT 1 FROM request_blocks WHERE first < $1 LIMIT 1",
                &[&floor],
            )
            .await
            .map_err(db_err)?;
        older.map_or(0, |_| floor as u64)
    } else {
        0
    };
    Ok(Page { entries, next })
}
