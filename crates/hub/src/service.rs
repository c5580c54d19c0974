//! The hub's operations, in one place for every face: each takes a request as it came off the
//! wire, checks the name once with [`RemoteName::parse`], and answers with protocol types or a
//! [`HubError`]. Blocking filesystem work runs on tokio's blocking pool.

use crate::access::{AuthFailures, Caller};
use crate::cache::HotCache;
use crate::clients::Clients;
use crate::config::HubConfig;
use crate::error::HubError;
use crate::hashes::HashCache;
use crate::hidden::Hidden;
use crate::locks::{Locks, Presented};
use crate::pg::Db;
use crate::quota::{Amount, QuotaHold, Uploader};
use crate::records::memo::{RememberedTokens, Watch};
use crate::records::postgres::{PgHistory, PgPresence, PgTokens};
use crate::records::sqlite::tokens::admin_token;
use crate::records::sqlite::{admin_token_path, db_path, SqliteHistory, SqliteTokens};
use crate::records::{Grant, History, LinkFetch, Owner, Owners, Page, PageQuery, Role, Tokens};
use crate::store::{
    parse, FindQuery, Kind, ListPage, ListQuery, LocalStore, Matches, MemoryUpload, ObjectStore,
    PartialInfo, PartialUpload, Seen, Store, StoredFile, Totals, Version, MEMORY_UPLOAD_MAX,
};
use crate::transfer::Incoming;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use troca_net::limits::PerAddress;
use troca_proto::msg::{
    CallerRole, ClientEntry, Entry, Put, PutDone, QuotaUse, Standing, StatusInfo,
};
use troca_proto::{Hash, RemoteName};

mod health;
mod shares;
pub use health::Unhealthy;
pub use shares::{share_path, ShareAsk, ShareMade};

/// Bytes as a caller sees them: used, and how many more may be added (`None`: the store
/// cannot tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub used: u64,
    pub available: Option<u64>,
}

/// Files read ahead of their `Get`s at once by all connections together: each read holds a
/// small file (at most `--cache-max-file`) in memory until the hot cache has it.
const READ_AHEAD: usize = 64;

/// A shared folder and everything the hub knows about it.
#[derive(Debug)]
pub struct Hub {
    /// Held for as long as the hub runs: one hub per state folder.
    _state_lock: crate::state_lock::StateLock,
    config: HubConfig,
    store: Box<dyn Store>,
    clients: Arc<Clients>,
    history: Box<dyn History>,
    tokens: Arc<dyn Tokens>,
    owners: Arc<dyn Owners>,
    /// This hub's place among the hubs sharing its database (`None`: a hub on its own).
    presence: Option<PgPresence>,
    auth_failures: AuthFailures,
    cache: HotCache,
    hashes: HashCache,
    /// Connections open per address, over every face.
    addresses: Arc<PerAddress>,
    /// Bandwidth limits, over every face.
    pacer: troca_net::pace::Pacer,
    /// Turns at searching the whole share (`find`).
    searches: troca_net::limits::Turns,
    /// Turns at writing a folder as a zip.
    zips: troca_net::limits::Turns,
    /// What each address without a token has uploaded lately.
    quota: Arc<crate::quota::UploadQuota>,
    /// What uploads running here hold of their tokens' quotas.
    token_quotas: Arc<crate::quota::TokenQuotas>,
    /// Where each token's sweep of its owner records for a refused upload goes on.
    token_sweeps: crate::quota::TokenSweeps,
    /// Where the admin token is, and whether this start created it.
    admin_token: AdminTokenFile,
    /// The hub's TLS identity and the configurations made from it (`None`: plaintext);
    /// replaced whole when a given certificate is reloaded.
    tls: std::sync::RwLock<Option<Arc<crate::identity::Tls>>>,
    /// Memory for batches of small files, in KiB (see `small.rs`), shared by all connections.
    batch_memory: Arc<tokio::sync::Semaphore>,
    /// Files being read ahead of their `Get`s, by all connections together (see `conn.rs`).
    read_ahead: Arc<tokio::sync::Semaphore>,
    /// Small uploads held in memory, waiting to be stored together (see `small.rs`).
    held: crate::held::HeldQueue,
    /// Resumable uploads their owners may take over from a dead connection.
    running: Arc<crate::running::Running>,
    /// Locks on names (WebDAV's), honoured by every face.
    locks: Locks,
    /// The names no client reaches (`--hide`).
    hidden: Arc<Hidden>,
    /// The shared folder's real path, to tell where a file opened through a link lies (only
    /// with `--hide`, on a store with links).
    real_root: Option<PathBuf>,
    /// What `--metrics` shows (`None`: not kept).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    started: Instant,
    /// The last count of the files and bytes shared (`status`), one count at a time.
    counted: tokio::sync::Mutex<Option<Counted<Totals>>>,
    /// The same for each folder a token is held to (as many as such tokens have folders).
    counted_within: std::sync::Mutex<std::collections::HashMap<String, Arc<CountSlot>>>,
    /// The last count of the partial uploads held (`status`, the metrics), likewise.
    partials_counted: tokio::sync::Mutex<Option<Counted<PartialTotals>>>,
    /// The last health check's answer, and when (`health.rs`).
    health: health::LastCheck,
}

/// How many partial uploads are held, and their bytes.
#[derive(Debug, Clone, Copy, Default)]
struct PartialTotals {
    count: u64,
    bytes: u64,
}

/// An upload under its name: what its client is told, and the version stored.
#[derive(Debug)]
pub struct Uploaded {
    pub done: PutDone,
    pub version: Version,
}

/// A count (of the files shared, of the partial uploads held), and what it cost: one that
/// walks much is given again for a while, so that asking often (a page polling `status`)
/// cannot keep the hub walking.
#[derive(Debug, Clone, Copy)]
struct Counted<T> {
    value: T,
    at: Instant,
    took: Duration,
}

/// Where a count of files and bytes is kept between two `status` requests.
type CountSlot = tokio::sync::Mutex<Option<Counted<Totals>>>;

