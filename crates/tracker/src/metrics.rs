//! The tracker's metrics (`troca tracker --metrics ADDR`), read from its [`Stats`] when
//! Prometheus scrapes: datagrams by kind, answers, drops, refused cookies, peers and files.

use crate::{Stats, KINDS};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// The tracker's registry.
#[derive(Debug)]
pub struct TrackerMetrics {
    registry: Registry,
    datagrams: Family<Kind, Counter>,
    answers: Counter,
    dropped: Counter,
    bad_cookies: Counter,
    torrent_peers_unrecorded: Counter,
    peers: Gauge,
    files: Gauge,
    torrents: Gauge,
    torrent_peers: Gauge,
}

fn read(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Brings a counter up to `total`, counted elsewhere.
fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Default for TrackerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TrackerMetrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("troca_tracker");
        let datagrams = Family::<Kind, Counter>::default();
        r.register(
            "datagrams",
            "Well-formed requests by kind",
            datagrams.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let answers = counter("answers", "Datagrams sent in answer");
        let dropped = counter("dropped", "Malformed datagrams dropped unanswered");
        let bad_cookies = counter(
            "bad_cookies",
            "Requests refused for a missing or stale cookie",
        );
        let torrent_peers_unrecorded = counter(
            "torrent_peers_unrecorded",
            "BitTorrent announces of a new peer answered without remembering it (the table, or its address's share, was full)",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        Self {
            datagrams,
            answers,
            dropped,
            bad_cookies,
            torrent_peers_unrecorded,
            peers: gauge("peers", "Peers registered"),
            files: gauge("files", "Files listed"),
            torrents: gauge("torrents", "BitTorrent info-hashes with peers"),
            torrent_peers: gauge("torrent_peers", "BitTorrent peers"),
            registry: r,
        }
    }

    /// The metrics as OpenMetrics text, as `stats` stand now.
    pub fn encode(&self, stats: &Stats) -> String {
        for (kind, n) in KINDS.iter().zip(&stats.kinds) {
            catch_up(&self.datagrams.get_or_create(&Kind { kind }), read(n));
        }
        catch_up(&self.answers, read(&stats.answers));
        catch_up(&self.dropped, read(&stats.dropped));
        catch_up(&self.bad_cookies, read(&stats.bad_cookies));
        catch_up(
            &self.torrent_peers_unrecorded,
            read(&stats.torrent_peers_unrecorded),
        );
        let set = |g: &Gauge, a: &AtomicU64| {
            g.set(i64::try_from(read(a)).unwrap_or(i64::MAX));
        };
        set(&self.peers, &stats.peers);
        set(&self.files, &stats.files);
        set(&self.torrents, &stats.torrents);
        set(&self.torrent_peers, &stats.torrent_peers);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("a String takes any write");
        out
    }
}
