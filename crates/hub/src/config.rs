//! The hub's settings, with the defaults a person gets from `troca serve`.

use std::path::PathBuf;
use std::time::Duration;

/// How a hub runs. Build one with [`HubConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The shared folder.
    pub root: PathBuf,
    /// Where the hub keeps its own files (partial uploads, later databases). Defaults to
    /// `ROOT/.troca`; never listed or served.
    pub state_dir: PathBuf,
    /// Connections served at once; more are told the hub is busy and closed.
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold open at once, over every face.
    pub max_connections_per_ip: usize,
    /// How long a client may take to send one request once it has begun: a native frame, or an
    /// HTTP request's headers.
    pub request_timeout: Duration,
    /// How long a new connection may take to say hello.
    pub handshake_timeout: Duration,
    /// How long a connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long a transfer may go without moving a byte before it is abandoned.
    pub stall_timeout: Duration,
    /// How long an interrupted upload is kept for resume.
    pub partial_ttl: Duration,
    /// How much interrupted upload data is kept, per address and in all.
    pub partial_budget: crate::store::PartialBudget,
    /// Free space left on the disk of the shared folder: uploads that would leave less are
    /// refused.
    pub keep_free: crate::store::KeepFree,
    /// How many history entries to keep; 0 records none.
    pub history_keep: u64,
    /// The hot-file cache's byte budget (0 turns it off) and the largest file it holds.
    pub cache_size: u64,
    pub cache_max_file: u64,
    /// How many files' hashes are kept in memory (the state database keeps them all, on the
    /// local backend).
    pub hash_cache: usize,
    /// Memory all connections together may hold for small files until they are stored
    /// (batches, and web uploads of at most `MEMORY_UPLOAD_MAX`); a connection that finds none
    /// free streams its files to disk one at a time.
    pub batch_memory: u64,
    /// Whether and how the native protocol is encrypted.
    pub tls: TlsMode,
    /// Refuse every write (upload, replace, delete), whatever the token.
    pub read_only: bool,
    /// Refuse clients without a valid token.
    pub require_token: bool,
    /// Keep the files in an S3-compatible object store instead of `root` (names in `db`).
    pub store: Option<crate::store::S3Address>,
    /// Keep the records (and an object store's names) in PostgreSQL instead of SQLite.
    pub db: Option<crate::pg::DbAddress>,
    /// How long an object no name refers to is kept (downloads and uploads in flight finish).
    pub object_grace: Duration,
    /// Memory for the parts of uploads to an object store, all together.
    pub store_part_memory: u64,
    /// How long a request to an object store may go without a byte moving.
    pub store_timeout: Duration,
    /// This hub's name among the hubs of a group (in `who` and `status`).
    pub hub_name: String,
    /// Searches of the whole share running at once (each address runs one at a time).
    pub max_searches: usize,
    /// Folders written as zips at once (each address one at a time).
    pub max_zips: usize,
    /// The most names one search looks at before it answers what it found, marked cut.
    pub search_names: u64,
    /// The most names a folder's web page reads beneath its sub-folders to show what each
    /// holds (and the most of the visitor's own names it reads); past them the rest of its
    /// sub-folders are shown without counts.
    pub count_names: u64,
    /// The most locks (WebDAV's) held at once, and the longest any is held without a refresh.
    pub max_locks: usize,
    /// The most WebDAV locks one token (or the admin) holds at once.
    pub max_locks_per_token: usize,
    pub max_lock_time: Duration,
    /// What an address without a token may upload per window.
    pub upload_quota: crate::quota::QuotaLimits,
    /// How fast clients may download and upload, all together and per address (none by
    /// default).
    pub rates: troca_net::pace::Limits,
    /// Count requests and more for Prometheus (`--metrics`); off, nothing is counted.
    pub metrics: bool,
    /// The reverse proxies whose `X-Forwarded-For` says which client a web request is from.
    pub trusted_proxies: TrustedProxies,
    /// The path the web face is served beneath (`/troca`; empty: the root), from `--path-prefix`.
    pub web_prefix: String,
    /// Share links: how long one lasts when its maker does not say, the longest it may last,
    /// and how many one token may have working at once.
    pub shares: ShareLimits,
    /// The web face's address as share links give it: `--public-url`, or `SCHEME://*:PORT` and
    /// the prefix, `*` standing for the host a client reached the hub by (empty: no web face).
    pub web_base: String,
    /// Names no client reaches (`--hide`): patterns for one name each (see `hidden.rs`).
    pub hide: Vec<String>,
}

