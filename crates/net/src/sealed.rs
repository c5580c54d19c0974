//! TLS 1.3 connections: rustls makes the handshake (through its unbuffered API), then hands
//! over the traffic keys and this stream seals and opens the records itself ([`crate::record`]).
//! Received records are decrypted in the buffer they were read into and copied out once;
//! records sent are sealed in one buffer per connection and written in one call. rustls keeps
//! what only it can do: derive the next keys when either side updates them, and take in
//! session tickets.
//!
//! Buffers are held only while they hold bytes (idle connections cost no buffer) and come from
//! a small per-thread pool, so a busy connection does not allocate per read.

use crate::record::{self, Joiner, Keys, Kind, PostHandshake, RecordError};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes read from the socket per call, at most. rustls's own reads take 4 KiB each (several
/// system calls per record); larger reads than this gained nothing and cost memory per
/// connection (see `docs/PERFORMANCE.md`).
const READ_AHEAD: usize = 64 * 1024;
/// A read buffer: what one call may bring, and room for the record it may end inside.
const READ_BUF: usize = READ_AHEAD + record::MAX_RECORD;
/// Records are sent once four full ones are sealed (a larger batch loses the overlap between
/// one side sealing and the other opening: see `docs/PERFORMANCE.md`), with room for a key
/// update besides. Full records keep the receiver's reads whole multiples of 16 KiB, which
/// BLAKE3 hashes fastest.
const WRITE_BUF: usize = 4 * (record::MAX_PLAINTEXT + record::OVERHEAD) + KEY_UPDATE_RECORD;
/// A sealed key update.
const KEY_UPDATE_RECORD: usize = record::KEY_UPDATE.len() + record::OVERHEAD;
/// Bytes of application data taken during the handshake, at most.
const MAX_EARLY: usize = 256 * 1024;
/// Handshake bytes held at once, at most (a certificate chain fits many times over).
const MAX_HANDSHAKE: usize = 256 * 1024;

thread_local! {
    static READ_POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
    static WRITE_POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// Drained buffers kept per thread and kind.
const POOLED: usize = 16;

type Pool = std::thread::LocalKey<std::cell::RefCell<Vec<Box<[u8]>>>>;

fn take(pool: &'static Pool, size: usize) -> Box<[u8]> {
    pool.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| vec![0u8; size].into_boxed_slice())
}

fn give_back(pool: &'static Pool, buf: Box<[u8]>) {
    pool.with_borrow_mut(|p| {
        if p.len() < POOLED {
            p.push(buf);
        }
    });
}

/// rustls's side of a connection after the handshake: it derives the next keys.
enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    fn update(&mut self, transmit: bool) -> Result<Keys, io::Error> {
        let next = match (self, transmit) {
            (Kernel::Client(k), true) => k.update_tx_secret(),
            (Kernel::Client(k), false) => k.update_rx_secret(),
            (Kernel::Server(k), true) => k.update_tx_secret(),
            (Kernel::Server(k), false) => k.update_rx_secret(),
        }
        .map_err(invalid)?;
        Keys::new(&next.1, next.0).map_err(invalid)
    }

    /// Records sealed with one key before it is replaced.
    fn limit(&self) -> u64 {
        let suite = match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        };
        let limit = match suite {
            rustls::SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            #[allow(unreachable_patterns)]
            _ => 1 << 23,
        };
        // Well before the limit, which counts the key update's own record too.
        limit.min(1 << 24) - 1024
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A TLS 1.3 stream once the handshake is done.
pub struct Sealed<S> {
    io: S,
    rx: Keys,
    tx: Keys,
    kernel: Kernel,
    /// Records as read, `raw` the part not yet opened; `plain` the opened record's content
    /// not yet handed out.
    rbuf: Option<Box<[u8]>>,
    raw: std::ops::Range<usize>,
    plain: std::ops::Range<usize>,
    /// Records sealed and not yet written: `wbuf[sent..sealed]`.
    wbuf: Option<Box<[u8]>>,
    sent: usize,
    sealed: usize,
    /// Application data that arrived with the end of the handshake.
    early: Vec<u8>,
    joiner: Joiner,
    /// The peer said close_notify (or closed the socket between records).
    read_closed: bool,
    close_sent: bool,
    /// The peer asked for a key update: one is sent before the next record.
    owe_update: bool,
    limit: u64,
}

