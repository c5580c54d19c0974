//! Deletion: `Remove` asks, `Removed` confirms.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};

/// Asks the hub to delete a file, or a folder: an empty one, or with everything in it when
/// `recursive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remove {
    pub name: String,
    pub recursive: bool,
}

impl Remove {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_bool(self.recursive);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            recursive: r.bool("recursive")?,
        })
    }
}

/// The file or folder is gone, with this many files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
}

impl Removed {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.files);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { files: r.u64()? })
    }
}
