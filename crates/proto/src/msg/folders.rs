//! Folders and names: `MakeFolder` (answered by `FolderMade`), `Move` (answered by `Moved`),
//! and `Find` (answered by `Entries` frames, as `List` is).

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};

/// Asks the hub to create a folder (and any missing folders on the way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeFolder {
    pub name: String,
}

impl MakeFolder {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
        })
    }
}

/// The folder exists now; `created` is false if it already did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderMade {
    pub created: bool,
}

impl FolderMade {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_bool(self.created);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            created: r.bool("created")?,
        })
    }
}

/// Asks the hub to move (rename) a file or a folder. `to` naming a folder, or ending in `/`,
/// means inside it. A file at the target is replaced only if `force`; a folder never is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub force: bool,
}

impl Move {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.from);
        out.put_str(&self.to);
        out.put_bool(self.force);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            from: r.str("from", MAX_WIRE_NAME)?,
            to: r.str("to", MAX_WIRE_NAME)?,
            force: r.bool("force")?,
        })
    }
}

/// The move is done; `name` is where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub name: String,
}

impl Moved {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
        })
    }
}

/// Asks for the files and folders (`NAME/`) whose names contain `text`, in any case, anywhere
/// in the share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Find {
    pub text: String,
}

impl Find {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.text);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            text: r.str("text", MAX_WIRE_NAME)?,
        })
    }
}