impl<S> std::fmt::Debug for Sealed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("rx", &self.rx)
            .field("tx", &self.tx)
            .field("read_closed", &self.read_closed)
            .finish_non_exhaustive()
    }
}

impl<S> Sealed<S> {
    /// The stream beneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes read from the socket and not yet handed out, opened or not.
    pub fn held(&self) -> usize {
        self.early.len() + self.raw.len() + self.plain.len()
    }

    fn new(
        io: S,
        secrets: rustls::ExtractedSecrets,
        kernel: Kernel,
        early: Vec<u8>,
        raw: &[u8],
    ) -> io::Result<Self> {
        let rx = Keys::new(&secrets.rx.1, secrets.rx.0).map_err(invalid)?;
        let tx = Keys::new(&secrets.tx.1, secrets.tx.0).map_err(invalid)?;
        let limit = kernel.limit();
        let mut sealed = Self {
            io,
            rx,
            tx,
            kernel,
            rbuf: None,
            raw: 0..0,
            plain: 0..0,
            wbuf: None,
            sent: 0,
            sealed: 0,
            early,
            joiner: Joiner::default(),
            read_closed: false,
            close_sent: false,
            owe_update: false,
            limit,
        };
        if !raw.is_empty() {
            let mut buf = take(&READ_POOL, READ_BUF);
            buf[..raw.len()].copy_from_slice(raw);
            sealed.rbuf = Some(buf);
            sealed.raw = 0..raw.len();
        }
        Ok(sealed)
    }

    #[cfg(test)]
    pub(crate) fn set_key_limit(&mut self, records: u64) {
        self.limit = records;
    }
}

/// What drives either side's unbuffered connection through the handshake.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn done(&self) -> bool;
}

/// The two sides' unbuffered connections offer the same methods on different types.
macro_rules! handshaking {
    ($conn:ty, $data:ty) => {
        impl Handshaking for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn done(&self) -> bool {
                !self.is_handshaking()
            }
        }
    };
}

handshaking!(UnbufferedClientConnection, ClientConnectionData);
handshaking!(UnbufferedServerConnection, ServerConnectionData);

/// Where a handshake left its bytes.
struct Handshaken {
    /// Bytes received after the last handshake record (the start of the first records).
    raw: Vec<u8>,
    /// Application data rustls already opened.
    early: Vec<u8>,
}

/// Runs the handshake on `io` until both sides may send application data.
async fn handshake<C, S>(conn: &mut C, io: &mut S) -> io::Result<Handshaken>
where
    C: Handshaking,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0u8; record::MAX_RECORD * 2];
    let mut used = 0;
    let mut outgoing = vec![0u8; 4096];
    let mut encoded = 0;
    let mut early = Vec::new();
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process(&mut incoming[..used]);
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                incoming.copy_within(discard..used, 0);
                send_alert(conn, io, &mut incoming[..used - discard], &mut outgoing).await;
                return Err(invalid(e));
            }
        };
        let mut need_more = false;
        match state {
            ConnectionState::EncodeTlsData(mut data) => loop {
                match data.encode(&mut outgoing[encoded..]) {
                    Ok(n) => break encoded += n,
                    Err(EncodeError::InsufficientSize(e)) => {
                        outgoing.resize(encoded + e.required_size, 0);
                    }
                    Err(e) => return Err(invalid(e)),
                }
            },
            ConnectionState::TransmitTlsData(data) => {
                io.write_all(&outgoing[..encoded]).await?;
                io.flush().await?;
                encoded = 0;
                data.done();
            }
            ConnectionState::ReadTraffic(mut data) => {
                while let Some(record) = data.next_record() {
                    let record = record.map_err(invalid)?;
                    discard += record.discard;
                    if early.len() + record.payload.len() > MAX_EARLY {
                        return Err(invalid("too much data during the TLS handshake"));
                    }
                    early.extend_from_slice(record.payload);
                }
            }
            ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake => {
                need_more = true;
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(closed_in_handshake())
            }
            _ => return Err(invalid("unexpected early data in the TLS handshake")),
        }
        incoming.copy_within(discard..used, 0);
        used -= discard;
        if need_more && conn.done() {
            incoming.truncate(used);
            return Ok(Handshaken {
                raw: incoming,
                early,
            });
        }
        if need_more {
            used += read_more(io, &mut incoming, used).await?;
        }
    }
}

