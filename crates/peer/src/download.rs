//! Downloading one file from every peer that has it at once, in pieces, each verified.
//!
//! First the piece hashes: asked of the peers in turn until one gives a list that merges up to
//! the file's id (a lying peer is skipped). Then one task per peer takes the next missing piece
//! from a shared schedule, keeps a few requests in flight on its connection, checks each piece
//! against its hash as it arrives and writes it at its place in `DIR/.troca-swarm/ID.part`.
//!
//! - A piece that fails verification goes back to the schedule for another peer; a peer that
//!   sends [`Options::max_failures`] bad pieces is dropped.
//! - A peer that dies or stalls costs only its in-flight pieces, which go back to the schedule.
//! - End game: once no piece is unrequested, idle peers also ask for pieces still in flight
//!   elsewhere; the first good copy wins, so the end does not wait on the slowest peer.
//! - Resume: `ID.pieces` records which pieces were verified and written. On restart those pieces
//!   are read back and checked again (cheap next to a download), so a record that got ahead of
//!   the data after a crash costs only a re-download of those pieces.
//!
//! The finished file is fsynced and renamed into `DIR` under its name, never over an existing
//! file (`name_downloaded.ext` then, as the hub's downloads do).

use crate::library::PARTIAL_DIR;
use crate::partial::{Partial, Partials};
use crate::scheduler::{PeerId, Scheduler};
use crate::stats::PeerStats;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use troca_net::connection::FrameError;
use troca_net::durable::{free_local_path, place};
use troca_net::error::ClientError;
use troca_net::stream::Stream;
use troca_net::{Connection, IoBuf, Progress};
use troca_proto::msg::{GetPiece, Hello, Holding, Pieces};
use troca_proto::pieces::Layout;
use troca_proto::tracker::PeerAddr;
use troca_proto::{ErrorCode, Hash, Message, RemoteName, MAGIC, PROTOCOL_VERSION};

/// The file to fetch, as the tracker described it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub id: Hash,
    pub size: u64,
    pub name: String,
}

/// Requests kept at each full copy: 1 MiB of 256 KiB pieces, and half of a peer's upload
/// slots, the most one address may hold.
pub const DEFAULT_PIPELINE: usize = crate::server::DEFAULT_UPLOAD_SLOTS / 2;

/// How a download behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests kept in flight per peer, so a link never idles between pieces.
    pub pipeline: usize,
    /// Bad pieces after which a peer is dropped.
    pub max_failures: u32,
    /// A peer silent this long (connecting or mid-piece) is given up.
    pub stall_timeout: Duration,
    /// The name this client gives in its `Hello`.
    pub client_name: String,
    /// Also downloads from peers that serve without TLS (registered no key). Peers with a key
    /// are always reached over TLS and must show that key.
    pub allow_plaintext: bool,
    /// Where to share the download while it runs, each piece once verified (`None`: not
    /// shared until complete). The caller removes it once the file is shared whole.
    pub share: Option<Arc<Partials>>,
    /// Where to find more peers while it runs (others who started downloading since), and how
    /// often to look (`None`: only the peers known at the start).
    pub discover: Option<(Arc<dyn Discover>, Duration)>,
    /// Counts pieces received, bad pieces and peers dropped, for the metrics.
    pub stats: Arc<crate::stats::PeerStats>,
}

/// Finds the peers holding a file (all of it, or the pieces they have so far).
pub trait Discover: Send + Sync + std::fmt::Debug {
    fn peers(
        &self,
        wanted: &Wanted,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<PeerAddr>> + Send + '_>>;
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pipeline: DEFAULT_PIPELINE,
            max_failures: 2,
            stall_timeout: Duration::from_secs(20),
            client_name: "troca swarm".into(),
            allow_plaintext: false,
            share: None,
            discover: None,
            stats: Arc::default(),
        }
    }
}

/// What one peer contributed.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub addr: SocketAddr,
    /// Verified pieces received from it (duplicates in the end game included) and their bytes.
    pub pieces: u64,
    pub bytes: u64,
    /// Pieces from it that failed verification.
    pub bad_pieces: u32,
    /// Why it stopped helping before the end, if it did.
    pub dropped: Option<String>,
}

/// A finished, verified download.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub path: PathBuf,
    pub size: u64,
    pub id: Hash,
    /// Pieces already held from an interrupted download.
    pub resumed_pieces: u64,
    pub pieces: u64,
    /// The verified piece hashes (so the file can be shared on without hashing it again).
    pub hashes: Arc<[Hash]>,
    pub peers: Vec<PeerReport>,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("no peer is sharing this file")]
    NoPeers,
    #[error("no peer gave piece hashes that match the file's id ({0})")]
    NoHashes(String),
    #[error(
        "{missing} of {total} pieces still missing and no peer left to ask ({why}); \
         run the same command again to resume"
    )]
    Incomplete {
        missing: u64,
        total: u64,
        why: String,
    },
    #[error("{path}: {source}")]
    Local { path: PathBuf, source: io::Error },
    #[error("not enough space for {name}: {needed} bytes needed, {available} available")]
    NoSpace {
        name: String,
        needed: u64,
        available: u64,
    },
}

fn local(path: &Path) -> impl FnOnce(io::Error) -> SwarmError + '_ {
    move |source| SwarmError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// Downloads a file found on the swarm: the most claimed size from the peers that claim it,
