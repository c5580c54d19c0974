//! The client side of whole-file transfers, shared by every face: resumable, verified downloads
//! into a `.part` file that is renamed only once its BLAKE3 hash matches the hub's, downloads to
//! any writer (stdout), and resumable uploads.
//!
//! Per-chunk file I/O here is ordinary blocking I/O on the calling task (page-cache speed, and
//! handing each chunk to another thread would cost more than the copy); what may take long
//! (hashing the part a resume keeps, fsync) runs on the blocking pool.

use crate::client::HubClient;
use crate::durable::{hash_prefix, part_path, place, FileWriter};
use crate::error::ClientError;
use crate::{blocking, transfer_buffer, CHUNK};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use troca_proto::hex;
use troca_proto::msg::Put;
use troca_proto::Hash;

/// Reports a transfer's progress (a progress bar, in the CLI).
pub trait Progress {
    /// The transfer will move `total` bytes, of which `done` are already in place (resume).
    fn start(&self, _total: u64, _done: u64) {}
    /// `n` more bytes moved.
    fn advance(&self, _n: u64) {}
    /// A note for the person watching (e.g. that a transfer resumed).
    fn note(&self, _msg: &str) {}
    /// The transfer ended, well or not.
    fn finish(&self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// A file that arrived and was verified.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub size: u64,
    pub blake3: Hash,
    /// How many bytes were already held from an interrupted download (0 if none).
    pub resumed_from: u64,
}

/// A file that was sent and stored by the hub.
#[derive(Debug, Clone)]
pub struct Sent {
    pub name: String,
    pub size: u64,
    pub blake3: Hash,
    /// How many bytes the hub already held from an interrupted upload (0 if none).
    pub resumed_from: u64,
}

/// Downloads `name` to `target`, through `target.part`. An existing `.part` is resumed; if the
/// result then fails verification (the hub's file changed since), it starts over once from zero.
/// With `replace` false an existing `target` is never overwritten.
pub async fn download_to_path(
    client: &mut HubClient,
    name: &str,
    target: &Path,
    replace: bool,
    progress: &dyn Progress,
) -> Result<Fetched, ClientError> {
    let part = part_path(target);
    let result = download_part(client, name, &part, progress).await;
    let fetched = match result {
        Ok(f) => f,
        Err(DownloadFailure::StaleResume) => {
            progress.note("the partial download did not match the hub's file; starting over");
            std::fs::remove_file(&part).map_err(|e| ClientError::local(&part, e))?;
            match download_part(client, name, &part, progress).await {
                Ok(f) => f,
                Err(DownloadFailure::StaleResume) => unreachable!("a fresh download never resumes"),
                Err(DownloadFailure::Client(e)) => return Err(e),
            }
        }
        Err(DownloadFailure::Client(e)) => return Err(e),
    };
    place(&part, target, replace).map_err(|e| ClientError::local(target, e))?;
    Ok(Fetched {
        path: target.to_path_buf(),
        ..fetched
    })
}

enum DownloadFailure {
    /// A resumed download hashed wrong: the `.part` may hold another version's bytes.
    StaleResume,
    Client(ClientError),
}

impl<E: Into<ClientError>> From<E> for DownloadFailure {
    fn from(e: E) -> Self {
        DownloadFailure::Client(e.into())
    }
}

async fn download_part(
    client: &mut HubClient,
    name: &str,
    part: &Path,
    progress: &dyn Progress,
) -> Result<Fetched, DownloadFailure> {
    let local = |e| ClientError::local(part, e);
    let held = match std::fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(local(e).into()),
    };
    // Ask first, create the `.part` only once the hub has the file: a refused download leaves
    // nothing behind.
    let mut download = client.get(name, held).await?;
    let header = download.header().clone();
    // The hub starts at 0 if what we hold is longer than its file.
    let offset = header.offset;
    if offset > 0 {
        progress.note(&format!("resuming {name} at byte {offset}"));
    }
    let (file, mut hasher) = {
        let part = part.to_path_buf();
        blocking(move || open_part(&part, offset), |e| e)
            .await
            .map_err(local)?
    };
    progress.start(header.size, offset);
    let mut writer = FileWriter::spawn(file, offset, header.size - offset)
        .await
        .map_err(local)?;
    let written = receive(&mut download, &mut writer, &mut hasher, progress).await?;
    let file = writer.finish().await.map_err(local)?;
    if !written {
        return Err(local(std::io::Error::other("the download stopped writing")).into());
    }
    let theirs = download.finish().await?;
    progress.finish();
    let ours: Hash = *hasher.finalize().as_bytes();
    if ours != theirs {
        drop(file);
        if offset > 0 {
            return Err(DownloadFailure::StaleResume);
        }
        let _ = std::fs::remove_file(part);
        return Err(DownloadFailure::Client(ClientError::Integrity {
            what: format!("download of {name}"),
            expected: hex(&theirs),
            actual: hex(&ours),
        }));
    }
    let modified = header.modified_ns;
    blocking(
        move || {
            crate::durable::set_modified_ns(&file, modified)?;
            file.sync_all()
        },
        |e| e,
    )
    .await
    .map_err(local)?;
    Ok(Fetched {
        path: part.to_path_buf(),
        size: header.size,
        blake3: ours,
        resumed_from: offset,
    })
}

