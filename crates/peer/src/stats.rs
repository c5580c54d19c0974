//! What a peer counts for its metrics (`troca peer --metrics ADDR`): pieces it served and
//! received, bad pieces, peers dropped, requests answered busy or deferred. The server and the downloads share one [`PeerStats`]
//! (atomics: the data path takes no lock); [`PeerMetrics`] renders it when Prometheus scrapes.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};

/// A peer's counters since it started.
#[derive(Debug, Default)]
pub struct PeerStats {
    pub pieces_served: AtomicU64,
    pub bytes_served: AtomicU64,
    /// Pieces received that verified (and were written).
    pub pieces_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Pieces that failed verification, or that a peer refused though it claimed them.
    pub bad_pieces: AtomicU64,
    /// Peers a download gave up on (bad pieces, stalls, broken connections).
    pub peers_dropped: AtomicU64,
    /// Requests for pieces answered busy (every upload slot sending).
    pub busy_answers: AtomicU64,
    /// Requests answered `Deferred` by initial seeding (the piece is already out in the crowd).
    pub pieces_deferred: AtomicU64,
}

impl PeerStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The peer's registry.
#[derive(Debug)]
pub struct PeerMetrics {
    registry: Registry,
    counters: [Counter; 8],
}

impl Default for PeerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("troca_peer");
        let counters: [Counter; 8] = Default::default();
        let names = [
            ("pieces_served", "Pieces sent to other peers"),
            ("bytes_served", "Bytes of pieces sent to other peers"),
            ("pieces_received", "Pieces received that verified"),
            ("bytes_received", "Bytes of pieces received that verified"),
            (
                "bad_pieces",
                "Pieces that failed verification or were refused",
            ),
            ("peers_dropped", "Peers a download gave up on"),
            (
                "busy_answers",
                "Requests for pieces answered busy (every upload slot sending)",
            ),
            (
                "pieces_deferred",
                "Requests answered deferred by initial seeding: the piece is already out in the crowd",
            ),
        ];
        for ((name, help), c) in names.into_iter().zip(&counters) {
            registry.register(name, help, c.clone());
        }
        Self { registry, counters }
    }

    /// The metrics as OpenMetrics text, as `stats` stand now.
    pub fn encode(&self, stats: &PeerStats) -> String {
        let now = [
            &stats.pieces_served,
            &stats.bytes_served,
            &stats.pieces_received,
            &stats.bytes_received,
            &stats.bad_pieces,
            &stats.peers_dropped,
            &stats.busy_answers,
            &stats.pieces_deferred,
        ];
        for (c, total) in self.counters.iter().zip(now) {
            let (total, seen) = (total.load(Ordering::Relaxed), c.get());
            if total > seen {
                c.inc_by(total - seen);
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("a String takes any write");
        out
    }
}