impl<T: Copy + Send + 'static> Counted<T> {
    /// The count in `slot` if it is fresh, else `count` made anew on the blocking pool (one
    /// at a time: who asks meanwhile waits for it).
    async fn get(
        slot: &tokio::sync::Mutex<Option<Counted<T>>>,
        count: impl FnOnce() -> Result<T, HubError> + Send + 'static,
    ) -> Result<T, HubError> {
        let mut counted = slot.lock().await;
        if let Some(c) = counted.as_ref().filter(|c| c.fresh()) {
            return Ok(c.value);
        }
        let began = Instant::now();
        let value = blocking(count).await?;
        *counted = Some(Counted {
            value,
            at: Instant::now(),
            took: began.elapsed(),
        });
        Ok(value)
    }

    /// Counts quicker than this are always made anew.
    const QUICK: Duration = Duration::from_millis(20);

    fn fresh(&self) -> bool {
        self.took >= Self::QUICK
            && self.at.elapsed() < self.took.saturating_mul(20).min(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod counted_tests {
    use super::*;

    fn counted(took_ms: u64, ago_ms: u64) -> Counted<Totals> {
        Counted {
            value: Totals::default(),
            at: Instant::now() - Duration::from_millis(ago_ms),
            took: Duration::from_millis(took_ms),
        }
    }

    #[test]
    fn a_long_count_is_reused_for_twenty_times_as_long_and_a_quick_one_never() {
        assert!(!counted(2, 0).fresh(), "a quick count is made anew");
        assert!(counted(100, 0).fresh());
        assert!(counted(100, 1_900).fresh());
        assert!(!counted(100, 2_100).fresh());
        assert!(counted(10_000, 59_000).fresh(), "at most a minute");
        assert!(!counted(10_000, 61_000).fresh());
    }
}

/// A listing read a page at a time, in byte order of the names.
#[derive(Debug)]
pub struct Listing {
    hub: Arc<Hub>,
    prefix: String,
    after: Option<String>,
    done: bool,
    /// The caller may see none of these names: one empty page.
    nothing: bool,
    /// The caller's token only uploads: the listing is refused.
    refused: bool,
    /// Only what folder `prefix` holds directly ([`ListQuery::children`]).
    children: bool,
    /// The names left out (`--hide`).
    hidden: Arc<Hidden>,
}

impl Listing {
    /// The next page (`None` once the listing is over; a page may be empty only when the
    /// whole listing is).
    pub async fn next_page(&mut self) -> Result<Option<Vec<Entry>>, HubError> {
        loop {
            if let Some(end) = self.end()? {
                return Ok(end);
            }
            let hub = Arc::clone(&self.hub);
            let (prefix, after, children) = (self.prefix.clone(), self.after.take(), self.children);
            let page = blocking(move || {
                let query = ListQuery {
                    children,
                    ..ListQuery::after(&prefix, after.as_deref())
                };
                hub.list_page_blocking(query)
            })
            .await?;
            if let Some(entries) = self.advance(page) {
                return Ok(Some(entries));
            }
        }
    }

    /// [`Listing::next_page`] on a thread that may block (the blocking pool's).
    pub fn next_page_blocking(&mut self) -> Result<Option<Vec<Entry>>, HubError> {
        loop {
            if let Some(end) = self.end()? {
                return Ok(end);
            }
            let after = self.after.take();
            let query = ListQuery {
                children: self.children,
                ..ListQuery::after(&self.prefix, after.as_deref())
            };
            let page = self.hub.list_page_blocking(query)?;
            if let Some(entries) = self.advance(page) {
                return Ok(Some(entries));
            }
        }
    }

    /// What to answer without reading the store: nothing more, or the one empty page of a
    /// listing the caller may not see; a refusal to a caller that only uploads.
    fn end(&mut self) -> Result<Option<Option<Vec<Entry>>>, HubError> {
        if self.refused {
            return Err(crate::access::uploads_only());
        }
        if self.done {
            return Ok(Some(None));
        }
        if self.nothing {
            self.done = true;
            return Ok(Some(Some(Vec::new())));
        }
        Ok(None)
    }

    /// Takes a page in, without the names the hub hides; `None` when none is left of a page
    /// that is not the last (a page is empty only when the whole listing is).
    fn advance(&mut self, mut page: ListPage) -> Option<Vec<Entry>> {
        self.done = page.next.is_none();
        self.after = page.next;
        if self.hidden.any() {
            page.entries.retain(|e| !self.hidden.covers(&e.name));
            if page.entries.is_empty() && !self.done {
                return None;
            }
        }
        Some(page.entries)
    }
}

/// The file that holds the admin token.
#[derive(Debug, Clone)]
pub struct AdminTokenFile {
    pub path: PathBuf,
    /// Whether this start of the hub made it.
    pub created: bool,
}

/// A file on its way to a client: what it is, and where its bytes come from.
#[derive(Debug)]
pub struct Download {
    pub name: RemoteName,
    pub version: Version,
    /// Where the bytes start: the requested offset, or 0 if that was past the end.
    pub offset: u64,
    /// The hash of the whole file, when known (always for [`Source::Memory`]).
    pub hash: Option<Hash>,
    pub source: Source,
}

/// Where a download's bytes come from.
#[derive(Debug)]
pub enum Source {
    /// The whole file, from the hot-file cache (or just read into it).
    Memory(Arc<[u8]>),
    /// The store.
    Stored(StoredFile),
}

impl Download {
    pub fn size(&self) -> u64 {
        self.version.size
    }
}

pub use crate::records::now_ns;

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    troca_net::blocking(f, |e| HubError::Internal(format!("a task failed: {e}"))).await
}

/// Where a hub keeps files and records, as its configuration says.
struct Backends {
    store: Box<dyn Store>,
    /// The group's database, when there is one.
    db: Option<Db>,
    /// The hub's own state folder (its key, its admin token; with SQLite, the records).
    state: PathBuf,
    tokens: Arc<dyn Tokens>,
    owners: Arc<dyn Owners>,
    history: Box<dyn History>,
    /// Whether the admin token was made by this start.
    created: bool,
    hashes: HashCache,
}

impl Backends {
    fn open(config: &HubConfig, hidden: &Arc<Hidden>) -> Result<Self, HubError> {
        let Some(address) = &config.db else {
            if config.store.is_some() {
                return Err(HubError::BadRequest(
                    "--store needs --db: an object store's names are kept in PostgreSQL".into(),
                ));
            }
            return Self::local(config, hidden);
        };
        let db = crate::pg::block(Db::open(address))?;
        let store: Box<dyn Store> = match &config.store {
            Some(s3) => {
                private_dir(&config.state_dir)?;
                Box::new(ObjectStore::open(
                    s3,
                    db.clone(),
                    config.object_grace,
                    config.store_part_memory,
                    config.partial_budget,
                    config.store_timeout,
                )?)
            }
            None => Box::new(
                LocalStore::open(
                    &config.root,
                    &config.state_dir,
                    config.partial_budget,
                    config.keep_free,
                )?
                .hiding(Arc::clone(hidden)),
            ),
        };
        let state = config
            .state_dir
            .canonicalize()
            .map_err(|e| HubError::io(format!("cannot open {}", config.state_dir.display()), e))?;
        let (admin, created) = admin_token(&state)?;
        let tokens = Arc::new(PgTokens::new(db.clone(), admin));
        // Listening since the database was opened, as the names remembered assume too.
        let live = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let remembered = RememberedTokens::new(
            Arc::clone(&tokens) as Arc<dyn Tokens>,
            Watch::Announced(live),
        );
        remembered.hear(db.notices());
        Ok(Self {
            store,
            db: Some(db.clone()),
            state,
            tokens: remembered,
            owners: tokens,
            history: Box::new(PgHistory::new(db, config.history_keep)),
            created,
            hashes: HashCache::new(config.hash_cache),
        })
    }

    /// A folder on this machine and SQLite in its state folder: the embedded default.
    fn local(config: &HubConfig, hidden: &Arc<Hidden>) -> Result<Self, HubError> {
        let store = LocalStore::open(
            &config.root,
            &config.state_dir,
            config.partial_budget,
            config.keep_free,
        )?
        .hiding(Arc::clone(hidden));
        let state = store.state_dir().to_path_buf();
        let (tokens, created) = SqliteTokens::open(&state)?;
        let tokens = Arc::new(tokens);
        let watch = Watch::sqlite(&db_path(&state))?;
        let remembered = RememberedTokens::new(Arc::clone(&tokens) as Arc<dyn Tokens>, watch);
        let history = SqliteHistory::open(&db_path(&state), config.history_keep)?;
        let hashes = HashCache::new(config.hash_cache);
        hashes.attach(&db_path(&state))?;
        Ok(Self {
            store: Box::new(store),
            db: None,
            state,
            tokens: remembered,
            owners: tokens,
            history: Box::new(history),
            created,
            hashes,
        })
    }
}

/// Makes the state folder if missing (and the shared folder first, when it holds it) and takes
/// it, before anything in it is read or cleared.
fn lock_state(config: &HubConfig) -> Result<crate::state_lock::StateLock, HubError> {
    if config.state_dir.starts_with(&config.root) {
        std::fs::create_dir_all(&config.root)
            .map_err(|e| HubError::io(format!("cannot create {}", config.root.display()), e))?;
    }
    private_dir(&config.state_dir)?;
    crate::state_lock::StateLock::acquire(&config.state_dir)
}

/// Creates the hub's state folder, readable by its owner only.
fn private_dir(path: &std::path::Path) -> Result<(), HubError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| HubError::io(format!("cannot create {}", path.display()), e))
}

/// Which uploads that say their source's time may resume (and are kept when cut off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every one (the native protocol).
    WhenTimed,
    /// Those over `MEMORY_UPLOAD_MAX`: smaller ones are gathered in memory and stored in
    /// batches, their time only given to the file (the web face, whose page sends every
    /// file's time).
    WhenTimedAndLarge,
    /// None: the time is only given to the file (WebDAV, which has no way to resume; a
    /// part of the same file held from another face is not taken up by mistake).
    Never,
}

/// What a hub in a group (sharing a database) keeps with the others: the uploads running on
/// every hub, and its own presence (its clients, with a heartbeat). Alone, neither.
fn in_group(
    db: Option<crate::pg::Db>,
    hub_name: &str,
    clients: &Arc<Clients>,
) -> Result<(Arc<crate::running::Running>, Option<PgPresence>), HubError> {
    let Some(db) = db else {
        return Ok((Arc::default(), None));
    };
    let running = crate::running::Running::in_group(db.clone());
    let mine = Arc::downgrade(clients);
    let presence = PgPresence::start(db, hub_name, move || mine.upgrade().map(|c| c.list()))?;
    Ok((running, Some(presence)))
}

