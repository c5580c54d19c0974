//! Whether the hub can serve now, for a load balancer's or a container's health check: its
//! store (the shared folder still there; an object store answering) and its database answer.
//! One check runs at a time and its answer stands for a second, so checks sent faster (or by
//! anyone, since they need no token) cost the store and the database nothing more. The answer
//! names what failed in general words; the details (addresses, the store's own words) go to
//! the hub's log, once each time the hub stops being able to serve.

use super::{blocking, Hub};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the store and the database have to answer a check.
const WITHIN: Duration = Duration::from_secs(3);

/// How long a check's answer stands.
const FRESH: Duration = Duration::from_secs(1);

/// The last check's answer, and when it was made.
pub(super) type LastCheck = tokio::sync::Mutex<Option<(Instant, Result<(), Unhealthy>)>>;

/// Why the hub cannot serve: what failed, in words fit for anyone who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unhealthy {
    Store,
    Database,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unhealthy::Store => "the hub cannot reach where its files are",
            Unhealthy::Database => "the hub cannot reach its database",
        })
    }
}

impl Hub {
    /// `Ok` when the hub can serve; else what it cannot reach.
    pub async fn health(self: &Arc<Self>) -> Result<(), Unhealthy> {
        // Held while checking: checks that come meanwhile wait for this one's answer.
        let mut last = self.health.lock().await;
        if let Some((at, answer)) = &*last {
            if at.elapsed() < FRESH {
                return *answer;
            }
        }
        let hub = Arc::clone(self);
        let checked = blocking(move || {
            let store = hub.store.health(WITHIN).map_err(|e| (Unhealthy::Store, e));
            Ok(store.and_then(|()| match &hub.presence {
                Some(p) => p.health(WITHIN).map_err(|e| (Unhealthy::Database, e)),
                None => Ok(()),
            }))
        })
        .await
        .unwrap_or_else(|e| Err((Unhealthy::Store, e)));
        let answer = checked.map_err(|(what, why)| {
            // Said once each time the hub stops being able to serve, not at every check.
            if last.as_ref().map(|(_, a)| *a) != Some(Err(what)) {
                tracing::warn!("health check: {what}: {why}");
            }
            what
        });
        *last = Some((Instant::now(), answer));
        answer
    }
}
