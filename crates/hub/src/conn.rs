//! One native-protocol connection: the handshake, then requests one after another until the
//! client leaves, stalls, breaks the framing, or the hub shuts down.
//!
//! A refused request gets an `Error` and the connection goes on. A malformed frame gets an
//! `Error` and the connection is closed, since the next frame can no longer be found. Raw bytes
//! that cannot be delivered or stored close the connection too: partial uploads stay in the state
//! folder for resume, never under the real name.

use crate::access::Caller;
use crate::clients::Busy;
use crate::clients::Session;
use crate::copy::CopyProgress;
use crate::error::HubError;
use crate::records::{PageQuery, Pending};
use crate::service::{now_ns, Download, Hub, Listing, ShareAsk, Source};
use crate::small::{MAX_BATCH_BYTES, MAX_BATCH_FILES};
use crate::store::{Body, ObjectBody, StoredFile};
use crate::transfer::Incoming;
use futures_util::StreamExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use troca_net::connection::{FrameError, Late};
use troca_net::{transfer_buffer, Connection, Stream, CACHE_CHUNK};
use troca_proto::msg::{
    Activity, ClientList, Copied, Entries, FileEnd, FileHeader, FolderMade, HealthReport, History,
    HistoryEntries, HistoryEntry, Moved, Put, PutDone, PutEnd, PutReady, PutSmall, Registered,
    Removed, ShareList, Shared, Unshared, Welcome,
};
use troca_proto::{Hash, Message, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// Downloads up to this size whose hash is known go out in a single write with their header and
/// trailer, rather than header, `sendfile`, trailer.
const SMALL_FILE: u64 = 256 * 1024;

/// Downloads from an object store of at least this many bytes take a GET of their own, spliced
/// to a plain client; smaller ones use the S3 client's pooled connections. A GET of its own is
/// a new connection, left in `TIME_WAIT` when it closes first: at this size a hub could not open
/// them fast enough to run out of ports (a few hundred a second at several GB/s).
const SPLICED_OBJECT: u64 = 16 * 1024 * 1024;

/// Why a connection ended early; logged, never sent (the client already got an `Error`, or the
/// connection is unusable).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnEnd {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Hub(#[from] HubError),
}

type Conn = Connection<Stream>;

/// What a request came to: the bytes it moved, or the refusal that was (or is to be) sent.
type Outcome = Result<u64, HubError>;

