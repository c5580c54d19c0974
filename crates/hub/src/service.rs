//! The hub's operations, in one place for every face: each takes a request as it came off the
//! wire, checks the name once with [`RemoteName::parse`], and answers with protocol types or a
//! [`HubError`]. Blocking filesystem work runs on tokio's blocking pool.

use crate::access::{AuthFailures, Caller};
use crate::cache::HotCache;
use crate::clients::Clients;
use crate::config::HubConfig;
use crate::error::HubError;
use crate::history::{HistoryLog, Page, PageQuery};
use crate::share::{is_not_found, Share};
use crate::tokens::{admin_token_path, db_path, Owner, Tokens};
use crate::uploads::{PartialUpload, Partials};
use rustix::fs::FileType;
use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use troca_net::limits::PerAddress;
use troca_net::transfer::mtime_ns;
use troca_proto::msg::{Entry, Put, PutDone, StatusInfo};
use troca_proto::{Hash, RemoteName};

/// A shared folder and everything the hub knows about it.
#[derive(Debug)]
pub struct Hub {
    pub config: HubConfig,
    pub share: Share,
    pub partials: Partials,
    pub clients: Arc<Clients>,
    pub history: HistoryLog,
    pub tokens: Tokens,
    pub auth_failures: AuthFailures,
    pub cache: HotCache,
    /// Connections open per address, over every face.
    pub addresses: Arc<PerAddress>,
    /// Where the admin token is, and whether this start created it.
    pub admin_token: (PathBuf, bool),
    /// The hub's TLS identity and the configurations made from it (`None`: plaintext);
    /// replaced whole when a given certificate is reloaded.
    tls: std::sync::RwLock<Option<Arc<crate::identity::Tls>>>,
    /// Memory for batches of small files, in KiB (see `small.rs`), shared by all connections.
    pub batch_memory: Arc<tokio::sync::Semaphore>,
    started: Instant,
}

/// A file opened for download.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    pub path: PathBuf,
    pub size: u64,
    /// Where the bytes start: the requested offset, or 0 if that was past the end.
    pub offset: u64,
    pub modified_ns: i64,
    /// The hash of the whole file, if already known for this size and mtime.
    pub hash: Option<Hash>,
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn parse(name: &str) -> Result<RemoteName, HubError> {
    RemoteName::parse(name).map_err(|reason| HubError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HubError> + Send + 'static,
) -> Result<T, HubError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(HubError::Internal(format!("a task failed: {e}"))))
}

impl Hub {
    /// Opens the shared folder and state folder named in `config`.
    pub fn open(config: HubConfig) -> Result<Self, HubError> {
        let share = Share::open(&config.root, &config.state_dir)?;
        let partials = Partials::open(share.state_dir(), config.partial_budget)?;
        let (tokens, created) = Tokens::open(share.state_dir())?;
        let history = HistoryLog::open(&db_path(share.state_dir()), config.history_keep)?;
        share
            .hashes
            .attach(&db_path(share.state_dir()))
            .map_err(|e| crate::history::db_err(&db_path(share.state_dir()), e))?;
        let batch_memory = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(config.batch_memory >> 10)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let identity = match &config.tls {
            crate::config::TlsMode::Plaintext => None,
            crate::config::TlsMode::OwnKey => Some(crate::identity::Identity::load_or_create(
                share.state_dir(),
            )?),
            crate::config::TlsMode::Given { cert, key } => {
                Some(crate::identity::Identity::from_files(cert, key, true)?)
            }
        };
        let tls = match identity {
            Some(id) => Some(Arc::new(crate::identity::Tls::new(id)?)),
            None => None,
        };
        Ok(Self {
            tls: std::sync::RwLock::new(tls),
            admin_token: (admin_token_path(share.state_dir()), created),
            cache: HotCache::new(config.cache_size, config.cache_max_file),
            addresses: PerAddress::new(config.max_connections_per_ip),
            config,
            share,
            partials,
            clients: Arc::default(),
            history,
            tokens,
            auth_failures: AuthFailures::default(),
            batch_memory,
            started: Instant::now(),
        })
    }

    /// Files whose names start with `prefix`.
    pub async fn list(self: &Arc<Self>, prefix: &str) -> Result<Vec<Entry>, HubError> {
        let hub = Arc::clone(self);
        let prefix = prefix.to_owned();
        blocking(move || Ok(hub.share.list(&prefix))).await
    }

