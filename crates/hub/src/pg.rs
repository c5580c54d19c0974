//! The PostgreSQL connection every hub of a group shares: opened from a `postgres://` address
//! (the password from `PGPASSWORD` or a file, never from the address), with the whole schema
//! here, created under a lock so hubs starting together do not race. Records
//! (`records::postgres`) and the object store's catalog (`store::object`) use it.
//!
//! The records and store traits are blocking (the service calls them on tokio's blocking
//! pool); [`block`] runs one of this module's futures to completion from there.

use crate::error::HubError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the database is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbAddress {
    /// `postgres://USER@HOST:PORT/DB`, without a password.
    pub url: String,
    /// A file holding the password (else `PGPASSWORD`, else none).
    pub password_file: Option<PathBuf>,
    /// Certificates (PEM) to trust for the server's TLS, besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// A pool of connections to the group's database, and this hub's own connection.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// One connection held for the hub's lifetime: the session locks it takes (the names being
    /// uploaded) and its presence last exactly as long as the hub, so a hub that dies releases
    /// them at once, without a lease to wait out. Made again when it ends (the database
    /// restarted, the connection was cut).
    session: Arc<tokio::sync::Mutex<Session>>,
    /// What the other hubs (and this one) say of changed names, on [`NAMES_CHANNEL`], and when
    /// the session is lost or listening again.
    notices: tokio::sync::broadcast::Sender<Notice>,
    /// How to make the session again.
    address: Arc<Address>,
    /// `HOST:PORT/DB`, for messages (never the password).
    shown: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("at", &self.shown).finish()
    }
}

/// Where the database is and how to talk to it.
struct Address {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// The hub's own connection, and how many times it has been made.
struct Session {
    client: tokio_postgres::Client,
    made: u64,
    /// Found not to answer (its close may not have been read yet).
    ended: bool,
}

/// What is heard on the hub's own connection.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A change to names, as announced on [`NAMES_CHANNEL`].
    Changed(String),
    /// An owner's new try at an upload another hub may hold, as asked on [`UPLOADS_CHANNEL`]
    /// (`OWNER:NAME`, the owner key's hash in hex; see `running.rs`).
    TakeOver(String),
    /// A token changed (revoked, expired, given another quota…), as announced on
    /// [`TOKENS_CHANNEL`] by a trigger on the table.
    Tokens,
    /// Session number N ended: announcements may be missed until a later one listens.
    Lost(u64),
    /// Session number N listens (whatever was announced before it was missed).
    Listening(u64),
}

/// How long the database may leave what was sent to it unacknowledged before the connection
/// is given up (the hub's own session is then made again when next needed).
const DB_SILENCE: Duration = Duration::from_secs(30);

/// How long a request waits for a database that cannot be connected to (restarting, failing
/// over) before it fails: tried again after pauses growing from 0.1 s to 2 s.
const DB_RESTART_WAIT: Duration = Duration::from_secs(20);

/// Runs `attempt` until it succeeds, fails for good, or [`DB_RESTART_WAIT`] has passed. Only a
/// connection that could not be made is tried again: a query that failed on a connection is
/// not, since what it did may have been done.
async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T, ConnectError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ConnectError>>,
{
    let began = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Err(e) if e.passing() && began.elapsed() + pause < DB_RESTART_WAIT => {
                tracing::debug!("the database cannot be reached ({e}); trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// Why a connection to the database could not be made (or taken from the pool).
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error(transparent)]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

impl ConnectError {
    /// Whether it may pass: the server unreachable, starting or stopping, not a wrong password,
    /// a missing database or a full pool.
    fn passing(&self) -> bool {
        use deadpool_postgres::{PoolError, TimeoutType};
        match self {
            ConnectError::Pool(PoolError::Backend(e)) | ConnectError::Postgres(e) => passing_pg(e),
            ConnectError::Pool(PoolError::Timeout(TimeoutType::Create)) => true,
            ConnectError::Pool(_) => false,
        }
    }
}

fn passing_pg(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        // The server is starting up, shutting down, or was told to end connections.
        Some(code) => {
            let code = code.code();
            code.starts_with("57P") || code.starts_with("08")
        }
        None => true,
    }
}

/// Connections held at most (each a PostgreSQL backend process).
const POOL_SIZE: usize = 24;

/// Now, in ns since the epoch (what every record's times are in).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Runs `f` to completion from blocking code: a blocking-pool thread, or a worker of a
/// multi-thread runtime (which hands its other tasks to another worker meanwhile).
pub fn block<F: Future>(f: F) -> F::Output {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| handle.block_on(f))
}

