//! A swarm peer: shares a folder's files with other peers in verified pieces, keeps a
//! tracker told what it shares, and downloads files from every peer that has them at once.
//!
//! - [`library`]: the shared files, their ids (BLAKE3) and piece hashes.
//! - [`server`]: the TCP server other peers download pieces from.
//! - [`download`]: the multi-source downloader.
//! - [`lookup`]: finding a file on the tracker by id, id prefix or name.
//! - [`Peer`]: all of it together, as `troca peer` runs it: registration, refreshes, watching
//!   the folder (changes go to the tracker as UPD), and END when it stops.

// `openat2`, `renameat2`, `sendfile`, `SO_RCVLOWAT`, `O_DIRECT`, `syncfs`: Linux's. Said here, at
// build time, rather than by a confusing error deep in a dependency.
#[cfg(not(target_os = "linux"))]
compile_error!("troca runs on Linux (5.6 or later)");

pub mod download;
pub mod library;
pub mod lookup;
pub mod partial;
pub mod scheduler;
pub mod server;
pub mod spread;
pub mod stats;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use troca_proto::tracker::{codes, FileInfo, Listed, PeerAddr, Secret, UpdateMode};
use troca_tracker::client::{TrackerClient, TrackerError};

pub use download::{Outcome, SwarmError, Wanted};
pub use library::{Changes, Library};
pub use lookup::LookupError;
pub use server::ServerConfig;

/// How often a download asks the tracker for peers that joined since it started.
pub const DISCOVER_EVERY: Duration = Duration::from_secs(2);

/// Finds a file's holders on the tracker (those with the whole file, and those downloading
/// it), leaving this peer out.
#[derive(Debug)]
struct TrackerDiscover {
    tracker: SocketAddr,
    me: SocketAddr,
}

impl download::Discover for TrackerDiscover {
    fn peers(
        &self,
        wanted: &Wanted,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<PeerAddr>> + Send + '_>> {
        let (id, size) = (wanted.id, wanted.size);
        Box::pin(async move {
            let Ok(mut tracker) = TrackerClient::new(self.tracker).await else {
                return Vec::new();
            };
            let Ok(listed) = tracker.list("", Some(id)).await else {
                return Vec::new();
            };
            listed
                .into_iter()
                .filter(|l| l.file.size == size)
                .flat_map(|l| l.peers)
                .filter(|p| p.addr != self.me)
                .collect()
        })
    }
}

/// How `troca peer` runs.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub dir: PathBuf,
    pub only_images: bool,
    pub tracker: SocketAddr,
    /// How often the registration is refreshed (well inside the tracker's lifetime).
    pub refresh: Duration,
    pub server: ServerConfig,
    pub download: download::Options,
    /// The key and certificate this peer serves TLS with (`None`: plaintext), registered with
    /// the tracker so downloaders can check it.
    pub identity: Option<Arc<troca_net::identity::Identity>>,
    /// Shares every file in `dir` (`troca peer`); when false only what it downloads, while and
    /// after it downloads (`troca swarm get`: the folder may be one's Downloads).
    pub share_folder: bool,
}

