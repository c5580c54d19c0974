//! The peer's TCP server: answers `Pieces` with a file's piece hashes, `GetPiece` with the
//! piece's bytes (sent with `sendfile` straight from the page cache) and `Holding` with which
//! pieces it holds, then a `Have` for each new one. It serves the files of its [`Library`] and
//! those it is downloading ([`Partials`]), each piece as soon as it is verified.
//!
//! **Upload slots.** A peer sends at most `upload_slots` pieces at once (4 by default), over all
//! its connections. A `GetPiece` that finds them all sending is answered `Error(Busy)` at once,
//! and the connection is sent `SlotFree` when one opens: the downloader asks someone else
//! meanwhile, instead of waiting behind others for a share of this peer's link while another
//! peer sits idle. Each piece then goes out at a larger share of the link, so it can be passed
//! on sooner (`troca-swarm-sim`: what a crowd gains). One address holds at most half the
//! slots, and a piece must go out in its time, so slow receivers cannot keep them all.
//!
//! Files are asked for by id only, and only ids in the [`Library`] are served, so nothing outside
//! the shared folder can be named. A file that changed on disk since it was hashed is refused
//! (its old id no longer describes it) until the next scan re-hashes it.

use crate::library::{Library, SharedFile};
use crate::partial::{Partial, Partials};
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troca_net::connection::FrameError;
use troca_net::limits::{AddressSlot, PerAddress};
use troca_net::pace::{Limit, Limits, Pacer};
use troca_net::stream::Stream;
use troca_net::Connection;
use troca_proto::msg::{
    Bitfield, Error, Have, PieceData, PieceHashes, SlotFree, Welcome, HASHES_PER_FRAME,
};
use troca_proto::pieces::Layout;
use troca_proto::{ErrorCode, Hash, Message, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// How a peer's server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold at once.
    pub max_connections_per_ip: usize,
    /// How long a new connection may take to say hello.
    pub handshake_timeout: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Upload cap in bytes per second, shared by all connections (`None`: no cap).
    pub max_rate: Option<u64>,
    /// TLS for every connection (`None`: plaintext).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Pieces sent at once, over all connections (0: no limit); past it a request is answered
    /// busy, and `SlotFree` follows when one opens.
    pub upload_slots: usize,
    /// Initial seeding (see [`crate::spread`]): while some piece of a file found in the folder
    /// has gone to no sharing downloader, a sharing downloader's request for one that has is
    /// answered `Deferred` (once per piece and connection), and it asks for another at once.
    pub super_seed: bool,
    /// Counts what is served, for the metrics.
    pub stats: Arc<crate::stats::PeerStats>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_connections_per_ip: 16,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_rate: None,
            tls: None,
            upload_slots: DEFAULT_UPLOAD_SLOTS,
            super_seed: true,
            stats: Arc::default(),
        }
    }
}

/// Pieces a peer sends at once unless told otherwise. Fewer requests out per downloader than
/// this (`download::CROWD_IN_FLIGHT` is more) would leave slots empty in a crowd; one address
/// holds at most half, which is also what a downloader keeps at a full copy
/// (`download::Options::pipeline`).
pub const DEFAULT_UPLOAD_SLOTS: usize = 8;

/// The upload slots of a peer, shared by its connections. One address (an IPv6 /64) holds at
/// most half of them, so a few slow or hostile connections cannot keep every slot from the
/// rest of the swarm (and a piece must go out within its time: see `Serving::send_timed`).
#[derive(Debug)]
struct UploadSlots {
    slots: Option<Arc<Semaphore>>,
    count: usize,
    /// Slots each address holds now, at most half of them.
    per_address: Arc<PerAddress>,
    /// Counts the slots given back: a connection refused at one value hears of the next.
    freed: tokio::sync::watch::Sender<u64>,
}

