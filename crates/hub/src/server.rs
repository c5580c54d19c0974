//! Accepting connections: the connection limit, the periodic clean-up of stale partial uploads
//! and of owner records of files changed outside the hub, and graceful shutdown (stop accepting, close idle connections, let requests in progress
//! finish).

use crate::config::HubConfig;
use crate::conn::serve_connection;
use crate::error::HubError;
use crate::service::Hub;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves the folder in `config` on `listener` until `shutdown` is cancelled and every
/// connection has finished.
pub async fn run(
    listener: TcpListener,
    config: HubConfig,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let hub = Arc::new(Hub::open(config)?);
    serve(listener, hub, shutdown).await
}

/// Like [`run`], for a [`Hub`] the caller already opened (to share it with another face).
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let tracker = TaskTracker::new();
    tracker.spawn(clean_partials(Arc::clone(&hub), shutdown.clone()));
    tracker.spawn(sweep_owners(Arc::clone(&hub), shutdown.clone()));
    tracker.spawn(forget_links(Arc::clone(&hub), shutdown.clone()));
    let limit = Arc::new(Semaphore::new(hub.config().max_connections));
    let mut busy = Vec::new();
    troca_proto::frame::encode_frame(
        &HubError::TooManyConnections(hub.config().max_connections).to_message(),
        &mut busy,
    );
    loop {
        let Some((stream, peer)) = troca_net::accept(&listener, &shutdown, &busy).await else {
            break;
        };
        let (hub, shutdown) = (Arc::clone(&hub), shutdown.clone());
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            let max = hub.config().max_connections;
            tracker.spawn(refuse(stream, HubError::TooManyConnections(max)));
            continue;
        };
        let early = match early_place(&hub, peer) {
            Ok(early) => early,
            Err(e) => {
                tracker.spawn(refuse(stream, e));
                continue;
            }
        };
        tracker.spawn(async move {
            let Some((stream, peer)) = client_of(&hub, stream, peer).await else {
                return;
            };
            let Some(slot) = early.or_else(|| hub.addresses().take(peer.ip())) else {
                let max = hub.config().max_connections_per_ip;
                return refuse(stream, HubError::TooManyFromAddress(max)).await;
            };
            serve_connection(hub, stream, peer, shutdown).await;
            drop((permit, slot));
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    // Every request answered is in the history before the hub is gone.
    let h = Arc::clone(&hub);
    let _ = tokio::task::spawn_blocking(move || h.history_log().flush()).await;
    Ok(())
}

/// A new connection's place among its address's, taken as it is accepted, in the order
/// connections arrive (their tasks may run out of order, and a later one must not take the
/// place of an earlier one); `None` for a trusted proxy's, whose client is known only once
/// it says who it is. Refused past `--max-connections-per-ip`.
pub fn early_place(
    hub: &Hub,
    peer: std::net::SocketAddr,
) -> Result<Option<troca_net::limits::AddressSlot>, HubError> {
    if hub.config().trusted_proxies.contains(peer.ip()) {
        return Ok(None);
    }
    match hub.addresses().take(peer.ip()) {
        Some(slot) => Ok(Some(slot)),
        None => Err(HubError::TooManyFromAddress(
            hub.config().max_connections_per_ip,
        )),
    }
}

/// The client a connection is for: its peer, or, from a trusted proxy that begins with a PROXY
/// protocol header, the client the header names (`None`: a header that cannot be read within
/// the handshake timeout; the connection is dropped).
pub async fn client_of(
    hub: &Hub,
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    if !hub.config().trusted_proxies.contains(peer.ip()) {
        return Some((stream, peer));
    }
    let within = hub.config().handshake_timeout;
    match troca_net::proxy_header::read_client(&mut stream, within).await {
        Ok(client) => Some((stream, client.unwrap_or(peer))),
        Err(e) => {
            tracing::debug!(%peer, "dropped a connection from a trusted proxy: {e}");
            None
        }
    }
}

/// Tells a connection the hub will not serve why, and closes it.
async fn refuse(stream: tokio::net::TcpStream, why: HubError) {
    let mut conn = troca_net::Connection::new(stream);
    let _ = conn.send(&why.to_message()).await;
    let _ = conn.shutdown().await;
}

async fn clean_partials(hub: Arc<Hub>, shutdown: CancellationToken) {
    // Often enough that the budgets for abandoned partials hold within a minute.
    let every =
        (hub.config().partial_ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let h = Arc::clone(&hub);
        let removed = tokio::task::spawn_blocking(move || h.clean_partials())
            .await
            .unwrap_or(0);
        if removed > 0 {
            tracing::info!(removed, "removed stale partial uploads");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Forgets the links that expired longer than `--share-keep` ago (an upload link once no file
/// it brought is left): at start, then every
/// [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY).
async fn forget_links(hub: Arc<Hub>, shutdown: CancellationToken) {
    let keep = i64::try_from(hub.config().shares.keep.as_nanos()).unwrap_or(i64::MAX);
    loop {
        let h = Arc::clone(&hub);
        let before = crate::records::now_ns().saturating_sub(keep);
        match tokio::task::spawn_blocking(move || h.tokens().forget_links(before)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(forgotten = n, "share links that ended"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot forget the share links that ended"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::sweep::SWEEP_EVERY) => {}
        }
    }
}

/// Sweeps the owner records of files gone or changed outside the hub: at start, then every
/// [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY).
async fn sweep_owners(hub: Arc<Hub>, shutdown: CancellationToken) {
    if !hub.store().changed_outside() {
        return;
    }
    loop {
        let h = Arc::clone(&hub);
        match tokio::task::spawn_blocking(move || h.sweep_owners(None)).await {
            Ok(Ok(swept)) if swept.forgotten + swept.stamped > 0 => tracing::info!(
                forgotten = swept.forgotten,
                stamped = swept.stamped,
                "owner records of files gone or changed outside the hub"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot sweep the owner records"),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::sweep::SWEEP_EVERY) => {}
        }
    }
}