/// Whether `db` answers a query within `within` (a health check). Blocking.
pub fn answers(db: &Db, within: Duration) -> Result<(), HubError> {
    let asked = async {
        let c = db.get().await?;
        c.query_one("SELECT 1", &[]).await.map_err(db_err)
    };
    match block(tokio::time::timeout(within, asked)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HubError::Backend(format!(
            "database {} did not answer within {within:?}",
            db.shown()
        ))),
    }
}

/// A database failure, as the hub reports it: with the server's own words when it sent some
/// (`Display` alone says only "db error"), and as [`HubError::ConnectionEnded`] when the server
/// ended the connection instead of answering.
pub fn db_err(e: tokio_postgres::Error) -> HubError {
    let Some(db) = e.as_db_error() else {
        return HubError::Backend(format!("database: {e}"));
    };
    let text = format!("database: {} ({})", db.message(), db.code().code());
    if db.code().code().starts_with("57P") {
        HubError::ConnectionEnded(text)
    } else {
        HubError::Backend(text)
    }
}

/// A failed `COMMIT`, as the hub reports it. Never [`HubError::ConnectionEnded`]: whether a
/// commit the server did not answer was done is unknown, so it is not sent again.
pub fn commit_err(e: tokio_postgres::Error) -> HubError {
    match db_err(e) {
        HubError::ConnectionEnded(text) => HubError::Backend(text),
        other => other,
    }
}

impl Db {
    /// Connects (checking the address, the password and the server at once) and makes sure the
    /// schema is there.
    pub async fn open(address: &DbAddress) -> Result<Self, HubError> {
        let config = pg_config(address)?;
        let shown = shown(&config);
        let tls = tls_connector(address)?;
        let (notices, _) = tokio::sync::broadcast::channel(1024);
        let session = connect_session(&config, &tls, &notices, 1)
            .await
            .map_err(|e| HubError::Backend(format!("cannot reach the database {shown}: {e}")))?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| HubError::Backend(format!("database {shown}: {e}")))?;
        let db = Self {
            pool,
            session: Arc::new(tokio::sync::Mutex::new(Session {
                client: session,
                made: 1,
                ended: false,
            })),
            notices,
            address: Arc::new(Address { config, tls }),
            shown,
        };
        db.create_schema()
            .await
            .map_err(|e| HubError::Backend(format!("database {}: {e}", db.shown)))?;
        Ok(db)
    }

    /// `HOST:PORT/DB`, for the operator's log.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The hub's own connection (see [`Db`]), made again first if it ended.
    pub async fn session(
        &self,
    ) -> Result<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>, HubError> {
        let mut session = self.session.lock().await;
        self.revive(&mut session).await?;
        Ok(tokio::sync::MutexGuard::map(session, |s| &mut s.client))
    }

    /// The hub's own connection if it has not ended, without making it again (what was tied to
    /// an ended one, a lock, went with it).
    pub async fn session_if_alive(
        &self,
    ) -> Option<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>> {
        let session = self.session.lock().await;
        (!session.ended && !session.client.is_closed())
            .then(|| tokio::sync::MutexGuard::map(session, |s| &mut s.client))
    }

    /// How many times the hub's own connection has been made, making it again if it ended:
    /// a change means what was tied to the old one (its locks, the hub's presence) is gone.
    pub async fn session_made(&self) -> Result<u64, HubError> {
        let mut session = self.session.lock().await;
        self.revive(&mut session).await?;
        Ok(session.made)
    }

    async fn revive(&self, session: &mut Session) -> Result<(), HubError> {
        if !session.ended && !session.client.is_closed() {
            return Ok(());
        }
        let made = session.made + 1;
        let address = &self.address;
        let client = patiently(|| async {
            Ok(connect_session(&address.config, &address.tls, &self.notices, made).await?)
        })
        .await
        .map_err(|e| HubError::Backend(format!("database {}: {e}", self.shown)))?;
        *session = Session {
            client,
            made,
            ended: false,
        };
        Ok(())
    }

    /// Hears of names changed by any hub (see [`NAMES_CHANNEL`]).
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Runs `op` (statements on the pool's connections or the hub's own) from blocking code,
    /// as [`Db::again`] does.
    pub fn run<T>(&self, op: impl AsyncFnMut() -> Result<T, HubError>) -> Result<T, HubError> {
        block(self.again(op))
    }

    /// Runs `op`, and once more if the database ended a connection instead of answering it
    /// ([`HubError::ConnectionEnded`]: nothing was done). The database ends every connection
    /// at once when it restarts or an administrator ends them, and one it has just ended can
    /// still look open until its close is read: so the pool's idle connections are dropped,
    /// and the hub's own connection is checked with a round trip, before the second try.
    pub async fn again<T>(
        &self,
        mut op: impl AsyncFnMut() -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        match op().await {
            Err(HubError::ConnectionEnded(why)) => {
                self.recover(&why).await;
                op().await
            }
            done => done,
        }
    }

    /// What [`Db::again`] does before its second try (for callers that cannot use it: a
    /// closure borrowing in a spawned task is not `Send` to rustc yet).
    pub async fn recover(&self, why: &str) {
        tracing::info!("{why}: trying again on a new connection");
        self.pool.retain(|_, _| false);
        self.check_session().await;
    }

    /// Makes the hub's own connection again now if it does not answer.
    async fn check_session(&self) {
        let mut session = self.session.lock().await;
        if session.client.simple_query("").await.is_err() {
            session.ended = true;
        }
    }

    /// A connection from the pool.
    pub async fn get(&self) -> Result<deadpool_postgres::Object, HubError> {
        patiently(|| async { Ok(self.pool.get().await?) })
            .await
            .map_err(|e| HubError::Backend(format!("database {}: {e}", self.shown)))
    }

    async fn create_schema(&self) -> Result<(), String> {
        let mut client = self.pool.get().await.map_err(|e| e.to_string())?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        // One hub at a time creates the tables; the others wait, then find them there.
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA}"
        ))
        .await
        .map_err(|e| e.to_string())?;
        tx.commit().await.map_err(|e| e.to_string())
    }
}

