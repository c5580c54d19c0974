//! Files in an S3-compatible object store, with their names in PostgreSQL: [`ObjectStore`].
//!
//! Objects are immutable and content-addressed: each file's bytes are one object, recorded in
//! `objects` by its BLAKE3 hash, and a name (`names`) refers to an object. Identical content is
//! stored once; a rename is a row update; the unique name is the database's primary key, so
//! "never replace by accident" holds whatever the store does with conditional writes. An object
//! no name refers to is deleted once it has been unused for the grace period, so a download or
//! an upload in flight when its name went away still finds it.
//!
//! Uploads stream into multipart uploads ([`parts`]), resumable through any hub of the group
//! because the parts held are recorded in the database. An upload is held by one hub at a time
//! with a session lock on the hub's own database connection, so a hub that dies releases it at
//! once. Two uploads of different files to one new name run side by side; the first to commit
//! takes the name and the other is refused (`already_exists`) and its object deleted.

mod body;
mod catalog;
mod http;
pub mod parts;
mod remembered;
mod small;

pub use body::ObjectBody;

use self::catalog::{begin_change, FileRow};
use self::parts::{part_size_for, PartWriter, StoredPart, Target};
use self::remembered::{Forget, Remembered};
use super::uploads::beyond_budget;
use super::PartialBudget;
use super::{Body, FindQuery, Matches, Retimed, Version};
use super::{Claim, Kind, PartialInfo, PartialUpload, PlaceCheck, SmallFile, Store, StoredFile};
use crate::error::HubError;
use crate::pg::now_ns;
use crate::pg::{block, commit_err, db_err, Db};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore as _, RetryConfig};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use troca_net::limits::AddressKey;
use troca_proto::{Hash, RemoteName};

/// Where the objects are: `s3://BUCKET?endpoint=URL&region=R`, and where the keys are read
/// from (`AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or a credentials file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Address {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    /// An AWS-style credentials file (`aws_access_key_id = …`, `aws_secret_access_key = …`).
    pub credentials_file: Option<std::path::PathBuf>,
}

impl S3Address {
    /// Parses `s3://BUCKET?endpoint=URL&region=R` (both parameters optional).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or("expected s3://BUCKET?endpoint=URL&region=REGION")?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err("expected s3://BUCKET (a bucket name, no path)".into());
        }
        let mut address = S3Address {
            bucket: bucket.to_owned(),
            endpoint: None,
            region: "us-east-1".into(),
            credentials_file: None,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("endpoint", v)) => address.endpoint = Some(v.to_owned()),
                Some(("region", v)) => address.region = v.to_owned(),
                _ => return Err(format!("unknown parameter {pair:?} (endpoint, region)")),
            }
        }
        Ok(address)
    }

    fn shown(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("s3://{} at {e}", self.bucket),
            None => format!("s3://{}", self.bucket),
        }
    }
}

/// How a request that fails is tried again once the hub runs: while it began less than twice
/// `limit` (`--store-timeout`) ago, after pauses growing from 0.1 s to at most 5 s. So a store
/// that restarts or a link that flaps within that time is ridden through (and one back is used
/// within 5 s), and a request cut off by one silence of `limit` is tried once more. A last
/// try may begin just before twice `limit` and wait `limit` in silence: none takes over three
/// times `limit` in all (90 s by default, within the client's 120 s).
fn retry_within(limit: Duration) -> RetryConfig {
    RetryConfig {
        max_retries: 100,
        retry_timeout: limit.saturating_mul(2),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
    }
}

/// The check at start: one more try, quickly.
fn retry_once() -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// The keys to the store: from the credentials file, else the environment.
fn credentials(address: &S3Address) -> Result<(String, String), HubError> {
    let missing = || {
        HubError::BadRequest(
            "--store: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or give --store-credentials-file"
                .into(),
        )
    };
    if let Some(path) = &address.credentials_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HubError::io(format!("cannot read {}", path.display()), e))?;
        let field = |want: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == want).then(|| v.trim().to_owned())
            })
        };
        return match (field("aws_access_key_id"), field("aws_secret_access_key")) {
            (Some(k), Some(s)) => Ok((k, s)),
            _ => Err(missing()),
        };
    }
    match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(k), Ok(s)) => Ok((k, s)),
        _ => Err(missing()),
    }
}

/// What every upload and download of the store shares.
#[derive(Debug)]
pub struct Shared {
    pub s3: Arc<AmazonS3>,
    pub db: Db,
    /// Memory for parts being filled or sent, over all uploads, in MiB (a larger part takes
    /// it all).
    pub part_memory: Arc<Semaphore>,
    pub part_memory_mib: usize,
}

/// Files in an object store, names in the group's database.
#[derive(Debug)]
pub struct ObjectStore {
    shared: Arc<Shared>,
    shown: String,
    /// `--store-timeout`: how long a request may go without progress.
    timeout: Duration,
    /// The uploads this hub holds (its session's locks are re-entrant, so it must not take
    /// one twice).
    held: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// How long an object no name refers to is kept.
    grace: Duration,
    remembered: Arc<Remembered>,
    /// How many bytes of abandoned uploads are kept for resume, per address and in all.
    budget: PartialBudget,
}

