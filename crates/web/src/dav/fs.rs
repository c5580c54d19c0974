//! The hub as a `dav-server` filesystem: every call is one of the hub's operations, with the
//! request's caller, so names, rights, owners, locks and uploads follow the same rules as on
//! every other face. A PUT is a partial upload, hashed, checked and renamed into place only when
//! complete; one that breaks off leaves nothing under the name.

use super::Ctx;
use crate::folders::FolderRows;
use axum::http::StatusCode;
use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use futures_util::FutureExt;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use troca_hub::clients::Busy;
use troca_hub::names::Stat;
use troca_hub::records::{DeadProp, PropChange};
use troca_hub::service::{Download, Resume, Source, Uploaded};
use troca_hub::spool::Spool;
use troca_hub::transfer::Incoming;
use troca_hub::{Hub, HubError};
use troca_proto::msg::{Activity, Put};

/// The filesystem `dav-server` sees.
#[derive(Clone)]
pub(crate) struct HubFs {
    pub hub: Arc<Hub>,
}

/// The hub's name for a WebDAV path (`""`: the whole share), decoded once by `dav-server`.
pub(crate) fn name_of(path: &DavPath) -> FsResult<String> {
    let s = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
    Ok(s.trim_matches('/').to_owned())
}

/// The WebDAV answer to a hub error. A name the hub refuses (the state folder among them) is
/// simply not there.
pub(crate) fn fs_err(e: HubError) -> FsError {
    match e {
        HubError::NotFound(_) | HubError::InvalidName { .. } => FsError::NotFound,
        HubError::AlreadyExists(_)
        | HubError::FolderInTheWay(_)
        | HubError::FolderOverFile(_)
        | HubError::FolderNotEmpty(_) => FsError::Exists,
        // RFC 4331: a quota exceeded is "insufficient storage".
        HubError::NoSpace { .. }
        | HubError::DiskFull
        | HubError::Quota { .. }
        | HubError::TokenQuota(_) => FsError::InsufficientStorage,
        HubError::TooLarge(_) => FsError::TooLarge,
        HubError::Forbidden(_)
        | HubError::Hidden(_)
        | HubError::Unauthorized(_)
        | HubError::NotAFile(_)
        | HubError::Locked(_)
        | HubError::UploadInProgress(_) => FsError::Forbidden,
        other => {
            tracing::debug!("webdav: {other}");
            FsError::GeneralFailure
        }
    }
}

/// What a name holds, as `dav-server` asks for it.
#[derive(Debug, Clone)]
pub(crate) struct Meta(pub Stat);

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn modified(&self) -> FsResult<SystemTime> {
        let ns = u64::try_from(self.0.modified_ns).unwrap_or(0);
        Ok(UNIX_EPOCH + Duration::from_nanos(ns))
    }

    fn is_dir(&self) -> bool {
        self.0.folder
    }

    /// The BLAKE3 hash (as on `/files/`), once the hub knows it; until then size and time.
    fn etag(&self) -> Option<String> {
        match &self.0.blake3 {
            Some(h) => Some(troca_proto::hex(h)),
            None => Some(format!("{:x}-{:x}", self.0.size, self.0.modified_ns)),
        }
    }
}

/// A link to a folder, as a delete or a move of a tree sees it: itself, not a folder to walk.
#[derive(Debug, Clone)]
struct Link(Meta);

impl DavMetaData for Link {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn modified(&self) -> FsResult<SystemTime> {
        self.0.modified()
    }

    fn is_dir(&self) -> bool {
        false
    }

    fn is_symlink(&self) -> bool {
        true
    }

    fn etag(&self) -> Option<String> {
        self.0.etag()
    }
}

struct Child {
    name: String,
    meta: Meta,
    /// A link to a folder, asked for by a walk that takes links as themselves.
    link: bool,
}

/// Entries of a folder read ahead for a `PROPFIND`, with their dead properties.
const PROPS_BATCH: usize = 256;

/// A folder's entries as `read_dir` gives them, a batch at a time.
struct Listed {
    fs: HubFs,
    ctx: Ctx,
    walk: FolderRows,
    ready: std::collections::VecDeque<crate::folders::Row>,
    /// Whether to ask whether each folder is a link.
    links: bool,
    /// Whether to read the batch's dead properties ahead.
    props: bool,
}

