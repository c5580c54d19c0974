//! Access tokens and roles.
//!
//! The admin token is made on first start and kept in `STATE/admin.token` (mode 0600), the one
//! secret stored as it is, for its owner to read. Every other token is stored only as its BLAKE3
//! hash, with a role (`read`, `write`, `admin`), a label and a revoked flag, in the state
//! database, where `troca token create|list|revoke` manage them and the hub reads them on every
//! check (so changes apply without a restart).

use super::{admin_token_path, db_err, db_path, open_db};
use crate::error::HubError;
use crate::records::{
    too_many_props, Amount, DeadProp, Downloads, Grant, LinkFetch, NewToken, Owned, Owner, Owners,
    PropChange, Recorded, Role, TokenInfo, TokenSpec, Tokens, MAX_PROPS_PER_NAME,
};
use crate::version::{Retimed, Version};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The tokens and owners of one state folder, in its database.
#[derive(Debug)]
pub struct SqliteTokens {
    db_path: PathBuf,
    db: Mutex<Connection>,
    admin: blake3::Hash,
    /// False while the database holds no dead property at all (nearly always: only WebDAV's
    /// PROPPATCH adds them), so a PROPFIND's lookups need no query. Once true it stays true.
    any_props: AtomicBool,
}

pub(crate) fn new_secret() -> Result<String, HubError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| HubError::io("cannot draw a random token", std::io::Error::other(e)))?;
    Ok(format!("troca_{}", hex(&bytes)))
}

use troca_proto::hex;

pub(crate) fn hash(token: &str) -> blake3::Hash {
    blake3::hash(token.trim().as_bytes())
}

impl SqliteTokens {
    /// Opens the store, creating the admin token on first use. Returns the store and whether the
    /// admin token was created just now.
    pub fn open(state: &Path) -> Result<(Self, bool), HubError> {
        let (admin, created) = admin_token(state)?;
        let db_path = db_path(state);
        let db = open_db(&db_path)?;
        // Token changes (a revocation above all) must survive a power loss.
        db.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(|e| db_err(&db_path, e))?;
        let any: bool = db
            .query_row("SELECT EXISTS (SELECT 1 FROM props)", [], |r| r.get(0))
            .map_err(|e| db_err(&db_path, e))?;
        let db = Mutex::new(db);
        let any_props = AtomicBool::new(any);
        Ok((
            Self {
                db_path,
                db,
                admin,
                any_props,
            },
            created,
        ))
    }
}

/// The hash of this hub's admin token (`STATE/admin.token`), made on first start; and whether
/// it was made just now.
pub(crate) fn admin_token(state: &Path) -> Result<(blake3::Hash, bool), HubError> {
    let path = admin_token_path(state);
    let (secret, created) = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => (s, false),
        _ => {
            let secret = new_secret()?;
            write_private(&path, &secret)?;
            (secret, true)
        }
    };
    Ok((hash(&secret), created))
}

/// The grant of the hub's admin token, if `h` is its hash (compared in constant time, as
/// `blake3::Hash` equality is).
pub(crate) fn admin_grant(h: &blake3::Hash, admin: &blake3::Hash) -> Option<Grant> {
    (h == admin).then_some(Grant {
        role: Role::Admin,
        token_id: None,
        folder: None,
        quota: Amount::default(),
        max_downloads: 0,
        until_ns: None,
    })
}

impl Tokens for SqliteTokens {
    fn admin(&self, token: &str) -> Option<Grant> {
        admin_grant(&hash(token), &self.admin)
    }

    /// Checks a token. Comparisons are of hashes, and the admin one is constant-time
    /// (`blake3::Hash` equality is), so timing says nothing about the secret.
    fn check(&self, token: &str) -> Result<Option<Grant>, HubError> {
        let h = hash(token);
        if let Some(admin) = admin_grant(&h, &self.admin) {
            return Ok(Some(admin));
        }
        let db = self.db.lock().expect("token database poisoned");
        let now = crate::pg::now_ns();
        // Prepared once per connection: a check runs with every request that carries a token.
        let sql = grant_query("(max_downloads = 0 OR downloads < max_downloads)");
        query_grant(&db, &sql, params![h.as_bytes().as_slice(), now])
            .map_err(|e| db_err(&self.db_path, e))
    }

