//! The troca wire protocol: message types, their binary codecs and the rules for remote names.
//!
//! This crate does no I/O and reads no clock. Everything here is a pure function of bytes, so it
//! can be fuzzed, property-tested and reused by any transport (the async client and hub in
//! `troca-net`/`troca-hub`, a future HTTP face, other languages following `docs/PROTOCOL.md`).
//!
//! A connection carries *frames* (see [`frame`]); each frame holds one [`Message`]. File bytes
//! are not framed: they follow a [`msg::FileHeader`] or a [`msg::PutReady`] raw, for exactly the
//! announced length, so the hub can hand them to `sendfile`.

pub mod bep15;
pub mod codec;
pub mod error_code;
pub mod frame;
pub mod json;
pub mod key;
pub mod msg;
pub mod name;
pub mod pieces;
pub mod tracker;

#[cfg(test)]
pub(crate) mod testkit;

pub use codec::DecodeError;
pub use error_code::ErrorCode;
pub use frame::{decode_frame, encode_frame, FRAME_HEADER_LEN, MAX_FRAME_LEN};
pub use msg::Message;
pub use name::{NameError, RemoteName};

/// The four bytes that open every `Hello`, so a stray client of another protocol is told apart.
pub const MAGIC: [u8; 4] = *b"TRCA";

/// The protocol version this crate speaks. A hub answers a `Hello` of another version with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 7;

/// The longest client name or token accepted in a `Hello`, in bytes.
pub const MAX_SHORT_STR: usize = 255;

/// The longest human-readable error message carried in an `Error`, in bytes; longer ones are cut.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The length of a BLAKE3 hash on the wire.
pub const HASH_LEN: usize = 32;

/// A BLAKE3 hash as raw bytes.
pub type Hash = [u8; HASH_LEN];

/// Lower-case hex, as hashes, ids and tokens are written everywhere.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod hex_tests {
    #[test]
    fn hex_matches_blake3s_own() {
        let h = blake3::hash(b"troca");
        assert_eq!(super::hex(h.as_bytes()), h.to_hex().as_str());
        assert_eq!(super::hex(&[0, 0xff, 0x0a]), "00ff0a");
    }
}