impl Listed {
    async fn next(&mut self) -> Result<Option<Child>, HubError> {
        if self.ready.is_empty() {
            while self.ready.len() < PROPS_BATCH {
                match self.walk.next().await? {
                    Some(r) => self.ready.push_back(r),
                    None => break,
                }
            }
            if self.props && !self.ready.is_empty() {
                let names: Vec<String> = self.ready.iter().map(|r| r.name.clone()).collect();
                let ahead = self.fs.hub.props_of(&self.ctx.caller, &names).await?;
                *self.ctx.ahead.lock().expect("props poisoned") = ahead;
            }
        }
        let Some(r) = self.ready.pop_front() else {
            return Ok(None);
        };
        let link = self.links && r.folder && self.fs.is_link(&self.ctx, &r.name);
        Ok(Some(Child { link, ..child(r) }))
    }
}

/// A folder's row as a WebDAV entry.
fn child(r: crate::folders::Row) -> Child {
    Child {
        meta: Meta(Stat {
            folder: r.folder,
            size: if r.folder { 0 } else { r.size },
            modified_ns: r.modified_ns,
            blake3: r.blake3,
        }),
        name: r.short,
        link: false,
    }
}

impl DavDirEntry for Child {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = if self.link {
            Box::new(Link(self.meta.clone()))
        } else {
            Box::new(self.meta.clone())
        };
        std::future::ready(Ok(meta)).boxed()
    }
}

impl HubFs {
    async fn stat(&self, ctx: &Ctx, name: &str) -> FsResult<Stat> {
        self.hub.stat(&ctx.caller, name).await.map_err(fs_err)
    }

    /// The dead properties of `name`: from the batch a listing read ahead, or asked for.
    async fn dead_props(&self, ctx: &Ctx, name: &str) -> FsResult<Vec<DeadProp>> {
        let ahead = ctx.ahead.lock().expect("props poisoned").get(name);
        match ahead {
            Some(props) => Ok(props),
            None => self.hub.props(&ctx.caller, name).await.map_err(fs_err),
        }
    }

    /// Whether `name` is a link (one that cannot be looked at counts as none).
    fn is_link(&self, ctx: &Ctx, name: &str) -> bool {
        self.hub.is_link(&ctx.caller, name).unwrap_or(false)
    }

    /// The folder above `name` must be there: WebDAV does not make folders on the way.
    async fn parent_is_folder(&self, ctx: &Ctx, name: &str) -> FsResult<()> {
        let parent = name.rsplit_once('/').map_or("", |(p, _)| p);
        match self.stat(ctx, parent).await {
            Ok(s) if s.folder => Ok(()),
            _ => Err(FsError::NotFound),
        }
    }

    /// The entries directly in folder `name`.
    /// The entries of folder `name`, one at a time as its listing is read.
    async fn children(&self, ctx: &Ctx, name: &str) -> FsResult<FolderRows> {
        if !self.stat(ctx, name).await?.folder {
            return Err(FsError::Forbidden);
        }
        let prefix = if name.is_empty() {
            String::new()
        } else {
            format!("{name}/")
        };
        let (hub, caller) = (&self.hub, &ctx.caller);
        Ok(FolderRows::new(hub, caller, &prefix, None))
    }

    /// A LOCK of a name not there yet makes it, empty (RFC 4918 §7.3), under the lock just
    /// taken for this caller (a `PUT` always says its length, so only a LOCK opens without).
    async fn create_locked(
        &self,
        name: String,
        o: OpenOptions,
        ctx: &Ctx,
    ) -> FsResult<Box<dyn DavFile>> {
        let mut ctx = ctx.clone();
        let me = ctx.caller.principal();
        let now = std::time::Instant::now();
        let mine = self.hub.locks().discover(&name, now).into_iter();
        let mine = mine.filter(|l| l.name == name && l.principal.as_deref() == Some(&me));
        ctx.caller.lock_tokens.extend(mine.map(|l| l.token));
        let mut upload = self.open_write(name, o, &ctx).await?;
        upload.flush().await?;
        Ok(Box::new(upload))
    }

