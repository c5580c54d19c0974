//! Error codes carried by `Error` messages. The numbers are part of the protocol and never change
//! meaning; a code this version does not know decodes as [`ErrorCode::Other`].

/// What kind of failure an `Error` message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A malformed, oversized, unknown or out-of-order message.
    BadRequest,
    /// The `Hello` named a protocol version or magic this hub does not speak.
    UnsupportedVersion,
    /// The remote name breaks the naming rules (see `RemoteName`).
    InvalidName,
    /// No such file on the hub.
    NotFound,
    /// The name is taken and the request did not ask to replace it.
    AlreadyExists,
    /// Another transfer holds this name, or the hub is at its connection limit.
    Busy,
    /// The received bytes do not hash to what the sender announced.
    Integrity,
    /// The hub's disk has no room for the upload.
    NoSpace,
    /// The request exceeds a size limit.
    TooLarge,
    /// A token is required, or the one given is wrong or revoked.
    Unauthorized,
    /// The token is valid but its role does not allow this, or the hub is read-only.
    Forbidden,
    /// The peer stalled for longer than the hub allows.
    Timeout,
    /// The hub failed for a reason of its own (an I/O error, say).
    Internal,
    /// The folder holds files, and the request did not ask to delete them too.
    NotEmpty,
    /// A lock (taken by a WebDAV client) holds the name, and the request did not present it.
    Locked,
    /// A peer spreading a new file sends this piece to others first: ask it for another piece
    /// now, and others for this one (asked again on the same connection, it is sent).
    Deferred,
    /// The same owner began this upload again on another connection, which carries it on:
    /// this one is over (not worth trying again, or the two would take it from each other).
    TakenOver,
    /// The caller's address, uploading without a token, is past the hub's upload quota for
    /// now (the message says when it may try again).
    Quota,
    /// The hub keeps this name out of reach (`serve --hide`): no token changes that.
    Hidden,
    /// A folder is where the request needs a file: to read it, to replace it, or to put a
    /// folder in a file's place. No request replaces a folder, so asking to replace (`--force`)
    /// does not help: move or delete it first.
    IsAFolder,
    /// A code from a newer protocol revision.
    Other(u16),
}

impl ErrorCode {
    /// The number sent on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::InvalidName => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::AlreadyExists => 5,
            ErrorCode::Busy => 6,
            ErrorCode::Integrity => 7,
            ErrorCode::NoSpace => 8,
            ErrorCode::TooLarge => 9,
            ErrorCode::Unauthorized => 10,
            ErrorCode::Forbidden => 11,
            ErrorCode::Timeout => 12,
            ErrorCode::Internal => 13,
            ErrorCode::NotEmpty => 14,
            ErrorCode::Locked => 15,
            ErrorCode::Deferred => 16,
            ErrorCode::TakenOver => 17,
            ErrorCode::Quota => 18,
            ErrorCode::Hidden => 19,
            ErrorCode::IsAFolder => 20,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a number read from the wire.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::InvalidName,
            4 => ErrorCode::NotFound,
            5 => ErrorCode::AlreadyExists,
            6 => ErrorCode::Busy,
            7 => ErrorCode::Integrity,
            8 => ErrorCode::NoSpace,
            9 => ErrorCode::TooLarge,
            10 => ErrorCode::Unauthorized,
            11 => ErrorCode::Forbidden,
            12 => ErrorCode::Timeout,
            13 => ErrorCode::Internal,
            14 => ErrorCode::NotEmpty,
            15 => ErrorCode::Locked,
            16 => ErrorCode::Deferred,
            17 => ErrorCode::TakenOver,
            18 => ErrorCode::Quota,
            19 => ErrorCode::Hidden,
            20 => ErrorCode::IsAFolder,
            n => ErrorCode::Other(n),
        }
    }

    /// A stable snake_case identifier, used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Busy => "busy",
            ErrorCode::Integrity => "integrity",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::NotEmpty => "not_empty",
            ErrorCode::Locked => "locked",
            ErrorCode::Deferred => "deferred",
            ErrorCode::TakenOver => "taken_over",
            ErrorCode::Quota => "quota",
            ErrorCode::Hidden => "hidden",
            ErrorCode::IsAFolder => "is_a_folder",
            ErrorCode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for n in 0..=21u16 {
            assert_eq!(ErrorCode::from_u16(n).to_u16(), n);
        }
    }
}
