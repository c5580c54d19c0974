//! The peer's TCP server: answers `Pieces` with a file's piece hashes and `GetPiece` with the
//! piece's bytes, sent with `sendfile` straight from the page cache.
//!
//! Files are asked for by id only, and only ids in the [`Library`] are served, so nothing outside
//! the shared folder can be named. A file that changed on disk since it was hashed is refused
//! (its old id no longer describes it) until the next scan re-hashes it.

use crate::library::{Library, SharedFile};
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troca_net::connection::FrameError;
use troca_net::limits::PerAddress;
use troca_net::stream::Stream;
use troca_net::Connection;
use troca_proto::msg::{Error, PieceData, PieceHashes, Welcome, HASHES_PER_FRAME};
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
        }
    }
}

/// Serves `library` on `listener` until `shutdown`; then waits for pieces being sent.
pub async fn run(
    listener: TcpListener,
    library: Arc<Library>,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let limit = config.max_rate.map(|r| Arc::new(RateLimit::new(r)));
    let per_address = PerAddress::new(config.max_connections_per_ip);
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
        let (library, config, limit, stop) = (
            Arc::clone(&library),
            config.clone(),
            limit.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _held = (permit, from_address);
            let Some(stream) = secure(stream, &config).await else {
                tracing::debug!("TLS handshake with {addr} failed or timed out");
                return;
            };
            let mut serving = Serving {
                conn: Connection::new(stream),
                library,
                config,
                limit,
                open: None,
            };
            if let Err(e) = serving.run(&stop).await {
                tracing::debug!("peer connection from {addr} ended: {e}");
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The connection's stream: TLS within the handshake time when the peer has a key.
async fn secure(tcp: TcpStream, config: &ServerConfig) -> Option<Stream> {
    let Some(tls) = &config.tls else {
        return Some(Stream::Plain(tcp));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(tls));
    match tokio::time::timeout(
        config.handshake_timeout,
        acceptor.accept(troca_net::stream::ReadAhead::new(tcp)),
    )
    .await
    {
        Ok(Ok(stream)) => Some(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(
            stream,
        )))),
        _ => None,
    }
}

struct Serving {
    conn: Connection<Stream>,
    library: Arc<Library>,
    config: ServerConfig,
    limit: Option<Arc<RateLimit>>,
    /// The file of the last piece sent, kept open for the next request (usually the next piece).
    open: Option<(Arc<SharedFile>, File)>,
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
            Some(Message::Hello(h)) if h.magic == MAGIC && h.version == PROTOCOL_VERSION => {}
            Some(_) => {
                return self
                    .refuse(ErrorCode::UnsupportedVersion, "expected a troca Hello")
                    .await
            }
            None => return Ok(()),
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
        while let Some(msg) = self.next(shutdown).await? {
            match msg {
                Message::Pieces(p) => match self.library.get(&p.id) {
                    Some(f) => self.send_hashes(&f).await?,
                    None => self.not_found(&p.id).await?,
                },
                Message::GetPiece(g) => self.send_piece(&g.id, g.index).await?,
                other => {
                    let what = format!("a peer does not answer {}", other.name());
                    return self.refuse(ErrorCode::BadRequest, &what).await;
                }
            }
        }
        Ok(())
    }

    /// The next request; `None` at a clean close, at shutdown or after the idle timeout.
    async fn next(&mut self, shutdown: &CancellationToken) -> Result<Option<Message>, FrameError> {
        tokio::select! {
            _ = shutdown.cancelled() => Ok(None),
            r = tokio::time::timeout(self.config.idle_timeout, self.conn.read_message()) => {
                r.unwrap_or(Ok(None))
            }
        }
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

    async fn send_hashes(&mut self, file: &SharedFile) -> Result<(), FrameError> {
        let mut chunks = file.pieces.chunks(HASHES_PER_FRAME).peekable();
        while let Some(chunk) = chunks.next() {
            let msg = PieceHashes {
                size: file.size,
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
            return self.not_found(id).await;
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
        let (start, len) = layout.range(index.into());
        self.conn.queue(&PieceData { index, len }.into());
        let file = &self.open.as_ref().expect("opened above").1;
        // Whole when uncapped (sendfile on plaintext); in slices on the cap's schedule.
        let slice = if self.limit.is_some() {
            RATE_CHUNK
        } else {
            len
        };
        let mut sent = 0;
        while sent < len {
            let want = slice.min(len - sent);
            if let Some(limit) = &self.limit {
                limit.take(want).await;
            }
            // A file truncated under us ends the connection: it cannot carry on mid-piece.
            let stall = self.config.idle_timeout;
            self.conn
                .send_file_range(file, start + sent, want, stall, |_| {})
                .await?;
            sent += want;
        }
        Ok(())
    }
}

/// Bytes sent per slice when a rate cap applies: small enough to pace smoothly.
const RATE_CHUNK: u64 = 64 * 1024;

/// A shared upload cap: each slice reserves its share of time on one schedule.
#[derive(Debug)]
struct RateLimit {
    bytes_per_s: u64,
    next: Mutex<Instant>,
}

impl RateLimit {
    fn new(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s: bytes_per_s.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn take(&self, n: u64) {
        let at = {
            let mut next = self.next.lock().expect("not poisoned");
            let at = (*next).max(Instant::now());
            *next = at + Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}
