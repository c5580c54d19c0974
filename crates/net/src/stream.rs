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

/// The TCP socket under rustls's own record layer (the web face), read ahead: rustls asks for at most 4 KiB per read (one system
/// call each, four or five per 16 KiB record), so this takes in whatever has arrived, up to
/// [`READ_AHEAD`] bytes, with one call and hands it out from memory. A connection holds a buffer
/// only while it has unread bytes in it (idle connections cost nothing); drained buffers go back
/// to a small per-thread pool, so a busy connection does not allocate per read.
#[derive(Debug)]
pub struct ReadAhead {
    tcp: TcpStream,
    held: Option<Box<[u8]>>,
    start: usize,
    end: usize,
}

/// The most bytes taken from the socket per read under TLS.
pub const READ_AHEAD: usize = 64 * 1024;
/// Drained buffers kept per thread for the next read.
const POOLED: usize = 16;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_buffer() -> Box<[u8]> {
    POOL.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| vec![0u8; READ_AHEAD].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() < POOLED {
            pool.push(buf);
        }
    });
}

impl ReadAhead {
    pub fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            held: None,
            start: 0,
            end: 0,
        }
    }

    /// Copies out what is held, releasing the buffer once drained.
    fn hand_out(&mut self, dst: &mut ReadBuf<'_>) {
        let Some(held) = &self.held else { return };
        let n = dst.remaining().min(self.end - self.start);
        dst.put_slice(&held[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            if let Some(buf) = self.held.take() {
                give_back(buf);
            }
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.held.is_some() {
            this.hand_out(dst);
            return Poll::Ready(Ok(()));
        }
        if dst.remaining() >= READ_AHEAD {
            return Pin::new(&mut this.tcp).poll_read(cx, dst);
        }
        let mut buf = take_buffer();
        let mut into = ReadBuf::new(&mut buf);
        match Pin::new(&mut this.tcp).poll_read(cx, &mut into) {
            Poll::Ready(Ok(())) => {
                let n = into.filled().len();
                if n == 0 {
                    give_back(buf);
                    return Poll::Ready(Ok(()));
                }
                (this.held, this.start, this.end) = (Some(buf), 0, n);
                this.hand_out(dst);
                Poll::Ready(Ok(()))
            }
            other => {
                give_back(buf);
                other
            }
        }
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small reads come out of one large one, in order, and nothing is lost at the end.
    #[tokio::test]
    async fn read_ahead_hands_out_every_byte_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for piece in sent.chunks(9_999) {
                s.write_all(piece).await.unwrap();
            }
        });
        let mut r = ReadAhead::new(TcpStream::connect(addr).await.unwrap());
        let mut got = Vec::new();
        let mut small = [0u8; 4096];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), data.len());
        assert!(got == data);
        assert!(r.held.is_none(), "a drained connection holds no buffer");
    }
}