impl ObjectStore {
    /// Connects to the store, checking the bucket is there and the keys work. Uploads hold at
    /// most `part_memory` bytes of parts at once, all together; abandoned ones are kept
    /// within `budget`. A request fails after `timeout` without progress.
    pub fn open(
        address: &S3Address,
        db: Db,
        grace: Duration,
        part_memory: u64,
        budget: PartialBudget,
        timeout: Duration,
    ) -> Result<Self, HubError> {
        let part_memory_mib = usize::try_from(part_memory >> 20)
            .unwrap_or(usize::MAX)
            .clamp(8, Semaphore::MAX_PERMITS);
        let (key, secret) = credentials(address)?;
        let shown = address.shown();
        let build = |retry: RetryConfig| {
            let mut builder = AmazonS3Builder::new()
                .with_bucket_name(&address.bucket)
                .with_region(&address.region)
                .with_access_key_id(&key)
                .with_secret_access_key(&secret)
                .with_retry(retry)
                .with_client_options(ClientOptions::new().with_allow_http(true))
                .with_http_connector(http::Connector {
                    connect: Duration::from_secs(5),
                    idle: timeout,
                });
            if let Some(endpoint) = &address.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            builder
                .build()
                .map_err(|e| HubError::Backend(format!("{shown}: {e}")))
        };
        // At start a store that cannot be reached is said at once (a wrong address is the
        // likely cause); once running, a request is tried again while the store restarts.
        let probe = ObjectPath::from("objects");
        block(build(retry_once())?.list_with_delimiter(Some(&probe)))
            .map_err(|e| HubError::Backend(format!("cannot reach {shown}: {e}")))?;
        let s3 = Arc::new(build(retry_within(timeout))?);
        let remembered = Remembered::new(db.notices());
        let store = Self {
            remembered,
            shared: Arc::new(Shared {
                s3,
                db,
                part_memory: Arc::new(Semaphore::new(part_memory_mib)),
                part_memory_mib,
            }),
            shown,
            timeout,
            held: Arc::default(),
            grace,
            budget,
        };
        Ok(store)
    }

    fn db(&self) -> &Db {
        &self.shared.db
    }

    /// The row of file `name`: remembered, or read (and remembered).
    async fn file_row(&self, name: &str) -> Result<Option<FileRow>, HubError> {
        if let Some(row) = self.remembered.get(name) {
            return Ok(Some(row));
        }
        let mark = self.remembered.mark();
        let row = self.read_file_row(name).await?;
        if let Some(row) = &row {
            self.remembered.keep(name, row.clone(), mark);
        }
        Ok(row)
    }

    async fn read_file_row(&self, name: &str) -> Result<Option<FileRow>, HubError> {
        self.db()
            .again(async || self.read_file_row_once(name).await)
            .await
    }

    async fn read_file_row_once(&self, name: &str) -> Result<Option<FileRow>, HubError> {
        let c = self.db().get().await?;
        let row = c
            .query_opt(
                "SELECT n.size, n.modified_ns, n.object, o.key FROM names n
                 JOIN objects o ON o.hash = n.object WHERE n.name = $1",
                &[&name],
            )
            .await
            .map_err(db_err)?;
        Ok(row.and_then(|r| {
            Some(FileRow {
                version: Version {
                    size: r.get::<_, i64>(0) as u64,
                    modified_ns: r.get(1),
                },
                hash: catalog::hash_of(&r.get::<_, Vec<u8>>(2))?,
                key: r.get::<_, &str>(3).into(),
            })
        }))
    }

    /// Holds `key` on this hub alone (refused if an upload here holds it): what a small
    /// file needs, whose bytes are all here and whose name is taken by one transaction, so
    /// two hubs storing the same name race to its unique row as two clients would.
    fn claim_here(&self, key: &str) -> Result<NameClaim, HubError> {
        let lock = lock_key(key);
        if !self.held.lock().expect("claims poisoned").insert(lock) {
            return Err(HubError::UploadInProgress(key.to_owned()));
        }
        Ok(NameClaim {
            lock,
            held: Arc::clone(&self.held),
            db: None,
        })
    }

    /// Holds upload `key` for this hub (refused if another upload holds it, here or on
    /// another hub).
    async fn claim(&self, key: &str) -> Result<NameClaim, HubError> {
        let mut claim = self.claim_here(key)?;
        let lock = claim.lock;
        claim.db = Some(self.db().clone());
        let got: bool = self
            .db()
            .again(async || {
                let session = self.db().session().await?;
                let row = session
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
                    .await
                    .map_err(db_err)?;
                Ok(row.get(0))
            })
            .await?;
        if !got {
            // Another hub's: not ours to unlock.
            claim.db = None;
            return Err(HubError::UploadInProgress(key.to_owned()));
        }
        Ok(claim)
    }

    /// Records the object `p.hash` (stored at `p.key`) and puts it under `p.name`. If the
    /// content was already stored, the new copy is deleted and the name refers to the old one.
    async fn place(&self, p: Placing<'_>) -> Result<Version, HubError> {
        let placed = self.db().again(async || self.place_once(&p).await).await;
        if let Err(HubError::ConnectionEnded(_)) = &placed {
            // Ended twice before its commit: nothing refers to the new copy.
            let _ = self.shared.s3.delete(&ObjectPath::from(p.key)).await;
        }
        placed
    }