/// Where a change to names is announced, `f:NAME` (a file) or `t:NAME` (it and everything
/// beneath), so each hub drops what it remembered of them.
pub const NAMES_CHANNEL: &str = "troca_names";

/// Where a hub asks the others to stop an upload its owner began again through it.
pub const UPLOADS_CHANNEL: &str = "troca_uploads";

/// Where every change to a token is announced (by a trigger), so each hub forgets the checks
/// it remembered (`records/memo.rs`).
pub const TOKENS_CHANNEL: &str = "troca_tokens";

/// Makes the hub's own connection, number `made`: connected, driven by a task of its own, and
/// listening.
async fn connect_session(
    config: &tokio_postgres::Config,
    tls: &tokio_postgres_rustls::MakeRustlsConnect,
    notices: &tokio::sync::broadcast::Sender<Notice>,
    made: u64,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(listen(connection, notices.clone(), made));
    client
        .batch_execute(&format!(
            "LISTEN {NAMES_CHANNEL}; LISTEN {UPLOADS_CHANNEL}; LISTEN {TOKENS_CHANNEL}"
        ))
        .await?;
    let _ = notices.send(Notice::Listening(made));
    Ok(client)
}

/// Drives the hub's own connection, passing on what is announced on it.
async fn listen<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notices: tokio::sync::broadcast::Sender<Notice>,
    made: u64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(message) = messages.next().await {
        match message {
            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                let payload = n.payload().to_owned();
                let _ = notices.send(match n.channel() {
                    UPLOADS_CHANNEL => Notice::TakeOver(payload),
                    TOKENS_CHANNEL => Notice::Tokens,
                    _ => Notice::Changed(payload),
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the hub's database session ended");
                break;
            }
        }
    }
    let _ = notices.send(Notice::Lost(made));
}

/// The advisory lock key for schema changes.
const SCHEMA_LOCK: i64 = 0x7472_6f63_6100;
/// The advisory lock key that serialises changes to names (so "a file where a folder is" and
/// "a name taken twice" are decided one change at a time, by every hub).
pub const NAMES_LOCK: i64 = 0x7472_6f63_6101;