/// Serves one connection to completion.
pub(crate) async fn serve_connection(
    hub: Arc<Hub>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    // TLS first (within the handshake time), unless the hub runs in plaintext.
    let stream = match hub.tls() {
        None => Stream::Plain(stream),
        Some(tls) => {
            let accepted = tokio::time::timeout(
                hub.config().handshake_timeout,
                troca_net::sealed::accept(stream, Arc::clone(&tls.native)),
            )
            .await;
            match accepted {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut conn = Connection::new(stream);
    // A client that reads no answer must not hold its connection for ever.
    conn.set_write_stall(hub.config().stall_timeout);
    conn.set_pace(hub.pace(peer.ip()));
    match session(&hub, &mut conn, peer, &shutdown).await {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(e) => tracing::debug!(%peer, error = %e, "connection ended"),
    }
}

async fn session(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<(), ConnEnd> {
    let Some((client, caller)) = handshake(hub, conn, peer).await? else {
        return Ok(());
    };
    let registration = hub.clients().join(peer, &client, now_ns());
    let me = &registration.session;
    conn.send(
        &Welcome {
            version: PROTOCOL_VERSION,
            server: format!("troca {}", env!("CARGO_PKG_VERSION")),
            max_frame: MAX_FRAME_LEN as u32,
        }
        .into(),
    )
    .await?;
    loop {
        let cfg = hub.config();
        let next = tokio::select! {
            // An idle connection is simply closed at shutdown; a request in progress finishes.
            _ = shutdown.cancelled() => return Ok(()),
            r = conn.read_message_timed(cfg.idle_timeout, cfg.request_timeout) => r,
        };
        let Some(msg) = next_request(hub, conn, me, next).await? else {
            return Ok(());
        };
        match msg {
            Message::PutSmall(first) => put_small(hub, conn, me, &caller, first).await?,
            Message::Get(first) if hub.store().reads_far() => {
                get_run(hub, conn, me, &caller, first).await?;
            }
            msg => request(hub, conn, me, &caller, msg).await?,
        }
    }
}

/// The next request, from what reading one came to: `None` when the client closed the
/// connection; an error (sent, recorded) when it stalled or broke the framing.
async fn next_request(
    hub: &Hub,
    conn: &mut Conn,
    me: &Session,
    read: Result<Result<Option<Message>, FrameError>, Late>,
) -> Result<Option<Message>, ConnEnd> {
    match read {
        Err(Late::Idle) => Err(refuse(conn, HubError::Timeout("idle for too long".into())).await),
        Err(Late::Request) => {
            let err = HubError::Timeout(format!(
                "a request must arrive within {} s of its first byte",
                hub.config().request_timeout.as_secs_f64()
            ));
            Err(refuse_invalid(hub, conn, me, err).await)
        }
        Ok(Ok(m)) => Ok(m),
        Ok(Err(FrameError::Io(e))) => Err(e.into()),
        Ok(Err(e)) => {
            let err = HubError::BadRequest(e.to_string());
            Err(refuse_invalid(hub, conn, me, err).await)
        }
    }
}

/// Answers one request and records it.
async fn request(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    me: &Arc<Session>,
    caller: &Caller,
    msg: Message,
) -> Result<(), ConnEnd> {
    let (op, target) = describe(&msg);
    let pending = me.pending(op, target);
    let result = match dispatch(hub, conn, me, caller, msg).await {
        Dispatched::Done(result) => result,
        Dispatched::Unexpected(name) => {
            let err = HubError::BadRequest(format!("unexpected {name} message"));
            pending.finish(hub.history_log(), Err(err.record_text()));
            return Err(refuse(conn, err).await);
        }
    };
    match result {
        Ok(Ok(bytes)) => pending.finish(hub.history_log(), Ok(bytes)),
        Ok(Err(e)) => {
            pending.finish(hub.history_log(), Err(e.record_text()));
            conn.send(&e.to_message()).await?;
        }
        Err(end) => {
            pending.finish(hub.history_log(), Err(end.to_string()));
            return Err(end);
        }
    }
    Ok(())
}

/// The `Hello`: checks the magic, the version, the client's name and its token. Returns the
/// client's name and who it is, or `None` if it left without a word; a refusal is sent (and a
/// failed token recorded) before the error returns.
async fn handshake(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    peer: SocketAddr,
) -> Result<Option<(String, Caller)>, ConnEnd> {
    let (time_ns, started) = (now_ns(), Instant::now());
    let read = tokio::time::timeout(hub.config().handshake_timeout, conn.read_message()).await;
    let mut hello = match read {
        Err(_) => return Err(refuse(conn, HubError::Timeout("no hello received".into())).await),
        Ok(Err(FrameError::Io(e))) => return Err(e.into()),
        Ok(Err(e)) => return Err(refuse(conn, HubError::BadRequest(e.to_string())).await),
        Ok(Ok(None)) => return Ok(None),
        Ok(Ok(Some(Message::Hello(h)))) => h,
        // A health check in place of a hello: answered without a token, then closed; the
        // checker is no client and is not recorded.
        Ok(Ok(Some(Message::Health(_)))) => {
            conn.send(&health_report(hub).await.into()).await?;
            return Ok(None);
        }
        Ok(Ok(Some(other))) => {
            let e = HubError::BadRequest(format!("expected Hello, got {}", other.name()));
            return Err(refuse(conn, e).await);
        }
    };
    if let Err(e) = check_hello(&mut hello) {
        return Err(refuse(conn, e).await);
    }
    match hub.authenticate(hello.token.clone(), peer.ip()).await {
        Ok(mut caller) => {
            caller.owner_key = hello
                .owner_key
                .as_deref()
                .map(crate::access::owner_key_hash);
            Ok(Some((hello.client, caller)))
        }
        Err(e) => {
            let pending = Pending {
                time_ns,
                started,
                ..Pending::new(
                    hello.client.as_str().into(),
                    peer.to_string().into(),
                    "hello",
                    String::new(),
                )
            };
            pending.finish(hub.history_log(), Err(e.record_text()));
            Err(refuse(conn, e).await)
        }
    }
}

/// Whether the hub can serve, as `HealthReport` says it (`Hub::health`).
async fn health_report(hub: &Arc<Hub>) -> HealthReport {
    let checked = hub.health().await;
    HealthReport {
        ok: checked.is_ok(),
        hub: hub.config().hub_name.clone(),
        error: checked.err().map(|e| e.to_string()).unwrap_or_default(),
    }
}

/// A `Hello`'s magic, version and client name (an empty one becomes `anonymous`).
fn check_hello(hello: &mut troca_proto::msg::Hello) -> Result<(), HubError> {
    if hello.magic != MAGIC {
        return Err(HubError::UnsupportedVersion("not a troca client".into()));
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(HubError::UnsupportedVersion(format!(
            "protocol version {} is not supported; this hub speaks version {PROTOCOL_VERSION}",
            hello.version
        )));
    }
    // The name is shown to others (who, history): the same rule as Register; none is anonymous.
    if hello.client.is_empty() {
        hello.client = "anonymous".into();
    }
    check_client_name(&hello.client)
}

/// A run of `PutSmall` requests, stored in batches (see `small.rs`), each file answered and
/// recorded on its own, in order. While a batch is stored on the blocking pool, the frames that
/// arrive are gathered into the next; once that one is full it is stored as well, so that one
/// batch's writing overlaps the other's flush. At most two batches are in flight, and a batch
/// that names a file of the one in flight waits for it, to see that file stored.
async fn put_small(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    me: &Session,
    caller: &Caller,
    first: PutSmall,
) -> Result<(), ConnEnd> {
    let mut storing = Storing::start(hub, me, caller, gather_small(hub, conn, first)?);
    loop {
        let next = gather_while_storing(hub, conn, &mut storing).await;
        let Some(next) = next else {
            storing.answer(hub, me, conn).await?;
            // Something may have come in the meantime: a new run, or another request.
            conn.read_arrived(MAX_BATCH_BYTES)?;
            match conn.buffered_of_kind(put_small_kind()) {
                Ok(Some(Message::PutSmall(first))) => {
                    storing = Storing::start(hub, me, caller, gather_small(hub, conn, first)?);
                    continue;
                }
                _ => return Ok(()),
            }
        };
        if storing.names_any(&next.files) {
            storing.answer(hub, me, conn).await?;
            storing = Storing::start(hub, me, caller, next);
            continue;
        }
        let before = std::mem::replace(&mut storing, Storing::start(hub, me, caller, next));
        before.answer(hub, me, conn).await?;
    }
}

/// A batch of `PutSmall` requests and the share of the hub's batch memory it holds (`None`:
/// none was free, and the batch is one file).
struct Gathered {
    files: Vec<PutSmall>,
    memory: Option<tokio::sync::OwnedSemaphorePermit>,
    bytes: usize,
}

impl Gathered {
    fn full(&self) -> bool {
        self.memory.is_none()
            || self.files.len() >= MAX_BATCH_FILES
            || self.bytes >= MAX_BATCH_BYTES
    }

    /// Takes the `PutSmall` frames already buffered, until full. `false` once something else
    /// is next (another request, or a malformed frame, which the next read reports).
    fn take_buffered(&mut self, conn: &mut Conn) -> bool {
        while !self.full() {
            match conn.buffered_of_kind(put_small_kind()) {
                Ok(Some(Message::PutSmall(p))) => {
                    self.bytes += p.data.len();
                    self.files.push(p);
                }
                Ok(_) => return conn.buffered_kind().is_none_or(|k| k == put_small_kind()),
                Err(_) => return false,
            }
        }
        true
    }
}

/// A batch being stored on the blocking pool, with its history entries.
struct Storing {
    names: std::collections::HashSet<String>,
    records: Vec<Pending>,
    task: Option<tokio::task::JoinHandle<Vec<Result<PutDone, HubError>>>>,
    results: Option<Vec<Result<PutDone, HubError>>>,
    _memory: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Storing {
    fn start(hub: &Arc<Hub>, me: &Session, caller: &Caller, batch: Gathered) -> Storing {
        let records = batch
            .files
            .iter()
            .map(|p| me.pending("put", p.name.clone()))
            .collect();
        let names = batch.files.iter().map(|p| p.name.clone()).collect();
        let (h, c, files) = (Arc::clone(hub), caller.clone(), batch.files);
        Storing {
            names,
            records,
            task: Some(tokio::task::spawn_blocking(move || {
                h.put_small_batch(files, &c)
            })),
            results: None,
            _memory: batch.memory,
        }
    }

    fn names_any(&self, files: &[PutSmall]) -> bool {
        files.iter().any(|f| self.names.contains(&f.name))
    }

    /// Waits until the batch is stored. Cancel-safe.
    async fn stored(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let count = self.records.len();
            let results = task.await.unwrap_or_else(|e| {
                (0..count)
                    .map(|_| Err(HubError::Internal(format!("a task failed: {e}"))))
                    .collect()
            });
            self.task = None;
            self.results = Some(results);
        }
    }

    /// Waits for the batch, then answers and records each file, in order.
    async fn answer(mut self, hub: &Hub, me: &Session, conn: &mut Conn) -> Result<(), ConnEnd> {
        self.stored().await;
        let results = self.results.take().unwrap_or_default();
        for (record, result) in self.records.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    me.received(done.size);
                    record.finish(hub.history_log(), Ok(done.size));
                    conn.queue(&done.into());
                }
                Err(e) => {
                    record.finish(hub.history_log(), Err(e.record_text()));
                    conn.queue(&e.to_message());
                }
            }
        }
        conn.flush().await?;
        Ok(())
    }
}

/// While `storing` runs, gathers the `PutSmall` frames that arrive into a next batch. Returns
/// it once full, or once `storing` is done with whatever came (`None`: nothing did, or no
/// batch memory was free).
async fn gather_while_storing(
    hub: &Hub,
    conn: &mut Conn,
    storing: &mut Storing,
) -> Option<Gathered> {
    let mut next = Gathered {
        files: Vec::new(),
        memory: Some(batch_memory(hub)?),
        bytes: 0,
    };
    let mut open = true;
    loop {
        open = open && next.take_buffered(conn);
        if next.full() {
            return Some(next);
        }
        if !open {
            storing.stored().await;
            break;
        }
        tokio::select! {
            () = storing.stored() => break,
            // The end of the stream, or an error, is for the next read to report.
            read = conn.read_more() => open = matches!(read, Ok(n) if n > 0),
        }
    }
    match next.files.is_empty() {
        true => None,
        false => Some(next),
    }
}

/// The frame kind of `PutSmall`.
fn put_small_kind() -> u8 {
    Message::from(PutSmall {
        name: String::new(),
        force: false,
        blake3: [0; 32],
        modified_ns: 0,
        data: Vec::new(),
    })
    .kind()
}

/// A batch's share of the hub's batch memory, if one is free.
fn batch_memory(hub: &Hub) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let kib = (MAX_BATCH_BYTES >> 10) as u32;
    Arc::clone(hub.batch_memory())
        .try_acquire_many_owned(kib)
        .ok()
}

