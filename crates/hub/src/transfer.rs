//! The upload pipeline every face feeds: [`Incoming`] takes the bytes of one upload as they
//! arrive and hands them to the store's writer: for a local file, full buffers go to a writer
//! thread and each is hashed as it lands, while it is still in the cache; for an object store,
//! bytes gather into parts that are hashed and sent while the next fills (`store::object::parts`).
//! A small upload that can never resume (a web or WebDAV `PUT`) skips both: its bytes gather in
//! memory (within `--batch-memory`) and are stored in a batch with any others that finish at
//! the same time (`small.rs`), which costs no thread, no partial file and no record of it.
//! `Hub::finish_upload` then checks the sender's hash, commits and records. The native
//! connection reads its socket straight into the writer's buffers; the web face copies each
//! body chunk in.

use crate::error::HubError;
use crate::quota::QuotaHold;
use crate::running::RunningUpload;
use crate::store::object::parts::PartWriter;
use crate::store::PartialUpload;
use std::io;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use troca_net::durable::FileWriter;
use troca_net::{IoBuf, CACHE_CHUNK};
use troca_proto::Hash;

/// The bytes of a [`crate::store::MemoryUpload`] as they come, and a buffer lent to the native
/// face.
#[derive(Debug, Default)]
struct Gathered {
    data: Vec<u8>,
    spare: Option<IoBuf>,
}

/// Where an upload's bytes go.
#[derive(Debug)]
enum Writer {
    File(FileWriter),
    Parts(PartWriter),
    Memory(Gathered),
}

impl Writer {
    async fn buffer(&mut self) -> Option<IoBuf> {
        match self {
            Writer::File(w) => w.buffer().await,
            Writer::Parts(w) => w.buffer().await,
            Writer::Memory(h) => Some(h.spare.take().unwrap_or_else(|| IoBuf::new(CACHE_CHUNK))),
        }
    }

    async fn write(&mut self, buf: IoBuf, filled: usize) -> bool {
        match self {
            Writer::File(w) => w.write(buf, filled).await,
            Writer::Parts(w) => w.write(buf, filled).await,
            Writer::Memory(h) => {
                h.data.extend_from_slice(&buf[..filled]);
                h.spare = Some(buf);
                true
            }
        }
    }

    async fn write_from(&mut self, data: &[u8]) -> bool {
        match self {
            Writer::File(w) => w.write_from(data).await,
            Writer::Parts(w) => w.write_from(data).await,
            Writer::Memory(h) => {
                h.data.extend_from_slice(data);
                true
            }
        }
    }

    /// The sender broke off: waits for what is on its way to be stored, whole or not.
    async fn stop(self) -> io::Result<()> {
        match self {
            Writer::File(w) => w.finish().await.map(drop),
            Writer::Parts(w) => {
                w.stop().await;
                Ok(())
            }
            Writer::Memory(_) => Ok(()),
        }
    }

    /// Waits for every byte to be stored; for parts, records them and the hash they make.
    async fn finish(self, upload: &mut PartialUpload) -> io::Result<()> {
        match (self, upload) {
            (Writer::File(w), _) => w.finish().await.map(drop),
            (Writer::Parts(w), PartialUpload::Object(u)) => {
                let (parts, hash) = w.finish().await?;
                u.completed(parts, hash);
                Ok(())
            }
            (Writer::Memory(h), PartialUpload::Memory(u)) => {
                u.data = h.data;
                Ok(())
            }
            (Writer::Parts(_) | Writer::Memory(_), _) => Err(io::Error::other(
                "an upload's bytes in another store's writer",
            )),
        }
    }
}

/// An upload whose bytes are arriving.
#[derive(Debug)]
pub struct Incoming {
    upload: PartialUpload,
    /// `None` once storing failed: the bytes still arriving are read and dropped, so the
    /// connection stays in step, and the failure is reported at the end.
    writer: Option<Writer>,
    failed: Option<io::Error>,
    /// A buffer for dropped bytes, reused.
    spare: Option<IoBuf>,
    remaining: u64,
    /// Its place among the uploads its owner may take over (see `running.rs`).
    running: Option<Arc<RunningUpload>>,
    /// Its share of its address's upload quota, held until it is stored or given up.
    quota: Option<QuotaHold>,
}