/// then, if that fails, each other claimed size in turn (only the true one verifies against the
/// id, so a peer that lies about the size costs an attempt, not the download).
pub async fn download_found<P: Progress + Send + Sync + 'static>(
    found: &crate::lookup::Found,
    exclude: &[SocketAddr],
    dir: &Path,
    options: &Options,
    progress: Arc<P>,
) -> Result<Outcome, SwarmError> {
    let mut first_error = None;
    for claim in &found.claims {
        let peers: Vec<PeerAddr> = claim
            .peers
            .iter()
            .copied()
            .filter(|p| !exclude.contains(&p.addr))
            .collect();
        match download(
            &found.wanted_as(claim),
            &peers,
            dir,
            options,
            Arc::clone(&progress),
        )
        .await
        {
            Ok(outcome) => return Ok(outcome),
            Err(e @ SwarmError::Local { .. }) => return Err(e),
            Err(e) => {
                if found.claims.len() > 1 {
                    progress.note(&format!("{} bytes did not work out: {e}", claim.size));
                }
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(SwarmError::NoPeers))
}

/// The most peers one download takes pieces from at once: with [`PIECE_CHUNK`] each, what a
/// download holds in memory is bounded whatever the file's piece size and the peers listed.
pub const MAX_WORKERS: usize = 32;
/// Pieces are read, hashed and written in chunks of this size, never held whole.
pub const PIECE_CHUNK: usize = 256 * 1024;

/// Refuses a download that cannot fit on the disk before anything is created. What a previous
/// attempt left in the part file counts as already there.
fn check_space(dir: &Path, part: &Path, wanted: &Wanted) -> Result<(), SwarmError> {
    let held = std::fs::metadata(part).map_or(0, |m| m.len().min(wanted.size));
    let needed = wanted.size - held;
    let probe = if dir.exists() { dir } else { Path::new(".") };
    let available = troca_net::durable::available_bytes(probe);
    if needed > available {
        return Err(SwarmError::NoSpace {
            name: wanted.name.clone(),
            needed,
            available,
        });
    }
    Ok(())
}

/// The workers of a download, one per peer, and the peers met so far.
struct Crew {
    workers: JoinSet<Ended>,
    known: std::collections::HashSet<SocketAddr>,
    /// Workers started for each peer: one that could not begin (it was not listening yet, or
    /// did not have the file yet: a downloader registers before it holds anything) is tried
    /// again when the tracker lists it again, up to [`TRIES`] times.
    tries: std::collections::HashMap<SocketAddr, u8>,
    /// Peers forgotten to be tried again, not listed again yet.
    retry: std::collections::HashSet<SocketAddr>,
    next: PeerId,
}

/// How many times a download tries a peer that could not begin serving it.
const TRIES: u8 = 5;

/// How a worker ended: its report, and whether the peer said what it holds (else it never
/// began serving this download).
struct Ended {
    report: PeerReport,
    met: bool,
}

impl Crew {
    /// A crew that knows the peers already found lying (never asked for pieces).
    fn new(liars: &[PeerAddr]) -> Self {
        Self {
            workers: JoinSet::new(),
            known: liars.iter().map(|p| p.addr).collect(),
            tries: HashMap::new(),
            retry: std::collections::HashSet::new(),
            next: 0,
        }
    }

    /// Starts a worker for each peer not met before, up to [`MAX_WORKERS`] at once.
    fn add<P: Progress + Send + Sync + 'static>(
        &mut self,
        shared: &Arc<Shared<P>>,
        peers: &[PeerAddr],
    ) {
        for &peer in peers {
            if self.workers.len() >= MAX_WORKERS || !self.known.insert(peer.addr) {
                continue;
            }
            *self.tries.entry(peer.addr).or_default() += 1;
            self.retry.remove(&peer.addr);
            let (shared, id) = (Arc::clone(shared), self.next);
            self.next += 1;
            self.workers
                .spawn(async move { Worker::new(id, peer).run(&shared).await });
        }
    }

    /// Runs until every piece is here, or no worker is left and no new peer turns up; looks
    /// for new peers now and then when the options say where.
    async fn run<P: Progress + Send + Sync + 'static>(
        &mut self,
        shared: &Arc<Shared<P>>,
        wanted: &Wanted,
        reports: &mut Vec<PeerReport>,
    ) {
        let discover = shared.options.discover.clone();
        // Soon at first (a crowd starting together finds itself within a second), then at the
        // options' pace.
        let mut every = Duration::from_millis(250);
        loop {
            let tick = async {
                match &discover {
                    Some((_, most)) if !shared.finished.is_cancelled() => {
                        tokio::time::sleep(every.min(*most)).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.workers.join_next() => match r {
                    Some(Ok(ended)) => self.ended(shared, ended, reports),
                    Some(Err(_)) => {}
                    None => {
                        // Everyone is gone: one last look for new peers before giving up.
                        let Some((d, most)) = &discover else { return };
                        if shared.finished.is_cancelled() {
                            return;
                        }
                        if !self.retry.is_empty() {
                            // Peers to try again are, in their time.
                            tokio::time::sleep(every.min(*most)).await;
                            every *= 2;
                        }
                        let found = d.peers(wanted).await;
                        self.add(shared, &found);
                        if self.workers.is_empty() {
                            return;
                        }
                    }
                },
                () = tick => {
                    if let Some((d, _)) = &discover {
                        let found = d.peers(wanted).await;
                        self.add(shared, &found);
                    }
                    every *= 2;
                }
            }
        }
    }

    /// Keeps the report of a worker that ended, or forgets the peer (to be tried again at the
    /// next look) if it never began serving and has tries left.
    fn ended<P>(&mut self, shared: &Shared<P>, ended: Ended, reports: &mut Vec<PeerReport>) {
        let addr = ended.report.addr;
        let again = !ended.met
            && ended.report.dropped.is_some()
            && !shared.finished.is_cancelled()
            && shared.options.discover.is_some()
            && self.tries.get(&addr).is_some_and(|&n| n < TRIES);
        if again {
            self.known.remove(&addr);
            self.retry.insert(addr);
        } else {
            reports.push(ended.report);
        }
    }
}

/// A seed for the scheduler's random choices: different in each download, so downloaders
/// starting together spread over different pieces.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Makes the download servable to other peers, if the options say to share it.
fn share_partial(
    options: &Options,
    wanted: &Wanted,
    layout: Layout,
    hashes: &Arc<[Hash]>,
    file: &File,
    held: Vec<bool>,
) -> Option<Arc<Partial>> {
    let partials = options.share.as_ref()?;
    let file = file.try_clone().ok()?;
    let partial = Arc::new(Partial::new(
        wanted.id,
        wanted.name.clone(),
        layout,
        Arc::clone(hashes),
        file,
        held,
    ));
    partials.insert(Arc::clone(&partial));
    Some(partial)
}

/// Bounds one step by the stall timeout.
async fn within<T>(
    stall: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, PeerError> {
    tokio::time::timeout(stall, fut)
        .await
        .map_err(|_| PeerError::Stalled)
}

/// Where a download keeps its work until it is done: `DIR/.troca-swarm/ID.part` and its record.
#[derive(Debug, Clone)]
struct PartPaths {
    folder: PathBuf,
    part: PathBuf,
    record: PathBuf,
}

impl PartPaths {
    fn new(dir: &Path, wanted: &Wanted) -> Self {
        let folder = dir.join(PARTIAL_DIR);
        let hex = troca_proto::hex(&wanted.id);
        Self {
            part: folder.join(format!("{hex}.part")),
            record: folder.join(format!("{hex}.pieces")),
            folder,
        }
    }

    /// Removes the record and the part file's folder once nothing more is to come. The folder
    /// goes only when empty: other downloads may be under way in it.
    fn clean_up(&self) {
        let _ = std::fs::remove_file(&self.record);
        let _ = std::fs::remove_dir(&self.folder);
    }
}

/// The part file as a download finds it: open, with the pieces it already holds verified.
struct Opened {
    file: File,
    record: Record,
    held: Vec<bool>,
}

/// Runs disk work (space checks, re-hashing a partial download, fsync, rename) on the blocking
/// pool: the same runtime serves other peers while a download runs.
async fn on_disk<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, SwarmError> + Send + 'static,
) -> Result<T, SwarmError> {
    troca_net::blocking(work, local(path)).await
}

/// Downloads `wanted` from `peers` into the folder `dir`.
pub async fn download<P: Progress + Send + Sync + 'static>(
    wanted: &Wanted,
    peers: &[PeerAddr],
    dir: &Path,
    options: &Options,
    progress: Arc<P>,
) -> Result<Outcome, SwarmError> {
    if peers.is_empty() {
        return Err(SwarmError::NoPeers);
    }
    let layout = Layout::for_len(wanted.size);
    let (hashes, liars) = fetch_hashes(wanted, layout, peers, options).await?;
    let paths = PartPaths::new(dir, wanted);
    let opened = {
        let (dir, paths, wanted, hashes) = (
            dir.to_path_buf(),
            paths.clone(),
            wanted.clone(),
            Arc::clone(&hashes),
        );
        on_disk(&paths.part.clone(), move || {
            check_space(&dir, &paths.part, &wanted)?;
            open_partial(&paths, &wanted, layout, &hashes)
        })
        .await?
    };
    let resumed_pieces = note_resume(&*progress, wanted, layout, &opened.held);
    let shared = Arc::new(Shared::new(
        wanted, layout, hashes, opened, options, progress,
    ));
    let mut reports: Vec<PeerReport> = liars.iter().map(liar_report).collect();
    let mut crew = Crew::new(&liars);
    crew.add(&shared, peers);
    crew.run(&shared, wanted, &mut reports).await;
    shared.progress.finish();
    reports.sort_by_key(|r| r.addr);
    let left = shared.schedule.lock().expect("not poisoned").missing();
    if left > 0 {
        if left as u64 == layout.count() {
            // Nothing verified: nothing worth keeping for a resume (a liar's giant file included).
            let paths = paths.clone();
            on_disk(&paths.part.clone(), move || {
                let _ = std::fs::remove_file(&paths.part);
                paths.clean_up();
                Ok(())
            })
            .await?;
        }
        return Err(incomplete(left as u64, layout.count(), &reports));
    }
    let shared = Arc::into_inner(shared).expect("every worker has ended");
    let (file, hashes) = (shared.file, shared.hashes);
    let path = {
        let (dir, wanted) = (dir.to_path_buf(), wanted.clone());
        on_disk(&paths.part.clone(), move || {
            place_download(file, &paths, &dir, &wanted)
        })
        .await?
    };
    Ok(Outcome {
        path,
        size: wanted.size,
        id: wanted.id,
        resumed_pieces,
        pieces: layout.count(),
        hashes,
        peers: reports,
    })
}

/// Starts the progress with what an interrupted download left (and says so); returns the
/// pieces already held.
fn note_resume(progress: &dyn Progress, wanted: &Wanted, layout: Layout, held: &[bool]) -> u64 {
    let resumed_pieces = held.iter().filter(|&&d| d).count() as u64;
    let resumed_bytes: u64 = (0..layout.count())
        .filter(|&i| held[i as usize])
        .map(|i| layout.range(i).1)
        .sum();
    progress.start(wanted.size, resumed_bytes);
    if resumed_pieces > 0 {
        progress.note(&format!(
            "resuming: {resumed_pieces} of {} pieces already here",
            layout.count()
        ));
    }
    resumed_pieces
}

/// The report of a peer whose piece hashes did not add up to the file's id: it was never asked
/// for a piece.
fn liar_report(liar: &PeerAddr) -> PeerReport {
    PeerReport {
        addr: liar.addr,
        pieces: 0,
        bytes: 0,
        bad_pieces: 0,
        dropped: Some("its piece hashes do not match the file's id".into()),
    }
}

/// A download that ended with pieces missing, and why each peer stopped.
fn incomplete(missing: u64, total: u64, reports: &[PeerReport]) -> SwarmError {
    let why = reports
        .iter()
        .filter_map(|r| r.dropped.as_ref().map(|d| format!("{}: {d}", r.addr)))
        .collect::<Vec<_>>()
        .join("; ");
    SwarmError::Incomplete {
        missing,
        total,
        why,
    }
}

/// The local name for a download: the last part of its shared name if that is a valid name
/// (the name comes from other machines and must not steer where the file lands), else its id.
pub fn local_name(wanted: &Wanted) -> String {
    let base = wanted.name.rsplit('/').next().unwrap_or("");
    match RemoteName::parse(base) {
        Ok(_) if !base.starts_with('.') => base.to_owned(),
        _ => troca_proto::hex(&wanted.id),
    }
}

/// Makes the finished part file durable and moves it into `dir` under a free name.
fn place_download(
    file: File,
    paths: &PartPaths,
    dir: &Path,
    wanted: &Wanted,
) -> Result<PathBuf, SwarmError> {
    file.set_len(wanted.size).map_err(local(&paths.part))?;
    file.sync_all().map_err(local(&paths.part))?;
    drop(file);
    let target = dir.join(local_name(wanted));
    // Another process may take the free name first; then the next free one is tried.
    for _ in 0..16 {
        let to = free_local_path(&target);
        match place(&paths.part, &to, false) {
            Ok(()) => {
                paths.clean_up();
                return Ok(to);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(local(&to)(e)),
        }
    }
    Err(local(&target)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name to save under",
    )))
}

