//! Deletion: `Remove` asks, `Removed` confirms.

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};

/// Asks the hub to delete a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remove {
    pub name: String,
}

impl Remove {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
        })
    }
}

/// The file is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removed;

impl Removed {
    pub(crate) fn encode(&self, _out: &mut [u8]) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}
