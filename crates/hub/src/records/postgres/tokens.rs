//! Tokens and owners in PostgreSQL (see `records::sqlite::tokens` for the rules they keep).

use crate::error::HubError;
use crate::pg::{commit_err, db_err, Db};
use crate::records::sqlite::tokens::{admin_grant, hash, new_secret};
use crate::records::{
    too_many_props, Amount, DeadProp, Downloads, Grant, LinkFetch, NamedProps, NewToken, Owned,
    Owner, Owners, PropChange, Recorded, Role, TokenInfo, TokenSpec, Tokens, MAX_PROPS_PER_NAME,
};
use crate::version::{Retimed, Version};
use tokio_postgres::types::ToSql;

/// The group's tokens and owners, and this hub's admin token.
#[derive(Debug)]
pub struct PgTokens {
    db: Db,
    admin: blake3::Hash,
}

impl PgTokens {
    pub fn new(db: Db, admin: blake3::Hash) -> Self {
        Self { db, admin }
    }
}

/// The rows of `table` for `name` and everything beneath it.
fn beneath(table: &str) -> String {
    format!("DELETE FROM {table} WHERE name = $1 OR starts_with(name, $1 || '/')")
}

impl Tokens for PgTokens {
    fn admin(&self, token: &str) -> Option<Grant> {
        admin_grant(&hash(token), &self.admin)
    }

    /// Hashes are compared (the admin one in constant time, as `blake3::Hash` equality is).
    fn check(&self, token: &str) -> Result<Option<Grant>, HubError> {
        let h = hash(token);
        if let Some(admin) = admin_grant(&h, &self.admin) {
            return Ok(Some(admin));
        }
        let sql = grant_query("(max_downloads = 0 OR downloads < max_downloads)");
        self.db.run(async || {
            let c = self.db.get().await?;
            let args: [&(dyn ToSql + Sync); 2] = [&h.as_bytes().as_slice(), &crate::pg::now_ns()];
            let row = c.query_opt(&sql, &args).await.map_err(db_err)?;
            Ok(row.and_then(|r| grant(&r)))
        })
    }