/// The first `PutSmall` and those already arrived behind it, with the batch memory they hold.
/// A client sending many small files sends them back to back: they are read in large gulps,
/// within the memory all batches share; without any free, this file is stored on its own.
fn gather_small(hub: &Hub, conn: &mut Conn, first: PutSmall) -> io::Result<Gathered> {
    conn.set_read_size(256 * 1024);
    let mut batch = Gathered {
        bytes: first.data.len(),
        files: vec![first],
        memory: batch_memory(hub),
    };
    while !batch.full() {
        conn.read_arrived(MAX_BATCH_BYTES)?;
        let before = batch.files.len();
        batch.take_buffered(conn);
        if batch.files.len() == before {
            break;
        }
    }
    Ok(batch)
}

/// Gets taken in one run on a store whose every read is a round trip (at most; the client
/// sends a folder's `Get`s back to back).
const GET_RUN: usize = 64;
/// Reads of a run's files at once.
const GET_READS_AT_ONCE: usize = 16;

/// The first `Get` and those already arrived behind it, on a store whose every read is a
/// round trip: their files are opened (the small ones read into the hot cache) several at a
/// time, while each is answered in turn as any `Get` is, so a folder of small files does not
/// wait for one round trip after another.
async fn get_run(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    me: &Arc<Session>,
    caller: &Caller,
    first: troca_proto::msg::Get,
) -> Result<(), ConnEnd> {
    let kind = Message::from(first.clone()).kind();
    let mut run = vec![first];
    while run.len() < GET_RUN {
        match conn.buffered_of_kind(kind) {
            Ok(Some(Message::Get(g))) => run.push(g),
            // Anything else (a malformed frame too) is left for the next read.
            _ => break,
        }
    }
    if run.len() == 1 {
        return request(hub, conn, me, caller, Message::Get(run.remove(0))).await;
    }
    let gate = Arc::new(tokio::sync::Semaphore::new(GET_READS_AT_ONCE));
    let opening: Vec<_> = run
        .iter()
        .map(|g| {
            let (hub, caller, name) = (Arc::clone(hub), caller.clone(), g.name.clone());
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let _turn = gate.acquire_owned().await;
                // Without one of the hub's turns free, the answer reads the file itself.
                let Some(_read) = hub.read_ahead() else {
                    return;
                };
                // What it finds is found again by the answer (a hit in the hot cache, or
                // the same refusal, which is the answer's to record).
                let opened = move || drop(hub.download(&caller, &name, 0));
                let _ = tokio::task::spawn_blocking(opened).await;
            })
        })
        .collect();
    for (g, opened) in run.into_iter().zip(opening) {
        let _ = opened.await;
        request(hub, conn, me, caller, Message::Get(g)).await?;
    }
    Ok(())
}