/// A buffer to fill with the next bytes of an upload: at most [`Space::want`] of them.
#[derive(Debug)]
pub struct Space {
    pub buf: IoBuf,
    pub want: usize,
}

impl Incoming {
    /// Starts the writer of an upload just begun (or resumed).
    pub(crate) async fn start(mut upload: PartialUpload) -> Result<Self, HubError> {
        let remaining = upload.size() - upload.offset();
        let writer = match &mut upload {
            PartialUpload::Local(u) => {
                let cannot = |e| HubError::io(format!("cannot store {}", u.name), e);
                let file = u.file.try_clone().map_err(cannot)?;
                let writer = FileWriter::spawn(file, u.offset, remaining)
                    .await
                    .map_err(cannot)?;
                // A resumed upload must not reopen the file while this one's last buffers are
                // written.
                writer.hold_until_written(u.claim());
                Writer::File(writer)
            }
            PartialUpload::Object(u) => Writer::Parts(u.writer()),
            PartialUpload::Memory(u) => Writer::Memory(Gathered {
                data: Vec::with_capacity(usize::try_from(u.size).unwrap_or(0)),
                spare: None,
            }),
        };
        Ok(Self {
            upload,
            writer: Some(writer),
            failed: None,
            spare: None,
            remaining,
            running: None,
            quota: None,
        })
    }

    /// Enters the upload among those its owner may take over. Its file writer holds the entry
    /// too: the owner's next try waits for the last bytes to be written.
    pub(crate) fn count_against(&mut self, quota: Option<QuotaHold>) {
        self.quota = quota;
    }

    /// The quota share, for the caller to keep once the upload is stored.
    pub(crate) fn take_quota(&mut self) -> Option<QuotaHold> {
        self.quota.take()
    }

    pub(crate) fn run_as(&mut self, running: Arc<RunningUpload>) {
        if let Some(Writer::File(w)) = &self.writer {
            w.hold_until_written(Arc::clone(&running));
        }
        self.running = Some(running);
    }

    /// Cancelled when the owner takes the upload over from another connection (never, for an
    /// upload nobody may take over).
    pub fn taken_over(&self) -> CancellationToken {
        self.running
            .as_ref()
            .map_or_else(CancellationToken::new, |r| r.stopped())
    }

    /// The name it is stored under.
    pub fn name(&self) -> String {
        self.upload.name().to_string()
    }

    /// Its whole size.
    pub fn size(&self) -> u64 {
        self.upload.size()
    }

    /// Where the bytes to send start (more than 0 when resuming).
    pub fn offset(&self) -> u64 {
        self.upload.offset()
    }

    /// Bytes still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// A buffer for the next bytes, from the writer (waiting while the disk catches up).
    pub async fn space(&mut self) -> Space {
        let from_writer = match self.writer.as_mut() {
            Some(w) => w.buffer().await,
            None => None,
        };
        if from_writer.is_none() {
            self.stop_writer().await;
        }
        let buf = from_writer
            .or_else(|| self.spare.take())
            .unwrap_or_else(|| IoBuf::new(CACHE_CHUNK));
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        Space { buf, want }
    }

    /// Bytes just received into a [`Space`]: hashed now, while they are in the cache.
    pub fn received(&mut self, bytes: &[u8]) {
        if let (Some(_), PartialUpload::Local(u)) = (&self.writer, &mut self.upload) {
            u.hasher.update(bytes);
        }
    }

