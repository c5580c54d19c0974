//! Partial uploads, kept in `STATE/uploads/` until they are complete and verified.
//!
//! Each upload in progress has a `KEY.part` (the bytes so far) and a `KEY.meta` (what file they
//! belong to: size, the source's mtime, the uploader's address, the name). A new `Put` for the
//! same name, size and source mtime resumes from the bytes held. Only one upload per name runs at
//! once.
//!
//! Space is accounted for: an upload reserves what it announced at its start (so two uploads
//! that together exceed the disk cannot both start and both fail), and partials nobody is
//! sending are *abandoned*: kept for resume within a budget per address and in total, and given
//! up, oldest first, when an upload needs their space.

use crate::error::HubError;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use troca_net::limits::AddressKey;
use troca_proto::RemoteName;

/// How much abandoned partial data is kept for resume.
#[derive(Debug, Clone, Copy)]
pub struct PartialBudget {
    /// Abandoned partials of one address (an IPv6 /64).
    pub per_address: PartialLimit,
    /// Abandoned partials of everyone.
    pub total: PartialLimit,
}

/// A bound on abandoned partials: their bytes, and how many there are. The count matters on
/// its own: a client may begin uploads and send nothing, and each such partial still takes
/// entries in the state folder (or rows in the database) and time in every walk of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimit {
    pub bytes: u64,
    pub files: u64,
}

impl PartialLimit {
    /// No bound at all.
    pub const NONE: PartialLimit = PartialLimit {
        bytes: u64::MAX,
        files: u64::MAX,
    };
}

/// Free space the hub leaves on the disk of its folder (`--keep-free`): an upload that would
/// leave less is refused, so uploads cannot fill the disk under the hub's own records, or
/// under whatever else shares that disk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepFree {
    Bytes(u64),
    /// A share of the filesystem's size, in percent.
    Percent(f64),
}

impl Default for KeepFree {
    /// 1% of the disk, as Syncthing keeps by default.
    fn default() -> Self {
        KeepFree::Percent(1.0)
    }
}

impl KeepFree {
    /// The bytes to leave free on a filesystem of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            KeepFree::Bytes(n) => n,
            KeepFree::Percent(p) => (total as f64 * p.clamp(0.0, 100.0) / 100.0) as u64,
        }
    }

    /// The bytes an upload may still take, of `space`.
    pub fn usable(self, space: troca_net::durable::Space) -> u64 {
        space.available.saturating_sub(self.bytes(space.total))
    }
}

/// The abandoned partials (given oldest first) to give up so that those of each address (only
/// `only`'s, if given) are within `budget.per_address`, the oldest of it first, and then
/// everyone's within `budget.total` ([`fairly_beyond`]): their keys. One pass over them,
/// grouped by address, so that a sweep of many addresses' partials costs no more than a look
/// at one's.
pub fn beyond_budget(
    abandoned: &[PartialInfo],
    only: Option<AddressKey>,
    budget: PartialBudget,
) -> HashSet<String> {
    let mut by_address: HashMap<Option<AddressKey>, Vec<&PartialInfo>> = HashMap::new();
    for p in abandoned {
        let key = p.address.parse().ok().map(AddressKey::of);
        by_address.entry(key).or_default().push(p);
    }
    let mut gone = HashSet::new();
    for (key, mine) in &by_address {
        if key.is_some() && only.is_none_or(|o| Some(o) == *key) {
            gone.extend(oldest_beyond(mine, budget.per_address));
        }
    }
    let left = by_address
        .into_values()
        .map(|mine| {
            mine.into_iter()
                .filter(|p| !gone.contains(&p.key))
                .collect()
        })
        .collect();
    gone.extend(fairly_beyond(left, budget.total));
    gone
}

/// The first of `partials` (oldest first) to give up for the rest to be within `limit`.
fn oldest_beyond(partials: &[&PartialInfo], limit: PartialLimit) -> Vec<String> {
    let mut held: u64 = partials.iter().map(|p| p.held).sum();
    let mut count = partials.len() as u64;
    let mut gone = Vec::new();
    for p in partials {
        if held <= limit.bytes && count <= limit.files {
            break;
        }
        held -= p.held;
        count -= 1;
        gone.push(p.key.clone());
    }
    gone
}