/// Reads more of the handshake after the `used` bytes of `incoming`, growing it (within
/// `MAX_HANDSHAKE`) when full; how many bytes came.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    incoming: &mut Vec<u8>,
    used: usize,
) -> io::Result<usize> {
    if used == incoming.len() {
        if incoming.len() >= MAX_HANDSHAKE {
            return Err(invalid("a TLS handshake message over the limit"));
        }
        incoming.resize(incoming.len() * 2, 0);
    }
    match io.read(&mut incoming[used..]).await? {
        0 => Err(closed_in_handshake()),
        n => Ok(n),
    }
}

fn closed_in_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed during the TLS handshake",
    )
}

/// After a failed handshake, sends the alert rustls made for it, if it can. `incoming` is
/// what the failed step left (rustls may still refer to it). rustls is asked once only: the
/// alert, if any, comes first; asking again would make it read the same bad bytes again (and
/// assert that it never sends two fatal alerts).
async fn send_alert<C, S>(conn: &mut C, io: &mut S, incoming: &mut [u8], outgoing: &mut Vec<u8>)
where
    C: Handshaking,
    S: AsyncWrite + Unpin,
{
    if let Ok(ConnectionState::EncodeTlsData(mut data)) = conn.process(incoming).state {
        outgoing.resize(512, 0);
        if let Ok(n) = data.encode(outgoing) {
            let _ = io.write_all(&outgoing[..n]).await;
        }
    }
}

/// The server's side: a TLS handshake on an accepted connection. `config` must allow secret
/// extraction.
pub async fn accept<S>(mut io: S, config: Arc<rustls::ServerConfig>) -> io::Result<Sealed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let done = handshake(&mut conn, &mut io).await?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(invalid)?;
    Sealed::new(io, secrets, Kernel::Server(kernel), done.early, &done.raw)
}

/// The client's side. `config` must allow secret extraction.
pub async fn connect<S>(
    mut io: S,
    config: Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> io::Result<Sealed<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    let done = handshake(&mut conn, &mut io).await?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(invalid)?;
    Sealed::new(io, secrets, Kernel::Client(kernel), done.early, &done.raw)
}

impl<S: AsyncRead + Unpin> Sealed<S> {
    /// Hands out what is opened; `true` if anything was.
    fn hand_out(&mut self, dst: &mut ReadBuf<'_>) -> bool {
        if !self.early.is_empty() {
            let n = dst.remaining().min(self.early.len());
            dst.put_slice(&self.early[..n]);
            self.early.drain(..n);
            if self.early.is_empty() {
                self.early = Vec::new();
            }
            return true;
        }
        let Some(buf) = &self.rbuf else { return false };
        if self.plain.is_empty() {
            return false;
        }
        let n = dst.remaining().min(self.plain.len());
        dst.put_slice(&buf[self.plain.start..self.plain.start + n]);
        self.plain.start += n;
        self.release_if_drained();
        true
    }

    /// Gives the read buffer back once nothing in it is left to hand out or open.
    fn release_if_drained(&mut self) {
        if self.plain.is_empty() && self.raw.is_empty() {
            if let Some(buf) = self.rbuf.take() {
                give_back(&READ_POOL, buf);
            }
        }
    }