    /// Opens `name` for reading from `offset`.
    pub fn open_file(&self, name: &str, offset: u64) -> Result<OpenFile, HubError> {
        let remote = parse(name)?;
        let (file, path) = self.share.open_existing(&remote)?;
        let meta = file
            .metadata()
            .map_err(|e| HubError::io(format!("cannot stat {name}"), e))?;
        if !meta.is_file() {
            return Err(HubError::NotAFile(name.to_owned()));
        }
        let size = meta.len();
        let modified_ns = mtime_ns(&meta);
        Ok(OpenFile {
            hash: self.share.hashes.get(&path, size, modified_ns),
            file,
            path,
            size,
            offset: if offset > size { 0 } else { offset },
            modified_ns,
        })
    }

    /// Checks a token (from a native `Hello` or an HTTP `Authorization` header) against the
    /// policy, slowing down repeated failures from one address.
    pub async fn authenticate(
        self: &Arc<Self>,
        token: Option<String>,
        from: IpAddr,
    ) -> Result<Caller, HubError> {
        let grant = match &token {
            None => None,
            Some(t) => {
                // One guess at a time per address: parallel connections gain nothing.
                let _turn = self.auth_failures.turn(from).await;
                let hub = Arc::clone(self);
                let t = t.clone();
                match blocking(move || hub.tokens.check(&t)).await? {
                    Some(grant) => Some(grant),
                    None => {
                        let wait = self.auth_failures.failed(from);
                        tokio::time::sleep(wait).await;
                        return Err(HubError::Unauthorized(
                            "the token is not valid (wrong, or revoked)".into(),
                        ));
                    }
                }
            }
        };
        if grant.is_none() && self.config.require_token {
            return Err(HubError::Unauthorized("this hub requires a token".into()));
        }
        Ok(Caller {
            token,
            grant,
            from: Some(from),
            owner_key: None,
        })
    }

    /// The whole contents and hash of a small file, from the hot-file cache or read once and
    /// kept there (its hash remembered too). For files [`HotCache::wants`].
    pub fn small_file(&self, open: &OpenFile) -> std::io::Result<(Arc<[u8]>, Hash)> {
        if let Some(hit) = self.cache.get(&open.path, open.size, open.modified_ns) {
            return Ok(hit);
        }
        let mut data = vec![0u8; open.size as usize];
        std::os::unix::fs::FileExt::read_exact_at(&open.file, &mut data, 0)?;
        let hash = open.hash.unwrap_or_else(|| *blake3::hash(&data).as_bytes());
        if open.hash.is_none() {
            self.remember_hash(open, hash);
        }
        let data: Arc<[u8]> = data.into();
        self.cache
            .insert(open.path.clone(), open.modified_ns, hash, Arc::clone(&data));
        Ok((data, hash))
    }

    /// Records a hash computed while serving `file`, if the file is still the one that was hashed.
    pub fn remember_hash(&self, open: &OpenFile, hash: Hash) {
        if let Ok(meta) = open.file.metadata() {
            if meta.len() == open.size && mtime_ns(&meta) == open.modified_ns {
                self.share
                    .hashes
                    .insert(open.path.clone(), open.size, open.modified_ns, hash);
            }
        }
    }

    /// May `caller` replace or delete `name` (`what` says which, for the refusal)? Blocking: reads
    /// the file's owner from the database.
    pub(crate) fn check_change(
        &self,
        caller: &Caller,
        name: &RemoteName,
        what: &str,
    ) -> Result<(), HubError> {
        let owner = self.tokens.owner(name.as_str())?;
        caller.may_change(
            &self.tokens,
            self.config.read_only,
            name.as_str(),
            owner,
            what,
        )
    }

    /// Starts (or resumes) an upload: checks the name and the policy, claims the name, and opens
    /// the partial file.
    pub async fn begin_upload(
        self: &Arc<Self>,
        put: &Put,
        caller: &Caller,
    ) -> Result<PartialUpload, HubError> {
        let remote = parse(&put.name)?;
        let hub = Arc::clone(self);
        let caller = caller.clone();
        let (size, mtime, force) = (put.size, put.source_mtime_ns, put.force);
        blocking(move || {
            caller.may_create(&hub.tokens, hub.config.read_only)?;
            let exists = match hub.share.slot(&remote, false) {
                Ok(slot) => match slot.kind() {
                    Ok(Some(FileType::Directory)) => {
                        return Err(HubError::NotAFile(remote.to_string()))
                    }
                    Ok(kind) => kind.is_some(),
                    Err(e) => return Err(HubError::io(format!("cannot reach {remote}"), e)),
                },
                // A folder on the way is missing: nothing is there yet.
                Err(HubError::NotFound(_)) => false,
                Err(e) => return Err(e),
            };
            if exists {
                if !force {
                    return Err(HubError::AlreadyExists(remote.to_string()));
                }
                hub.check_change(&caller, &remote, "replacing")?;
            }
            hub.partials.begin(remote, size, mtime, caller.from)
        })
        .await
    }

