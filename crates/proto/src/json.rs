//! The JSON form of the hub's records, one shape everywhere: the CLI's `--json`, the JSON line
//! mode and the HTTP API all build their answers here, so a field means the same in each.
//! Pure formatting: times are given, never read.

use crate::msg::{ClientEntry, Entry, HistoryEntry, Standing, StatusInfo};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// RFC 3339 in UTC.
/// Sizes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// RFC 3339 with a given UTC offset (`2026-11-21T10:30:00-03:00`).
pub fn zoned_time(ns: i64, utc_offset_s: i32) -> String {
    let offset = jiff::tz::Offset::from_seconds(utc_offset_s).unwrap_or(jiff::tz::Offset::UTC);
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.display_with_offset(offset).to_string())
        .unwrap_or_default()
}

use crate::hex;

/// A file in a listing.
#[derive(Debug, Serialize)]
pub struct FileRow {
    pub name: String,
    pub size: u64,
    pub modified: String,
    pub blake3: Option<String>,
}

pub fn files(entries: &[Entry]) -> Vec<FileRow> {
    entries
        .iter()
        .map(|e| FileRow {
            name: e.name.clone(),
            size: e.size,
            modified: rfc3339(e.modified_ns),
            blake3: e.blake3.as_ref().map(|h| hex(h)),
        })
        .collect()
}

/// A connected client.
#[derive(Debug, Serialize)]
pub struct ClientRow {
    pub name: String,
    pub address: String,
    pub connected_at: String,
    pub activity: &'static str,
    pub target: String,
    pub done: u64,
    pub total: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The hub it is on, when several share one database.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub hub: String,
}

pub fn clients(clients: Vec<ClientEntry>) -> Vec<ClientRow> {
    clients
        .into_iter()
        .map(|c| ClientRow {
            connected_at: rfc3339(c.connected_ns),
            activity: c.activity.as_str(),
            name: c.name,
            address: c.address,
            target: c.target,
            done: c.done,
            total: c.total,
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            hub: c.hub,
        })
        .collect()
}

/// A request in the history.
#[derive(Debug, Serialize)]
pub struct HistoryRow {
    pub id: u64,
    pub time: String,
    pub client: String,
    pub address: String,
    pub op: String,
    pub target: String,
    pub ok: bool,
    pub error: Option<String>,
    /// Said of a request that succeeded, e.g. an upload that could not be verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub bytes: u64,
    pub duration_ms: f64,
}

pub fn history(entries: Vec<HistoryEntry>) -> Vec<HistoryRow> {
    entries
        .into_iter()
        .map(|e| HistoryRow {
            id: e.id,
            time: rfc3339(e.time_ns),
            note: (e.ok && !e.error.is_empty()).then(|| e.error.clone()),
            error: (!e.ok).then_some(e.error),
            client: e.client,
            address: e.address,
            op: e.op,
            target: e.target,
            ok: e.ok,
            bytes: e.bytes,
            duration_ms: e.duration_us as f64 / 1000.0,
        })
        .collect()
}

/// The hub's status.
pub fn status(s: &StatusInfo) -> Value {
    json!({
        "time": zoned_time(s.time_ns, s.utc_offset_s),
        "time_zone": s.time_zone,
        "utc_offset_s": s.utc_offset_s,
        "uptime_s": s.uptime_s,
        "version": s.version,
        "files": s.files,
        "bytes": s.bytes,
        "clients": s.clients,
        "transfers": s.transfers,
        "cache": {
            "entries": s.cache_entries,
            "bytes": s.cache_bytes,
            "hits": s.cache_hits,
            "misses": s.cache_misses,
            "evictions": s.cache_evictions,
        },
        "partial_uploads": {
            "count": s.partials,
            "bytes": s.partial_bytes,
        },
        "hubs": s.hubs,
        "you": standing(&s.you),
    })
}

/// What the asking client may do: as `GET /api/me` says it, without the names it owns.
pub fn standing(y: &Standing) -> Value {
    json!({
        "role": y.role.as_str(),
        "may_upload": y.may_upload,
        "folder": y.folder,
        "room": y.room,
        "quota": y.quota.map(|q| json!({
            "bytes": q.bytes,
            "files": q.files,
            "used_bytes": q.used_bytes,
            "used_files": q.used_files,
        })),
    })
}

/// Just the hub's time.
pub fn time(s: &StatusInfo) -> Value {
    json!({ "time": zoned_time(s.time_ns, s.utc_offset_s), "time_zone": s.time_zone })
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(super::zoned_time(0, -3 * 3600), "1969-12-31T21:00:00-03:00");
        assert_eq!(
            super::zoned_time(1_700_000_000_000_000_000, -3 * 3600),
            "2023-11-14T19:13:20-03:00"
        );
    }
}

/// What a share request asks for, as the HTTP API's body and the JSON line mode's fields give
/// it: a link to `name` lasting `expires_s` seconds (absent or 0: the hub's default); with
/// `upload`, an upload link into folder `name` taking at most `max_bytes` and `max_files` in
/// all (0: the hub's most).
#[derive(Debug, Clone, Deserialize)]
pub struct ShareQuery {
    pub name: String,
    #[serde(default)]
    pub expires_s: Option<u64>,
    #[serde(default)]
    pub upload: bool,
    #[serde(default)]
    pub max_bytes: u64,
    #[serde(default)]
    pub max_files: u64,
    /// A read link's most downloads (0: no bound).
    #[serde(default)]
    pub max_downloads: u64,
}

impl ShareQuery {
    /// The bounds of an upload link; `None` for a read link.
    pub fn bounds(&self) -> Option<crate::msg::UploadBounds> {
        self.upload.then_some(crate::msg::UploadBounds {
            bytes: self.max_bytes,
            files: self.max_files,
        })
    }
}

/// What a history request asks for, as the HTTP API's query string and the JSON line mode's
/// fields give it (the newest `limit` entries below `before`, of one client or operation).
#[derive(Debug, Clone, Deserialize)]
pub struct HistoryQuery {
    #[serde(default = "default_history_limit")]
    pub limit: u32,
    pub client: Option<String>,
    pub op: Option<String>,
    #[serde(default)]
    pub before: u64,
}

fn default_history_limit() -> u32 {
    50
}

impl From<HistoryQuery> for crate::msg::History {
    fn from(q: HistoryQuery) -> Self {
        crate::msg::History {
            limit: q.limit,
            client: q.client,
            op: q.op,
            before: q.before,
        }
    }
}