    /// Opens the next whole record held, if there is one: `true` if one was taken.
    fn open_next(&mut self) -> io::Result<bool> {
        let Some(buf) = &mut self.rbuf else {
            return Ok(false);
        };
        let Some(len) = record::whole(&buf[self.raw.clone()]).map_err(invalid)? else {
            return Ok(false);
        };
        let at = self.raw.start;
        let opened = self.rx.open(&mut buf[at..at + len]).map_err(invalid)?;
        self.raw.start += len;
        let content = at + opened.content.start..at + opened.content.end;
        if opened.kind != Kind::Handshake && !self.joiner.is_empty() {
            return Err(invalid("a TLS handshake message cut by another record"));
        }
        match opened.kind {
            Kind::ApplicationData => self.plain = content,
            Kind::Alert => match buf[content] {
                [_, 0] => self.read_closed = true,
                // user_canceled is a warning; close_notify follows.
                [_, 90] => {}
                [_, code] => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("the peer ended the TLS connection (alert {code})"),
                    ))
                }
                _ => return Err(invalid("a malformed TLS alert")),
            },
            Kind::Handshake => {
                let bytes = buf[content].to_vec();
                self.post_handshake(&bytes)?;
            }
        }
        Ok(true)
    }

    fn post_handshake(&mut self, content: &[u8]) -> io::Result<()> {
        self.joiner.push(content).map_err(invalid)?;
        while let Some(message) = self.joiner.next_message().map_err(invalid)? {
            match message {
                PostHandshake::NewSessionTicket(ticket) => {
                    if let Kernel::Client(k) = &mut self.kernel {
                        k.handle_new_session_ticket(&ticket).map_err(invalid)?;
                    }
                }
                PostHandshake::KeyUpdate { requested } => {
                    // A key update must end its record: what follows uses the next key.
                    if !self.joiner.is_empty() {
                        return Err(invalid(RecordError::UnexpectedHandshake(24)));
                    }
                    self.rx = self.kernel.update(false)?;
                    self.owe_update |= requested;
                }
            }
        }
        Ok(())
    }

    /// Reads more records from the socket; `Ok(0)` at its end. Called only once everything
    /// opened has been handed out.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let buf = self.rbuf.get_or_insert_with(|| take(&READ_POOL, READ_BUF));
        self.plain = 0..0;
        if self.raw.is_empty() {
            self.raw = 0..0;
        } else if self.raw.end + record::MAX_RECORD > buf.len() {
            // Room for a whole record after the part of one that is held.
            buf.copy_within(self.raw.clone(), 0);
            self.raw = 0..self.raw.len();
        }
        let end = (self.raw.end + READ_AHEAD).min(buf.len());
        let mut into = ReadBuf::new(&mut buf[self.raw.end..end]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut into);
        let n = into.filled().len();
        self.raw.end += n;
        // Nothing held while waiting: an idle connection keeps no buffer.
        self.release_if_drained();
        ready!(polled)?;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Sealed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.hand_out(dst) {
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                this.release_if_drained();
                return Poll::Ready(Ok(()));
            }
            if this.open_next()? {
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                if !this.raw.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed inside a TLS record",
                    )));
                }
                // Closed between records without close_notify: the protocol above has its
                // own lengths, so this is its end of stream.
                this.read_closed = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Sealed<S> {
    /// Seals `content` as one record of `kind` after what is already sealed.
    fn seal(&mut self, kind: Kind, content: &[u8]) {
        let buf = self
            .wbuf
            .get_or_insert_with(|| take(&WRITE_POOL, WRITE_BUF));
        let at = self.sealed;
        buf[at + record::HEADER..at + record::HEADER + content.len()].copy_from_slice(content);
        self.sealed += self.tx.seal(kind, &mut buf[at..], content.len());
    }

    /// The content the next record may carry, leaving room for a key update before it.
    fn room(&self) -> usize {
        let reserve = record::OVERHEAD + KEY_UPDATE_RECORD;
        (WRITE_BUF - self.sealed).saturating_sub(reserve)
    }

    /// Sends a key update first if the peer asked for one or this key has sealed its share.
    fn update_key_if_due(&mut self) -> io::Result<()> {
        if self.owe_update || self.tx.seq() >= self.limit {
            self.seal(Kind::Handshake, &record::KEY_UPDATE);
            self.tx = self.kernel.update(true)?;
            self.owe_update = false;
        }
        Ok(())
    }

    /// Writes sealed records until none are left (`Ready`) or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.sealed {
            let buf = self.wbuf.as_ref().expect("sealed records have a buffer");
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &buf[self.sent..self.sealed]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        (self.sent, self.sealed) = (0, 0);
        if let Some(buf) = self.wbuf.take() {
            give_back(&WRITE_POOL, buf);
        }
        Poll::Ready(Ok(()))
    }
}

/// Records filled from a file per call of [`Sealed::send_file_at`].
const FILE_RECORDS: usize = 4;

impl<S: AsyncWrite + Unpin> Sealed<S> {
    /// Sends up to 1 MiB of `file` from `offset` (at most `len` bytes), read straight into
    /// the records that carry them: no copy between the read and the sealing. `seen` is shown
    /// each record's bytes before they are sealed (to hash them). Returns the bytes taken from
    /// the file (0 at its end); the last of them are sent by the next write or flush, if not
    /// at once.
    pub async fn send_file_at(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        mut seen: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        let want = len.min(crate::CHUNK as u64);
        let mut done = 0;
        while done < want {
            let n = self
                .seal_from_file(file, offset + done, want - done, &mut seen)
                .await?;
            if n == 0 {
                break;
            }
            done += n as u64;
        }
        Ok(usize::try_from(done).expect("at most a chunk"))
    }

