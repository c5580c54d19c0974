//! The byte stream under a connection: plain TCP, or TLS 1.3 over TCP. `sendfile` and the
//! socket options that spare wake-ups apply to the TCP socket itself, so they stay available
//! on plain connections and are skipped (or done through a buffer) over TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's stream.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    /// TLS 1.3: handshake by rustls, records by [`crate::sealed`].
    Tls(Box<crate::sealed::Sealed<TcpStream>>),
}

/// What a [`crate::Connection`] needs from its stream besides reading and writing: the TCP
/// socket beneath, and whether bytes may go to it directly (no TLS in between).
pub trait Socket: AsyncRead + AsyncWrite + Unpin {
    /// The TCP socket the bytes travel on.
    fn tcp(&self) -> &TcpStream;
    /// The TCP socket, if nothing (no TLS) stands between it and the protocol.
    fn plain(&self) -> Option<&TcpStream>;
    /// The TLS stream, which can seal a file's bytes where they are read.
    fn sealed(&mut self) -> Option<&mut crate::sealed::Sealed<TcpStream>> {
        None
    }
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn plain(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Socket for Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.get_ref(),
        }
    }
    fn plain(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }
    fn sealed(&mut self) -> Option<&mut crate::sealed::Sealed<TcpStream>> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