    fn check_resume(&self, token: &str, fetch: &LinkFetch<'_>) -> Result<Option<Grant>, HubError> {
        let h = hash(token);
        let sql = grant_query(
            "max_downloads > 0 AND EXISTS (SELECT 1 FROM link_downloads d
                 WHERE d.token_id = t.id AND d.name = $3 AND d.address = $4)",
        );
        self.db.run(async || {
            let c = self.db.get().await?;
            let now = crate::pg::now_ns();
            let args: [&(dyn ToSql + Sync); 4] =
                [&h.as_bytes().as_slice(), &now, &fetch.name, &fetch.address];
            let row = c.query_opt(&sql, &args).await.map_err(db_err)?;
            Ok(row.and_then(|r| grant(&r)))
        })
    }

    fn create(&self, spec: TokenSpec<'_>, now_ns: i64) -> Result<NewToken, HubError> {
        let secret = new_secret()?;
        self.db.run(async || {
            let c = self.db.get().await?;
            let row = c
                .query_one(
                    "INSERT INTO tokens (hash, role, label, created_ns, expires_ns, folder,
                                         quota_bytes, quota_files, made_by, max_downloads)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    &[
                        &hash(&secret).as_bytes().as_slice(),
                        &spec.role.as_str(),
                        &spec.label,
                        &now_ns,
                        &spec.expires_ns,
                        &spec.folder,
                        &pg_count(spec.quota.bytes),
                        &pg_count(spec.quota.files),
                        &spec.made_by,
                        &pg_count(spec.max_downloads),
                    ],
                )
                .await
                .map_err(db_err)?;
            Ok(NewToken {
                id: row.get(0),
                secret: secret.clone(),
            })
        })
    }

    fn list(&self) -> Result<Vec<TokenInfo>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c
                .query(
                    "SELECT id, role, label, created_ns, revoked, expires_ns, folder, quota_bytes,
                            quota_files,
                            (SELECT COALESCE(SUM(size), 0)::bigint FROM owners
                             WHERE token_id = tokens.id),
                            (SELECT COUNT(*) FROM owners WHERE token_id = tokens.id), made_by,
                            max_downloads, downloads
                     FROM tokens ORDER BY id",
                    &[],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| TokenInfo {
                    id: r.get(0),
                    role: Role::parse(r.get(1)).unwrap_or(Role::Read),
                    label: r.get(2),
                    created_ns: r.get(3),
                    revoked: r.get(4),
                    expires_ns: r.get(5),
                    folder: r.get(6),
                    quota: amount(r, 7),
                    used: amount(r, 9),
                    made_by: r.get(11),
                    downloads: Downloads {
                        most: u64::try_from(r.get::<_, i64>(12)).unwrap_or(0),
                        used: u64::try_from(r.get::<_, i64>(13)).unwrap_or(0),
                    },
                })
                .collect())
        })
    }

    fn revoke(&self, id: i64) -> Result<bool, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let n = c
                .execute("UPDATE tokens SET revoked = true WHERE id = $1", &[&id])
                .await
                .map_err(db_err)?;
            Ok(n > 0)
        })
    }

    fn set_quota(&self, id: i64, quota: Amount) -> Result<bool, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let n = c
                .execute(
                    "UPDATE tokens SET quota_bytes = $2, quota_files = $3 WHERE id = $1",
                    &[&id, &pg_count(quota.bytes), &pg_count(quota.files)],
                )
                .await
                .map_err(db_err)?;
            Ok(n > 0)
        })
    }

    fn maker(&self, id: i64) -> Result<Option<i64>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let row = c
                .query_opt("SELECT made_by FROM tokens WHERE id = $1", &[&id])
                .await
                .map_err(db_err)?;
            Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)))
        })
    }

    fn forget_links(&self, before_ns: i64) -> Result<u64, HubError> {
        // Links that expired before `$1`; an upload link once no file it brought is left.
        self.db.run(async || {
            let c = self.db.get().await?;
            let row = c
                .query_one(
                    "WITH gone AS (
                         DELETE FROM tokens
                         WHERE made_by IS NOT NULL
                           AND expires_ns IS NOT NULL AND expires_ns < $1
                           AND (role = 'read' OR NOT EXISTS (
                               SELECT 1 FROM owners WHERE owners.token_id = tokens.id))
                         RETURNING id
                     ), counted AS (
                         DELETE FROM link_downloads WHERE token_id IN (SELECT id FROM gone)
                     )
                     SELECT count(*) FROM gone",
                    &[&before_ns],
                )
                .await
                .map_err(db_err)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn count_download(&self, id: i64, fetch: &LinkFetch<'_>) -> Result<bool, HubError> {
        // One statement: a continued download already counted is let through; any other
        // takes one of the link's downloads, if one is left, and is remembered.
        self.db.run(async || {
            let c = self.db.get().await?;
            let row = c
                .query_one(
                    "WITH seen AS (
                         SELECT 1 FROM link_downloads
                         WHERE $4 AND token_id = $1 AND name = $2 AND address = $3
                     ), counted AS (
                         UPDATE tokens SET downloads = downloads + 1
                         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM seen)
                           AND (max_downloads = 0 OR downloads < max_downloads)
                         RETURNING id
                     ), kept AS (
                         INSERT INTO link_downloads (token_id, name, address)
                         SELECT id, $2, $3 FROM counted ON CONFLICT DO NOTHING
                     )
                     SELECT EXISTS (SELECT 1 FROM seen) OR EXISTS (SELECT 1 FROM counted)",
                    &[&id, &fetch.name, &fetch.address, &fetch.resumed],
                )
                .await
                .map_err(db_err)?;
            Ok(row.get::<_, bool>(0))
        })
    }
}

/// The query of a token's grant by its hash (`$1`), valid at `$2`, on `condition` besides.
fn grant_query(condition: &str) -> String {
    format!(
        "SELECT id, role, folder, quota_bytes, quota_files, max_downloads,
                least(expires_ns, (SELECT p.expires_ns FROM tokens p WHERE p.id = t.made_by))
         FROM tokens t
         WHERE hash = $1 AND NOT revoked AND (expires_ns IS NULL OR expires_ns > $2)
           AND {condition}
           AND (made_by IS NULL OR made_by = 0 OR EXISTS (
               SELECT 1 FROM tokens p WHERE p.id = t.made_by AND NOT p.revoked
                   AND (p.expires_ns IS NULL OR p.expires_ns > $2)))"
    )
}

/// The grant a row of a [`grant_query`] holds.
fn grant(r: &tokio_postgres::Row) -> Option<Grant> {
    Role::parse(r.get(1)).map(|role| Grant {
        role,
        token_id: Some(r.get(0)),
        folder: r.get::<_, Option<String>>(2).map(Into::into),
        quota: amount(r, 3),
        max_downloads: u64::try_from(r.get::<_, i64>(5)).unwrap_or(0),
        until_ns: r.get(6),
    })
}