/// Sends a one-frame answer to a request that moved no file bytes.
async fn answer(conn: &mut Conn, msg: Message) -> Result<Outcome, ConnEnd> {
    sent(conn.send(&msg).await)
}

/// How often a running copy says how far it has come.
const COPY_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// A copy, with a `Copied` frame about once a second while it runs: the client's sign that
/// the hub is at work (a large copy can take longer than its patience for silence). A client
/// gone stops it at its next step.
async fn send_copy(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    caller: &Caller,
    m: troca_proto::msg::Copy,
) -> Result<Outcome, ConnEnd> {
    let progress = Arc::new(CopyProgress::default());
    let copy = hub.copy(&m.from, &m.to, m.force, caller, &progress);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + COPY_TICK, COPY_TICK);
    loop {
        tokio::select! {
            done = &mut copy => return match done {
                Ok(d) => {
                    let (name, files, bytes) = (d.name, d.files, d.bytes);
                    answer(conn, Copied { name, files, bytes, done: true }.into()).await
                }
                Err(e) => Ok(Err(e)),
            },
            _ = tick.tick() => {
                let (files, bytes) = progress.so_far();
                let name = m.to.clone();
                // A send that fails drops the copy, which then stops.
                conn.send(&Copied { name, files, bytes, done: false }.into()).await?;
            }
        }
    }
}