/// Asks peers in turn for the piece hashes until one gives a list that merges up to the id.
/// Returns the list and the peers that gave a wrong one.
async fn fetch_hashes(
    wanted: &Wanted,
    layout: Layout,
    peers: &[PeerAddr],
    options: &Options,
) -> Result<(Arc<[Hash]>, Vec<PeerAddr>), SwarmError> {
    // A one-piece file's only piece hash is its id: nothing to ask.
    if layout.count() == 1 {
        return Ok((Arc::from(vec![wanted.id]), Vec::new()));
    }
    let mut liars = Vec::new();
    let mut reasons = Vec::new();
    for &peer in peers {
        let addr = peer.addr;
        let asked =
            tokio::time::timeout(options.stall_timeout, ask_hashes(peer, wanted.id, options))
                .await
                .unwrap_or(Err(PeerError::Stalled));
        match asked {
            Ok((size, hashes)) => {
                let checked = if size == wanted.size {
                    layout
                        .verify(&wanted.id, &hashes)
                        .map_err(|e| e.to_string())
                } else {
                    Err(format!("size {size}, expected {}", wanted.size))
                };
                match checked {
                    Ok(()) => return Ok((hashes.into(), liars)),
                    Err(e) => {
                        reasons.push(format!("{addr}: {e}"));
                        liars.push(peer);
                    }
                }
            }
            Err(e) => reasons.push(format!("{addr}: {e}")),
        }
    }
    Err(SwarmError::NoHashes(reasons.join("; ")))
}