    fn check_resume(&self, token: &str, fetch: &LinkFetch<'_>) -> Result<Option<Grant>, HubError> {
        let h = hash(token);
        let db = self.db.lock().expect("token database poisoned");
        let now = crate::pg::now_ns();
        let sql = grant_query(
            "max_downloads > 0 AND EXISTS (SELECT 1 FROM link_downloads d
                 WHERE d.token_id = t.id AND d.name = ?3 AND d.address = ?4)",
        );
        let args = params![h.as_bytes().as_slice(), now, fetch.name, fetch.address];
        query_grant(&db, &sql, args).map_err(|e| db_err(&self.db_path, e))
    }

    /// Makes a new token; returns its id and the secret (shown once, never stored).
    fn create(&self, spec: TokenSpec<'_>, now_ns: i64) -> Result<NewToken, HubError> {
        let secret = new_secret()?;
        let db = self.db.lock().expect("token database poisoned");
        db.execute(
            "INSERT INTO tokens (hash, role, label, created_ns, expires_ns, folder, quota_bytes,
                                 quota_files, made_by, max_downloads)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                hash(&secret).as_bytes().as_slice(),
                spec.role.as_str(),
                spec.label,
                now_ns,
                spec.expires_ns,
                spec.folder,
                sql_count(spec.quota.bytes),
                sql_count(spec.quota.files),
                spec.made_by,
                sql_count(spec.max_downloads),
            ],
        )
        .map_err(|e| db_err(&self.db_path, e))?;
        Ok(NewToken {
            id: db.last_insert_rowid(),
            secret,
        })
    }

    fn list(&self) -> Result<Vec<TokenInfo>, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let mut stmt = db
            .prepare(
                "SELECT id, role, label, created_ns, revoked, expires_ns, folder, quota_bytes,
                        quota_files,
                        (SELECT COALESCE(SUM(size), 0) FROM owners WHERE token_id = tokens.id),
                        (SELECT COUNT(*) FROM owners WHERE token_id = tokens.id), made_by,
                        max_downloads, downloads
                 FROM tokens ORDER BY id",
            )
            .map_err(|e| db_err(&self.db_path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenInfo {
                    id: r.get(0)?,
                    role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Read),
                    label: r.get(2)?,
                    created_ns: r.get(3)?,
                    revoked: r.get(4)?,
                    expires_ns: r.get(5)?,
                    folder: r.get(6)?,
                    quota: amount(r, 7)?,
                    used: amount(r, 9)?,
                    made_by: r.get(11)?,
                    downloads: Downloads {
                        most: u64::try_from(r.get::<_, i64>(12)?).unwrap_or(0),
                        used: u64::try_from(r.get::<_, i64>(13)?).unwrap_or(0),
                    },
                })
            })
            .map_err(|e| db_err(&self.db_path, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| db_err(&self.db_path, e))
    }

    /// Revokes token `id`; false if there is no such token.
    fn revoke(&self, id: i64) -> Result<bool, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let n = db
            .execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", params![id])
            .map_err(|e| db_err(&self.db_path, e))?;
        Ok(n > 0)
    }

    fn set_quota(&self, id: i64, quota: Amount) -> Result<bool, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let n = db
            .execute(
                "UPDATE tokens SET quota_bytes = ?2, quota_files = ?3 WHERE id = ?1",
                params![id, sql_count(quota.bytes), sql_count(quota.files)],
            )
            .map_err(|e| db_err(&self.db_path, e))?;
        Ok(n > 0)
    }

    fn maker(&self, id: i64) -> Result<Option<i64>, HubError> {
        use rusqlite::OptionalExtension;
        let db = self.db.lock().expect("token database poisoned");
        let made_by: Option<Option<i64>> = db
            .query_row("SELECT made_by FROM tokens WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db_err(&self.db_path, e))?;
        Ok(made_by.flatten())
    }

    fn forget_links(&self, before_ns: i64) -> Result<u64, HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        let mut forget = || -> rusqlite::Result<usize> {
            let tx = db.transaction()?;
            tx.execute(
                &format!("DELETE FROM link_downloads WHERE token_id IN ({ENDED_LINKS})"),
                [before_ns],
            )?;
            let n = tx.execute(
                &format!("DELETE FROM tokens WHERE id IN ({ENDED_LINKS})"),
                [before_ns],
            )?;
            tx.commit()?;
            Ok(n)
        };
        let n = forget().map_err(|e| db_err(&self.db_path, e))?;
        Ok(n as u64)
    }

    fn count_download(&self, id: i64, fetch: &LinkFetch<'_>) -> Result<bool, HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        let mut counted = || -> rusqlite::Result<bool> {
            let tx = db.transaction()?;
            let key = params![id, fetch.name, fetch.address];
            let seen = fetch.resumed
                && tx
                    .prepare_cached(
                        "SELECT 1 FROM link_downloads
                         WHERE token_id = ?1 AND name = ?2 AND address = ?3",
                    )?
                    .exists(key)?;
            if seen {
                return Ok(true);
            }
            let n = tx
                .prepare_cached(
                    "UPDATE tokens SET downloads = downloads + 1
                     WHERE id = ?1 AND (max_downloads = 0 OR downloads < max_downloads)",
                )?
                .execute([id])?;
            if n > 0 {
                tx.prepare_cached("INSERT OR IGNORE INTO link_downloads VALUES (?1, ?2, ?3)")?
                    .execute(key)?;
            }
            tx.commit()?;
            Ok(n > 0)
        };
        counted().map_err(|e| db_err(&self.db_path, e))
    }
}