/// An answer that moved no file bytes, sent (or the connection broken).
fn sent(r: io::Result<()>) -> Result<Outcome, ConnEnd> {
    r.map(|()| Ok(0)).map_err(Into::into)
}

/// What a request came to: its outcome, or a message no client may send.
enum Dispatched {
    Done(Result<Outcome, ConnEnd>),
    Unexpected(&'static str),
}

/// Answers one request (all but `PutSmall`, which comes in runs).
async fn dispatch(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    me: &Arc<Session>,
    caller: &Caller,
    msg: Message,
) -> Dispatched {
    Dispatched::Done(match msg {
        Message::List(l) => send_listing(conn, hub.list(caller, &l.prefix)).await,
        Message::Get(g) => {
            let opened = hub.download(caller, &g.name, g.offset);
            // A share link that allows only so many downloads counts this one.
            let counted = match opened {
                Ok(download) => {
                    let (name, resumed) = (download.name.as_str(), download.offset > 0);
                    let counted = hub.count_download(caller, name, resumed).await;
                    counted.map(|()| download)
                }
                Err(e) => Err(e),
            };
            match ready(counted, plain(conn)).await {
                Ok(download) => send_file(hub, conn, me, download).await.map(Ok),
                Err(e) => Ok(Err(e)),
            }
        }
        Message::Put(p) => receive_file(hub, conn, me, caller, p).await,
        Message::Remove(r) => match hub.remove(&r.name, r.recursive, caller).await {
            Ok(files) => answer(conn, Removed { files }.into()).await,
            Err(e) => Ok(Err(e)),
        },
        Message::MakeFolder(m) => match hub.make_folder(&m.name, caller).await {
            Ok(created) => answer(conn, FolderMade { created }.into()).await,
            Err(e) => Ok(Err(e)),
        },
        Message::Move(m) => match hub.rename(&m.from, &m.to, m.force, caller).await {
            Ok(name) => answer(conn, Moved { name }.into()).await,
            Err(e) => Ok(Err(e)),
        },
        Message::Copy(m) => send_copy(hub, conn, caller, m).await,
        Message::Find(f) => match hub.find(&f.text, caller).await {
            Ok(found) => {
                let cut = |last: &mut Entries| last.cut = found.cut;
                sent(send_chunks(conn, found.entries, Entries::default(), cut).await)
            }
            Err(e) => Ok(Err(e)),
        },
        Message::Share(m) => {
            let ask = ShareAsk::new(m.expires_s, m.upload, m.max_downloads);
            match hub.share(caller, &m.name, ask).await {
                Ok(made) => {
                    let shared = Shared {
                        id: u64::try_from(made.id).unwrap_or(0),
                        secret: made.secret,
                        name: made.name,
                        expires_ns: made.expires_ns,
                        web: hub.config().web_base.clone(),
                    };
                    answer(conn, shared.into()).await
                }
                Err(e) => Ok(Err(e)),
            }
        }
        Message::Shares(_) => match hub.shares(caller).await {
            Ok(list) => sent(send_chunks(conn, list, ShareList::default(), |_| {}).await),
            Err(e) => Ok(Err(e)),
        },
        Message::Unshare(m) => {
            let id = i64::try_from(m.id).unwrap_or(i64::MAX);
            match hub.unshare(caller, id).await {
                Ok(()) => answer(conn, Unshared { id: m.id }.into()).await,
                Err(e) => Ok(Err(e)),
            }
        }
        Message::Register(r) => match check_client_name(&r.name) {
            Ok(()) => {
                me.rename(&r.name);
                answer(conn, Registered.into()).await
            }
            Err(e) => Ok(Err(e)),
        },
        Message::Who(_) => {
            let clients = hub.who(caller).await;
            sent(send_chunks(conn, clients, ClientList::default(), |_| {}).await)
        }
        Message::History(h) => match hub.history(page_query(h), caller).await {
            Ok(page) => {
                let next = page.next;
                let last = |last: &mut HistoryEntries| last.next = next;
                sent(send_chunks(conn, page.entries, HistoryEntries::default(), last).await)
            }
            Err(e) => Ok(Err(e)),
        },
        Message::Status(_) => match hub.status(caller).await {
            Ok(info) => answer(conn, info.into()).await,
            Err(e) => Ok(Err(e)),
        },
        Message::Health(_) => answer(conn, health_report(hub).await.into()).await,
        other => return Dispatched::Unexpected(other.name()),
    })
}

/// The operation and target a request is recorded under.
fn describe(msg: &Message) -> (&'static str, String) {
    match msg {
        Message::List(l) => ("list", l.prefix.clone()),
        Message::Get(g) => ("get", g.name.clone()),
        Message::Put(p) => ("put", p.name.clone()),
        Message::Remove(r) => ("rm", r.name.clone()),
        Message::MakeFolder(m) => ("mkdir", m.name.clone()),
        Message::Move(m) => ("mv", format!("{} -> {}", m.from, m.to)),
        Message::Copy(m) => ("cp", format!("{} -> {}", m.from, m.to)),
        Message::Find(f) => ("find", f.text.clone()),
        Message::Share(m) => ("share", m.name.clone()),
        Message::Shares(_) => ("shares", String::new()),
        Message::Unshare(m) => ("unshare", m.id.to_string()),
        Message::Register(r) => ("register", r.name.clone()),
        Message::Who(_) => ("who", String::new()),
        Message::History(_) => ("history", String::new()),
        Message::Status(_) => ("status", String::new()),
        Message::Health(_) => ("health", String::new()),
        other => ("invalid", other.name().to_owned()),
    }
}

/// Client names are shown to others: printable and short.
fn check_client_name(name: &str) -> Result<(), HubError> {
    troca_proto::name::check_label(name).map_err(|e| {
        HubError::BadRequest(format!(
            "a client name must be 1 to 255 bytes with no control characters or bidirectional \
             overrides ({e})"
        ))
    })
}

/// Records a request that broke the protocol (as the spec says: op `invalid`), then refuses it
/// and closes the connection.
async fn refuse_invalid(hub: &Hub, conn: &mut Conn, me: &Session, err: HubError) -> ConnEnd {
    me.pending("invalid", String::new())
        .finish(hub.history_log(), Err(err.record_text()));
    refuse(conn, err).await
}

/// Sends an error and closes the connection; returns why it ended.
async fn refuse(conn: &mut Conn, err: HubError) -> ConnEnd {
    if let Err(e) = conn.send(&err.to_message()).await {
        return e.into();
    }
    let _ = conn.shutdown().await;
    err.into()
}

/// A list answer split over frames; the last chunk has `last` set.
trait Chunk<T>: Default + Into<Message> {
    fn has_room(&self, item: &T) -> bool;
    fn push(&mut self, item: T);
    fn set_last(&mut self);
}

macro_rules! chunk_impl {
    ($chunk:ty, $item:ty) => {
        impl Chunk<$item> for $chunk {
            fn has_room(&self, item: &$item) -> bool {
                self.has_room_for(item)
            }
            fn push(&mut self, item: $item) {
                self.items.push(item);
            }
            fn set_last(&mut self) {
                self.last = true;
            }
        }
    };
}
chunk_impl!(ClientList, troca_proto::msg::ClientEntry);

// `Entries` names its items `entries`.
impl Chunk<troca_proto::msg::Entry> for Entries {
    fn has_room(&self, item: &troca_proto::msg::Entry) -> bool {
        self.has_room_for(item)
    }
    fn push(&mut self, item: troca_proto::msg::Entry) {
        self.entries.push(item);
    }
    fn set_last(&mut self) {
        self.last = true;
    }
}
chunk_impl!(HistoryEntries, HistoryEntry);
chunk_impl!(ShareList, troca_proto::msg::ShareEntry);

async fn send_chunks<T, C: Chunk<T>>(
    conn: &mut Conn,
    items: Vec<T>,
    mut chunk: C,
    finish: impl FnOnce(&mut C),
) -> io::Result<()> {
    for item in items {
        if !chunk.has_room(&item) {
            conn.queue(&std::mem::take(&mut chunk).into());
        }
        chunk.push(item);
    }
    chunk.set_last();
    finish(&mut chunk);
    conn.queue(&chunk.into());
    conn.flush().await
}

/// Sends a listing a page at a time, each sent before the next is read, so the connection
/// holds one page whatever the share's size. A page that cannot be read ends the answer with
/// an `Error` (what came before it is then void).
async fn send_listing(conn: &mut Conn, mut listing: Listing) -> Result<Outcome, ConnEnd> {
    let mut chunk = Entries::default();
    loop {
        match listing.next_page().await {
            Ok(Some(page)) => {
                for item in page {
                    if !chunk.has_room(&item) {
                        conn.queue(&std::mem::take(&mut chunk).into());
                    }
                    chunk.push(item);
                }
                conn.flush().await?;
            }
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        }
    }
    chunk.set_last();
    conn.queue(&chunk.into());
    sent(conn.flush().await)
}

fn page_query(h: History) -> PageQuery {
    PageQuery {
        limit: h.limit,
        before: h.before,
        client: h.client,
        op: h.op,
    }
}

/// Bounds one step of a transfer by the stall timeout.
async fn step<T>(
    stall: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(stall, fut).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} stalled"),
        ))
    })
}

fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file shrank while it was being sent",
    )
}

/// Whether bytes may go to the client's socket directly (no TLS in the way).
fn plain(conn: &Conn) -> bool {
    troca_net::Socket::plain(conn.stream()).is_some()
}

/// A download whose bytes can be read: an object's GET is opened before the header goes out,
/// so a store that cannot be reached is refused in words, not by a cut connection. `plain`: the
/// client's socket takes bytes directly, so the GET may be spliced to it.
async fn ready(download: Result<Download, HubError>, plain: bool) -> Result<Download, HubError> {
    let download = download?;
    if let Source::Stored(StoredFile {
        body: Body::Object(o),
        ..
    }) = &download.source
    {
        let len = download.size() - download.offset;
        if len > SMALL_FILE {
            o.prepare(
                download.offset,
                download.size(),
                plain && len >= SPLICED_OBJECT,
            )
            .await
            .map_err(|e| HubError::Backend(format!("cannot read {}: {e}", download.name)))?;
        }
    }
    Ok(download)
}

/// Sends a download: header, raw bytes, trailer. Returns the bytes sent.
async fn send_file(
    hub: &Hub,
    conn: &mut Conn,
    me: &Arc<Session>,
    download: Download,
) -> Result<u64, ConnEnd> {
    let stall = hub.config().stall_timeout;
    let (size, offset) = (download.size(), download.offset);
    let len = size - offset;
    let _busy = Busy::start(
        me,
        Activity::Downloading,
        download.name.as_str(),
        size,
        offset,
    );
    conn.queue(
        &FileHeader {
            size,
            offset,
            modified_ns: download.version.modified_ns,
        }
        .into(),
    );
    let hash = match (&download.source, download.hash) {
        // Small hot files come from memory, with the header and trailer in one write.
        (Source::Memory(data), Some(hash)) => {
            conn.queue_raw(&data[offset as usize..]);
            me.sent(len);
            hash
        }
        (Source::Stored(file), Some(hash)) => {
            send_known(conn, me, file, offset, len, stall).await?;
            hash
        }
        (Source::Stored(file), None) => {
            let hash = send_hashing(conn, me, file, offset, stall).await?;
            hub.remember_hash(&download, hash);
            hash
        }
        (Source::Memory(_), None) => unreachable!("a cached file's hash is always known"),
    };
    conn.queue(&FileEnd { blake3: hash }.into());
    step(stall, "download", conn.flush()).await?;
    Ok(len)
}

