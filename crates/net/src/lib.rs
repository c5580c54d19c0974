//! troca over tokio: a framed [`Connection`], the async [`HubClient`], and the client side of
//! file transfers ([`transfer`]) that every face (CLI, shell, JSON mode) shares.
//!
//! The wire format itself lives in `troca-proto`; this crate only moves its frames and the raw
//! file bytes between them over a byte stream.

pub mod client;
pub mod connection;
pub mod durable;
pub mod error;
pub mod transfer;

pub use client::{ClientOptions, HubClient};
pub use connection::Connection;
pub use error::ClientError;
pub use transfer::{NoProgress, Progress};

/// The size of the buffers file bytes move through. Large enough that per-call overhead vanishes
/// next to the copy itself, small enough to keep memory constant and caches warm.
pub const CHUNK: usize = 1024 * 1024;

/// A buffer for moving `len` bytes: [`CHUNK`] at most, and no bigger than the transfer, so a
/// 4 KiB file does not cost a 1 MiB allocation.
pub fn transfer_buffer(len: u64) -> Vec<u8> {
    vec![0u8; usize::try_from(len).unwrap_or(CHUNK).clamp(1, CHUNK)]
}