async fn ask_hashes(
    peer: PeerAddr,
    id: Hash,
    options: &Options,
) -> Result<(u64, Vec<Hash>), PeerError> {
    let mut conn = connect(peer, options).await?;
    conn.send(&Pieces { id }.into()).await?;
    let mut hashes = Vec::new();
    loop {
        match read(&mut conn).await? {
            Message::PieceHashes(p) => {
                hashes.extend(p.hashes);
                // More than the largest layout has means a misbehaving peer, not a big file.
                if hashes.len() as u64 > troca_proto::pieces::MAX_PIECES {
                    return Err(PeerError::Protocol("too many piece hashes".into()));
                }
                if p.last {
                    return Ok((p.size, hashes));
                }
            }
            other => return Err(unexpected(&other)),
        }
    }
}

/// Why a peer stopped helping.
#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed message: {0}")]
    Frame(#[from] FrameError),
    #[error("refused: {0}")]
    Refused(String),
    /// Every upload slot of the peer is sending: ask others until it sends `SlotFree`.
    #[error("busy: {0}")]
    Busy(String),
    /// The peer sends this piece to others first (initial seeding): ask it for another.
    #[error("deferred: {0}")]
    Deferred(String),
    #[error("sent something unexpected: {0}")]
    Protocol(String),
    #[error("stalled")]
    Stalled,
    #[error("sent {0} pieces that failed verification")]
    Corrupt(u32),
}

fn unexpected(msg: &Message) -> PeerError {
    PeerError::Protocol(format!("{} message", msg.name()))
}

async fn read(conn: &mut Connection<Stream>) -> Result<Message, PeerError> {
    match conn.read_message().await? {
        Some(Message::Error(e)) if e.code == ErrorCode::Busy => Err(PeerError::Busy(e.message)),
        Some(Message::Error(e)) if e.code == ErrorCode::Deferred => {
            Err(PeerError::Deferred(e.message))
        }
        Some(Message::Error(e)) => Err(PeerError::Refused(e.message)),
        Some(m) => Ok(m),
        None => Err(PeerError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed the connection",
        ))),
    }
}

