//! Uploads whose length is not known before they end: an HTTP body sent chunked (`curl -T -`
//! from a pipe, rclone's streamed uploads, a WebDAV client writing as it goes). The upload
//! pipeline needs the size first (it reserves the space, holds the quota, sizes an object
//! store's parts, and refuses a body that ends early or runs over), so such a body is gathered
//! first: in memory up to [`MEMORY_UPLOAD_MAX`] (taken from `--batch-memory`, as small uploads'
//! memory is; through a 64 KiB buffer of its own when that has no room), beyond that in an
//! unnamed file in the state folder, which vanishes when closed, the hub stopping included.
//! Each step of
//! [`SPOOL_STEP`] is checked against the room uploads may take and, for a client without a
//! token, its upload quota, so gathering cannot fill the disk or pass a quota either. Once
//! whole it is uploaded as any other, with its length known. The cost: its bytes are written
//! twice, and the disk holds them twice while it is stored.

use crate::access::Caller;
use crate::error::HubError;
use crate::quota::{Amount, QuotaHold};
use crate::service::{blocking, Hub, Resume, Uploaded};
use crate::store::{parse, MEMORY_UPLOAD_MAX};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use troca_proto::msg::Put;
use troca_proto::Hash;

/// How far ahead room and quota are checked while a body is gathered.
pub const SPOOL_STEP: u64 = 8 << 20;

/// The buffer of a body gathered while `--batch-memory` has no room for a whole small one:
/// written out each time it fills (a hop to the blocking pool each time: slower, and rare).
const SMALL_BUFFER: usize = 64 << 10;

/// A body being gathered until it ends (see the module's words).
pub struct Spool {
    hub: Arc<Hub>,
    caller: Caller,
    /// The upload, its size set once the body ends.
    put: Put,
    /// Bytes not yet written out: the whole body while it is small.
    memory: Vec<u8>,
    /// The share of `--batch-memory` `memory` takes, if any, and how much it may hold (0: not
    /// chosen yet).
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    cap: usize,
    file: Option<std::fs::File>,
    len: u64,
    /// How far room and quota have been checked.
    covered: u64,
    holds: Vec<QuotaHold>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("len", &self.len).finish()
    }
}

impl Hub {
    /// Starts gathering `put` (its size unknown) for `caller`, once the upload is allowed as far
    /// as can be told before its bytes (the name, rights, a lock, the file there now), so a
    /// refused one is refused before it sends them.
    pub async fn spool(self: &Arc<Self>, put: Put, caller: &Caller) -> Result<Spool, HubError> {
        let remote = parse(&put.name)?;
        let (hub, who, force) = (Arc::clone(self), caller.clone(), put.force);
        blocking(move || hub.may_upload(&who, &remote, force)).await?;
        Ok(Spool {
            hub: Arc::clone(self),
            caller: caller.clone(),
            put,
            memory: Vec::new(),
            permit: None,
            cap: 0,
            file: None,
            len: 0,
            covered: 0,
            holds: Vec::new(),
        })
    }

    /// Bytes a gathered body may still take: the store's room, and the state folder's disk
    /// less what `--keep-free` leaves on it.
    fn spool_room(&self) -> u64 {
        self.store()
            .room()
            .unwrap_or(u64::MAX)
            .min(self.scratch_room())
    }

    /// Bytes the hub's unnamed scratch files in its state folder (a body being gathered, a
    /// zip's central directory) may still take: its disk's free space less `--keep-free`.
    /// Blocking (a `statvfs`).
    pub fn scratch_room(&self) -> u64 {
        troca_net::durable::space(&self.config().state_dir)
            .map_or(u64::MAX, |s| self.config().keep_free.usable(s))
    }
}

impl Spool {
    /// Takes the next bytes of the body.
    pub async fn take(&mut self, data: &[u8]) -> Result<(), HubError> {
        let end = self.len + data.len() as u64;
        if end > self.covered {
            self.cover(end).await?;
        }
        if self.cap == 0 {
            self.reserve_buffer();
        }
        self.memory.extend_from_slice(data);
        self.len = end;
        // Written out a whole buffer at a time: one hop to the blocking pool per buffer, not
        // per frame of the body.
        if self.memory.len() >= self.cap {
            self.write_out().await?;
        }
        Ok(())
    }

