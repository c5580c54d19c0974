//! Listing: `List` asks, `Entries` frames answer until one has `last` set.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};
use crate::frame::MAX_FRAME_LEN;
use crate::Hash;

/// Asks for the files whose names start with `prefix` (all files when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub prefix: String,
}

impl List {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.prefix);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            prefix: r.str("prefix", MAX_WIRE_NAME)?,
        })
    }
}

/// One file in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: i64,
    /// The BLAKE3 hash of the contents, when the hub already knows it.
    pub blake3: Option<Hash>,
}

impl Entry {
    /// The most bytes this entry takes on the wire.
    fn encoded_len(&self) -> usize {
        2 + self.name.len() + 8 + 8 + 1 + self.blake3.map_or(0, |h| h.len())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.size);
        out.put_i64(self.modified_ns);
        out.put_opt_hash(self.blake3.as_ref());
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            size: r.u64()?,
            modified_ns: r.i64()?,
            blake3: r.opt_hash("blake3")?,
        })
    }
}

/// One chunk of a listing. The hub sends as many as it needs, each within the frame limit; the
/// one with `last` set ends the answer (it may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entries {
    pub entries: Vec<Entry>,
    pub last: bool,
    /// Set on the last chunk of a search that may have left names out: it reached its most
    /// answers, or the most names it may look at. Never set on a listing.
    pub cut: bool,
}

/// The flags byte that ends an `Entries` frame.
const LAST: u8 = 1;
const CUT: u8 = 2;

impl Entries {
    /// Whether `entry` still fits in this chunk's frame.
    pub fn has_room_for(&self, entry: &Entry) -> bool {
        // kind + count + last flag, then the entries.
        let used: usize = 1 + 4 + 1 + self.entries.iter().map(Entry::encoded_len).sum::<usize>();
        used + entry.encoded_len() <= MAX_FRAME_LEN
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u32(self.entries.len() as u32);
        for e in &self.entries {
            e.encode(out);
        }
        out.put_u8((u8::from(self.last) * LAST) | (u8::from(self.cut) * CUT));
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u32()? as usize;
        // Each entry takes at least 19 bytes, so a count larger than the frame could hold is a
        // lie; refusing it early stops a 4-byte frame from reserving gigabytes.
        if count > MAX_FRAME_LEN / 19 {
            return Err(DecodeError::BadValue {
                field: "count",
                value: count as u64,
            });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(Entry::decode(r)?);
        }
        let flags = r.u8()?;
        if flags & !(LAST | CUT) != 0 {
            return Err(DecodeError::BadValue {
                field: "flags",
                value: flags.into(),
            });
        }
        Ok(Self {
            entries,
            last: flags & LAST != 0,
            cut: flags & CUT != 0,
        })
    }
}