    async fn open_write(&self, name: String, o: OpenOptions, ctx: &Ctx) -> FsResult<Upload> {
        // `dav-server` has looked the name up and checked `If-Match`/`If-None-Match` already;
        // a folder there, or a file where `create_new` says none, the upload itself refuses.
        if !o.create && self.stat(ctx, &name).await.is_err() {
            return Err(FsError::NotFound);
        }
        self.parent_is_folder(ctx, &name).await?;
        if o.size.is_none() && ctx.unsized_put {
            return self.gather(name, o, ctx).await;
        }
        // A LOCK of a name not yet there makes it, empty.
        let size = o.size.unwrap_or(0);
        let put = Put {
            name: name.clone(),
            size,
            source_mtime_ns: ctx.modified_ns,
            force: !o.create_new,
        };
        // WebDAV has no way to resume: a time given is only the file's.
        let incoming = self
            .hub
            .begin_upload_with(&put, &ctx.caller, Resume::Never)
            .await
            .map_err(fs_err)?;
        let busy = Busy::start(&ctx.visitor.session, Activity::Uploading, &name, size, 0);
        Ok(Upload {
            hub: Arc::clone(&self.hub),
            ctx: ctx.clone(),
            name,
            force: put.force,
            sink: Some(Sink::Stream(Box::new(incoming))),
            stored: None,
            _busy: busy,
        })
    }

    /// A `PUT` of unknown length: gathered by the hub, stored once it ends.
    async fn gather(&self, name: String, o: OpenOptions, ctx: &Ctx) -> FsResult<Upload> {
        let put = Put {
            name: name.clone(),
            size: 0,
            source_mtime_ns: ctx.modified_ns,
            force: !o.create_new,
        };
        let spool = self.hub.spool(put, &ctx.caller).await.map_err(fs_err)?;
        let busy = Busy::start(&ctx.visitor.session, Activity::Uploading, &name, 0, 0);
        Ok(Upload {
            hub: Arc::clone(&self.hub),
            ctx: ctx.clone(),
            name,
            force: !o.create_new,
            sink: Some(Sink::Gather(Box::new(spool))),
            stored: None,
            _busy: busy,
        })
    }
}

/// A dead property's key: `{namespace}name`.
fn prop_key(p: &DavProp) -> String {
    format!("{{{}}}{}", p.namespace.as_deref().unwrap_or(""), p.name)
}

fn prop_of(d: DeadProp, content: bool) -> DavProp {
    let (ns, name) = d
        .key
        .strip_prefix('{')
        .and_then(|k| k.split_once('}'))
        .unwrap_or(("", d.key.as_str()));
    DavProp {
        name: name.to_owned(),
        prefix: None,
        namespace: (!ns.is_empty()).then(|| ns.to_owned()),
        xml: content.then(|| d.xml.into_bytes()),
    }
}

type Boxed<'a, T> = FsFuture<'a, T>;