/// The partials to give up, from `groups` (an address's each, oldest first), for all of them
/// to be within `limit`: each time the oldest of the address holding the most, by count while
/// there are too many, then by bytes. So a flood of partials from a few addresses costs those
/// addresses theirs, not an older one of someone who holds a few.
fn fairly_beyond(mut groups: Vec<VecDeque<&PartialInfo>>, limit: PartialLimit) -> Vec<String> {
    let mut left = Held {
        count: groups.iter().map(|g| g.len() as u64).sum(),
        bytes: groups.iter().flatten().map(|p| p.held).sum(),
    };
    let mut gone = Vec::new();
    let count = |g: &VecDeque<&PartialInfo>| g.len() as u64;
    let over_count = |h: &Held| h.count > limit.files;
    give_way(&mut groups, count, &mut left, over_count, &mut gone);
    let bytes = |g: &VecDeque<&PartialInfo>| g.iter().map(|p| p.held).sum();
    let over_bytes = |h: &Held| h.bytes > limit.bytes;
    give_way(&mut groups, bytes, &mut left, over_bytes, &mut gone);
    gone
}

/// What partials hold: how many, and their bytes.
struct Held {
    count: u64,
    bytes: u64,
}

/// Gives up partials while `over` what is `left`, each time the oldest of the group that
/// `measure` finds largest (of two as large, the one whose oldest is older), into `gone`.
fn give_way(
    groups: &mut [VecDeque<&PartialInfo>],
    measure: impl Fn(&VecDeque<&PartialInfo>) -> u64,
    left: &mut Held,
    over: impl Fn(&Held) -> bool,
    gone: &mut Vec<String>,
) {
    let rank = |g: &VecDeque<&PartialInfo>, i: usize| {
        let oldest = g.front().map_or(i64::MAX, |p| p.modified_ns);
        (measure(g), std::cmp::Reverse(oldest), i)
    };
    // Each group is in the heap once: only the one popped changes before it goes back.
    let mut heap: std::collections::BinaryHeap<_> =
        groups.iter().enumerate().map(|(i, g)| rank(g, i)).collect();
    while over(left) {
        let Some((_, _, i)) = heap.pop() else { break };
        let Some(p) = groups[i].pop_front() else {
            continue;
        };
        left.count -= 1;
        left.bytes -= p.held;
        gone.push(p.key.clone());
        heap.push(rank(&groups[i], i));
    }
}

/// The sub-folder of the uploads folder where batches of small files are written.
const SMALL_DIR: &str = "small";

/// The folder of partial uploads and the uploads running right now.
#[derive(Debug)]
pub struct Partials {
    dir: PathBuf,
    budget: PartialBudget,
    keep_free: KeepFree,
    active: Arc<Mutex<HashMap<String, Running>>>,
    last_budget_check: Mutex<Option<std::time::Instant>>,
}

/// An upload being sent: where its bytes go and how many it announced.
#[derive(Debug, Clone)]
struct Running {
    part: PathBuf,
    size: u64,
}

/// A partial upload as `troca partials` and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialInfo {
    /// The file name in the uploads folder, without `.part`.
    pub key: String,
    pub name: String,
    pub size: u64,
    /// Bytes held.
    pub held: u64,
    /// Who sent it (empty if unknown).
    pub address: String,
    /// Whether a client is sending it now.
    pub active: bool,
    /// When it last grew, ns since the epoch.
    pub modified_ns: i64,
}

/// An upload in progress: the open `.part` file, positioned at `offset`, with the hash of the
/// bytes before `offset` already computed.
#[derive(Debug)]
pub struct LocalPartial {
    pub name: RemoteName,
    pub size: u64,
    pub offset: u64,
    pub file: File,
    pub hasher: blake3::Hasher,
    pub part: PathBuf,
    /// The source file's modification time (0: unknown), which the stored file is given.
    pub modified_ns: i64,
    meta: PathBuf,
    /// Whether the data stays if the upload ends unfinished: only when a later `Put` could
    /// resume it (its source's mtime is known). An upload that cannot resume (a web PUT, say)
    /// leaves nothing behind, however it ends.
    keep: bool,
    /// Shared with the upload's writer, which may outlive this (the name stays claimed until
    /// both are done).
    claim: Arc<LocalClaim>,
}

