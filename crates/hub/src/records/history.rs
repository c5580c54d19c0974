//! The shapes of the request history, whatever keeps it: an [`Entry`] being recorded, a
//! [`Pending`] request on its way to becoming one, and a [`PageQuery`] and its [`Page`].

use super::{now_ns, History};
use std::sync::Arc;
use std::time::Instant;
use troca_proto::msg::HistoryEntry;

/// One request, as it is recorded (borrowed: recording allocates nothing of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time_ns: i64,
    pub client: &'a str,
    pub address: &'a str,
    pub op: &'a str,
    pub target: &'a str,
    pub ok: bool,
    /// Why it failed, or a note on a request that succeeded (an unverified upload).
    pub error: Option<&'a str>,
    pub bytes: u64,
    pub duration_us: u64,
}

/// The most entries one history request looks at, matching or not: a filter that matches
/// little cannot make a request read the whole history.
pub const MAX_SCAN: usize = 50_000;

/// What a history request asks for.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub limit: u32,
    /// Only entries with a smaller id; 0 for the newest.
    pub before: u64,
    pub client: Option<String>,
    pub op: Option<String>,
}

impl PageQuery {
    /// Whether an entry passes the query's filters.
    pub fn matches(&self, e: &HistoryEntry) -> bool {
        self.matches_names(&e.client, &e.op)
    }

    /// Whether an entry of this client and operation passes the query's filters.
    pub fn matches_names(&self, client: &str, op: &str) -> bool {
        self.client.as_deref().is_none_or(|c| c == client)
            && self.op.as_deref().is_none_or(|o| o == op)
    }
}

/// One page of the history, and the `before` of the next (0 when there are no older entries).
#[derive(Debug, Default)]
pub struct Page {
    pub entries: Vec<HistoryEntry>,
    pub next: u64,
}

/// A request on its way into the history: who asked what, and when. Finished once, with the
/// outcome, whichever way the request ends.
#[derive(Debug)]
pub struct Pending {
    /// The face the request came through (`native`, `web`, `dav`), for the metrics.
    pub face: &'static str,
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
            face: "native",
            client,
            address,
            op,
            target,
            time_ns: now_ns(),
            started: Instant::now(),
        }
    }

    /// Records the request: the bytes it moved, or why it failed.
    pub fn finish(self, history: &dyn History, outcome: Result<u64, String>) {
        self.finish_noted(history, outcome, None);
    }

    /// [`Pending::finish`], with a note on a request that succeeded (kept where a failure's
    /// reason goes), such as an upload that could not be verified.
    pub fn finish_noted(
        self,
        history: &dyn History,
        outcome: Result<u64, String>,
        note: Option<&str>,
    ) {
        if let Some(o) = history.observer() {
            o.request(self.face, self.op, &outcome, self.started.elapsed());
        }
        if !history.enabled() {
            return;
        }
        let (ok, error, bytes) = match &outcome {
            Ok(bytes) => (true, note, *bytes),
            Err(e) => (false, Some(e.as_str()), 0),
        };
        history.append(&Entry {
            time_ns: self.time_ns,
            client: &self.client,
            address: &self.address,
            op: self.op,
            target: &self.target,
            ok,
            error,
            bytes,
            duration_us: self.started.elapsed().as_micros() as u64,
        });
    }
}