/// The bytes of a file whose hash is known: small ones in the same write as their header and
/// trailer, the rest with `sendfile` (when there is a file and no TLS in the way).
async fn send_known(
    conn: &mut Conn,
    me: &Arc<Session>,
    file: &StoredFile,
    offset: u64,
    len: u64,
    stall: Duration,
) -> Result<(), ConnEnd> {
    if len <= SMALL_FILE {
        let mut body = vec![0u8; len as usize];
        file.read_exact_at(&mut body, offset)?;
        conn.queue_raw(&body);
        me.sent(len);
        return Ok(());
    }
    match &file.body {
        Body::File(f) => {
            conn.send_file_range(f, offset, len, stall, |n| me.sent(n))
                .await?
        }
        Body::Object(o) => send_object(conn, me, o, offset, len, stall).await?,
    }
    Ok(())
}

/// The bytes of an object, from one ranged GET: spliced from its socket to the client's when
/// it was opened for that, else streamed through the S3 client as they arrive.
async fn send_object(
    conn: &mut Conn,
    me: &Arc<Session>,
    object: &ObjectBody,
    offset: u64,
    len: u64,
    stall: Duration,
) -> Result<(), ConnEnd> {
    let end = offset + len;
    if let Some(raw) = object.take_raw(offset, end).filter(|_| plain(conn)) {
        step(stall, "download", conn.write_raw(&raw.early)).await?;
        me.sent(raw.early.len() as u64);
        let rest = len - raw.early.len() as u64;
        let spliced = conn
            .send_spliced(&raw.tcp, rest, stall, |n| me.sent(n))
            .await;
        return Ok(spliced.expect("a plain connection")?);
    }
    let mut chunks = step(stall, "download", object.stream(offset, end)).await?;
    let mut sent = 0;
    while let Some(chunk) = step(stall, "download", async { Ok(chunks.next().await) }).await? {
        let chunk = chunk?;
        step(stall, "download", conn.write_raw(&chunk)).await?;
        me.sent(chunk.len() as u64);
        sent += chunk.len() as u64;
    }
    if sent != len {
        return Err(short_file().into());
    }
    Ok(())
}

