//! Putting finished files in place durably: fsync the data, move it under its real name without
//! clobbering anything (unless asked), fsync the folder so the name survives a crash.
//!
//! Both the hub (uploads) and the client (downloads) finish transfers this way, so a reader never
//! sees a truncated file under a real name.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::iobuf::{IoBuf, ALIGN};

/// Moves `from` to `to`. With `replace` false it fails with `AlreadyExists` rather than replace an
/// existing `to`, atomically (`renameat2(RENAME_NOREPLACE)`, or a hard link where that is not
/// supported).
pub fn place(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    rename(from, to, replace)?;
    sync_parent(to)
}

/// Batches of at least this many items are cut in runs for [`in_parallel`].
const PARALLEL_MIN: usize = 64;
/// The most threads one batch uses.
const BATCH_THREADS: usize = 4;

/// `f` applied to each of `items`, in order; a large batch (of files to create or name) is cut
/// in runs of neighbours, each on its own thread. Creating and naming many small files is
/// mostly the kernel's work, which runs on any core; the files of one folder mostly stay on
/// one thread. Blocking: call it off the async runtime's workers.
pub fn in_parallel<T: Send, R: Send>(mut items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(BATCH_THREADS));
    if threads < 2 || items.len() < PARALLEL_MIN {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut runs = Vec::with_capacity(threads);
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        runs.push(std::mem::replace(&mut items, rest));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let threads: Vec<_> = runs
            .into_iter()
            .map(|run| scope.spawn(move || run.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A new file without a name in the folder `dir` (`O_TMPFILE`), for [`link_unnamed`] to name
/// once it is durable: nothing half-written is ever seen, and one that is dropped vanishes.
/// Fails where the filesystem has no such files (write under a temporary name instead).
pub fn create_unnamed(dir: &Path) -> io::Result<File> {
    create_unnamed_at(rustix::fs::CWD, dir)
}

/// [`create_unnamed`] in the folder `path` relative to `dir` (the hub's folders are reached
/// through descriptors beneath its root).
pub fn create_unnamed_at(dir: impl AsFd, path: impl rustix::path::Arg) -> io::Result<File> {
    if !unnamed_files_link() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    open_unnamed(dir, path)
}

/// Whether this process can give a file without a name a name ([`link_unnamed`]): by its
/// descriptor, or through `/proc`. Asked once, in the temporary folder; where that folder has
/// no such files, each filesystem answers when one is created.
pub fn unnamed_files_link() -> bool {
    static LINKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LINKS.get_or_init(|| {
        let dir = std::env::temp_dir();
        let Ok(file) = open_unnamed(rustix::fs::CWD, &dir) else {
            return true;
        };
        let probe = dir.join(format!(".troca-link-probe-{}", std::process::id()));
        let linked = link_unnamed(&file, &probe);
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = &linked {
            tracing::debug!(error = %e, "files without a name cannot be linked; using temporary names");
        }
        linked.is_ok()
    })
}

#[cfg(target_os = "linux")]
fn open_unnamed(dir: impl AsFd, path: impl rustix::path::Arg) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    // As `File::create`: what the umask leaves of 0666.
    let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, path, flags, Mode::from(0o666))?;
    Ok(File::from(fd))
}

#[cfg(not(target_os = "linux"))]
fn open_unnamed(_dir: impl AsFd, _path: impl rustix::path::Arg) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Names `file`, from [`create_unnamed`] in `to`'s folder, `to`; refuses a taken name
/// (`AlreadyExists`). The folder is not fsync'd.
pub fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    link_unnamed_at(file, rustix::fs::CWD, to)
}

/// [`link_unnamed`] to the name `to` relative to `dir`.
#[cfg(target_os = "linux")]
pub fn link_unnamed_at(
    file: &File,
    dir: impl AsFd,
    to: impl rustix::path::Arg + Copy,
) -> io::Result<()> {
    use rustix::fs::{linkat, AtFlags, CWD};
    use std::os::fd::AsRawFd;
    match linkat(file, "", &dir, to, AtFlags::EMPTY_PATH) {
        // Without CAP_DAC_READ_SEARCH (kernels before 6.10), by the descriptor's path.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM) => {
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            Ok(linkat(
                CWD,
                path.as_str(),
                dir,
                to,
                AtFlags::SYMLINK_FOLLOW,
            )?)
        }
        other => Ok(other?),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn link_unnamed_at(
    _file: &File,
    _dir: impl AsFd,
    _to: impl rustix::path::Arg + Copy,
) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// [`place`] without the folder's fsync (for a batch that fsyncs each folder once).
pub fn rename(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        std::fs::rename(from, to)
    } else {
        rename_no_replace(from, to)
    }
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE: a hard link also refuses an existing name.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => link_then_unlink(from, to),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    link_then_unlink(from, to)
}

fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::hard_link(from, to)?;
    std::fs::remove_file(from)
}

/// Starts writing a file's data to disk while it is still being received, so the fsync at the
/// end has little left to do: without it Linux holds the whole file as dirty pages (up to a tenth
/// of memory) and only then writes it, after the network transfer instead of during it.
#[derive(Debug)]
struct WriteBehind {
    started_to: u64,
}

impl WriteBehind {
    /// How much written data to gather before starting its writeback.
    const WINDOW: u64 = 8 << 20;

    /// For a file whose bytes before `offset` are already there.
    fn new(offset: u64) -> Self {
        Self { started_to: offset }
    }

    /// Call after writing up to byte `end`. Starts writeback of each full window and waits for
    /// the window before it, which keeps the dirty data in flight bounded and lets the disk set
    /// the pace. Errors are ignored: this is only a hint, and the final fsync reports failures.
    fn wrote(&mut self, file: &File, end: u64) {
        if end < self.started_to + Self::WINDOW {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let fd = file.as_raw_fd();
            // SAFETY: sync_file_range only reads the descriptor and the ranges.
            unsafe {
                libc::sync_file_range(
                    fd,
                    self.started_to as i64,
                    (end - self.started_to) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
                if self.started_to >= Self::WINDOW {
                    let prev = self.started_to - Self::WINDOW;
                    libc::sync_file_range(
                        fd,
                        prev as i64,
                        Self::WINDOW as i64,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    );
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.started_to = end;
    }
}

/// Transfers at least this long are written with direct I/O (see [`FileWriter`]); shorter ones
/// go through the page cache, where a small file is cheaper to write and likely read again soon.
pub const DIRECT_MIN: u64 = 8 << 20;

/// Where the writer thread puts the bytes: straight to the disk (`O_DIRECT`) while it can, else
/// through the page cache with [`WriteBehind`].
///
/// Direct I/O is for large transfers that must be durable anyway. Through the page cache every
/// byte is copied once more, into pages the kernel must first find and map (on a VM whose freed
/// memory goes back to the host, that costs more than the copy), and the final fsync then writes
/// it all. Direct writes go from our buffer to the disk, and the fsync has only metadata left.
struct Sink {
    file: File,
    direct: bool,
    end: u64,
    behind: WriteBehind,
}

impl Sink {
    fn new(file: File, offset: u64, direct: bool) -> Self {
        let direct = direct && offset % ALIGN as u64 == 0 && set_direct(&file, true).is_ok();
        Self {
            file,
            direct,
            end: offset,
            behind: WriteBehind::new(offset),
        }
    }

    /// Writes `parts`, in order, at the end of what was written so far. Each part starts on an
    /// [`ALIGN`] boundary in memory (it is an [`IoBuf`]) and all but the last are whole blocks
    /// long, so with direct I/O they go to the disk in one call, as one large write.
    fn write(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        use std::io::{IoSlice, Write};
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        if self.direct {
            // Direct I/O takes whole blocks: everything but a tail shorter than one.
            let whole = total / ALIGN * ALIGN;
            let mut want = whole;
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
            for p in parts {
                let n = p.len().min(want);
                if n == 0 {
                    break;
                }
                slices.push(IoSlice::new(&p[..n]));
                want -= n;
            }
            let mut left = &mut slices[..];
            while self.direct && done < whole {
                match self.file.write_vectored(left) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        IoSlice::advance_slices(&mut left, n);
                        // A short write leaves the position unaligned; only the page cache can
                        // go on from there.
                        if done % ALIGN != 0 {
                            self.buffered()?;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The filesystem refused direct I/O after all: carry on through the cache.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.buffered()?,
                    Err(e) => return Err(e),
                }
            }
            self.end += done as u64;
        }
        if done < total {
            // The tail of the file (or everything, without direct I/O).
            self.buffered()?;
            let mut skip = done;
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                self.file.write_all(&p[skip..])?;
                skip = 0;
            }
            self.end += (total - done) as u64;
            self.behind.wrote(&self.file, self.end);
        }
        Ok(())
    }

    fn buffered(&mut self) -> io::Result<()> {
        if self.direct {
            set_direct(&self.file, false)?;
            self.direct = false;
            self.behind = WriteBehind::new(self.end);
        }
        Ok(())
    }
}

/// Whether `file` lives in memory (tmpfs, as `/tmp` and `/dev/shm` often are, or ramfs): no
/// disk to overlap with and nothing for direct I/O to skip; a write there is only a copy.
fn in_memory(file: &File) -> bool {
    #[cfg(target_os = "linux")]
    {
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        // `f_type` is an i64 here and another integer on other architectures.
        #[allow(clippy::unnecessary_cast)]
        rustix::fs::fstatfs(file)
            .is_ok_and(|s| matches!(s.f_type as i64, TMPFS_MAGIC | RAMFS_MAGIC))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        false
    }
}

/// Turns `O_DIRECT` on or off for `file`.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
        let mut flags = fcntl_getfl(file)?;
        flags.set(OFlags::DIRECT, on);
        Ok(fcntl_setfl(file, flags)?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, on);
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Memory that writers may take beyond their first two buffers, shared by every writer in the
/// process. Two buffers are enough to overlap receiving with writing; more only help when the
/// disk falls behind in bursts. Without a shared bound, a hub receiving many uploads onto a slow
/// disk would hold [`FileWriter::BUFFERS`] chunks for each of them.
#[derive(Debug)]
pub struct BufferBudget {
    left: AtomicUsize,
}

impl BufferBudget {
    pub const fn new(bytes: usize) -> Self {
        Self {
            left: AtomicUsize::new(bytes),
        }
    }

    /// Takes `bytes` if that many are left.
    fn take(&self, bytes: usize) -> bool {
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.left.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Bytes not taken.
    pub fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }
}

/// The budget [`FileWriter::spawn`] draws on: enough for about three transfers to run at full
/// depth; more at once fall back to their own two buffers.
pub static BUFFER_BUDGET: BufferBudget = BufferBudget::new(64 << 20);

/// Writes a file on a thread of its own, so that receiving and hashing the next chunk overlaps
/// with writing this one. Buffers are handed over, not copied, and come back for reuse, so the
/// memory in use stays at a few chunks whatever the file size, and beyond two of them is drawn
/// from a [`BufferBudget`] shared by all writers. Large transfers are written with direct I/O
/// (see `Sink`).
///
/// A file in memory (tmpfs) is written on the caller's task instead, from the buffer just
/// filled: a write there is a copy, and a copy made on the core that received the bytes reads
/// them from its own cache, where a writer thread on the other core would fetch them across.
#[derive(Debug)]
pub struct FileWriter {
    /// Set when the file is in memory: writes happen in [`FileWriter::write`] itself.
    inline: Option<Inline>,
    full: Option<tokio::sync::mpsc::Sender<(IoBuf, usize)>>,
    /// What must live until the last write is done (see [`FileWriter::hold_until_written`]).
    held: Arc<std::sync::Mutex<Vec<Held>>>,
    empty: tokio::sync::mpsc::Receiver<IoBuf>,
    thread: Option<std::thread::JoinHandle<io::Result<File>>>,
    /// A buffer being filled by [`FileWriter::write_from`], and how full it is.
    filling: Option<(IoBuf, usize)>,
    buf_len: usize,
    made: usize,
    budget: &'static BufferBudget,
    /// Bytes taken from `budget`, given back when the writer is gone.
    taken: usize,
}

impl FileWriter {
    /// Buffers in circulation: one being filled, the others queued or being written. A deep
    /// queue lets the receiving side run on while the disk takes a large write: with six, the
    /// receiver stalled during each 4 MiB write, and 24 made 1 GiB durable gets and puts ~10%
    /// faster (alternating A/B runs; 32 buffers with 16 MiB writes were slower again).
    const BUFFERS: usize = 24;
    /// At most this many queued buffers go to the disk in one write: when the disk is the slower
    /// side, buffers pile up, and one large write keeps it busier than several small ones.
    const GATHER: usize = 8;

    /// Buffers every writer may make whatever the budget: one being filled while the other is
    /// written.
    const OWN_BUFFERS: usize = 2;

    /// Starts writing `len` bytes to `file`, which is positioned where they go, `offset` bytes
    /// in. Waits for a thread when [`MAX_WRITERS`] are writing.
    pub async fn spawn(file: File, offset: u64, len: u64) -> io::Result<Self> {
        Self::spawn_within(file, offset, len, &BUFFER_BUDGET).await
    }

    /// [`FileWriter::spawn`], drawing extra buffers from `budget`.
    pub async fn spawn_within(
        file: File,
        offset: u64,
        len: u64,
        budget: &'static BufferBudget,
    ) -> io::Result<Self> {
        let buf_len = usize::try_from(len)
            .unwrap_or(crate::CHUNK)
            .clamp(1, crate::CHUNK);
        if in_memory(&file) {
            return Ok(Self::inline(file, buf_len, budget));
        }
        let permit = WRITERS.acquire().await.map_err(io::Error::other)?;
        let direct = len >= DIRECT_MIN;
        let (full, mut full_rx) = tokio::sync::mpsc::channel::<(IoBuf, usize)>(Self::BUFFERS);
        let (empty_tx, empty) = tokio::sync::mpsc::channel(Self::BUFFERS);
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let holding = Arc::clone(&held);
        let thread = std::thread::Builder::new()
            .name("troca-writer".into())
            .spawn(move || {
                // Both go when the last write is done: the thread's place, and what callers
                // asked to keep until then.
                let _done = (permit, HeldUntilEnd(holding));
                let mut sink = Sink::new(file, offset, direct);
                while let Some(first) = full_rx.blocking_recv() {
                    let mut batch = vec![first];
                    // Only whole-block buffers may have another after them in one write.
                    while batch.len() < Self::GATHER && batch[batch.len() - 1].1 % ALIGN == 0 {
                        match full_rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    let parts: Vec<&[u8]> = batch.iter().map(|(buf, len)| &buf[..*len]).collect();
                    sink.write(&parts)?;
                    for (buf, _) in batch {
                        let _ = empty_tx.try_send(buf);
                    }
                }
                Ok(sink.file)
            })?;
        Ok(Self {
            inline: None,
            full: Some(full),
            held,
            empty,
            thread: Some(thread),
            filling: None,
            buf_len,
            made: 0,
            budget,
            taken: 0,
        })
    }

    /// A writer that writes on the caller's task, with one buffer.
    fn inline(file: File, buf_len: usize, budget: &'static BufferBudget) -> Self {
        let (_, empty) = tokio::sync::mpsc::channel(1);
        Self {
            inline: Some(Inline {
                file,
                spare: None,
                failed: None,
            }),
            full: None,
            held: Arc::default(),
            empty,
            thread: None,
            filling: None,
            buf_len,
            made: 0,
            budget,
            taken: 0,
        }
    }

    /// Keeps `guard` alive until every queued buffer is written, even if this writer is
    /// dropped first: an upload's claim on its name, so that a resumed upload cannot reopen the
    /// file while an abandoned one still writes to it.
    pub fn hold_until_written(&self, guard: impl std::any::Any + Send + 'static) {
        self.held
            .lock()
            .expect("held guards poisoned")
            .push(Box::new(guard));
    }

    /// An empty buffer to fill: a returned one, or a new one while fewer than
    /// [`FileWriter::BUFFERS`] exist and the budget allows. `None` means the writer stopped (a
    /// write failed); [`FileWriter::finish`] says why.
    pub async fn buffer(&mut self) -> Option<IoBuf> {
        if let Some(inline) = &mut self.inline {
            if inline.failed.is_some() {
                return None;
            }
            return Some(
                inline
                    .spare
                    .take()
                    .unwrap_or_else(|| IoBuf::new(self.buf_len)),
            );
        }
        if let Ok(buf) = self.empty.try_recv() {
            return Some(buf);
        }
        if self.made < Self::OWN_BUFFERS
            || (self.made < Self::BUFFERS && self.budget.take(self.buf_len))
        {
            if self.made >= Self::OWN_BUFFERS {
                self.taken += self.buf_len;
            }
            self.made += 1;
            return Some(IoBuf::new(self.buf_len));
        }
        self.empty.recv().await
    }

    /// Queues the first `len` bytes of `buf` for writing. Returns false if the writer stopped.
    /// Every buffer but the last should be full: direct I/O needs whole blocks.
    pub async fn write(&mut self, buf: IoBuf, len: usize) -> bool {
        if let Some(inline) = &mut self.inline {
            return inline.write(buf, len);
        }
        match &self.full {
            Some(tx) => tx.send((buf, len)).await.is_ok(),
            None => false,
        }
    }

    /// Copies `data` into buffers and queues each one as it fills, for bytes that arrive in
    /// pieces of their own (an HTTP body). Returns false if the writer stopped.
    pub async fn write_from(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let (mut buf, mut filled) = match self.filling.take() {
                Some(f) => f,
                None => match self.buffer().await {
                    Some(buf) => (buf, 0),
                    None => return false,
                },
            };
            let n = (buf.len() - filled).min(data.len());
            buf[filled..filled + n].copy_from_slice(&data[..n]);
            filled += n;
            data = &data[n..];
            if filled == buf.len() {
                if !self.write(buf, filled).await {
                    return false;
                }
            } else {
                self.filling = Some((buf, filled));
            }
        }
        true
    }

    /// Writes what is queued and returns the file, or the first write error.
    pub async fn finish(mut self) -> io::Result<File> {
        if let Some((buf, filled)) = self.filling.take() {
            self.write(buf, filled).await;
        }
        if let Some(inline) = self.inline.take() {
            return match inline.failed {
                Some(e) => Err(e),
                None => Ok(inline.file),
            };
        }
        self.full = None;
        let thread = self.thread.take();
        match tokio::task::spawn_blocking(move || thread.map(std::thread::JoinHandle::join)).await {
            Ok(Some(Ok(result))) => result,
            Ok(Some(Err(_))) => Err(io::Error::other("the writer thread panicked")),
            Ok(None) => Err(io::Error::other("the writer already finished")),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // The thread writes what is queued and ends on its own; nothing waits for it here (this
        // runs on an async worker). What must outlive the last write was handed to it.
        self.full = None;
        self.budget.give(std::mem::take(&mut self.taken));
    }
}

/// The file of an inline [`FileWriter`], its one buffer between writes, and the first error.
#[derive(Debug)]
struct Inline {
    file: File,
    spare: Option<IoBuf>,
    failed: Option<io::Error>,
}

impl Inline {
    /// Writes the first `len` bytes of `buf` and keeps it for the next fill. False once a
    /// write has failed.
    fn write(&mut self, buf: IoBuf, len: usize) -> bool {
        use std::io::Write;
        if self.failed.is_some() {
            return false;
        }
        if let Err(e) = self.file.write_all(&buf[..len]) {
            self.failed = Some(e);
            return false;
        }
        self.spare = Some(buf);
        true
    }
}

/// The most writer threads at once; further writers wait for one to finish.
pub const MAX_WRITERS: usize = 256;
static WRITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WRITERS);

type Held = Box<dyn std::any::Any + Send>;

/// Drops the guards it holds when the writer thread ends.
struct HeldUntilEnd(Arc<std::sync::Mutex<Vec<Held>>>);

impl Drop for HeldUntilEnd {
    fn drop(&mut self) {
        let guards = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        drop(guards);
    }
}

/// Free bytes available to this process on the filesystem holding `path` (unbounded if unknown).
pub fn available_bytes(path: &Path) -> u64 {
    space(path).map_or(u64::MAX, |s| s.available)
}

/// The size of a filesystem and what of it is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Bytes this process may still write.
    pub available: u64,
    /// Bytes the filesystem holds in all.
    pub total: u64,
}

/// The space of the filesystem holding `path` (`None` if unknown).
pub fn space(path: &Path) -> Option<Space> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(Space {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        total: st.f_blocks.saturating_mul(st.f_frsize),
    })
}

/// The folder holding `path`: its parent, or `.` for a bare name.
/// Gives `file` the modification time `ns` (nanoseconds since the epoch; 0 or less: unknown,
/// left as it is): a downloaded file keeps the time it has on the hub, as `rsync -t` and `wget`
/// keep theirs.
pub fn set_modified_ns(file: &File, ns: i64) -> io::Result<()> {
    let Ok(ns) = u64::try_from(ns) else {
        return Ok(());
    };
    if ns == 0 {
        return Ok(());
    }
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
}

pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs the folder holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(folder_of(path))?.sync_all()
}