    async fn place_once(&self, p: &Placing<'_>) -> Result<Version, HubError> {
        let Placing {
            name,
            hash,
            size,
            key,
            replace,
            upload_key,
            modified_ns,
        } = *p;
        let mut c = self.db().get().await?;
        let tx = begin_change(&mut c).await?;
        // Touching the row keeps the object from the collector for the grace period; if the
        // collector holds the row, this waits until it is gone and records this copy instead.
        let kept: String = tx
            .query_one(
                "INSERT INTO objects (hash, key, size, touched) VALUES ($1, $2, $3, now())
                 ON CONFLICT (hash) DO UPDATE SET touched = now() RETURNING key",
                &[&hash.as_slice(), &key, &(size as i64)],
            )
            .await
            .map_err(db_err)?
            .get(0);
        let placed = catalog::place_file(&tx, name, hash, size, replace, modified_ns).await;
        if let Err(HubError::ConnectionEnded(_)) = placed {
            // Nothing was done: the copy is placed on the next try.
            return placed;
        }
        if placed.is_ok() {
            catalog::announce(&tx, &Forget::File(name.as_str())).await?;
            if let Some(k) = upload_key {
                tx.execute("DELETE FROM uploads WHERE key = $1", &[&k])
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(commit_err)?;
            self.remembered.forget(Forget::File(name.as_str()));
        } else {
            drop(tx);
        }
        // A second copy (or one whose name was refused) is not kept.
        if kept != key || placed.is_err() {
            let _ = self.shared.s3.delete(&ObjectPath::from(key)).await;
        }
        placed
    }

    /// Gives object `hash` (of `version`) the name `to` too, as a copy: touched first, so
    /// the collector, which deletes only objects untouched for the grace period, cannot take
    /// it meanwhile; refused if it is gone already.
    async fn name_object(
        &self,
        hash: &Hash,
        version: Version,
        to: &RemoteName,
        replace: bool,
    ) -> Result<Version, HubError> {
        let mut c = self.db().get().await?;
        let tx = begin_change(&mut c).await?;
        let there = tx
            .execute(
                "UPDATE objects SET touched = now() WHERE hash = $1",
                &[&hash.as_slice()],
            )
            .await
            .map_err(db_err)?;
        if there == 0 {
            return Err(HubError::NotFound(format!("the source of {to}")));
        }
        let placed =
            catalog::place_file(&tx, to, hash, version.size, replace, version.modified_ns).await?;
        catalog::announce(&tx, &Forget::File(to.as_str())).await?;
        tx.commit().await.map_err(commit_err)?;
        self.remembered.forget(Forget::File(to.as_str()));
        Ok(placed)
    }

    /// Deletes objects no name has referred to for the grace period.
    async fn collect_garbage(&self) -> Result<usize, HubError> {
        let mut c = self.db().get().await?;
        let candidates: Vec<Vec<u8>> = c
            .query(
                "SELECT hash FROM objects o WHERE touched < now() - $1 * interval '1 second'
                   AND NOT EXISTS (SELECT 1 FROM names n WHERE n.object = o.hash) LIMIT 1000",
                &[&self.grace.as_secs_f64()],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut removed = 0;
        for hash in candidates {
            let tx = c.transaction().await.map_err(db_err)?;
            // Held while the object is deleted: an upload of the same content waits, then
            // records its own copy.
            let row = tx
                .query_opt(
                    "SELECT key FROM objects o WHERE hash = $1
                       AND touched < now() - $2 * interval '1 second'
                       AND NOT EXISTS (SELECT 1 FROM names n WHERE n.object = o.hash)
                     FOR UPDATE",
                    &[&hash, &self.grace.as_secs_f64()],
                )
                .await
                .map_err(db_err)?;
            let Some(row) = row else { continue };
            let key: String = row.get(0);
            match self.shared.s3.delete(&ObjectPath::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(HubError::Backend(format!("{}: {e}", self.shown))),
            }
            tx.execute("DELETE FROM objects WHERE hash = $1", &[&hash])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(commit_err)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Starts (or resumes) the multipart upload of `name`.
    async fn begin(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
        from: Option<IpAddr>,
    ) -> Result<PartialUpload, HubError> {
        let key = upload_key(&name, size, source_mtime_ns)?;
        let claim = self.claim(&key).await.map_err(|e| match e {
            HubError::UploadInProgress(_) => HubError::UploadInProgress(name.to_string()),
            e => e,
        })?;
        let asked = Asked {
            key,
            name: &name,
            size,
            source_mtime_ns,
            from,
        };
        let (target, parts) = self.resume_or_start(&asked).await?;
        let offset = (parts.len() as u64 * target.part_size).min(size);
        Ok(PartialUpload::Object(ObjectPartial {
            name,
            size,
            offset,
            target: Arc::new(target),
            shared: Arc::clone(&self.shared),
            held: parts,
            done: None,
            keep: source_mtime_ns != 0,
            claim: Arc::new(claim),
            modified_ns: source_mtime_ns,
        }))
    }

    /// Where an upload of this very file would resume: its whole parts held, from the first.
    async fn resumable_at(
        &self,
        name: &RemoteName,
        size: u64,
        source_mtime_ns: i64,
    ) -> Result<u64, HubError> {
        if source_mtime_ns == 0 {
            return Ok(0);
        }
        let key = upload_key(name, size, source_mtime_ns)?;
        self.db()
            .again(async || {
                let c = self.db().get().await?;
                let row = c
                    .query_opt(
                        "SELECT part_size FROM uploads
                         WHERE key = $1 AND size = $2 AND source_mtime_ns = $3 AND name = $4",
                        &[&key, &(size as i64), &source_mtime_ns, &name.as_str()],
                    )
                    .await
                    .map_err(db_err)?;
                let Some(row) = row else { return Ok(0) };
                let part_size = row.get::<_, i64>(0) as u64;
                let parts = held_parts(&c, &key).await?.len() as u64;
                Ok((parts * part_size).min(size))
            })
            .await
    }

    /// The upload recorded under the asked key with the parts it holds, when it is the same
    /// file (name, size and source time); otherwise a new one, the old one dropped.
    async fn resume_or_start(
        &self,
        asked: &Asked<'_>,
    ) -> Result<(Target, Vec<StoredPart>), HubError> {
        let key = &asked.key;
        // The connection that answered this is used for the rest.
        let (c, held) = self
            .db()
            .again(async || {
                let c = self.db().get().await?;
                let held = c
                    .query_opt(
                        "SELECT size, source_mtime_ns, object_key, upload_id, part_size, name
                         FROM uploads WHERE key = $1",
                        &[key],
                    )
                    .await
                    .map_err(db_err)?;
                Ok((c, held))
            })
            .await?;
        if let Some(r) = &held {
            let same = asked.source_mtime_ns != 0
                && r.get::<_, i64>(0) as u64 == asked.size
                && r.get::<_, i64>(1) == asked.source_mtime_ns
                && r.get::<_, &str>(5) == asked.name.as_str();
            if same {
                let target = Target {
                    key: key.clone(),
                    path: ObjectPath::from(r.get::<_, &str>(2)),
                    upload_id: r.get(3),
                    part_size: r.get::<_, i64>(4) as u64,
                    size: asked.size,
                };
                return Ok((target, held_parts(&c, key).await?));
            }
            let path = ObjectPath::from(r.get::<_, &str>(2));
            let _ = self.shared.s3.abort_multipart(&path, &r.get(3)).await;
            c.execute("DELETE FROM uploads WHERE key = $1", &[key])
                .await
                .map_err(db_err)?;
        }
        if let Some(ip) = asked.from {
            self.keep_within_budget(Some(ip)).await?;
        }
        Ok((self.new_upload(&c, asked).await?, Vec::new()))
    }

    /// Begins a multipart upload, trying again while the store is away, within twice
    /// `--store-timeout` as every request. The S3 client does not repeat this `POST` when a
    /// connection ends under it (it might have been done); done twice, it only leaves an empty
    /// upload that nothing completes. A refusal the store states (no such bucket, no right)
    /// is not tried again.
    async fn create_multipart(&self, path: &ObjectPath) -> Result<String, HubError> {
        let began = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.shared.s3.create_multipart(path).await {
                Ok(id) => return Ok(id),
                Err(e @ object_store::Error::Generic { .. })
                    if began.elapsed() + pause < self.timeout.saturating_mul(2) =>
                {
                    tracing::info!(error = %e, "beginning an upload in the store: trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(HubError::Backend(format!("{}: {e}", self.shown))),
            }
        }
    }

    async fn new_upload(
        &self,
        c: &deadpool_postgres::Object,
        asked: &Asked<'_>,
    ) -> Result<Target, HubError> {
        let Asked {
            key,
            name,
            size,
            source_mtime_ns,
            from,
        } = asked;
        let (size, source_mtime_ns) = (*size, *source_mtime_ns);
        let address = from.map(|ip| ip.to_string()).unwrap_or_default();
        let object_key = new_object_key()?;
        let path = ObjectPath::from(object_key.as_str());
        let upload_id = self.create_multipart(&path).await?;
        let part_size = part_size_for(size);
        c.execute(
            "INSERT INTO uploads (key, name, size, source_mtime_ns, address, object_key,
                                  upload_id, part_size, touched_ns)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &key,
                &name.as_str(),
                &(size as i64),
                &source_mtime_ns,
                &address,
                &object_key,
                &upload_id,
                &(part_size as i64),
                &now_ns(),
            ],
        )
        .await
        .map_err(db_err)?;
        Ok(Target {
            key: key.to_owned(),
            path,
            upload_id,
            part_size,
            size,
        })
    }

    async fn commit_upload(
        &self,
        mut upload: ObjectPartial,
        replace: bool,
    ) -> Result<Version, HubError> {
        let Some((parts, hash)) = upload.done.take() else {
            return Err(HubError::Internal(
                "an upload committed before it completed".into(),
            ));
        };
        // Refused before the parts are joined, the upload stays resumable (with --force).
        match self.kind_of(upload.name.as_str()).await? {
            Some(Kind::Folder) => {
                return Err(HubError::FolderInTheWay(format!("{}/", upload.name)))
            }
            Some(_) if !replace => return Err(HubError::AlreadyExists(upload.name.to_string())),
            _ => {}
        }
        let t = Arc::clone(&upload.target);
        let ids: Vec<PartId> = parts
            .iter()
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect();
        self.complete_multipart(&t, ids).await?;
        // Joined: the multipart upload is gone whatever happens next.
        upload.keep = true;
        let placed = self
            .place(Placing {
                name: &upload.name,
                hash: &hash,
                size: upload.size,
                key: t.path.as_ref(),
                replace,
                upload_key: Some(&t.key),
                modified_ns: upload.modified_ns,
            })
            .await;
        if placed.is_err() {
            let c = self.db().get().await?;
            let _ = c
                .execute("DELETE FROM uploads WHERE key = $1", &[&t.key])
                .await;
        }
        placed
    }

    /// Joins an upload's parts into its object. The S3 client sends the completion again when
    /// its connection ends before the answer; if the first one was carried out, the store then
    /// no longer knows the upload and says so. The object's key is new for each upload, so an
    /// object there of the upload's size can only be this upload, joined: that counts as done.
    async fn complete_multipart(&self, t: &Target, ids: Vec<PartId>) -> Result<(), HubError> {
        let Err(e) = self
            .shared
            .s3
            .complete_multipart(&t.path, &t.upload_id, ids)
            .await
        else {
            return Ok(());
        };
        match self.shared.s3.head(&t.path).await {
            Ok(meta) if meta.size == t.size => {
                tracing::info!(error = %e, "joining an upload's parts: the store had done it");
                Ok(())
            }
            _ => Err(HubError::Backend(format!("{}: {e}", self.shown))),
        }
    }

    async fn kind_of(&self, name: &str) -> Result<Option<Kind>, HubError> {
        let row = self
            .db()
            .again(async || {
                let c = self.db().get().await?;
                c.query_opt("SELECT object IS NULL FROM names WHERE name = $1", &[&name])
                    .await
                    .map_err(db_err)
            })
            .await?;
        Ok(row.map(|r| if r.get(0) { Kind::Folder } else { Kind::File }))
    }

    /// Runs a change to names, announcing (and forgetting) those in `touched` and beneath.
    async fn change<T>(
        &self,
        touched: &[&str],
        f: impl for<'t> AsyncFn(&'t tokio_postgres::Transaction<'t>) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let out = self
            .db()
            .again(async || {
                let mut c = self.db().get().await?;
                let tx = begin_change(&mut c).await?;
                let out = f(&*tx).await?;
                for name in touched {
                    catalog::announce(&tx, &Forget::Tree(name)).await?;
                }
                tx.commit().await.map_err(commit_err)?;
                Ok(out)
            })
            .await?;
        for name in touched {
            self.remembered.forget(Forget::Tree(name));
        }
        Ok(out)
    }

    async fn partial_rows(&self) -> Result<Vec<PartialInfo>, HubError> {
        self.db()
            .again(async || self.partial_rows_once().await)
            .await
    }

    async fn partial_rows_once(&self) -> Result<Vec<PartialInfo>, HubError> {
        let c = self.db().get().await?;
        let rows = c
            .query(
                "SELECT u.key, u.name, u.size, u.address, u.touched_ns, u.part_size,
                        (SELECT count(*) FROM upload_parts p WHERE p.key = u.key)
                 FROM uploads u ORDER BY u.touched_ns",
                &[],
            )
            .await
            .map_err(db_err)?;
        // Uploads being sent are held by a session lock, on whichever hub.
        let locks: std::collections::HashSet<i64> = c
            .query(
                "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
                 WHERE locktype = 'advisory' AND objsubid = 1 AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(rows
            .iter()
            .map(|r| {
                let size = r.get::<_, i64>(2) as u64;
                let held = (r.get::<_, i64>(6) as u64 * r.get::<_, i64>(5) as u64).min(size);
                PartialInfo {
                    key: r.get(0),
                    name: r.get(1),
                    size,
                    held,
                    address: r.get(3),
                    active: locks.contains(&lock_key(r.get(0))),
                    modified_ns: r.get(4),
                }
            })
            .collect())
    }

    /// Gives up abandoned uploads, oldest first, beyond the budgets: those of `address` (of
    /// each address, for `None`), then everyone's. Returns how many went.
    async fn keep_within_budget(&self, address: Option<IpAddr>) -> Result<usize, HubError> {
        let abandoned: Vec<PartialInfo> = self
            .partial_rows()
            .await?
            .into_iter()
            .filter(|p| !p.active)
            .collect();
        let gone = beyond_budget(&abandoned, address.map(AddressKey::of), self.budget);
        let mut removed = 0;
        for key in gone {
            if self.drop_abandoned(&key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes an upload nobody is sending: claimed first, so an upload resumed meanwhile
    /// (through any hub) is left alone. Returns whether it went.
    async fn drop_abandoned(&self, key: &str) -> Result<bool, HubError> {
        let _claim = match self.claim(key).await {
            Ok(claim) => claim,
            Err(HubError::UploadInProgress(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.drop_upload(key).await
    }

    /// Deletes an upload's parts and record.
    async fn drop_upload(&self, key: &str) -> Result<bool, HubError> {
        let c = self.db().get().await?;
        let row = c
            .query_opt(
                "DELETE FROM uploads WHERE key = $1 RETURNING object_key, upload_id",
                &[&key],
            )
            .await
            .map_err(db_err)?;
        let Some(r) = row else { return Ok(false) };
        let path = ObjectPath::from(r.get::<_, &str>(0));
        let _ = self.shared.s3.abort_multipart(&path, &r.get(1)).await;
        // Joined but never named (the hub stopped in between): the object goes too, unless a
        // name refers to it.
        let named = c
            .query_opt("SELECT 1 FROM objects WHERE key = $1", &[&path.as_ref()])
            .await
            .map_err(db_err)?;
        if named.is_none() {
            let _ = self.shared.s3.delete(&path).await;
        }
        Ok(true)
    }
}

/// What an upload asks for, as [`ObjectStore::begin`] passes it on.
struct Asked<'a> {
    /// The upload's key in the records.
    key: String,
    name: &'a RemoteName,
    size: u64,
    source_mtime_ns: i64,
    from: Option<IpAddr>,
}

async fn held_parts(c: &deadpool_postgres::Object, key: &str) -> Result<Vec<StoredPart>, HubError> {
    let rows = c
        .query(
            "SELECT part, etag, cv FROM upload_parts WHERE key = $1 ORDER BY part",
            &[&key],
        )
        .await
        .map_err(db_err)?;
    // Only the parts from the first on, without a gap: the bytes after them are sent again.
    let mut parts = Vec::new();
    for r in &rows {
        let index = r.get::<_, i32>(0) as u64;
        let Ok(cv) = r.get::<_, Vec<u8>>(2).try_into() else {
            break;
        };
        if index != parts.len() as u64 {
            break;
        }
        parts.push(StoredPart {
            index,
            etag: r.get(1),
            cv,
        });
    }
    Ok(parts)
}

/// A key for a new object: random, so uploads of the same content at once never share one.
fn new_object_key() -> Result<String, HubError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| HubError::Internal(e.to_string()))?;
    Ok(format!("objects/{}", troca_proto::hex(&id)))
}

/// The key of an upload in the records: the same for the same file (name, size and the
/// source's mtime), so any hub finds it to resume; random when the source is unknown.
fn upload_key(name: &RemoteName, size: u64, source_mtime_ns: i64) -> Result<String, HubError> {
    if source_mtime_ns == 0 {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| HubError::Internal(e.to_string()))?;
        return Ok(troca_proto::hex(&id));
    }
    let mut h = blake3::Hasher::new();
    h.update(name.as_str().as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&source_mtime_ns.to_le_bytes());
    Ok(h.finalize().to_hex()[..32].to_owned())
}

/// The session lock that holds upload `key`.
fn lock_key(key: &str) -> i64 {
    let h = blake3::hash(key.as_bytes());
    i64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// An upload held by this hub until dropped.
#[derive(Debug)]
pub struct NameClaim {
    lock: i64,
    held: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// The database holding it for every hub too (its session lock), if it does.
    db: Option<Db>,
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        let Some(db) = self.db.take() else {
            self.held
                .lock()
                .expect("claims poisoned")
                .remove(&self.lock);
            return;
        };
        let (lock, held) = (self.lock, Arc::clone(&self.held));
        let release = async move {
            // If the session ended, the lock went with it: nothing to release, and no reason
            // to connect again (during an outage each would wait out the connect timeout).
            if let Some(session) = db.session_if_alive().await {
                let _ = session
                    .query_one("SELECT pg_advisory_unlock($1)", &[&lock])
                    .await;
            }
            held.lock().expect("claims poisoned").remove(&lock);
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(release);
        }
    }
}

/// A multipart upload in progress.
#[derive(Debug)]
pub struct ObjectPartial {
    pub name: RemoteName,
    pub size: u64,
    pub offset: u64,
    target: Arc<Target>,
    shared: Arc<Shared>,
    /// The parts stored before this start.
    held: Vec<StoredPart>,
    /// Every part and the file's hash, once all bytes are stored.
    done: Option<(Vec<StoredPart>, Hash)>,
    /// Whether what was stored stays when this ends unfinished (a resumable upload).
    keep: bool,
    claim: Arc<NameClaim>,
    /// The source file's modification time (0: unknown).
    modified_ns: i64,
}

impl ObjectPartial {
    /// The time the stored file gets (see [`PartialUpload::give_time`]).
    pub fn give_time(&mut self, ns: i64) {
        self.modified_ns = ns;
    }

    /// The writer that sends the bytes still to come.
    pub fn writer(&mut self) -> PartWriter {
        PartWriter::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.target),
            std::mem::take(&mut self.held),
            Arc::clone(&self.claim) as Arc<dyn std::any::Any + Send + Sync>,
        )
    }

    /// Every byte is stored: the parts and the hash they make.
    pub fn completed(&mut self, parts: Vec<StoredPart>, hash: Hash) {
        self.done = Some((parts, hash));
    }

    /// The file's hash, once complete.
    pub fn hash(&self) -> Option<Hash> {
        self.done.as_ref().map(|(_, h)| *h)
    }

    pub fn discard(mut self) {
        self.keep = false;
    }

    /// Whether its parts stay if the upload ends unfinished.
    pub fn may_resume(&self) -> bool {
        self.keep
    }
}

impl Drop for ObjectPartial {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let (shared, target) = (Arc::clone(&self.shared), Arc::clone(&self.target));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = shared
                    .s3
                    .abort_multipart(&target.path, &target.upload_id)
                    .await;
                if let Ok(c) = shared.db.get().await {
                    let _ = c
                        .execute("DELETE FROM uploads WHERE key = $1", &[&target.key])
                        .await;
                }
            });
        }
    }
}

