//! A byte stream carrying troca frames and, between them, raw file bytes.
//!
//! Reads go through one buffer so a frame split over several TCP segments is simply waited for.
//! Writes are queued and sent with one `write_all`, so a response (header, small file body,
//! trailer) leaves in one segment instead of several small ones.

use crate::pace::{Gate, Pace};
use bytes::BufMut;
use bytes::{Buf, BytesMut};
use std::os::fd::{AsRawFd, RawFd};
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
    /// The socket whose `SO_RCVLOWAT` [`Connection::read_raw_bulk`] raised, to lower again
    /// before anything else is read.
    raised_lowat: Option<RawFd>,
    /// How long a write may wait without the peer taking a byte before it fails (`None`: as
    /// long as it takes; the hub bounds its transfers its own way).
    write_stall: Option<std::time::Duration>,
    /// Bandwidth limits, if any: every read and write waits for its gate and is charged.
    pace: Option<Box<Pace>>,
}

/// How many bytes a bulk read waits for before the kernel wakes the reader (`SO_RCVLOWAT`), or
/// fewer when fewer are still to come. Each wake-up of a reader on the other core costs an
/// interrupt between the cores, and on a VM an exit to the host. The hub's upload loop uses it:
/// waiting for half a megabyte made 1 GiB uploads 17% faster here than waking for every segment
/// (256 KiB: 11%, 1 MiB: no better than 512 KiB). A downloading client, which spends its time
/// hashing, ran 7% slower with it, so it reads as data comes.
pub const BULK_LOWAT: usize = 512 * 1024;