/// Connects to a peer: over TLS, checking the key it registered, or (when allowed) in
/// plaintext if it registered none. Then says hello.
async fn connect(peer: PeerAddr, options: &Options) -> Result<Connection<Stream>, PeerError> {
    if peer.key.is_none() && !options.allow_plaintext {
        return Err(PeerError::Refused(
            "serves without TLS (say --plaintext to download from it anyway)".into(),
        ));
    }
    let tcp = TcpStream::connect(peer.addr).await?;
    tcp.set_nodelay(true)?;
    let stream = match peer.key {
        Some(key) => troca_net::tls::connect_peer(tcp, key).await?,
        None => Stream::Plain(tcp),
    };
    let hello = Hello {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
        client: options.client_name.clone(),
        token: None,
        owner_key: None,
    };
    let (conn, _) = troca_net::client::greet(stream, hello, troca_net::client::DEFAULT_SILENCE)
        .await
        .map_err(|e| match e {
            ClientError::Io(e) => PeerError::Io(e),
            ClientError::Hub { message, .. } => PeerError::Refused(message),
            other => PeerError::Protocol(other.to_string()),
        })?;
    Ok(conn)
}

/// Opens (or creates) the part file and its record, and finds which pieces are already held and
/// still verify.
fn open_partial(
    paths: &PartPaths,
    wanted: &Wanted,
    layout: Layout,
    hashes: &[Hash],
) -> Result<Opened, SwarmError> {
    let count = layout.count() as usize;
    std::fs::create_dir_all(&paths.folder).map_err(local(&paths.folder))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.part)
        .map_err(local(&paths.part))?;
    let previous = Record::load(&paths.record, wanted, count);
    let mut held = vec![false; count];
    if let Some(bits) = &previous {
        // Each piece the record says is here is hashed again, a chunk at a time.
        let mut buf = IoBuf::new(PIECE_CHUNK.min(layout.piece as usize));
        for (index, h) in held.iter_mut().enumerate() {
            if bits[index / 8] & (1 << (index % 8)) != 0 {
                *h = piece_on_disk(&file, layout, index as u64, &mut buf)
                    .is_ok_and(|got| got == hashes[index]);
            }
        }
    } else {
        file.set_len(0).map_err(local(&paths.part))?;
    }
    // Not extended to the full size: pieces extend it as they land, so a download that gets
    // nothing leaves nothing large behind.
    let record = Record::create(&paths.record, wanted, &held).map_err(local(&paths.record))?;
    Ok(Opened { file, record, held })
}

