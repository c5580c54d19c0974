//! `Health` asks whether the hub can serve (answered by `HealthReport`). It may be a
//! connection's first frame, in place of `Hello`: then it needs no token, the hub answers and
//! closes, and the asker is neither a client nor in the history (a container's health check).

use crate::codec::{DecodeError, Put, Reader};
use crate::MAX_SHORT_STR;

/// Asks whether the hub can serve: reach where its files are, and its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Health;

impl Health {
    pub(crate) fn encode(&self, _out: &mut Vec<u8>) {}

    pub(crate) fn decode(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self)
    }
}

/// Whether the hub can serve, its name, and if not, what it cannot reach (in words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub ok: bool,
    pub hub: String,
    /// Empty when `ok`.
    pub error: String,
}

impl HealthReport {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_bool(self.ok);
        out.put_str(&self.hub);
        out.put_str(&self.error);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            ok: r.bool("ok")?,
            hub: r.str("hub", MAX_SHORT_STR)?,
            error: r.str("error", MAX_SHORT_STR)?,
        })
    }
}