impl LocalPartial {
    /// The claim on the name, for what must hold it as long as the upload (its writer).
    pub fn claim(&self) -> Arc<LocalClaim> {
        Arc::clone(&self.claim)
    }

    /// Whether the data stays if the upload ends unfinished.
    pub fn may_resume(&self) -> bool {
        self.keep
    }

    /// Deletes the partial data (after a failed verification or a full disk).
    pub fn discard(mut self) {
        self.keep = false;
    }

    /// Forgets the record once the data has been moved into place.
    pub fn completed(mut self) {
        let _ = std::fs::remove_file(&self.meta);
        self.keep = true;
    }
}

impl Drop for LocalPartial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.part);
            let _ = std::fs::remove_file(&self.meta);
        }
    }
}

/// Holds a name in the running set until dropped.
#[derive(Debug)]
pub struct LocalClaim {
    name: String,
    active: Arc<Mutex<HashMap<String, Running>>>,
}

impl Drop for LocalClaim {
    fn drop(&mut self) {
        self.active
            .lock()
            .expect("upload set poisoned")
            .remove(&self.name);
    }
}

/// What a `.meta` file says.
#[derive(Debug)]
struct Meta {
    size: u64,
    mtime_ns: i64,
    address: String,
    name: String,
}

impl Meta {
    fn text(&self) -> String {
        let Meta {
            size,
            mtime_ns,
            address,
            name,
        } = self;
        format!("v2\n{size}\n{mtime_ns}\n{address}\n{name}\n")
    }