/// Everything a peer operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Lookup(#[from] LookupError),
    #[error(transparent)]
    Download(#[from] SwarmError),
    #[error(transparent)]
    Identity(#[from] troca_net::identity::IdentityError),
}

/// How long a stopping peer gives the tracker to hear it leave. A tracker that does not hear it
/// forgets the peer once its registration lapses, so waiting longer would only delay the exit.
pub const LEAVE_WITHIN: Duration = Duration::from_secs(1);

/// A running peer.
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    library: Arc<Library>,
    /// Files being downloaded, shared piece by piece meanwhile.
    partials: Arc<partial::Partials>,
    tracker: tokio::sync::Mutex<TrackerClient>,
    secret: Secret,
    addr: SocketAddr,
    /// Whether this peer wants to be registered (false after END until the next REG).
    registered: AtomicBool,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Peer {
    /// Scans the folder, starts serving it on `listener`, registers with the tracker, and starts
    /// the refresh and watch tasks. They run until [`Peer::stop`] or `shutdown`.
    pub async fn start(
        listener: TcpListener,
        config: PeerConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        std::fs::create_dir_all(&config.dir)?;
        let library = Arc::new(Library::new(
            std::fs::canonicalize(&config.dir)?,
            config.only_images,
        ));
        if config.share_folder {
            let scanning = Arc::clone(&library);
            tokio::task::spawn_blocking(move || scanning.scan())
                .await
                .map_err(std::io::Error::other)??;
        }
        let mut secret = Secret::default();
        getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
        let stop = shutdown.child_token();
        let mut server = config.server.clone();
        if let Some(identity) = &config.identity {
            server.tls = Some(identity.server_config(&[troca_net::tls::ALPN])?);
        }
        let peer = Arc::new(Self {
            tracker: tokio::sync::Mutex::new(TrackerClient::new(config.tracker).await?),
            addr: listener.local_addr()?,
            config,
            library,
            partials: Arc::default(),
            secret,
            registered: AtomicBool::new(false),
            tasks: TaskTracker::new(),
            stop,
        });
        peer.tasks.spawn(server::run(
            listener,
            Arc::clone(&peer.library),
            Arc::clone(&peer.partials),
            server,
            peer.stop.clone(),
        ));
        // A tracker that is down now may be up later: serve anyway and keep trying.
        if let Err(e) = peer.register().await {
            tracing::warn!("{e}; trying again every {:?}", peer.config.refresh);
        }
        peer.tasks.spawn(Arc::clone(&peer).refresh_loop());
        if peer.config.share_folder {
            let watching = watch::start(peer.library.dir(), peer.stop.clone())?;
            peer.tasks.spawn(Arc::clone(&peer).watch_loop(watching));
        }
        Ok(peer)
    }

    /// Where this peer serves pieces.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The key this peer's TLS shows (`None` in plaintext).
    pub fn key(&self) -> Option<troca_proto::key::HubKey> {
        self.config.identity.as_ref().map(|i| i.fingerprint)
    }

    pub fn library(&self) -> &Library {
        &self.library
    }

    /// Registers (again) with every shared file (REG).
    pub async fn register(&self) -> Result<(), Error> {
        // From now on the peer wants to be registered, even if this attempt fails.
        self.registered.store(true, Ordering::Relaxed);
        let mut files = self.library.files();
        files.extend(self.partials.infos());
        self.tracker
            .lock()
            .await
            .register(self.addr.port(), self.secret, self.key(), &files)
            .await?;
        tracing::info!(files = files.len(), "registered with the tracker");
        Ok(())
    }

    /// Rescans the folder and tells the tracker what changed (UPD).
    pub async fn update(&self) -> Result<Changes, Error> {
        if !self.config.share_folder {
            return Ok(Changes::default());
        }
        let scanning = Arc::clone(&self.library);
        let changes = tokio::task::spawn_blocking(move || scanning.scan())
            .await
            .map_err(std::io::Error::other)??;
        self.announce(&changes).await?;
        Ok(changes)
    }

    /// Sends a change set to the tracker, registering afresh if it has forgotten this peer.
    async fn announce(&self, changes: &Changes) -> Result<(), Error> {
        if changes.is_empty() || !self.registered.load(Ordering::Relaxed) {
            return Ok(());
        }
        let sent = self.patch(changes).await;
        match sent {
            Err(TrackerError::Refused { code, .. }) if code == codes::NOT_REGISTERED => {
                self.register().await
            }
            other => Ok(other?),
        }
    }

    async fn patch(&self, changes: &Changes) -> Result<(), TrackerError> {
        let mut tracker = self.tracker.lock().await;
        if !changes.removed.is_empty() {
            tracker
                .update(self.secret, UpdateMode::Remove, &changes.removed)
                .await?;
        }
        if !changes.added.is_empty() {
            tracker
                .update(self.secret, UpdateMode::Add, &changes.added)
                .await?;
        }
        tracing::info!(
            added = changes.added.len(),
            removed = changes.removed.len(),
            "told the tracker of changed files"
        );
        Ok(())
    }

    /// Leaves the swarm (END); the folder is still served to peers that ask.
    pub async fn leave(&self) -> Result<(), Error> {
        self.registered.store(false, Ordering::Relaxed);
        self.tracker.lock().await.end(self.secret).await?;
        Ok(())
    }

    /// Files on the swarm whose name contains `filter`.
    pub async fn list(&self, filter: &str) -> Result<Vec<Listed>, Error> {
        Ok(self.tracker.lock().await.list(filter, None).await?)
    }

    /// Downloads `what` (id, id prefix or name) into the shared folder, then shares it too.
    pub async fn fetch<P: troca_net::Progress + Send + Sync + 'static>(
        &self,
        what: &str,
        progress: Arc<P>,
    ) -> Result<Outcome, Error> {
        let found = lookup::find(&mut *self.tracker.lock().await, what).await?;
        if let Some(have) = self.library.get(&found.id) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("already shared here as {}", have.name),
            )));
        }
        // Shared while it downloads: the tracker lists this peer as a holder from the start,
        // and its server serves each piece once verified.
        let mut options = self.config.download.clone();
        options.share = Some(Arc::clone(&self.partials));
        let finder = TrackerDiscover {
            tracker: self.config.tracker,
            me: self.addr,
        };
        options.discover = Some((Arc::new(finder), DISCOVER_EVERY));
        let wanted = found.wanted();
        let partial = Changes {
            added: vec![FileInfo {
                id: wanted.id,
                size: wanted.size,
                name: download::local_name(&wanted),
            }],
            removed: Vec::new(),
        };
        if let Err(e) = self.announce(&partial).await {
            tracing::warn!("cannot tell the tracker of the download: {e}");
        }
        let outcome =
            download::download_found(&found, &[self.addr], self.library.dir(), &options, progress)
                .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                self.partials.remove(&found.id);
                let gone = Changes {
                    added: Vec::new(),
                    removed: partial.added,
                };
                let _ = self.announce(&gone).await;
                return Err(e.into());
            }
        };
        let changes =
            self.library
                .add_verified(&outcome.path, outcome.id, Arc::clone(&outcome.hashes))?;
        self.partials.remove(&outcome.id);
        self.announce(&changes).await?;
        Ok(outcome)
    }

    /// Stops serving and watching, and leaves the swarm if still registered.
    pub async fn stop(&self) -> Result<(), Error> {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if !self.registered.load(Ordering::Relaxed) {
            return Ok(());
        }
        match tokio::time::timeout(LEAVE_WITHIN, self.leave()).await {
            Ok(left) => left,
            Err(_) => Err(TrackerError::NoAnswer(self.config.tracker).into()),
        }
    }

    async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.refresh) => {}
            }
            if !self.registered.load(Ordering::Relaxed) {
                continue;
            }
            // An empty UPD refreshes the registration; a forgotten peer registers anew. The
            // rescan catches changes the watcher cannot see (network filesystems, say).
            let refreshed = match self.update().await {
                Ok(_) => self.patch_empty().await,
                Err(e) => Err(e),
            };
            if let Err(e) = refreshed {
                tracing::warn!("refreshing the registration failed: {e}");
            }
        }
    }

    async fn patch_empty(&self) -> Result<(), Error> {
        let sent = self
            .tracker
            .lock()
            .await
            .update(self.secret, UpdateMode::Add, &[] as &[FileInfo])
            .await;
        match sent {
            Err(TrackerError::Refused { code, .. }) if code == codes::NOT_REGISTERED => {
                self.register().await
            }
            other => Ok(other?),
        }
    }

    async fn watch_loop(self: Arc<Self>, mut watching: watch::Watching) {
        while watching.changed().await {
            if let Err(e) = self.update().await {
                tracing::warn!("telling the tracker about changes failed: {e}");
            }
        }
    }
}