/// Receives the rest of `download` into `writer`, hashing it; `false` if the writer stopped
/// taking bytes (its error comes from [`FileWriter::finish`]).
async fn receive(
    download: &mut crate::client::Download<'_>,
    writer: &mut FileWriter,
    hasher: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> Result<bool, ClientError> {
    while download.remaining() > 0 {
        let Some(mut buf) = writer.buffer().await else {
            return Ok(false);
        };
        // Fill the buffer before handing it over (fewer, larger writes to the disk), hashing
        // each read as it lands, while it is still in this core's caches.
        let mut filled = 0;
        while filled < buf.len() && download.remaining() > 0 {
            let n = download.read(&mut buf[filled..]).await?;
            hasher.update(&buf[filled..filled + n]);
            filled += n;
        }
        if !writer.write(buf, filled).await {
            return Ok(false);
        }
        progress.advance(filled as u64);
    }
    Ok(true)
}

/// Opens (or creates) the `.part` file, hashes the `offset` bytes it keeps, cuts off anything
/// after them and places the cursor there.
fn open_part(part: &Path, offset: u64) -> std::io::Result<(File, blake3::Hasher)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)?;
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        hash_prefix(&mut file, offset, &mut hasher)?;
    }
    file.set_len(offset)?;
    file.seek(SeekFrom::Start(offset))?;
    Ok((file, hasher))
}

/// What a download into a writer has written so far, for another try to go on from.
#[derive(Debug, Default)]
pub struct Streamed {
    written: u64,
    hasher: blake3::Hasher,
}

/// Downloads `name` into `out` (stdout, say), from the bytes `streamed` says are already
/// written (none at first). The bytes are written as they arrive, so a verification failure is
/// reported after the fact, as an error the caller must surface.
pub async fn download_to_writer(
    client: &mut HubClient,
    name: &str,
    out: &mut dyn Write,
    progress: &dyn Progress,
    streamed: &mut Streamed,
) -> Result<(u64, Hash), ClientError> {
    let mut download = client.get(name, streamed.written).await?;
    let header = download.header().clone();
    if header.offset != streamed.written {
        // The hub's file is now shorter than what was written: it changed.
        return Err(ClientError::Protocol(format!(
            "{name} changed on the hub after {} bytes of it were written out",
            streamed.written
        )));
    }
    if streamed.written > 0 {
        progress.note(&format!("resuming {name} at byte {}", streamed.written));
    }
    progress.start(header.size, header.offset);
    let mut buf = transfer_buffer(header.size, CHUNK);
    // Each read goes where the one before it ended, so buffer offsets follow stream offsets (see
    // `iobuf`: copies run faster when both sides sit alike within their pages).
    let mut at = (streamed.written % buf.len() as u64) as usize;
    loop {
        if at == buf.len() {
            at = 0;
        }
        let n = download.read(&mut buf[at..]).await?;
        if n == 0 {
            break;
        }
        let got = &buf[at..at + n];
        streamed.hasher.update(got);
        out.write_all(got)
            .map_err(|e| ClientError::local(Path::new("output"), e))?;
        streamed.written += n as u64;
        progress.advance(n as u64);
        at += n;
    }
    let theirs = download.finish().await?;
    out.flush()
        .map_err(|e| ClientError::local(Path::new("output"), e))?;
    progress.finish();
    let ours: Hash = *streamed.hasher.finalize().as_bytes();
    if ours != theirs {
        return Err(ClientError::Integrity {
            what: format!("download of {name}"),
            expected: hex(&theirs),
            actual: hex(&ours),
        });
    }
    Ok((header.size, ours))
}