/// The bytes of a file whose hash is not known yet: hashed as they go out (with the bytes
/// before `offset`, when resuming). Returns the hash of the whole file.
async fn send_hashing(
    conn: &mut Conn,
    me: &Arc<Session>,
    file: &StoredFile,
    offset: u64,
    stall: Duration,
) -> Result<Hash, ConnEnd> {
    let size = file.version.size;
    let mut hasher = blake3::Hasher::new();
    let mut buf = transfer_buffer(size, CACHE_CHUNK);
    let mut pos = 0;
    while pos < size {
        let want = buf.len().min((size - pos) as usize);
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(short_file().into());
        }
        hasher.update(&buf[..n]);
        if pos + n as u64 > offset {
            let from = offset.saturating_sub(pos) as usize;
            step(stall, "download", conn.write_raw(&buf[from..n])).await?;
            me.sent((n - from) as u64);
        }
        pos += n as u64;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// Receives an upload. The outer error means the connection is unusable; the inner one is a
/// refusal for the caller to send.
async fn receive_file(
    hub: &Arc<Hub>,
    conn: &mut Conn,
    me: &Arc<Session>,
    caller: &Caller,
    put: Put,
) -> Result<Outcome, ConnEnd> {
    let stall = hub.config().stall_timeout;
    let mut upload = match hub.begin_upload(&put, caller).await {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    conn.send(
        &PutReady {
            offset: upload.offset(),
        }
        .into(),
    )
    .await?;
    let received = upload.remaining();
    let _busy = Busy::start(
        me,
        Activity::Uploading,
        &put.name,
        upload.size(),
        upload.offset(),
    );
    let taken = upload.taken_over();
    let name = upload.name();
    let received_all = tokio::select! {
        r = receive_bytes(conn, me, &mut upload, stall) => r,
        () = taken.cancelled() => return Err(refuse(conn, HubError::TakenOver(name)).await),
    };
    received_all?;
    let end = tokio::select! {
        r = tokio::time::timeout(stall, conn.read_message()) => r,
        () = taken.cancelled() => return Err(refuse(conn, HubError::TakenOver(name)).await),
    };
    let theirs = match end {
        Ok(Ok(Some(Message::PutEnd(PutEnd { blake3 })))) => blake3,
        Ok(Ok(Some(other))) => {
            let e = HubError::BadRequest(format!("expected PutEnd, got {}", other.name()));
            return Err(refuse(conn, e).await);
        }
        Ok(Ok(None)) => return Err(gone("client disconnected before PutEnd")),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(refuse(conn, HubError::Timeout("upload stalled".into())).await),
    };
    match hub
        .finish_upload(upload, Some(theirs), put.force, caller)
        .await
    {
        Ok(uploaded) => {
            conn.send(&uploaded.done.into()).await?;
            Ok(Ok(received))
        }
        Err(e) => Ok(Err(e)),
    }
}

fn gone(what: &str) -> ConnEnd {
    ConnEnd::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        what.to_owned(),
    ))
}

/// Reads the announced bytes straight into the writer's buffers, as much as the socket holds
/// per read. If storing fails (a full disk, say), the bytes are still read and dropped so the
/// connection stays in step; the failure is reported when the upload finishes.
async fn receive_bytes(
    conn: &mut Conn,
    me: &Session,
    upload: &mut Incoming,
    stall: Duration,
) -> Result<(), ConnEnd> {
    while upload.remaining() > 0 {
        let mut space = upload.space().await;
        let mut filled = 0;
        while filled < space.want {
            let into = &mut space.buf[filled..space.want];
            let n = step(stall, "upload", conn.read_raw_bulk(into)).await?;
            if n == 0 {
                // The client left mid-upload: the partial file stays for resume.
                return Err(gone("client disconnected mid-upload"));
            }
            upload.received(&space.buf[filled..filled + n]);
            filled += n;
            me.received(n as u64);
        }
        upload.store(space, filled).await;
    }
    Ok(())
}
