//! Multipart uploads into the object store: bytes gather into parts of a fixed power-of-two
//! size, each part is hashed (its BLAKE3 subtree's chaining value) and sent while the next
//! fills, with a bounded number in flight, and recorded in the database as soon as it is
//! stored, so any hub can resume the upload from the parts held. The file's hash is made from
//! the parts' chaining values: BLAKE3 is a tree, and a power-of-two part is one of its
//! subtrees, so no byte is read twice and nothing has to be re-read on resume.

use super::Shared;
use crate::pg::db_err;
use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use troca_net::{IoBuf, CACHE_CHUNK};
use troca_proto::Hash;

/// The smallest part (S3 wants 5 MiB at least for every part but the last).
pub const MIN_PART: u64 = 8 << 20;
/// S3's most parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Parts of one upload being sent at once.
const IN_FLIGHT: usize = 4;
/// Tries per part before the upload fails.
const TRIES: u32 = 3;

/// The part size for a file of `size` bytes: a power of two, at least [`MIN_PART`], and
/// large enough that the file fits in S3's part count.
pub fn part_size_for(size: u64) -> u64 {
    size.div_ceil(MAX_PARTS).max(MIN_PART).next_power_of_two()
}

/// The chaining value of part `index` of a file of `total` bytes; for a file of one part, the
/// file's hash itself.
pub fn part_cv(data: &[u8], index: u64, part_size: u64, total: u64) -> ChainingValue {
    if total <= part_size {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index * part_size);
    h.update(data);
    h.finalize_non_root()
}

/// The hash of a file of `total` bytes from its parts' chaining values, in order.
pub fn root_hash(cvs: &[ChainingValue], part_size: u64, total: u64) -> Hash {
    if cvs.len() <= 1 {
        return cvs
            .first()
            .copied()
            .unwrap_or(*blake3::hash(b"").as_bytes());
    }
    let left = left_subtree_len(total);
    let k = (left / part_size) as usize;
    let l = subtree(&cvs[..k], part_size, left);
    let r = subtree(&cvs[k..], part_size, total - left);
    *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
}

fn subtree(cvs: &[ChainingValue], part_size: u64, len: u64) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0];
    }
    let left = left_subtree_len(len);
    let k = (left / part_size) as usize;
    let l = subtree(&cvs[..k], part_size, left);
    let r = subtree(&cvs[k..], part_size, len - left);
    merge_subtrees_non_root(&l, &r, Mode::Hash)
}

/// A part stored: its number (from 0), the store's tag for it, and its chaining value.
#[derive(Debug, Clone)]
pub struct StoredPart {
    pub index: u64,
    pub etag: String,
    pub cv: ChainingValue,
}

/// Where one multipart upload goes.
#[derive(Debug)]
pub struct Target {
    /// The upload's key in the records.
    pub key: String,
    pub path: object_store::path::Path,
    pub upload_id: String,
    pub part_size: u64,
    pub size: u64,
}

/// Gathers an upload's bytes into parts and sends them.
#[derive(Debug)]
pub struct PartWriter {
    shared: Arc<Shared>,
    target: Arc<Target>,
    /// The part being filled and its number.
    current: Vec<u8>,
    index: u64,
    stored: BTreeMap<u64, StoredPart>,
    sending: JoinSet<io::Result<StoredPart>>,
    mine: Arc<Semaphore>,
    spare: Option<IoBuf>,
    failed: Option<io::Error>,
    /// The memory of the part being filled.
    reserved: Option<OwnedSemaphorePermit>,
    /// Held by each part in flight too: a part sent after the client left is still recorded
    /// before another hub may resume the upload.
    claim: Arc<dyn std::any::Any + Send + Sync>,
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // Whole parts go on to the store and the records, so a resume starts after them.
        self.sending.detach_all();
    }
}

impl PartWriter {
    /// Continues `target` after the parts already `held` (the first `held.len()` parts).
    pub fn new(
        shared: Arc<Shared>,
        target: Arc<Target>,
        held: Vec<StoredPart>,
        claim: Arc<dyn std::any::Any + Send + Sync>,
    ) -> Self {
        let index = held.len() as u64;
        Self {
            claim,
            shared,
            target,
            current: Vec::new(),
            index,
            stored: held.into_iter().map(|p| (p.index, p)).collect(),
            sending: JoinSet::new(),
            mine: Arc::new(Semaphore::new(IN_FLIGHT)),
            spare: None,
            failed: None,
            reserved: None,
        }
    }