    fn read(path: &Path) -> Option<Meta> {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let (address, name) = match *lines.first()? {
            "v1" => ("", *lines.get(3)?),
            "v2" => (*lines.get(3)?, *lines.get(4)?),
            _ => return None,
        };
        Some(Meta {
            size: lines.get(1)?.parse().ok()?,
            mtime_ns: lines.get(2)?.parse().ok()?,
            address: address.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl Partials {
    pub fn open(
        state: &Path,
        budget: PartialBudget,
        keep_free: KeepFree,
    ) -> Result<Self, HubError> {
        let dir = state.join("uploads");
        std::fs::create_dir_all(&dir)
            .map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
        // Small files of a batch cut short (the hub stopped mid-batch) were never under a name.
        let small = dir.join(SMALL_DIR);
        let _ = std::fs::remove_dir_all(&small);
        std::fs::create_dir_all(&small)
            .map_err(|e| HubError::io(format!("cannot create {}", small.display()), e))?;
        Ok(Self {
            dir,
            budget,
            keep_free,
            active: Arc::default(),
            last_budget_check: Mutex::default(),
        })
    }

    /// The partial data and record files of uploads to `name`.
    fn paths(&self, name: &RemoteName) -> (PathBuf, PathBuf) {
        let key = blake3::hash(name.as_str().as_bytes()).to_hex();
        let part = self.dir.join(format!("{}.part", &key[..32]));
        let meta = self.dir.join(format!("{}.meta", &key[..32]));
        (part, meta)
    }

    /// The bytes held of an upload of the very same file: same name, size and source mtime (an
    /// unknown mtime, 0, never matches, since then nothing says the file is the same).
    pub fn resumable(&self, name: &RemoteName, size: u64, source_mtime_ns: i64) -> u64 {
        let (part, meta) = self.paths(name);
        let same = source_mtime_ns != 0
            && Meta::read(&meta).is_some_and(|held| {
                (held.size, held.mtime_ns, held.name.as_str())
                    == (size, source_mtime_ns, name.as_str())
            });
        let held = std::fs::metadata(&part).map_or(0, |m| m.len());
        if same && held <= size {
            held
        } else {
            0
        }
    }

    /// Starts or resumes the upload of `size` bytes to `name` for a client at `from`. Blocking:
    /// may hash what is held, and give up abandoned partials to make room.
    pub fn begin(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
        from: Option<IpAddr>,
    ) -> Result<LocalPartial, HubError> {
        let (part, meta) = self.paths(&name);
        let address = from.map(|ip| ip.to_string()).unwrap_or_default();
        let record = Meta {
            size,
            mtime_ns: source_mtime_ns,
            address,
            name: name.to_string(),
        };
        let io = |what: &str, e| HubError::io(format!("{what} for {name}"), e);

        let offset = self.resumable(&name, size, source_mtime_ns);
        // LocalClaim the name and reserve the space in one step, so two uploads that together do not
        // fit cannot both start; check before creating anything, so a refusal leaves nothing.
        let claim = self.claim(&name, &part, size, size - offset)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(|e| io("cannot open upload file", e))?;
        if offset == 0 {
            file.set_len(0)
                .map_err(|e| io("cannot reset upload file", e))?;
            std::fs::write(&meta, record.text()).map_err(|e| io("cannot record upload", e))?;
        }
        let mut hasher = blake3::Hasher::new();
        if offset > 0 {
            troca_net::durable::hash_prefix(&mut file, offset, &mut hasher)
                .map_err(|e| io("cannot read partial upload", e))?;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| io("cannot seek upload file", e))?;
        if let Some(ip) = from {
            self.keep_within_now_and_then(ip);
        }
        Ok(LocalPartial {
            name,
            size,
            offset,
            file,
            hasher,
            part,
            modified_ns: source_mtime_ns,
            meta,
            keep: source_mtime_ns != 0,
            claim: Arc::new(claim),
        })
    }

    /// Keeps the abandoned partials of `ip`'s address within their budget. Looking at every
    /// partial costs a directory walk: at most once a second.
    fn keep_within_now_and_then(&self, ip: IpAddr) {
        let mut last = self
            .last_budget_check
            .lock()
            .expect("budget clock poisoned");
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *last = Some(std::time::Instant::now());
            drop(last);
            self.keep_within(Some(AddressKey::of(ip)));
        }
    }

    /// Where the files of a batch of small uploads are written before they are renamed.
    pub fn small_dir(&self) -> PathBuf {
        self.dir.join(SMALL_DIR)
    }

    /// Claims the names of a batch of small uploads and reserves their `bytes` together: each
    /// name is refused if another upload holds it; all are refused if the space is short.
    pub fn claim_batch(
        &self,
        names: &[&RemoteName],
        bytes: u64,
    ) -> Vec<Result<LocalClaim, HubError>> {
        let mut active = self.active.lock().expect("upload set poisoned");
        let available = self.available(&active);
        if available < bytes {
            let e = || HubError::NoSpace {
                needed: bytes,
                available,
            };
            return names.iter().map(|_| Err(e())).collect();
        }
        names
            .iter()
            .map(|name| {
                if active.contains_key(name.as_str()) {
                    return Err(HubError::UploadInProgress(name.to_string()));
                }
                active.insert(
                    name.to_string(),
                    Running {
                        part: PathBuf::new(),
                        size: 0,
                    },
                );
                Ok(LocalClaim {
                    name: name.to_string(),
                    active: Arc::clone(&self.active),
                })
            })
            .collect()
    }

    /// Claims `name` for one upload and reserves `needed` bytes for it, giving up abandoned
    /// partials (oldest first) if the disk would not hold it otherwise.
    fn claim(
        &self,
        name: &RemoteName,
        part: &Path,
        size: u64,
        needed: u64,
    ) -> Result<LocalClaim, HubError> {
        let mut active = self.active.lock().expect("upload set poisoned");
        if active.contains_key(name.as_str()) {
            return Err(HubError::UploadInProgress(name.to_string()));
        }
        let mut available = self.available(&active);
        if available < needed {
            let mut abandoned = self.abandoned(&active);
            abandoned.retain(|p| p.key != key_of(part));
            // Only if giving them all up would make room: an upload too large for the disk
            // anyway must not cost everyone their partials before it is refused.
            let could_free: u64 = abandoned.iter().map(|p| p.held).sum();
            if available.saturating_add(could_free) < needed {
                abandoned.clear();
            }
            for p in abandoned {
                if available >= needed {
                    break;
                }
                self.remove_key(&p.key);
                tracing::info!(name = %p.name, bytes = p.held, "gave an abandoned partial upload's space to a new upload");
                available = self.available(&active);
            }
        }
        if available < needed {
            return Err(HubError::NoSpace { needed, available });
        }
        active.insert(
            name.to_string(),
            Running {
                part: part.to_path_buf(),
                size,
            },
        );
        Ok(LocalClaim {
            name: name.to_string(),
            active: Arc::clone(&self.active),
        })
    }

    /// Bytes an upload may still take on this disk: its free space less what `--keep-free`
    /// leaves and what the uploads running now announced and have not written yet.
    pub fn room(&self) -> u64 {
        let active = self.active.lock().expect("upload set poisoned");
        self.available(&active)
    }

    fn available(&self, active: &HashMap<String, Running>) -> u64 {
        // A small file's claim promises nothing (its bytes are already in memory): only
        // uploads with a size are looked at, not every file of the batches in flight.
        let promised: u64 = active
            .values()
            .filter(|r| r.size > 0)
            .map(|r| {
                r.size
                    .saturating_sub(std::fs::metadata(&r.part).map_or(0, |m| m.len()))
            })
            .sum();
        troca_net::durable::space(&self.dir)
            .map_or(u64::MAX, |s| self.keep_free.usable(s))
            .saturating_sub(promised)
    }

    /// Every partial upload, oldest first.
    pub fn list(&self) -> Vec<PartialInfo> {
        let active = self.active.lock().expect("upload set poisoned");
        self.all(&active)
    }

    fn all(&self, active: &HashMap<String, Running>) -> Vec<PartialInfo> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let running: std::collections::HashSet<&Path> =
            active.values().map(|r| r.part.as_path()).collect();
        let mut out: Vec<PartialInfo> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .map(|e| {
                let path = e.path();
                let meta = Meta::read(&path.with_extension("meta"));
                let stat = e.metadata().ok();
                PartialInfo {
                    key: key_of(&path),
                    name: meta.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
                    size: meta.as_ref().map_or(0, |m| m.size),
                    held: stat.as_ref().map_or(0, std::fs::Metadata::len),
                    address: meta.map(|m| m.address).unwrap_or_default(),
                    active: running.contains(path.as_path()),
                    modified_ns: stat.map_or(0, |m| troca_net::transfer::mtime_ns(&m)),
                }
            })
            .collect();
        out.sort_by_key(|p| p.modified_ns);
        out
    }

    /// Partials nobody is sending now, oldest first.
    fn abandoned(&self, active: &HashMap<String, Running>) -> Vec<PartialInfo> {
        let mut all = self.all(active);
        all.retain(|p| !p.active);
        all
    }

    /// Removes the partial with `key` (as [`Partials::list`] gives it) unless it is being sent.
    /// Returns whether it was there to remove.
    pub fn remove(&self, key: &str) -> Result<bool, HubError> {
        let active = self.active.lock().expect("upload set poisoned");
        match self.all(&active).into_iter().find(|p| p.key == key) {
            Some(p) if p.active => Err(HubError::UploadInProgress(p.name)),
            Some(_) => {
                self.remove_key(key);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn remove_key(&self, key: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.part")));
        let _ = std::fs::remove_file(self.dir.join(format!("{key}.meta")));
    }

    /// Gives up abandoned partials, oldest first, until those of `only`'s address (or of each
    /// address, for `None`), and then everyone's, are within their budgets. Returns how many
    /// were removed.
    fn keep_within(&self, only: Option<AddressKey>) -> usize {
        let active = self.active.lock().expect("upload set poisoned");
        let abandoned = self.abandoned(&active);
        let gone = beyond_budget(&abandoned, only, self.budget);
        for key in &gone {
            self.remove_key(key);
        }
        gone.len()
    }

    /// Deletes abandoned partials untouched for longer than `ttl`, then the oldest abandoned
    /// ones beyond the budgets. Returns how many were removed. Blocking.
    pub fn clean(&self, ttl: Duration) -> usize {
        let now = SystemTime::now();
        let mut removed = 0;
        let stale: Vec<PartialInfo> = {
            let active = self.active.lock().expect("upload set poisoned");
            self.abandoned(&active)
        };
        for p in stale {
            let at = std::time::UNIX_EPOCH + Duration::from_nanos(p.modified_ns.max(0) as u64);
            if now.duration_since(at).is_ok_and(|age| age > ttl) {
                self.remove_key(&p.key);
                removed += 1;
            }
        }
        removed + self.keep_within(None)
    }
}

/// The key of a partial: its file name without the extension.
fn key_of(part: &Path) -> String {
    part.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const BUDGET: PartialBudget = PartialBudget {
        per_address: PartialLimit::NONE,
        total: PartialLimit::NONE,
    };

    fn name(s: &str) -> RemoteName {
        RemoteName::parse(s).unwrap()
    }

    #[test]
    fn the_space_to_keep_free_is_taken_off_what_uploads_may_use() {
        use troca_net::durable::Space;
        let disk = Space {
            available: 300,
            total: 1000,
        };
        assert_eq!(KeepFree::Bytes(0).usable(disk), 300);
        assert_eq!(KeepFree::Bytes(100).usable(disk), 200);
        assert_eq!(KeepFree::Bytes(400).usable(disk), 0);
        assert_eq!(KeepFree::Percent(1.0).usable(disk), 290);
        assert_eq!(KeepFree::Percent(100.0).usable(disk), 0);
    }

    /// With the whole disk to keep free, no upload is claimed, of a batch or alone; with none,
    /// both are.
    #[test]
    fn an_upload_that_would_leave_less_than_the_space_to_keep_free_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let full = Partials::open(dir.path(), BUDGET, KeepFree::Percent(100.0)).unwrap();
        let n = name("a.txt");
        let refused = full.claim_batch(&[&n], 1);
        assert!(matches!(
            refused[0],
            Err(HubError::NoSpace {
                needed: 1,
                available: 0
            })
        ));
        let part = dir.path().join("x.part");
        assert!(matches!(
            full.claim(&n, &part, 1, 1),
            Err(HubError::NoSpace { .. })
        ));
        let open = Partials::open(dir.path(), BUDGET, KeepFree::Bytes(0)).unwrap();
        assert!(open.claim_batch(&[&n], 1)[0].is_ok());
        assert!(open.claim(&name("b.txt"), &part, 1, 1).is_ok());
    }

    #[test]
    fn a_second_upload_of_the_same_name_is_busy_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path(), BUDGET, KeepFree::Bytes(0)).unwrap();
        let first = p.begin(name("a"), 10, 1, None).unwrap();
        assert!(matches!(
            p.begin(name("a"), 10, 1, None),
            Err(HubError::UploadInProgress(_))
        ));
        drop(first);
        p.begin(name("a"), 10, 1, None).unwrap();
    }

    #[test]
    fn only_the_same_file_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path(), BUDGET, KeepFree::Bytes(0)).unwrap();
        let mut up = p.begin(name("a"), 10, 7, None).unwrap();
        up.file.write_all(b"01234").unwrap();
        drop(up);
        let up = p.begin(name("a"), 10, 7, None).unwrap();
        assert_eq!(up.offset, 5);
        let mut expect = blake3::Hasher::new();
        expect.update(b"01234");
        assert_eq!(up.hasher.finalize(), expect.finalize());
        drop(up);
        // Another mtime: another file; start over.
        assert_eq!(p.begin(name("a"), 10, 8, None).unwrap().offset, 0);
        // Unknown mtime never resumes.
        assert_eq!(p.begin(name("a"), 10, 0, None).unwrap().offset, 0);
    }

