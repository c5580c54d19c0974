//! The troca hub as a library: [`run`] serves a folder over the troca protocol until a shutdown
//! token is cancelled, so tests start it in-process on port 0 and the `troca` binary is a thin
//! wrapper around it.
//!
//! Layers, outermost first:
//! - [`server`]: accepts connections, enforces the connection limit, shuts down gracefully.
//! - [`conn`]: speaks the native protocol on one connection (handshake, requests, raw bytes).
//! - [`service`]: the operations themselves (list, download, upload, remove), shared by every
//!   face so each rule lives in one place; [`transfer`]: the upload pipeline every face feeds.
//! - [`store`]: where the files are kept, behind the [`store::Store`] trait ([`store::LocalStore`]:
//!   a folder, reached through descriptors beneath its root, with partial uploads for resume).
//! - [`records`]: the request history, tokens and owners, behind traits (SQLite today).
//! - [`clients`], [`access`], [`cache`], [`hashes`]: who is connected, what they may do, and
//!   what is kept of files in memory (hot files, hashes).

// `openat2`, `renameat2`, `sendfile`, `SO_RCVLOWAT`, `O_DIRECT`, `syncfs`: Linux's. Said here, at
// build time, rather than by a confusing error deep in a dependency.
#[cfg(not(target_os = "linux"))]
compile_error!("troca runs on Linux (5.6 or later)");

pub mod access;
pub mod cache;
pub mod clients;
pub mod config;
pub mod conn;
pub mod copy;
pub mod error;
pub mod hashes;
pub mod held;
pub mod hidden;
pub mod identity;
pub mod locks;
pub mod metrics;
pub mod names;
pub mod owned;
pub mod pg;
pub mod quota;
pub mod records;
pub mod running;
pub mod server;
pub mod service;
pub mod small;
pub mod spool;
pub mod state_lock;
pub mod store;
pub mod sweep;
pub mod transfer;
pub mod version;

pub use config::HubConfig;
pub use error::HubError;
pub use server::{run, serve};
pub use service::{Hub, Listing};