    /// Finishes an upload whose bytes have all arrived: checks the sender's hash, makes the data
    /// durable and moves it under its name. On a hash mismatch the partial data is deleted; if
    /// the name was taken meanwhile, it is kept so a retry with `force` resumes at the end.
    pub async fn finish_upload(
        self: &Arc<Self>,
        upload: PartialUpload,
        theirs: Option<Hash>,
        force: bool,
        caller: &Caller,
    ) -> Result<PutDone, HubError> {
        let hub = Arc::clone(self);
        let uploader = Owner {
            token_id: caller.grant.and_then(|g| g.token_id),
            key_hash: caller.owner_key,
        };
        blocking(move || {
            let ours: Hash = *upload.hasher.finalize().as_bytes();
            // Without the sender's hash (a plain HTTP PUT) there is nothing to check against:
            // the caller records the upload as unverified.
            if theirs.is_some_and(|theirs| ours != theirs) {
                let name = upload.name.to_string();
                upload.discard();
                return Err(HubError::Integrity(name));
            }
            let name = upload.name.clone();
            let saved = |e| HubError::io(format!("cannot save {name}"), e);
            upload.file.sync_all().map_err(saved)?;
            // The hash covers what arrived; the length proves all of it was stored.
            let stored = upload.file.metadata().map_err(saved)?.len();
            if stored != upload.size {
                let e = std::io::Error::other(format!("{stored} of {} bytes stored", upload.size));
                upload.discard();
                return Err(saved(e));
            }
            let slot = match hub.share.slot(&name, true) {
                Ok(slot) => slot,
                Err(e) => {
                    // The name cannot be stored (its folder went away, say): nothing to resume.
                    upload.discard();
                    return Err(e);
                }
            };
            if slot.kind().is_ok_and(|k| k == Some(FileType::Directory)) {
                return Err(HubError::NotAFile(name.to_string()));
            }
            let target = slot.path();
            slot.place(&upload.part, force).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    HubError::AlreadyExists(name.to_string())
                } else {
                    HubError::io(format!("cannot store {name}"), e)
                }
            })?;
            let size = upload.size;
            upload.completed();
            hub.cache.invalidate(&target);
            // The uploading token owns the file now (an anonymous upload owns nothing).
            hub.tokens.set_owner(name.as_str(), uploader)?;
            if let Ok(meta) = target.metadata() {
                hub.share
                    .hashes
                    .insert(target, meta.len(), mtime_ns(&meta), ours);
            }
            Ok(PutDone {
                name: name.to_string(),
                size,
                blake3: ours,
            })
        })
        .await
    }

    /// The hub's clock, time zone and figures.
    pub async fn status(self: &Arc<Self>) -> Result<StatusInfo, HubError> {
        let hub = Arc::clone(self);
        let (files, bytes, partials) = blocking(move || {
            let all: Vec<Entry> = hub
                .share
                .list("")
                .into_iter()
                .filter(|e| !e.name.ends_with('/'))
                .collect();
            let files = all.len() as u64;
            Ok((
                files,
                all.iter().map(|e| e.size).sum::<u64>(),
                hub.partials.list(),
            ))
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
            partials: partials.len() as u64,
            partial_bytes: partials.iter().map(|p| p.held).sum(),
        })
    }

    /// One page of the history (see [`HistoryLog::query`]), on the blocking pool.
    pub async fn history(self: &Arc<Self>, query: PageQuery) -> Result<Page, HubError> {
        let hub = Arc::clone(self);
        blocking(move || hub.history.query(&query)).await
    }

    /// The partial uploads held (admins only), oldest first.
    pub async fn partial_uploads(
        self: &Arc<Self>,
        caller: &Caller,
    ) -> Result<Vec<crate::uploads::PartialInfo>, HubError> {
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            caller.must_be_admin(&hub.tokens, "listing partial uploads")?;
            Ok(hub.partials.list())
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
            caller.must_be_admin(&hub.tokens, "removing a partial upload")?;
            match hub.partials.remove(&key)? {
                true => Ok(()),
                false => Err(HubError::NotFound(format!("partial upload {key}"))),
            }
        })
        .await
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
            let slot = hub.share.slot(&remote, false)?;
            match slot.kind() {
                Ok(Some(FileType::Directory)) => {
                    return hub.remove_folder(&caller, &remote, &slot, recursive)
                }
                Ok(Some(_)) if as_folder => return Err(HubError::NotFound(format!("{remote}/"))),
                Ok(Some(_)) => {}
                Ok(None) => return Err(HubError::NotFound(remote.to_string())),
                Err(e) => return Err(HubError::io(format!("cannot reach {remote}"), e)),
            }
            hub.check_change(&caller, &remote, "deleting")?;
            // Removes the entry the client named (a link, if it is one), not what it points to.
            slot.remove().map_err(|e| {
                if is_not_found(&e) {
                    HubError::NotFound(remote.to_string())
                } else {
                    HubError::io(format!("cannot delete {remote}"), e)
                }
            })?;
            let real = slot.path();
            hub.share.hashes.forget(&real);
            hub.cache.invalidate(&real);
            hub.tokens.set_owner(remote.as_str(), Owner::default())?;
            Ok(1)
        })
        .await
    }

    /// May `caller` move or delete folder `name` as a whole? Only if it may change every file
    /// in it; an empty folder holds nobody's data, so whoever may upload may.
    fn check_folder(&self, caller: &Caller, name: &RemoteName, what: &str) -> Result<(), HubError> {
        caller.may_create(&self.tokens, self.config.read_only)?;
        for file in self.share.files_beneath(name)? {
            if let Ok(file) = RemoteName::parse(&file) {
                self.check_change(caller, &file, what)?;
            }
        }
        Ok(())
    }

    fn remove_folder(
        &self,
        caller: &Caller,
        name: &RemoteName,
        slot: &crate::share::Slot,
        recursive: bool,
    ) -> Result<u64, HubError> {
        if !recursive && !self.share.files_beneath(name)?.is_empty() {
            return Err(HubError::FolderNotEmpty(name.to_string()));
        }
        self.check_folder(caller, name, "deleting")?;
        let removed = self.share.remove_tree(name);
        let real = slot.path();
        self.share.hashes.forget_beneath(&real);
        self.cache.invalidate_beneath(&real);
        self.tokens.forget_owners_beneath(name.as_str())?;
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
        blocking(move || caller.rights(&hub.tokens, hub.config.read_only, &prefix)).await
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
            caller.may_create(&hub.tokens, hub.config.read_only)?;
            hub.share.make_folder(&remote)
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
        mut target: RemoteName,
        into: bool,
        force: bool,
    ) -> Result<String, HubError> {
        let from = self.share.slot(&source, false)?;
        let kind = match from.kind() {
            Ok(Some(kind)) => kind,
            Ok(None) => return Err(HubError::NotFound(source.to_string())),
            Err(e) => return Err(HubError::io(format!("cannot reach {source}"), e)),
        };
        let target_kind = |t: &RemoteName| match self.share.slot(t, false) {
            Ok(slot) => slot.kind().ok().flatten(),
            Err(_) => None,
        };
        if into || target_kind(&target) == Some(FileType::Directory) {
            target = parse(&format!("{target}/{}", source.file_name()))?;
        }
        let inside = target.as_str().starts_with(&format!("{source}/"));
        if target == source || inside {
            return Err(HubError::BadRequest(format!(
                "cannot move {source:?} to {target:?}: that is itself or inside it"
            )));
        }
        if kind == FileType::Directory {
            self.check_folder(caller, &source, "moving")?;
        } else {
            caller.may_create(&self.tokens, self.config.read_only)?;
            self.check_change(caller, &source, "moving")?;
        }
        match target_kind(&target) {
            None => {}
            Some(FileType::Directory) => return Err(HubError::AlreadyExists(target.to_string())),
            Some(_) if !force || kind == FileType::Directory => {
                return Err(HubError::AlreadyExists(target.to_string()))
            }
            Some(_) => self.check_change(caller, &target, "replacing")?,
        }
        let to = self.share.slot(&target, true)?;
        self.share
            .rename(&from, &to, force)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST)
                | Some(libc::ENOTEMPTY)
                | Some(libc::EISDIR)
                | Some(libc::ENOTDIR) => HubError::AlreadyExists(target.to_string()),
                _ if is_not_found(&e) => HubError::NotFound(source.to_string()),
                _ => HubError::io(format!("cannot move {source} to {target}"), e),
            })?;
        let (old, new) = (from.path(), to.path());
        for path in [&old, &new] {
            self.share.hashes.forget_beneath(path);
            self.cache.invalidate_beneath(path);
        }
        self.tokens.move_owners(source.as_str(), target.as_str())?;
        Ok(target.to_string())
    }

    /// The files and folders whose names contain `text` (any case), at most [`MAX_FOUND`].
    pub async fn find(self: &Arc<Self>, text: &str) -> Result<Vec<Entry>, HubError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(HubError::BadRequest("nothing to search for".into()));
        }
        if text.len() > troca_proto::name::MAX_COMPONENT_LEN {
            return Err(HubError::BadRequest(
                "the text to search for is too long".into(),
            ));
        }
        let (hub, text) = (Arc::clone(self), text.to_owned());
        blocking(move || Ok(hub.share.find(&text, MAX_FOUND))).await
    }
}

/// The most entries a search answers with.
pub const MAX_FOUND: usize = 5_000;

/// Parses a name that may end in one `/` (a folder).
fn parse_folder(name: &str) -> Result<RemoteName, HubError> {
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