    /// Hands a filled [`Space`] (its first `filled` bytes, all [`Incoming::received`]) to the
    /// writer.
    pub async fn store(&mut self, space: Space, filled: usize) {
        self.remaining -= filled as u64;
        match self.writer.as_mut() {
            Some(w) => {
                if !w.write(space.buf, filled).await {
                    self.stop_writer().await;
                }
            }
            None => self.spare = Some(space.buf),
        }
    }

    /// Takes bytes from a body chunk (the web face): hashes and queues them. Refuses more than
    /// the announced size, and stops at a storing failure.
    pub async fn take(&mut self, data: &[u8]) -> Result<(), HubError> {
        if data.len() as u64 > self.remaining {
            return Err(HubError::BadRequest(
                "more bytes than Content-Length".into(),
            ));
        }
        self.remaining -= data.len() as u64;
        if let PartialUpload::Local(u) = &mut self.upload {
            u.hasher.update(data);
        }
        let stored = match self.writer.as_mut() {
            Some(w) => w.write_from(data).await,
            None => false,
        };
        if !stored {
            self.stop_writer().await;
            return Err(self.storing_error());
        }
        Ok(())
    }

    /// Ends a writer that refused a buffer and keeps why. It never stops without a reason: the
    /// upload must not be accepted with a buffer missing.
    async fn stop_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            let e = w.finish(&mut self.upload).await.err();
            self.failed = Some(e.unwrap_or_else(|| io::Error::other("the file writer stopped")));
        }
    }

    /// The storing failure, taken (its OS error code says which refusal it is: a full disk).
    fn storing_error(&mut self) -> HubError {
        let why = self
            .failed
            .take()
            .unwrap_or_else(|| io::Error::other("not stored"));
        HubError::io(format!("cannot store {}", self.upload.name()), why)
    }

    /// Waits for every byte to be written; the storing failure, if any.
    async fn written(&mut self) -> Result<(), HubError> {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.finish(&mut self.upload).await {
                self.failed = Some(e);
            }
        }
        match self.failed {
            Some(_) => Err(self.storing_error()),
            None => Ok(()),
        }
    }

    /// Gives the upload up because of `why`, deleting its data; returns the storing failure if
    /// there was one (it explains the rest), else `why`.
    pub async fn abandon(mut self, why: HubError) -> HubError {
        let stored = self.written().await;
        self.upload.discard();
        stored.err().unwrap_or(why)
    }

    /// The sender broke off (`why`): what was stored stays for a later upload of the same file
    /// to resume, when one could; else as [`Incoming::abandon`].
    pub async fn interrupted(mut self, why: HubError) -> HubError {
        if !self.upload.may_resume() {
            return self.abandon(why).await;
        }
        if let Some(Err(e)) = match self.writer.take() {
            Some(w) => Some(w.stop().await),
            None => None,
        } {
            self.failed.get_or_insert(e);
        }
        if self.failed.is_none() {
            return why;
        }
        // Storing failed (a full disk): what is held may be wrong, so it goes.
        let stored = self.storing_error();
        self.upload.discard();
        stored
    }

    /// Every byte has arrived: waits for them to be stored; the upload, ready to be checked
    /// and committed, and the hash of what it received.
    pub(crate) async fn complete(mut self) -> Result<(PartialUpload, Hash), HubError> {
        if let Err(e) = self.written().await {
            tracing::warn!(error = %e, "upload failed");
            self.upload.discard();
            return Err(e);
        }
        if self.remaining > 0 {
            let (size, got) = (self.upload.size(), self.upload.size() - self.remaining);
            let e = HubError::BadRequest(format!("the body ended after {got} of {size} bytes"));
            self.upload.discard();
            return Err(e);
        }
        let hash = match &self.upload {
            PartialUpload::Local(u) => *u.hasher.finalize().as_bytes(),
            PartialUpload::Object(u) => match u.hash() {
                Some(h) => h,
                None => return Err(HubError::Internal("an upload without its hash".into())),
            },
            PartialUpload::Memory(u) => *blake3::hash(&u.data).as_bytes(),
        };
        Ok((self.upload, hash))
    }
}
