//! The names of an object store, in PostgreSQL. Every ancestor of a name is a folder row, so a
//! name's kind is one lookup. Changes to names run one at a time across all hubs (an advisory
//! lock held for the transaction), so "a file where a folder is", "a name taken twice" and
//! "a folder moved into itself" are decided against a namespace nobody else is changing.

use crate::error::HubError;
use crate::pg::now_ns;
use crate::pg::{db_err, NAMES_LOCK};
use crate::store::{Kind, Version};
use tokio_postgres::Transaction;
use troca_proto::msg::Entry;
use troca_proto::{Hash, RemoteName};

/// Announces a change to names to every hub (delivered when the transaction commits).
pub async fn announce(
    tx: &Transaction<'_>,
    what: &super::remembered::Forget<'_>,
) -> Result<(), HubError> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&crate::pg::NAMES_CHANNEL, &what.notice()],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// A file's row: its version, its object (hash) and where the object is.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub version: Version,
    pub hash: Hash,
    pub key: std::sync::Arc<str>,
}

/// The folders on the way to `name` (`a`, `a/b` for `a/b/c`).
pub fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(i, _)| &name[..i])
}

/// `name` and everything beneath it: the rows `name` and `name/…` (in C collation, '0' is the
/// character after '/').
const BENEATH: &str = "(name = $1 OR (name > $1 || '/' AND name < $1 || '0'))";