/// Every table the group shares.
const SCHEMA: &str = r#"
-- The request history, in blocks: a row holds the entries one hub wrote at once, with ids
-- `first` to `first + count - 1`, encoded as `records/postgres/block.rs` says.
CREATE TABLE IF NOT EXISTS request_blocks (
    first bigint PRIMARY KEY,
    count integer NOT NULL,
    entries bytea NOT NULL
);
-- Kept as written: compressing every block would cost more CPU than the space is worth. (Only
-- once: the change locks the table against every hub's writes.)
DO $$
BEGIN
  IF (SELECT attstorage FROM pg_attribute
      WHERE attrelid = 'request_blocks'::regclass AND attname = 'entries') <> 'e' THEN
    ALTER TABLE request_blocks ALTER COLUMN entries SET STORAGE EXTERNAL;
  END IF;
END $$;
-- The next entry's id. A block takes its ids here, and the row stays locked until the block
-- commits, so blocks commit in the order of their ids.
CREATE TABLE IF NOT EXISTS request_ids (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    next bigint NOT NULL
);
INSERT INTO request_ids (one, next) VALUES (true, 1) ON CONFLICT DO NOTHING;
-- A history of one row per request, as hubs before the blocks kept it: moved into blocks of
-- 2,000, numbered on from `request_ids` in the order of the old ids.
DO $$
BEGIN
  IF to_regclass('requests') IS NOT NULL THEN
    WITH numbered AS (
      SELECT row_number() OVER (ORDER BY id) - 1 AS k,
             time_ns, ok, bytes, duration_us,
             convert_to(client, 'UTF8') AS c, convert_to(address, 'UTF8') AS a,
             convert_to(op, 'UTF8') AS o, convert_to(target, 'UTF8') AS t,
             convert_to(left(error, 1024), 'UTF8') AS e
      FROM requests
    ), encoded AS (
      SELECT k, int8send(time_ns) || CASE WHEN ok THEN '\x01'::bytea ELSE '\x00'::bytea END
                || int8send(bytes) || int8send(duration_us)
                || int4send(length(c)) || c || int4send(length(a)) || a
                || int4send(length(o)) || o || int4send(length(t)) || t
                || int4send(length(e)) || e AS entry
      FROM numbered
    )
    INSERT INTO request_blocks (first, count, entries)
      SELECT min(k) + (SELECT next FROM request_ids), count(*),
             string_agg(entry, ''::bytea ORDER BY k)
      FROM encoded GROUP BY k / 2000;
    UPDATE request_ids SET next = next + (SELECT count(*) FROM requests);
    DROP TABLE requests;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS tokens (
    id bigserial PRIMARY KEY,
    hash bytea NOT NULL UNIQUE,
    role text NOT NULL,
    label text NOT NULL,
    created_ns bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false
);
-- When a token stops being accepted (NULL: never); added after the table was first made.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS expires_ns bigint;
-- The folder a token is held to (NULL: the whole share); added later too.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS folder text;
-- What a token's uploads may keep on the hub (0: no bound); added later too.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS quota_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS quota_files bigint NOT NULL DEFAULT 0;
-- A share link's maker (0: a hub's admin token file; NULL: not a share); added later too.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS made_by bigint;
-- A share link's downloads: how many it allows (0: no bound) and how many began; added later.
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS max_downloads bigint NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN IF NOT EXISTS downloads bigint NOT NULL DEFAULT 0;
-- Every change to what a token grants is announced on `troca_tokens`, whoever makes it, so
-- each hub forgets the checks it remembered (a count of downloads changes no grant kept).
CREATE OR REPLACE FUNCTION troca_tokens_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('troca_tokens', '');
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER tokens_changed AFTER UPDATE OF hash, role, folder, revoked, expires_ns,
    quota_bytes, quota_files, made_by, max_downloads OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION troca_tokens_changed();
