//! A byte stream carrying troca frames and, between them, raw file bytes.
//!
//! Reads go through one buffer so a frame split over several TCP segments is simply waited for.
//! Writes are queued and sent with one `write_all`, so a response (header, small file body,
//! trailer) leaves in one segment instead of several small ones.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use troca_proto::{decode_frame, encode_frame, DecodeError, Message, FRAME_HEADER_LEN};

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
}

/// A framed connection over any byte stream (a `TcpStream` in practice).
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    read_size: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            // Small to start with: a hub holds thousands of idle connections, and frames are
            // small. Buffers grow when a larger frame or body needs it.
            rbuf: BytesMut::with_capacity(4 * 1024),
            wbuf: Vec::new(),
            read_size: 4 * 1024,
        }
    }

    /// How much to read at once when no frame length says otherwise. A client, which has one
    /// connection, reads a whole small response in one call with 64 KiB; a hub keeps the default
    /// (4 KiB) so thousands of idle connections stay cheap.
    pub fn set_read_size(&mut self, bytes: usize) {
        self.read_size = bytes.max(64);
    }

    /// The underlying stream, for zero-copy sends. Call [`Connection::flush`] first so queued
    /// frames go out before whatever is written directly.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// Reads the next message. `Ok(None)` means the peer closed the connection cleanly between
    /// frames.
    pub async fn read_message(&mut self) -> Result<Option<Message>, FrameError> {
        loop {
            if let Some((msg, used)) = decode_frame(&self.rbuf)? {
                self.rbuf.advance(used);
                return Ok(Some(msg));
            }
            // Room for the rest of a frame whose length is known, else a modest read.
            let want = match self.rbuf.get(..FRAME_HEADER_LEN) {
                Some(h) => (u32::from_be_bytes(h.try_into().expect("4 bytes")) as usize)
                    .saturating_add(FRAME_HEADER_LEN)
                    .saturating_sub(self.rbuf.len())
                    .max(self.read_size),
                None => self.read_size,
            };
            self.rbuf.reserve(want);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::TruncatedFrame)
                };
            }
        }
    }

    /// Reads raw bytes that follow a frame: first whatever is already buffered, then straight from
    /// the stream into `dst` (no extra copy). Returns 0 only at end of stream.
    pub async fn read_raw(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if !self.rbuf.is_empty() {
            let n = dst.len().min(self.rbuf.len());
            dst[..n].copy_from_slice(&self.rbuf[..n]);
            self.rbuf.advance(n);
            return Ok(n);
        }
        self.stream.read(dst).await
    }

    /// Queues a message; it is sent by the next [`Connection::flush`].
    pub fn queue(&mut self, msg: &Message) {
        encode_frame(msg, &mut self.wbuf);
    }

    /// Queues raw bytes; they are sent by the next [`Connection::flush`].
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends everything queued in one write.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            // Don't keep a large buffer around after sending a small file's body.
            if self.wbuf.capacity() > 256 * 1024 {
                self.wbuf.shrink_to(16 * 1024);
            }
        }
        Ok(())
    }

    /// Queues a message and sends everything queued.
    pub async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        self.queue(msg);
        self.flush().await
    }

    /// Writes raw bytes straight to the stream (after anything queued).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.flush().await?;
        self.stream.write_all(bytes).await
    }

    /// Flushes and shuts down the write half, so the peer sees end of stream.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troca_proto::msg::{Get, List};

    #[tokio::test]
    async fn frames_and_raw_bytes_interleave() {
        let (a, b) = tokio::io::duplex(7); // a tiny pipe splits every frame
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let writer = tokio::spawn(async move {
            tx.queue(&List { prefix: "p".into() }.into());
            tx.queue_raw(b"raw bytes");
            tx.queue(
                &Get {
                    name: "n".into(),
                    offset: 3,
                }
                .into(),
            );
            tx.flush().await.unwrap();
        });
        assert_eq!(
            rx.read_message().await.unwrap(),
            Some(List { prefix: "p".into() }.into())
        );
        let mut raw = [0u8; 9];
        let mut got = 0;
        while got < raw.len() {
            got += rx.read_raw(&mut raw[got..]).await.unwrap();
        }
        assert_eq!(&raw, b"raw bytes");
        assert!(matches!(
            rx.read_message().await.unwrap(),
            Some(Message::Get(g)) if g.offset == 3
        ));
        writer.await.unwrap();
        assert_eq!(rx.read_message().await.unwrap(), None);
    }

    #[tokio::test]
    async fn eof_inside_a_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 0x02]).await.unwrap();
        drop(a);
        let mut rx = Connection::new(b);
        assert!(matches!(
            rx.read_message().await,
            Err(FrameError::TruncatedFrame)
        ));
    }
}