/// How long a bulk read waits for [`BULK_LOWAT`] bytes before it takes what has arrived. Half a
/// megabyte takes 4 ms at 1 Gbit/s; a slower link is read every 100 ms, its bytes waiting in the
/// socket buffer meanwhile, so neither throughput nor the stall timeout nor `who`'s progress
/// suffers.
pub const BULK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// Which wait of [`Connection::read_message_timed`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// No request began within the idle time.
    Idle,
    /// A request began but its frame did not arrive in time.
    Request,
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
            raised_lowat: None,
            write_stall: None,
            pace: None,
        }
    }

    /// Holds this connection to bandwidth limits (`None`, or a pace without limits: none).
    pub fn set_pace(&mut self, pace: Option<Pace>) {
        self.pace = pace.filter(Pace::is_limited).map(Box::new);
    }

    /// The receiving gate, if reads are limited.
    fn receive_gate(&mut self) -> Option<&mut Gate> {
        self.pace
            .as_deref_mut()
            .map(|p| &mut p.receive)
            .filter(|g| g.is_limited())
    }

    /// The sending gate, if writes are limited.
    fn send_gate(&mut self) -> Option<&mut Gate> {
        self.pace
            .as_deref_mut()
            .map(|p| &mut p.send)
            .filter(|g| g.is_limited())
    }

    /// Waits until the next write may go; the most it may send at once.
    async fn send_ready(&mut self) -> usize {
        match self.send_gate() {
            Some(gate) => {
                gate.ready().await;
                gate.quantum()
            }
            None => usize::MAX,
        }
    }

    /// Charges `n` bytes sent past the stream (`sendfile`, `splice`, sealed file records).
    fn charge_sent(&mut self, n: usize) {
        if let Some(gate) = self.send_gate() {
            gate.charge(n);
        }
    }

    /// Reads into the buffer, within the receiving gate if there is one.
    async fn read_into_buffer(&mut self) -> std::io::Result<usize> {
        let Some(gate) = self.pace.as_deref_mut().map(|p| &mut p.receive) else {
            return self.stream.read_buf(&mut self.rbuf).await;
        };
        gate.ready().await;
        let room = gate.quantum();
        let n = self
            .stream
            .read_buf(&mut (&mut self.rbuf).limit(room))
            .await?;
        gate.charge(n);
        Ok(n)
    }

    /// Reads from the stream into `dst`, within the receiving gate if there is one.
    async fn read_stream(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        let Some(gate) = self.pace.as_deref_mut().map(|p| &mut p.receive) else {
            return self.stream.read(dst).await;
        };
        gate.ready().await;
        let room = dst.len().min(gate.quantum());
        let n = self.stream.read(&mut dst[..room]).await?;
        gate.charge(n);
        Ok(n)
    }

    /// Makes every write fail with `TimedOut` once the peer has taken no byte for `stall`: a
    /// client must not wait for ever on a hub that stopped reading, or a link that died
    /// without a word.
    pub fn set_write_stall(&mut self, stall: std::time::Duration) {
        self.write_stall = Some(stall);
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
            self.lower_lowat();
            if self.read_into_buffer().await? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::TruncatedFrame)
                };
            }
        }
    }

    /// Waits up to `idle` for the next request to begin, then up to `request` for the rest of
    /// its frame: a client may think as long as `idle` allows, but once it starts a request it
    /// must send it at a reasonable pace (a frame trickled a byte a second is cut). Cancel-safe.
    pub async fn read_message_timed(
        &mut self,
        idle: std::time::Duration,
        request: std::time::Duration,
    ) -> Result<Result<Option<Message>, FrameError>, Late> {
        if self.rbuf.is_empty() {
            self.rbuf.reserve(self.read_size);
            self.lower_lowat();
            match tokio::time::timeout(idle, self.read_into_buffer()).await {
                Err(_) => return Err(Late::Idle),
                Ok(Err(e)) => return Ok(Err(e.into())),
                Ok(Ok(0)) => return Ok(Ok(None)),
                Ok(Ok(_)) => {}
            }
        }
        tokio::time::timeout(request, self.read_message())
            .await
            .map_err(|_| Late::Request)
    }

    /// The next message, if a whole frame of kind `kind` is already buffered; reads nothing.
    /// For a receiver that gathers a run of requests of one kind into a batch.
    pub fn buffered_of_kind(&mut self, kind: u8) -> Result<Option<Message>, FrameError> {
        if self.rbuf.get(FRAME_HEADER_LEN) != Some(&kind) {
            return Ok(None);
        }
        match decode_frame(&self.rbuf)? {
            Some((msg, used)) => {
                self.rbuf.advance(used);
                Ok(Some(msg))
            }
            None => Ok(None),
        }
    }

    /// The kind of the next buffered frame, once its header has arrived; reads nothing.
    pub fn buffered_kind(&self) -> Option<u8> {
        self.rbuf.get(FRAME_HEADER_LEN).copied()
    }

    /// Waits for more bytes and buffers them; 0 at the end of the stream. Cancel-safe: for a
    /// receiver that takes in frames while it waits for something else.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        self.rbuf.reserve(self.read_size);
        self.lower_lowat();
        self.read_into_buffer().await
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
        self.lower_lowat();
        self.read_stream(dst).await
    }

    /// Back to waking on every byte, for frames and other small reads.
    fn lower_lowat(&mut self) {
        if let Some(fd) = self.raised_lowat.take() {
            set_recv_lowat(fd, 1);
        }
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
            let stall = self.write_stall;
            let gate = self.pace.as_deref_mut().map(|p| &mut p.send);
            let (stream, wbuf) = (&mut self.stream, &self.wbuf);
            match (stall, gate) {
                (None, None) => stream.write_all(wbuf).await?,
                (stall, gate) => write_all_within(stream, wbuf, stall, gate).await?,
            }
            // TLS may still hold the last records when the socket was full: push them out.
            match stall {
                None => self.stream.flush().await?,
                Some(stall) => within_stall(stall, self.stream.flush()).await?,
            }
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
        let gate = self.pace.as_deref_mut().map(|p| &mut p.send);
        match (self.write_stall, gate) {
            (None, None) => self.stream.write_all(bytes).await?,
            (stall, gate) => write_all_within(&mut self.stream, bytes, stall, gate).await?,
        }
        match self.write_stall {
            None => self.stream.flush().await,
            Some(stall) => within_stall(stall, self.stream.flush()).await,
        }
    }

    /// Flushes and shuts down the write half, so the peer sees end of stream.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await
    }
}

