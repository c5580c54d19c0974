//! Where shared files are kept, behind one trait: [`Store`]. The hub's service holds a
//! `dyn Store` and never reaches the files another way, so a backend is an addition: today
//! [`LocalStore`] (a folder on this machine, reached through descriptors beneath its root).
//!
//! The methods block (a disk, or a network round trip): the service calls them on tokio's
//! blocking pool. Names arrive already checked ([`RemoteName`]); the policy (who may replace or
//! delete what) is the service's, so a store only answers what is there and does what it is
//! told, atomically: an upload appears under its name whole and durable, or not at all.

mod local;
pub mod object;
pub mod share;
mod small;
pub mod uploads;

pub use crate::version::{Retimed, Version};
pub use local::LocalStore;
pub use object::{ObjectBody, ObjectStore, S3Address};
pub use uploads::{KeepFree, LocalClaim, LocalPartial, PartialBudget, PartialInfo, PartialLimit};

use crate::error::HubError;
use std::fs::File;
use std::net::IpAddr;
use std::time::Duration;
use troca_proto::msg::Entry;
use troca_proto::{Hash, RemoteName};

/// How many files a store holds, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

/// How many entries a page of a listing holds at most: what a store reads, and the hub holds,
/// for one page whatever the share's size.
pub const LIST_PAGE: usize = 8192;

/// A search: files and folders (`NAME/`) whose own names contain `text` (any case), or whose
/// whole names do when `text` holds a `/`; the first `limit` by name.
#[derive(Debug, Clone, Copy)]
pub struct FindQuery<'a> {
    pub text: &'a str,
    /// Only this folder (`NAME/` included) and what is beneath it, for a token held to it: the
    /// rest of the share is not looked at, so the limit counts only what the caller may see.
    pub within: Option<&'a str>,
    pub limit: usize,
    /// The most names the search looks at (`--search-names`): past them it answers what it
    /// found, marked cut.
    pub budget: u64,
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    /// The first matches by name, at most the query's `limit`.
    pub entries: Vec<Entry>,
    /// Whether names may have been left out: more matched than the limit, or the search
    /// stopped at its budget before it had looked at every name.
    pub cut: bool,
}

/// One page of a listing: which names, and where the page starts.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    /// Names starting with this (`""`: every name).
    pub prefix: &'a str,
    /// Only names after this one (the `next` of the page before).
    pub after: Option<&'a str>,
    /// At most this many entries (at least one is asked for).
    pub limit: usize,
    /// Only what is directly in folder `prefix` (`""` or ending in `/`): its files, and every
    /// folder in it as `NAME/`, none entered. Costs what the folder holds, not what is beneath.
    pub children: bool,
}

impl<'a> ListQuery<'a> {
    /// The first page of the names starting with `prefix`.
    pub fn first(prefix: &'a str) -> Self {
        Self::after(prefix, None)
    }

    /// The page of the names starting with `prefix` that comes after name `after` (`None`: the
    /// first page).
    pub fn after(prefix: &'a str, after: Option<&'a str>) -> Self {
        Self {
            prefix,
            after,
            limit: LIST_PAGE,
            children: false,
        }
    }

    /// [`ListQuery::after`] of only what is directly in folder `prefix`.
    pub fn children_after(prefix: &'a str, after: Option<&'a str>) -> Self {
        Self {
            children: true,
            ..Self::after(prefix, after)
        }
    }
}

/// A page of a listing, in byte order of the names (a folder as `NAME/`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<Entry>,
    /// The last name of this page, to ask for the next one after it; `None` when this page
    /// ends the listing.
    pub next: Option<String>,
}

impl ListPage {
    /// Ends a page from up to `limit + 1` entries collected in order: the extra one only says
    /// that there are more.
    pub fn from_collected(mut entries: Vec<Entry>, limit: usize) -> Self {
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more
            .then(|| entries.last().map(|e| e.name.clone()))
            .flatten();
        Self { entries, next }
    }
}

/// What a name holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Folder,
    /// A link, a device, a socket: not served, but there (so not free for an upload).
    Other,
}

/// A file opened for reading, as it was when opened.
#[derive(Debug)]
pub struct StoredFile {
    pub version: Version,
    pub body: Body,
    /// The file's hash, when the store knows it (an object store always does).
    pub hash: Option<Hash>,
}

/// How a stored file's bytes are read.
#[derive(Debug)]
pub enum Body {
    /// An open file: read with `pread` (page-cache reads are cheap enough for the connection's
    /// own task) or sent with `sendfile`, the zero-copy path.
    File(File),
    /// An immutable object, streamed with ranged GETs; its hash is known.
    Object(object::ObjectBody),
}

