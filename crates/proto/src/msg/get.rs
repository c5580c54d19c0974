//! Downloads: `Get` asks; the hub answers `FileHeader`, the raw bytes, then `FileEnd`.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};
use crate::Hash;

/// Asks for a file's bytes from `offset` on (0 for the whole file; more to resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Get {
    pub name: String,
    pub offset: u64,
}

impl Get {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.offset);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            offset: r.u64()?,
        })
    }
}

/// Announces the file: exactly `size - offset` raw bytes follow, then a `FileEnd` frame. `offset`
/// is where the bytes start; the hub sets it to 0 when the requested offset was past the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub size: u64,
    pub offset: u64,
    pub modified_ns: i64,
}

impl FileHeader {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.size);
        out.put_u64(self.offset);
        out.put_i64(self.modified_ns);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let size = r.u64()?;
        let offset = r.u64()?;
        if offset > size {
            return Err(DecodeError::BadValue {
                field: "offset",
                value: offset,
            });
        }
        Ok(Self {
            size,
            offset,
            modified_ns: r.i64()?,
        })
    }
}

/// Closes a download with the BLAKE3 hash of the *whole* file (not only the bytes sent), which
/// the client checks against its own hash of what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEnd {
    pub blake3: Hash,
}

impl FileEnd {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.blake3);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { blake3: r.hash()? })
    }
}