    /// Up to four records' worth of [`Sealed::send_file_at`].
    async fn seal_from_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: u64,
        mut seen: impl FnMut(&[u8]),
    ) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_drain(cx)).await?;
        self.update_key_if_due()?;
        let base = self.sealed;
        let buf = self
            .wbuf
            .get_or_insert_with(|| take(&WRITE_POOL, WRITE_BUF));
        let want = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(FILE_RECORDS * record::MAX_PLAINTEXT);
        let n = read_into_records(file, offset, &mut buf[base..], want)?;
        let mut at = base;
        for content in (0..n).step_by(record::MAX_PLAINTEXT) {
            let take = (n - content).min(record::MAX_PLAINTEXT);
            seen(&buf[at + record::HEADER..at + record::HEADER + take]);
            at += self.tx.seal(Kind::ApplicationData, &mut buf[at..], take);
        }
        self.sealed = at;
        // Sent now if the socket takes it.
        if let Poll::Ready(Err(e)) =
            std::future::poll_fn(|cx| Poll::Ready(self.poll_drain(cx))).await
        {
            return Err(e);
        }
        Ok(n)
    }
}

/// Reads up to `want` bytes of `file` at `offset` with one `preadv`, into the content slots
/// of consecutive full records laid out from the start of `buf`.
fn read_into_records(
    file: &std::fs::File,
    offset: u64,
    buf: &mut [u8],
    want: usize,
) -> io::Result<usize> {
    let stride = record::MAX_PLAINTEXT + record::OVERHEAD;
    let mut slots = Vec::with_capacity(FILE_RECORDS);
    let (mut rest, mut left) = (buf, want);
    while left > 0 {
        let (slot, tail) = rest.split_at_mut(stride.min(rest.len()));
        let take = left.min(record::MAX_PLAINTEXT);
        slots.push(io::IoSliceMut::new(
            &mut slot[record::HEADER..record::HEADER + take],
        ));
        (rest, left) = (tail, left - take);
    }
    Ok(rustix::io::preadv(file, &mut slots, offset)?)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Sealed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.room() < record::MAX_PLAINTEXT.min(src.len()) {
            ready!(this.poll_drain(cx))?;
        }
        let mut taken = 0;
        while taken < src.len() && this.room() > 0 {
            this.update_key_if_due()?;
            let n = (src.len() - taken)
                .min(record::MAX_PLAINTEXT)
                .min(this.room());
            this.seal(Kind::ApplicationData, &src[taken..taken + n]);
            taken += n;
        }
        // Sent now if the socket takes it; otherwise by the next write or flush.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            if this.room() == 0 {
                ready!(this.poll_drain(cx))?;
            }
            this.seal(Kind::Alert, &record::CLOSE_NOTIFY);
            this.close_sent = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    struct Configs {
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        _state: tempfile::TempDir,
    }

    fn configs() -> Configs {
        let state = tempfile::tempdir().unwrap();
        let identity = crate::identity::Identity::load_or_create(state.path()).unwrap();
        let server = identity.server_config(&[crate::tls::ALPN]).unwrap();
        let (client, _) = crate::tls::client_config(Some(identity.fingerprint), None).unwrap();
        Configs {
            server,
            client,
            _state: state,
        }
    }

    fn name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from("troca-hub").unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8 ^ seed).collect()
    }

    /// Writes `data` in pieces of varied sizes, then closes the write side.
    async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) {
        let mut at = 0;
        for size in [1, 5, 16_384, 16_385, 100_000, 7].iter().cycle() {
            if at == data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            w.write_all(&data[at..end]).await.unwrap();
            at = end;
        }
        w.flush().await.unwrap();
    }

    /// Both ways at once: `a` sends `ab` and reads until `ba` has come, and `b` likewise.
    async fn exchange<A, B>(a: &mut A, b: &mut B, ab: &[u8], ba: &[u8])
    where
        A: AsyncRead + AsyncWrite + Unpin,
        B: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let mut got_ab = vec![0u8; ab.len()];
        let mut got_ba = vec![0u8; ba.len()];
        tokio::join!(
            send_all(&mut aw, ab),
            send_all(&mut bw, ba),
            async { br.read_exact(&mut got_ab).await.unwrap() },
            async { ar.read_exact(&mut got_ba).await.unwrap() },
        );
        assert!(got_ab == ab, "bytes from a arrived changed");
        assert!(got_ba == ba, "bytes from b arrived changed");
    }

    fn pipe() -> (DuplexStream, DuplexStream) {
        tokio::io::duplex(64 * 1024)
    }

    /// A standard TLS client (rustls's own record layer) and this server understand each
    /// other both ways, through a key update the client asks for, to a clean close.
    #[tokio::test]
    async fn a_rustls_client_talks_to_a_sealed_server_through_key_updates() {
        let c = configs();
        let (near, far) = pipe();
        let (server, client) = tokio::join!(
            accept(near, Arc::clone(&c.server)),
            tokio_rustls::TlsConnector::from(Arc::clone(&c.client)).connect(name(), far),
        );
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        exchange(
            &mut client,
            &mut server,
            &pattern(3_000_000, 1),
            &pattern(2_000_000, 2),
        )
        .await;
        // rustls asks for an update back: both directions change keys.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let (rx, tx) = (server.rx.seq(), server.tx.seq());
        exchange(
            &mut client,
            &mut server,
            &pattern(500_000, 3),
            &pattern(700_000, 4),
        )
        .await;
        assert!(server.rx.seq() < rx, "the server's receiving key changed");
        assert!(server.tx.seq() < tx, "the server's sending key changed");
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
        server.shutdown().await.unwrap();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert!(
            server.rbuf.is_none() && server.wbuf.is_none(),
            "a drained stream holds no buffer"
        );
    }

    /// This client and a standard TLS server: session tickets taken in, and the client's
    /// own key updates (forced early here) accepted by rustls.
    #[tokio::test]
    async fn a_sealed_client_talks_to_a_rustls_server_and_updates_its_keys() {
        let c = configs();
        let (near, far) = pipe();
        let (server, client) = tokio::join!(
            tokio_rustls::TlsAcceptor::from(Arc::clone(&c.server)).accept(near),
            connect(far, Arc::clone(&c.client), name()),
        );
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        client.set_key_limit(10);
        exchange(
            &mut client,
            &mut server,
            &pattern(2_500_000, 5),
            &pattern(1_500_000, 6),
        )
        .await;
        assert!(
            client.tx.seq() <= 10,
            "the client changed keys every 10 records"
        );
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }

    /// What a client sends right after its last handshake message may reach the server in the
    /// same read; it comes out first, in order, before what follows.
    #[tokio::test]
    async fn data_sent_with_the_end_of_the_handshake_comes_out_first() {
        let c = configs();
        let (near, far) = pipe();
        let server = tokio::spawn(accept(near, Arc::clone(&c.server)));
        let mut client = connect(far, Arc::clone(&c.client), name()).await.unwrap();
        // No await gives the server a turn before these are in the pipe with the Finished.
        client.write_all(b"hello ").await.unwrap();
        client.write_all(b"world").await.unwrap();
        let mut server = server.await.unwrap().unwrap();
        assert!(
            !server.early.is_empty(),
            "rustls opened the first record during the handshake"
        );
        let mut got = [0u8; 11];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        exchange(
            &mut client,
            &mut server,
            &pattern(100_000, 9),
            &pattern(10, 10),
        )
        .await;
        assert!(
            server.early.capacity() == 0,
            "the early bytes' buffer is gone once read"
        );
    }

    /// Both ends sealed, through a pipe much narrower than what is sent: `flush` delivers
    /// everything (a reader waiting for the end of a response must not wait for ever).
    #[tokio::test]
    async fn a_flushed_sealed_stream_delivers_everything_through_a_narrow_pipe() {
        let c = configs();
        let (near, far) = tokio::io::duplex(1024);
        let (server, client) = tokio::join!(
            accept(near, Arc::clone(&c.server)),
            connect(far, Arc::clone(&c.client), name()),
        );
        let (server, mut client) = (server.unwrap(), client.unwrap());
        let body = pattern(300_000, 7);
        let sent = body.clone();
        let (done, hold) = tokio::sync::oneshot::channel::<()>();
        let sender = tokio::spawn(async move {
            let mut conn = crate::Connection::new(server);
            conn.queue_raw(&sent);
            conn.flush().await.unwrap();
            // Stays open, and no longer driven, until the reader is done.
            let _ = hold.await;
        });
        let mut got = vec![0u8; body.len()];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            client.read_exact(&mut got),
        )
        .await;
        drop(done);
        sender.await.unwrap();
        assert!(read.is_ok(), "the end of the response never arrived");
        assert!(got == body);
    }

    /// A file's range goes out read straight into records: a standard TLS client gets exactly
    /// those bytes, `seen` is shown them in order, and a file shorter than promised is an error.
    #[tokio::test]
    async fn a_file_range_sealed_where_it_is_read_arrives_whole() {
        let c = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (near, far) = tokio::join!(listener.accept(), tokio::net::TcpStream::connect(addr));
        let (server, client) = tokio::join!(
            accept(near.unwrap().0, Arc::clone(&c.server)),
            tokio_rustls::TlsConnector::from(Arc::clone(&c.client)).connect(name(), far.unwrap()),
        );
        let server = crate::Stream::Tls(Box::new(server.unwrap()));
        let mut client = client.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3 * 1024 * 1024 + 12_345, 11);
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let file = std::fs::File::open(dir.path().join("f")).unwrap();
        let (offset, len) = (777u64, 2 * 1024 * 1024 + 5_000u64);
        let range = &data[offset as usize..(offset + len) as usize];
        let mut conn = crate::Connection::new(server);
        let mut seen = Vec::new();
        let mut got = vec![0u8; range.len()];
        let stall = std::time::Duration::from_secs(30);
        let (sent, read) = tokio::join!(
            conn.send_file_range_seen(
                &file,
                offset,
                len,
                stall,
                |_| {},
                |b| seen.extend_from_slice(b)
            ),
            client.read_exact(&mut got),
        );
        sent.unwrap();
        read.unwrap();
        assert!(got == range, "the bytes sent are the file's");
        assert!(seen == range, "seen was shown exactly the bytes sent");
        let short = conn
            .send_file_range(&file, data.len() as u64 - 10, 100, stall, |_| {})
            .await
            .unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof, "{short}");
    }

    /// A server that answers without TLS (a `--plaintext` hub) is a clear error, and the
    /// client ends with a fatal alert: no panic, however the bytes arrive.
    #[tokio::test]
    async fn a_server_answering_without_tls_is_an_error_and_an_alert() {
        let c = configs();
        let (mut near, far) = pipe();
        near.write_all(b"\x00\x00\x00\x10not a TLS record at all")
            .await
            .unwrap();
        let err = connect(far, Arc::clone(&c.client), name())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("InvalidContentType"), "{err}");
        let mut sent = Vec::new();
        near.read_to_end(&mut sent).await.unwrap();
        let mut kinds = Vec::new();
        let mut at = 0;
        while at + 5 <= sent.len() {
            kinds.push(sent[at]);
            at += 5 + usize::from(u16::from_be_bytes([sent[at + 3], sent[at + 4]]));
        }
        assert_eq!(kinds, [22, 21], "a ClientHello, then an alert");
    }

    /// A byte changed on the way is an error, never data.
    #[tokio::test]
    async fn a_record_changed_on_the_way_is_refused() {
        let c = configs();
        let (near, mid_a) = pipe();
        let (mid_b, far) = pipe();
        let corrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&corrupt);
        // Client to server bytes pass through here; server to client ones go straight.
        let relay = tokio::spawn(async move {
            let (mut from_client, mut to_client) = tokio::io::split(mid_b);
            let (mut from_server, mut to_server) = tokio::io::split(mid_a);
            let up = async {
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = from_client.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    if n > 20 && flag.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        buf[20] ^= 1;
                    }
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            };
            let down = async {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            };
            tokio::join!(up, down);
        });
        let (server, client) = tokio::join!(
            accept(near, Arc::clone(&c.server)),
            connect(far, Arc::clone(&c.client), name()),
        );
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        exchange(&mut client, &mut server, b"hello", b"welcome").await;
        corrupt.store(true, std::sync::atomic::Ordering::SeqCst);
        client.write_all(&pattern(1000, 8)).await.unwrap();
        client.flush().await.unwrap();
        let mut got = vec![0u8; 1000];
        let err = server.read_exact(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains("authentication"), "{err}");
        drop((server, client));
        relay.await.unwrap();
    }
}
