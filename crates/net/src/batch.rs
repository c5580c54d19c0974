//! Many small files over one connection, fast: requests sent back to back without waiting for
//! each answer (the answers come in order), and durability batched. Uploads go as `PutSmall`
//! frames, which the hub stores in batches; downloads are pipelined `Get`s whose files are
//! written without a name in their folders (`O_TMPFILE`; else as `NAME.part`), made durable
//! together (one `syncfs`), then linked (or renamed) into place, with one fsync per folder; a
//! batch is settled on the blocking pool while the next one arrives.
//! Nothing appears under its name before it is durable, as with single transfers.

use crate::client::HubClient;
use crate::durable::{
    create_unnamed, folder_of, free_local_path, link_unnamed, part_path, set_modified_ns,
};
use crate::error::ClientError;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use troca_proto::msg::{FileHeader, Get, PutDone, PutSmall};
use troca_proto::{Hash, Message};

/// Requests in flight at most, and their bytes: enough to keep the link and the hub busy, small
/// enough that neither side's buffers fill.
const WINDOW: usize = 8192;
const WINDOW_BYTES: usize = 64 * 1024 * 1024;
/// Downloaded files made durable together, at most.
const DOWNLOAD_BATCH: usize = 256;
/// Batches of downloaded files being made durable and named at once, while the next arrives.
/// One `syncfs` waits mostly on the disk and the kernel's writeback thread, so a second and a
/// third batch keep the blocking pool's threads busy meanwhile.
const SETTLING: usize = 3;

/// Downloaded files made durable together: [`DOWNLOAD_BATCH`], or fewer where this process may
/// open few files. Each file of a batch stays open, without a name, until the batch is placed,
/// and [`SETTLING`] batches and the one arriving may be open at once: together they take at
/// most a quarter of the limit.
fn download_batch() -> usize {
    let open = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let open = open.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    (open / (4 * (SETTLING + 1))).clamp(1, DOWNLOAD_BATCH)
}
/// The largest file [`download_small`] takes (it holds one file in memory at a time).
pub const MAX_SMALL_GET: u64 = 1024 * 1024;

/// Uploads `files` (local path, remote name), each small enough for [`PutSmall::fits`], calling
/// `report` with each file's index and outcome in order. Errors that end the connection are
/// returned (the files not yet reported were not stored, or not confirmed).
pub async fn upload_small(
    client: &mut HubClient,
    files: &[(PathBuf, String)],
    force: bool,
    mut report: impl FnMut(usize, Result<PutDone, ClientError>),
) -> Result<(), ClientError> {
    let mut sent: VecDeque<(usize, usize)> = VecDeque::new();
    let mut in_flight = 0usize;
    let mut next = 0;
    while next < files.len() || !sent.is_empty() {
        while next < files.len() && sent.len() < WINDOW && in_flight < WINDOW_BYTES {
            let (path, name) = &files[next];
            match read_with_time(path) {
                Ok((data, modified_ns)) => {
                    in_flight += data.len();
                    sent.push_back((next, data.len()));
                    client.queue(
                        &PutSmall {
                            name: name.clone(),
                            force,
                            blake3: *blake3::hash(&data).as_bytes(),
                            modified_ns,
                            data,
                        }
                        .into(),
                    );
                }
                Err(e) => report(next, Err(ClientError::local(path, e))),
            }
            next += 1;
        }
        client.flush().await?;
        // Take answers until half the window is free, then send more.
        while let Some(&(index, len)) = sent.front() {
            if sent.len() <= WINDOW / 2 && in_flight <= WINDOW_BYTES / 2 && next < files.len() {
                break;
            }
            let answer = match client.answer().await {
                Ok(Message::PutDone(done)) => Ok(done),
                Ok(other) => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected {}",
                        other.name()
                    )))
                }
                Err(e @ ClientError::Hub { .. }) => Err(e),
                Err(e) => return Err(e),
            };
            sent.pop_front();
            in_flight -= len;
            report(index, answer);
        }
    }
    Ok(())
}

/// A small file to download: its remote name and size (from a listing), and where to save it.
#[derive(Debug, Clone)]
pub struct SmallGet {
    pub name: String,
    pub size: u64,
    pub target: PathBuf,
    /// Replace a local file at `target`; otherwise a free name is chosen (`NAME_downloaded`).
    pub replace: bool,
}

/// A small file downloaded, verified and durable under `path`.
#[derive(Debug, Clone)]
pub struct SmallGot {
    pub path: PathBuf,
    pub size: u64,
    pub blake3: Hash,
}