    /// Takes the buffer's memory from `--batch-memory`, shared by all clients, when it has
    /// room for a whole small body: then a small body is never written out, and a large one
    /// goes out a MiB at a time. Else the body goes through a small buffer of its own, as the
    /// connection's other buffers are (never waiting: a body cannot be held up by others').
    fn reserve_buffer(&mut self) {
        let memory = Arc::clone(self.hub.batch_memory());
        let whole = (MEMORY_UPLOAD_MAX >> 10) as u32;
        // A whole small body fits, and one KiB more tells it is not small.
        (self.permit, self.cap) = match memory.try_acquire_many_owned(whole + 1) {
            Ok(p) => (Some(p), MEMORY_UPLOAD_MAX as usize + 1024),
            Err(_) => (None, SMALL_BUFFER),
        };
    }

    /// Appends what memory holds to the unnamed file (made the first time, in the state
    /// folder), keeping the buffer for the next bytes.
    async fn write_out(&mut self) -> Result<(), HubError> {
        let file = self.file.take();
        let buf = std::mem::take(&mut self.memory);
        let dir = self.hub.config().state_dir.clone();
        let (file, mut buf) = blocking(move || {
            let file = match file {
                Some(f) => f,
                None => tempfile::tempfile_in(&dir).map_err(spool_err)?,
            };
            (&file).write_all(&buf).map_err(spool_err)?;
            Ok((file, buf))
        })
        .await?;
        buf.clear();
        self.memory = buf;
        self.file = Some(file);
        Ok(())
    }

    /// Checks room and quota up to the step past `end`.
    async fn cover(&mut self, end: u64) -> Result<(), HubError> {
        let want = end.div_ceil(SPOOL_STEP).max(1) * SPOOL_STEP;
        let more = want - self.covered;
        let amount = Amount {
            bytes: more,
            files: 0,
        };
        if let Some(hold) = self.hub.count_upload(&self.caller, amount)? {
            self.holds.push(hold);
        }
        let hub = Arc::clone(&self.hub);
        let room = blocking(move || Ok(hub.spool_room())).await?;
        if room < more {
            return Err(HubError::NoSpace {
                needed: want,
                available: self.covered + room,
            });
        }
        self.covered = want;
        Ok(())
    }

    /// Uploads what was gathered, checked against the sender's hash when given. It never
    /// resumes (its sender would send it all again anyway): a time given is the file's.
    pub async fn upload(mut self, theirs: Option<Hash>) -> Result<Uploaded, HubError> {
        if self.file.is_some() && !self.memory.is_empty() {
            // All of it in the file, so the buffer can read it back.
            self.write_out().await?;
        }
        let Spool {
            hub,
            caller,
            mut put,
            memory,
            mut file,
            len,
            holds,
            cap,
            ..
        } = self;
        put.size = len;
        // The upload holds its own quota for the whole: the steps' holds go just before.
        drop(holds);
        let mut incoming = hub.begin_upload_with(&put, &caller, Resume::Never).await?;
        let fed = match file.take() {
            None => incoming.take(&memory).await,
            Some(file) => feed(file, memory, cap, &mut incoming).await,
        };
        if let Err(e) = fed {
            return Err(incoming.abandon(e).await);
        }
        hub.finish_upload(incoming, theirs, put.force, &caller)
            .await
    }
}

/// Reads the gathered file from its start into the upload, `cap` bytes at a time, in `buf`.
async fn feed(
    file: std::fs::File,
    mut buf: Vec<u8>,
    cap: usize,
    incoming: &mut crate::transfer::Incoming,
) -> Result<(), HubError> {
    let file = Arc::new(file);
    buf.resize(cap, 0);
    let mut at = 0u64;
    loop {
        let f = Arc::clone(&file);
        let (back, n) = blocking(move || {
            let n = f.read_at(&mut buf, at).map_err(spool_err)?;
            Ok((buf, n))
        })
        .await?;
        buf = back;
        if n == 0 {
            return Ok(());
        }
        incoming.take(&buf[..n]).await?;
        at += n as u64;
    }
}

fn spool_err(e: std::io::Error) -> HubError {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return HubError::DiskFull;
    }
    HubError::io("cannot gather an upload of unknown length", e)
}