    /// A buffer for the next bytes (`None` once sending failed).
    pub async fn buffer(&mut self) -> Option<IoBuf> {
        if self.failed.is_some() {
            return None;
        }
        Some(self.spare.take().unwrap_or_else(|| IoBuf::new(CACHE_CHUNK)))
    }

    /// Takes the first `filled` bytes of `buf`; false once sending failed.
    pub async fn write(&mut self, buf: IoBuf, filled: usize) -> bool {
        let ok = self.write_from(&buf[..filled]).await;
        self.spare = Some(buf);
        ok
    }

    /// Takes `data`; false once sending failed.
    pub async fn write_from(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() && self.failed.is_none() {
            let want = self.part_len(self.index) as usize;
            if self.reserved.is_none() {
                if !self.reserve(want).await {
                    return false;
                }
                self.current.reserve_exact(want);
            }
            let take = (want - self.current.len()).min(data.len());
            self.current.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.current.len() == want {
                self.launch().await;
            }
        }
        self.failed.is_none()
    }

    /// Reserves the memory of a part of `len` bytes before its buffer is made, so all uploads
    /// together hold at most the store's part memory; waits while others hold it.
    async fn reserve(&mut self, len: usize) -> bool {
        let mib = (len >> 20).clamp(1, self.shared.part_memory_mib) as u32;
        match Arc::clone(&self.shared.part_memory)
            .acquire_many_owned(mib)
            .await
        {
            Ok(p) => {
                self.reserved = Some(p);
                true
            }
            Err(_) => false,
        }
    }

    fn part_len(&self, index: u64) -> u64 {
        let t = &self.target;
        t.part_size.min(t.size.saturating_sub(index * t.part_size))
    }

    /// Sends the part just filled, waiting while too many are in flight.
    async fn launch(&mut self) {
        self.reap();
        let Ok(mine) = Arc::clone(&self.mine).acquire_owned().await else {
            return;
        };
        // An empty file's one part has reserved nothing yet.
        if self.reserved.is_none() && !self.reserve(0).await {
            return;
        }
        let Some(memory) = self.reserved.take() else {
            return;
        };
        let data = std::mem::take(&mut self.current);
        let index = self.index;
        self.index += 1;
        let (shared, target) = (Arc::clone(&self.shared), Arc::clone(&self.target));
        let claim = Arc::clone(&self.claim);
        self.sending.spawn(async move {
            let sent = send_part(shared, target, index, data, [mine, memory]).await;
            drop(claim);
            sent
        });
    }

    /// Collects the parts already sent, keeping the first failure.
    fn reap(&mut self) {
        while let Some(done) = self.sending.try_join_next() {
            self.collect(done);
        }
    }

    fn collect(&mut self, done: Result<io::Result<StoredPart>, tokio::task::JoinError>) {
        match done {
            Ok(Ok(part)) => {
                self.stored.insert(part.index, part);
            }
            Ok(Err(e)) => {
                self.failed.get_or_insert(e);
            }
            Err(e) => {
                self.failed.get_or_insert(io::Error::other(e));
            }
        }
    }

    /// The sender broke off: waits for the parts on their way (each recorded as it is stored,
    /// for a later upload to resume from), sending no partial one.
    pub async fn stop(mut self) {
        while let Some(done) = self.sending.join_next().await {
            self.collect(done);
        }
    }

    /// Sends what is left and waits for every part: all the parts, in order, and the file's
    /// hash.
    pub async fn finish(mut self) -> io::Result<(Vec<StoredPart>, Hash)> {
        self.wait().await
    }

