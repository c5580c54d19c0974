//! The client's error type: what failed, in terms a person can act on.

use crate::connection::FrameError;
use troca_proto::ErrorCode;

/// Everything that can go wrong talking to a hub.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach hub at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The hub refused the request; `message` is the hub's own explanation.
    #[error("{message}")]
    Hub { code: ErrorCode, message: String },
    #[error("connection to the hub lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("the hub sent something unexpected: {0}")]
    Protocol(String),
    #[error("{what} failed verification: expected BLAKE3 {expected}, got {actual}")]
    Integrity {
        what: String,
        expected: String,
        actual: String,
    },
    /// No key is known for this hub yet (nothing was sent to it).
    #[error("the hub at {addr} is new to you: its key is {seen}")]
    UnknownHubKey {
        addr: String,
        seen: troca_proto::key::HubKey,
    },
    /// The hub showed another key than the one trusted (nothing was sent to it).
    #[error("the hub at {addr} has key {seen}, not the key you trust, {expected}")]
    HubKeyMismatch {
        addr: String,
        expected: troca_proto::key::HubKey,
        seen: troca_proto::key::HubKey,
    },
    #[error("{path}: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

impl ClientError {
    /// The protocol error code this error corresponds to, for machine-readable output.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Hub { code, .. } => *code,
            ClientError::Integrity { .. } => ErrorCode::Integrity,
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::Local { .. } => {
                ErrorCode::Internal
            }
            ClientError::Protocol(_) => ErrorCode::BadRequest,
            ClientError::UnknownHubKey { .. } | ClientError::HubKeyMismatch { .. } => {
                ErrorCode::Unauthorized
            }
        }
    }

    pub fn local(path: &std::path::Path, source: std::io::Error) -> Self {
        ClientError::Local {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Io(e),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}