    #[test]
    fn an_addresss_abandoned_partials_are_kept_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let budget = PartialBudget {
            per_address: PartialLimit {
                bytes: 10,
                files: u64::MAX,
            },
            total: PartialLimit::NONE,
        };
        let p = Partials::open(dir.path(), budget, KeepFree::Bytes(0)).unwrap();
        let from = Some("10.0.0.1".parse().unwrap());
        for n in ["a", "b", "c"] {
            let mut up = p.begin(name(n), 100, 1, from).unwrap();
            up.file.write_all(&[0; 6]).unwrap();
            drop(up);
            // mtimes come from a coarse clock: keep the three apart.
            std::thread::sleep(Duration::from_millis(20));
        }
        // Another address's partial is not this one's to pay for.
        drop(
            p.begin(name("z"), 100, 1, Some("10.0.0.2".parse().unwrap()))
                .unwrap(),
        );
        p.clean(Duration::from_secs(3600));
        let mut left: Vec<String> = p.list().into_iter().map(|i| i.name).collect();
        left.sort();
        assert_eq!(
            left,
            ["c", "z"],
            "the oldest go until 10 bytes or fewer are held"
        );
    }

    /// Uploads begun and left with nothing sent hold no bytes, yet each is a partial: they are
    /// bounded by their count, per address and in all, the oldest going first.
    #[test]
    fn empty_partials_are_kept_within_their_count() {
        let dir = tempfile::tempdir().unwrap();
        let budget = PartialBudget {
            per_address: PartialLimit {
                bytes: u64::MAX,
                files: 2,
            },
            total: PartialLimit {
                bytes: u64::MAX,
                files: 3,
            },
        };
        let p = Partials::open(dir.path(), budget, KeepFree::Bytes(0)).unwrap();
        for (n, ip) in [
            ("a", "10.0.0.1"),
            ("b", "10.0.0.1"),
            ("c", "10.0.0.1"),
            ("x", "10.0.0.2"),
            ("y", "10.0.0.2"),
        ] {
            drop(p.begin(name(n), 100, 1, Some(ip.parse().unwrap())).unwrap());
            // mtimes come from a coarse clock: keep them apart.
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(p.clean(Duration::from_secs(3600)), 2);
        let left: Vec<String> = p.list().into_iter().map(|i| i.name).collect();
        assert_eq!(
            left,
            ["c", "x", "y"],
            "the oldest of 10.0.0.1 goes for its own count; then, of two addresses holding as \
             many, the one whose oldest is older gives it up for the total"
        );
    }

    /// Over the total, the address holding the most gives up its oldest first: a flood from
    /// one address does not cost someone else their older upload, by count or by bytes.
    #[test]
    fn over_the_total_the_address_holding_the_most_gives_way() {
        for (total, sizes) in [
            (
                PartialLimit {
                    bytes: u64::MAX,
                    files: 3,
                },
                0,
            ),
            (
                PartialLimit {
                    bytes: 30,
                    files: u64::MAX,
                },
                10,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let budget = PartialBudget {
                per_address: PartialLimit::NONE,
                total,
            };
            let p = Partials::open(dir.path(), budget, KeepFree::Bytes(0)).unwrap();
            for (n, ip) in [
                ("mine", "10.0.0.1"),
                ("f1", "10.0.0.2"),
                ("f2", "10.0.0.2"),
                ("f3", "10.0.0.2"),
            ] {
                let mut up = p.begin(name(n), 100, 1, Some(ip.parse().unwrap())).unwrap();
                up.file.write_all(&vec![0; sizes]).unwrap();
                drop(up);
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(p.clean(Duration::from_secs(3600)), 1, "{total:?}");
            let left: Vec<String> = p.list().into_iter().map(|i| i.name).collect();
            assert_eq!(left, ["mine", "f2", "f3"], "{total:?}");
        }
    }

    #[test]
    fn clean_removes_only_old_idle_partials() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partials::open(dir.path(), BUDGET, KeepFree::Bytes(0)).unwrap();
        drop(p.begin(name("old"), 1, 1, None).unwrap());
        // mtimes come from a coarse clock; make sure "old" is measurably in the past.
        std::thread::sleep(Duration::from_millis(30));
        let busy = p.begin(name("busy"), 1, 1, None).unwrap();
        assert_eq!(p.clean(Duration::from_secs(3600)), 0);
        assert_eq!(p.clean(Duration::ZERO), 1);
        assert!(busy.part.exists());
    }
}