/// A new object to record, and the name to put it under.
#[derive(Clone, Copy)]
struct Placing<'a> {
    name: &'a RemoteName,
    hash: &'a Hash,
    size: u64,
    /// Where the object is stored.
    key: &'a str,
    replace: bool,
    /// The multipart upload it came from, whose record goes with it.
    upload_key: Option<&'a str>,
    /// The source file's modification time (0: unknown, so the time it is placed).
    modified_ns: i64,
}

impl Store for ObjectStore {
    fn location(&self) -> String {
        format!("{} (names in {})", self.shown, self.db().shown())
    }

    fn health(&self, within: Duration) -> Result<(), HubError> {
        let probe = ObjectPath::from("objects");
        let s3 = &self.shared.s3;
        match block(tokio::time::timeout(
            within,
            s3.list_with_delimiter(Some(&probe)),
        )) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(HubError::Backend(format!("{}: {e}", self.shown))),
            Err(_) => {
                return Err(HubError::Backend(format!(
                    "{} did not answer within {within:?}",
                    self.shown
                )))
            }
        }
        // Its database, the hub's records', is the hub's to check.
        Ok(())
    }

    fn list(&self, query: super::ListQuery<'_>) -> Result<super::ListPage, HubError> {
        let pattern = format!("{}%", catalog::like_escape(query.prefix));
        let after = query.after.unwrap_or("");
        let limit = query.limit.max(1);
        // One more than asked: it only says whether there are more.
        let rows = (limit + 1) as i64;
        self.db().run(async || {
            let c = self.db().get().await?;
            let rows = if query.children {
                let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&query.prefix, &after, &rows];
                c.query(catalog::CHILDREN, &args).await
            } else {
                c.query(catalog::LIST, &[&pattern, &after, &rows]).await
            }
            .map_err(db_err)?;
            let entries = rows.iter().map(catalog::entry).collect();
            Ok(super::ListPage::from_collected(entries, limit))
        })
    }

    /// Counted by the database, unless names are hidden: their patterns are shell wildcards
    /// for any part of a name, which SQL cannot match, so the listing is walked instead.
    fn totals(
        &self,
        hidden: &crate::hidden::Hidden,
        within: &str,
    ) -> Result<super::Totals, HubError> {
        if hidden.any() {
            return super::walk_totals(self, hidden, within);
        }
        // Beneath `F/`: the names from `F/` up to `F0` (`0` follows `/`), in byte order.
        let below = match within.strip_suffix('/') {
            Some(folder) => format!("{folder}0"),
            None => String::new(),
        };
        self.db().run(async || {
            let c = self.db().get().await?;
            let r = c
                .query_one(
                    "SELECT count(*), coalesce(sum(size), 0)::bigint FROM names
                     WHERE object IS NOT NULL
                       AND ($1 = '' OR (name COLLATE \"C\" > $1 AND name COLLATE \"C\" < $2))",
                    &[&within, &below],
                )
                .await
                .map_err(db_err)?;
            Ok(super::Totals {
                files: r.get::<_, i64>(0) as u64,
                bytes: r.get::<_, i64>(1) as u64,
            })
        })
    }

    /// Looks at the first `budget` names by name, and stops as soon as it has one answer more
    /// than asked (so it knows more matched). Only a search that found fewer asks whether it
    /// left names unlooked at.
    fn find(&self, query: FindQuery<'_>) -> Result<Matches, HubError> {
        let within = query.within.map(|f| f.trim_end_matches('/'));
        let (text, more) = (query.text, query.limit as i64 + 1);
        let budget = i64::try_from(query.budget).unwrap_or(i64::MAX);
        self.db().run(async || {
            let c = self.db().get().await?;
            let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                [&text, &more, &text.contains('/'), &within, &budget];
            let rows = c.query(catalog::FIND, &args).await.map_err(db_err)?;
            let mut entries: Vec<_> = rows.iter().map(catalog::entry).collect();
            let cut = entries.len() > query.limit
                || (c.query_opt(catalog::FIND_PAST, &[&within, &budget]).await)
                    .map_err(db_err)?
                    .is_some();
            entries.truncate(query.limit);
            Ok(Matches { entries, cut })
        })
    }

    /// A page of names at a time, each page after the last name of the one before.
    fn each_file_beneath(
        &self,
        folder: &RemoteName,
        each: &mut dyn FnMut(&str) -> Result<(), HubError>,
    ) -> Result<(), HubError> {
        const PAGE: i64 = 1024;
        let mut after = format!("{folder}/");
        loop {
            let page: Vec<String> = self.db().run(async || {
                let c = self.db().get().await?;
                let args: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&folder.as_str(), &after, &PAGE];
                let rows = c
                    .query(catalog::FILES_BENEATH, &args)
                    .await
                    .map_err(db_err)?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })?;
            for name in &page {
                each(name)?;
            }
            match page.last() {
                Some(last) if page.len() as i64 == PAGE => after.clone_from(last),
                _ => return Ok(()),
            }
        }
    }

    fn kind(&self, name: &RemoteName) -> Result<Option<Kind>, HubError> {
        block(self.kind_of(name.as_str()))
    }

    fn open(&self, name: &RemoteName) -> Result<StoredFile, HubError> {
        // A name remembered costs no round trip, and no hop off the caller's thread.
        let row = match self.remembered.get(name.as_str()) {
            Some(row) => Some(row),
            None => block(self.file_row(name.as_str()))?,
        };
        let Some(row) = row else {
            return match block(self.kind_of(name.as_str()))? {
                Some(Kind::Folder) => Err(HubError::NotAFile(name.to_string())),
                _ => Err(HubError::NotFound(name.to_string())),
            };
        };
        let body = ObjectBody::new(Arc::clone(&self.shared.s3), row.key, row.version.size);
        Ok(StoredFile {
            version: row.version,
            body: Body::Object(body),
            hash: Some(row.hash),
        })
    }

    fn begin_upload(
        &self,
        name: RemoteName,
        size: u64,
        source_mtime_ns: i64,
        from: Option<IpAddr>,
    ) -> Result<PartialUpload, HubError> {
        block(self.begin(name, size, source_mtime_ns, from))
    }

    fn resumable(
        &self,
        name: &RemoteName,
        size: u64,
        source_mtime_ns: i64,
    ) -> Result<u64, HubError> {
        block(self.resumable_at(name, size, source_mtime_ns))
    }

    fn commit(&self, upload: PartialUpload, replace: bool) -> Result<Version, HubError> {
        let PartialUpload::Object(upload) = upload else {
            return Err(HubError::Internal("an upload of another store".into()));
        };
        block(self.commit_upload(upload, replace))
    }

    fn copies_by_name(&self) -> bool {
        true
    }

    fn reads_far(&self) -> bool {
        true
    }

    /// New names for the sources' objects, all in one change.
    fn copy_batch(
        &self,
        copies: &[(&super::StoredFile, super::CopyTo<'_>)],
    ) -> Vec<Result<super::CopiedFile, HubError>> {
        let Some(hashes) = copies
            .iter()
            .map(|(f, _)| f.hash)
            .collect::<Option<Vec<_>>>()
        else {
            return copies
                .iter()
                .map(|(f, to)| self.copy_file(f, *to))
                .collect();
        };
        let namings: Vec<_> = copies
            .iter()
            .zip(&hashes)
            .map(|((f, to), hash)| small::Naming {
                name: to.name,
                hash,
                size: f.version.size,
                replace: to.replace,
                modified_ns: f.version.modified_ns,
            })
            .collect();
        match block(self.name_objects(&namings)) {
            Ok(answers) => answers
                .into_iter()
                .zip(copies.iter().zip(hashes))
                .map(|(answer, ((_, to), hash))| {
                    let version = answer?;
                    to.steps.add(version.size);
                    Ok(super::CopiedFile { version, hash })
                })
                .collect(),
            Err(e) => copies.iter().map(|_| Err(small::each(&e))).collect(),
        }
    }

    /// A new name for the source's object: no bytes move.
    fn copy_file(
        &self,
        source: &super::StoredFile,
        to: super::CopyTo<'_>,
    ) -> Result<super::CopiedFile, HubError> {
        let hash = source
            .hash
            .ok_or_else(|| HubError::Internal("an object without its hash".into()))?;
        let version = block(self.db().again(async || {
            self.name_object(&hash, source.version, to.name, to.replace)
                .await
        }))?;
        to.steps.add(version.size);
        Ok(super::CopiedFile { version, hash })
    }

    fn claim_batch(&self, names: &[&RemoteName], _bytes: u64) -> Vec<Result<Claim, HubError>> {
        names
            .iter()
            .map(|n| self.claim_here(&format!("small:{n}")).map(Claim::Object))
            .collect()
    }

    fn store_batch(
        &self,
        files: Vec<SmallFile>,
        check: PlaceCheck<'_>,
    ) -> Vec<Result<Version, HubError>> {
        block(self.store_smalls(files, check))
    }

    fn remove(&self, name: &RemoteName) -> Result<(), HubError> {
        let n = name.as_str().to_owned();
        block(
            self.change(&[&n], async |tx| match catalog::kind_in(tx, &n).await? {
                Some(Kind::File) => catalog::delete_beneath(tx, &n).await.map(|_| ()),
                Some(_) => Err(HubError::NotAFile(n.clone())),
                None => Err(HubError::NotFound(n.clone())),
            }),
        )
    }

    fn remove_tree(&self, folder: &RemoteName) -> Result<u64, HubError> {
        let n = folder.as_str().to_owned();
        block(
            self.change(&[&n], async |tx| match catalog::kind_in(tx, &n).await? {
                Some(Kind::Folder) => catalog::delete_beneath(tx, &n).await,
                Some(_) => Err(HubError::BadRequest(format!(
                    "{n:?} is a file, not a folder"
                ))),
                None => Err(HubError::NotFound(n.clone())),
            }),
        )
    }

    fn rename(&self, from: &RemoteName, to: &RemoteName, replace: bool) -> Result<(), HubError> {
        let (from, to) = (from.as_str().to_owned(), to.as_str().to_owned());
        block(self.change(&[&from, &to], async |tx| {
            let Some(kind) = catalog::kind_in(tx, &from).await? else {
                return Err(HubError::NotFound(from.clone()));
            };
            if to.starts_with(&format!("{from}/")) || to == from {
                return Err(HubError::BadRequest(format!(
                    "cannot move {from:?} into itself"
                )));
            }
            match catalog::kind_in(tx, &to).await? {
                Some(Kind::File) if replace && kind == Kind::File => {
                    catalog::delete_beneath(tx, &to).await?;
                }
                Some(Kind::Folder) => return Err(HubError::FolderInTheWay(format!("{to}/"))),
                Some(_) if kind == Kind::Folder => {
                    return Err(HubError::FolderOverFile(to.clone()))
                }
                Some(_) => return Err(HubError::AlreadyExists(to.clone())),
                None => {}
            }
            catalog::make_ancestors(tx, &to).await?;
            catalog::move_beneath(tx, &from, &to).await
        }))
    }

    fn set_modified(&self, name: &RemoteName, modified_ns: i64) -> Result<Retimed, HubError> {
        let n = name.as_str().to_owned();
        block(self.change(&[&n], async |tx| {
            let row = tx
                .query_opt(
                    "SELECT object IS NULL, size, modified_ns FROM names WHERE name = $1",
                    &[&n],
                )
                .await
                .map_err(db_err)?;
            let Some(row) = row else {
                return Err(HubError::NotFound(n.clone()));
            };
            if row.get::<_, bool>(0) {
                // A folder's row is there for its name only: no time is shown for it.
                return Err(HubError::NotAFile(n.clone()));
            }
            tx.execute(
                "UPDATE names SET modified_ns = $2 WHERE name = $1",
                &[&n, &modified_ns],
            )
            .await
            .map_err(db_err)?;
            let size = row.get::<_, i64>(1) as u64;
            Ok(Retimed {
                before: Version {
                    size,
                    modified_ns: row.get(2),
                },
                after: Version { size, modified_ns },
            })
        }))
    }

    fn make_folder(&self, name: &RemoteName) -> Result<bool, HubError> {
        let n = name.as_str().to_owned();
        block(
            self.change(&[], async |tx| match catalog::kind_in(tx, &n).await? {
                Some(Kind::Folder) => Ok(false),
                Some(_) => Err(HubError::FolderOverFile(n.clone())),
                None => {
                    catalog::make_ancestors(tx, &format!("{n}/")).await?;
                    Ok(true)
                }
            }),
        )
    }

    fn partials(&self) -> Vec<PartialInfo> {
        block(self.partial_rows()).unwrap_or_default()
    }

    fn remove_partial(&self, key: &str) -> Result<bool, HubError> {
        let active = block(self.partial_rows())?
            .into_iter()
            .any(|p| p.key == key && p.active);
        if active {
            return Err(HubError::UploadInProgress(key.to_owned()));
        }
        block(self.drop_upload(key))
    }

    fn clean_partials(&self, ttl: Duration) -> usize {
        let stale: Vec<String> = block(self.partial_rows())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.active && now_ns() - p.modified_ns > ttl.as_nanos() as i64)
            .map(|p| p.key)
            .collect();
        let mut removed = 0;
        for key in stale {
            if block(self.drop_abandoned(&key)).unwrap_or(false) {
                removed += 1;
            }
        }
        match block(self.keep_within_budget(None)) {
            Ok(n) => removed += n,
            Err(e) => tracing::warn!(error = %e, "cannot keep interrupted uploads within budget"),
        }
        if let Err(e) = block(self.collect_garbage()) {
            tracing::warn!(error = %e, "cannot delete unused objects");
        }
        removed
    }
}