/// Feeds the first `len` bytes of `file` to `hasher` (used to resume: the bytes already held
/// must be part of the final hash). Leaves the file position at `len`.
pub fn hash_prefix(file: &mut File, len: u64, hasher: &mut blake3::Hasher) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = IoBuf::new(crate::CHUNK);
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The name a partial download of `target` is kept under until it is verified.
pub fn part_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// A local path for saving `target` without overwriting anything: `target` itself if free, else
/// `stem_downloaded.ext`, then `stem_downloaded_2.ext`, `_3`, ….
pub fn free_local_path(target: &Path) -> PathBuf {
    if !exists(target) {
        return target.to_path_buf();
    }
    let dir = target.parent().unwrap_or(Path::new(""));
    let file = target
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A leading dot is part of the stem (".bashrc" has no extension).
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => (&file[..i], &file[i..]),
        _ => (file.as_str(), ""),
    };
    for n in 1.. {
        let candidate = if n == 1 {
            dir.join(format!("{stem}_downloaded{ext}"))
        } else {
            dir.join(format!("{stem}_downloaded_{n}{ext}"))
        };
        if !exists(&candidate) {
            return candidate;
        }
    }
    unreachable!("some suffix is always free")
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;
    use std::time::Duration;

    #[test]
    fn an_unnamed_file_is_named_only_when_linked() {
        assert!(unnamed_files_link(), "links work on the test machines");
        let dir = tempfile::tempdir().unwrap();
        let mut file = create_unnamed(dir.path()).unwrap();
        io::Write::write_all(&mut file, b"data").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let target = dir.path().join("a.txt");
        link_unnamed(&file, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"data");
        let again = link_unnamed(&file, &target).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
    }

    proptest::proptest! {
        /// Cut in runs or not, every item is done once and the answers keep their order.
        #[test]
        fn in_parallel_keeps_every_item_in_order(items in proptest::collection::vec(0u32..1000, 0..300)) {
            let threads = std::sync::Mutex::new(std::collections::HashSet::new());
            let doubled = in_parallel(items.clone(), |x| {
                threads.lock().unwrap().insert(std::thread::current().id());
                x * 2
            });
            proptest::prop_assert_eq!(doubled, items.iter().map(|x| x * 2).collect::<Vec<_>>());
            let parallel = std::thread::available_parallelism().map_or(1, |n| n.get()) > 1;
            if parallel && items.len() >= PARALLEL_MIN {
                proptest::prop_assert!(threads.lock().unwrap().len() > 1);
            }
        }
    }

    /// A file in memory (tmpfs) is written inline, never by a writer thread; a file elsewhere
    /// (here procfs, which every Linux test machine has and which is surely not tmpfs) is not
    /// taken for one in memory.
    #[test]
    fn memory_filesystems_are_told_from_others() {
        let memfd = rustix::fs::memfd_create("troca-test", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        assert!(in_memory(&File::from(memfd)));
        let proc = File::open("/proc/self/stat").expect("procfs");
        assert!(!in_memory(&proc));
    }

    #[test]
    fn free_local_path_follows_the_downloaded_convention() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("photo.png");
        assert_eq!(free_local_path(&photo), photo);
        std::fs::write(&photo, b"1").unwrap();
        assert_eq!(
            free_local_path(&photo),
            dir.path().join("photo_downloaded.png")
        );
        std::fs::write(dir.path().join("photo_downloaded.png"), b"2").unwrap();
        assert_eq!(
            free_local_path(&photo),
            dir.path().join("photo_downloaded_2.png")
        );
        let dot = dir.path().join(".bashrc");
        std::fs::write(&dot, b"").unwrap();
        assert_eq!(free_local_path(&dot), dir.path().join(".bashrc_downloaded"));
    }

    /// What a writer leaves in a file that held `head`, given `pieces`: written once into a
    /// file in a temporary folder and once into one in memory (inline), which must agree.
    async fn written(head: &[u8], len: u64, pieces: &[Vec<u8>], copy: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("out"))
            .unwrap();
        let memfd = rustix::fs::memfd_create("troca-test", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd_create");
        let memory = File::from(memfd);
        assert!(in_memory(&memory));
        let first = write_through(on_disk, head, len, pieces, copy).await;
        let second = write_through(memory, head, len, pieces, copy).await;
        assert!(first == second, "the inline writer wrote other bytes");
        first
    }

    /// Writes `pieces` through a [`FileWriter`] started `head.len()` bytes into `file` after
    /// `head`, as a transfer of `len` bytes, and returns what the file then holds.
    async fn write_through(
        mut file: File,
        head: &[u8],
        len: u64,
        pieces: &[Vec<u8>],
        copy: bool,
    ) -> Vec<u8> {
        use std::io::Read;
        std::io::Write::write_all(&mut file, head).unwrap();
        let mut w = FileWriter::spawn(file, head.len() as u64, len)
            .await
            .unwrap();
        for piece in pieces {
            if copy {
                assert!(w.write_from(piece).await);
            } else {
                let mut buf = w.buffer().await.unwrap();
                buf[..piece.len()].copy_from_slice(piece);
                assert!(w.write(buf, piece.len()).await);
            }
        }
        let mut file = w.finish().await.unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut out = Vec::new();
        file.read_to_end(&mut out).unwrap();
        out
    }

    /// Bytes that differ from block to block, so a misplaced block shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u64 * 31 + i as u64 / 4096 + u64::from(seed)) as u8)
            .collect()
    }

    #[tokio::test]
    async fn file_writer_writes_every_chunk_in_order() {
        let pieces: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 3]).collect();
        let want: Vec<u8> = b"head:".iter().copied().chain(pieces.concat()).collect();
        assert_eq!(written(b"head:", 150, &pieces, false).await, want);
        assert_eq!(written(b"head:", 150, &pieces, true).await, want);
    }

    #[tokio::test]
    async fn a_large_transfer_is_exact_whatever_its_tail() {
        // Above DIRECT_MIN: full buffers go straight to the disk, the tail through the cache.
        let len = DIRECT_MIN as usize + 3 * ALIGN + 123;
        let data = pattern(len, 7);
        let pieces: Vec<Vec<u8>> = data.chunks(crate::CHUNK).map(<[u8]>::to_vec).collect();
        assert_eq!(written(b"", len as u64, &pieces, false).await, data);
        // An HTTP body arrives in odd pieces; they are gathered into whole buffers.
        let odd: Vec<Vec<u8>> = data.chunks(65_537).map(<[u8]>::to_vec).collect();
        assert_eq!(written(b"", len as u64, &odd, true).await, data);
    }

    #[tokio::test]
    async fn a_resumed_transfer_at_an_unaligned_offset_is_exact() {
        let head = pattern(1000, 1);
        let data = pattern(DIRECT_MIN as usize + 5000, 2);
        let pieces: Vec<Vec<u8>> = data.chunks(crate::CHUNK).map(<[u8]>::to_vec).collect();
        let got = written(&head, data.len() as u64, &pieces, false).await;
        assert_eq!(got.len(), head.len() + data.len());
        assert!(got[..head.len()] == head[..] && got[head.len()..] == data[..]);
    }

    #[test]
    fn a_large_transfer_uses_direct_io_where_the_filesystem_allows_it() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let supported = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .is_ok();
        let mut sink = Sink::new(File::create(&path).unwrap(), 0, true);
        assert_eq!(sink.direct, supported);
        // Whole blocks keep it direct; a short tail ends it.
        let block = IoBuf::new(2 * ALIGN);
        sink.write(&[&block[..], &block[..]]).unwrap();
        assert_eq!(sink.direct, supported);
        sink.write(&[&block[..10]]).unwrap();
        assert!(!sink.direct);
        assert_eq!(sink.end, 4 * ALIGN as u64 + 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), sink.end);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Any mix of whole and partial buffers, direct or not, lands byte for byte.
        #[test]
        fn sink_writes_any_sequence_of_buffers_exactly(
            direct: bool,
            lens in proptest::collection::vec(
                proptest::prop_oneof![
                    (1usize..4).prop_map(|b| b * ALIGN),
                    1usize..3 * ALIGN,
                ],
                1..12,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("out");
            let mut sink = Sink::new(File::create(&path).unwrap(), 0, direct);
            let mut want = Vec::new();
            let bufs: Vec<IoBuf> = lens
                .iter()
                .enumerate()
                .map(|(i, &len)| {
                    let mut buf = IoBuf::new(len);
                    buf.copy_from_slice(&pattern(len, i as u8));
                    want.extend_from_slice(&buf);
                    buf
                })
                .collect();
            // In batches of two, as the writer thread gathers them.
            for pair in bufs.chunks(2) {
                let parts: Vec<&[u8]> = pair.iter().map(|b| &b[..]).collect();
                sink.write(&parts).unwrap();
            }
            drop(sink);
            proptest::prop_assert_eq!(std::fs::read(&path).unwrap(), want);
        }
    }

    #[tokio::test]
    async fn writers_share_the_budget_for_buffers_beyond_their_own_two() {
        let dir = tempfile::tempdir().unwrap();
        let len = 64 << 20;
        let chunk = crate::CHUNK;
        let budget: &'static BufferBudget = Box::leak(Box::new(BufferBudget::new(3 * chunk)));
        let open = |name: &str| File::create(dir.path().join(name)).unwrap();
        let mut a = FileWriter::spawn_within(open("a"), 0, len, budget)
            .await
            .unwrap();
        let mut b = FileWriter::spawn_within(open("b"), 0, len, budget)
            .await
            .unwrap();
        let mut held = Vec::new();
        // `a` makes its own two, then three from the budget, then waits for one to come back.
        for _ in 0..5 {
            held.push(a.buffer().await.unwrap());
        }
        assert_eq!(budget.left(), 0);
        let more = tokio::time::timeout(Duration::from_millis(100), a.buffer()).await;
        assert!(more.is_err(), "no sixth buffer while the budget is spent");
        // `b` still gets its own two, and no more.
        held.push(b.buffer().await.unwrap());
        held.push(b.buffer().await.unwrap());
        let more = tokio::time::timeout(Duration::from_millis(100), b.buffer()).await;
        assert!(
            more.is_err(),
            "no third buffer for b while a holds the budget"
        );
        // A buffer written and returned is reused: the writer carries on within its buffers.
        let buf = held.remove(0);
        assert!(a.write(buf, chunk).await);
        let again = tokio::time::timeout(Duration::from_secs(10), a.buffer()).await;
        assert!(again.expect("the written buffer comes back").is_some());
        // What `a` took goes back when it is gone.
        drop(a);
        assert_eq!(budget.left(), 3 * chunk);
        let third = tokio::time::timeout(Duration::from_secs(10), b.buffer()).await;
        assert!(third.expect("b may grow now").is_some());
        assert_eq!(budget.left(), 2 * chunk);
        drop(held);
        drop(b);
        assert_eq!(budget.left(), 3 * chunk);
    }

    #[tokio::test]
    async fn file_writer_reports_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").unwrap();
        // Opened read-only: every write fails.
        let mut w = FileWriter::spawn(File::open(&path).unwrap(), 0, 1 << 20)
            .await
            .unwrap();
        let mut stopped = false;
        // More writes than the writer has buffers: however far behind its thread is, a buffer
        // runs out and waits on it, so the failure is seen.
        for _ in 0..1_000 {
            let written = match w.buffer().await {
                Some(buf) => w.write(buf, 8).await,
                None => false,
            };
            if !written {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "the writer stops after a failed write");
        assert!(w.finish().await.is_err());
    }

    #[test]
    fn place_without_replace_refuses_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"new").unwrap();
        std::fs::write(&b, b"old").unwrap();
        let err = place(&a, &b, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
        place(&a, &b, true).unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert!(!a.exists());
    }

    /// A writer dropped mid-file does not wait for its thread, yet what it holds (an upload's
    /// claim on a name) is released only once every queued buffer is on disk.
    #[tokio::test]
    async fn a_dropped_writer_keeps_its_guard_until_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let chunk = crate::CHUNK;
        let mut w = FileWriter::spawn(File::create(&path).unwrap(), 0, 4 * chunk as u64)
            .await
            .unwrap();
        let (guard, released) = tokio::sync::oneshot::channel::<()>();
        w.hold_until_written(guard);
        for i in 0..3u8 {
            let mut buf = w.buffer().await.unwrap();
            buf.fill(i + 1);
            assert!(w.write(buf, chunk).await);
        }
        drop(w);
        // The guard is dropped (the channel closes) by the thread, after its last write.
        assert!(released.await.is_err());
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len(), 3 * chunk);
        for (i, part) in data.chunks(chunk).enumerate() {
            assert!(part.iter().all(|&b| b == i as u8 + 1), "buffer {i}");
        }
    }
}