/// Writes all of `bytes`, failing once a write has waited `stall` without the peer taking any,
/// and within `gate`'s limits (its waits are not the peer's stall).
async fn write_all_within<W: AsyncWrite + Unpin>(
    stream: &mut W,
    mut bytes: &[u8],
    stall: Option<std::time::Duration>,
    mut gate: Option<&mut Gate>,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let mut room = bytes.len();
        if let Some(gate) = gate.as_deref_mut().filter(|g| g.is_limited()) {
            gate.ready().await;
            room = room.min(gate.quantum());
        }
        let n = match stall {
            Some(stall) => within_stall(stall, stream.write(&bytes[..room])).await?,
            None => stream.write(&bytes[..room]).await?,
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if let Some(gate) = gate.as_deref_mut() {
            gate.charge(n);
        }
        bytes = &bytes[n..];
    }
    Ok(())
}

/// `step`, failing with `TimedOut` if it takes longer than `stall`.
async fn within_stall<T>(
    stall: std::time::Duration,
    step: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(stall, step).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the peer took no byte for {} s", stall.as_secs()),
        )),
    }
}

impl<S: crate::stream::Socket> Connection<S> {
    /// Sends `len` bytes of `file` from `offset` (after anything queued): with `sendfile` on a
    /// plain socket (no copy through this process), else read straight into the TLS records
    /// that carry them. `sent` hears of each step; each step is bounded by `stall`.
    pub async fn send_file_range(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        stall: std::time::Duration,
        sent: impl FnMut(u64),
    ) -> std::io::Result<()> {
        self.send_file_range_seen(file, offset, len, stall, sent, |_| {})
            .await
    }