impl UploadSlots {
    fn new(count: usize) -> Self {
        Self {
            slots: (count > 0).then(|| Arc::new(Semaphore::new(count))),
            count,
            per_address: PerAddress::new((count / 2).max(1)),
            freed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A slot for a piece to `ip`, held until the guard drops; `Err` with a receiver that
    /// hears when one is given back, if all are taken or `ip`'s address holds its share.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, tokio::sync::watch::Receiver<u64>> {
        let Some(sem) = &self.slots else {
            return Ok(Slot { _taken: None });
        };
        let address = self.per_address.take(ip);
        let permit = address
            .as_ref()
            .and_then(|_| Arc::clone(sem).try_acquire_owned().ok());
        match (permit, address) {
            (Some(permit), Some(address)) => Ok(Slot {
                _taken: Some(Taken {
                    permit: Some(permit),
                    address: Some(address),
                    slots: Arc::clone(self),
                }),
            }),
            _ => {
                let mut rx = self.freed.subscribe();
                rx.borrow_and_update();
                Err(rx)
            }
        }
    }

    /// Whether some slot is sending now (so deferring a request leaves the link busy).
    fn sending(&self) -> bool {
        self.slots
            .as_ref()
            .is_some_and(|sem| sem.available_permits() < self.count)
    }
}

/// The pieces of one shared file given on a connection whose downloader shares them, counted
/// in the file's [`crate::spread::Spread`] until the connection closes or asks about another file.
struct Given {
    file: Arc<SharedFile>,
    /// One bit per piece.
    pieces: Vec<u64>,
    /// The pieces deferred on this connection, one bit each: a piece is deferred once, so a
    /// downloader that asks again (it has nothing else to do) is served.
    deferred: Vec<u64>,
}

impl Given {
    fn new(file: Arc<SharedFile>) -> Self {
        let words = file.pieces.len().div_ceil(64);
        Self {
            file,
            pieces: vec![0; words],
            deferred: vec![0; words],
        }
    }

    /// Whether a request for `index` is deferred: the file's spread says so, and it was not
    /// deferred on this connection before (then it is marked).
    fn defers(&mut self, index: u32) -> bool {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        let (Some(w), Some(spread)) = (self.deferred.get_mut(word), &self.file.spread) else {
            return false;
        };
        if *w & bit != 0 || !spread.lock().expect("not poisoned").defers(index) {
            return false;
        }
        *w |= bit;
        true
    }