impl Hub {
    /// Opens the shared folder and state folder named in `config`.
    pub fn open(config: HubConfig) -> Result<Self, HubError> {
        let hidden = Arc::new(Hidden::new(&config.hide)?);
        let state_lock = lock_state(&config)?;
        let backends = Backends::open(&config, &hidden)?;
        let Backends {
            store,
            db,
            state,
            tokens,
            owners,
            history,
            created,
            hashes,
        } = backends;
        let batch_memory = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.batch_memory >> 10)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let tls = crate::identity::Tls::for_mode(&config.tls, &state)?;
        let locks = Locks::new(config.max_locks, config.max_lock_time)
            .per_holder(config.max_locks_per_token);
        let metrics = config
            .metrics
            .then(|| Arc::new(crate::metrics::Metrics::new()));
        let history: Box<dyn History> = match &metrics {
            Some(m) => Box::new(crate::metrics::Metered {
                inner: history,
                metrics: Arc::clone(m),
            }),
            None => history,
        };
        let clients = Arc::new(if config.metrics {
            Clients::counting()
        } else {
            Clients::default()
        });
        let (running, presence) = in_group(db, &config.hub_name, &clients)?;
        let real_root = (hidden.any() && store.has_links())
            .then(|| config.root.canonicalize().ok())
            .flatten();
        Ok(Self {
            presence,
            _state_lock: state_lock,
            tls: std::sync::RwLock::new(tls),
            admin_token: AdminTokenFile {
                path: admin_token_path(&state),
                created,
            },
            cache: HotCache::new(config.cache_size, config.cache_max_file),
            hashes,
            addresses: PerAddress::new(config.max_connections_per_ip),
            pacer: troca_net::pace::Pacer::new(config.rates),
            searches: troca_net::limits::Turns::new(config.max_searches),
            zips: troca_net::limits::Turns::new(config.max_zips),
            quota: crate::quota::UploadQuota::new(config.upload_quota),
            token_quotas: Arc::default(),
            token_sweeps: Default::default(),
            config,
            store,
            clients,
            history,
            owners,
            tokens,
            auth_failures: AuthFailures::default(),
            batch_memory,
            read_ahead: Arc::new(tokio::sync::Semaphore::new(READ_AHEAD)),
            held: Default::default(),
            running,
            locks,
            real_root,
            hidden,
            metrics,
            started: Instant::now(),
            counted: Default::default(),
            counted_within: Default::default(),
            partials_counted: Default::default(),
            health: Default::default(),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The clients connected now, over every face.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Everyone connected: to this hub, and to the others sharing its database (each with
    /// its hub's name).
    ///
    /// A caller whose token is held to a folder sees what others move only within it.
    pub async fn who(self: &Arc<Self>, caller: &Caller) -> Vec<ClientEntry> {
        let mut all = self.everyone().await;
        for c in all.iter_mut().filter(|c| !caller.concerned(&c.target)) {
            c.target.clear();
            (c.done, c.total) = (0, 0);
        }
        all
    }

    async fn everyone(self: &Arc<Self>) -> Vec<ClientEntry> {
        let mut all = self.clients.list();
        let Some(presence) = &self.presence else {
            return all;
        };
        for c in &mut all {
            c.hub = presence.name().to_owned();
        }
        let hub = Arc::clone(self);
        let others = blocking(move || match &hub.presence {
            Some(p) => p.others(),
            None => Ok(Vec::new()),
        });
        match others.await {
            Ok(others) => all.extend(others),
            Err(e) => tracing::warn!(error = %e, "cannot list the other hubs' clients"),
        }
        all
    }

    /// The request history.
    pub fn history_log(&self) -> &dyn History {
        self.history.as_ref()
    }

    /// Connections open per address, over every face.
    pub fn addresses(&self) -> &Arc<PerAddress> {
        &self.addresses
    }

    /// The bandwidth limits of a new connection from `ip`, over any face (`None`: none).
    pub fn pace(&self, ip: std::net::IpAddr) -> Option<troca_net::pace::Pace> {
        self.pacer.pace(ip)
    }

    /// The file that holds the admin token.
    pub fn admin_token_file(&self) -> &AdminTokenFile {
        &self.admin_token
    }

    /// Where the shared files are, for the operator's log.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// What the shared folder holds that cannot be served, from a walk of at most `budget`
    /// entries (blocking: run it off the async workers).
    pub fn unserved(&self, budget: u64) -> Option<crate::store::share::Unserved> {
        self.store.unserved(budget)
    }

    /// Memory for batches of small files, in KiB.
    pub(crate) fn batch_memory(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.batch_memory
    }

    /// A turn to read a file ahead of its `Get`, if one of the hub's is free.
    pub(crate) fn read_ahead(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.read_ahead).try_acquire_owned().ok()
    }

    /// The names starting with `prefix`, with their hashes where known, to be read a page at a
    /// time ([`Listing::next_page`]): whatever the share's size, a listing holds one page.
    ///
    /// A caller whose token is held to a folder lists only what is in it.
    pub fn list(self: &Arc<Self>, caller: &Caller, prefix: &str) -> Listing {
        self.list_after(caller, prefix, None)
    }

    /// [`Hub::list`] of the names after `after` only.
    pub fn list_after(
        self: &Arc<Self>,
        caller: &Caller,
        prefix: &str,
        after: Option<String>,
    ) -> Listing {
        let covered = caller.listing_prefix(prefix);
        Listing {
            hub: Arc::clone(self),
            nothing: covered.is_none() || self.leads_to_hidden(prefix),
            refused: caller.uploads_only(),
            prefix: covered.unwrap_or_default(),
            after,
            done: false,
            children: false,
            hidden: Arc::clone(&caller.hidden),
        }
    }

    /// What folder `folder` (`""` or `NAME/`) holds directly, a page at a time: its files and
    /// its folders (`NAME/`), after `after`, without reading what is beneath them. Nothing for
    /// a caller who may not see the whole folder (one on the way to a token's folder).
    pub fn list_children(
        self: &Arc<Self>,
        caller: &Caller,
        folder: &str,
        after: Option<String>,
    ) -> Listing {
        Listing {
            hub: Arc::clone(self),
            nothing: !caller.sees(folder) || self.leads_to_hidden(folder),
            refused: caller.uploads_only(),
            prefix: folder.to_owned(),
            after,
            done: false,
            children: true,
            hidden: Arc::clone(&caller.hidden),
        }
    }

    /// Whether the folder a listing of `prefix` reads is, through a link on its way, one the
    /// hub hides (a listing from above never walks into a link, so only the folder itself
    /// is looked at). A few lookups on the caller's thread, and only with `--hide`.
    fn leads_to_hidden(&self, prefix: &str) -> bool {
        let (Some(root), Some((folder, _))) = (&self.real_root, prefix.rsplit_once('/')) else {
            return false;
        };
        let Ok(real) = self.config.root.join(folder).canonicalize() else {
            return false;
        };
        self.hidden.covering_beneath(root, &real).is_some()
    }

    /// One page of a listing, with the hashes known. Blocking.
    pub fn list_page_blocking(&self, query: ListQuery<'_>) -> Result<ListPage, HubError> {
        let mut page = self.store.list(query)?;
        page.entries = self.with_hashes(page.entries);
        Ok(page)
    }

    /// Fills in the hashes known for these versions.
    fn with_hashes(&self, mut entries: Vec<Entry>) -> Vec<Entry> {
        // Files (not folders) whose store did not give their hash.
        let unknown = |e: &Entry| !e.name.ends_with('/') && e.blake3.is_none();
        let wanted: Vec<(&str, Version)> = entries
            .iter()
            .filter(|e| unknown(e))
            .map(|e| {
                let version = Version {
                    size: e.size,
                    modified_ns: e.modified_ns,
                };
                (e.name.as_str(), version)
            })
            .collect();
        let found = self.hashes.get_page(&wanted);
        for (e, hash) in entries.iter_mut().filter(|e| unknown(e)).zip(found) {
            e.blake3 = hash;
        }
        entries
    }

    /// Opens `name` for a download from `offset`: small files from the hot-file cache (read
    /// into it on a miss, which also learns their hash), others from the store. Reads on the
    /// caller's thread: a lookup, and for a small file a page-cache read, cost less than a hop
    /// to the blocking pool.
    pub fn download(&self, caller: &Caller, name: &str, offset: u64) -> Result<Download, HubError> {
        if caller.on_the_way(name) {
            // A folder on the way to the caller's own, which it may open (it holds that one).
            return Err(HubError::NotAFile(name.to_owned()));
        }
        caller.must_reach(name)?;
        let name = parse(name)?;
        let file = self.store.open(&name)?;
        let version = file.version;
        let offset = if offset > version.size { 0 } else { offset };
        let small = self.cache.wants(version.size);
        let hit = small
            .then(|| self.cache.get(name.as_str(), version))
            .flatten();
        if hit.is_none() {
            // A hit was checked when it was read into the cache: this very version.
            self.check_reached(&name, &file)?;
        }
        let (source, hash) = if let Some((data, hash)) = hit {
            (Source::Memory(data), Some(hash))
        } else if small {
            let (data, hash) = self
                .small_file(&name, &file)
                .map_err(|e| HubError::io(format!("cannot read {name}"), e))?;
            (Source::Memory(data), Some(hash))
        } else {
            let known = self.known_hash(&name, &file);
            (Source::Stored(file), known)
        };
        Ok(Download {
            name,
            version,
            offset,
            hash,
            source,
        })
    }

    /// Opens `name` for a client: refused if a link on its way led into a name the hub hides
    /// (what a link leads to is hidden as its own name would be).
    pub(crate) fn open_reached(&self, name: &RemoteName) -> Result<StoredFile, HubError> {
        let file = self.store.open(name)?;
        self.check_reached(name, &file)?;
        Ok(file)
    }

    /// The hash of `file` (opened from `name`) if it is known: the store's, or the one
    /// remembered for this very version.
    pub(crate) fn known_hash(&self, name: &RemoteName, file: &StoredFile) -> Option<Hash> {
        file.hash
            .or_else(|| self.hashes.get(name.as_str(), file.version))
    }

    /// [`Hub::open_reached`]'s check, of a file opened already.
    fn check_reached(&self, name: &RemoteName, file: &StoredFile) -> Result<(), HubError> {
        if let (Some(root), crate::store::Body::File(f)) = (&self.real_root, &file.body) {
            if let Some(pattern) = self.hidden.covering_real(root, f) {
                return Err(crate::hidden::refusal(name.as_str(), pattern));
            }
        }
        Ok(())
    }

    /// The whole contents and hash of a small file the hot-file cache does not hold, read and
    /// kept there (its hash remembered too).
    fn small_file(
        &self,
        name: &RemoteName,
        file: &StoredFile,
    ) -> std::io::Result<(Arc<[u8]>, Hash)> {
        let known = self.known_hash(name, file);
        let mut data = vec![0u8; file.version.size as usize];
        file.read_exact_at(&mut data, 0)?;
        let hash = known.unwrap_or_else(|| *blake3::hash(&data).as_bytes());
        if known.is_none() && file.unchanged() {
            self.hashes.insert(name.as_str(), file.version, hash);
        }
        let data: Arc<[u8]> = data.into();
        self.cache
            .insert(name.as_str(), file.version, hash, Arc::clone(&data));
        Ok((data, hash))
    }

    /// Counts a download the caller begins (a file's bytes, or a folder's zip, `name` with its
    /// `/`) against its share link, if the link allows only so many: refused once they are
    /// spent. One that starts past the first byte (`resumed`) and continues a download the link
    /// counted for the same name and address is not counted again. Nothing to do, and no hop,
    /// for any other caller.
    pub async fn count_download(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        resumed: bool,
    ) -> Result<(), HubError> {
        let Some(id) = caller
            .grant
            .as_ref()
            .filter(|g| g.max_downloads > 0)
            .and_then(|g| g.token_id)
        else {
            return Ok(());
        };
        let hub = Arc::clone(self);
        let name = name.to_owned();
        let address = caller.from.map(|a| a.to_string()).unwrap_or_default();
        let counted = blocking(move || {
            let fetch = LinkFetch {
                name: &name,
                address: &address,
                resumed: resumed && !address.is_empty(),
            };
            hub.tokens.count_download(id, &fetch)
        });
        match counted.await? {
            true => Ok(()),
            false => Err(HubError::Unauthorized(
                "this share link's downloads are used up".into(),
            )),
        }
    }

    /// Records a hash computed while sending the whole of `download`, if the file is still the
    /// version that was hashed.
    pub fn remember_hash(&self, download: &Download, hash: Hash) {
        if let Source::Stored(file) = &download.source {
            if file.unchanged() {
                self.hashes
                    .insert(download.name.as_str(), download.version, hash);
            }
        }
    }

    /// Checks a token (from a native `Hello` or an HTTP `Authorization` header) against the
    /// policy, slowing down repeated failures from one address.
    pub async fn authenticate(
        self: &Arc<Self>,
        token: Option<String>,
        from: IpAddr,
    ) -> Result<Caller, HubError> {
        self.authenticate_for(token, from, None).await
    }

    /// [`Hub::authenticate`] for a download of `name` that starts past its first byte: a share
    /// link whose downloads are spent is still let through for it if it continues a download
    /// the link counted for that name and address (a cut download resumed).
    pub async fn authenticate_resume(
        self: &Arc<Self>,
        token: Option<String>,
        from: IpAddr,
        name: &str,
    ) -> Result<Caller, HubError> {
        self.authenticate_for(token, from, Some(name)).await
    }

    async fn authenticate_for(
        self: &Arc<Self>,
        token: Option<String>,
        from: IpAddr,
        resume: Option<&str>,
    ) -> Result<Caller, HubError> {
        // The admin token file's needs no records (nor a hand-off to read them).
        let admin = token.as_deref().and_then(|t| self.tokens.admin(t));
        let grant = match &token {
            None => None,
            Some(_) if admin.is_some() => admin,
            Some(t) => match self.tokens.remembered(t) {
                Some(grant) => Some(grant),
                None => Some(self.check_token(t, from, resume).await?),
            },
        };
        if grant.is_none() && self.config.require_token {
            return Err(HubError::Unauthorized("this hub requires a token".into()));
        }
        Ok(Caller {
            token,
            grant,
            from: Some(from),
            owner_key: None,
            lock_tokens: Vec::new(),
            hidden: Arc::clone(&self.hidden),
        })
    }

    /// The grant of a token from the records (or of a spent link, for `resume`), or a refusal
    /// after the pause repeated failures from `from` earn.
    async fn check_token(
        self: &Arc<Self>,
        token: &str,
        from: IpAddr,
        resume: Option<&str>,
    ) -> Result<Grant, HubError> {
        // One guess at a time from an address that has guessed wrong: parallel connections
        // gain it nothing.
        let _turn = match self.auth_failures.guessing(from) {
            true => Some(self.auth_failures.turn(from).await),
            false => None,
        };
        let hub = Arc::clone(self);
        let token = token.to_owned();
        let resume = resume.map(str::to_owned);
        let checked = blocking(move || match hub.tokens.check(&token)? {
            Some(grant) => Ok(Some(grant)),
            None => match &resume {
                Some(name) => {
                    let address = from.to_string();
                    let fetch = LinkFetch {
                        name,
                        address: &address,
                        resumed: true,
                    };
                    hub.tokens.check_resume(&token, &fetch)
                }
                None => Ok(None),
            },
        });
        match checked.await? {
            Some(grant) => Ok(grant),
            None => {
                // For the operator, and for tools that ban addresses from logs (fail2ban):
                // one line per refusal, the address in a fixed place. Never the token.
                tracing::warn!("refused a token that is not valid, from {from}");
                let wait = self.auth_failures.failed(from);
                tokio::time::sleep(wait).await;
                Err(HubError::Unauthorized(
                    "the token is not valid (wrong, revoked or expired, or a link used up)".into(),
                ))
            }
        }
    }

    /// The token records (for the faces that manage tokens).
    pub fn tokens(&self) -> &dyn Tokens {
        self.tokens.as_ref()
    }

    /// May `caller` replace or delete `name` (`what` says which, for the refusal)? Blocking: reads
    /// the file's owner from the database.
    pub(crate) fn check_change(
        &self,
        caller: &Caller,
        name: &RemoteName,
        what: &str,
    ) -> Result<(), HubError> {
        let owner = self.owner_now(name)?;
        self.may_change_owned(caller, name, owner, what)
    }

    /// [`Hub::check_change`] of a file whose owner was read already.
    fn may_change_owned(
        &self,
        caller: &Caller,
        name: &RemoteName,
        owner: Owner,
        what: &str,
    ) -> Result<(), HubError> {
        caller.may_change(
            self.tokens(),
            self.config.read_only,
            name.as_str(),
            owner,
            what,
        )
    }

    /// The owner of the file at `name` as it is now: on a store other programs may change, only
    /// the uploader of this very version (a file put there by other means belongs to nobody).
    /// Blocking.
    pub(crate) fn owner_now(&self, name: &RemoteName) -> Result<Owner, HubError> {
        let now = self.store.seen(name)?.version;
        self.owners.owner(name.as_str(), now)
    }

    /// The hub's locks (WebDAV's), for the face that takes them.
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    /// May `caller` change `name` (and, when `deep`, everything beneath it) as far as the locks
    /// go? Only by presenting the token of each lock in the way.
    pub fn check_lock(&self, caller: &Caller, name: &str, deep: bool) -> Result<(), HubError> {
        let principal = caller.principal();
        let presented = Presented {
            tokens: &caller.lock_tokens,
            principal: Some(&principal),
        };
        self.locks
            .check(name, deep, presented, Instant::now())
            .map_err(|_| HubError::Locked(name.to_owned()))
    }

    /// May a file go at `name`, which holds what was `seen` there now? Not over a folder; over
    /// a file only when `replace` and `caller` may replace it (its owner read for the version
    /// seen); not on a name locked by someone else.
    pub(crate) fn check_place(
        &self,
        caller: &Caller,
        name: &RemoteName,
        seen: Seen,
        replace: bool,
    ) -> Result<(), HubError> {
        caller.must_place(name.as_str())?;
        self.check_lock(caller, name.as_str(), false)?;
        match seen.kind {
            None => Ok(()),
            Some(Kind::Folder) => Err(HubError::FolderInTheWay(format!("{name}/"))),
            Some(_) if !replace => Err(HubError::AlreadyExists(name.to_string())),
            Some(_) => {
                let owner = self.owners.owner(name.as_str(), seen.version)?;
                self.may_change_owned(caller, name, owner, "replacing")
            }
        }
    }

    /// May `caller` upload a file to `name` (replacing what is there if `replace`)? As far as
    /// can be told before its bytes: the rights, the place, a lock. Blocking.
    pub(crate) fn may_upload(
        &self,
        caller: &Caller,
        name: &RemoteName,
        replace: bool,
    ) -> Result<(), HubError> {
        caller.may_create(self.tokens(), self.config.read_only, name.as_str())?;
        let seen = self.store.seen(name)?;
        self.check_place(caller, name, seen, replace)
    }

    /// Starts (or resumes) an upload: checks the name and the policy, claims the name, opens
    /// the partial data and starts its writer. The face then feeds the bytes to the
    /// [`Incoming`] and finishes it with the sender's hash.
    ///
    /// If the same owner's resumable upload of the name still runs here (its connection
    /// likely died without a word), that one is stopped and this one takes it up.
    pub async fn begin_upload(
        self: &Arc<Self>,
        put: &Put,
        caller: &Caller,
    ) -> Result<Incoming, HubError> {
        self.begin_upload_with(put, caller, Resume::WhenTimed).await
    }

    /// [`Hub::begin_upload`], saying which uploads may resume.
    pub async fn begin_upload_with(
        self: &Arc<Self>,
        put: &Put,
        caller: &Caller,
        resume: Resume,
    ) -> Result<Incoming, HubError> {
        let resumable = put.source_mtime_ns != 0
            && match resume {
                Resume::WhenTimed => true,
                Resume::WhenTimedAndLarge => put.size > MEMORY_UPLOAD_MAX,
                Resume::Never => false,
            };
        let mut incoming = match self.begin_upload_once(put, caller, resumable).await {
            Err(HubError::UploadInProgress(name)) => {
                self.take_over(put, caller, name, resumable).await?
            }
            other => other?,
        };
        if let Some(owner) = caller.owner_key.filter(|_| resumable) {
            incoming.run_as(self.running.register(&incoming.name(), owner));
        }
        Ok(incoming)
    }

    /// Stops the same owner's upload of `name` running on another connection, waits until its
    /// last bytes are written, and begins again from them; else `name` is busy, as before.
    async fn take_over(
        self: &Arc<Self>,
        put: &Put,
        caller: &Caller,
        name: String,
        resumable: bool,
    ) -> Result<Incoming, HubError> {
        let Some(owner) = caller.owner_key.filter(|_| resumable) else {
            return Err(HubError::UploadInProgress(name));
        };
        // From here the upload in the way is the owner's own.
        let still = || HubError::StillStoring(name.clone());
        match self.running.stop(&name, &owner) {
            Some(gone) => {
                let stall = self.config.stall_timeout;
                if tokio::time::timeout(stall, gone.wait()).await.is_err() {
                    return Err(still());
                }
                tracing::info!(name = %name, "an upload taken over by its owner's new connection");
            }
            // Perhaps another hub of the group holds it: asked, it lets go if it is the owner's.
            None if self.running.ask_others(&name, &owner).await => {}
            None => return Err(HubError::UploadInProgress(name)),
        }
        // An object store's claim is let go by a task just after (on another hub, once it has
        // heard): short tries, then the client's own.
        let mut pause = Duration::from_millis(5);
        loop {
            match self.begin_upload_once(put, caller, resumable).await {
                Err(HubError::UploadInProgress(_)) if pause < Duration::from_secs(2) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(HubError::UploadInProgress(_)) => return Err(still()),
                other => return other,
            }
        }
    }

    async fn begin_upload_once(
        self: &Arc<Self>,
        put: &Put,
        caller: &Caller,
        resumable: bool,
    ) -> Result<Incoming, HubError> {
        let remote = parse(&put.name)?;
        let hub = Arc::clone(self);
        let caller = caller.clone();
        let (size, mtime, force) = (put.size, put.source_mtime_ns, put.force);
        let memory = self.memory_for_upload(put, resumable);
        let (partial, quota) = blocking(move || {
            hub.may_upload(&caller, &remote, force)?;
            let whole = Amount {
                bytes: size,
                files: 1,
            };
            let address = hub.count_upload(&caller, whole)?;
            let token = hub
                .count_token_upload(&caller, &[(Some(&remote), size, force)])
                .into_hold()?;
            let quota = QuotaHold::join(address, token);
            let Some(memory) = memory else {
                // The source's time is what a resumed upload is matched by: given to the store
                // only when this one may resume, else only to the file it makes.
                let key = if resumable { mtime } else { 0 };
                let mut partial = hub.store.begin_upload(remote, size, key, caller.from)?;
                if mtime != 0 {
                    partial.give_time(mtime);
                }
                return Ok((partial, quota));
            };
            let claim = hub.store.claim_batch(&[&remote], size).pop();
            let claim = claim.unwrap_or_else(|| Err(HubError::Internal("no claim".into())))?;
            let partial = PartialUpload::Memory(MemoryUpload {
                name: remote,
                size,
                data: Vec::new(),
                claim,
                memory,
                modified_ns: mtime,
            });
            Ok((partial, quota))
        })
        .await?;
        let mut incoming = Incoming::start(partial).await?;
        incoming.count_against(quota);
        Ok(incoming)
    }

    /// Holds what uploads of `files` (each a name, a size, and whether it replaces what is
    /// there) take of the quota of the caller's token, as many as fit, in order. A file that
    /// replaces one of the token's own takes only what it adds; one without a name (refused
    /// when stored) takes nothing. Nothing is held for a caller
    /// whose token has no quota, or without a token (see [`Hub::count_upload`]).
    pub(crate) fn count_token_upload(
        &self,
        caller: &Caller,
        files: &[(Option<&RemoteName>, u64, bool)],
    ) -> crate::quota::Admitted {
        let all = crate::quota::Admitted {
            hold: None,
            count: files.len(),
            refusal: None,
        };
        let Some((id, quota)) = caller.grant.as_ref().and_then(|g| g.quota()) else {
            return all;
        };
        let counted = || -> Result<(Amount, Vec<Amount>), HubError> {
            let stored = self.owners.usage(id)?;
            let amounts = files
                .iter()
                .map(|&(name, size, replace)| match name {
                    Some(name) => self.added_by(id, name, size, replace),
                    None => Ok(Amount::default()),
                })
                .collect::<Result<_, _>>()?;
            Ok((stored, amounts))
        };
        let admit = || match counted() {
            Ok((stored, amounts)) => self.token_quotas.admit(id, quota, stored, &amounts),
            Err(e) => crate::quota::Admitted {
                hold: None,
                count: 0,
                refusal: Some(e),
            },
        };
        let admitted = admit();
        // Files deleted by hand may still count: forgotten, the quota may have room after all.
        let over = matches!(admitted.refusal, Some(HubError::TokenQuota(_)));
        if over && self.resweep_token(id) {
            drop(admitted);
            return admit();
        }
        admitted
    }

    /// What storing `size` bytes at `name` adds to token `id`'s files: less what it replaces
    /// of the token's own.
    fn added_by(
        &self,
        id: i64,
        name: &RemoteName,
        size: u64,
        replace: bool,
    ) -> Result<Amount, HubError> {
        let new = Amount {
            bytes: size,
            files: 1,
        };
        if !replace || self.owner_now(name)?.token_id != Some(id) {
            return Ok(new);
        }
        match self.store.open(name) {
            Ok(old) => Ok(Amount {
                bytes: size.saturating_sub(old.version.size),
                files: 0,
            }),
            Err(HubError::NotFound(_) | HubError::NotAFile(_)) => Ok(new),
            Err(e) => Err(e),
        }
    }

    /// Holds `amount` of the allowance of the caller's address: callers with a token are not
    /// counted, unless it is an upload link's (anyone holding the link uses it).
    pub(crate) fn count_upload(
        &self,
        caller: &Caller,
        amount: Amount,
    ) -> Result<Option<QuotaHold>, HubError> {
        match self.uploader(caller) {
            Some(who) => self.quota.reserve(who, caller.from, amount),
            None => Ok(None),
        }
    }

    /// Who the caller uploads as, if its address is counted (see [`Hub::count_upload`]).
    pub(crate) fn uploader(&self, caller: &Caller) -> Option<Uploader> {
        match caller.grant {
            None => Some(Uploader::NoToken),
            Some(_) if caller.uploads_only() => Some(Uploader::Link),
            Some(_) => None,
        }
    }

    /// Where an upload of this very file (name, size, source time) would resume: the bytes an
    /// interrupted one left, for a caller who may upload.
    pub async fn resumable(
        self: &Arc<Self>,
        name: &str,
        size: u64,
        source_mtime_ns: i64,
        caller: &Caller,
    ) -> Result<u64, HubError> {
        let remote = parse(name)?;
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            caller.may_create(hub.tokens(), hub.config.read_only, remote.as_str())?;
            hub.store.resumable(&remote, size, source_mtime_ns)
        })
        .await
    }