/// The ids of links that expired before `?1`; an upload link only once no file it brought is
/// left (those files name it as their owner, through which its maker keeps them).
const ENDED_LINKS: &str = "SELECT id FROM tokens
     WHERE made_by IS NOT NULL AND expires_ns IS NOT NULL AND expires_ns < ?1
       AND (role = 'read' OR NOT EXISTS (SELECT 1 FROM owners WHERE owners.token_id = tokens.id))";

/// A time no token lasts until: none given.
const NEVER: i64 = i64::MAX;

/// The query of a token's grant by its hash (`?1`), valid at `?2`, on `condition` besides.
fn grant_query(condition: &str) -> String {
    format!(
        "SELECT id, role, folder, quota_bytes, quota_files, max_downloads,
                min(coalesce(expires_ns, {NEVER}), coalesce((SELECT p.expires_ns FROM tokens p
                    WHERE p.id = t.made_by), {NEVER}))
         FROM tokens t
         WHERE hash = ?1 AND revoked = 0 AND (expires_ns IS NULL OR expires_ns > ?2)
           AND {condition}
           AND (made_by IS NULL OR made_by = 0 OR EXISTS (
               SELECT 1 FROM tokens p WHERE p.id = t.made_by AND p.revoked = 0
                   AND (p.expires_ns IS NULL OR p.expires_ns > ?2)))"
    )
}

/// The grant `sql` (a [`grant_query`]) finds with `args`, if any.
fn query_grant(
    db: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Option<Grant>> {
    let row: Option<(i64, String, Option<String>, Amount, u64, i64)> = db
        .prepare_cached(sql)?
        .query_row(args, |r| {
            let most = u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0);
            let until = r.get(6)?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, amount(r, 3)?, most, until))
        })
        .optional()?;
    Ok(
        row.and_then(|(id, role, folder, quota, max_downloads, until)| {
            Role::parse(&role).map(|role| Grant {
                role,
                token_id: Some(id),
                folder: folder.map(Into::into),
                quota,
                max_downloads,
                until_ns: (until != NEVER).then_some(until),
            })
        }),
    )
}

/// A record's condition of holding for the file's version now (`?2` its time, `?3` its size;
/// no time: no check). A record made before versions were kept holds by its name.
const OF_VERSION_NOW: &str = "(?2 IS NULL OR mtime_ns IS NULL OR (mtime_ns = ?2 AND size = ?3))";

/// The columns of a version, as a record keeps them (`None`: not known).
fn version_columns(v: Option<Version>) -> (Option<i64>, i64) {
    match v {
        Some(v) => (Some(v.modified_ns), sql_count(v.size)),
        None => (None, 0),
    }
}

/// A record read as `name, size, mtime_ns`.
fn recorded_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Recorded> {
    let mtime: Option<i64> = r.get(2)?;
    let size = u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0);
    Ok(Recorded {
        name: r.get(0)?,
        version: mtime.map(|modified_ns| Version { size, modified_ns }),
    })
}

impl SqliteTokens {
    /// The owner records `sql` selects (`name, size, mtime_ns`) with `args`.
    fn read_records(
        &self,
        db: &Connection,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<Recorded>, HubError> {
        let read = || -> rusqlite::Result<Vec<Recorded>> {
            let mut q = db.prepare_cached(sql)?;
            let rows = q.query_map(args, recorded_row)?;
            rows.collect()
        };
        read().map_err(|e| db_err(&self.db_path, e))
    }
}

impl Owners for SqliteTokens {
    /// Who uploaded `name`: the token, or the owner key, if either (with `now`, of that
    /// version of the file).
    fn owner(&self, name: &str, now: Option<Version>) -> Result<Owner, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let err = |e| db_err(&self.db_path, e);
        let (mtime, size) = version_columns(now);
        let token_id = db
            .prepare_cached(&format!(
                "SELECT token_id FROM owners WHERE name = ?1 AND {OF_VERSION_NOW}"
            ))
            .and_then(|mut q| {
                q.query_row(params![name, mtime, size], |r| r.get(0))
                    .optional()
            })
            .map_err(err)?;
        let key_hash: Option<Vec<u8>> = db
            .prepare_cached(&format!(
                "SELECT key_hash FROM key_owners WHERE name = ?1 AND {OF_VERSION_NOW}"
            ))
            .and_then(|mut q| {
                q.query_row(params![name, mtime, size], |r| r.get(0))
                    .optional()
            })
            .map_err(err)?;
        Ok(Owner {
            token_id,
            key_hash: key_hash.and_then(|h| h.try_into().ok()),
        })
    }

    /// Records who uploaded `name` (or forgets, with `Owner::default()`): one transaction of
    /// cached statements, as for a batch.
    fn set_owner(&self, name: &str, owner: Owner, version: Version) -> Result<(), HubError> {
        self.set_owners(&[Owned {
            name: name.to_owned(),
            owner,
            version,
        }])
    }

