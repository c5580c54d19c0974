//! Prometheus metrics of a hub (`troca serve --metrics ADDR`), with the `prometheus-client`
//! crate. Off by default: without `--metrics` nothing is counted here at all.
//!
//! Requests are counted where every face records them, when a `Pending`
//! is finished (in `records`): by face (`native`, `web`, `dav`), operation (the history's `op`) and outcome
//! (`ok`, or the error code). What the hub already keeps (connections, transfers, partial
//! uploads, the cache's figures, the history's backlog) is read when Prometheus scrapes.
//! Counters only ever grow; gauges say how things are now.

use crate::error::HubError;
use crate::records::{Backlog, Entry, History, Observer, Page, PageQuery};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use troca_proto::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    face: &'static str,
    op: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    face: &'static str,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

/// What the hub holds when Prometheus asks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub connections: u64,
    pub transfers: u64,
    pub partials: u64,
    pub partial_bytes: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cache: crate::cache::CacheStats,
    pub history_queued: u64,
    pub history_dropped: u64,
    pub locks: u64,
}

/// The hub's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OpLabels, Histogram>,
    bytes: Family<Direction, Counter>,
    connections: Gauge,
    transfers: Gauge,
    partials: Gauge,
    partial_bytes: Gauge,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    history_queued: Gauge,
    history_dropped: Counter,
    locks: Gauge,
}

/// The outcome label of a recorded result: `ok`, or the error's code when the record starts
/// with one (`not_found: …`), else `error`. A fixed set, whatever a client sends.
fn outcome(result: &Result<u64, String>) -> &'static str {
    let Err(e) = result else { return "ok" };
    let code = e.split_once(':').map_or("", |(c, _)| c);
    (1..=20)
        .map(ErrorCode::from_u16)
        .map(ErrorCode::as_str)
        .find(|known| *known == code)
        .unwrap_or("error")
}

/// Brings a counter up to `total`, a count kept elsewhere (it never goes down).
fn catch_up(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("troca");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register(
            "requests",
            "Requests by face, operation and outcome",
            requests.clone(),
        );
        let latency = Family::<OpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
        });
        r.register(
            "request_duration_seconds",
            "How long requests took, by face and operation",
            latency.clone(),
        );
        let bytes = Family::<Direction, Counter>::default();
        r.register(
            "bytes",
            "File bytes received (in) and sent (out) by every face",
            bytes.clone(),
        );
        Self {
            requests,
            latency,
            bytes,
            connections: gauge(&mut r, "connections", "Connections open, every face"),
            transfers: gauge(&mut r, "transfers", "Uploads and downloads in progress"),
            partials: gauge(&mut r, "partial_uploads", "Partial uploads held"),
            partial_bytes: gauge(&mut r, "partial_upload_bytes", "Bytes of partial uploads"),
            cache_entries: gauge(&mut r, "cache_entries", "Files in the hot-file cache"),
            cache_bytes: gauge(&mut r, "cache_bytes", "Bytes in the hot-file cache"),
            cache_hits: counter(&mut r, "cache_hits", "Downloads served from the cache"),
            cache_misses: counter(&mut r, "cache_misses", "Cache lookups that missed"),
            cache_evictions: counter(&mut r, "cache_evictions", "Files evicted for room"),
            history_queued: gauge(
                &mut r,
                "history_queue",
                "History entries waiting to be written",
            ),
            history_dropped: counter(
                &mut r,
                "history_dropped",
                "History entries dropped because the writer could not keep up",
            ),
            locks: gauge(&mut r, "locks", "WebDAV locks held"),
            registry: r,
        }
    }

    /// The metrics as OpenMetrics text, with the hub's state as `now` says.
    pub fn encode(&self, now: &Snapshot) -> String {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.connections, now.connections);
        set(&self.transfers, now.transfers);
        set(&self.partials, now.partials);
        set(&self.partial_bytes, now.partial_bytes);
        set(&self.cache_entries, now.cache.entries);
        set(&self.cache_bytes, now.cache.bytes);
        set(&self.history_queued, now.history_queued);
        set(&self.locks, now.locks);
        catch_up(&self.cache_hits, now.cache.hits);
        catch_up(&self.cache_misses, now.cache.misses);
        catch_up(&self.cache_evictions, now.cache.evictions);
        catch_up(&self.history_dropped, now.history_dropped);
        for (direction, total) in [("in", now.bytes_in), ("out", now.bytes_out)] {
            catch_up(&self.bytes.get_or_create(&Direction { direction }), total);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("a String takes any write");
        out
    }
}

impl Observer for Metrics {
    /// Counts one finished request.
    fn request(
        &self,
        face: &'static str,
        op: &'static str,
        result: &Result<u64, String>,
        took: Duration,
    ) {
        let outcome = outcome(result);
        self.requests
            .get_or_create(&RequestLabels { face, op, outcome })
            .inc();
        self.latency
            .get_or_create(&OpLabels { face, op })
            .observe(took.as_secs_f64());
    }
}

/// A history whose requests are also counted in the metrics.
#[derive(Debug)]
pub struct Metered {
    pub inner: Box<dyn History>,
    pub metrics: Arc<Metrics>,
}

impl History for Metered {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
    fn append(&self, entry: &Entry<'_>) {
        self.inner.append(entry);
    }
    fn flush(&self) {
        self.inner.flush();
    }
    fn query(&self, query: &PageQuery) -> Result<Page, HubError> {
        self.inner.query(query)
    }
    fn backlog(&self) -> Backlog {
        self.inner.backlog()
    }
    fn observer(&self) -> Option<&dyn Observer> {
        Some(self.metrics.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_codes_or_error_and_counters_only_grow() {
        assert_eq!(outcome(&Ok(5)), "ok");
        assert_eq!(outcome(&Err("not_found: no file".into())), "not_found");
        assert_eq!(outcome(&Err("locked: held".into())), "locked");
        assert_eq!(outcome(&Err("evil\"label: x".into())), "error");
        assert_eq!(outcome(&Err("403 Forbidden".into())), "error");
        let m = Metrics::new();
        m.request("native", "put", &Ok(3), Duration::from_millis(2));
        m.request("native", "put", &Ok(3), Duration::from_millis(2));
        let mut now = Snapshot {
            bytes_in: 10,
            ..Default::default()
        };
        let text = m.encode(&now);
        assert!(
            text.contains(r#"troca_requests_total{face="native",op="put",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"troca_bytes_total{direction="in"} 10"#),
            "{text}"
        );
        now.bytes_in = 4;
        let text = m.encode(&now);
        assert!(
            text.contains(r#"troca_bytes_total{direction="in"} 10"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