/// The hash of piece `index` as the part file holds it, read a buffer at a time.
fn piece_on_disk(file: &File, layout: Layout, index: u64, buf: &mut [u8]) -> io::Result<Hash> {
    let (start, len) = layout.range(index);
    let mut hasher = layout.piece_hasher(index);
    let mut done = 0;
    while done < len {
        let n = buf.len().min((len - done) as usize);
        file.read_exact_at(&mut buf[..n], start + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(layout.finish_piece(&hasher))
}

/// `ID.pieces`: which pieces of the part file are verified. Layout: `TRSP`, the id, the size
/// (u64 BE), then one bit per piece (piece `i` is bit `i % 8` of byte `i / 8`).
#[derive(Debug)]
struct Record {
    file: File,
    bits: Mutex<Vec<u8>>,
}

const RECORD_MAGIC: &[u8; 4] = b"TRSP";
const RECORD_HEADER: usize = 4 + 32 + 8;

impl Record {
    fn header(wanted: &Wanted) -> Vec<u8> {
        let mut h = RECORD_MAGIC.to_vec();
        h.extend_from_slice(&wanted.id);
        h.extend_from_slice(&wanted.size.to_be_bytes());
        h
    }

    /// The bits of an existing record for this very file, if there is one.
    fn load(path: &Path, wanted: &Wanted, count: usize) -> Option<Vec<u8>> {
        let bytes = std::fs::read(path).ok()?;
        (bytes.len() == RECORD_HEADER + count.div_ceil(8)
            && bytes[..RECORD_HEADER] == Self::header(wanted)[..])
            .then(|| bytes[RECORD_HEADER..].to_vec())
    }

    fn create(path: &Path, wanted: &Wanted, held: &[bool]) -> io::Result<Self> {
        let mut bits = vec![0u8; held.len().div_ceil(8)];
        for (i, _) in held.iter().enumerate().filter(|(_, &h)| h) {
            bits[i / 8] |= 1 << (i % 8);
        }
        let mut bytes = Self::header(wanted);
        bytes.extend_from_slice(&bits);
        std::fs::write(path, &bytes)?;
        Ok(Self {
            file: OpenOptions::new().write(true).open(path)?,
            bits: Mutex::new(bits),
        })
    }

    /// Notes piece `index` as verified and written.
    fn mark(&self, index: usize) -> io::Result<()> {
        let mut bits = self.bits.lock().expect("not poisoned");
        bits[index / 8] |= 1 << (index % 8);
        self.file
            .write_all_at(&[bits[index / 8]], (RECORD_HEADER + index / 8) as u64)
    }
}

struct Shared<P> {
    id: Hash,
    layout: Layout,
    hashes: Arc<[Hash]>,
    file: File,
    record: Record,
    schedule: Mutex<Scheduler>,
    /// The download as other peers see it while it runs (`None`: not shared).
    partial: Option<Arc<Partial>>,
    /// Pieces being written into the part file right now. Locked before `schedule` when both
    /// are.
    writers: Mutex<HashMap<u32, Writers>>,
    /// Woken when a piece goes back to the schedule, so idle peers look again.
    wake: Notify,
    /// Cancelled when every piece is done: stragglers stop at once.
    finished: CancellationToken,
    options: Options,
    progress: Arc<P>,
    /// Requests out now, over every peer, and the peers met that hold only part of the file:
    /// see [`CROWD_IN_FLIGHT`].
    in_flight: std::sync::atomic::AtomicUsize,
    partial_peers: std::sync::atomic::AtomicUsize,
}

/// The requests a download keeps out in all once it takes pieces from partial holders (a
/// crowd), one per peer. While every peer it knows holds the whole file, it keeps `pipeline`
/// requests at each, so every link stays busy. In a crowd a piece in flight at a busy peer
/// cannot be asked of an idle one, and idle uploaders are what slow a crowd down. A few more
/// than a peer's upload slots, so the slots stay full while some requests are answered busy
/// (`troca-swarm-sim`, 1,000 downloaders, three seeds: 1.19–1.24× the fluid bound with 8 in
/// flight, 1.19–1.21× with 12; 3 at each of up to 32 peers was 3.33×).
pub const CROWD_IN_FLIGHT: usize = 12;

impl<P: Progress> Shared<P> {
    /// The state of a download whose part file is open, shared by its workers.
    fn new(
        wanted: &Wanted,
        layout: Layout,
        hashes: Arc<[Hash]>,
        opened: Opened,
        options: &Options,
        progress: Arc<P>,
    ) -> Self {
        let partial = share_partial(
            options,
            wanted,
            layout,
            &hashes,
            &opened.file,
            opened.held.clone(),
        );
        let finished = CancellationToken::new();
        if opened.held.iter().all(|&h| h) {
            finished.cancel();
        }
        Self {
            id: wanted.id,
            layout,
            hashes,
            file: opened.file,
            record: opened.record,
            schedule: Mutex::new(Scheduler::new(opened.held, seed())),
            partial,
            in_flight: Default::default(),
            partial_peers: Default::default(),
            writers: Mutex::default(),
            wake: Notify::new(),
            finished,
            options: options.clone(),
            progress,
        }
    }

    fn release(&self, peer: PeerId, index: u32) {
        self.schedule
            .lock()
            .expect("not poisoned")
            .release(peer, index);
        self.wake.notify_waiters();
    }

    /// Starts writing a copy of piece `index` into the part file as it arrives. Several peers'
    /// copies of one piece may arrive at once (the end game); each chunk is written only while
    /// the piece is not done, and a copy that shared its piece with another is checked again on
    /// disk before the piece counts as done, so unverified bytes never stand as a verified piece.
    fn start_writing(&self, index: u32) -> PieceWriter<'_, P> {
        let mut writers = self.writers.lock().expect("not poisoned");
        let w = writers.entry(index).or_default();
        w.now += 1;
        w.shared |= w.now > 1;
        PieceWriter {
            shared: self,
            index,
        }
    }

    /// Records piece `index` once a copy that verified was written by `writer` (and, if another
    /// copy was written alongside, once what is on disk verifies too).
    fn stored(&self, peer: PeerId, len: u64, writer: PieceWriter<'_, P>) -> io::Result<()> {
        let index = writer.index;
        let (fresh, all_done) = {
            let writers = self.writers.lock().expect("not poisoned");
            let mut s = self.schedule.lock().expect("not poisoned");
            if s.is_done(index) {
                return Ok(());
            }
            if writers.get(&index).is_some_and(|w| w.shared) {
                let mut buf = IoBuf::new(PIECE_CHUNK.min(len.max(1) as usize));
                let on_disk = piece_on_disk(&self.file, self.layout, index.into(), &mut buf)?;
                if on_disk != self.hashes[index as usize] {
                    drop(s);
                    drop(writers);
                    drop(writer);
                    self.release(peer, index);
                    return Ok(());
                }
            }
            (s.complete(peer, index), s.missing() == 0)
        };
        drop(writer);
        if fresh {
            self.record.mark(index as usize)?;
            self.progress.advance(len);
            if let Some(partial) = &self.partial {
                partial.add(index);
            }
        }
        if all_done {
            self.finished.cancel();
        }
        Ok(())
    }
}

/// Who is writing a piece: how many copies now, and whether two ever overlapped.
#[derive(Debug, Default)]
struct Writers {
    now: usize,
    shared: bool,
}

/// One copy of a piece being written into the part file.
struct PieceWriter<'a, P> {
    shared: &'a Shared<P>,
    index: u32,
}

impl<P> PieceWriter<'_, P> {
    /// Writes `bytes` at `at` unless the piece is done already (then they are dropped: the
    /// verified copy on disk stays as it is).
    fn write(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        let _writers = self.shared.writers.lock().expect("not poisoned");
        if self
            .shared
            .schedule
            .lock()
            .expect("not poisoned")
            .is_done(self.index)
        {
            return Ok(());
        }
        self.shared.file.write_all_at(bytes, at)
    }
}

impl<P> Drop for PieceWriter<'_, P> {
    fn drop(&mut self) {
        let mut writers = self.shared.writers.lock().expect("not poisoned");
        if let Some(w) = writers.get_mut(&self.index) {
            w.now -= 1;
            if w.now == 0 {
                writers.remove(&self.index);
            }
        }
    }
}

/// One peer's share of the work.
struct Worker {
    id: PeerId,
    peer: PeerAddr,
    report: PeerReport,
    /// Requests sent and not yet answered, oldest first (answers come in order).
    in_flight: VecDeque<u32>,
    /// Whether the peer holds the whole file (else it tells of new pieces as it gets them).
    full: bool,
    /// Whether its bitfield arrived (and it was counted as a full copy or a partial holder).
    registered: bool,
    /// It answered a request busy and has not sent `SlotFree` since: nothing is asked of it.
    busy: bool,
}