    async fn wait(&mut self) -> io::Result<(Vec<StoredPart>, Hash)> {
        // Every full part was sent as it filled; an empty file is one empty part.
        if self.failed.is_none() && self.target.size == 0 && self.index == 0 {
            self.launch().await;
        }
        while let Some(done) = self.sending.join_next().await {
            self.collect(done);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let parts: Vec<StoredPart> = std::mem::take(&mut self.stored).into_values().collect();
        let t = &self.target;
        let expected = t.size.div_ceil(t.part_size).max(1);
        if parts.len() as u64 != expected
            || parts.iter().enumerate().any(|(i, p)| p.index != i as u64)
        {
            return Err(io::Error::other(format!(
                "{} of {expected} parts stored",
                parts.len()
            )));
        }
        let cvs: Vec<ChainingValue> = parts.iter().map(|p| p.cv).collect();
        let hash = root_hash(&cvs, t.part_size, t.size);
        Ok((parts, hash))
    }
}

/// Hashes a part, stores it (retrying a failed try), and records it.
async fn send_part(
    shared: Arc<Shared>,
    target: Arc<Target>,
    index: u64,
    data: Vec<u8>,
    _permits: [OwnedSemaphorePermit; 2],
) -> io::Result<StoredPart> {
    let (part_size, size) = (target.part_size, target.size);
    let (cv, data) = tokio::task::spawn_blocking(move || {
        let cv = part_cv(&data, index, part_size, size);
        (cv, Bytes::from(data))
    })
    .await
    .map_err(io::Error::other)?;
    let mut tries = 0;
    let PartId { content_id: etag } = loop {
        tries += 1;
        let sent = shared
            .s3
            .put_part(
                &target.path,
                &target.upload_id,
                index as usize,
                data.clone().into(),
            )
            .await;
        match sent {
            Ok(id) => break id,
            Err(e) if tries >= TRIES => {
                return Err(io::Error::other(format!("object store: {e}")));
            }
            Err(e) => {
                tracing::warn!(error = %e, part = index, "part not stored; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(200 << tries)).await;
            }
        }
    };
    let part = StoredPart { index, etag, cv };
    record_part(&shared, &target, &part)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(part)
}

async fn record_part(
    shared: &Shared,
    target: &Target,
    part: &StoredPart,
) -> Result<(), crate::error::HubError> {
    // Both statements may be sent again: the part is recorded by its number.
    match record_part_once(shared, target, part).await {
        Err(crate::error::HubError::ConnectionEnded(why)) => {
            shared.db.recover(&why).await;
            record_part_once(shared, target, part).await
        }
        done => done,
    }
}

async fn record_part_once(
    shared: &Shared,
    target: &Target,
    part: &StoredPart,
) -> Result<(), crate::error::HubError> {
    let c = shared.db.get().await?;
    c.execute(
        "INSERT INTO upload_parts (key, part, etag, cv) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key, part) DO UPDATE SET etag = excluded.etag, cv = excluded.cv",
        &[
            &target.key,
            &(part.index as i32),
            &part.etag,
            &part.cv.as_slice(),
        ],
    )
    .await
    .map_err(db_err)?;
    c.execute(
        "UPDATE uploads SET touched_ns = $2 WHERE key = $1",
        &[&target.key, &crate::pg::now_ns()],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hash_by_parts(data: &[u8], part_size: u64) -> Hash {
        let total = data.len() as u64;
        let cvs: Vec<ChainingValue> = if total == 0 {
            vec![part_cv(data, 0, part_size, 0)]
        } else {
            data.chunks(part_size as usize)
                .enumerate()
                .map(|(i, c)| part_cv(c, i as u64, part_size, total))
                .collect()
        };
        root_hash(&cvs, part_size, total)
    }

    #[test]
    fn the_hash_made_of_parts_is_the_files_hash() {
        // Small parts stand for the real ones: the tree is the same at every power of two.
        for len in [
            0usize, 1, 1023, 1024, 1025, 4096, 4097, 8191, 12288, 40_000, 65_536,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for part_size in [1024u64, 2048, 4096] {
                assert_eq!(
                    hash_by_parts(&data, part_size),
                    *blake3::hash(&data).as_bytes(),
                    "len {len}, parts of {part_size}"
                );
            }
        }
    }

    #[test]
    fn part_sizes_are_powers_of_two_within_the_part_count() {
        for size in [0u64, 1, MIN_PART, 80 << 30, 81 << 30, 5 << 40] {
            let p = part_size_for(size);
            assert!(p.is_power_of_two() && p >= MIN_PART);
            assert!(size.div_ceil(p) <= MAX_PARTS, "{size}");
        }
    }

    proptest! {
        #[test]
        fn any_file_hashes_the_same_by_parts(len in 0usize..70_000, shift in 10u32..14, seed: u8) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            prop_assert_eq!(hash_by_parts(&data, 1 << shift), *blake3::hash(&data).as_bytes());
        }
    }
}