/// Uploads the file at `path` as `name`, resuming an interrupted upload of the same file.
pub async fn upload_path(
    client: &mut HubClient,
    path: &Path,
    name: &str,
    replace: bool,
    progress: &dyn Progress,
) -> Result<Sent, ClientError> {
    let local = |e| ClientError::local(path, e);
    let mut file = File::open(path).map_err(local)?;
    let meta = file.metadata().map_err(local)?;
    if !meta.is_file() {
        return Err(ClientError::local(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        ));
    }
    let size = meta.len();
    let mut upload = client
        .put(Put {
            name: name.to_owned(),
            size,
            source_mtime_ns: mtime_ns(&meta),
            force: replace,
        })
        .await?;
    let offset = upload.offset();
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        progress.note(&format!("resuming upload of {name} at byte {offset}"));
        let (held, prefix) = blocking(
            move || {
                let mut hasher = blake3::Hasher::new();
                hash_prefix(&mut file, offset, &mut hasher).map(|()| (file, hasher))
            },
            |e| e,
        )
        .await
        .map_err(local)?;
        (file, hasher) = (held, prefix);
    }
    progress.start(size, offset);
    send_body(&mut upload, &file, offset, &mut hasher, progress)
        .await
        .map_err(|e| match e {
            SendFailure::Read(e) => local(e),
            SendFailure::Client(e) => e,
        })?;
    let ours: Hash = *hasher.finalize().as_bytes();
    let done = upload.finish(ours).await;
    progress.finish();
    let done = done?;
    if done.blake3 != ours {
        return Err(ClientError::Integrity {
            what: format!("upload of {name}"),
            expected: hex(&ours),
            actual: hex(&done.blake3),
        });
    }
    Ok(Sent {
        name: done.name,
        size: done.size,
        blake3: done.blake3,
        resumed_from: offset,
    })
}

/// Why sending a file's bytes stopped: reading the file, or the connection.
enum SendFailure {
    Read(std::io::Error),
    Client(ClientError),
}

impl From<ClientError> for SendFailure {
    fn from(e: ClientError) -> Self {
        SendFailure::Client(e)
    }
}

/// Sends `file` from `offset` on as the upload's body, hashing it.
async fn send_body(
    upload: &mut crate::client::Upload<'_>,
    mut file: &File,
    offset: u64,
    hasher: &mut blake3::Hasher,
    progress: &dyn Progress,
) -> Result<(), SendFailure> {
    let plain = upload.is_plain();
    // Over TLS the file is read straight into the records: no buffer of ours to fill.
    let mut buf = transfer_buffer(if plain { upload.remaining() } else { 0 }, CHUNK);
    let mut pos = offset;
    while upload.remaining() > 0 {
        let want = usize::try_from(upload.remaining()).unwrap_or(usize::MAX);
        let n = if plain {
            let want = want.min(buf.len());
            let n = file.read(&mut buf[..want]).map_err(SendFailure::Read)?;
            if n == 0 {
                // Let the hub see the short upload and discard it rather than hang.
                break;
            }
            hasher.update(&buf[..n]);
            // The bytes just read go out from the page cache, not from `buf`: one copy fewer.
            upload.send_file(file, pos, n as u64).await?;
            n
        } else {
            // Read into the TLS records that carry them, hashed there: no copy in between.
            let want = want.min(CHUNK);
            upload
                .send_file_hashed(file, pos, want as u64, hasher)
                .await?;
            want
        };
        pos += n as u64;
        progress.advance(n as u64);
    }
    Ok(())
}

/// A file's modification time in nanoseconds since the epoch (0 if unavailable).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
