//! Folders and names: `MakeFolder` (answered by `FolderMade`), `Move` (answered by `Moved`),
//! `Copy` (answered by `Copied` frames: progress, then the end), and `Find` (answered by
//! `Entries` frames, as `List` is).

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

/// Asks the hub to copy a file or a folder (with everything in it) within the share. `to`
/// naming a folder, or ending in `/`, means inside it. A file at the target is replaced only
/// if `force`; a folder is never copied over anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub from: String,
    pub to: String,
    pub force: bool,
}

impl Copy {
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

/// How far a copy has come: sent about once a second while it runs (`done` false), so the
/// client knows the hub is still at work, and once at the end (`done` true), after which the
/// copy is complete under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Where the copy goes (in the frames before the last, `to` as it was asked).
    pub name: String,
    /// Files copied so far.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    pub done: bool,
}

impl Copied {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.files);
        out.put_u64(self.bytes);
        out.put_bool(self.done);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            files: r.u64()?,
            bytes: r.u64()?,
            done: r.bool("done")?,
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