/// What a peer sent while a worker waited for an answer or for something to ask.
enum Heard {
    /// A piece's header: its bytes follow.
    Piece(u32, u64),
    /// It refused the oldest request.
    Refused(String),
    /// Its upload slots were all sending: the oldest request goes to others.
    Busy,
    /// It sends the oldest request's piece to others first: asked of others.
    Deferred,
}

impl Worker {
    fn new(id: PeerId, peer: PeerAddr) -> Self {
        Self {
            id,
            peer,
            report: PeerReport {
                addr: peer.addr,
                pieces: 0,
                bytes: 0,
                bad_pieces: 0,
                dropped: None,
            },
            in_flight: VecDeque::new(),
            full: false,
            registered: false,
            busy: false,
        }
    }

    async fn run<P: Progress>(mut self, shared: &Shared<P>) -> Ended {
        let result = tokio::select! {
            _ = shared.finished.cancelled() => Ok(()),
            r = self.work(shared) => r,
        };
        // Whatever this peer still owed goes back to the others.
        shared
            .schedule
            .lock()
            .expect("not poisoned")
            .remove_peer(self.id);
        shared.wake.notify_waiters();
        if let Err(e) = result {
            tracing::info!("peer {} dropped: {e}", self.report.addr);
            PeerStats::add(&shared.options.stats.peers_dropped, 1);
            self.report.dropped = Some(e.to_string());
        }
        Ended {
            report: self.report,
            met: self.registered,
        }
    }

    /// Connects, learns which pieces the peer holds (`Holding` → `Bitfield`), then asks for
    /// pieces it holds, a few at a time, until nothing is missing or it cannot help.
    async fn work<P: Progress>(&mut self, shared: &Shared<P>) -> Result<(), PeerError> {
        let stall = shared.options.stall_timeout;
        let mut conn = tokio::time::timeout(stall, connect(self.peer, &shared.options))
            .await
            .map_err(|_| PeerError::Stalled)??;
        let sharing = shared.options.share.is_some();
        conn.send(
            &Holding {
                id: shared.id,
                sharing,
            }
            .into(),
        )
        .await?;
        let bits = match within(stall, read(&mut conn)).await?? {
            Message::Bitfield(b) if b.id == shared.id => b,
            other => return Err(unexpected(&other)),
        };
        let held = bits.held();
        self.full = held.iter().all(|&h| h);
        self.registered = true;
        if !self.full {
            shared
                .partial_peers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let has = (!self.full).then_some(held);
        shared
            .schedule
            .lock()
            .expect("not poisoned")
            .add_peer(self.id, has)
            .map_err(|e| PeerError::Protocol(e.to_string()))?;
        let chunk = (PIECE_CHUNK as u64).min(shared.layout.piece.min(shared.layout.len.max(1)));
        let mut buf = IoBuf::new(chunk as usize);
        loop {
            self.ask(shared, &mut conn);
            if self.in_flight.is_empty() {
                if !self.idle(shared, &mut conn).await? {
                    return Ok(());
                }
                continue;
            }
            within(stall, conn.flush()).await??;
            let index = *self.in_flight.front().expect("not empty");
            match self.hear(shared, &mut conn).await? {
                Heard::Piece(i, len) if i == index && len == shared.layout.range(i.into()).1 => {
                    self.receive_piece(shared, &mut conn, index, len, &mut buf)
                        .await?
                }
                Heard::Piece(i, _) => {
                    return Err(PeerError::Protocol(format!("piece {i}, not {index}")))
                }
                // It said it held a piece it cannot give: as bad as a corrupt copy.
                Heard::Refused(why) => self.bad_piece(shared, index, &why)?,
                Heard::Busy => self.turned_away(shared, index),
                Heard::Deferred => self.deferred(shared, index),
            }
        }
    }

    /// Queues requests for pieces the peer holds, up to the pipeline (none while it is busy).
    fn ask<P>(&mut self, shared: &Shared<P>, conn: &mut Connection<Stream>) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.busy {
            return;
        }
        let (here, cap) = if shared.partial_peers.load(Relaxed) > 0 {
            (1, CROWD_IN_FLIGHT)
        } else {
            (shared.options.pipeline, usize::MAX)
        };
        let mut schedule = shared.schedule.lock().expect("not poisoned");
        while self.in_flight.len() < here && shared.in_flight.load(Relaxed) < cap {
            let Some(index) = schedule.pick(self.id) else {
                break;
            };
            shared.in_flight.fetch_add(1, Relaxed);
            conn.queue(
                &GetPiece {
                    id: shared.id,
                    index,
                }
                .into(),
            );
            self.in_flight.push_back(index);
        }
    }

    /// Nothing to ask this peer for now: waits for it to get a piece (`Have`) or for a piece
    /// to come back to the schedule. `false` when nothing is missing; an error when it holds
    /// everything and what is left are pieces it corrupted.
    async fn idle<P>(
        &mut self,
        shared: &Shared<P>,
        conn: &mut Connection<Stream>,
    ) -> Result<bool, PeerError> {
        {
            let schedule = shared.schedule.lock().expect("not poisoned");
            if schedule.missing() == 0 {
                return Ok(false);
            }
            if self.full && !schedule.wants_from(self.id) && !schedule.any_in_flight() {
                return Err(PeerError::Corrupt(self.report.bad_pieces));
            }
        }
        let woken = shared.wake.notified();
        tokio::select! {
            _ = woken => Ok(true),
            // A piece released just before `woken` was made is seen at the next look.
            _ = tokio::time::sleep(Duration::from_millis(250)) => Ok(true),
            // A partial holder tells of new pieces, a busy peer of a free slot; nothing else
            // may come unasked.
            heard = read(conn) => match heard? {
                Message::Have(h) if h.id == shared.id => {
                    self.have(shared, h.index)?;
                    Ok(true)
                }
                Message::SlotFree(_) => {
                    self.busy = false;
                    Ok(true)
                }
                other => Err(unexpected(&other)),
            },
        }
    }