/// What share links may be (`--share-time`, `--max-share-time`, `--max-shares-per-token`,
/// `--max-share-upload`, `--max-share-upload-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareLimits {
    pub default_time: Duration,
    pub max_time: Duration,
    pub per_token: usize,
    /// How long a link stays in the records (listed by `troca shares`) after it expired; then
    /// it is forgotten (an upload link once none of its files is left), so the links a hub
    /// has ever made do not pile up.
    pub keep: Duration,
    /// The most an upload link may bring in (and what one gets unless it asks for less); 0
    /// bytes or files: no bound on that.
    pub upload: crate::records::Amount,
}

impl Default for ShareLimits {
    fn default() -> Self {
        Self {
            default_time: Duration::from_secs(7 * 86_400),
            max_time: Duration::from_secs(30 * 86_400),
            per_token: 1_000,
            keep: Duration::from_secs(30 * 86_400),
            upload: crate::records::Amount {
                bytes: 10 << 30,
                files: 10_000,
            },
        }
    }
}

/// A web face's path prefix as given (`troca`, `/troca/`, `/a/b`) in its one form: `""` for
/// the root, else `/` and segments of URL-safe characters, without a trailing `/`.
pub fn web_prefix(given: &str) -> Result<String, String> {
    let mut out = String::new();
    for seg in given.split('/').filter(|s| !s.is_empty()) {
        let safe = seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !safe || seg == "." || seg == ".." {
            return Err(format!(
                "{given:?}: a path prefix is made of segments of letters, digits, -, ., _ and ~"
            ));
        }
        out.push('/');
        out.push_str(seg);
    }
    Ok(out)
}

/// The addresses of reverse proxies trusted to say who their clients are (`--trusted-proxy`):
/// networks, each an address with an optional prefix length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self(nets)
    }

    /// All of `lists` as one (the flag given several times).
    pub fn merged(lists: impl IntoIterator<Item = Self>) -> Self {
        Self(lists.into_iter().flat_map(|l| l.0).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (an IPv4 address written as IPv6, `::ffff:a.b.c.d`, counts as itself) is
    /// one of them.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// `ADDR` or `ADDR/PREFIX`, several separated by commas.
    fn from_str(s: &str) -> Result<Self, String> {
        let net = |part: &str| -> Result<ipnet::IpNet, String> {
            let part = part.trim();
            part.parse::<ipnet::IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| part.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    format!("{part:?} is not an address or a network (ADDR or ADDR/PREFIX)")
                })
        };
        s.split(',').map(net).collect::<Result<_, _>>().map(Self)
    }
}

/// How the native protocol is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS 1.3 with the hub's own key, made on first start (clients pin it).
    OwnKey,
    /// TLS 1.3 with the operator's certificate chain and key (PEM files).
    Given { cert: PathBuf, key: PathBuf },
    /// No encryption (`--plaintext`): only for benchmarks or links already encrypted.
    Plaintext,
}

impl HubConfig {
    /// Defaults for sharing `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            state_dir: root.join(troca_proto::name::STATE_DIR_NAME),
            root,
            max_connections: 16 * 1024,
            max_connections_per_ip: 256,
            request_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(15 * 60),
            stall_timeout: Duration::from_secs(30),
            partial_ttl: Duration::from_secs(24 * 60 * 60),
            partial_budget: crate::store::PartialBudget {
                per_address: crate::store::PartialLimit {
                    bytes: 4 << 30,
                    files: 1_000,
                },
                total: crate::store::PartialLimit {
                    bytes: 32 << 30,
                    files: 10_000,
                },
            },
            keep_free: crate::store::KeepFree::default(),
            history_keep: 1_000_000,
            cache_size: 64 << 20,
            cache_max_file: 1 << 20,
            hash_cache: crate::hashes::DEFAULT_ENTRIES,
            batch_memory: 64 << 20,
            tls: TlsMode::OwnKey,
            read_only: false,
            require_token: false,
            store: None,
            db: None,
            object_grace: Duration::from_secs(60 * 60),
            store_part_memory: 512 << 20,
            store_timeout: Duration::from_secs(30),
            hub_name: default_hub_name(),
            max_searches: 4,
            max_zips: 16,
            search_names: 2_000_000,
            count_names: 100_000,
            max_locks: 10_000,
            max_locks_per_token: 1_000,
            max_lock_time: Duration::from_secs(60 * 60),
            upload_quota: crate::quota::QuotaLimits::DEFAULT,
            rates: troca_net::pace::Limits::default(),
            metrics: false,
            trusted_proxies: TrustedProxies::default(),
            web_prefix: String::new(),
            shares: ShareLimits::default(),
            web_base: String::new(),
            hide: Vec::new(),
        }
    }
}

/// The machine's name and this process, unique among the hubs of a group.
fn default_hub_name() -> String {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    format!("{host}:{}", std::process::id())
}