    /// [`Connection::send_file_range`], showing `seen` the bytes when they pass through this
    /// process: over TLS, so the sender can hash what it seals. With `sendfile` they never do,
    /// and `seen` is not called.
    pub async fn send_file_range_seen(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        stall: std::time::Duration,
        mut sent: impl FnMut(u64),
        mut seen: impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let timed_out =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "the transfer stalled");
        tokio::time::timeout(stall, self.flush())
            .await
            .map_err(|_| timed_out())??;
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let want = (end - pos).min(self.send_ready().await as u64);
            let step = if let Some(tcp) = self.stream.plain() {
                tokio::time::timeout(stall, crate::sendfile::send_some(tcp, file, pos, want)).await
            } else {
                let sealed = self
                    .stream
                    .sealed()
                    .ok_or_else(|| std::io::Error::other("a stream is either plain or TLS"))?;
                tokio::time::timeout(stall, sealed.send_file_at(file, pos, want, &mut seen)).await
            };
            let n = step.map_err(|_| timed_out())??;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being sent",
                ));
            }
            self.charge_sent(n);
            pos += n as u64;
            sent(n as u64);
        }
        tokio::time::timeout(stall, self.stream.flush())
            .await
            .map_err(|_| timed_out())?
    }

    /// Sends `len` bytes arriving on `from` (after anything queued) with `splice`, never copied
    /// through this process. Only on a plain socket: `None` if TLS stands in the way (the caller
    /// reads and writes them instead). `sent` hears of each step; each is bounded by `stall`.
    pub async fn send_spliced(
        &mut self,
        from: &tokio::net::TcpStream,
        len: u64,
        stall: std::time::Duration,
        mut sent: impl FnMut(u64),
    ) -> Option<std::io::Result<()>> {
        self.stream.plain()?;
        let timed_out =
            || std::io::Error::new(std::io::ErrorKind::TimedOut, "the transfer stalled");
        let run = async {
            tokio::time::timeout(stall, self.flush())
                .await
                .map_err(|_| timed_out())??;
            let mut pipe = crate::splice::Splice::new()?;
            let mut left = len;
            while left > 0 {
                let want = left.min(self.send_ready().await as u64);
                let to = self.stream.plain().expect("checked above");
                let n = tokio::time::timeout(stall, pipe.step(from, to, want))
                    .await
                    .map_err(|_| timed_out())??;
                self.charge_sent(n);
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the source ended early",
                    ));
                }
                left -= n as u64;
                sent(n as u64);
            }
            Ok(())
        };
        Some(run.await)
    }

    /// Takes in what has already arrived on the socket, without waiting, until `max` bytes are
    /// buffered. End of stream is left for the next read to report.
    pub fn read_arrived(&mut self, max: usize) -> std::io::Result<()> {
        let before = self.rbuf.len();
        let max = match self.receive_gate() {
            Some(gate) if gate.is_closed() => return Ok(()),
            Some(gate) => max.min(before.saturating_add(gate.quantum())),
            None => max,
        };
        let read = self.take_arrived(max);
        let taken = self.rbuf.len() - before;
        if let Some(gate) = self.receive_gate() {
            gate.charge(taken);
        }
        read
    }

    fn take_arrived(&mut self, max: usize) -> std::io::Result<()> {
        while self.rbuf.len() < max {
            self.rbuf.reserve((max - self.rbuf.len()).min(256 * 1024));
            let got = match self.stream.plain() {
                Some(tcp) => match tcp.try_read_buf(&mut self.rbuf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                    got => Some(got?),
                },
                // Over TLS, what the socket holds is opened without waiting: polled once with
                // a waker that does nothing. Whoever reads next polls again with its own.
                None => {
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    let stream = std::pin::Pin::new(&mut self.stream);
                    match tokio_util::io::poll_read_buf(stream, &mut cx, &mut self.rbuf) {
                        std::task::Poll::Ready(got) => Some(got?),
                        std::task::Poll::Pending => None,
                    }
                }
            };
            if matches!(got, None | Some(0)) {
                break;
            }
        }
        Ok(())
    }

    /// [`Connection::read_raw`] for the bytes of a file, where `dst` is no longer than what is
    /// still to come: the kernel wakes this reader once [`BULK_LOWAT`] bytes (or all of `dst`)
    /// have arrived rather than for every segment. The next frame read sets it back.
    pub async fn read_raw_bulk(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        // Under a limit, reads are small and paced: waiting for half a megabyte would not do.
        if !self.rbuf.is_empty() || self.receive_gate().is_some() {
            return self.read_raw(dst).await;
        }
        // Over TLS the mark counts the bytes still to come that the TLS layer does not
        // already hold (records are larger than their content, so as many will come).
        let held = self.stream.sealed().map(|s| s.held());
        let lowat = dst
            .len()
            .saturating_sub(held.unwrap_or(0))
            .clamp(1, BULK_LOWAT);
        let tls = held.is_some();
        if lowat == 1 {
            // Nothing to wait for beyond a byte (a short tail): no system call for the mark.
            self.lower_lowat();
            return self.read_bulk_once(dst, tls).await;
        }
        let fd = self.stream.tcp().as_raw_fd();
        set_recv_lowat(fd, lowat);
        self.raised_lowat = Some(fd);
        // A slow sender must not look stalled, nor its progress go unseen: if the mark is not
        // reached soon, take what has come. (Reading either stream is cancel-safe.)
        match tokio::time::timeout(BULK_PATIENCE, self.read_bulk_once(dst, tls)).await {
            Ok(read) => read,
            Err(_) => {
                self.lower_lowat();
                self.read_bulk_once(dst, tls).await
            }
        }
    }

    /// One bulk read: from plain TCP, what one read gives; over TLS, every record that can be
    /// had without waiting once the first has come (a TLS stream hands out one at a time).
    async fn read_bulk_once(&mut self, dst: &mut [u8], tls: bool) -> std::io::Result<usize> {
        match tls {
            true => read_available(&mut self.stream, dst).await,
            false => self.stream.read(dst).await,
        }
    }
}

