//! Zero-copy file → socket transfer with Linux `sendfile(2)`, driven by tokio's readiness so it
//! never blocks on a full socket buffer.

use std::fs::File;
use std::io;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Sends up to `len` bytes of `file` starting at `offset`; returns how many were sent (0 means
/// the file ended early). Waits for the socket to be writable as needed.
pub async fn send_some(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
) -> io::Result<usize> {
    let count = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
    stream
        .async_io(Interest::WRITABLE, || {
            let mut off = offset;
            Ok(rustix::fs::sendfile(stream, file, Some(&mut off), count)?)
        })
        .await
}