impl GuardedFileSystem<Ctx> for HubFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        ctx: &'a Ctx,
    ) -> Boxed<'a, Box<dyn DavFile>> {
        async move {
            let name = name_of(path)?;
            if name.is_empty() {
                return Err(FsError::Forbidden);
            }
            if options.write && options.size.is_none() && !ctx.unsized_put {
                return self.create_locked(name, options, ctx).await;
            }
            if options.write {
                let upload = self.open_write(name, options, ctx).await?;
                return Ok(Box::new(upload) as Box<dyn DavFile>);
            }
            let download = self.hub.download(&ctx.caller, &name, 0).map_err(fs_err)?;
            Ok(Box::new(Reader {
                download: Arc::new(download),
                pos: 0,
            }) as Box<dyn DavFile>)
        }
        .boxed()
    }

    /// A delete or a copy walks with `DataSymlink`: a link to a folder is then itself, so a
    /// delete removes the link, never the files of the folder it leads to. A `PROPFIND` walks
    /// with `Data`, and asks for each entry's dead properties next: they are read a batch of
    /// entries at a time ([`Hub::props_of`]).
    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        meta: ReadDirMeta,
        ctx: &'a Ctx,
    ) -> Boxed<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let walk = self.children(ctx, &name_of(path)?).await?;
            let listed = Listed {
                fs: self.clone(),
                ctx: ctx.clone(),
                walk,
                ready: Default::default(),
                // Asked of each folder entry only by a walk that takes links as themselves.
                links: matches!(meta, ReadDirMeta::DataSymlink),
                props: matches!(meta, ReadDirMeta::Data),
            };
            let items = futures_util::stream::unfold(Some(listed), |listed| async move {
                let mut listed = listed?;
                match listed.next().await {
                    Ok(Some(c)) => Some((Ok(Box::new(c) as Box<dyn DavDirEntry>), Some(listed))),
                    Ok(None) => None,
                    // The listing failed part-way: said once, then the stream ends.
                    Err(e) => Some((Err(fs_err(e)), None)),
                }
            });
            Ok(Box::pin(items) as FsStream<_>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, Box<dyn DavMetaData>> {
        async move {
            let stat = self.stat(ctx, &name_of(path)?).await?;
            Ok(Box::new(Meta(stat)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    /// A link to a folder is itself here: a delete or a move takes the link.
    fn symlink_metadata<'a>(
        &'a self,
        path: &'a DavPath,
        ctx: &'a Ctx,
    ) -> Boxed<'a, Box<dyn DavMetaData>> {
        async move {
            let name = name_of(path)?;
            let meta = Meta(self.stat(ctx, &name).await?);
            if meta.0.folder && self.is_link(ctx, &name) {
                return Ok(Box::new(Link(meta)) as Box<dyn DavMetaData>);
            }
            Ok(Box::new(meta) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, ()> {
        async move {
            let name = name_of(path)?;
            if self.stat(ctx, &name).await.is_ok() {
                return Err(FsError::Exists);
            }
            self.parent_is_folder(ctx, &name).await?;
            self.hub
                .make_folder(&name, &ctx.caller)
                .await
                .map(drop)
                .map_err(fs_err)
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, ()> {
        async move {
            let name = format!("{}/", name_of(path)?);
            self.hub
                .remove(&name, false, &ctx.caller)
                .await
                .map(drop)
                .map_err(fs_err)
        }
        .boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, ()> {
        async move {
            self.hub
                .remove(&name_of(path)?, false, &ctx.caller)
                .await
                .map(drop)
                .map_err(fs_err)
        }
        .boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, ()> {
        async move {
            let (from, to) = (name_of(from)?, name_of(to)?);
            self.parent_is_folder(ctx, &to).await?;
            self.hub
                .rename(&from, &to, false, &ctx.caller)
                .await
                .map(drop)
                .map_err(fs_err)
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath, ctx: &'a Ctx) -> Boxed<'a, ()> {
        async move {
            let (from, to) = (name_of(from)?, name_of(to)?);
            let progress = Default::default();
            self.hub
                .copy(&from, &to, false, &ctx.caller, &progress)
                .await
                .map(drop)
                .map_err(fs_err)
        }
        .boxed()
    }

    /// RFC 4331's quota, which file managers show as a drive's used and free space: as the
    /// hub sees it for this caller (its token's quota, or the share and its disk). dav-server
    /// answers it for the root of the mount (elsewhere it takes the entry's own size as used).
    fn get_quota<'a>(&'a self, ctx: &'a Ctx) -> Boxed<'a, (u64, Option<u64>)> {
        async move {
            let space = self.hub.space(&ctx.caller).await.map_err(fs_err)?;
            let total = space.available.map(|a| space.used.saturating_add(a));
            Ok((space.used, total))
        }
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
        _ctx: &'a Ctx,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::ready(true))
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        ctx: &'a Ctx,
    ) -> Boxed<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let name = name_of(path)?;
            let changes = patch
                .iter()
                .map(|(is_set, p)| match (is_set, &p.xml) {
                    (true, Some(xml)) => PropChange::Set(DeadProp {
                        key: prop_key(p),
                        xml: String::from_utf8_lossy(xml).into_owned(),
                    }),
                    _ => PropChange::Remove(prop_key(p)),
                })
                .collect();
            let status = match self.hub.patch_props(&name, changes, &ctx.caller).await {
                Ok(()) => StatusCode::OK,
                Err(HubError::TooLarge(_)) => StatusCode::INSUFFICIENT_STORAGE,
                Err(HubError::Locked(_)) => StatusCode::LOCKED,
                Err(HubError::NotFound(_)) => return Err(FsError::NotFound),
                Err(_) => StatusCode::FORBIDDEN,
            };
            Ok(patch
                .into_iter()
                .map(|(_, mut p)| {
                    p.xml = None;
                    (status, p)
                })
                .collect())
        }
        .boxed()
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        ctx: &'a Ctx,
    ) -> Boxed<'a, Vec<DavProp>> {
        async move {
            let props = self.dead_props(ctx, &name_of(path)?).await?;
            Ok(props.into_iter().map(|d| prop_of(d, do_content)).collect())
        }
        .boxed()
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        ctx: &'a Ctx,
    ) -> Boxed<'a, Vec<u8>> {
        async move {
            let key = prop_key(&prop);
            let props = self.dead_props(ctx, &name_of(path)?).await?;
            props
                .into_iter()
                .find(|d| d.key == key)
                .map(|d| d.xml.into_bytes())
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }
}

/// A file opened for reading (`dav-server` reads through it for a folder's `COPY`; a `GET` is
/// served by the web face's own download path).
#[derive(Debug)]
struct Reader {
    download: Arc<Download>,
    pos: u64,
}

impl DavFile for Reader {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let d = &self.download;
        let meta: Box<dyn DavMetaData> = Box::new(Meta(Stat {
            folder: false,
            size: d.size(),
            modified_ns: d.version.modified_ns,
            blake3: d.hash,
        }));
        std::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        std::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        std::future::ready(Err(FsError::Forbidden)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let left = self.download.size().saturating_sub(self.pos);
            let want = count.min(usize::try_from(left).unwrap_or(usize::MAX));
            let (download, pos) = (Arc::clone(&self.download), self.pos);
            let bytes = tokio::task::spawn_blocking(move || match &download.source {
                Source::Memory(data) => Ok(Bytes::copy_from_slice(
                    &data[pos as usize..pos as usize + want],
                )),
                Source::Stored(file) => {
                    let mut buf = vec![0; want];
                    file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                }
            })
            .await
            .map_err(|_| FsError::GeneralFailure)?
            .map_err(|_| FsError::GeneralFailure)?;
            self.pos += bytes.len() as u64;
            Ok(bytes)
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let size = self.download.size();
        let to = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let result = match to {
            Some(n) if n <= size => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(FsError::GeneralFailure),
        };
        std::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        std::future::ready(Ok(())).boxed()
    }
}

/// A PUT on its way in: a partial upload of the announced size (or, for a body of unknown
/// length, what the hub gathers of it), put under its name by `flush` once every byte is there
/// and hashed. Dropped before that (the client went away, the body broke off), it is
/// discarded.
struct Upload {
    hub: Arc<Hub>,
    ctx: Ctx,
    name: String,
    force: bool,
    sink: Option<Sink>,
    stored: Option<Stat>,
    _busy: Busy,
}

/// Where an upload's bytes go.
enum Sink {
    /// The length was announced: straight into the hub's upload pipeline.
    Stream(Box<Incoming>),
    /// Not announced: gathered, then uploaded once the body ends.
    Gather(Box<Spool>),
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("name", &self.name).finish()
    }
}

impl Upload {
    async fn take(&mut self, data: &[u8]) -> FsResult<()> {
        let taken = match self.sink.as_mut().ok_or(FsError::GeneralFailure)? {
            Sink::Stream(incoming) => incoming.take(data).await,
            Sink::Gather(spool) => spool.take(data).await,
        };
        taken.map_err(fs_err)?;
        self.ctx.visitor.session.received(data.len() as u64);
        Ok(())
    }

    /// Stores what arrived under the name.
    async fn finish(&mut self, sink: Sink) -> Result<Uploaded, HubError> {
        let ctx = &self.ctx;
        match sink {
            Sink::Stream(incoming) => {
                let hub = &self.hub;
                hub.finish_upload(*incoming, ctx.sender_hash, self.force, &ctx.caller)
                    .await
            }
            Sink::Gather(spool) => spool.upload(ctx.sender_hash).await,
        }
    }
}

impl DavFile for Upload {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let stat = match &self.stored {
                Some(s) => s.clone(),
                None => self
                    .hub
                    .stat(&self.ctx.caller, &self.name)
                    .await
                    .map_err(fs_err)?,
            };
            Ok(Box::new(Meta(stat)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            while buf.has_remaining() {
                let chunk = buf.copy_to_bytes(buf.chunk().len());
                self.take(&chunk).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.take(&buf).await }.boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        std::future::ready(Err(FsError::Forbidden)).boxed()
    }

    /// Only where the upload is (a partial `PUT` with `Content-Range` is refused).
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let result = match pos {
            SeekFrom::Start(0) | SeekFrom::Current(0) => Ok(0),
            _ => Err(FsError::NotImplemented),
        };
        std::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            let Some(sink) = self.sink.take() else {
                return Ok(());
            };
            let up = self.finish(sink).await.map_err(fs_err)?;
            // What is stored now, for the answer's ETag, without looking it up again.
            self.stored = Some(Stat {
                folder: false,
                size: up.version.size,
                modified_ns: up.version.modified_ns,
                blake3: Some(up.done.blake3),
            });
            Ok(())
        }
        .boxed()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(Sink::Stream(incoming)) = self.sink.take() else {
            // A gathered body is let go with its file.
            return;
        };
        // Its data is deleted off this task: a drop cannot wait.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let why = HubError::BadRequest("the upload broke off".into());
                incoming.abandon(why).await;
            });
        }
    }
}