/// Downloads `files`, pipelined, calling `report` with each index and outcome. Each file is
/// verified against the hub's hash, written as it arrives without a name in its target's folder
/// (or as `NAME.part`), and put under its name only after its batch is durable.
///
/// The requests run one batch ahead of the answers, and batches are made durable and named on
/// the blocking pool ([`SETTLING`] at once) while the next one arrives: the hub never waits for
/// this side's `syncfs`, and the two halves of the kernel's work (creating and writing; linking
/// and closing) run on both cores. (Writing each file on another thread was slower: 0.63 s ->
/// 0.68 s for 10,000 files, the hand-offs costing more than the second core gave. A batch is
/// one hand-off.) Files are reported batch by batch, in order.
pub async fn download_small(
    client: &mut HubClient,
    files: &[SmallGet],
    mut report: impl FnMut(usize, Result<SmallGot, ClientError>),
) -> Result<(), ClientError> {
    let size = download_batch();
    let batches: Vec<&[SmallGet]> = files.chunks(size).collect();
    let mut settling: VecDeque<Settling> = VecDeque::with_capacity(SETTLING);
    let mut fetched = Ok(());
    for (b, chunk) in batches.iter().enumerate() {
        if b == 0 {
            ask(client, chunk);
        }
        if let Some(next) = batches.get(b + 1) {
            ask(client, next);
        }
        let fetch = match client.flush().await {
            Ok(()) => fetch_batch(client, chunk, b * size, &mut report).await,
            Err(e) => Fetch {
                written: Vec::new(),
                broken: Some(e),
            },
        };
        while settling.len() >= SETTLING {
            if let Some(oldest) = settling.pop_front() {
                oldest.finish(&mut report).await;
            }
        }
        // The files written before a connection broke are still made durable and named.
        settling.push_back(Settling::start(fetch.written));
        if let Some(e) = fetch.broken {
            fetched = Err(e);
            break;
        }
    }
    for batch in settling {
        batch.finish(&mut report).await;
    }
    fetched
}

/// Queues a `Get` for each file of a batch (sent with the next flush).
fn ask(client: &mut HubClient, batch: &[SmallGet]) {
    for f in batch {
        client.queue(
            &Get {
                name: f.name.clone(),
                offset: 0,
            }
            .into(),
        );
    }
}

/// What the answers to one batch's `Get`s gave: the files written, and the error that ended
/// the connection, if one did.
struct Fetch {
    written: Vec<Fetched>,
    broken: Option<ClientError>,
}

/// Reads the answers to one batch's `Get`s, writing each file unnamed. A file refused by the
/// hub, unwritable or corrupt is reported and the rest go on; an error that ends the connection
/// ends the batch.
async fn fetch_batch(
    client: &mut HubClient,
    batch: &[SmallGet],
    base: usize,
    report: &mut impl FnMut(usize, Result<SmallGot, ClientError>),
) -> Fetch {
    let mut written: Vec<Fetched> = Vec::with_capacity(batch.len());
    for (i, f) in batch.iter().enumerate() {
        match fetch_one(client, f, base + i).await {
            Ok(fetched) => written.push(fetched),
            // Refused, unwritable or corrupt: that file fails, the connection is still in step.
            Err(
                e @ (ClientError::Hub { .. }
                | ClientError::Local { .. }
                | ClientError::Integrity { .. }),
            ) => report(base + i, Err(e)),
            Err(e) => {
                return Fetch {
                    written,
                    broken: Some(e),
                }
            }
        }
    }
    Fetch {
        written,
        broken: None,
    }
}

/// A batch being made durable and named on the blocking pool.
struct Settling(tokio::task::JoinHandle<Vec<Settled>>);

/// One file's outcome, from the blocking pool.
struct Settled {
    index: usize,
    outcome: Result<SmallGot, ClientError>,
}

impl Settling {
    fn start(written: Vec<Fetched>) -> Settling {
        Settling(tokio::task::spawn_blocking(move || settle(written)))
    }

    /// Waits for the batch and reports each file. A batch whose task could not run (the
    /// runtime shutting down) reports nothing: its files were never named.
    async fn finish(self, report: &mut impl FnMut(usize, Result<SmallGot, ClientError>)) {
        match self.0.await {
            Ok(settled) => {
                for s in settled {
                    report(s.index, s.outcome);
                }
            }
            Err(e) => tracing::warn!(error = %e, "a batch of downloads was not put in place"),
        }
    }
}