/// An upload in progress, as the store that began it keeps it.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // One per upload, moved a few times.
pub enum PartialUpload {
    Local(LocalPartial),
    Object(object::ObjectPartial),
    /// A small upload held in memory until whole, then stored in a batch
    /// ([`Store::store_batch`]); no store has begun anything for it but the claim.
    Memory(MemoryUpload),
}

impl PartialUpload {
    pub fn name(&self) -> &RemoteName {
        match self {
            PartialUpload::Local(u) => &u.name,
            PartialUpload::Object(u) => &u.name,
            PartialUpload::Memory(u) => &u.name,
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            PartialUpload::Local(u) => u.size,
            PartialUpload::Object(u) => u.size,
            PartialUpload::Memory(u) => u.size,
        }
    }

    /// Where the bytes still to come start.
    pub fn offset(&self) -> u64 {
        match self {
            PartialUpload::Local(u) => u.offset,
            PartialUpload::Object(u) => u.offset,
            PartialUpload::Memory(_) => 0,
        }
    }

    /// Whether what it stored stays, if it ends unfinished, for a later upload to resume.
    pub fn may_resume(&self) -> bool {
        match self {
            PartialUpload::Local(u) => u.may_resume(),
            PartialUpload::Object(u) => u.may_resume(),
            PartialUpload::Memory(_) => false,
        }
    }

    /// Gives the stored file the source's time `ns` (not 0) without making the upload
    /// resumable: its time was not the key it began with.
    pub fn give_time(&mut self, ns: i64) {
        match self {
            PartialUpload::Local(u) => u.modified_ns = ns,
            PartialUpload::Object(u) => u.give_time(ns),
            PartialUpload::Memory(u) => u.modified_ns = ns,
        }
    }

    /// Gives the upload up, deleting what it stored (after a failed verification, say).
    pub fn discard(self) {
        match self {
            PartialUpload::Local(u) => u.discard(),
            PartialUpload::Object(u) => u.discard(),
            PartialUpload::Memory(_) => {}
        }
    }
}

/// The largest upload held in memory until whole (see `transfer.rs`).
pub const MEMORY_UPLOAD_MAX: u64 = 1024 * 1024;

/// A small upload gathered in memory.
#[derive(Debug)]
pub struct MemoryUpload {
    pub name: RemoteName,
    pub size: u64,
    /// Every byte, once the writer has finished.
    pub data: Vec<u8>,
    /// Holds the name against other uploads until it is stored.
    pub claim: Claim,
    /// Its share of `--batch-memory`, given back when it is stored or dropped.
    pub memory: tokio::sync::OwnedSemaphorePermit,
    /// The source file's modification time (0: unknown).
    pub modified_ns: i64,
}

/// A name held for one upload until dropped.
#[derive(Debug)]
pub enum Claim {
    Local(LocalClaim),
    Object(object::NameClaim),
}

impl StoredFile {
    /// Reads at `pos`, as `pread` does (0 at the end).
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
        match &self.body {
            Body::File(f) => std::os::unix::fs::FileExt::read_at(f, buf, pos),
            Body::Object(o) => o.read_at(buf, pos),
        }
    }

    /// Fills `buf` from `pos`, or fails if the file ends first.
    pub fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        match &self.body {
            Body::File(f) => std::os::unix::fs::FileExt::read_exact_at(f, buf, pos),
            Body::Object(o) => o.read_exact_at(buf, pos),
        }
    }

    /// Whether the file is still the version it was opened at (nobody wrote to it since), so a
    /// hash computed from its bytes may be remembered for that version.
    pub fn unchanged(&self) -> bool {
        match &self.body {
            Body::File(f) => f
                .metadata()
                .is_ok_and(|m| local::version_of(&m) == self.version),
            // Objects never change.
            Body::Object(_) => true,
        }
    }
}

/// A small file of a batch, checked and hashed by the service, to be stored with the others.
#[derive(Debug)]
pub struct SmallFile {
    pub name: RemoteName,
    pub data: Vec<u8>,
    pub hash: Hash,
    /// The source file's modification time, which the stored file is given (0: unknown, the
    /// time it is stored).
    pub modified_ns: i64,
    pub replace: bool,
    /// Holds the name against other uploads until the batch is stored.
    pub claim: Claim,
}

/// Where and how [`Store::copy_file`] puts a copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyTo<'a> {
    pub name: &'a RemoteName,
    /// Over a file there (never over a folder).
    pub replace: bool,
    /// The address whose partial-upload budget holds the copy while it is written.
    pub from: Option<IpAddr>,
    /// The source's hash, when known: a copy that does not match is not kept.
    pub expect: Option<Hash>,
    /// Where the copy says how far it has come, and hears that it should stop.
    pub steps: &'a CopySteps,
}

