//! [`WriteStall`]: a stream whose writes fail once the peer has taken no byte for a while. An
//! HTTP server writes a response for as long as the client lets it; a client that asks and
//! then reads nothing would otherwise hold its connection, and what the response holds, for
//! ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `inner`, with every write (and flush and shutdown) failing with `TimedOut` once it has
/// waited `stall` without the peer taking a byte. Reads pass through untouched.
#[derive(Debug)]
pub struct WriteStall<S> {
    inner: S,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    /// Whether `timer` runs: from the first write that had to wait, until one goes through.
    armed: bool,
}

impl<S> WriteStall<S> {
    pub fn new(inner: S, stall: Duration) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
        }
    }

    /// What a write that got `r` comes to: the timer starts when a write first waits and
    /// stops when one goes through.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.armed = false;
            return r;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.stall);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took no byte for {} s", self.stall.as_secs_f64()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_stall() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteStall::new(near, Duration::from_secs(3));
        // Fits the pipe: no wait, however long since.
        tokio::time::sleep(Duration::from_secs(10)).await;
        w.write_all(&[1; 1024]).await.unwrap();
        // The pipe is full and nobody reads.
        let err = w.write_all(&[2; 10]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("no byte for 3 s"), "{err}");
        let mut got = [0u8; 1024];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [1; 1024]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut w = WriteStall::new(near, Duration::from_secs(3));
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                // Slower in all than the stall, but never for a whole stall without a byte.
                tokio::time::sleep(Duration::from_secs(2)).await;
                match far.read(&mut buf).await.unwrap() {
                    0 => return all,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
        });
        w.write_all(&[7; 640]).await.unwrap();
        w.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), vec![7; 640]);
    }
}
