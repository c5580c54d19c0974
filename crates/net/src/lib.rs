//! troca over tokio: a framed [`Connection`], the async [`HubClient`], and the client side of
//! file transfers ([`transfer`]) that every face (CLI, shell, JSON mode) shares.
//!
//! The wire format itself lives in `troca-proto`; this crate only moves its frames and the raw
//! file bytes between them over a byte stream.

// `openat2`, `renameat2`, `sendfile`, `SO_RCVLOWAT`, `O_DIRECT`, `syncfs`: Linux's. Said here, at
// build time, rather than by a confusing error deep in a dependency.
#[cfg(not(target_os = "linux"))]
compile_error!("troca runs on Linux (5.6 or later)");

pub mod batch;
pub mod client;
pub mod connection;
pub mod durable;
pub mod error;
pub mod identity;
pub mod iobuf;
pub mod limits;
pub mod pace;
pub mod proxy_header;
pub mod record;
pub mod sealed;
pub mod sendfile;
pub mod splice;
pub mod stall;
pub mod stream;
pub mod tls;
pub mod transfer;

pub use client::{ClientOptions, HubClient};
pub use connection::Connection;
pub use error::ClientError;
pub use iobuf::{transfer_buffer, IoBuf};
pub use stream::{Socket, Stream};
pub use tls::Trust;
pub use transfer::{NoProgress, Progress};

/// Buffers for bulk transfers: those handed from a receiving thread to a writer thread
/// ([`durable::FileWriter`]), and a client upload's reads. Large, so reads, `sendfile` calls and
/// hand-offs are few: with page-aligned buffers (see [`iobuf`]), a whole 1 MiB per read made 1 GiB
/// puts 7% and 15% faster (client and hub side) than 128 KiB reads, and 4 MiB did no better.
pub const CHUNK: usize = 1024 * 1024;

/// Buffers for a loop that touches each byte three times on one core (read it, hash it, write it
/// to a socket): small enough to stay in that core's cache between the passes.
pub const CACHE_CHUNK: usize = 128 * 1024;

/// Runs `work` on tokio's blocking pool, off the async workers: disk work that may take long
/// (fsync, hashing a whole file, a rename's flush). A task that could not finish (it panicked,
/// or the runtime is shutting down) becomes an error through `failed`.
pub async fn blocking<T: Send + 'static, E: Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
    failed: impl FnOnce(std::io::Error) -> E,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => done,
        Err(e) => Err(failed(std::io::Error::other(e))),
    }
}

/// Lifts this process's soft limit on open files to the hard limit. Every connection is a file
/// descriptor, and the usual soft limit (1024) would cap a hub, or a load generator, far below
/// what the machine allows.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        let raised = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        // Failing only leaves the soft limit as it was.
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// A descriptor held in reserve: when the process runs out, it is given up for a moment so a
/// client can be accepted, told the server is busy, and closed, instead of hanging in the
/// listen queue.
static RESERVE: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// When "accept failed" was last logged, and how many failures since, so a server out of
/// descriptors logs a line every few seconds, not one per attempt.
static ACCEPT_LOG: std::sync::Mutex<Option<(std::time::Instant, u64)>> =
    std::sync::Mutex::new(None);

fn hold_reserve() {
    let mut reserve = RESERVE.lock().expect("reserve poisoned");
    if reserve.is_none() {
        *reserve = std::fs::File::open("/dev/null").ok();
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. Every troca server
/// (hub, web face, peer) accepts this way. Out of file descriptors, the reserve descriptor is
/// released to accept one client, which gets `busy` (the face's own "try again later") and is
/// closed; other failures pause briefly rather than spin. Failures are logged at most once every
/// ten seconds, with a count.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
    busy: &[u8],
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    hold_reserve();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        let e = match accepted {
            Ok(a) => return Some(a),
            Err(e) => e,
        };
        log_accept_failure(&e);
        if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
            RESERVE.lock().expect("reserve poisoned").take();
            if let Ok((stream, _)) = listener.accept().await {
                let _ = stream.try_write(busy);
            }
            hold_reserve();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn log_accept_failure(e: &std::io::Error) {
    let mut log = ACCEPT_LOG.lock().expect("log state poisoned");
    let now = std::time::Instant::now();
    match &mut *log {
        Some((at, n)) if now.duration_since(*at) < std::time::Duration::from_secs(10) => *n += 1,
        _ => {
            let since = log.map_or(0, |(_, n)| n);
            tracing::warn!(error = %e, more_since_last_line = since, "accept failed");
            *log = Some((now, 0));
        }
    }
}