/// A running copy's bytes so far, and whether it should stop (between two steps, leaving
/// nothing behind).
#[derive(Debug, Default)]
pub struct CopySteps {
    bytes: std::sync::atomic::AtomicU64,
    stopped: std::sync::atomic::AtomicBool,
}

impl CopySteps {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn add(&self, bytes: u64) {
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A file [copied](Store::copy_file) within the store.
#[derive(Debug, Clone, Copy)]
pub struct CopiedFile {
    pub version: Version,
    pub hash: Hash,
}

/// What a name holds, as a store found it in one look: its kind, and the version of the file
/// there on a store whose files may be [changed outside](Store::changed_outside) the hub (what
/// an owner's rights are checked against; `None` on any other store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub kind: Option<Kind>,
    pub version: Option<Version>,
}

/// Asked of the service for each file of a batch, with what the name holds now: may it go
/// there? (`Err` refuses that file alone.)
pub type PlaceCheck<'a> = &'a dyn Fn(&RemoteName, Seen, bool) -> Result<(), HubError>;

/// Shared files: listing, reading, atomic verified uploads, and changes to names.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Where the files are, for the operator's log (`/srv/share`).
    fn location(&self) -> String;

    /// Whether the store can serve now, within `within` (a load balancer's health check): the
    /// shared folder still there; an object store answering. Blocking.
    fn health(&self, within: std::time::Duration) -> Result<(), HubError>;

    /// What a walk of at most `budget` entries finds that cannot be served (`None`: nothing
    /// can be there, as in an object store, whose names all came through the hub).
    fn unserved(&self, _budget: u64) -> Option<share::Unserved> {
        None
    }

