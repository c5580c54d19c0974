//! Share links: `Share` asks for one (answered by `Shared`), `Shares` lists them (answered by
//! `ShareList`), `Unshare` revokes one (answered by `Unshared`).

use super::MAX_WIRE_NAME;
use crate::codec::{DecodeError, Put, Reader};
use crate::frame::MAX_FRAME_LEN;
use crate::MAX_SHORT_STR;

/// Longest secret or web address accepted on the wire.
const MAX_LINK_TEXT: usize = 4096;

/// Asks the hub for a link that lets anyone who has it read `name` (a file, or a folder and
/// everything in it), or with `upload` send new files into folder `name` and nothing else,
/// for `expires_s` seconds (0: the hub's default); a read link for at most `max_downloads`
/// downloads (0: no bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub name: String,
    pub expires_s: u64,
    /// An upload link's bounds, `None` for a read link.
    pub upload: Option<UploadBounds>,
    pub max_downloads: u64,
}

/// What an upload link may bring in, in all: bytes and files (0: the hub's most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadBounds {
    pub bytes: u64,
    pub files: u64,
}

impl Share {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_str(&self.name);
        out.put_u64(self.expires_s);
        out.put_bool(self.upload.is_some());
        if let Some(b) = self.upload {
            out.put_u64(b.bytes);
            out.put_u64(b.files);
        }
        out.put_u64(self.max_downloads);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.str("name", MAX_WIRE_NAME)?,
            expires_s: r.u64()?,
            upload: match r.bool("upload")? {
                false => None,
                true => Some(UploadBounds {
                    bytes: r.u64()?,
                    files: r.u64()?,
                }),
            },
            max_downloads: r.u64()?,
        })
    }
}

/// A share link made: its id, its secret (shown once), what it shares (a folder ends in `/`),
/// when it stops working, and the web face's address to build the link on (`*` for the host
/// the client reached the hub by; empty when the hub has no web face).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub id: u64,
    pub secret: String,
    pub name: String,
    pub expires_ns: i64,
    pub web: String,
}

impl Shared {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
        out.put_str(&self.secret);
        out.put_str(&self.name);
        out.put_i64(self.expires_ns);
        out.put_str(&self.web);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u64()?,
            secret: r.str("secret", MAX_LINK_TEXT)?,
            name: r.str("name", MAX_WIRE_NAME)?,
            expires_ns: r.i64()?,
            web: r.str("web", MAX_LINK_TEXT)?,
        })
    }
}

/// Asks for the share links the caller made (an admin: every one), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shares;

impl Shares {
    pub(crate) fn encode(&self, _out: &mut Vec<u8>) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

/// One share link, as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareEntry {
    pub id: u64,
    pub name: String,
    pub created_ns: i64,
    pub expires_ns: i64,
    /// `active`, `revoked`, `expired` or `used up` (no download left).
    pub state: String,
    /// Who made it: `token N`, or `admin` for the hub's admin token file.
    pub made_by: String,
    /// An upload link's bounds (0: none) and what came in through it so far; `None` for a
    /// read link.
    pub upload: Option<UploadUse>,
    /// How many downloads it allows (0: no bound), and how many began.
    pub max_downloads: u64,
    pub downloads: u64,
}

/// An upload link's bounds and what came in through it (what its files keep now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadUse {
    pub bytes: u64,
    pub files: u64,
    pub used_bytes: u64,
    pub used_files: u64,
}

impl ShareEntry {
    fn encoded_len(&self) -> usize {
        let upload = if self.upload.is_some() { 33 } else { 1 };
        let texts = 2 + self.name.len() + 2 + self.state.len() + 2 + self.made_by.len();
        8 + texts + 8 + 8 + upload + 16
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
        out.put_str(&self.name);
        out.put_i64(self.created_ns);
        out.put_i64(self.expires_ns);
        out.put_str(&self.state);
        out.put_str(&self.made_by);
        out.put_bool(self.upload.is_some());
        if let Some(u) = self.upload {
            for v in [u.bytes, u.files, u.used_bytes, u.used_files] {
                out.put_u64(v);
            }
        }
        out.put_u64(self.max_downloads);
        out.put_u64(self.downloads);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.u64()?,
            name: r.str("name", MAX_WIRE_NAME)?,
            created_ns: r.i64()?,
            expires_ns: r.i64()?,
            state: r.str("state", MAX_SHORT_STR)?,
            made_by: r.str("made_by", MAX_SHORT_STR)?,
            upload: match r.bool("upload")? {
                false => None,
                true => Some(UploadUse {
                    bytes: r.u64()?,
                    files: r.u64()?,
                    used_bytes: r.u64()?,
                    used_files: r.u64()?,
                }),
            },
            max_downloads: r.u64()?,
            downloads: r.u64()?,
        })
    }
}

chunked!(
    /// One chunk of the answer to `Shares`.
    ShareList,
    ShareEntry,
    30
);

/// Revokes share link `id` (one the caller made; an admin, any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unshare {
    pub id: u64,
}

impl Unshare {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { id: r.u64()? })
    }
}

/// The share link is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unshared {
    pub id: u64,
}

impl Unshared {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u64(self.id);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self { id: r.u64()? })
    }
}