-- The downloads a share link counted: a download cut and continued from the same address is
-- not counted again. At most one row per download counted.
CREATE TABLE IF NOT EXISTS link_downloads (
    token_id bigint NOT NULL,
    name text COLLATE "C" NOT NULL,
    address text NOT NULL,
    PRIMARY KEY (token_id, name, address)
);
CREATE TABLE IF NOT EXISTS owners (
    name text COLLATE "C" PRIMARY KEY,
    token_id bigint NOT NULL
);
-- The file's size when stored, what it counts against its token's quota; added later.
ALTER TABLE owners ADD COLUMN IF NOT EXISTS size bigint NOT NULL DEFAULT 0;
-- A token's names in order: what it owns under a folder is read a page at a time.
CREATE INDEX IF NOT EXISTS owners_token_name ON owners (token_id, name);
DROP INDEX IF EXISTS owners_token;
CREATE TABLE IF NOT EXISTS key_owners (
    name text COLLATE "C" PRIMARY KEY,
    key_hash bytea NOT NULL
);
-- The version (size, mtime) of the file the upload left; NULL for owners recorded before.
ALTER TABLE owners ADD COLUMN IF NOT EXISTS mtime_ns bigint;
ALTER TABLE key_owners ADD COLUMN IF NOT EXISTS size bigint NOT NULL DEFAULT 0;
ALTER TABLE key_owners ADD COLUMN IF NOT EXISTS mtime_ns bigint;
-- WebDAV's dead properties: `{namespace}name` and the element as sent.
CREATE TABLE IF NOT EXISTS props (
    name text COLLATE "C" NOT NULL,
    key text NOT NULL,
    xml text NOT NULL,
    PRIMARY KEY (name, key)
);
-- Each running hub, and the clients connected to it (rewritten on every heartbeat).
-- A hub is alive while its session (pid, backend_start) is.
CREATE TABLE IF NOT EXISTS hubs (
    id text PRIMARY KEY,
    started_ns bigint NOT NULL,
    pid integer NOT NULL,
    backend_start timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    hub text NOT NULL,
    id bigint NOT NULL,
    client text NOT NULL,
    address text NOT NULL,
    connected_ns bigint NOT NULL,
    activity text NOT NULL,
    PRIMARY KEY (hub, id)
);
-- The object store's catalog: immutable objects by content, and the names that refer to them.
CREATE TABLE IF NOT EXISTS objects (
    hash bytea PRIMARY KEY,
    key text NOT NULL,
    size bigint NOT NULL,
    -- When it was last put to use or left unused: unused objects older than the grace period
    -- are deleted.
    touched timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS names (
    name text COLLATE "C" PRIMARY KEY,
    -- A file refers to an object; a folder (made on purpose, or left empty) to none.
    object bytea REFERENCES objects (hash),
    size bigint NOT NULL,
    modified_ns bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS names_object ON names (object);
-- The order of a listing: a folder sorts as `NAME/`, as it is listed.
CREATE INDEX IF NOT EXISTS names_listed
    ON names (((CASE WHEN object IS NULL THEN name || '/' ELSE name END) COLLATE "C"));
-- What a folder holds directly, in listing order: by the folder a name is in (`""` or `F/`).
CREATE INDEX IF NOT EXISTS names_children
    ON names ((regexp_replace(name, '[^/]*$', '') COLLATE "C"),
              ((CASE WHEN object IS NULL THEN name || '/' ELSE name END) COLLATE "C"));
-- Uploads in progress or interrupted, resumable through any hub.
CREATE TABLE IF NOT EXISTS uploads (
    key text PRIMARY KEY,
    name text COLLATE "C" NOT NULL,
    size bigint NOT NULL,
    source_mtime_ns bigint NOT NULL,
    address text NOT NULL,
    object_key text NOT NULL,
    upload_id text NOT NULL,
    part_size bigint NOT NULL,
    touched_ns bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_parts (
    key text NOT NULL REFERENCES uploads (key) ON DELETE CASCADE,
    part integer NOT NULL,
    etag text NOT NULL,
    -- The BLAKE3 chaining value of the part's subtree: the whole file's hash is made from these.
    cv bytea NOT NULL,
    PRIMARY KEY (key, part)
);
"#;

/// TLS to the database with rustls: the system's roots and `--db-ca-file`. Whether it is used
/// is the address's `sslmode` (`require`: always; the default `prefer`: when the server offers
/// it; `disable`: never).
fn tls_connector(
    address: &DbAddress,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, HubError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &address.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| HubError::io(format!("cannot read {}", path.display()), e))?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert =
                cert.map_err(|e| HubError::io(format!("cannot read {}", path.display()), e))?;
            roots.add(cert).map_err(|e| {
                HubError::BadRequest(format!("--db-ca-file {}: {e}", path.display()))
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| HubError::Internal(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The connection settings of `address`, with the password from the file or `PGPASSWORD`.
fn pg_config(address: &DbAddress) -> Result<tokio_postgres::Config, HubError> {
    let bad = |why: &str| HubError::BadRequest(format!("--db {}: {why}", address.url));
    if !address.url.starts_with("postgres://") && !address.url.starts_with("postgresql://") {
        return Err(bad("expected postgres://USER@HOST:PORT/DATABASE"));
    }
    let mut config: tokio_postgres::Config =
        address.url.parse().map_err(|e| bad(&format!("{e}")))?;
    if config.get_password().is_some() {
        return Err(HubError::BadRequest(
            "--db: a password does not belong in the address (it would show in `ps`); \
             set PGPASSWORD or use --db-password-file"
                .into(),
        ));
    }
    let password = match &address.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| HubError::io(format!("cannot read {}", path.display()), e))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
        None => std::env::var("PGPASSWORD").ok(),
    };
    if let Some(p) = password {
        config.password(p);
    }
    config.connect_timeout(Duration::from_secs(10));
    // A database cut off (not closed) would otherwise hold a connection for the kernel's
    // retransmission time, about 15 minutes: drop it once what was sent stays unacknowledged
    // for 30 s, or an idle connection's probes go unanswered as long.
    config.tcp_user_timeout(DB_SILENCE);
    config.keepalives_idle(DB_SILENCE / 3);
    config.keepalives_interval(DB_SILENCE / 6);
    config.keepalives_retries(3);
    config.application_name("troca");
    Ok(config)
}

fn shown(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A database of its own on the test server (`scripts/services`), and a connection
    /// outside the hub's to end the hub's with; `None` (skipped) where there is none.
    struct TestDb {
        db: Db,
        admin: tokio_postgres::Client,
        _dir: tempfile::TempDir,
    }

    async fn test_db() -> Option<TestDb> {
        let (Ok(server), Ok(password), Ok(ca)) = (
            std::env::var("TROCA_TEST_PG"),
            std::env::var("TROCA_TEST_PGPASSWORD"),
            std::env::var("TROCA_TEST_PG_CA"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "TROCA_TEST_PG is not set; scripts/test starts PostgreSQL with scripts/services"
            );
            eprintln!("skipped: no PostgreSQL (scripts/services start DIR; . DIR/env)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pass"), password).unwrap();
        let address = |db: &str| DbAddress {
            url: format!("{server}/{db}?sslmode=require"),
            password_file: Some(dir.path().join("pass")),
            ca_file: Some(ca.clone().into()),
        };
        let admin = async |a: &DbAddress| {
            let (client, connection) = pg_config(a)
                .unwrap()
                .connect(tls_connector(a).unwrap())
                .await
                .unwrap();
            tokio::spawn(connection);
            client
        };
        let name = format!(
            "pgtest{}",
            blake3::hash(dir.path().as_os_str().as_encoded_bytes())
        )[..20]
            .to_owned();
        admin(&address("postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let db = Db::open(&address(&name)).await.unwrap();
        let admin = admin(&address(&name)).await;
        Some(TestDb {
            db,
            admin,
            _dir: dir,
        })
    }

    impl TestDb {
        /// Ends backend `pid` once it is running a statement.
        async fn end_when_busy(&self, pid: i32) {
            loop {
                let busy: i64 = self
                    .admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE pid = $1 AND state = 'active'",
                        &[&pid],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if busy == 1 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            self.admin
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .unwrap();
        }
    }

    async fn pid(c: &tokio_postgres::Client) -> i32 {
        c.query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Links that ended are forgotten as on SQLite (one statement here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_links_that_ended_are_forgotten_here_too() {
        let Some(t) = test_db().await else { return };
        let db = t.db.clone();
        tokio::task::spawn_blocking(move || {
            let pg = crate::records::postgres::PgTokens::new(db, blake3::hash(b"a"));
            crate::records::checks::forgets_the_links_that_ended(&pg);
        })
        .await
        .unwrap();
    }

    /// Dead properties of many names read at once answer what each name's own read does, in
    /// the order asked, within the bytes given and past them marked as left out: the same on
    /// PostgreSQL (two queries) as on SQLite (one per name).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_properties_of_many_names_are_each_names_own_within_the_bytes() {
        let Some(t) = test_db().await else { return };
        let db = t.db.clone();
        tokio::task::spawn_blocking(move || props_of_many_checked(db))
            .await
            .unwrap();
    }

    fn props_of_many_checked(db: Db) {
        use crate::records::{DeadProp, NamedProps, Owners, PropChange};
        let pg = crate::records::postgres::PgTokens::new(db, blake3::hash(b"a"));
        let dir = tempfile::tempdir().unwrap();
        let (lite, _) = crate::records::sqlite::tokens::SqliteTokens::open(dir.path()).unwrap();
        // Names with 0 to 3 properties of growing size; `b` has none.
        let names: Vec<String> = ["a", "b", "c/d", "c/e", "z"].map(String::from).to_vec();
        let prop = |i: usize, n: usize| DeadProp {
            key: format!("{{x:}}p{n}"),
            xml: format!("<p{n} xmlns=\"x:\">{}</p{n}>", "v".repeat(100 * i)),
        };
        for (i, name) in names.iter().enumerate() {
            let set: Vec<PropChange> = (0..i % 4).map(|n| PropChange::Set(prop(i, n))).collect();
            pg.patch_props(name, &set).unwrap();
            lite.patch_props(name, &set).unwrap();
        }
        let mut asked = names.clone();
        asked.insert(1, "nowhere".into());
        for bytes in [0, 150, 700, usize::MAX] {
            let mut want = Vec::new();
            let mut used = 0;
            for name in &asked {
                let own = lite.props(name).unwrap();
                assert_eq!(pg.props(name).unwrap(), own, "{name}");
                if own.is_empty() {
                    continue;
                }
                used += own.iter().map(|p| p.key.len() + p.xml.len()).sum::<usize>();
                let props = (used <= bytes).then_some(own);
                want.push(NamedProps {
                    name: name.clone(),
                    props,
                });
            }
            assert!(want.iter().any(|w| w.props.is_some()) || bytes < 150);
            assert_eq!(
                pg.props_of(&asked, bytes).unwrap(),
                want,
                "PostgreSQL, {bytes} bytes"
            );
            assert_eq!(
                lite.props_of(&asked, bytes).unwrap(),
                want,
                "SQLite, {bytes} bytes"
            );
        }
    }

    /// The database ends a pooled connection while a statement runs on it: the statement
    /// fails with the server's words, and is sent once more on a new connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_on_an_ended_connection_is_sent_again_on_a_new_one() {
        let Some(t) = test_db().await else { return };
        let tries = AtomicU32::new(0);
        let mut first = None;
        let answered: Result<i32, HubError> =
            t.db.again(async || {
                let c = t.db.get().await?;
                if tries.fetch_add(1, Ordering::SeqCst) > 0 {
                    return Ok(pid(&c).await);
                }
                let (slept, ()) = tokio::join!(
                    c.query_one("SELECT pg_sleep(60)", &[]),
                    t.end_when_busy(pid(&c).await)
                );
                let e = db_err(slept.expect_err("the statement was ended"));
                first = Some(e.to_string());
                Err(e)
            })
            .await;
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        let first = first.unwrap();
        assert!(
            first.contains("terminating connection") && first.contains("57P01"),
            "{first}"
        );
        assert!(answered.unwrap() > 0);
    }

    /// The same for the hub's own connection: made again (with a new number) and used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hubs_own_connection_ended_is_made_again_for_the_second_try() {
        let Some(t) = test_db().await else { return };
        let before = t.db.session_made().await.unwrap();
        let tries = AtomicU32::new(0);
        let answered: Result<(), HubError> =
            t.db.again(async || {
                let session = t.db.session().await?;
                if tries.fetch_add(1, Ordering::SeqCst) > 0 {
                    return session.simple_query("").await.map(|_| ()).map_err(db_err);
                }
                let (slept, ()) = tokio::join!(
                    session.query_one("SELECT pg_sleep(60)", &[]),
                    t.end_when_busy(pid(&session).await)
                );
                Err(db_err(slept.expect_err("the statement was ended")))
            })
            .await;
        answered.unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        assert_eq!(t.db.session_made().await.unwrap(), before + 1);
    }

    /// A statement that failed for any other reason is not sent again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_refused_by_the_database_is_not_sent_again() {
        let Some(t) = test_db().await else { return };
        let tries = AtomicU32::new(0);
        let refused =
            t.db.again(async || {
                tries.fetch_add(1, Ordering::SeqCst);
                let c = t.db.get().await?;
                c.query_one("SELECT 1 / 0", &[]).await.map_err(db_err)
            })
            .await
            .unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert!(
            matches!(&refused, HubError::Backend(m) if m.contains("division by zero")),
            "{refused:?}"
        );
    }
}