/// A downloaded file of a batch, written, not yet under its name.
struct Fetched {
    index: usize,
    target: PathBuf,
    replace: bool,
    staged: Staged,
    blake3: Hash,
    size: u64,
}

/// Where a downloaded file's bytes wait for their batch to be durable.
enum Staged {
    /// Without a name, in the target's folder.
    Unnamed(std::fs::File),
    /// Beside the target, as `NAME.part`.
    Part(PathBuf),
}

impl Staged {
    fn discard(self) {
        if let Staged::Part(part) = self {
            let _ = std::fs::remove_file(part);
        }
    }
}

/// A small file's bytes and modification time.
fn read_with_time(path: &Path) -> std::io::Result<(Vec<u8>, i64)> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut data)?;
    Ok((data, crate::transfer::mtime_ns(&meta)))
}

/// Reads one pipelined answer and writes it, unnamed in the target's folder where it may be
/// (a file that replaces another is written as `TARGET.part`).
async fn fetch_one(
    client: &mut HubClient,
    f: &SmallGet,
    index: usize,
) -> Result<Fetched, ClientError> {
    let mut data = Vec::new();
    let (blake3, header) = read_whole(client, &f.name, &mut data).await?;
    let (size, modified) = (header.size, header.modified_ns);
    let unnamed = match f.replace {
        true => None,
        false => create_unnamed(folder_of(&f.target)).ok(),
    };
    let staged = match unnamed {
        Some(mut file) => {
            let wrote = file
                .write_all(&data)
                .and_then(|()| set_modified_ns(&file, modified));
            wrote.map_err(|e| ClientError::local(&f.target, e))?;
            Staged::Unnamed(file)
        }
        None => {
            let part = part_path(&f.target);
            let wrote = std::fs::File::create(&part).and_then(|mut file| {
                file.write_all(&data)?;
                set_modified_ns(&file, modified)
            });
            wrote.map_err(|e| ClientError::local(&part, e))?;
            Staged::Part(part)
        }
    };
    Ok(Fetched {
        index,
        target: f.target.clone(),
        replace: f.replace,
        staged,
        blake3,
        size,
    })
}

/// Reads the answer to a pipelined `Get` of a whole file into `data` and checks it against the
/// hub's hash; returns the hash and the file's header (its size and time).
async fn read_whole(
    client: &mut HubClient,
    name: &str,
    data: &mut Vec<u8>,
) -> Result<(Hash, FileHeader), ClientError> {
    let unexpected = |m: Message| ClientError::Protocol(format!("unexpected {}", m.name()));
    let header = match client.answer().await? {
        Message::FileHeader(h) => h,
        other => return Err(unexpected(other)),
    };
    let len = usize::try_from(header.size - header.offset)
        .map_err(|_| ClientError::Protocol("file too large".into()))?;
    data.resize(len, 0);
    client.read_exact_raw(data).await?;
    let theirs = match client.answer().await? {
        Message::FileEnd(end) => end.blake3,
        other => return Err(unexpected(other)),
    };
    let ours = *blake3::hash(data).as_bytes();
    if ours != theirs {
        return Err(ClientError::Integrity {
            what: name.to_owned(),
            expected: troca_proto::hex(&theirs),
            actual: troca_proto::hex(&ours),
        });
    }
    Ok((ours, header))
}

/// Hash requests sent together, at most.
const HASH_WINDOW: usize = 1024;

/// A file of the hub's whose BLAKE3 hash is wanted: its name and the size it is known to have.
#[derive(Debug, Clone)]
pub struct SizedName {
    pub name: String,
    pub size: u64,
}

/// The hub's BLAKE3 hash of each file, asked for as a `Get` from the file's end: no byte is
/// sent, and the hub hashes a file it had not hashed yet (and remembers it), as a download
/// would. `None` where the hub refuses (the file is gone) or the file no longer has that size.
pub async fn hashes_of(
    client: &mut HubClient,
    files: &[SizedName],
) -> Result<Vec<Option<Hash>>, ClientError> {
    let mut out = Vec::with_capacity(files.len());
    for window in files.chunks(HASH_WINDOW) {
        for f in window {
            client.queue(
                &Get {
                    name: f.name.clone(),
                    offset: f.size,
                }
                .into(),
            );
        }
        client.flush().await?;
        for f in window {
            out.push(hash_from_end(client, f.size).await?);
        }
    }
    Ok(out)
}