/// Reads at least one byte (or end of stream) into `dst`, then whatever else the stream can
/// give without waiting: a TLS stream hands out one record (16 KiB) per read, and a bulk reader
/// would otherwise pay a wake-up and a timer for each.
async fn read_available<S: AsyncRead + Unpin>(
    stream: &mut S,
    dst: &mut [u8],
) -> std::io::Result<usize> {
    use std::task::Poll;
    let mut into = tokio::io::ReadBuf::new(dst);
    std::future::poll_fn(|cx| loop {
        let before = into.filled().len();
        match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut into) {
            Poll::Ready(Ok(())) if into.filled().len() > before && into.remaining() > 0 => {}
            Poll::Ready(Ok(())) => return Poll::Ready(Ok(into.filled().len())),
            Poll::Ready(Err(e)) if before == 0 => return Poll::Ready(Err(e)),
            // What was read is handed out; the error (or the wait) comes with the next read.
            Poll::Ready(Err(_)) | Poll::Pending if before > 0 => return Poll::Ready(Ok(before)),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Sets `SO_RCVLOWAT`. A failure only costs wake-ups, so it is ignored.
fn set_recv_lowat(fd: RawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads a c_int from a valid pointer of the given length; `fd` is the
    // connection's own socket, open for as long as the connection.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
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
    /// Two ends of a loopback TCP connection.
    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// Tells the sender the bulk bytes are read, then reads the frame it sends next: a raised
    /// `SO_RCVLOWAT` left in place would hold it back.
    async fn the_frame_after<S: AsyncRead + AsyncWrite + Unpin>(
        rx: &mut Connection<S>,
        all_read: tokio::sync::oneshot::Sender<()>,
    ) {
        all_read.send(()).unwrap();
        let within = std::time::Duration::from_secs(10);
        let msg = tokio::time::timeout(within, rx.read_message())
            .await
            .expect("the frame is not held back")
            .unwrap();
        assert!(matches!(msg, Some(Message::Get(g)) if g.offset == 1));
    }

    #[tokio::test]
    async fn a_frame_after_bulk_bytes_is_read_at_once() {
        // A raised SO_RCVLOWAT left in place would keep a small frame waiting for bytes that
        // never come.
        let (mut a, b) = tcp_pair().await;
        let mut rx = Connection::new(b);
        let body = vec![7u8; 3 * BULK_LOWAT];
        let mut got = vec![0u8; body.len()];
        let (all_read, read_them) = tokio::sync::oneshot::channel::<()>();
        let send = {
            let body = body.clone();
            tokio::spawn(async move {
                a.write_all(&body).await.unwrap();
                // The frame comes only once the reader waits for it, as a request does.
                read_them.await.unwrap();
                let mut tail = Vec::new();
                encode_frame(
                    &Message::Get(Get {
                        name: "x".into(),
                        offset: 1,
                    }),
                    &mut tail,
                );
                a.write_all(&tail).await.unwrap();
                a
            })
        };
        let within = std::time::Duration::from_secs(10);
        let mut filled = 0;
        while filled < got.len() {
            let n = tokio::time::timeout(within, rx.read_raw_bulk(&mut got[filled..]))
                .await
                .expect("bulk bytes arrive")
                .unwrap();
            assert!(n > 0);
            filled += n;
        }
        assert_eq!(got, body);
        the_frame_after(&mut rx, all_read).await;
        drop(send.await.unwrap());
    }

    #[tokio::test]
    async fn a_bulk_read_returns_what_came_when_the_sender_leaves_early() {
        let (mut a, b) = tcp_pair().await;
        let mut rx = Connection::new(b);
        a.write_all(&[1u8; 1000]).await.unwrap();
        drop(a);
        let mut got = vec![0u8; BULK_LOWAT];
        let within = std::time::Duration::from_secs(10);
        let mut filled = 0;
        loop {
            let n = tokio::time::timeout(within, rx.read_raw_bulk(&mut got[filled..]))
                .await
                .expect("not held back waiting for the low-water mark")
                .unwrap();
            if n == 0 {
                break;
            }
            filled += n;
        }
        assert_eq!(filled, 1000);
    }
    #[tokio::test]
    async fn a_bulk_read_takes_a_trickle_without_waiting_for_the_mark() {
        let (mut a, b) = tcp_pair().await;
        let mut rx = Connection::new(b);
        // The bytes come after the reader has started to wait, so only the kernel's low-water
        // mark decides when it wakes.
        let send = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            a.write_all(&[1u8; 400]).await.unwrap();
            a
        });
        let mut got = vec![0u8; 1000];
        // Well under the stall timeouts that callers wrap reads in, well over BULK_PATIENCE.
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            rx.read_raw_bulk(&mut got),
        )
        .await
        .expect("the 400 bytes are read though 1000 are awaited")
        .unwrap();
        assert_eq!(n, 400);
        drop(send.await.unwrap());
    }

    /// Two connections talking TLS over loopback TCP: the hub's end, then the client's.
    async fn tls_pair() -> (
        Connection<crate::stream::Stream>,
        Connection<crate::stream::Stream>,
    ) {
        let state = tempfile::tempdir().unwrap();
        let identity = crate::identity::Identity::load_or_create(state.path()).unwrap();
        let server = identity.server_config(&[crate::tls::ALPN]).unwrap();
        let (client, _) = crate::tls::client_config(Some(identity.fingerprint), None).unwrap();
        let name = rustls::pki_types::ServerName::try_from("troca-hub").unwrap();
        let (near, far) = tcp_pair().await;
        let (near, far) = tokio::join!(
            crate::sealed::accept(near, server),
            crate::sealed::connect(far, client, name)
        );
        let near = Connection::new(crate::stream::Stream::Tls(Box::new(near.unwrap())));
        let far = Connection::new(crate::stream::Stream::Tls(Box::new(far.unwrap())));
        (near, far)
    }

    /// Over TLS a bulk read also waits for the kernel's low-water mark, counted from what the
    /// TLS layer does not already hold: every byte arrives, reads of exactly what is still to
    /// come end, and the frame after them is not held back.
    #[tokio::test]
    async fn over_tls_bulk_bytes_then_a_frame_arrive_whole() {
        let (mut rx, mut tx) = tls_pair().await;
        let body: Vec<u8> = (0..3 * BULK_LOWAT + 12_345).map(|i| i as u8).collect();
        let (all_read, read_them) = tokio::sync::oneshot::channel::<()>();
        let send = {
            let body = body.clone();
            tokio::spawn(async move {
                // A frame first, so the body's start arrives with it and is held by TLS.
                tx.queue(&List { prefix: "p".into() }.into());
                tx.queue_raw(&body);
                tx.flush().await.unwrap();
                read_them.await.unwrap();
                tx.queue(
                    &Get {
                        name: "x".into(),
                        offset: 1,
                    }
                    .into(),
                );
                tx.flush().await.unwrap();
                tx
            })
        };
        let within = std::time::Duration::from_secs(10);
        assert_eq!(
            rx.read_message().await.unwrap(),
            Some(List { prefix: "p".into() }.into())
        );
        let mut got = vec![0u8; body.len()];
        let mut filled = 0;
        while filled < got.len() {
            // At most 1 MiB at a time, ending exactly where the body does.
            let end = (filled + (1 << 20)).min(got.len());
            let n = tokio::time::timeout(within, rx.read_raw_bulk(&mut got[filled..end]))
                .await
                .expect("bulk bytes arrive")
                .unwrap();
            assert!(n > 0);
            filled += n;
        }
        assert!(got == body, "the bytes read are the bytes sent");
        the_frame_after(&mut rx, all_read).await;
        drop(send.await.unwrap());
    }

    /// Over TLS too, what has arrived is taken without waiting: a run of small uploads sent
    /// back to back is gathered as it arrives, not one read's worth at a time (which made the
    /// hub store them in batches of a few files, each with its own flush).
    #[tokio::test]
    async fn over_tls_what_has_arrived_is_taken_without_waiting() {
        use troca_proto::msg::PutSmall;
        let (mut rx, mut tx) = tls_pair().await;
        const FILES: usize = 300;
        let file = |i: usize| PutSmall {
            name: format!("f{i}"),
            force: false,
            blake3: [0; 32],
            modified_ns: 0,
            data: vec![i as u8; 4096],
        };
        let kind = Message::from(file(0)).kind();
        let send = tokio::spawn(async move {
            for i in 0..FILES {
                tx.queue(&file(i).into());
            }
            tx.flush().await.unwrap();
            tx
        });
        assert_eq!(rx.read_message().await.unwrap(), Some(file(0).into()));
        let mut got = 1;
        // Only what `read_arrived` takes in is looked at here: without it reading the socket,
        // this would never end.
        let gathered = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while got < FILES {
                rx.read_arrived(usize::MAX).unwrap();
                while let Some(msg) = rx.buffered_of_kind(kind).unwrap() {
                    assert_eq!(msg, file(got).into());
                    got += 1;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(
            gathered.is_ok(),
            "only {got} of {FILES} files were taken in"
        );
        drop(send.await.unwrap());
    }
}