    /// Memory to gather `put` in, when it is small, may not resume, and `--batch-memory` has
    /// room; else it streams to the store.
    fn memory_for_upload(
        &self,
        put: &Put,
        resumable: bool,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if resumable || put.size > MEMORY_UPLOAD_MAX {
            return None;
        }
        let kib = u32::try_from(put.size.div_ceil(1024).max(1)).ok()?;
        Arc::clone(&self.batch_memory)
            .try_acquire_many_owned(kib)
            .ok()
    }

    /// Finishes an upload whose bytes have all arrived: waits until they are stored, checks
    /// the sender's hash, then has the store make the data durable and put it under its name.
    /// On a hash mismatch the partial data is deleted; if the name was taken meanwhile, it is
    /// kept so a retry with `force` resumes at the end. Without the sender's hash (a plain
    /// HTTP PUT) there is nothing to check against: the face records the upload as unverified.
    pub async fn finish_upload(
        self: &Arc<Self>,
        mut incoming: Incoming,
        theirs: Option<Hash>,
        force: bool,
        caller: &Caller,
    ) -> Result<Uploaded, HubError> {
        let quota = incoming.take_quota();
        let (upload, ours) = incoming.complete().await?;
        let (name, size) = (upload.name().to_string(), upload.size());
        let version = match upload {
            // Nothing was written for it: a mismatch just drops the bytes. The checks of its
            // place (lock included) run when its batch is stored.
            PartialUpload::Memory(_) if theirs.is_some_and(|theirs| ours != theirs) => {
                return Err(HubError::Integrity(name));
            }
            PartialUpload::Memory(held) => self.store_held(held, ours, force, caller).await?,
            upload => self.commit(upload, ours, theirs, force, caller).await?,
        };
        if let Some(quota) = quota {
            quota.keep();
        }
        let done = PutDone {
            name,
            size,
            blake3: ours,
        };
        Ok(Uploaded { done, version })
    }