/// Reads the answer to a `Get` from offset `size`: the file's hash if it still has that size.
async fn hash_from_end(client: &mut HubClient, size: u64) -> Result<Option<Hash>, ClientError> {
    let unexpected = |m: Message| ClientError::Protocol(format!("unexpected {}", m.name()));
    let header = match client.answer().await {
        Ok(Message::FileHeader(h)) => h,
        Ok(other) => return Err(unexpected(other)),
        Err(ClientError::Hub { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    // A file that has shrunk comes whole (from 0), one that has grown from `size`: skipped.
    let mut left = header.size.saturating_sub(header.offset);
    let mut skip = vec![0u8; left.min(64 * 1024) as usize];
    while left > 0 {
        let n = left.min(skip.len() as u64) as usize;
        client.read_exact_raw(&mut skip[..n]).await?;
        left -= n as u64;
    }
    match client.answer().await? {
        Message::FileEnd(end) => Ok((header.size == size).then_some(end.blake3)),
        other => Err(unexpected(other)),
    }
}

/// Downloads small files into memory over one connection, keeping up to `depth` `Get`s in
/// flight: `next` names the next file (`None`: ask for no more), `got` receives each verified
/// file in the order asked. Requests go out half a window at a time, in one write.
pub async fn get_pipelined(
    client: &mut HubClient,
    depth: usize,
    mut next: impl FnMut() -> Option<String>,
    mut got: impl FnMut(&str, &[u8]),
) -> Result<(), ClientError> {
    let depth = depth.max(1);
    let mut asked: VecDeque<String> = VecDeque::with_capacity(depth);
    let mut data = Vec::new();
    let mut more = true;
    loop {
        if more && asked.len() <= depth / 2 {
            while asked.len() < depth {
                let Some(name) = next() else {
                    more = false;
                    break;
                };
                client.queue(
                    &Get {
                        name: name.clone(),
                        offset: 0,
                    }
                    .into(),
                );
                asked.push_back(name);
            }
            client.flush().await?;
        }
        let Some(name) = asked.pop_front() else {
            return Ok(());
        };
        read_whole(client, &name, &mut data).await?;
        got(&name, &data);
    }
}

/// Makes a batch of written files durable (one `syncfs`), puts each under its name, and
/// fsyncs each folder once.
fn settle(written: Vec<Fetched>) -> Vec<Settled> {
    let Some(first) = written.first() else {
        return Vec::new();
    };
    let synced =
        std::fs::File::open(folder_of(&first.target)).and_then(|d| Ok(rustix::fs::syncfs(&d)?));
    let mut folders: HashSet<PathBuf> = HashSet::new();
    let mut settled = Vec::with_capacity(written.len());
    for f in written {
        let placed = synced
            .as_ref()
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
            .and_then(|()| put_in_place(&f.staged, &f.target, f.replace));
        let outcome = match placed {
            Ok(path) => {
                folders.insert(folder_of(&path).to_path_buf());
                Ok(SmallGot {
                    path,
                    size: f.size,
                    blake3: f.blake3,
                })
            }
            Err(e) => {
                let target = f.target;
                f.staged.discard();
                Err(ClientError::local(&target, e))
            }
        };
        settled.push(Settled {
            index: f.index,
            outcome,
        });
    }
    for dir in folders {
        if let Err(e) = std::fs::File::open(&dir).and_then(|d| d.sync_all()) {
            tracing::warn!(folder = %dir.display(), error = %e, "cannot fsync a folder");
        }
    }
    settled
}

/// Puts a staged file at `target`, or at a free name beside it if `target` exists and may not
/// be replaced. Returns where it went.
fn put_in_place(staged: &Staged, target: &Path, replace: bool) -> std::io::Result<PathBuf> {
    let file = match staged {
        Staged::Part(part) => return place_part(part, target, replace),
        Staged::Unnamed(file) => file,
    };
    match link_unnamed(file, target) {
        Ok(()) => Ok(target.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let free = free_local_path(target);
            link_unnamed(file, &free)?;
            Ok(free)
        }
        Err(e) => Err(e),
    }
}

/// Renames `part` to `target`, or to a free name beside it if `target` exists and may not be
/// replaced. Returns where it went.
fn place_part(part: &Path, target: &Path, replace: bool) -> std::io::Result<PathBuf> {
    match crate::durable::rename(part, target, replace) {
        Ok(()) => Ok(target.to_path_buf()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && !replace => {
            let free = free_local_path(target);
            crate::durable::rename(part, &free, false)?;
            Ok(free)
        }
        Err(e) => Err(e),
    }
}
