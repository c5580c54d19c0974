//! The hub's errors, each mapped to a protocol error code and a message a person can act on.

use troca_proto::{ErrorCode, NameError};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: NameError },
    #[error("no file named {0:?} on the hub")]
    NotFound(String),
    #[error("{0:?} is a folder, not a file")]
    NotAFile(String),
    #[error("folder {0:?} is not empty")]
    FolderNotEmpty(String),
    #[error("{0:?} already exists on the hub")]
    AlreadyExists(String),
    /// A folder where something would be put: never replaced, whatever the request asks.
    #[error("{0:?} is a folder on the hub, which nothing replaces: move or delete it first")]
    FolderInTheWay(String),
    /// A file where a folder would be put: a folder never takes a file's place.
    #[error("{0:?} is a file on the hub, and a folder never takes a file's place: move or delete it first")]
    FolderOverFile(String),
    #[error("{0:?} is being uploaded by another client; try again when it finishes")]
    UploadInProgress(String),
    /// The owner's own upload on an earlier connection did not let go in time (its last
    /// bytes still on their way to a slow store).
    #[error("your earlier upload of {0:?} is still being stored by the hub, which could not stop it yet (its store is slow to answer); try again shortly")]
    StillStoring(String),
    #[error("the upload of {0:?} was begun again by its owner on another connection, which carries it on")]
    TakenOver(String),
    #[error("the hub is serving its maximum of {0} connections; try again shortly")]
    TooManyConnections(usize),
    #[error("too many connections from your address (the hub allows {0} per address); close some and try again")]
    TooManyFromAddress(usize),
    #[error(
        "upload of {0:?} failed verification: the bytes received do not match the sender's hash"
    )]
    Integrity(String),
    #[error("not enough space on the hub: {needed} bytes needed, {available} available")]
    NoSpace { needed: u64, available: u64 },
    #[error("the hub's disk is full")]
    DiskFull,
    /// An address without a token past its upload quota; when it may try again, if ever.
    #[error("{message}")]
    Quota {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    /// A token past its quota: what its uploads may keep on the hub at once.
    #[error("{0}")]
    TokenQuota(String),
    #[error("{0:?} is locked (by a WebDAV client) until it is unlocked or the lock runs out")]
    Locked(String),
    #[error("the hub holds its maximum of {0} locks; try again when some are released")]
    TooManyLocks(usize),
    /// A request past one of the hub's size or count limits.
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedVersion(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A name the hub hides (`--hide`), or a change that would take one with it.
    #[error("{0}")]
    Hidden(String),
    #[error("timed out: {0}")]
    Timeout(String),
    /// The object store or the database failed or could not be reached.
    #[error("{0}")]
    Backend(String),
    /// The database ended the connection a statement was sent on, saying so (SQLSTATE class
    /// 57P: restarting, or told to by an administrator) instead of answering: the statement
    /// was not done, so it may be sent again on another connection.
    #[error("{0}")]
    ConnectionEnded(String),
    /// The hub failed, not the request (a task that panicked, a response it could not build).
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl HubError {
    /// How a refusal is written in the history: `code: message`.
    pub fn record_text(&self) -> String {
        format!("{}: {self}", self.code())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::InvalidName { .. } => ErrorCode::InvalidName,
            HubError::NotFound(_) => ErrorCode::NotFound,
            HubError::NotAFile(_) | HubError::FolderInTheWay(_) | HubError::FolderOverFile(_) => {
                ErrorCode::IsAFolder
            }
            HubError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            HubError::FolderNotEmpty(_) => ErrorCode::NotEmpty,
            HubError::UploadInProgress(_)
            | HubError::StillStoring(_)
            | HubError::TooManyConnections(_)
            | HubError::TooManyFromAddress(_)
            | HubError::TooManyLocks(_) => ErrorCode::Busy,
            HubError::Integrity(_) => ErrorCode::Integrity,
            HubError::TakenOver(_) => ErrorCode::TakenOver,
            HubError::Locked(_) => ErrorCode::Locked,
            HubError::NoSpace { .. } | HubError::DiskFull => ErrorCode::NoSpace,
            HubError::Quota { .. } | HubError::TokenQuota(_) => ErrorCode::Quota,
            HubError::BadRequest(_) => ErrorCode::BadRequest,
            HubError::TooLarge(_) => ErrorCode::TooLarge,
            HubError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            HubError::Timeout(_) => ErrorCode::Timeout,
            HubError::Unauthorized(_) => ErrorCode::Unauthorized,
            HubError::Forbidden(_) => ErrorCode::Forbidden,
            HubError::Hidden(_) => ErrorCode::Hidden,
            HubError::Io { .. }
            | HubError::Internal(_)
            | HubError::Backend(_)
            | HubError::ConnectionEnded(_) => ErrorCode::Internal,
        }
    }

    /// Wraps an I/O error, recognising a full disk.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            return HubError::DiskFull;
        }
        HubError::Io {
            context: context.into(),
            source,
        }
    }

    /// The protocol message for this error.
    pub fn to_message(&self) -> troca_proto::Message {
        troca_proto::msg::Error::new(self.code(), self.to_string()).into()
    }
}
