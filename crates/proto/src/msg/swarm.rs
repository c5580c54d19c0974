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

/// The most pieces a bitfield describes: as many as a file can have.
pub const MAX_BITFIELD_PIECES: u32 = crate::pieces::MAX_PIECES as u32;

/// Asks which pieces of file `id` the peer holds, and to be told of each new one: the answer
/// is a [`Bitfield`], then a [`Have`] whenever the peer verifies another piece, for as long as
/// the connection lasts. `sharing` says the asker serves the pieces it gets to others (a
/// partial holder), so a full copy may send it pieces the rest of the crowd lacks first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub id: Hash,
    pub sharing: bool,
}

impl Holding {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.id);
        out.put_bool(self.sharing);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.hash()?,
            sharing: r.bool("sharing")?,
        })
    }
}

/// Which of file `id`'s `count` pieces the peer holds: piece `i` is bit `i % 8` of byte `i / 8`;
/// the bits past `count` are zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitfield {
    pub id: Hash,
    pub count: u32,
    pub bits: Vec<u8>,
}

impl Bitfield {
    /// The bitfield of `held`.
    pub fn of(id: Hash, held: &[bool]) -> Self {
        let mut bits = vec![0u8; held.len().div_ceil(8)];
        for (i, _) in held.iter().enumerate().filter(|(_, &h)| h) {
            bits[i / 8] |= 1 << (i % 8);
        }
        Self {
            id,
            count: held.len() as u32,
            bits,
        }
    }

    /// One flag per piece.
    pub fn held(&self) -> Vec<bool> {
        (0..self.count as usize)
            .map(|i| self.bits[i / 8] & (1 << (i % 8)) != 0)
            .collect()
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.id);
        out.put_u32(self.count);
        out.extend_from_slice(&self.bits);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.hash()?;
        let count = r.u32()?;
        if count == 0 || count > MAX_BITFIELD_PIECES {
            return Err(DecodeError::BadValue {
                field: "piece count",
                value: count.into(),
            });
        }
        let bits = r.exactly(count.div_ceil(8) as usize)?.to_vec();
        let spare = count % 8;
        if spare != 0 && bits[bits.len() - 1] >> spare != 0 {
            return Err(DecodeError::BadValue {
                field: "bits past the last piece",
                value: u64::from(bits[bits.len() - 1]),
            });
        }
        Ok(Self { id, count, bits })
    }
}

/// The peer now holds piece `index` of file `id` (sent unasked, between answers, after a
/// [`Holding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Have {
    pub id: Hash,
    pub index: u32,
}

impl Have {
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

/// An upload slot is free: sent unasked, once, to a downloader whose `GetPiece` this peer
/// answered `Error(Busy)` (all its slots were sending), so it may ask again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotFree;

impl SlotFree {
    pub(crate) fn encode(&self, _out: &mut [u8]) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}