    /// [`Hub::finish_upload`] of an upload the store began: checked, committed, recorded.
    async fn commit(
        self: &Arc<Self>,
        upload: PartialUpload,
        ours: Hash,
        theirs: Option<Hash>,
        force: bool,
        caller: &Caller,
    ) -> Result<Version, HubError> {
        let hub = Arc::clone(self);
        let uploader = caller.as_owner();
        let caller = caller.clone();
        blocking(move || {
            if theirs.is_some_and(|theirs| ours != theirs) {
                let name = upload.name().to_string();
                upload.discard();
                return Err(HubError::Integrity(name));
            }
            // Locked while the bytes came: kept, so a retry once it is unlocked resumes.
            hub.check_lock(&caller, upload.name().as_str(), false)?;
            let name = upload.name().clone();
            let version = hub.store.commit(upload, force)?;
            hub.cache.invalidate(name.as_str());
            // The uploading token owns the file now (an anonymous upload owns nothing).
            hub.owners.set_owner(name.as_str(), uploader, version)?;
            hub.hashes.insert(name.as_str(), version, ours);
            Ok(version)
        })
        .await
    }

    /// The hub's clock, time zone and figures.
    pub async fn status(self: &Arc<Self>, caller: &Caller) -> Result<StatusInfo, HubError> {
        let you = self.standing(caller).await?;
        let totals = self.totals_for(caller).await?;
        let (files, bytes) = (totals.files, totals.bytes);
        let partials = self.partial_totals_for(caller).await?;
        let hub = Arc::clone(self);
        let hubs = blocking(move || match &hub.presence {
            Some(p) => p.hubs(),
            None => Ok(Vec::new()),
        })
        .await?;
        let now = jiff::Zoned::now();
        let cache = self.cache.stats();
        Ok(StatusInfo {
            time_ns: now_ns(),
            time_zone: now.time_zone().iana_name().unwrap_or("UTC").to_owned(),
            utc_offset_s: now.offset().seconds(),
            uptime_s: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            files,
            bytes,
            clients: self.clients.count() as u64,
            transfers: self.clients.transfers() as u64,
            cache_entries: cache.entries,
            cache_bytes: cache.bytes,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_evictions: cache.evictions,
            partials: partials.count,
            partial_bytes: partials.bytes,
            hubs,
            you: Box::new(you),
        })
    }