    fn give(&mut self, index: u32) {
        let (word, bit) = (index as usize / 64, 1u64 << (index % 64));
        let (Some(w), Some(spread)) = (self.pieces.get_mut(word), &self.file.spread) else {
            return;
        };
        if *w & bit == 0 {
            *w |= bit;
            spread.lock().expect("not poisoned").give(index);
        }
    }
}

impl Drop for Given {
    fn drop(&mut self) {
        let Some(spread) = &self.file.spread else {
            return;
        };
        let mut spread = spread.lock().expect("not poisoned");
        for (k, &w) in self.pieces.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                spread.take_back((k * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
    }
}

/// A piece being sent holds one slot (`None`: slots are off); dropped, it gives it back.
struct Slot {
    _taken: Option<Taken>,
}

struct Taken {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    address: Option<AddressSlot>,
    slots: Arc<UploadSlots>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        // Given back before those refused hear of it, so the first to ask again gets it.
        drop(self.permit.take());
        drop(self.address.take());
        self.slots.freed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Waits until a slot is given back, for a connection owed a `SlotFree`; never returns for
/// one that is not.
/// `f`'s output, unless `limit` (if any) passes first.
async fn within<F: std::future::Future>(limit: Option<Duration>, f: F) -> Option<F::Output> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, f).await.ok(),
        None => Some(f.await),
    }
}

async fn slot_freed(refused: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match refused {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Serves `library` on `listener` until `shutdown`; then waits for pieces being sent.
pub async fn run(
    listener: TcpListener,
    library: Arc<Library>,
    partials: Arc<Partials>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_address = PerAddress::new(config.max_connections_per_ip);
    let shared = Shared {
        uploads: Arc::new(UploadSlots::new(config.upload_slots)),
        limit: send_pacer(config.max_rate),
        library,
        partials,
        config,
    };
    let tasks = TaskTracker::new();
    let busy = |why: &str| {
        let mut out = Vec::new();
        troca_proto::encode_frame(&Error::new(ErrorCode::Busy, why).into(), &mut out);
        out
    };
    let (full, crowded) = (
        busy("this peer is serving its maximum of connections; try again shortly"),
        busy("too many connections from your address; close some and try again"),
    );
    loop {
        let Some((stream, addr)) = troca_net::accept(&listener, &shutdown, &full).await else {
            break;
        };
        let Some(from_address) = per_address.take(addr.ip()) else {
            tracing::debug!("refusing {addr}: at the per-address limit");
            let _ = stream.try_write(&crowded);
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("refusing {addr}: at the connection limit");
            let _ = stream.try_write(&full);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _held = (permit, from_address);
            serve_peer(stream, addr, shared, stop).await;
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// What every connection of a peer shares.
#[derive(Clone)]
struct Shared {
    library: Arc<Library>,
    partials: Arc<Partials>,
    config: ServerConfig,
    /// The cap on what this peer sends, if any.
    limit: Option<Arc<Pacer>>,
    uploads: Arc<UploadSlots>,
}

/// The cap on what a peer sends (`max_rate`), shared by all its connections.
fn send_pacer(max_rate: Option<u64>) -> Option<Arc<Pacer>> {
    max_rate.map(|rate| {
        Arc::new(Pacer::new(Limits {
            send: Limit {
                total: Some(rate),
                per_address: None,
            },
            ..Limits::default()
        }))
    })
}

/// Serves one downloader's connection until it ends or `stop`.
async fn serve_peer(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    shared: Shared,
    stop: CancellationToken,
) {
    let Some(stream) = secure(stream, &shared.config).await else {
        tracing::debug!("TLS handshake with {addr} failed or timed out");
        return;
    };
    let mut conn = Connection::new(stream);
    // A downloader that asks and reads no answer must not hold its slot for ever.
    conn.set_write_stall(shared.config.idle_timeout);
    conn.set_pace(shared.limit.as_ref().and_then(|p| p.shared_pace()));
    let mut serving = Serving {
        conn,
        library: shared.library,
        partials: shared.partials,
        config: shared.config,
        limit: shared.limit,
        open: None,
        news: None,
        uploads: shared.uploads,
        refused: None,
        from: addr.ip(),
        given: None,
    };
    if let Err(e) = serving.run(&stop).await {
        tracing::debug!("peer connection from {addr} ended: {e}");
    }
}

/// The connection's stream: TLS within the handshake time when the peer has a key.
async fn secure(tcp: TcpStream, config: &ServerConfig) -> Option<Stream> {
    let Some(tls) = &config.tls else {
        return Some(Stream::Plain(tcp));
    };
    match tokio::time::timeout(
        config.handshake_timeout,
        troca_net::sealed::accept(tcp, Arc::clone(tls)),
    )
    .await
    {
        Ok(Ok(stream)) => Some(Stream::Tls(Box::new(stream))),
        _ => None,
    }
}

struct Serving {
    conn: Connection<Stream>,
    library: Arc<Library>,
    config: ServerConfig,
    /// The upload cap, which this connection's sends are held to.
    limit: Option<Arc<Pacer>>,
    partials: Arc<Partials>,
    /// The file of the last piece sent, kept open for the next request (usually the next piece).
    open: Option<(Arc<SharedFile>, File)>,
    /// The file being downloaded here that the other end asked to hear about (`Holding`).
    news: Option<(Arc<Partial>, broadcast::Receiver<u32>)>,
    uploads: Arc<UploadSlots>,
    /// Set once a request was answered busy: a `SlotFree` is owed when a slot is given back.
    refused: Option<tokio::sync::watch::Receiver<u64>>,
    /// Where the connection comes from (its address's share of the slots).
    from: IpAddr,
    /// The shared file the other end said it shares as it downloads, and what it got of it.
    given: Option<Given>,
}

/// What a connection does next.
enum Next {
    Request(Message),
    /// A piece of the file it listens to became available (or, `None`, some were missed).
    News(Option<u32>),
    /// An upload slot was given back since this connection was answered busy.
    SlotFree,
    End,
}

/// The next piece a listener hears of; `None` if it fell behind and missed some. Never
/// returns when nothing is listened to.
async fn news(news: &mut Option<(Arc<Partial>, broadcast::Receiver<u32>)>) -> Option<u32> {
    let Some((_, rx)) = news else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(index) => Some(index),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        // The sender lives as long as the partial, which this connection holds.
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

impl Serving {
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), FrameError> {
        let hello = tokio::time::timeout(self.config.handshake_timeout, self.next(shutdown)).await;
        let Ok(hello) = hello else {
            return self
                .refuse(ErrorCode::Timeout, "no hello received in time")
                .await;
        };
        match hello? {
            Next::Request(Message::Hello(h))
                if h.magic == MAGIC && h.version == PROTOCOL_VERSION => {}
            Next::End => return Ok(()),
            _ => {
                return self
                    .refuse(ErrorCode::UnsupportedVersion, "expected a troca Hello")
                    .await
            }
        }
        self.conn
            .send(
                &Welcome {
                    version: PROTOCOL_VERSION,
                    server: format!("troca-peer {}", env!("CARGO_PKG_VERSION")),
                    max_frame: MAX_FRAME_LEN as u32,
                }
                .into(),
            )
            .await?;
        loop {
            let msg = match self.next(shutdown).await? {
                Next::End => return Ok(()),
                Next::News(Some(index)) => {
                    let id = self.news.as_ref().map(|(p, _)| p.id).unwrap_or_default();
                    self.conn.send(&Have { id, index }.into()).await?;
                    continue;
                }
                Next::News(None) => {
                    // Fell behind: the whole bitfield again, and news from now on.
                    if let Some((partial, _)) = self.news.take() {
                        self.send_bitfield_of(partial).await?;
                    }
                    continue;
                }
                Next::SlotFree => {
                    self.refused = None;
                    self.conn.send(&SlotFree.into()).await?;
                    continue;
                }
                Next::Request(msg) => msg,
            };
            match msg {
                Message::Pieces(p) => self.send_hashes(&p.id).await?,
                Message::GetPiece(g) => self.send_piece(&g.id, g.index).await?,
                Message::Holding(h) => self.send_bitfield(&h.id, h.sharing).await?,
                other => {
                    let what = format!("a peer does not answer {}", other.name());
                    return self.refuse(ErrorCode::BadRequest, &what).await;
                }
            }
        }
    }

    /// The next request or piece of news; `End` at a clean close, at shutdown or after the idle
    /// timeout. A connection answered busy is not idle: it waits for this peer's `SlotFree`,
    /// which comes within the time the slots' pieces may take (each bounded), and its idle time
    /// starts again once that is sent.
    async fn next(&mut self, shutdown: &CancellationToken) -> Result<Next, FrameError> {
        let idle = self.refused.is_none().then_some(self.config.idle_timeout);
        let (conn, listening, refused) = (&mut self.conn, &mut self.news, &mut self.refused);
        tokio::select! {
            _ = shutdown.cancelled() => Ok(Next::End),
            () = slot_freed(refused) => Ok(Next::SlotFree),
            r = within(idle, conn.read_message()) => match r {
                Some(Ok(Some(m))) => Ok(Next::Request(m)),
                Some(Err(e)) => Err(e),
                Some(Ok(None)) | None => Ok(Next::End),
            },
            n = news(listening) => Ok(Next::News(n)),
        }
    }

    /// Answers `Holding`: which pieces are held (all, for a shared file), then news of each new
    /// one for a file being downloaded.
    async fn send_bitfield(&mut self, id: &Hash, sharing: bool) -> Result<(), FrameError> {
        // A second `Holding` is about another file, or the same one again: what was given
        // before counts no more (and again from now on, if it still shares).
        self.given = None;
        if let Some(f) = self.library.get(id) {
            if sharing && self.config.super_seed && f.spread.is_some() {
                self.given = Some(Given::new(Arc::clone(&f)));
            }
            let count = Layout::for_len(f.size).count() as usize;
            let all = Bitfield::of(*id, &vec![true; count]);
            return self.conn.send(&all.into()).await.map_err(Into::into);
        }
        match self.partials.get(id) {
            Some(partial) => self.send_bitfield_of(partial).await,
            None => self.not_found(id).await,
        }
    }

    async fn send_bitfield_of(&mut self, partial: Arc<Partial>) -> Result<(), FrameError> {
        let (held, rx) = partial.subscribe();
        let bits = Bitfield::of(partial.id, &held);
        self.news = Some((partial, rx));
        self.conn.send(&bits.into()).await.map_err(Into::into)
    }

    async fn refuse(&mut self, code: ErrorCode, message: &str) -> Result<(), FrameError> {
        self.conn.send(&Error::new(code, message).into()).await?;
        Ok(())
    }

    async fn not_found(&mut self, id: &Hash) -> Result<(), FrameError> {
        let hex = troca_proto::hex(id);
        self.refuse(
            ErrorCode::NotFound,
            &format!("this peer does not share {hex}"),
        )
        .await
    }

    async fn send_hashes(&mut self, id: &Hash) -> Result<(), FrameError> {
        let (size, pieces) = match (self.library.get(id), self.partials.get(id)) {
            (Some(f), _) => (f.size, Arc::clone(&f.pieces)),
            (None, Some(p)) => (p.layout.len, Arc::clone(&p.hashes)),
            (None, None) => return self.not_found(id).await,
        };
        let mut chunks = pieces.chunks(HASHES_PER_FRAME).peekable();
        while let Some(chunk) = chunks.next() {
            let msg = PieceHashes {
                size,
                hashes: chunk.to_vec(),
                last: chunks.peek().is_none(),
            };
            self.conn.queue(&msg.into());
        }
        self.conn.flush().await?;
        Ok(())
    }

    async fn send_piece(&mut self, id: &Hash, index: u32) -> Result<(), FrameError> {
        let Some(shared) = self.library.get(id) else {
            return match self.partials.get(id) {
                Some(partial) => self.send_partial_piece(&partial, index).await,
                None => self.not_found(id).await,
            };
        };
        let layout = Layout::for_len(shared.size);
        if u64::from(index) >= layout.count() {
            let what = format!("piece {index} is past the end of the file");
            return self.refuse(ErrorCode::BadRequest, &what).await;
        }
        let reuse = matches!(&self.open, Some((f, _)) if Arc::ptr_eq(f, &shared));
        if !reuse {
            match File::open(&shared.path) {
                Ok(file) => self.open = Some((Arc::clone(&shared), file)),
                Err(_) => return self.not_found(id).await,
            }
        }
        let (_, file) = self.open.as_ref().expect("opened above");
        // Checked on every piece: a file edited in place must not be served under its old id.
        // The downloader would catch the bad bytes anyway, but would blame this peer for them.
        if !file.metadata().is_ok_and(|m| shared.unchanged(&m)) {
            self.open = None;
            return self.not_found(id).await;
        }
        if self.defer(&shared, index).await? {
            return Ok(());
        }
        let Some(_slot) = self.slot().await? else {
            return Ok(());
        };
        if let Some(given) = self
            .given
            .as_mut()
            .filter(|g| Arc::ptr_eq(&g.file, &shared))
        {
            given.give(index);
        }
        let (start, len) = layout.range(index.into());
        self.conn.queue(&PieceData { index, len }.into());
        let within = self.piece_time(len);
        let file = &self.open.as_ref().expect("opened above").1;
        let sending = send_range(&mut self.conn, file, start, len, self.config.idle_timeout);
        in_time(within, sending).await?;
        self.served(len);
        Ok(())
    }

    /// An upload slot for the piece about to be sent; `None` when all are sending, having
    /// answered the request busy (a `SlotFree` is then owed).
    async fn slot(&mut self) -> Result<Option<Slot>, FrameError> {
        match self.uploads.take(self.from) {
            Ok(slot) => Ok(Some(slot)),
            Err(rx) => {
                crate::stats::PeerStats::add(&self.config.stats.busy_answers, 1);
                self.refused = Some(rx);
                let why = "every upload slot is sending; SlotFree follows when one is free";
                self.refuse(ErrorCode::Busy, why).await?;
                Ok(None)
            }
        }
    }

    /// Initial seeding: answers `Deferred` a request from a sharing downloader for a piece a
    /// sharing downloader has from here while another has gone to none, if a slot is sending
    /// (so the link stays busy), once per piece and connection. Returns whether it did.
    async fn defer(&mut self, shared: &Arc<SharedFile>, index: u32) -> Result<bool, FrameError> {
        let sending = self.uploads.sending();
        let deferred = self
            .given
            .as_mut()
            .filter(|g| sending && Arc::ptr_eq(&g.file, shared))
            .is_some_and(|g| g.defers(index));
        if !deferred {
            return Ok(false);
        }
        crate::stats::PeerStats::add(&self.config.stats.pieces_deferred, 1);
        let why =
            "this piece is already out in the crowd; ask others for it, and this peer for another";
        self.refuse(ErrorCode::Deferred, why).await?;
        Ok(true)
    }

    /// How long a piece of `len` bytes may take to go out: the idle timeout, plus its time at
    /// the upload cap shared by every slot. A receiver slower than that loses its connection,
    /// and gives its slot back.
    fn piece_time(&self, len: u64) -> Duration {
        let rate = self.limit.as_ref().and_then(|l| l.limits().send.total);
        let capped = rate.map_or(Duration::ZERO, |rate| {
            let share = (rate / self.config.upload_slots.max(1) as u64).max(1);
            Duration::from_secs_f64(len as f64 / share as f64)
        });
        self.config.idle_timeout + capped
    }

    /// A piece of `len` bytes went out.
    fn served(&self, len: u64) {
        let stats = &self.config.stats;
        crate::stats::PeerStats::add(&stats.pieces_served, 1);
        crate::stats::PeerStats::add(&stats.bytes_served, len);
    }

    /// A piece of a file being downloaded here, if it is held yet.
    async fn send_partial_piece(
        &mut self,
        partial: &Partial,
        index: u32,
    ) -> Result<(), FrameError> {
        if u64::from(index) >= partial.layout.count() {
            let what = format!("piece {index} is past the end of the file");
            return self.refuse(ErrorCode::BadRequest, &what).await;
        }
        if !partial.holds(index) {
            let what = format!("piece {index} is not here yet");
            return self.refuse(ErrorCode::NotFound, &what).await;
        }
        let Some(_slot) = self.slot().await? else {
            return Ok(());
        };
        let (start, len) = partial.layout.range(index.into());
        self.conn.queue(&PieceData { index, len }.into());
        let within = self.piece_time(len);
        let sending = send_range(
            &mut self.conn,
            &partial.file,
            start,
            len,
            self.config.idle_timeout,
        );
        in_time(within, sending).await?;
        self.served(len);
        Ok(())
    }
}

/// Runs `sending` (a piece going out) unless it takes longer than `within`.
async fn in_time(
    within: Duration,
    sending: impl std::future::Future<Output = Result<(), FrameError>>,
) -> Result<(), FrameError> {
    match tokio::time::timeout(within, sending).await {
        Ok(done) => done,
        Err(_) => Err(FrameError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "a piece took longer than its time to send",
        ))),
    }
}

/// Sends `len` bytes of `file` from `start` (on the cap's schedule, if there is one: the
/// connection is held to it).
async fn send_range(
    conn: &mut Connection<Stream>,
    file: &File,
    start: u64,
    len: u64,
    stall: Duration,
) -> Result<(), FrameError> {
    // A file truncated under us ends the connection: it cannot carry on mid-piece.
    conn.send_file_range(file, start, len, stall, |_| {})
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_slots_a_request_is_refused_and_hears_when_one_is_given_back() {
        let slots = Arc::new(UploadSlots::new(2));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = slots.take(a).expect("a slot");
        let _second = slots.take(b).expect("a slot");
        let Err(rx) = slots.take(b) else {
            panic!("a third slot out of two")
        };
        // Nothing given back yet: the refused connection has nothing to hear.
        assert!(!rx.has_changed().unwrap());
        let mut refused = Some(rx);
        drop(first);
        slot_freed(&mut refused).await;
        assert!(slots.take(a).is_ok(), "the slot given back is free");
    }

    #[tokio::test]
    async fn one_address_holds_at_most_half_the_slots() {
        let slots = Arc::new(UploadSlots::new(4));
        let hostile: IpAddr = "2001:db8::1".parse().unwrap();
        let same_net: IpAddr = "2001:db8::2".parse().unwrap();
        let held: Vec<Slot> = (0..2)
            .map(|_| slots.take(hostile).expect("a slot"))
            .collect();
        assert!(slots.take(hostile).is_err(), "a third for one address");
        assert!(
            slots.take(same_net).is_err(),
            "the same /64 is the same address"
        );
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(slots.take(other).is_ok(), "others still get the rest");
        drop(held);
        assert!(
            slots.take(hostile).is_ok(),
            "given back, they count no more"
        );
    }

    #[tokio::test]
    async fn no_slots_means_no_limit() {
        let slots = Arc::new(UploadSlots::new(0));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Slot> = (0..100).map(|_| slots.take(ip).expect("a slot")).collect();
        assert_eq!(held.len(), 100);
    }
}