    fn retime(&self, name: &str, retimed: Retimed) -> Result<(), HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let (before, after) = (retimed.before, retimed.after);
        for table in ["owners", "key_owners"] {
            db.prepare_cached(&format!(
                "UPDATE {table} SET mtime_ns = ?4, size = ?5 WHERE name = ?1 AND {OF_VERSION_NOW}"
            ))
            .and_then(|mut q| {
                q.execute(params![
                    name,
                    before.modified_ns,
                    sql_count(before.size),
                    after.modified_ns,
                    sql_count(after.size)
                ])
            })
            .map_err(|e| db_err(&self.db_path, e))?;
        }
        Ok(())
    }

    fn recorded(
        &self,
        token: Option<i64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let sql = match token {
            Some(_) => {
                "SELECT name, size, mtime_ns FROM owners WHERE token_id = ?1 AND name > ?2
                 ORDER BY name LIMIT ?3"
            }
            None => {
                "SELECT name, size, mtime_ns FROM owners WHERE ?1 IS NULL AND name > ?2
                 UNION SELECT name, size, mtime_ns FROM key_owners WHERE name > ?2
                 ORDER BY name LIMIT ?3"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read_records(&db, sql, params![token, after.unwrap_or(""), limit])
    }

    fn forget_stale(&self, stale: &[Recorded]) -> Result<(), HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        let forgot = (|| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            for r in stale {
                let (mtime, size) = version_columns(r.version);
                for table in ["owners", "key_owners"] {
                    tx.prepare_cached(&format!(
                        "DELETE FROM {table} WHERE name = ?1 AND mtime_ns IS ?2
                         AND (?2 IS NULL OR size = ?3)"
                    ))?
                    .execute(params![r.name, mtime, size])?;
                }
            }
            tx.commit()
        })();
        forgot.map_err(|e| db_err(&self.db_path, e))
    }

    fn stamp(&self, found: &[Recorded]) -> Result<(), HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        let stamped = (|| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            for r in found {
                let (Some(mtime), size) = version_columns(r.version) else {
                    continue;
                };
                for table in ["owners", "key_owners"] {
                    tx.prepare_cached(&format!(
                        "UPDATE {table} SET mtime_ns = ?2, size = ?3
                         WHERE name = ?1 AND mtime_ns IS NULL"
                    ))?
                    .execute(params![r.name, mtime, size])?;
                }
            }
            tx.commit()
        })();
        stamped.map_err(|e| db_err(&self.db_path, e))
    }

    fn usage(&self, id: i64) -> Result<Amount, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        db.query_row(
            "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM owners WHERE token_id = ?1",
            params![id],
            |r| amount(r, 0),
        )
        .map_err(|e| db_err(&self.db_path, e))
    }

    /// Carries the owners of `from` (a file, or a folder and everything beneath it) over to `to`.
    fn move_owners(&self, from: &str, to: &str) -> Result<(), HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let err = |e| db_err(&self.db_path, e);
        for table in ["owners", "key_owners", "props"] {
            // The target's own records go first: what was there was replaced.
            db.execute(
                &format!(
                    "DELETE FROM {table} WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'"
                ),
                params![to],
            )
            .map_err(err)?;
            db.execute(
                &format!(
                    "UPDATE {table} SET name = ?2 || substr(name, length(?1) + 1)
                     WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'"
                ),
                params![from, to],
            )
            .map_err(err)?;
        }
        Ok(())
    }

    fn may_have_props(&self) -> bool {
        self.any_props.load(Ordering::Acquire)
    }

    fn props(&self, name: &str) -> Result<Vec<DeadProp>, HubError> {
        let db = self.db.lock().expect("token database poisoned");
        let err = |e| db_err(&self.db_path, e);
        let mut q = db
            .prepare_cached("SELECT key, xml FROM props WHERE name = ?1 ORDER BY key")
            .map_err(err)?;
        let rows = q
            .query_map(params![name], |r| {
                Ok(DeadProp {
                    key: r.get(0)?,
                    xml: r.get(1)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn patch_props(&self, name: &str, changes: &[PropChange]) -> Result<(), HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        // Raised before the rows exist, under the lock: a lookup that still sees it false
        // comes before this change, as it would without the flag.
        if changes.iter().any(|c| matches!(c, PropChange::Set(_))) {
            self.any_props.store(true, Ordering::Release);
        }
        let err = |e| db_err(&self.db_path, e);
        let tx = db.transaction().map_err(err)?;
        for change in changes {
            match change {
                PropChange::Remove(key) => tx.execute(
                    "DELETE FROM props WHERE name = ?1 AND key = ?2",
                    params![name, key],
                ),
                PropChange::Set(p) => tx.execute(
                    "INSERT INTO props (name, key, xml) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name, key) DO UPDATE SET xml = excluded.xml",
                    params![name, p.key, p.xml],
                ),
            }
            .map_err(err)?;
        }
        let count: i64 = tx
            .query_row(
                "SELECT count(*) FROM props WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .map_err(err)?;
        if count > MAX_PROPS_PER_NAME as i64 {
            return Err(too_many_props());
        }
        tx.commit().map_err(err)
    }

    fn copy_props(&self, from: &str, to: &str) -> Result<(), HubError> {
        let db = self.db.lock().expect("token database poisoned");
        db.execute(
            "INSERT OR REPLACE INTO props (name, key, xml)
             SELECT ?2 || substr(name, length(?1) + 1), key, xml FROM props
             WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'",
            params![from, to],
        )
        .map(drop)
        .map_err(|e| db_err(&self.db_path, e))
    }

    /// The records of names starting with `prefix` uploaded with the owner's token or key,
    /// after `after`: each table read along an index in name order, within the prefix's range,
    /// and only a table the owner may be in (so a page never scans one without a match).
    fn owned(
        &self,
        prefix: &str,
        owner: Owner,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError> {
        let Owner { token_id, key_hash } = owner;
        let range = "name >= ?3 AND (?4 IS NULL OR name < ?4) AND name > ?5";
        let parts: Vec<String> = [
            token_id.map(|_| "owners WHERE token_id = ?1"),
            key_hash.map(|_| "key_owners WHERE key_hash = ?2"),
        ]
        .into_iter()
        .flatten()
        .map(|from| format!("SELECT name, size, mtime_ns FROM {from} AND {range}"))
        .collect();
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("{} ORDER BY name LIMIT ?6", parts.join(" UNION ALL "));
        let key = key_hash.map(|h| h.to_vec());
        let end = crate::records::prefix_end(prefix);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let db = self.db.lock().expect("token database poisoned");
        let after = after.unwrap_or("");
        self.read_records(&db, &sql, params![token_id, key, prefix, end, after, limit])
    }

    /// Records the uploaders of many files in one transaction.
    fn set_owners(&self, owners: &[Owned]) -> Result<(), HubError> {
        let mut db = self.db.lock().expect("token database poisoned");
        let saved = (|| -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            for Owned {
                name,
                owner,
                version,
            } in owners
            {
                let (size, mtime) = (sql_count(version.size), version.modified_ns);
                match owner.token_id {
                    Some(id) => tx
                        .prepare_cached(
                            "INSERT INTO owners (name, token_id, size, mtime_ns)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT(name) DO UPDATE SET token_id = excluded.token_id,
                                 size = excluded.size, mtime_ns = excluded.mtime_ns",
                        )?
                        .execute(params![name, id, size, mtime])?,
                    None => tx
                        .prepare_cached("DELETE FROM owners WHERE name = ?1")?
                        .execute(params![name])?,
                };
                match owner.key_hash {
                    Some(h) => tx
                        .prepare_cached(
                            "INSERT INTO key_owners (name, key_hash, size, mtime_ns)
                             VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT(name) DO UPDATE SET key_hash = excluded.key_hash,
                                 size = excluded.size, mtime_ns = excluded.mtime_ns",
                        )?
                        .execute(params![name, &h[..], size, mtime])?,
                    None => tx
                        .prepare_cached("DELETE FROM key_owners WHERE name = ?1")?
                        .execute(params![name])?,
                };
            }
            tx.commit()
        })();
        saved.map_err(|e| db_err(&self.db_path, e))
    }

    /// Forgets the owners of folder `name` and everything beneath it.
    fn forget_owners_beneath(&self, name: &str) -> Result<(), HubError> {
        let db = self.db.lock().expect("token database poisoned");
        for table in ["owners", "key_owners", "props"] {
            db.execute(
                &format!(
                    "DELETE FROM {table} WHERE name = ?1 OR substr(name, 1, length(?1) + 1) = ?1 || '/'"
                ),
                params![name],
            )
            .map_err(|e| db_err(&self.db_path, e))?;
        }
        Ok(())
    }
}

/// Writes a secret readable by its owner only, created with mode 0600 from the start.
fn write_private(path: &Path, secret: &str) -> Result<(), HubError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| HubError::io(format!("cannot create {}", path.display()), e))?;
    writeln!(f, "{secret}")
        .and_then(|()| f.sync_all())
        .map_err(|e| HubError::io(format!("cannot write {}", path.display()), e))
}

/// An amount read from two columns (bytes, then files) at `at`.
fn amount(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Amount> {
    let count = |i| r.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(Amount {
        bytes: count(at)?,
        files: count(at + 1)?,
    })
}

/// A count as SQLite's integers hold it.
fn sql_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::SHARED_BY_ADMIN_FILE;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_token_is_refused_once_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let now = crate::pg::now_ns();
        let made = |expires_ns| {
            let spec = TokenSpec {
                folder: None,
                role: Role::Read,
                label: "guest",
                expires_ns: Some(expires_ns),
                quota: Amount::default(),
                made_by: None,
                max_downloads: 0,
            };
            tokens.create(spec, now).unwrap().secret
        };
        let (past, future) = (made(now - 1), made(now + 3_600_000_000_000));
        assert_eq!(tokens.check(&past).unwrap(), None);
        assert_eq!(tokens.check(&future).unwrap().unwrap().role, Role::Read);
        let list = tokens.list().unwrap();
        assert_eq!(list[0].state(now), "expired");
        assert_eq!(list[1].state(now), "active");
        assert_eq!(list[1].expires_ns, Some(now + 3_600_000_000_000));
    }

    #[test]
    fn the_links_that_ended_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        crate::records::checks::forgets_the_links_that_ended(&tokens);
    }

    /// A share link's downloads are counted while any are left, and once they are spent the
    /// link is refused and listed as used up; a token without a bound counts nothing.
    #[test]
    fn a_links_downloads_are_counted_until_spent_and_cut_ones_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let spec = |max_downloads| TokenSpec {
            role: Role::Read,
            label: "share of a.txt",
            expires_ns: None,
            folder: Some("a.txt"),
            quota: Amount::default(),
            made_by: Some(SHARED_BY_ADMIN_FILE),
            max_downloads,
        };
        let link = tokens.create(spec(2), 0).unwrap();
        let open = tokens.create(spec(0), 0).unwrap();
        assert_eq!(
            tokens.check(&link.secret).unwrap().unwrap().max_downloads,
            2
        );
        let fetch = |address, resumed| LinkFetch {
            name: "a.txt",
            address,
            resumed,
        };
        let (here, there) = ("192.0.2.1", "192.0.2.2");
        assert!(tokens.count_download(link.id, &fetch(here, false)).unwrap());
        // Going on with a cut download counts nothing more; from elsewhere, it counts.
        assert!(tokens.count_download(link.id, &fetch(here, true)).unwrap());
        assert!(tokens.count_download(link.id, &fetch(there, true)).unwrap());
        assert!(
            !tokens.count_download(link.id, &fetch(here, false)).unwrap(),
            "none left"
        );
        assert_eq!(tokens.check(&link.secret).unwrap(), None);
        let listed = tokens.list().unwrap();
        assert_eq!(listed[0].downloads, Downloads { most: 2, used: 2 });
        assert_eq!(listed[0].state(1), "used up");
        // Spent, the link still lets the downloads it counted go on, and nothing else.
        for address in [here, there] {
            let resumed = tokens.check_resume(&link.secret, &fetch(address, true));
            assert_eq!(resumed.unwrap().unwrap().token_id, Some(link.id));
            assert!(tokens
                .count_download(link.id, &fetch(address, true))
                .unwrap());
        }
        let elsewhere = fetch("192.0.2.3", true);
        assert_eq!(tokens.check_resume(&link.secret, &elsewhere).unwrap(), None);
        assert!(!tokens.count_download(link.id, &elsewhere).unwrap());
        let other_file = LinkFetch {
            name: "b.txt",
            ..fetch(here, true)
        };
        assert_eq!(
            tokens.check_resume(&link.secret, &other_file).unwrap(),
            None
        );
        assert!(tokens.revoke(link.id).unwrap());
        let revoked = tokens.check_resume(&link.secret, &fetch(here, true));
        assert_eq!(revoked.unwrap(), None, "revoked, nothing goes on");
        for _ in 0..3 {
            assert!(tokens.count_download(open.id, &fetch(here, false)).unwrap());
        }
        assert!(tokens.check(&open.secret).unwrap().is_some());
        assert_eq!(tokens.list().unwrap()[1].state(1), "active");
    }

    /// A state database made before tokens could expire gains the column on opening, and its
    /// tokens stay valid for ever.
    #[test]
    fn an_older_database_gains_token_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let old = rusqlite::Connection::open(db_path(dir.path())).unwrap();
        old.execute_batch(
            "CREATE TABLE tokens (id INTEGER PRIMARY KEY AUTOINCREMENT, hash BLOB NOT NULL UNIQUE,
                 role TEXT NOT NULL, label TEXT NOT NULL, created_ns INTEGER NOT NULL,
                 revoked INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE owners (name TEXT PRIMARY KEY, token_id INTEGER NOT NULL);
             INSERT INTO owners VALUES ('before.txt', 1);",
        )
        .unwrap();
        old.execute(
            "INSERT INTO tokens (hash, role, label, created_ns) VALUES (?1, 'write', 'old', 0)",
            params![hash("troca_old").as_bytes().as_slice()],
        )
        .unwrap();
        drop(old);
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        assert_eq!(
            tokens.check("troca_old").unwrap().unwrap().role,
            Role::Write
        );
        assert_eq!(tokens.list().unwrap()[0].expires_ns, None);
        // No quota; a file stored before sizes were kept counts as a file of 0 bytes.
        assert_eq!(tokens.list().unwrap()[0].quota, Amount::default());
        assert_eq!(tokens.usage(1).unwrap(), Amount { bytes: 0, files: 1 });
    }

    #[test]
    fn tokens_are_checked_by_hash_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, created) = SqliteTokens::open(dir.path()).unwrap();
        assert!(created);
        let mode = std::fs::metadata(admin_token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let admin = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        assert_eq!(tokens.check(&admin).unwrap().unwrap().role, Role::Admin);

        let spec = TokenSpec {
            folder: Some("clients/acme"),
            role: Role::Write,
            label: "ci",
            expires_ns: None,
            quota: Amount {
                bytes: 10 << 30,
                files: 0,
            },
            made_by: None,
            max_downloads: 0,
        };
        let NewToken { id, secret } = tokens.create(spec, 0).unwrap();
        assert_eq!(
            tokens.check(&secret).unwrap(),
            Some(Grant {
                role: Role::Write,
                token_id: Some(id),
                folder: Some("clients/acme".into()),
                quota: Amount {
                    bytes: 10 << 30,
                    files: 0
                },
                max_downloads: 0,
                until_ns: None,
            })
        );
        assert_eq!(
            tokens.list().unwrap()[0].folder.as_deref(),
            Some("clients/acme")
        );
        assert_eq!(tokens.check("troca_wrong").unwrap(), None);
        // Only the hash is stored.
        let db = std::fs::read(db_path(dir.path())).unwrap();
        assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

        assert!(tokens.revoke(id).unwrap());
        assert_eq!(tokens.check(&secret).unwrap(), None);
        assert!(tokens.list().unwrap()[0].revoked);
        // Reopening keeps the admin token.
        let (again, created) = SqliteTokens::open(dir.path()).unwrap();
        assert!(!created);
        assert!(again.check(&admin).unwrap().is_some());
    }

    fn sized(size: u64) -> Version {
        Version {
            size,
            modified_ns: 1_000,
        }
    }

    /// What an owner uploaded under a folder: both tables' records in name order, a page at a
    /// time, and nothing of another owner or folder.
    #[test]
    fn what_an_owner_uploaded_is_read_in_name_order_a_page_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let (by_token, by_key) = (Some(3), Some([9; 32]));
        let both = Owner {
            token_id: by_token,
            key_hash: by_key,
        };
        let set = |name: &str, token_id, key_hash| {
            let owner = Owner { token_id, key_hash };
            tokens.set_owner(name, owner, sized(1)).unwrap();
        };
        set("d/b", by_token, by_key);
        set("d/a", by_token, None);
        set("d/c", None, by_key);
        set("d/e", Some(4), Some([8; 32]));
        set("e/a", by_token, by_key);
        set("d", by_token, by_key);
        let names = |owner, after, limit| -> Vec<String> {
            let rows = tokens.owned("d/", owner, after, limit).unwrap();
            rows.into_iter().map(|r| r.name).collect()
        };
        // Each record of each name, in order; a name recorded both ways comes twice.
        assert_eq!(names(both, None, 100), ["d/a", "d/b", "d/b", "d/c"]);
        assert_eq!(names(both, None, 2), ["d/a", "d/b"]);
        assert_eq!(names(both, Some("d/a"), 2), ["d/b", "d/b"]);
        assert_eq!(names(both, Some("d/b"), 2), ["d/c"]);
        let token_only = Owner {
            token_id: by_token,
            key_hash: None,
        };
        assert_eq!(names(token_only, None, 100), ["d/a", "d/b"]);
        assert!(names(Owner::default(), None, 100).is_empty());
        let rows = tokens.owned("", both, None, 100).unwrap();
        assert_eq!(rows.len(), 8, "{rows:?}");
        assert!(rows.iter().all(|r| r.version == Some(sized(1))));
    }

    /// An owner holds the file its upload left: not one put in its place by other means, and
    /// its record follows a new time the hub gives the file.
    #[test]
    fn an_owner_holds_only_the_version_its_upload_left() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let o = Owner {
            token_id: Some(3),
            key_hash: Some([9; 32]),
        };
        let (left, other) = (
            sized(5),
            Version {
                size: 5,
                modified_ns: 2_000,
            },
        );
        tokens.set_owner("a", o, left).unwrap();
        assert_eq!(tokens.owner("a", Some(left)).unwrap(), o);
        assert_eq!(tokens.owner("a", Some(other)).unwrap(), Owner::default());
        assert_eq!(tokens.owner("a", Some(sized(6))).unwrap(), Owner::default());
        tokens
            .retime(
                "a",
                Retimed {
                    before: left,
                    after: other,
                },
            )
            .unwrap();
        assert_eq!(tokens.owner("a", Some(other)).unwrap(), o);
        assert_eq!(tokens.owner("a", Some(left)).unwrap(), Owner::default());
        // A retime of another version (a file changed meanwhile) moves nothing.
        tokens
            .retime(
                "a",
                Retimed {
                    before: left,
                    after: sized(9),
                },
            )
            .unwrap();
        assert_eq!(tokens.owner("a", Some(other)).unwrap(), o);
    }

    /// A sweep forgets what it found stale only if the record is still the one it read, and
    /// stamps records from before versions were kept.
    #[test]
    fn stale_owners_are_forgotten_unless_recorded_again_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let o = Owner {
            token_id: Some(3),
            key_hash: Some([9; 32]),
        };
        tokens.set_owner("a", o, sized(5)).unwrap();
        tokens.set_owner("b", o, sized(6)).unwrap();
        let read = tokens.recorded(None, None, 10).unwrap();
        assert_eq!(
            read,
            vec![
                Recorded {
                    name: "a".into(),
                    version: Some(sized(5))
                },
                Recorded {
                    name: "b".into(),
                    version: Some(sized(6))
                },
            ]
        );
        assert_eq!(tokens.recorded(Some(3), Some("a"), 10).unwrap(), read[1..]);
        assert_eq!(tokens.recorded(Some(4), None, 10).unwrap(), []);
        // "b" is uploaded again after the sweep read it: its new record stays.
        tokens.set_owner("b", o, sized(7)).unwrap();
        tokens.forget_stale(&read).unwrap();
        assert_eq!(tokens.owner("a", None).unwrap(), Owner::default());
        assert_eq!(tokens.owner("b", None).unwrap(), o);
        assert_eq!(tokens.usage(3).unwrap(), Amount { bytes: 7, files: 1 });

        // A record from before versions were kept holds by name until it is stamped.
        {
            let db = tokens.db.lock().unwrap();
            db.execute_batch(
                "INSERT INTO owners (name, token_id) VALUES ('old', 3);
                 INSERT INTO key_owners (name, key_hash) VALUES ('old', zeroblob(32));",
            )
            .unwrap();
        }
        assert_eq!(
            tokens.owner("old", Some(sized(1))).unwrap().token_id,
            Some(3)
        );
        let unstamped = Recorded {
            name: "old".into(),
            version: None,
        };
        assert!(tokens
            .recorded(None, None, 10)
            .unwrap()
            .contains(&unstamped));
        tokens
            .stamp(&[Recorded {
                name: "old".into(),
                version: Some(sized(2)),
            }])
            .unwrap();
        assert_eq!(
            tokens.owner("old", Some(sized(1))).unwrap(),
            Owner::default()
        );
        let stamped = tokens.owner("old", Some(sized(2))).unwrap();
        assert_eq!(stamped.token_id, Some(3));
        assert_eq!(stamped.key_hash, Some([0; 32]));
        assert_eq!(tokens.usage(3).unwrap(), Amount { bytes: 9, files: 2 });
    }

    #[test]
    fn owners_are_recorded_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        assert_eq!(tokens.owner("a", None).unwrap(), Owner::default());
        let o = Owner {
            token_id: Some(3),
            key_hash: Some([9; 32]),
        };
        tokens.set_owner("a", o, sized(5)).unwrap();
        assert_eq!(tokens.owner("a", None).unwrap(), o);
        tokens.set_owner("a", Owner::default(), sized(5)).unwrap();
        assert_eq!(tokens.owner("a", None).unwrap(), Owner::default());
    }

    /// What a token keeps follows its files: stored, replaced, moved, deleted.
    #[test]
    fn a_tokens_usage_is_the_sizes_of_the_files_it_owns() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let by = |id| Owner {
            token_id: Some(id),
            key_hash: None,
        };
        let owned = |name: &str, id, size| Owned {
            name: name.to_owned(),
            owner: by(id),
            version: sized(size),
        };
        let usage = |id| tokens.usage(id).unwrap();
        tokens
            .set_owners(&[owned("d/a", 1, 10), owned("d/b", 1, 20), owned("c", 2, 7)])
            .unwrap();
        assert_eq!(
            usage(1),
            Amount {
                bytes: 30,
                files: 2
            }
        );
        tokens.set_owner("d/a", by(1), sized(4)).unwrap();
        assert_eq!(
            usage(1),
            Amount {
                bytes: 24,
                files: 2
            }
        );
        // Replaced by another token: no longer the first's.
        tokens.set_owner("d/b", by(2), sized(1)).unwrap();
        assert_eq!(usage(1), Amount { bytes: 4, files: 1 });
        assert_eq!(usage(2), Amount { bytes: 8, files: 2 });
        tokens.move_owners("d", "e").unwrap();
        assert_eq!(usage(1), Amount { bytes: 4, files: 1 });
        tokens.forget_owners_beneath("e").unwrap();
        assert_eq!(usage(1), Amount::default());
        assert_eq!(usage(2), Amount { bytes: 7, files: 1 });
        let listed = tokens.list().unwrap();
        assert!(
            listed.is_empty(),
            "usage is of owners; no tokens were made here"
        );
    }

    #[test]
    fn dead_properties_are_looked_up_only_once_there_are_any() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        assert!(!tokens.may_have_props(), "a new database holds none");
        let remove = [PropChange::Remove("{x:}a".into())];
        tokens.patch_props("f", &remove).unwrap();
        assert!(!tokens.may_have_props(), "removing adds none");
        let prop = DeadProp {
            key: "{x:}a".into(),
            xml: "<a xmlns=\"x:\">1</a>".into(),
        };
        tokens
            .patch_props("f", &[PropChange::Set(prop.clone())])
            .unwrap();
        assert!(tokens.may_have_props());
        assert_eq!(tokens.props("f").unwrap(), vec![prop.clone()]);
        drop(tokens);
        let (again, _) = SqliteTokens::open(dir.path()).unwrap();
        assert!(
            again.may_have_props(),
            "the database says so at the next start"
        );
        assert_eq!(again.props("f").unwrap(), vec![prop]);
    }
}
