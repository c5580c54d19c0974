//! troca over tokio: a framed [`Connection`], the async [`HubClient`], and the client side of
//! file transfers ([`transfer`]) that every face (CLI, shell, JSON mode) shares.
//!
//! The wire format itself lives in `troca-proto`; this crate only moves its frames and the raw
//! file bytes between them over a byte stream.

pub mod client;
pub mod connection;
pub mod durable;
pub mod error;
pub mod iobuf;
pub mod sendfile;
pub mod transfer;

pub use client::{ClientOptions, HubClient};
pub use connection::Connection;
pub use error::ClientError;
pub use iobuf::{transfer_buffer, IoBuf};
pub use transfer::{NoProgress, Progress};

/// Buffers for bulk transfers: those handed from a receiving thread to a writer thread
/// ([`durable::FileWriter`]), and a client upload's reads. Large, so reads, `sendfile` calls and
/// hand-offs are few: with page-aligned buffers (see [`iobuf`]), a whole 1 MiB per read made 1 GiB
/// puts 7% and 15% faster (client and hub side) than 128 KiB reads, and 4 MiB did no better.
pub const CHUNK: usize = 1024 * 1024;

/// Buffers for a loop that touches each byte three times on one core (read it, hash it, write it
/// to a socket): small enough to stay in that core's cache between the passes.
pub const CACHE_CHUNK: usize = 128 * 1024;

/// Lifts this process's soft limit on open files to the hard limit. Every connection is a file
/// descriptor, and the usual soft limit (1024) would cap a hub, or a load generator, far below
/// what the machine allows.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A failed accept
/// (out of file descriptors, most likely) is logged and retried after a pause rather than in a
/// spin. Every troca server (hub, web face, peer) accepts this way.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(a) => return Some(a),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