    /// What `caller` may do here: its role, the folder its token reaches, whether it may
    /// upload, how much more (see [`Hub::room_for`]), and its token's quota.
    pub async fn standing(self: &Arc<Self>, caller: &Caller) -> Result<Standing, HubError> {
        let role = caller.grant.as_ref().map(|g| g.role);
        let token = self.token_use(caller).await?;
        let room = self.room_for(caller, token.as_ref()).await?;
        Ok(Standing {
            role: match role {
                None => CallerRole::Anonymous,
                Some(Role::Read) => CallerRole::Read,
                Some(Role::Write) => CallerRole::Write,
                Some(Role::Admin) => CallerRole::Admin,
                Some(Role::Upload) => CallerRole::Upload,
            },
            may_upload: crate::access::role_uploads(self.config.read_only, role),
            folder: caller.folder().map(str::to_owned),
            room,
            quota: token.map(|t| QuotaUse {
                bytes: t.quota.bytes,
                files: t.quota.files,
                used_bytes: t.used.bytes,
                used_files: t.used.files,
            }),
        })
    }

    /// The files and bytes shared. Counting walks the whole share, which a page polling the
    /// status would otherwise make the hub do again and again: a count that took long is
    /// reused for twenty times as long (at most a minute), so counting takes at most a
    /// twentieth of a thread whoever asks; a quick one (a small share) is always made anew.
    /// Those asking together share one count.
    async fn totals(self: &Arc<Self>) -> Result<Totals, HubError> {
        let hub = Arc::clone(self);
        Counted::get(&self.counted, move || hub.store.totals(&hub.hidden, "")).await
    }

    /// The files and bytes `caller` sees: the share's, or those of the folder its token is
    /// held to, counted as [`Hub::totals`] are.
    async fn totals_for(self: &Arc<Self>, caller: &Caller) -> Result<Totals, HubError> {
        if caller.uploads_only() {
            // An upload link's holder sees nothing of what the folder holds.
            return Ok(Totals::default());
        }
        let Some(folder) = caller.folder() else {
            return self.totals().await;
        };
        let within = format!("{folder}/");
        let slot = {
            let mut slots = self
                .counted_within
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            Arc::clone(slots.entry(within.clone()).or_default())
        };
        let hub = Arc::clone(self);
        Counted::get(&slot, move || hub.store.totals(&hub.hidden, &within)).await
    }

    /// How many partial uploads are held, and their bytes: a walk of them all (at most
    /// `--partial-files` and those begun since the last sweep), counted as [`Hub::totals`].
    async fn partial_totals(self: &Arc<Self>) -> Result<PartialTotals, HubError> {
        let hub = Arc::clone(self);
        Counted::get(&self.partials_counted, move || {
            let all = hub.store.partials();
            Ok(PartialTotals {
                count: all.len() as u64,
                bytes: all.iter().map(|p| p.held).sum(),
            })
        })
        .await
    }

    /// One page of the history (see [`History::query`]), on the blocking pool.
    ///
    /// A caller whose token is held to a folder sees only the requests about what is in it.
    pub async fn history(
        self: &Arc<Self>,
        query: PageQuery,
        caller: &Caller,
    ) -> Result<Page, HubError> {
        let hub = Arc::clone(self);
        let mut page = blocking(move || hub.history.query(&query)).await?;
        page.entries.retain(|e| caller.concerned(&e.target));
        Ok(page)
    }

