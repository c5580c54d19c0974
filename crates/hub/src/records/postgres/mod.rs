//! The records in PostgreSQL, shared by every hub of a group: the request history
//! ([`PgHistory`]), tokens and owners ([`PgTokens`]), and which hubs run with which clients
//! ([`PgPresence`]). The tables are in `pg.rs`.
//!
//! Each hub keeps its own admin token file (its state folder); tokens made with
//! `troca token create` are in the database, so they work on every hub.

mod block;
mod history;
mod presence;
mod tokens;

pub use history::PgHistory;
pub use presence::PgPresence;
pub use tokens::PgTokens;
