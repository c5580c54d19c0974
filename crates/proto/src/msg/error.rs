//! The hub's refusal of a request. The connection stays usable after an `Error` unless the hub
//! closes it (it does after a malformed frame, since it can no longer find the next one).

use crate::codec::{truncate_utf8, DecodeError, Put, Reader};
use crate::{ErrorCode, MAX_ERROR_MESSAGE};

/// A failed request: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.code.to_u16());
        out.put_str(truncate_utf8(&self.message, MAX_ERROR_MESSAGE));
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            code: ErrorCode::from_u16(r.u16()?),
            message: r.str("message", MAX_ERROR_MESSAGE)?,
        })
    }
}