    fn have<P>(&self, shared: &Shared<P>, index: u32) -> Result<(), PeerError> {
        shared
            .schedule
            .lock()
            .expect("not poisoned")
            .have(self.id, index)
            .map_err(|e| PeerError::Protocol(e.to_string()))
    }

    /// The answer to the oldest request, taking in the `Have`s that come before it.
    async fn hear<P>(
        &mut self,
        shared: &Shared<P>,
        conn: &mut Connection<Stream>,
    ) -> Result<Heard, PeerError> {
        let stall = shared.options.stall_timeout;
        loop {
            match within(stall, read(conn)).await? {
                Ok(Message::PieceData(d)) => return Ok(Heard::Piece(d.index, d.len)),
                Ok(Message::Have(h)) if h.id == shared.id => self.have(shared, h.index)?,
                Ok(Message::SlotFree(_)) => self.busy = false,
                Ok(other) => return Err(unexpected(&other)),
                Err(PeerError::Refused(why)) => return Ok(Heard::Refused(why)),
                Err(PeerError::Busy(_)) => return Ok(Heard::Busy),
                Err(PeerError::Deferred(_)) => return Ok(Heard::Deferred),
                Err(e) => return Err(e),
            }
        }
    }

    /// `n` requests of this worker are over: room for others' (they are woken to use it).
    fn settle<P>(&self, shared: &Shared<P>, n: usize) {
        if n > 0 {
            shared
                .in_flight
                .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            shared.wake.notify_waiters();
        }
    }

    /// The request for `index` got its answer: one fewer in flight.
    fn answered<P>(&mut self, shared: &Shared<P>, index: u32) {
        let before = self.in_flight.len();
        self.in_flight.retain(|&i| i != index);
        self.settle(shared, before - self.in_flight.len());
    }

    /// The peer was busy for `index`: it goes back to the schedule for others, and this peer
    /// is asked nothing more until it sends `SlotFree`.
    fn turned_away<P: Progress>(&mut self, shared: &Shared<P>, index: u32) {
        self.answered(shared, index);
        self.busy = true;
        shared.release(self.id, index);
    }

    /// The peer deferred `index`: asked of others, and this peer is asked for another now.
    fn deferred<P>(&mut self, shared: &Shared<P>, index: u32) {
        self.answered(shared, index);
        shared
            .schedule
            .lock()
            .expect("not poisoned")
            .defer(self.id, index);
        shared.wake.notify_waiters();
    }

    /// `index` from this peer was bad (failed verification, or refused though claimed): asked
    /// of others; too many and the peer is dropped.
    fn bad_piece<P>(&mut self, shared: &Shared<P>, index: u32, why: &str) -> Result<(), PeerError> {
        self.answered(shared, index);
        self.report.bad_pieces += 1;
        PeerStats::add(&shared.options.stats.bad_pieces, 1);
        shared
            .schedule
            .lock()
            .expect("not poisoned")
            .corrupt(self.id, index);
        shared.wake.notify_waiters();
        tracing::warn!("piece {index} from {}: {why}", self.report.addr);
        if self.report.bad_pieces >= shared.options.max_failures {
            return Err(PeerError::Corrupt(self.report.bad_pieces));
        }
        Ok(())
    }

    /// Reads piece `index` (`len` bytes) a buffer at a time, hashing as it comes and writing it
    /// in place when no other peer is writing the same piece; then keeps or refuses it.
    async fn receive_piece<P: Progress>(
        &mut self,
        shared: &Shared<P>,
        conn: &mut Connection<Stream>,
        index: u32,
        len: u64,
        buf: &mut [u8],
    ) -> Result<(), PeerError> {
        let stall = shared.options.stall_timeout;
        let writer = shared.start_writing(index);
        let (start, _) = shared.layout.range(index.into());
        let mut hasher = shared.layout.piece_hasher(index.into());
        let mut got = 0u64;
        while got < len {
            let want = buf.len().min((len - got) as usize);
            let n = tokio::time::timeout(stall, conn.read_raw_bulk(&mut buf[..want]))
                .await
                .map_err(|_| PeerError::Stalled)??;
            if n == 0 {
                return Err(PeerError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed the connection mid-piece",
                )));
            }
            hasher.update(&buf[..n]);
            writer.write(&buf[..n], start + got)?;
            got += n as u64;
        }
        if shared.layout.finish_piece(&hasher) == shared.hashes[index as usize] {
            self.in_flight.pop_front();
            self.settle(shared, 1);
            self.report.pieces += 1;
            self.report.bytes += len;
            PeerStats::add(&shared.options.stats.pieces_received, 1);
            PeerStats::add(&shared.options.stats.bytes_received, len);
            shared.stored(self.id, len, writer)?;
            return Ok(());
        }
        drop(writer);
        self.bad_piece(shared, index, "failed verification")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_network_cannot_steer_where_a_file_lands() {
        let w = |name: &str| Wanted {
            id: [7; 32],
            size: 1,
            name: name.into(),
        };
        assert_eq!(local_name(&w("photos/cat.png")), "cat.png");
        assert_eq!(local_name(&w("../../etc/passwd")), "passwd");
        let hex = troca_proto::hex(&[7; 32]);
        assert_eq!(local_name(&w("..")), hex);
        assert_eq!(local_name(&w("")), hex);
        assert_eq!(local_name(&w(".bashrc")), hex);
        assert_eq!(local_name(&w("bad\nname")), hex);
    }
}
