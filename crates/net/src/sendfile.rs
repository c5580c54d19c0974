//! Zero-copy file → socket transfer with Linux `sendfile(2)`, driven by tokio's readiness so it
//! never blocks on a full socket buffer.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
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
            let mut off = offset as libc::off_t;
            // SAFETY: both descriptors are open for the duration of the call and `off` is a
            // valid, writable off_t.
            let n =
                unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
        .await
}