pub fn hash_of(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

pub fn entry(r: &tokio_postgres::Row) -> Entry {
    let object: Option<Vec<u8>> = r.get(1);
    let name: String = r.get(0);
    match object {
        Some(h) => Entry {
            name,
            size: r.get::<_, i64>(2) as u64,
            modified_ns: r.get(3),
            blake3: hash_of(&h),
        },
        None => Entry {
            name: format!("{name}/"),
            size: 0,
            modified_ns: r.get(3),
            blake3: None,
        },
    }
}

/// Escapes `text` for a LIKE pattern.
pub fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A page of a listing: the names (a folder as `NAME/`, listed only when nothing is beneath
/// it) matching pattern `$1`, after `$2`, at most `$3`, in byte order of the names as listed;
/// the `names_listed` index holds that order.
pub const LIST: &str = "SELECT n.name, n.object, n.size, n.modified_ns FROM names n
     WHERE (CASE WHEN n.object IS NULL THEN n.name || '/' ELSE n.name END) COLLATE \"C\"
             LIKE $1 ESCAPE '\\'
       AND (CASE WHEN n.object IS NULL THEN n.name || '/' ELSE n.name END) COLLATE \"C\" > $2
       AND (n.object IS NOT NULL OR NOT EXISTS (
            SELECT 1 FROM names m WHERE m.name > n.name || '/' AND m.name < n.name || '0'))
     ORDER BY (CASE WHEN n.object IS NULL THEN n.name || '/' ELSE n.name END) COLLATE \"C\"
     LIMIT $3";

/// What folder $1 (`""`, or a name ending in `/`) holds directly, after $2, at most $3: every
/// folder on the way to a name has its row, so a folder's children are the rows whose folder
/// is $1, read in order from the `names_children` index (what is beneath them is not read).
pub const CHILDREN: &str = "SELECT n.name, n.object, n.size, n.modified_ns FROM names n
     WHERE regexp_replace(n.name, '[^/]*$', '') COLLATE \"C\" = $1
       AND (CASE WHEN n.object IS NULL THEN n.name || '/' ELSE n.name END) COLLATE \"C\" > $2
     ORDER BY (CASE WHEN n.object IS NULL THEN n.name || '/' ELSE n.name END) COLLATE \"C\"
     LIMIT $3";

/// Whether there are more than $2 names in the folder $1 (or in all, for NULL): whether a
/// search held to its budget of $2 names left some unlooked at.
pub const FIND_PAST: &str = "SELECT 1 FROM names
     WHERE ($1::text IS NULL OR name = $1 OR (name > $1 || '/' AND name < $1 || '0'))
     ORDER BY name OFFSET $2 LIMIT 1";

/// A search: $1 the text, $2 how many, $3 whether $1 is looked for in whole names (a folder's
/// ending in `/`) rather than in each entry's own name, $4 the folder it is held to (or NULL),
/// $5 the most names it looks at (the first by name, walked in the index's order, so it stops
/// as soon as it has $2).
pub const FIND: &str = "SELECT name, object, size, modified_ns FROM
     (SELECT * FROM names
      WHERE ($4::text IS NULL OR name = $4 OR (name > $4 || '/' AND name < $4 || '0'))
      ORDER BY name LIMIT $5) AS looked
     WHERE strpos(lower(CASE WHEN $3 THEN name || CASE WHEN object IS NULL THEN '/' ELSE '' END
                            ELSE substring(name from '[^/]*$') END), lower($1)) > 0
     ORDER BY name LIMIT $2";

pub const FILES_BENEATH: &str = "SELECT name FROM names
     WHERE object IS NOT NULL AND name > $2 AND name < $1 || '0' ORDER BY name LIMIT $3";

/// Starts a change to names: takes the lock every hub takes for one.
pub async fn begin_change<'a>(
    c: &'a mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'a>, HubError> {
    let tx = c.transaction().await.map_err(db_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&NAMES_LOCK])
        .await
        .map_err(db_err)?;
    Ok(tx)
}

/// What `name` holds, inside a change.
pub async fn kind_in(tx: &Transaction<'_>, name: &str) -> Result<Option<Kind>, HubError> {
    let row = tx
        .query_opt("SELECT object IS NULL FROM names WHERE name = $1", &[&name])
        .await
        .map_err(db_err)?;
    Ok(row.map(|r| if r.get(0) { Kind::Folder } else { Kind::File }))
}

/// Makes the folders on the way to `name`; refuses if a file is in the way.
pub async fn make_ancestors(tx: &Transaction<'_>, name: &str) -> Result<(), HubError> {
    for folder in ancestors(name) {
        match kind_in(tx, folder).await? {
            Some(Kind::Folder) => {}
            Some(_) => return Err(HubError::FolderOverFile(folder.to_owned())),
            None => {
                tx.execute(
                    "INSERT INTO names (name, object, size, modified_ns) VALUES ($1, NULL, 0, $2)",
                    &[&folder, &now_ns()],
                )
                .await
                .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// Marks objects as just left unused: the grace period before they are deleted starts now.
pub async fn touch_objects(tx: &Transaction<'_>, hashes: &[Vec<u8>]) -> Result<(), HubError> {
    if hashes.is_empty() {
        return Ok(());
    }
    tx.execute(
        "UPDATE objects SET touched = now() WHERE hash = ANY($1)",
        &[&hashes],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Puts file `name` (an object already in `objects`) in place, inside a change. Refuses a
/// folder, and a file unless `replace`.
pub async fn place_file(
    tx: &Transaction<'_>,
    name: &RemoteName,
    hash: &Hash,
    size: u64,
    replace: bool,
    source_modified_ns: i64,
) -> Result<Version, HubError> {
    make_ancestors(tx, name.as_str()).await?;
    place_named(tx, name, hash, size, replace, source_modified_ns).await
}

/// [`place_file`] once the folders on the way are there.
pub async fn place_named(
    tx: &Transaction<'_>,
    name: &RemoteName,
    hash: &Hash,
    size: u64,
    replace: bool,
    source_modified_ns: i64,
) -> Result<Version, HubError> {
    let n = name.as_str();
    let old = tx
        .query_opt("SELECT object FROM names WHERE name = $1", &[&n])
        .await
        .map_err(db_err)?;
    match old.as_ref().map(|r| r.get::<_, Option<Vec<u8>>>(0)) {
        Some(None) => return Err(HubError::FolderInTheWay(format!("{n}/"))),
        Some(Some(_)) if !replace => return Err(HubError::AlreadyExists(n.to_owned())),
        Some(Some(prev)) => touch_objects(tx, &[prev]).await?,
        None => {}
    }
    // The source's time when the uploader said it, as a file on disk is given it.
    let modified_ns = match source_modified_ns {
        t if t > 0 => t,
        _ => now_ns(),
    };
    // The primary key is the last word: whatever raced past the checks, one row per name.
    let placed = tx
        .execute(
            "INSERT INTO names (name, object, size, modified_ns) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET object = excluded.object, size = excluded.size,
                 modified_ns = excluded.modified_ns
             WHERE $5",
            &[&n, &hash.as_slice(), &(size as i64), &modified_ns, &replace],
        )
        .await
        .map_err(db_err)?;
    if placed == 0 {
        return Err(HubError::AlreadyExists(n.to_owned()));
    }
    Ok(Version { size, modified_ns })
}

/// Deletes `name` and everything beneath it, inside a change: the files deleted.
pub async fn delete_beneath(tx: &Transaction<'_>, name: &str) -> Result<u64, HubError> {
    let rows = tx
        .query(
            &format!("DELETE FROM names WHERE {BENEATH} RETURNING object"),
            &[&name],
        )
        .await
        .map_err(db_err)?;
    let objects: Vec<Vec<u8>> = rows.iter().filter_map(|r| r.get(0)).collect();
    touch_objects(tx, &objects).await?;
    Ok(objects.len() as u64)
}

/// Moves `from` (and everything beneath it) to `to`, inside a change.
pub async fn move_beneath(tx: &Transaction<'_>, from: &str, to: &str) -> Result<(), HubError> {
    tx.execute(
        &format!("UPDATE names SET name = $2 || substr(name, length($1) + 1) WHERE {BENEATH}"),
        &[&from, &to],
    )
    .await
    .map_err(db_err)?;
    Ok(())
}