/// An amount read from two `bigint` columns (bytes, then files) at `at`.
fn amount(r: &tokio_postgres::Row, at: usize) -> Amount {
    let count = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
    Amount {
        bytes: count(at),
        files: count(at + 1),
    }
}

/// A count as a `bigint`.
fn pg_count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Sets or clears the owner rows of one name, inside a transaction or not.
async fn put_owner(
    c: &impl tokio_postgres::GenericClient,
    name: &str,
    owner: Owner,
    version: Version,
) -> Result<(), tokio_postgres::Error> {
    let (size, mtime) = (pg_count(version.size), version.modified_ns);
    match owner.token_id {
        Some(id) => {
            c.execute(
                "INSERT INTO owners (name, token_id, size, mtime_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET token_id = excluded.token_id,
                     size = excluded.size, mtime_ns = excluded.mtime_ns",
                &[&name, &id, &size, &mtime],
            )
            .await?
        }
        None => {
            c.execute("DELETE FROM owners WHERE name = $1", &[&name])
                .await?
        }
    };
    match owner.key_hash {
        Some(h) => {
            c.execute(
                "INSERT INTO key_owners (name, key_hash, size, mtime_ns) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET key_hash = excluded.key_hash,
                     size = excluded.size, mtime_ns = excluded.mtime_ns",
                &[&name, &&h[..], &size, &mtime],
            )
            .await?
        }
        None => {
            c.execute("DELETE FROM key_owners WHERE name = $1", &[&name])
                .await?
        }
    };
    Ok(())
}

/// A record's condition of holding for the file's version now (`$2` its time, `$3` its size;
/// no time: no check). A record made before versions were kept holds by its name.
const OF_VERSION_NOW: &str =
    "($2::bigint IS NULL OR mtime_ns IS NULL OR (mtime_ns = $2::bigint AND size = $3::bigint))";

/// The columns of a version, as a record keeps them (`None`: not known).
fn version_columns(v: Option<Version>) -> (Option<i64>, i64) {
    match v {
        Some(v) => (Some(v.modified_ns), pg_count(v.size)),
        None => (None, 0),
    }
}

/// A record read as `name, size, mtime_ns`.
fn recorded_row(r: &tokio_postgres::Row) -> Recorded {
    let size = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
    Recorded {
        name: r.get(0),
        version: r
            .get::<_, Option<i64>>(2)
            .map(|modified_ns| Version { size, modified_ns }),
    }
}

