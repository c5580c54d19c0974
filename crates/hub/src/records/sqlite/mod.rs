//! The records in SQLite: one database in the state folder (`STATE/troca.db`, mode 0600, WAL),
//! its schema and connection settings here and only here. [`SqliteHistory`] keeps the request
//! history, [`SqliteTokens`] the tokens and the files' owners; the hash cache keeps its table in
//! the same database.

pub mod history;
pub mod tokens;

pub use history::SqliteHistory;
pub use tokens::SqliteTokens;

use crate::error::HubError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// The state database.
pub fn db_path(state: &Path) -> PathBuf {
    state.join("troca.db")
}

/// A database made before tokens could expire, be held to a folder or have a quota gains the
/// columns (none of its tokens expire; each reaches the whole share, without a quota), and its
/// owners their files' versions (unknown for the files stored before, until the hub's sweep of
/// its owners stamps them with what is there).
fn add_token_columns(db: &Connection) -> rusqlite::Result<()> {
    let columns = [
        ("tokens", "expires_ns", "INTEGER"),
        ("tokens", "folder", "TEXT"),
        ("tokens", "quota_bytes", "INTEGER NOT NULL DEFAULT 0"),
        ("tokens", "quota_files", "INTEGER NOT NULL DEFAULT 0"),
        // A share link's maker (0: the admin token file); NULL for other tokens.
        ("tokens", "made_by", "INTEGER"),
        // A share link's downloads: how many it allows (0: no bound) and how many began.
        ("tokens", "max_downloads", "INTEGER NOT NULL DEFAULT 0"),
        ("tokens", "downloads", "INTEGER NOT NULL DEFAULT 0"),
        ("owners", "size", "INTEGER NOT NULL DEFAULT 0"),
        // The version (size, mtime) the upload left; NULL for owners recorded before.
        ("owners", "mtime_ns", "INTEGER"),
        ("key_owners", "size", "INTEGER NOT NULL DEFAULT 0"),
        ("key_owners", "mtime_ns", "INTEGER"),
    ];
    for (table, column, kind) in columns {
        let has: bool = db.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )?;
        if !has {
            db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
        }
    }
    // A token's names in order: what it owns under a folder is read a page at a time.
    db.execute_batch(
        "CREATE INDEX IF NOT EXISTS owners_token_name ON owners (token_id, name);
         DROP INDEX IF EXISTS owners_token;",
    )
}

/// Where the admin token is kept.
pub fn admin_token_path(state: &Path) -> PathBuf {
    state.join("admin.token")
}

/// Opens the state database at `path` (creating it, 0600), with every table the records use.
pub fn open_db(path: &Path) -> Result<Connection, HubError> {
    private_file(path).map_err(|e| HubError::io(format!("cannot create {}", path.display()), e))?;
    let mut db = Connection::open(path).map_err(|e| db_err(path, e))?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         -- Requests in the order they were stored (each batch sorted by start time): `entries`
         -- is a JSON array of `count` entries, each [time_ns, client, address, op, target, ok,
         -- error, bytes, duration_us], the first of them request number `first` (numbers count
         -- from 1 and never repeat).
         CREATE TABLE IF NOT EXISTS request_batches (
             id INTEGER PRIMARY KEY,
             first INTEGER NOT NULL,
             count INTEGER NOT NULL,
             entries TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS request_batches_first ON request_batches (first);
         CREATE TABLE IF NOT EXISTS tokens (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             hash BLOB NOT NULL UNIQUE,
             role TEXT NOT NULL,
             label TEXT NOT NULL,
             created_ns INTEGER NOT NULL,
             revoked INTEGER NOT NULL DEFAULT 0,
             expires_ns INTEGER,
             folder TEXT
         );
         CREATE TABLE IF NOT EXISTS owners (
             name TEXT PRIMARY KEY,
             token_id INTEGER NOT NULL
         );
         -- Files uploaded without a token by a client that sent an owner key: its BLAKE3 hash.
         CREATE TABLE IF NOT EXISTS key_owners (
             name TEXT PRIMARY KEY,
             key_hash BLOB NOT NULL
         );
         -- The downloads a share link counted: a download cut and continued from the same
         -- address is not counted again. At most one row per download counted, so a link's
         -- rows are bounded by its `max_downloads`.
         CREATE TABLE IF NOT EXISTS link_downloads (
             token_id INTEGER NOT NULL,
             name TEXT NOT NULL,
             address TEXT NOT NULL,
             PRIMARY KEY (token_id, name, address)
         );
         -- WebDAV's dead properties: `{namespace}name` and the element as sent.
         CREATE TABLE IF NOT EXISTS props (
             name TEXT NOT NULL,
             key TEXT NOT NULL,
             xml TEXT NOT NULL,
             PRIMARY KEY (name, key)
         );
         -- Hashes of shared files, by name and version (size, mtime); see `hashes.rs`.
         CREATE TABLE IF NOT EXISTS hashes (
             path TEXT PRIMARY KEY,
             size INTEGER NOT NULL,
             mtime_ns INTEGER NOT NULL,
             hash BLOB NOT NULL
         );
         -- Rows keyed by absolute path (before hashes were keyed by name) never match.
         DELETE FROM hashes WHERE substr(path, 1, 1) = '/';",
    )
    .map_err(|e| db_err(path, e))?;
    history::migrate_flat_history(&mut db).map_err(|e| db_err(path, e))?;
    add_token_columns(&db).map_err(|e| db_err(path, e))?;
    db.execute_batch(
        "CREATE VIEW IF NOT EXISTS history AS
             SELECT b.first + e.key AS seq, e.value ->> 0 AS time_ns, e.value ->> 1 AS client,
                    e.value ->> 2 AS address, e.value ->> 3 AS op, e.value ->> 4 AS target,
                    e.value ->> 5 AS ok, e.value ->> 6 AS error, e.value ->> 7 AS bytes,
                    e.value ->> 8 AS duration_us
             FROM request_batches b, json_each(b.entries) e;",
    )
    .map_err(|e| db_err(path, e))?;
    Ok(db)
}

pub fn db_err(path: &Path, e: rusqlite::Error) -> HubError {
    HubError::Io {
        context: format!("database {}", path.display()),
        source: std::io::Error::other(e),
    }
}

/// Creates `path` if missing, readable and writable by its owner only (0600); SQLite gives its
/// WAL and shared-memory files the database's mode. An existing file is made 0600 too.
pub(crate) fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