    /// A page of the files whose names start with `query.prefix` (`blake3` unset), and of the
    /// folders among them that hold none, as `NAME/`; in byte order of those names, so a
    /// listing goes on after the last name of a page whatever changed in between.
    fn list(&self, query: ListQuery<'_>) -> Result<ListPage, HubError>;
    /// How many files there are beneath `within` (`""`: the whole share; else a folder's
    /// name ending in `/`) and their bytes in all, leaving out those `hidden` covers (a page
    /// at a time).
    fn totals(&self, hidden: &crate::hidden::Hidden, within: &str) -> Result<Totals, HubError> {
        walk_totals(self, hidden, within)
    }
    /// The first files and folders by name that `query` asks for.
    fn find(&self, query: FindQuery<'_>) -> Result<Matches, HubError>;
    /// Calls `each` with every file beneath folder `folder`, until it fails: for a policy
    /// check before the folder is moved or deleted as a whole. In constant memory, whatever
    /// the folder holds.
    fn each_file_beneath(
        &self,
        folder: &RemoteName,
        each: &mut dyn FnMut(&str) -> Result<(), HubError>,
    ) -> Result<(), HubError>;
    /// What `name` holds now (`None`: nothing, or a folder on the way is missing).
    fn kind(&self, name: &RemoteName) -> Result<Option<Kind>, HubError>;
    /// Whether other programs may change the files (a folder on this machine, not an object
    /// store whose names all come through hubs): then an owner's rights hold only for the
    /// version of a file its upload left, and the hub sweeps records of files gone.
    fn changed_outside(&self) -> bool {
        false
    }
    /// What `name` holds now, with the version of a file on a store whose files may be
    /// [changed outside](Store::changed_outside) the hub.
    fn seen(&self, name: &RemoteName) -> Result<Seen, HubError> {
        Ok(Seen {
            kind: self.kind(name)?,
            version: None,
        })
    }
    /// [`Store::seen`] of each of `names`, in order; one look at each folder where the store
    /// can (so names in order, a folder's together, cost a look each).
    fn seen_each(&self, names: &[RemoteName]) -> Vec<Result<Seen, HubError>> {
        names.iter().map(|n| self.seen(n)).collect()
    }
    /// Whether names may be links ([`Kind::Other`]), so that [`Store::kind`] is worth asking
    /// before a delete or a move walks a folder.
    fn has_links(&self) -> bool {
        false
    }
    /// Opens `name` for reading. `NotAFile` when it is a folder; `NotFound` when nothing is
    /// there, for anything outside the share and for what is neither a file nor a folder.
    fn open(&self, name: &RemoteName) -> Result<StoredFile, HubError>;

    /// Starts, or resumes when the very same source file was being sent, an upload to `name`,
    /// reserving its space; one upload per name at a time.
    fn begin_upload(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
        from: Option<IpAddr>,
    ) -> Result<PartialUpload, HubError>;
    /// How many bytes of this very file (name, size, source time) an interrupted upload
    /// holds: where a new upload of it would resume. 0 if none, or if the time is unknown.
    fn resumable(
        &self,
        name: &RemoteName,
        size: u64,
        source_mtime_ns: i64,
    ) -> Result<u64, HubError>;
    /// Makes a complete upload durable and puts it under its name (not over an existing file
    /// unless `replace`, never over a folder). On a refusal the partial data is kept when the
    /// upload could resume, and deleted when it could not.
    fn commit(&self, upload: PartialUpload, replace: bool) -> Result<Version, HubError>;
    /// Puts a copy of `source` where `to` says, durable before it has its name, with the
    /// source's modification time. Returns the copy's version and the hash of what was
    /// stored (read back from the copy where bytes are copied, and checked against the
    /// source's when it is known, before the copy is named). An object store copies nothing:
    /// a new name refers to the same object.
    fn copy_file(&self, source: &StoredFile, to: CopyTo<'_>) -> Result<CopiedFile, HubError>;
    /// [`Store::copy_file`] for several files: one answer each, in order (an object store
    /// gives all the new names in one change).
    fn copy_batch(
        &self,
        copies: &[(&StoredFile, CopyTo<'_>)],
    ) -> Vec<Result<CopiedFile, HubError>> {
        copies
            .iter()
            .map(|(f, to)| self.copy_file(f, *to))
            .collect()
    }
    /// Whether [`Store::copy_file`] moves no bytes (a new name for the same object), so a
    /// folder's small files are best copied one by one rather than read and stored again in
    /// batches.
    fn copies_by_name(&self) -> bool {
        false
    }
    /// Whether each read is a round trip to another machine (an object store), so the reads
    /// of a run of small files are best made together.
    fn reads_far(&self) -> bool {
        false
    }
    /// Claims the names of a batch of small files and reserves their bytes together.
    fn claim_batch(&self, names: &[&RemoteName], bytes: u64) -> Vec<Result<Claim, HubError>>;
    /// Stores a batch of small files, made durable together; `check` decides for each whether
    /// it may go where it is going. One answer per file, in order.
    fn store_batch(
        &self,
        files: Vec<SmallFile>,
        check: PlaceCheck<'_>,
    ) -> Vec<Result<Version, HubError>>;

    /// Deletes file `name` (a link itself, never what it points to).
    fn remove(&self, name: &RemoteName) -> Result<(), HubError>;
    /// Deletes folder `folder` and everything in it; returns how many files went.
    fn remove_tree(&self, folder: &RemoteName) -> Result<u64, HubError>;
    /// Moves a file or a folder; a file at `to` is replaced only if `replace` (a folder never).
    fn rename(&self, from: &RemoteName, to: &RemoteName, replace: bool) -> Result<(), HubError>;
    /// Bytes uploads may still take in all, when the store can tell (a local disk, less what
    /// `--keep-free` leaves and uploads running now are promised).
    fn room(&self) -> Option<u64> {
        None
    }
    /// Gives file `name` the modification time `modified_ns` (a WebDAV client setting it):
    /// `NotAFile` for a folder, whose time no store keeps.
    fn set_modified(&self, name: &RemoteName, modified_ns: i64) -> Result<Retimed, HubError>;
    /// Creates folder `name` (and those on the way); `false` if it was there.
    fn make_folder(&self, name: &RemoteName) -> Result<bool, HubError>;

    /// The partial uploads held, oldest first.
    fn partials(&self) -> Vec<PartialInfo>;
    /// Deletes partial upload `key` unless it is being sent; `false` if there is none.
    fn remove_partial(&self, key: &str) -> Result<bool, HubError>;
    /// Deletes partial uploads untouched for `ttl`; returns how many.
    fn clean_partials(&self, ttl: Duration) -> usize;
}

/// Parses the name a request gave.
pub(crate) fn parse(name: &str) -> Result<RemoteName, HubError> {
    RemoteName::parse(name).map_err(|reason| HubError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// The files and bytes a walk of every page of the listing finds, leaving out what `hidden`
/// covers: [`Store::totals`] for a store that cannot count otherwise.
pub fn walk_totals<S: Store + ?Sized>(
    store: &S,
    hidden: &crate::hidden::Hidden,
    within: &str,
) -> Result<Totals, HubError> {
    let mut totals = Totals::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.list(ListQuery::after(within, after.as_deref()))?;
        let files = page.entries.iter().filter(|e| !e.name.ends_with('/'));
        for e in files.filter(|e| !hidden.covers(&e.name)) {
            totals.files += 1;
            totals.bytes += e.size;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(totals),
        }
    }
}
