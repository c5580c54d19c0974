//! Putting finished files in place durably: fsync the data, move it under its real name without
//! clobbering anything (unless asked), fsync the folder so the name survives a crash.
//!
//! Both the hub (uploads) and the client (downloads) finish transfers this way, so a reader never
//! sees a truncated file under a real name.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Moves `from` to `to`. With `replace` false it fails with `AlreadyExists` rather than replace an
/// existing `to`, atomically (`renameat2(RENAME_NOREPLACE)`, or a hard link where that is not
/// supported).
pub fn place(from: &Path, to: &Path, replace: bool) -> io::Result<()> {
    if replace {
        std::fs::rename(from, to)?;
    } else {
        rename_no_replace(from, to)?;
    }
    sync_parent(to)
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // Filesystems without RENAME_NOREPLACE: a hard link also refuses an existing name.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => link_then_unlink(from, to),
        _ => Err(err),
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
pub struct WriteBehind {
    started_to: u64,
}

impl WriteBehind {
    /// How much written data to gather before starting its writeback.
    const WINDOW: u64 = 8 << 20;

    /// For a file whose bytes before `offset` are already there.
    pub fn new(offset: u64) -> Self {
        Self { started_to: offset }
    }

    /// Call after writing up to byte `end`. Starts writeback of each full window and waits for
    /// the window before it, which keeps the dirty data in flight bounded and lets the disk set
    /// the pace. Errors are ignored: this is only a hint, and the final fsync reports failures.
    pub fn wrote(&mut self, file: &File, end: u64) {
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

/// Writes a file on a thread of its own, so that receiving and hashing the next chunk overlaps
/// with writing this one. Buffers are handed over, not copied, and come back for reuse, so the
/// memory in use stays at a few chunks whatever the file size.
#[derive(Debug)]
pub struct FileWriter {
    full: Option<tokio::sync::mpsc::Sender<(Vec<u8>, usize)>>,
    empty: tokio::sync::mpsc::Receiver<Vec<u8>>,
    thread: Option<std::thread::JoinHandle<io::Result<File>>>,
    buf_len: usize,
    made: usize,
}

impl FileWriter {
    /// Buffers in circulation: one being filled, one being written, one queued.
    const BUFFERS: usize = 3;

    /// Starts writing `file` (positioned where the data goes, `offset` bytes in) with buffers of
    /// `buf_len` bytes.
    pub fn spawn(mut file: File, offset: u64, buf_len: usize) -> io::Result<Self> {
        let (full, mut full_rx) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(1);
        let (empty_tx, empty) = tokio::sync::mpsc::channel(Self::BUFFERS);
        let thread = std::thread::Builder::new()
            .name("troca-writer".into())
            .spawn(move || {
                use std::io::Write;
                let mut behind = WriteBehind::new(offset);
                let mut end = offset;
                while let Some((buf, len)) = full_rx.blocking_recv() {
                    file.write_all(&buf[..len])?;
                    end += len as u64;
                    behind.wrote(&file, end);
                    let _ = empty_tx.blocking_send(buf);
                }
                Ok(file)
            })?;
        Ok(Self {
            full: Some(full),
            empty,
            thread: Some(thread),
            buf_len,
            made: 0,
        })
    }

    /// An empty buffer to fill: a returned one, or a new one while fewer than three exist.
    /// `None` means the writer stopped (a write failed); [`FileWriter::finish`] says why.
    pub async fn buffer(&mut self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.empty.try_recv() {
            return Some(buf);
        }
        if self.made < Self::BUFFERS {
            self.made += 1;
            return Some(vec![0u8; self.buf_len]);
        }
        self.empty.recv().await
    }

    /// Queues the first `len` bytes of `buf` for writing. Returns false if the writer stopped.
    pub async fn write(&mut self, buf: Vec<u8>, len: usize) -> bool {
        match &self.full {
            Some(tx) => tx.send((buf, len)).await.is_ok(),
            None => false,
        }
    }

    /// Waits for every queued write and returns the file, or the first write error.
    pub fn finish(mut self) -> io::Result<File> {
        self.full = None;
        self.join()
    }

    fn join(&mut self) -> io::Result<File> {
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer already finished")),
        }
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        // Stop the thread and wait for it, so the file is closed when the writer is gone.
        self.full = None;
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// fsyncs the folder holding `path`, so a rename into it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Feeds the first `len` bytes of `file` to `hasher` (used to resume: the bytes already held
/// must be part of the final hash). Leaves the file position at `len`.
pub fn hash_prefix(file: &mut File, len: u64, hasher: &mut blake3::Hasher) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; crate::CHUNK];
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
/// `stem_downloaded.ext`, then `stem_downloaded_2.ext`, `_3`, … (the seed's convention).
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

    #[tokio::test]
    async fn file_writer_writes_every_chunk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        std::io::Write::write_all(&mut file, b"head:").unwrap();
        let mut w = FileWriter::spawn(file, 5, 4).unwrap();
        let mut want = b"head:".to_vec();
        for i in 0..50u8 {
            let mut buf = w.buffer().await.unwrap();
            buf[..3].copy_from_slice(&[i, i, i]);
            want.extend_from_slice(&[i, i, i]);
            assert!(w.write(buf, 3).await);
        }
        drop(w.finish().unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[tokio::test]
    async fn file_writer_reports_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").unwrap();
        // Opened read-only: every write fails.
        let mut w = FileWriter::spawn(File::open(&path).unwrap(), 0, 8).unwrap();
        let mut stopped = false;
        for _ in 0..10 {
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
        assert!(w.finish().is_err());
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
}
