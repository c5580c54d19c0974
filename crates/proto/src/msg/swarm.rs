//! Peer-to-peer messages of the swarm: a downloader asks a peer for a file's piece hashes
//! (`Pieces` → `PieceHashes`) and for pieces (`GetPiece` → `PieceData` then the raw bytes).
//! Peers speak the same framing and handshake (`Hello`/`Welcome`) as the hub; files are named by
//! their id (BLAKE3 hash), never by a path, so a peer cannot be asked for anything it does not
//! share.

use crate::codec::{DecodeError, Put, Reader};
use crate::Hash;

/// The most piece hashes in one `PieceHashes` frame (32 KiB of hashes, well under a frame).
pub const HASHES_PER_FRAME: usize = 1024;

/// Asks for the piece hashes of file `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    pub id: Hash,
}

impl Pieces {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.id);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { id: r.hash()? })
    }
}

/// One chunk of a file's piece hashes, in order; `last` marks the final chunk. `size` is the
/// file's length, which fixes its piece layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceHashes {
    pub size: u64,
    pub hashes: Vec<Hash>,
    pub last: bool,
}

impl PieceHashes {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.hashes.len() <= HASHES_PER_FRAME);
        out.put_u64(self.size);
        out.put_u16(self.hashes.len() as u16);
        for h in &self.hashes {
            out.put_hash(h);
        }
        out.put_bool(self.last);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let size = r.u64()?;
        let n = r.u16()? as usize;
        if n > HASHES_PER_FRAME {
            return Err(DecodeError::BadValue {
                field: "hash count",
                value: n as u64,
            });
        }
        let hashes = (0..n).map(|_| r.hash()).collect::<Result<_, _>>()?;
        Ok(Self {
            size,
            hashes,
            last: r.bool("last")?,
        })
    }
}

/// Asks for piece `index` of file `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetPiece {
    pub id: Hash,
    pub index: u32,
}

impl GetPiece {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.id);
        out.put_u32(self.index);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.hash()?,
            index: r.u32()?,
        })
    }
}

/// Announces piece `index`: exactly `len` raw bytes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceData {
    pub index: u32,
    pub len: u64,
}

impl PieceData {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.index);
        out.put_u64(self.len);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            index: r.u32()?,
            len: r.u64()?,
        })
    }
}
