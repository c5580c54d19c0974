//! Uploads: `Put` asks; the hub answers `PutReady` with the offset to send from; the client sends
//! the raw bytes and a `PutEnd`; the hub answers `PutDone` once the file is durable under its name.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put as _, Reader};
use crate::Hash;

/// Announces an upload of `size` bytes to `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub name: String,
    pub size: u64,
    /// The source file's modification time (ns since the epoch, 0 if unknown). With `name` and
    /// `size` it identifies an interrupted upload of the same file, which the hub resumes.
    pub source_mtime_ns: i64,
    /// Replace an existing file of that name.
    pub force: bool,
}

impl Put {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.size);
        out.put_i64(self.source_mtime_ns);
        out.put_bool(self.force);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            size: r.u64()?,
            source_mtime_ns: r.i64()?,
            force: r.bool("force")?,
        })
    }
}

/// The hub is ready: send the bytes from `offset` (the bytes it already holds) to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReady {
    pub offset: u64,
}

impl PutReady {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.offset);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { offset: r.u64()? })
    }
}

/// Follows the raw bytes of an upload: the BLAKE3 hash of the whole file as the client has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutEnd {
    pub blake3: Hash,
}

impl PutEnd {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.blake3);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { blake3: r.hash()? })
    }
}

/// The upload is verified, fsync'd and in place under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutDone {
    pub name: String,
    pub size: u64,
    pub blake3: Hash,
}

impl PutDone {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.size);
        out.put_hash(&self.blake3);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            size: r.u64()?,
            blake3: r.hash()?,
        })
    }
}

/// A whole small file in one frame: name, contents and the sender's hash, answered by `PutDone`
/// (or `Error`) like a `Put`. A client may send many without waiting for the answers, which come
/// in order; the hub stores them in batches (written, made durable together, then renamed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSmall {
    pub name: String,
    /// Replace an existing file of that name.
    pub force: bool,
    /// The BLAKE3 hash of `data`, as the sender has it.
    pub blake3: Hash,
    /// The source file's modification time (ns since the epoch, 0 if unknown): the stored
    /// file is given it.
    pub modified_ns: i64,
    pub data: Vec<u8>,
}

impl PutSmall {
    /// Bytes the frame takes besides the name and the data: length, kind, the name's length,
    /// `force`, the hash, the time, the data's length.
    pub const OVERHEAD: usize = 4 + 1 + 2 + 1 + 32 + 8 + 4;

    /// Whether a file of `size` bytes named `name` fits in one `PutSmall` frame.
    pub fn fits(name: &str, size: u64) -> bool {
        (Self::OVERHEAD + name.len()) as u64 + size <= crate::MAX_FRAME_LEN as u64 + 4
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_bool(self.force);
        out.put_hash(&self.blake3);
        out.put_i64(self.modified_ns);
        out.put_bytes(&self.data);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            force: r.bool("force")?,
            blake3: r.hash()?,
            modified_ns: r.i64()?,
            data: r.bytes()?,
        })
    }
}