    /// The partial uploads `caller` sees: all of them, or those in the folder its token is
    /// held to (at most `--partial-files`, walked each time).
    async fn partial_totals_for(
        self: &Arc<Self>,
        caller: &Caller,
    ) -> Result<PartialTotals, HubError> {
        if caller.uploads_only() {
            return Ok(PartialTotals::default());
        }
        let Some(folder) = caller.folder() else {
            return self.partial_totals().await;
        };
        let (hub, within) = (Arc::clone(self), format!("{folder}/"));
        blocking(move || {
            let all = hub.store.partials();
            let inside = all.iter().filter(|p| p.name.starts_with(&within));
            Ok(inside.fold(PartialTotals::default(), |t, p| PartialTotals {
                count: t.count + 1,
                bytes: t.bytes + p.held,
            }))
        })
        .await
    }

    /// The partial uploads held (admins only), oldest first.
    pub async fn partial_uploads(
        self: &Arc<Self>,
        caller: &Caller,
    ) -> Result<Vec<PartialInfo>, HubError> {
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            caller.must_be_admin(hub.tokens(), "listing partial uploads")?;
            Ok(hub.store.partials())
        })
        .await
    }

    /// Removes the partial upload `key` (admins only; not one being sent).
    pub async fn remove_partial(
        self: &Arc<Self>,
        key: &str,
        caller: &Caller,
    ) -> Result<(), HubError> {
        let (hub, caller, key) = (Arc::clone(self), caller.clone(), key.to_owned());
        blocking(move || {
            caller.must_be_admin(hub.tokens(), "removing a partial upload")?;
            match hub.store.remove_partial(&key)? {
                true => Ok(()),
                false => Err(HubError::NotFound(format!("partial upload {key}"))),
            }
        })
        .await
    }

    /// Deletes partial uploads untouched for the configured time. Blocking.
    pub(crate) fn clean_partials(&self) -> usize {
        self.store.clean_partials(self.config.partial_ttl)
    }

    /// Deletes `name`: a file, or a folder (an empty one, or with everything in it if
    /// `recursive`). Returns how many files went.
    pub async fn remove(
        self: &Arc<Self>,
        name: &str,
        recursive: bool,
        caller: &Caller,
    ) -> Result<u64, HubError> {
        let remote = parse_folder(name)?;
        let as_folder = name_is_folder(&remote, name);
        let hub = Arc::clone(self);
        let caller = caller.clone();
        blocking(move || {
            // Before any lookup, so that a refusal says nothing of what is there.
            caller.must_reach_inside(remote.as_str())?;
            hub.check_lock(&caller, remote.as_str(), true)?;
            match hub.store.kind(&remote)? {
                Some(Kind::Folder) => return hub.remove_folder(&caller, &remote, recursive),
                // A link listed as a folder: its name without the slash is the link itself,
                // and what it leads to is never deleted through it.
                Some(Kind::Other) if as_folder && hub.store.has_links() => {
                    return Err(HubError::BadRequest(format!(
                        "\"{remote}\" is a link to a folder; delete the link with its name \
                         without the slash, which leaves what it leads to"
                    )))
                }
                Some(_) if as_folder => return Err(HubError::NotFound(format!("{remote}/"))),
                Some(_) => {}
                None => return Err(HubError::NotFound(remote.to_string())),
            }
            hub.check_change(&caller, &remote, "deleting")?;
            hub.store.remove(&remote)?;
            // One file: its own entries only (a walk of the caches is for folders).
            hub.hashes.forget(remote.as_str());
            hub.cache.invalidate(remote.as_str());
            hub.owners.forget_owners_beneath(remote.as_str())?;
            hub.locks.forget(remote.as_str(), Instant::now());
            Ok(1)
        })
        .await
    }

    /// Forgets what the caches hold of `name` and anything beneath it.
    fn forget(&self, name: &RemoteName) {
        self.hashes.forget_beneath(name.as_str());
        self.cache.invalidate_beneath(name.as_str());
    }

    /// May `caller` move or delete folder `name` as a whole? Only if it may change every file
    /// in it; an empty folder holds nobody's data, so whoever may upload may. Not when it holds
    /// a file the hub hides, which no client acts on (nor learns the name of).
    fn check_folder(&self, caller: &Caller, name: &RemoteName, what: &str) -> Result<(), HubError> {
        caller.must_reach_inside(name.as_str())?;
        caller.may_create(self.tokens(), self.config.read_only, name.as_str())?;
        self.store.each_file_beneath(name, &mut |file| {
            if let Some(pattern) = self.hidden.covering(file) {
                return Err(HubError::Hidden(format!(
                    "{what} \"{name}\" would take files this hub hides (like {pattern:?}) \
                     with it, which no client may"
                )));
            }
            match RemoteName::parse(file) {
                Ok(file) => self.check_change(caller, &file, what),
                Err(_) => Ok(()),
            }
        })
    }

    fn remove_folder(
        &self,
        caller: &Caller,
        name: &RemoteName,
        recursive: bool,
    ) -> Result<u64, HubError> {
        if !recursive {
            // The first file found is enough.
            let full = || HubError::FolderNotEmpty(name.to_string());
            self.store.each_file_beneath(name, &mut |_| Err(full()))?;
        }
        self.check_folder(caller, name, "deleting")?;
        let removed = self.store.remove_tree(name);
        self.forget(name);
        self.owners.forget_owners_beneath(name.as_str())?;
        self.locks.forget(name.as_str(), Instant::now());
        removed
    }

    /// The TLS identity and configurations in use now (`None`: plaintext).
    pub fn tls(&self) -> Option<Arc<crate::identity::Tls>> {
        self.tls.read().expect("tls poisoned").clone()
    }

    /// Reads the operator's certificate and key again (after they were renewed), for
    /// connections from now on; the hub's own key never changes. Returns the key in use.
    pub fn reload_tls(&self) -> Result<Option<troca_proto::key::HubKey>, HubError> {
        let crate::config::TlsMode::Given { cert, key } = &self.config.tls else {
            return Ok(self.tls().map(|t| t.identity.fingerprint));
        };
        let fresh =
            crate::identity::Tls::new(crate::identity::Identity::from_files(cert, key, true)?)?;
        let fingerprint = fresh.identity.fingerprint;
        *self.tls.write().expect("tls poisoned") = Some(Arc::new(fresh));
        Ok(Some(fingerprint))
    }

    /// What `caller` may do with the files under `prefix`.
    pub async fn rights(
        self: &Arc<Self>,
        caller: &Caller,
        prefix: &str,
    ) -> Result<crate::access::Rights, HubError> {
        let (hub, caller, prefix) = (Arc::clone(self), caller.clone(), prefix.to_owned());
        blocking(move || caller.rights(hub.tokens(), hub.config.read_only, &prefix)).await
    }

    /// The quota of the caller's token and what it keeps now, if it has one.
    pub async fn token_use(
        self: &Arc<Self>,
        caller: &Caller,
    ) -> Result<Option<crate::quota::TokenUse>, HubError> {
        let Some((id, quota)) = caller.grant.as_ref().and_then(|g| g.quota()) else {
            return Ok(None);
        };
        let hub = Arc::clone(self);
        let used = blocking(move || hub.owners.usage(id)).await?;
        Ok(Some(crate::quota::TokenUse { quota, used }))
    }

    /// The space `caller` sees (what a WebDAV client shows as a drive's used and free bytes):
    /// with a token held to a quota of bytes, what its files keep and what it may still add;
    /// otherwise what the share holds and what uploads may still take (see [`Hub::room_for`]).
    pub async fn space(self: &Arc<Self>, caller: &Caller) -> Result<Space, HubError> {
        let token = self.token_use(caller).await?;
        let available = self.room_for(caller, token.as_ref()).await?;
        let used = match token {
            Some(t) if t.quota.bytes > 0 => t.used.bytes,
            _ => self.totals_for(caller).await?.bytes,
        };
        Ok(Space { used, available })
    }

    /// The bytes `caller` may still upload, when the store can tell (a local disk: its free
    /// space less `--keep-free` and what running uploads are promised), and within what its
    /// token's quota leaves (`token`, as [`Hub::token_use`] says); 0 for a caller that cannot
    /// upload.
    pub async fn room_for(
        self: &Arc<Self>,
        caller: &Caller,
        token: Option<&crate::quota::TokenUse>,
    ) -> Result<Option<u64>, HubError> {
        let role = caller.grant.as_ref().map(|g| g.role);
        if !crate::access::role_uploads(self.config.read_only, role) {
            return Ok(Some(0));
        }
        let hub = Arc::clone(self);
        let room = blocking(move || Ok(hub.store.room())).await?;
        let left = token
            .filter(|t| t.quota.bytes > 0)
            .map(|t| t.quota.bytes.saturating_sub(t.used.bytes));
        Ok(match (room, left) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (room, left) => room.or(left),
        })
    }

    /// Creates folder `name` (and the folders on the way); `false` if it was already there.
    pub async fn make_folder(
        self: &Arc<Self>,
        name: &str,
        caller: &Caller,
    ) -> Result<bool, HubError> {
        let remote = parse_folder(name)?;
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            caller.may_create(hub.tokens(), hub.config.read_only, remote.as_str())?;
            hub.check_lock(&caller, remote.as_str(), false)?;
            // A folder takes an inode, as a file does.
            let quota = hub.count_upload(&caller, Amount { bytes: 0, files: 1 })?;
            let made = hub.store.make_folder(&remote)?;
            if let (true, Some(quota)) = (made, quota) {
                quota.keep();
            }
            Ok(made)
        })
        .await
    }

    /// Moves (renames) a file or a folder. `to` naming an existing folder, or ending in `/`,
    /// means inside it, as `mv` does. A file there is replaced only with `force` (and the right
    /// to replace it); a folder never. Returns the new name.
    pub async fn rename(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        force: bool,
        caller: &Caller,
    ) -> Result<String, HubError> {
        let source = parse_folder(from)?;
        let target = parse_folder(to)?;
        let into = to.ends_with('/');
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || hub.rename_blocking(&caller, source, target, into, force)).await
    }

    fn rename_blocking(
        &self,
        caller: &Caller,
        source: RemoteName,
        target: RemoteName,
        into: bool,
        force: bool,
    ) -> Result<String, HubError> {
        // Before any lookup, so that a refusal says nothing of what is there.
        caller.must_reach_inside(source.as_str())?;
        caller.must_reach(target.as_str())?;
        let Some(kind) = self.store.kind(&source)? else {
            return Err(HubError::NotFound(source.to_string()));
        };
        let target_kind = |t: &RemoteName| self.store.kind(t).ok().flatten();
        let target = self.destination(&source, target, into, "move")?;
        self.check_lock(caller, source.as_str(), true)?;
        self.check_lock(caller, target.as_str(), true)?;
        caller.may_create(self.tokens(), self.config.read_only, target.as_str())?;
        if kind == Kind::Folder {
            self.check_folder(caller, &source, "moving")?;
        } else {
            self.check_change(caller, &source, "moving")?;
        }
        match target_kind(&target) {
            None => {}
            // Named as a folder: no --force replaces one.
            Some(Kind::Folder) => return Err(HubError::FolderInTheWay(format!("{target}/"))),
            Some(_) if kind == Kind::Folder => {
                return Err(HubError::FolderOverFile(target.to_string()))
            }
            Some(_) if !force => return Err(HubError::AlreadyExists(target.to_string())),
            Some(_) => self.check_change(caller, &target, "replacing")?,
        }
        self.store.rename(&source, &target, force)?;
        self.forget(&source);
        self.forget(&target);
        self.owners.move_owners(source.as_str(), target.as_str())?;
        self.locks.forget(source.as_str(), Instant::now());
        Ok(target.to_string())
    }

    /// Where `source` goes when a move or a copy (`verb`) names `target`: inside it when
    /// `into` (it ended in `/`) or when it is a folder, as `mv` and `cp` do; never itself, nor
    /// inside itself.
    pub(crate) fn destination(
        &self,
        source: &RemoteName,
        target: RemoteName,
        into: bool,
        verb: &str,
    ) -> Result<RemoteName, HubError> {
        let folder = self.store.kind(&target).ok().flatten() == Some(Kind::Folder);
        let target = match into || folder {
            true => parse(&format!("{target}/{}", source.file_name()))?,
            false => target,
        };
        let inside = target.as_str().starts_with(&format!("{source}/"));
        if target == *source || inside {
            return Err(HubError::BadRequest(format!(
                "cannot {verb} {:?} to {:?}: that is itself or inside it",
                source.as_str(),
                target.as_str()
            )));
        }
        Ok(target)
    }

    /// The files and folders whose own names contain `text` (any case), or whose whole names do
    /// when `text` holds a `/`; at most [`MAX_FOUND`], looked for only in the folder a token is
    /// held to. A search may look at every name of the share, so each address searches once at
    /// a time, and `--max-searches` at most run at once.
    pub async fn find(self: &Arc<Self>, text: &str, caller: &Caller) -> Result<Matches, HubError> {
        let text = text.trim();
        if caller.uploads_only() {
            return Err(crate::access::uploads_only());
        }
        if text.is_empty() {
            return Err(HubError::BadRequest("nothing to search for".into()));
        }
        if text.len() > troca_proto::name::MAX_COMPONENT_LEN {
            return Err(HubError::BadRequest(
                "the text to search for is too long".into(),
            ));
        }
        let hub = Arc::clone(self);
        let (text, within) = (text.to_owned(), caller.folder().map(str::to_owned));
        let _turn = self.walk_turn(caller.from).await;
        let budget = self.config.search_names;
        let mut found = blocking(move || {
            let query = FindQuery {
                text: &text,
                within: within.as_deref(),
                limit: MAX_FOUND,
                budget,
            };
            let mut found = hub.store.find(query)?;
            found.entries = hub.with_hashes(found.entries);
            Ok(found)
        })
        .await?;
        // The store looked only in the caller's folder; checked again here, at the boundary.
        found.entries.retain(|e| caller.sees(&e.name));
        Ok(found)
    }

    /// A turn at walking the share for a short answer (a search; a folder's page, which counts
    /// what each sub-folder holds): one per address at a time, `--max-searches` in all. Held
    /// while the walk runs, never while an answer is sent.
    pub async fn walk_turn(&self, from: Option<IpAddr>) -> troca_net::limits::Turn {
        self.searches.take(from).await
    }

    /// A turn at writing a folder as a zip, which holds a thread of the blocking pool for as
    /// long as its client takes to read it: one per address at a time, `--max-zips` in all, so
    /// slow readers cannot take the threads every upload and record needs.
    pub async fn zip_turn(&self, from: Option<IpAddr>) -> troca_net::limits::Turn {
        self.zips.take(from).await
    }

    /// The store, for the batch of small files (`small.rs`).
    pub(crate) fn quota(&self) -> &Arc<crate::quota::UploadQuota> {
        &self.quota
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The metrics as OpenMetrics text (`None` without `--metrics`).
    pub async fn metrics_text(self: &Arc<Self>) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let partials = self.partial_totals().await.unwrap_or_default();
        let (bytes_out, bytes_in) = self.clients.totals();
        let backlog = self.history.backlog();
        let now = crate::metrics::Snapshot {
            connections: self.clients.count() as u64,
            transfers: self.clients.transfers() as u64,
            partials: partials.count,
            partial_bytes: partials.bytes,
            bytes_in,
            bytes_out,
            cache: self.cache.stats(),
            history_queued: backlog.queued,
            history_dropped: backlog.dropped,
            locks: self.locks.len(Instant::now()) as u64,
        };
        Some(metrics.encode(&now))
    }

    /// When this hub started, in nanoseconds since the Unix epoch.
    pub(crate) fn started_ns(&self) -> i64 {
        let ago = i64::try_from(self.started.elapsed().as_nanos()).unwrap_or(0);
        now_ns() - ago
    }

    pub(crate) fn held(&self) -> &crate::held::HeldQueue {
        &self.held
    }

    pub(crate) fn token_sweeps(&self) -> &crate::quota::TokenSweeps {
        &self.token_sweeps
    }

    pub(crate) fn owners(&self) -> &dyn Owners {
        self.owners.as_ref()
    }

    pub(crate) fn hashes(&self) -> &HashCache {
        &self.hashes
    }

    pub(crate) fn cache(&self) -> &HotCache {
        &self.cache
    }
}

/// The most entries a search answers with.
pub const MAX_FOUND: usize = 5_000;

/// Parses a name that may end in one `/` (a folder).
pub(crate) fn parse_folder(name: &str) -> Result<RemoteName, HubError> {
    match name.strip_suffix('/') {
        Some(folder) if !folder.is_empty() => parse(folder).map_err(|e| match e {
            HubError::InvalidName { reason, .. } => HubError::InvalidName {
                name: name.to_owned(),
                reason,
            },
            other => other,
        }),
        _ => parse(name),
    }
}

/// Whether the client wrote `name` as a folder (`NAME/`).
fn name_is_folder(remote: &RemoteName, name: &str) -> bool {
    name.len() > remote.as_str().len()
}