impl Owners for PgTokens {
    fn owner(&self, name: &str, now: Option<Version>) -> Result<Owner, HubError> {
        let (mtime, size) = version_columns(now);
        self.db.run(async || {
            let c = self.db.get().await?;
            let token = c
                .query_opt(
                    &format!("SELECT token_id FROM owners WHERE name = $1 AND {OF_VERSION_NOW}"),
                    &[&name, &mtime, &size],
                )
                .await
                .map_err(db_err)?;
            let key = c
                .query_opt(
                    &format!(
                        "SELECT key_hash FROM key_owners WHERE name = $1 AND {OF_VERSION_NOW}"
                    ),
                    &[&name, &mtime, &size],
                )
                .await
                .map_err(db_err)?;
            Ok(Owner {
                token_id: token.map(|r| r.get(0)),
                key_hash: key.and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok()),
            })
        })
    }

    fn set_owner(&self, name: &str, owner: Owner, version: Version) -> Result<(), HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            put_owner(&**c, name, owner, version).await.map_err(db_err)
        })
    }

    fn retime(&self, name: &str, retimed: Retimed) -> Result<(), HubError> {
        let (before, after) = (retimed.before, retimed.after);
        let (b_size, a_size) = (pg_count(before.size), pg_count(after.size));
        self.db.run(async || {
            let c = self.db.get().await?;
            for table in ["owners", "key_owners"] {
                c.execute(
                    &format!(
                        "UPDATE {table} SET mtime_ns = $4, size = $5
                         WHERE name = $1 AND {OF_VERSION_NOW}"
                    ),
                    &[
                        &name,
                        &before.modified_ns,
                        &b_size,
                        &after.modified_ns,
                        &a_size,
                    ],
                )
                .await
                .map_err(db_err)?;
            }
            Ok(())
        })
    }

    fn recorded(
        &self,
        token: Option<i64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError> {
        let sql = match token {
            Some(_) => {
                "SELECT name, size, mtime_ns FROM owners WHERE token_id = $1 AND name > $2
                 ORDER BY name LIMIT $3"
            }
            None => {
                "SELECT name, size, mtime_ns FROM owners WHERE $1::bigint IS NULL AND name > $2
                 UNION SELECT name, size, mtime_ns FROM key_owners WHERE name > $2
                 ORDER BY name LIMIT $3"
            }
        };
        let (after, limit) = (
            after.unwrap_or(""),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c
                .query(sql, &[&token, &after, &limit])
                .await
                .map_err(db_err)?;
            Ok(rows.iter().map(recorded_row).collect())
        })
    }

    fn forget_stale(&self, stale: &[Recorded]) -> Result<(), HubError> {
        self.db.run(async || {
            let mut c = self.db.get().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            for r in stale {
                let (mtime, size) = version_columns(r.version);
                for table in ["owners", "key_owners"] {
                    tx.execute(
                        &format!(
                            "DELETE FROM {table} WHERE name = $1
                             AND mtime_ns IS NOT DISTINCT FROM $2::bigint
                             AND ($2::bigint IS NULL OR size = $3::bigint)"
                        ),
                        &[&r.name, &mtime, &size],
                    )
                    .await
                    .map_err(db_err)?;
                }
            }
            tx.commit().await.map_err(commit_err)
        })
    }

    fn stamp(&self, found: &[Recorded]) -> Result<(), HubError> {
        self.db.run(async || {
            let mut c = self.db.get().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            for r in found {
                let (Some(mtime), size) = version_columns(r.version) else {
                    continue;
                };
                for table in ["owners", "key_owners"] {
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET mtime_ns = $2, size = $3
                             WHERE name = $1 AND mtime_ns IS NULL"
                        ),
                        &[&r.name, &mtime, &size],
                    )
                    .await
                    .map_err(db_err)?;
                }
            }
            tx.commit().await.map_err(commit_err)
        })
    }

    fn usage(&self, id: i64) -> Result<Amount, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let r = c
                .query_one(
                    "SELECT COALESCE(SUM(size), 0)::bigint, COUNT(*) FROM owners
                     WHERE token_id = $1",
                    &[&id],
                )
                .await
                .map_err(db_err)?;
            Ok(amount(&r, 0))
        })
    }

    fn set_owners(&self, owners: &[Owned]) -> Result<(), HubError> {
        self.db.run(async || {
            let mut c = self.db.get().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            for Owned {
                name,
                owner,
                version,
            } in owners
            {
                put_owner(&*tx, name, *owner, *version)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(commit_err)
        })
    }

    fn move_owners(&self, from: &str, to: &str) -> Result<(), HubError> {
        self.db.run(async || {
            let mut c = self.db.get().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            for table in ["owners", "key_owners", "props"] {
                // The target's own records go first: what was there was replaced.
                tx.execute(&beneath(table), &[&to]).await.map_err(db_err)?;
                tx.execute(
                    &format!(
                        "UPDATE {table} SET name = $2 || substr(name, length($1) + 1)
                         WHERE name = $1 OR starts_with(name, $1 || '/')"
                    ),
                    &[&from, &to],
                )
                .await
                .map_err(db_err)?;
            }
            tx.commit().await.map_err(commit_err)
        })
    }

    fn forget_owners_beneath(&self, name: &str) -> Result<(), HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            for table in ["owners", "key_owners", "props"] {
                c.execute(&beneath(table), &[&name]).await.map_err(db_err)?;
            }
            Ok(())
        })
    }

    /// Two queries whatever the number of names: which have properties and how many bytes,
    /// then those that fit.
    fn props_of(&self, names: &[String], bytes: usize) -> Result<Vec<NamedProps>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let sizes = c
                .query(
                    "SELECT name, sum(octet_length(key) + octet_length(xml))::int8 FROM props
                     WHERE name = ANY($1) GROUP BY name",
                    &[&names],
                )
                .await
                .map_err(db_err)?;
            let sizes: std::collections::HashMap<String, i64> =
                sizes.iter().map(|r| (r.get(0), r.get(1))).collect();
            let (mut out, mut whole, mut used) = (Vec::new(), Vec::new(), 0);
            for name in names.iter().filter(|n| sizes.contains_key(*n)) {
                used += usize::try_from(sizes[name]).unwrap_or(usize::MAX);
                if used <= bytes {
                    whole.push(name.clone());
                }
                out.push(NamedProps {
                    name: name.clone(),
                    props: None,
                });
            }
            if whole.is_empty() {
                return Ok(out);
            }
            let rows = c
                .query(
                    "SELECT name, key, xml FROM props WHERE name = ANY($1) ORDER BY name, key",
                    &[&whole],
                )
                .await
                .map_err(db_err)?;
            let mut found: std::collections::HashMap<String, Vec<DeadProp>> = Default::default();
            for r in &rows {
                let prop = DeadProp {
                    key: r.get(1),
                    xml: r.get(2),
                };
                found.entry(r.get(0)).or_default().push(prop);
            }
            for o in &mut out {
                o.props = found.remove(&o.name);
            }
            Ok(out)
        })
    }

    fn props(&self, name: &str) -> Result<Vec<DeadProp>, HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c
                .query(
                    "SELECT key, xml FROM props WHERE name = $1 ORDER BY key",
                    &[&name],
                )
                .await
                .map_err(db_err)?;
            Ok(rows
                .iter()
                .map(|r| DeadProp {
                    key: r.get(0),
                    xml: r.get(1),
                })
                .collect())
        })
    }

    fn patch_props(&self, name: &str, changes: &[PropChange]) -> Result<(), HubError> {
        self.db.run(async || {
            let mut c = self.db.get().await?;
            let tx = c.transaction().await.map_err(db_err)?;
            for change in changes {
                match change {
                    PropChange::Remove(key) => {
                        tx.execute(
                            "DELETE FROM props WHERE name = $1 AND key = $2",
                            &[&name, key],
                        )
                        .await
                    }
                    PropChange::Set(p) => {
                        tx.execute(
                            "INSERT INTO props (name, key, xml) VALUES ($1, $2, $3)
                             ON CONFLICT (name, key) DO UPDATE SET xml = excluded.xml",
                            &[&name, &p.key, &p.xml],
                        )
                        .await
                    }
                }
                .map_err(db_err)?;
            }
            let count: i64 = tx
                .query_one("SELECT count(*) FROM props WHERE name = $1", &[&name])
                .await
                .map_err(db_err)?
                .get(0);
            if count > MAX_PROPS_PER_NAME as i64 {
                return Err(too_many_props());
            }
            tx.commit().await.map_err(commit_err)
        })
    }

    fn copy_props(&self, from: &str, to: &str) -> Result<(), HubError> {
        self.db.run(async || {
            let c = self.db.get().await?;
            c.execute(
                "INSERT INTO props (name, key, xml)
                 SELECT $2 || substr(name, length($1) + 1), key, xml FROM props
                 WHERE name = $1 OR starts_with(name, $1 || '/')
                 ON CONFLICT (name, key) DO UPDATE SET xml = excluded.xml",
                &[&from, &to],
            )
            .await
            .map(drop)
            .map_err(db_err)
        })
    }

    /// As SQLite's: each table the owner may be in read along an index in name order, within
    /// the prefix's range.
    fn owned(
        &self,
        prefix: &str,
        owner: Owner,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError> {
        let key = owner.key_hash.map(|h| h.to_vec());
        let end = crate::records::prefix_end(prefix);
        let (after, limit) = (
            after.unwrap_or(""),
            i64::try_from(limit).unwrap_or(i64::MAX),
        );
        // The owner's own parameters first, numbered as they come: PostgreSQL wants every
        // parameter used.
        let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        let mut parts = Vec::new();
        if let Some(id) = &owner.token_id {
            args.push(id);
            parts.push(format!("owners WHERE token_id = ${}", args.len()));
        }
        if let Some(key) = &key {
            args.push(key);
            parts.push(format!("key_owners WHERE key_hash = ${}", args.len()));
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let n = args.len();
        let range = format!(
            "name >= ${} AND (${}::text IS NULL OR name < ${}) AND name > ${}",
            n + 1,
            n + 2,
            n + 2,
            n + 3
        );
        let selects: Vec<String> = parts
            .iter()
            .map(|from| format!("SELECT name, size, mtime_ns FROM {from} AND {range}"))
            .collect();
        let sql = format!(
            "{} ORDER BY name LIMIT ${}",
            selects.join(" UNION ALL "),
            n + 4
        );
        let rest: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&prefix, &end, &after, &limit];
        args.extend(rest);
        self.db.run(async || {
            let c = self.db.get().await?;
            let rows = c.query(&sql, &args).await.map_err(db_err)?;
            Ok(rows.iter().map(recorded_row).collect())
        })
    }
}
