//! The one-shot client commands: `ls`, `put`, `get`, `rm`. Each connects once, does its work
//! through `troca-net` (the same code the other faces use) and reports for people or as JSON.

use crate::args::{Command, Global};
use crate::mirror;
use crate::output::{self, hex, print_json};
use crate::progress::Bar;
use crate::retry::Retries;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use troca_net::durable::free_local_path;
use troca_net::transfer::{download_to_path, download_to_writer, upload_path, Streamed};
use troca_net::{ClientError, ClientOptions, HubClient};
use troca_proto::msg::{Activity, Entry, History, HistoryEntry, PutSmall};
use troca_proto::{json, ErrorCode};

pub fn main(global: &Global, command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(global, command))
}

/// `mv`'s names with the wildcards of what to move expanded (not of where to: a plain name).
pub(crate) async fn expand_sources(
    client: &mut HubClient,
    names: &[String],
) -> Result<Vec<String>, ClientError> {
    let Some((target, sources)) = names.split_last() else {
        return Ok(Vec::new());
    };
    let mut all = crate::glob::expand(client, sources).await?;
    all.push(crate::glob::plain(target));
    Ok(all)
}

/// Whether share terms make upload links (whose folders may not exist yet: no wildcards).
pub(crate) fn upload_link(terms: &crate::share::Terms) -> bool {
    terms.upload.is_some()
}

/// What is wrong with how a command is used, if anything, whatever the hub holds.
fn misuse(command: &Command) -> Option<&'static str> {
    match command {
        Command::Put {
            files,
            as_name: Some(_),
            ..
        } if files.len() > 1 => Some("--as takes a single FILE"),
        Command::Get {
            names,
            output: Some(o),
            ..
        } => several_into(o, names.len()),
        _ => None,
    }
}

/// What is wrong with saving `count` downloads to `output`, if anything.
fn several_into(output: &Path, count: usize) -> Option<&'static str> {
    if count < 2 {
        None
    } else if output == Path::new("-") {
        Some("-o - takes a single NAME (a wildcard may match several: quote one name)")
    } else if output.exists() && !output.is_dir() {
        Some("with several NAMEs, -o must be a folder")
    } else {
        None
    }
}

async fn run(global: &Global, command: Command) -> Result<ExitCode> {
    // Check what can be checked before connecting, so usage errors don't depend on the hub.
    if let Some(wrong) = misuse(&command) {
        return usage(wrong);
    }
    let mut client = connect(global).await?;
    match command {
        Command::Ls {
            search: Some(text), ..
        }
        | Command::Find { text, .. } => find(global, &mut client, &text).await,
        Command::Ls { prefix, .. } => {
            ls(global, &mut client, prefix.as_deref().unwrap_or("")).await
        }
        Command::Mkdir { names, .. } => mkdir(global, &mut client, &names).await,
        Command::Share {
            mut names,
            expires,
            upload,
            max_size,
            max_files,
            max_downloads,
            qr,
            ..
        } => {
            let upload = upload.then_some(troca_proto::msg::UploadBounds {
                bytes: max_size.unwrap_or(0),
                files: max_files.unwrap_or(0),
            });
            let terms = crate::share::Terms {
                expires,
                upload,
                max_downloads: max_downloads.unwrap_or(0),
                qr,
                shell: false,
            };
            if !upload_link(&terms) {
                names = crate::glob::expand(&mut client, &names).await?;
            }
            crate::share::share(global, &mut client, &names, terms).await
        }
        Command::Shares { .. } => crate::share::shares(global, &mut client, false).await,
        Command::Unshare { ids, .. } => crate::share::unshare(global, &mut client, &ids).await,
        Command::Mv { names, force, .. } => {
            let expanded = expand_sources(&mut client, &names).await?;
            mv(global, &mut client, &expanded, force).await
        }
        Command::Cp { names, force, .. } => {
            let expanded = expand_sources(&mut client, &names).await?;
            cp(global, &mut client, &expanded, force).await
        }
        Command::Put {
            files,
            as_name,
            to,
            force,
            delete,
            dry_run,
            ..
        } => {
            let names = Naming { as_name, to };
            let how = Placing { force, delete };
            match dry_run {
                true => crate::dry::put(global, &mut client, &files, names, how).await,
                false => put(global, &mut client, &files, &names, how).await,
            }
        }
        Command::Get {
            names,
            output,
            force,
            delete,
            dry_run,
            ..
        } => {
            let expanded = crate::glob::expand(&mut client, &names).await?;
            let how = Placing { force, delete };
            match dry_run {
                true => crate::dry::get(global, &mut client, &expanded, output, how).await,
                false => get(global, &mut client, &expanded, output, how).await,
            }
        }
        Command::Rm {
            names, recursive, ..
        } => {
            let expanded = crate::glob::expand(&mut client, &names).await?;
            rm(global, &mut client, &expanded, recursive).await
        }
        Command::Who { .. } => who(global, &mut client).await,
        Command::History {
            limit,
            client: who,
            op,
            before,
            ..
        } => {
            let query = History {
                limit,
                client: who,
                op,
                before: before.unwrap_or(0),
            };
            history(global, &mut client, query, HistoryFace::CommandLine).await
        }
        Command::Status { .. } => status(global, &mut client).await,
        Command::Time { .. } => time(global, &mut client).await,
        Command::Serve(_)
        | Command::Token(_)
        | Command::Json { .. }
        | Command::Shell { .. }
        | Command::Tracker { .. }
        | Command::Health { .. }
        | Command::Swarm(_)
        | Command::Peer(_)
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("not a one-shot client command")
        }
    }
}

fn usage(msg: &str) -> Result<ExitCode> {
    eprintln!("troca: {msg}");
    Ok(ExitCode::from(2))
}

pub(crate) async fn connect(global: &Global) -> Result<HubClient> {
    let token = match &global.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("TROCA_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let target = troca_proto::key::ConnectString::parse(&global.hub)?;
    let addr = with_default_port(&target.address, 13370);
    let pinned = match (&target.key, &global.hub_key) {
        (Some(k), _) => Some(*k),
        (None, Some(k)) => Some(k.parse::<troca_proto::key::HubKey>()?),
        (None, None) => None,
    };
    let known = pinned.or_else(|| crate::known::lookup(&addr));
    let mut options = ClientOptions {
        name: client_name(global),
        token,
        owner_key: owner_key(&addr, known.as_ref()),
        trust: if global.plaintext {
            troca_net::Trust::Plaintext
        } else {
            troca_net::Trust::Key(known)
        },
        // A hub whose key nobody pinned may still have a certificate an authority vouches for.
        roots: (known.is_none() && !global.plaintext)
            .then(system_roots)
            .flatten(),
        silence: global.timeout,
        pacer: global.max_rate.map(pacer),
    };
    match HubClient::connect(&addr, &options).await {
        Err(ClientError::UnknownHubKey { seen, .. }) => {
            crate::known::decide_new(&addr, seen, global.trust_new_hub)?;
            options.trust = troca_net::Trust::Key(Some(seen));
            options.owner_key = owner_key(&addr, Some(&seen));
            Ok(HubClient::connect(&addr, &options).await?)
        }
        Err(ClientError::HubKeyMismatch { expected, seen, .. }) if pinned.is_none() => {
            Err(crate::known::changed(&addr, expected, seen))
        }
        other => Ok(other?),
    }
}

/// This process's bandwidth limit: one for all its connections to hubs, so a folder's transfer
/// taken up again on a new connection, or the shell's next command, stays within it.
fn pacer(rate: u64) -> std::sync::Arc<troca_net::pace::Pacer> {
    static PACER: std::sync::OnceLock<std::sync::Arc<troca_net::pace::Pacer>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(
        PACER.get_or_init(|| std::sync::Arc::new(troca_net::pace::Pacer::each_way(rate))),
    )
}

/// The system's certificate authorities (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), for
/// hubs serving a CA-issued certificate.
fn system_roots() -> Option<std::sync::Arc<rustls::RootCertStore>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    (added > 0).then(|| std::sync::Arc::new(roots))
}

/// Where the client keeps what it remembers (`$XDG_DATA_HOME/troca`, or `~/.local/share/troca`).
pub(crate) fn data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("troca"))
}

/// This client's owner key for a hub: made at random on first use and kept in
/// `DATA/owner-keys/` (0600). What it uploads without a token, it may replace and delete
/// again. When the hub's key is known before connecting (pinned, or in `known_hubs`), the
/// owner key goes with the hub's key (`key-FINGERPRINT`), so the same hub reached by another
/// name or address knows the same owner; a key kept for the address before is taken over.
/// Else (a plaintext hub, a certificate from an authority) it goes with `addr`. `None` where
/// there is nowhere to keep it.
pub(crate) fn owner_key(addr: &str, hub: Option<&troca_proto::key::HubKey>) -> Option<String> {
    owner_key_in(&data_dir()?.join("owner-keys"), addr, hub)
}

/// [`owner_key`], kept in folder `dir`.
fn owner_key_in(
    dir: &std::path::Path,
    addr: &str,
    hub: Option<&troca_proto::key::HubKey>,
) -> Option<String> {
    let by_address = dir.join(file_name_for(addr));
    let path = match hub {
        Some(key) => dir.join(format!("key-{key}")),
        None => by_address.clone(),
    };
    if let Some(key) = read_owner_key(&path) {
        return Some(key);
    }
    let key = match read_owner_key(&by_address) {
        Some(earlier) => earlier,
        None => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).ok()?;
            hex(&bytes)
        }
    };
    std::fs::create_dir_all(dir).ok()?;
    write_owner_key(&path, &key)
        .ok()
        // Another process made it first: theirs stands.
        .or_else(|| read_owner_key(&path))
}

fn read_owner_key(path: &std::path::Path) -> Option<String> {
    let key = std::fs::read_to_string(path).ok()?;
    Some(key.trim().to_owned()).filter(|k| !k.is_empty())
}

/// Writes `key` at `path` unless a key is there: written whole under a name of this process's
/// own, then linked into place, which fails if another process's key got there first. (Made
/// in place, a key could be read half-written, or empty, by a process starting at that very
/// moment, which then went on without one.)
fn write_owner_key(path: &std::path::Path, key: &str) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut unique = [0u8; 8];
    getrandom::fill(&mut unique).map_err(std::io::Error::other)?;
    let own = path.with_extension(format!("new-{}", hex(&unique)));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&own)?;
        std::io::Write::write_all(&mut f, key.as_bytes())?;
        f.sync_all()?;
        std::fs::hard_link(&own, path)
    })();
    let _ = std::fs::remove_file(&own);
    written.map(|()| key.to_owned())
}

/// `addr` as a file name: letters, digits, `.` and `-` kept, the rest `_`.
fn file_name_for(addr: &str) -> String {
    addr.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `addr` with `port` added when it has none: `host`, `192.0.2.1`, `::1` and `[::1]` get it;
/// `host:1234`, `192.0.2.1:1234` and `[::1]:1234` are kept.
pub(crate) fn with_default_port(addr: &str, port: u16) -> String {
    let addr = addr.trim();
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_owned();
    }
    if let Ok(v6) = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::Ipv6Addr>()
    {
        return format!("[{v6}]:{port}");
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_owned(),
        _ => format!("{addr}:{port}"),
    }
}

/// The name this client gives: `--name`, or `user@host`.
pub(crate) fn client_name(global: &Global) -> String {
    global.name.clone().unwrap_or_else(default_name)
}

/// `user@host`, as a client introduces itself by default.
fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let uname = rustix::system::uname();
    let host = uname.nodename().to_string_lossy();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!("{user}@{host}")
}

/// A connection made when first needed and made again after it was lost, for the long-running
/// faces (shell, JSON mode): a failed command must not end the session.
pub(crate) struct Link<'g> {
    pub global: &'g Global,
    client: Option<HubClient>,
    /// A name chosen since starting, to take again after reconnecting.
    renamed: Option<String>,
}

impl<'g> Link<'g> {
    pub fn new(global: &'g Global) -> Self {
        Self {
            global,
            client: None,
            renamed: None,
        }
    }

    /// Remembers a new name for later reconnections.
    pub fn rename(&mut self, name: &str) {
        self.renamed = Some(name.to_owned());
    }

    /// The connection, connecting first if there is none.
    pub async fn client(&mut self) -> Result<&mut HubClient> {
        if self.client.is_none() {
            let mut c = connect(self.global).await?;
            if let Some(name) = &self.renamed {
                c.register(name).await?;
            }
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// After an error: keep the connection if the hub merely refused, drop it otherwise so the
    /// next command reconnects. Returns whether it was dropped.
    pub fn after_error(&mut self, err: &anyhow::Error) -> bool {
        let refused = matches!(
            err.downcast_ref::<ClientError>(),
            Some(ClientError::Hub { .. })
        );
        if !refused {
            self.reset();
        }
        !refused
    }

    /// Forgets the connection; the next command connects again.
    pub fn reset(&mut self) {
        self.client = None;
    }
}

/// What a command did to each of its arguments: rows for `--json`, and whether any failed.
pub(crate) struct Report<T> {
    pub(crate) rows: Vec<T>,
    failed: bool,
    has_token: bool,
    /// Neither progress nor notes on stderr (`--quiet`, `--json`).
    quiet: bool,
    /// Refusals over the upload quota after the first, which said why: counted, not printed
    /// (a folder's every remaining file would repeat it).
    over_quota: u64,
    /// Files refused because the hub hides their names, likewise (a folder's `.git/`).
    hidden: u64,
}

impl<T: Serialize> Report<T> {
    pub(crate) fn new(global: &Global) -> Self {
        Self {
            rows: Vec::new(),
            failed: false,
            has_token: global.has_token(),
            quiet: global.quiet || global.json,
            over_quota: 0,
            hidden: 0,
        }
    }

    /// Says what failed on stderr and remembers it for the exit status.
    fn fail(&mut self, what: impl std::fmt::Display) {
        eprintln!("troca: {what}");
        self.failed = true;
    }

    /// Says what failed and why, with what to type when the hub refused.
    pub(crate) fn refused(&mut self, what: impl std::fmt::Display, e: &ClientError) {
        let code = match e {
            ClientError::Hub { code, .. } => Some(*code),
            _ => None,
        };
        let repeated = match code {
            Some(ErrorCode::Quota) => Some(&mut self.over_quota),
            Some(ErrorCode::Hidden) => Some(&mut self.hidden),
            _ => None,
        };
        if let Some(count) = repeated {
            *count += 1;
            if *count > 1 {
                // The first said why (and marked the report failed).
                return;
            }
        }
        let message = e.to_string();
        let hint = output::hint(code, self.has_token);
        self.fail(format_args!("{what}: {message}{hint}"));
    }

    pub(crate) fn finish(self, global: &Global) -> Result<ExitCode> {
        let repeated = [
            (self.over_quota, "the upload quota"),
            (self.hidden, "names this hub hides"),
        ];
        for (count, why) in repeated.into_iter().filter(|(n, _)| *n > 1) {
            let more = count - 1;
            let files = if more == 1 { "file" } else { "files" };
            eprintln!("troca: {more} more {files} refused for the same reason ({why})");
        }
        if global.json {
            print_json(&self.rows)?;
        }
        Ok(if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// After a failed transfer: a refusal leaves the connection in step, anything else (a broken
/// stream, a local write error mid-download) may not, so start a fresh one.
pub(crate) async fn recover(
    global: &Global,
    client: &mut HubClient,
    err: &ClientError,
) -> Result<()> {
    if !matches!(err, ClientError::Hub { .. }) {
        *client = connect(global).await?;
    }
    Ok(())
}

pub(crate) async fn ls(global: &Global, client: &mut HubClient, prefix: &str) -> Result<ExitCode> {
    let pattern = crate::glob::Pattern::new(prefix);
    let entries = match &pattern {
        Some(p) => {
            let mut entries = client.list(p.prefix()).await?;
            entries.retain(|e| p.shows(&e.name));
            entries
        }
        None => client.list(prefix).await?,
    };
    if global.json {
        print_json(&json::files(&entries))?;
    } else if entries.is_empty() {
        // On stderr, so scripts reading stdout still see nothing.
        match prefix {
            "" => eprintln!("troca: the hub shares no files"),
            p if pattern.is_some() => eprintln!("troca: no names match {:?}", output::safe(p)),
            p => eprintln!(
                "troca: no files whose names start with {:?}",
                output::safe(p)
            ),
        }
    } else {
        print_entries(&entries);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
pub(crate) struct PutRow {
    pub name: String,
    size: u64,
    blake3: String,
}

/// Uploads one file as `as_name` (default: its file name); says so on stderr unless `quiet`.
pub(crate) async fn put_one(
    client: &mut HubClient,
    file: &Path,
    as_name: Option<&str>,
    force: bool,
    quiet: bool,
) -> Result<PutRow, ClientError> {
    let name = match as_name {
        Some(n) => n.to_owned(),
        None => match file.file_name().and_then(|n| n.to_str()) {
            Some(n) => n.to_owned(),
            None => {
                return Err(ClientError::Local {
                    path: file.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "not a file name",
                    ),
                })
            }
        },
    };
    let bar = Bar::new(&name, quiet);
    let sent = match upload_path(client, file, &name, force, &bar).await {
        Ok(sent) => sent,
        Err(e) if is_taken(&e) => {
            return identical_on_hub(client, file, &name, quiet).await?.ok_or(e);
        }
        Err(e) => return Err(e),
    };
    if !quiet {
        eprintln!("uploaded {} ({})", sent.name, output::size(sent.size));
    }
    Ok(PutRow {
        name: sent.name,
        size: sent.size,
        blake3: hex(&sent.blake3),
    })
}

/// How uploads are named on the hub.
#[derive(Debug, Default)]
pub(crate) struct Naming {
    /// The name of a single file.
    pub as_name: Option<String>,
    /// The hub folder everything goes in.
    pub to: Option<String>,
}

/// What to upload: each file with the name it gets, and what was left out.
#[derive(Debug, Default)]
pub(crate) struct UploadPlan {
    pub files: Vec<(PathBuf, String)>,
    pub skipped: Vec<Skipped>,
    /// Where each folder given goes on the hub (`docs/photos/`): listed once before sending,
    /// so that sending a folder again sends only what is new.
    pub folders: Vec<String>,
    /// Every local folder below (and of) the folders given, by its name on the hub.
    pub dirs: Vec<String>,
}

/// A local entry under a folder that is not uploaded, and why.
#[derive(Debug)]
pub(crate) struct Skipped {
    pub path: PathBuf,
    /// Its name on the hub, when it has one (its path is UTF-8).
    pub name: Option<String>,
    pub why: SkipReason,
}

#[derive(Debug)]
pub(crate) enum SkipReason {
    /// A symbolic link: not followed (it may point outside the folder, or loop).
    Link,
    /// A FIFO, socket or device: reading one could block for ever.
    Special,
    /// A name the hub could not store as written (names are UTF-8).
    NotUtf8,
    /// A folder or file that could not be read.
    Unreadable(String),
}

impl SkipReason {
    /// Whether leaving the entry out means the upload failed (what the user meant to send was
    /// not sent), rather than a choice troca makes for every folder.
    pub fn is_failure(&self) -> bool {
        matches!(self, SkipReason::NotUtf8 | SkipReason::Unreadable(_))
    }

    /// A word for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            SkipReason::Link => "link",
            SkipReason::Special => "special",
            SkipReason::NotUtf8 => "not_utf8",
            SkipReason::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Link => f.write_str("a symbolic link (links are not followed)"),
            SkipReason::Special => f.write_str("not a regular file (a FIFO, socket or device)"),
            SkipReason::NotUtf8 => f.write_str("its name is not valid UTF-8"),
            SkipReason::Unreadable(e) => write!(f, "cannot read it: {e}"),
        }
    }
}

/// Plans the upload of `files`. A folder gives every regular file below it, named by its path
/// from the folder's parent, so `put photos` stores `photos/2024/a.jpg`; links, special files,
/// names that are not UTF-8 and what cannot be read are left out and listed. A file is named
/// `--as`, or its file name; both under `--to`.
pub(crate) fn upload_plan(files: &[PathBuf], naming: &Naming) -> Result<UploadPlan> {
    let prefix = match naming.to.as_deref().map(|t| t.trim_matches('/')) {
        Some(t) if !t.is_empty() => format!("{t}/"),
        _ => String::new(),
    };
    let mut plan = UploadPlan::default();
    for path in files {
        if !path.is_dir() {
            let name = match (&naming.as_name, path.file_name().and_then(|n| n.to_str())) {
                (Some(n), _) => n.clone(),
                (None, Some(n)) => format!("{prefix}{n}"),
                (None, None) => anyhow::bail!("{}: not a file name", path.display()),
            };
            plan.files.push((path.clone(), name));
            continue;
        }
        let top = std::fs::canonicalize(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let Some(top) = top.file_name().map(|n| n.to_str()) else {
            // `/` itself: its files go under `--to` as they are.
            plan_folder(path, &prefix, &mut plan);
            continue;
        };
        let Some(top) = top else {
            let why = SkipReason::NotUtf8;
            plan.skipped.push(Skipped {
                path: path.clone(),
                name: None,
                why,
            });
            continue;
        };
        let place = format!("{prefix}{top}/");
        plan_folder(path, &place, &mut plan);
        plan.folders.push(place);
    }
    Ok(plan)
}

/// Adds the regular files below `folder` to `plan`, named `prefix` + their path from it.
fn plan_folder(folder: &Path, prefix: &str, plan: &mut UploadPlan) {
    let walker = walkdir::WalkDir::new(folder)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(folder).to_path_buf();
                let why = SkipReason::Unreadable(
                    e.io_error()
                        .map_or_else(|| e.to_string(), |io| io.to_string()),
                );
                plan.skipped.push(Skipped {
                    path,
                    name: None,
                    why,
                });
                continue;
            }
        };
        let kind = entry.file_type();
        let name = mirror::name_below(folder, entry.path()).map(|rel| format!("{prefix}{rel}"));
        let why = match &name {
            // A folder's files say so if its name is not UTF-8.
            _ if kind.is_dir() => {
                let name = name.as_deref().unwrap_or("").trim_end_matches('/');
                if !name.is_empty() {
                    plan.dirs.push(name.to_owned());
                }
                continue;
            }
            None => SkipReason::NotUtf8,
            Some(name) if kind.is_file() => {
                plan.files.push((entry.path().to_path_buf(), name.clone()));
                continue;
            }
            Some(_) if kind.is_symlink() => SkipReason::Link,
            Some(_) => SkipReason::Special,
        };
        plan.skipped.push(Skipped {
            path: entry.path().to_path_buf(),
            name,
            why,
        });
    }
}

pub(crate) async fn put(
    global: &Global,
    client: &mut HubClient,
    files: &[PathBuf],
    naming: &Naming,
    how: Placing,
) -> Result<ExitCode> {
    if files.iter().any(|f| f == Path::new("-")) {
        return put_stdin(global, client, files, naming, how.replaces()).await;
    }
    let UploadPlan {
        files: mut plan,
        skipped,
        folders,
        dirs,
    } = upload_plan(files, naming)?;
    let after = AfterSending::new(&plan, &skipped, &folders, &dirs, how.delete);
    // A pipe named on the command line (`put <(pg_dump db) --as db.sql`, a FIFO) is read
    // once into a temporary file, like standard input. (A folder's files are regular.)
    let named: std::collections::HashSet<&PathBuf> = files.iter().collect();
    let mut spooled = Vec::new();
    for (file, name) in plan.iter_mut().filter(|(f, _)| named.contains(f)) {
        if std::fs::metadata(&*file).is_ok_and(|m| !m.is_file()) {
            let copy = spool(Some(file.clone()), name)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            *file = copy.0.clone();
            spooled.push(copy);
        }
    }
    let mut report = Report::new(global);
    let quiet = global.json || global.quiet;
    for s in &skipped {
        let what = format_args!("skipped {}: {}", s.path.display(), s.why);
        match s.why.is_failure() {
            true => report.fail(what),
            false if !global.quiet => eprintln!("troca: {what}"),
            false => {}
        }
    }
    if plan.is_empty() && skipped.is_empty() && after.empty.is_empty() {
        eprintln!("troca: nothing to upload (the folders hold no files)");
    }
    send_plan(global, client, plan, &folders, how, quiet, &mut report).await?;
    after.run(global, client, &mut report).await?;
    report.finish(global)
}

/// What a folder upload does once its files are sent: make the folders that hold no file,
/// and with `--delete` delete on the hub what the folders do not hold.
pub(crate) struct AfterSending<'a> {
    pub empty: Vec<String>,
    /// The folders' places on the hub, and what they hold here (with `--delete`).
    pub delete: Option<(&'a [String], mirror::Wanted)>,
}

impl<'a> AfterSending<'a> {
    pub fn new(
        plan: &[(PathBuf, String)],
        skipped: &[Skipped],
        places: &'a [String],
        dirs: &[String],
        delete: bool,
    ) -> Self {
        let files = plan.iter().map(|(_, name)| name.as_str());
        let empty = mirror::empty_folders(dirs, files);
        let wanted = delete.then(|| mirror::Wanted {
            files: plan.iter().map(|(_, name)| name.clone()).collect(),
            folders: dirs.iter().cloned().collect(),
            kept: skipped.iter().filter_map(|s| s.name.clone()).collect(),
        });
        Self {
            empty: empty.into_iter().map(str::to_owned).collect(),
            delete: wanted.map(|w| (places, w.with_ancestors())),
        }
    }

    pub async fn run(
        self,
        global: &Global,
        client: &mut HubClient,
        sink: &mut impl UploadSink,
    ) -> Result<()> {
        for name in &self.empty {
            match client.make_folder(name).await {
                Ok(made) => sink.made(name, made),
                Err(e) => sink.not_done(&format!("cannot create {}/", output::safe(name)), &e),
            }
        }
        let Some((places, wanted)) = self.delete else {
            return Ok(());
        };
        if sink.failed() {
            sink.note("nothing deleted on the hub, as not everything could be sent");
            return Ok(());
        }
        for place in places {
            delete_extra(global, client, place, &wanted, sink).await?;
        }
        Ok(())
    }
}

/// Deletes below `place` on the hub what `wanted` does not hold (see `mirror::extra`).
async fn delete_extra(
    global: &Global,
    client: &mut HubClient,
    place: &str,
    wanted: &mirror::Wanted,
    sink: &mut impl UploadSink,
) -> Result<()> {
    let listed = match client.list(place).await {
        Ok(listed) => listed,
        Err(e) => {
            sink.not_done(&format!("cannot list {}", output::safe(place)), &e);
            return recover(global, client, &e).await;
        }
    };
    let extra = mirror::extra(place, listed.iter().map(|e| e.name.as_str()), wanted);
    let whole = extra.folders.iter().map(|f| (f, true));
    for (name, recursive) in whole.chain(extra.files.iter().map(|f| (f, false))) {
        match client.remove(name, recursive).await {
            Ok(_) => sink.deleted(name, recursive),
            Err(e) => {
                sink.not_done(&format!("cannot delete {}", output::safe(name)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    Ok(())
}

/// What a transfer of many files reports besides its files, to the command line's report or
/// the JSON mode's answer: shared by uploads and downloads.
pub(crate) trait Notes {
    /// Something besides a file that could not be done (`what`: "cannot delete NAME").
    fn not_done(&mut self, what: &str, e: &ClientError);
    /// Whether anything failed so far.
    fn failed(&self) -> bool;
    /// A note for people.
    fn note(&mut self, text: &str);
}

impl<T: Serialize> Notes for Report<T> {
    fn not_done(&mut self, what: &str, e: &ClientError) {
        Report::refused(self, what, e);
    }
    fn failed(&self) -> bool {
        self.failed
    }
    fn note(&mut self, text: &str) {
        eprintln!("troca: {text}");
    }
}

/// Where an upload's outcomes go: the command line's report, or the JSON mode's answer.
pub(crate) trait UploadSink: Notes {
    fn sent(&mut self, row: PutRow);
    fn refused(&mut self, file: &Path, e: &ClientError);
    /// The connection broke: files not answered yet were neither stored nor refused.
    fn stopped(&mut self, e: &ClientError);
    /// A folder holding no file, made on the hub (`made`: it was not there).
    fn made(&mut self, folder: &str, made: bool);
    /// A name deleted on the hub by `--delete` (`folder`: with everything in it).
    fn deleted(&mut self, name: &str, folder: bool);
}

impl UploadSink for Report<PutRow> {
    fn sent(&mut self, row: PutRow) {
        self.rows.push(row);
    }
    fn refused(&mut self, file: &Path, e: &ClientError) {
        Report::refused(self, format_args!("cannot upload {}", file.display()), e);
    }
    fn stopped(&mut self, e: &ClientError) {
        Report::refused(self, format_args!("the upload stopped"), e);
    }
    fn made(&mut self, folder: &str, made: bool) {
        if made && !self.quiet {
            eprintln!("created {}/", output::safe(folder));
        }
    }
    fn deleted(&mut self, name: &str, folder: bool) {
        if !self.quiet {
            let slash = if folder { "/" } else { "" };
            eprintln!("deleted {}{slash} on the hub", output::safe(name));
        }
    }
}

/// Sends each file of `plan` under its name: small ones back to back in batches, the rest one
/// by one (resumable). A name taken by an identical file counts as sent; below `folders` (the
/// places of the folders given) such files are found by listing each place once and are not
/// sent at all. After a broken connection the hub is reached again and the rest still go. The
/// one upload path of every face that sends folders.
pub(crate) async fn send_plan(
    global: &Global,
    client: &mut HubClient,
    plan: Vec<(PathBuf, String)>,
    folders: &[String],
    how: Placing,
    quiet: bool,
    sink: &mut impl UploadSink,
) -> Result<()> {
    let force = how.replaces();
    let (plan, listed) = match how.skips_identical() {
        false => (plan, HashMap::new()),
        true => match leave_out_identical(client, plan, folders, quiet, sink).await {
            Ok(Sorted { rest, listed }) => (rest, listed),
            Err(Unlisted { plan, error }) => {
                recover(global, client, &error).await?;
                (plan, HashMap::new())
            }
        },
    };
    let mut small_bytes = 0;
    let (small, large): (Vec<_>, Vec<_>) = plan.into_iter().partition(|(file, name)| {
        let size = std::fs::metadata(file)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let small = size.is_some_and(|size| PutSmall::fits(name, size));
        if small {
            small_bytes += size.unwrap_or(0);
        }
        small
    });
    let mut taken = Vec::new();
    if !small.is_empty() {
        let small = SmallFiles {
            files: &small,
            bytes: small_bytes,
        };
        put_small(global, client, small, force, quiet, sink, &mut taken).await?;
    }
    for (file, name) in &large {
        let sent = Retries::new(global)
            .run(client, &upload_of(name), async |c| {
                put_one(c, file, Some(name), force, quiet).await
            })
            .await;
        match sent {
            Ok(row) => sink.sent(row),
            Err(e) => {
                sink.refused(file, &e);
                recover(global, client, &e).await?;
            }
        }
    }
    settle_taken(client, taken, listed, quiet, sink).await?;
    Ok(())
}

/// The folders' places could not be listed: the whole plan, and why.
pub(crate) struct Unlisted {
    plan: Vec<(PathBuf, String)>,
    pub error: ClientError,
}

/// A plan with the files already on the hub left out.
pub(crate) struct Sorted {
    pub rest: Vec<(PathBuf, String)>,
    /// The hub's entries for names of `rest` it holds (with other contents, or a hash it has not
    /// computed yet): the hub will refuse them, and they need not be asked for again.
    pub listed: HashMap<String, Entry>,
}

/// The files of `plan` that are not already on the hub: each place in `folders` is listed once,
/// and a file whose name is there with the same size and BLAKE3 hash counts as sent. What
/// rsync's quick check does, with a hash instead of a modification time.
pub(crate) async fn leave_out_identical(
    client: &mut HubClient,
    plan: Vec<(PathBuf, String)>,
    folders: &[String],
    quiet: bool,
    sink: &mut impl UploadSink,
) -> Result<Sorted, Unlisted> {
    let mut theirs: HashMap<String, Entry> = HashMap::new();
    // An empty place is the whole hub (`put /`): not worth listing.
    for place in folders.iter().filter(|p| !p.is_empty()) {
        match client.list(place).await {
            Ok(entries) => theirs.extend(entries.into_iter().map(|e| (e.name.clone(), e))),
            Err(error) => return Err(Unlisted { plan, error }),
        }
    }
    let mut known: Vec<Option<Entry>> = plan.iter().map(|(_, n)| theirs.remove(n)).collect();
    if known.iter().all(Option::is_none) {
        let listed = HashMap::new();
        return Ok(Sorted { rest: plan, listed });
    }
    if let Err(error) = learn_hashes(client, &plan, &mut known).await {
        return Err(Unlisted { plan, error });
    }
    let checks = plan
        .iter()
        .zip(&known)
        .map(|((file, _), entry)| Held::of(file, entry.as_ref()));
    let same = held_here(checks).await;
    let mut rest = Vec::with_capacity(plan.len());
    let mut listed = HashMap::new();
    let mut identical = 0usize;
    for ((file, entry), same) in plan.into_iter().zip(known).zip(same) {
        match entry {
            Some(Entry {
                name,
                size,
                blake3: Some(hash),
                ..
            }) if same => {
                identical += 1;
                sink.sent(PutRow {
                    name,
                    size,
                    blake3: hex(&hash),
                });
            }
            Some(other) => {
                listed.insert(other.name.clone(), other);
                rest.push(file);
            }
            None => rest.push(file),
        }
    }
    if identical > 0 && !quiet {
        eprintln!(
            "troca: {} already on the hub (identical), not sent again",
            output::count(identical as u64, "file", "files")
        );
    }
    Ok(Sorted { rest, listed })
}

/// Asks the hub for the hashes it has not computed yet (files put in its folder by other
/// means) of the listed files that have the size of their local counterparts: without them no
/// such file could be found identical, and each would be sent only to be refused as taken.
async fn learn_hashes(
    client: &mut HubClient,
    plan: &[(PathBuf, String)],
    known: &mut [Option<Entry>],
) -> Result<(), ClientError> {
    let unhashed: Vec<(usize, PathBuf)> = known
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_ref().is_some_and(|e| e.blake3.is_none()))
        .map(|(i, _)| (i, plan[i].0.clone()))
        .collect();
    if unhashed.is_empty() {
        return Ok(());
    }
    let local = tokio::task::spawn_blocking(move || {
        let size = |path: &Path| std::fs::metadata(path).ok().map(|m| m.len());
        let sized = unhashed
            .into_iter()
            .filter_map(|(i, path)| Some((i, size(&path)?)));
        sized.collect::<Vec<(usize, u64)>>()
    })
    .await
    .unwrap_or_default();
    // Only a file with the same size here can be identical.
    let wanted: Vec<usize> = local
        .into_iter()
        .filter(|&(i, size)| known[i].as_ref().is_some_and(|e| e.size == size))
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let ask: Vec<troca_net::batch::SizedName> = wanted
        .iter()
        .filter_map(|&i| known[i].as_ref())
        .map(|e| troca_net::batch::SizedName {
            name: e.name.clone(),
            size: e.size,
        })
        .collect();
    let hashes = troca_net::batch::hashes_of(client, &ask).await?;
    for (i, hash) in wanted.into_iter().zip(hashes) {
        if let Some(e) = known[i].as_mut() {
            e.blake3 = hash;
        }
    }
    Ok(())
}

/// A file refused because its name is taken on the hub.
struct Taken {
    file: PathBuf,
    name: String,
    error: ClientError,
}

fn is_taken(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Hub {
            code: troca_proto::ErrorCode::AlreadyExists,
            ..
        }
    )
}

/// The small files of an upload (local path, name) and their bytes, for the progress bar.
#[derive(Clone, Copy)]
struct SmallFiles<'a> {
    files: &'a [(PathBuf, String)],
    bytes: u64,
}

/// The small files of an upload, back to back in batches; those whose names are taken go to
/// `taken`.
async fn put_small(
    global: &Global,
    client: &mut HubClient,
    small: SmallFiles<'_>,
    force: bool,
    quiet: bool,
    sink: &mut impl UploadSink,
    taken: &mut Vec<Taken>,
) -> Result<()> {
    let SmallFiles {
        files: small,
        bytes,
    } = small;
    let tree = TreeBar::new(small.len(), bytes, quiet);
    let mut retries = Retries::new(global);
    // The files not answered yet: all of them, then those a lost connection left.
    let mut left: Vec<(PathBuf, String)> = small.to_vec();
    loop {
        let mut answered = vec![false; left.len()];
        let done = troca_net::batch::upload_small(client, &left, force, |i, r| {
            answered[i] = true;
            match r {
                Ok(sent) => {
                    tree.done("uploaded", &sent.name, sent.size);
                    sink.sent(PutRow {
                        name: sent.name,
                        size: sent.size,
                        blake3: hex(&sent.blake3),
                    });
                }
                // Also a file stored before the connection was lost, and sent again.
                Err(error) if is_taken(&error) => taken.push(Taken {
                    file: left[i].0.clone(),
                    name: left[i].1.clone(),
                    error,
                }),
                Err(e) => sink.refused(&left[i].0, &e),
            }
        })
        .await;
        let Err(e) = done else { break };
        left = left
            .into_iter()
            .zip(answered)
            .filter_map(|(file, answered)| (!answered).then_some(file))
            .collect();
        let what = format!(
            "upload of {}",
            output::count(left.len() as u64, "file", "files")
        );
        if left.is_empty() || !retries.again(client, &what, &e).await {
            sink.stopped(&e);
            recover(global, client, &e).await?;
            break;
        }
    }
    tree.finish("uploaded");
    Ok(())
}

/// A name taken by a file the same as ours is not a failure: uploading a folder again sends
/// only what is new. Anything else stays refused. The hub's entries are taken from `listed`,
/// or asked for together; the local files are compared in one task.
async fn settle_taken(
    client: &mut HubClient,
    taken: Vec<Taken>,
    listed: HashMap<String, Entry>,
    quiet: bool,
    sink: &mut impl UploadSink,
) -> Result<()> {
    let from_listing: Vec<Option<Entry>> =
        taken.iter().map(|t| listed.get(&t.name).cloned()).collect();
    let unlisted: Vec<String> = taken
        .iter()
        .zip(&from_listing)
        .filter(|(_, e)| e.is_none())
        .map(|(t, _)| t.name.clone())
        .collect();
    let mut asked = client.entries_of(&unlisted).await?.into_iter();
    let entries: Vec<Option<Entry>> = from_listing
        .into_iter()
        .map(|e| e.or_else(|| asked.next().flatten()))
        .collect();
    let checks = taken
        .iter()
        .zip(&entries)
        .map(|(t, e)| Held::of(&t.file, e.as_ref()));
    let same = held_here(checks).await;
    for ((t, entry), same) in taken.into_iter().zip(entries).zip(same) {
        let theirs = entry
            .filter(|_| same)
            .and_then(|e| Some((e.size, e.blake3?)));
        match theirs {
            Some((size, blake3)) => {
                if !quiet {
                    eprintln!(
                        "troca: {} is already on the hub (identical)",
                        output::safe(&t.name)
                    );
                }
                sink.sent(PutRow {
                    name: t.name,
                    size,
                    blake3: hex(&blake3),
                });
            }
            None => sink.refused(&t.file, &t.error),
        }
    }
    Ok(())
}

/// When the hub's file `name` is the same as the local `file`, says so (unless `quiet`) and
/// gives its row.
async fn identical_on_hub(
    client: &mut HubClient,
    file: &Path,
    name: &str,
    quiet: bool,
) -> Result<Option<PutRow>, ClientError> {
    let Some((size, blake3)) = identical(client, name, file).await? else {
        return Ok(None);
    };
    if !quiet {
        eprintln!(
            "troca: {} is already on the hub (identical)",
            output::safe(name)
        );
    }
    Ok(Some(PutRow {
        name: name.to_owned(),
        size,
        blake3: hex(&blake3),
    }))
}

/// The size and hash of the hub's file `name`, when the local file `local` holds the same.
async fn identical(
    client: &mut HubClient,
    name: &str,
    local: &Path,
) -> Result<Option<(u64, troca_proto::Hash)>, ClientError> {
    Ok(same_as(entry_of(client, name).await?, local).await)
}

/// The size and hash of the hub's `entry`, when the local file `local` holds the same.
async fn same_as(entry: Option<Entry>, local: &Path) -> Option<(u64, troca_proto::Hash)> {
    let entry = entry?;
    let hash = entry.blake3?;
    let same = held_here(std::iter::once(Held::of(local, Some(&entry)))).await;
    same[0].then_some((entry.size, hash))
}

#[derive(Serialize)]
pub(crate) struct GetRow {
    name: String,
    path: String,
    size: u64,
    blake3: String,
}

/// Downloads one file into `output` (a folder, or a file name) or the current folder, never
/// overwriting unless `force` (a free `NAME_downloaded` name instead); says what it did unless `quiet`.
pub(crate) async fn get_one(
    client: &mut HubClient,
    name: &str,
    output_path: Option<&Path>,
    how: Placing,
    quiet: bool,
) -> Result<GetRow, ClientError> {
    let force = how.replaces();
    let wanted = local_target(name, output_path);
    if how.skips_identical() && wanted.is_file() {
        if let Some(row) = already_here(client, name, &wanted, quiet).await? {
            return Ok(row);
        }
    }
    let target = if force {
        wanted.clone()
    } else {
        free_local_path(&wanted)
    };
    if target != wanted && !quiet {
        eprintln!(
            "troca: {} exists; saving {name} as {}",
            wanted.display(),
            target.display()
        );
    }
    let bar = Bar::new(name, quiet);
    let f = download_to_path(client, name, &target, force, &bar).await?;
    if !quiet {
        eprintln!(
            "downloaded {name} to {} ({})",
            f.path.display(),
            output::size(f.size)
        );
    }
    Ok(GetRow {
        name: name.to_owned(),
        path: f.path.display().to_string(),
        size: f.size,
        blake3: hex(&f.blake3),
    })
}

/// Where file `name` is saved, given `-o` (a folder, or a file name) or not.
pub(crate) fn local_target(name: &str, output_path: Option<&Path>) -> PathBuf {
    let base = Path::new(name.rsplit('/').next().unwrap_or(name));
    match output_path {
        Some(o) if o.is_dir() => o.join(base),
        Some(o) => o.to_path_buf(),
        None => base.to_path_buf(),
    }
}

/// When `local` already holds the hub's file `name`, says so (unless `quiet`) and gives its
/// row: getting a folder again fetches only what changed, rather than `_downloaded` copies.
async fn already_here(
    client: &mut HubClient,
    name: &str,
    local: &Path,
    quiet: bool,
) -> Result<Option<GetRow>, ClientError> {
    let Some((size, blake3)) = identical(client, name, local).await? else {
        return Ok(None);
    };
    if !quiet {
        eprintln!("troca: {} is already here (identical)", local.display());
    }
    Ok(Some(GetRow {
        name: name.to_owned(),
        path: local.display().to_string(),
        size,
        blake3: hex(&blake3),
    }))
}

/// How a transfer treats what the other side holds already, as asked (`--force`,
/// `--delete`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placing {
    /// Replace files, even the same (send everything again).
    pub force: bool,
    /// Make each folder's copy the same as its source: replace what differs, and delete
    /// below it what its source does not hold.
    pub delete: bool,
}

impl Placing {
    /// Whether a file on the other side is replaced rather than kept.
    pub fn replaces(self) -> bool {
        self.force || self.delete
    }

    /// Whether a file the same on both sides is left alone rather than sent again: always
    /// but with `--force` alone (which sends everything). `--delete` replaces only what
    /// differs, as rsync does.
    pub fn skips_identical(self) -> bool {
        !self.force || self.delete
    }
}

pub(crate) async fn get(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    output_path: Option<PathBuf>,
    how: Placing,
) -> Result<ExitCode> {
    // A wildcard may have made one NAME several.
    if let Some(wrong) = output_path
        .as_deref()
        .and_then(|o| several_into(o, names.len()))
    {
        return usage(wrong);
    }
    if output_path.as_deref() == Some(Path::new("-")) {
        get_to_stdout(global, client, &names[0]).await?;
        return Ok(ExitCode::SUCCESS);
    }
    // A folder to save into is made if missing: `-o dl/`, or `-o dl` with several names.
    if let Some(o) = &output_path {
        let as_folder = o.as_os_str().to_string_lossy().ends_with('/') || names.len() > 1;
        if as_folder && !o.exists() {
            std::fs::create_dir_all(o).with_context(|| format!("cannot create {}", o.display()))?;
        }
    }
    let mut report: Report<GetRow> = Report::new(global);
    let quiet = global.json || global.quiet;
    for name in names {
        let got = get_name(
            global,
            client,
            name,
            output_path.as_deref(),
            how,
            quiet,
            &mut report,
        );
        if let Err(e) = got.await {
            report.refused(format_args!("cannot download {name}"), &e);
            recover(global, client, &e).await?;
        }
    }
    if how.delete {
        let root = output_path.unwrap_or_else(|| PathBuf::from("."));
        for name in names {
            delete_here(global, client, name, &root, &mut report).await?;
        }
    }
    report.finish(global)
}

/// What `name` turned out to be on the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fetched {
    File,
    Folder,
}

/// Downloads `name`: a file into `output` (see `get_one`), or a folder's every file below
/// `output` (or the current folder), taken up again after a lost connection. A folder's file
/// that fails goes to the sink and the rest still come; what is returned is why nothing (more)
/// could be fetched. The one download path of every face that fetches folders.
pub(crate) async fn get_name(
    global: &Global,
    client: &mut HubClient,
    name: &str,
    output: Option<&Path>,
    how: Placing,
    quiet: bool,
    sink: &mut impl DownloadSink,
) -> Result<Fetched, ClientError> {
    Retries::new(global)
        .run(client, &download_of(name), async |c| {
            let Some(files) = folder_files(c, name).await? else {
                let row = get_one(c, name, output, how, quiet).await?;
                sink.got(row);
                return Ok(Fetched::File);
            };
            let root = output.unwrap_or(Path::new("."));
            // Another try takes only what the ones before did not bring.
            let done: HashSet<&str> = sink.rows().iter().map(|r| r.name.as_str()).collect();
            let files: Vec<Entry> = files
                .into_iter()
                .filter(|f| !done.contains(f.name.as_str()))
                .collect();
            get_folder(c, name, &files, root, how, quiet, sink).await?;
            Ok(Fetched::Folder)
        })
        .await
}

/// `get FOLDER --delete`: deletes below the folder's local copy what the hub does not show,
/// unless something failed (a file not downloaded would look deleted on the hub).
pub(crate) async fn delete_here(
    global: &Global,
    client: &mut HubClient,
    name: &str,
    root: &Path,
    sink: &mut impl DownloadSink,
) -> Result<()> {
    if sink.failed() {
        sink.note("nothing deleted here, as not everything could be downloaded");
        return Ok(());
    }
    let listed = match folder_files(client, name).await {
        Ok(Some(listed)) => listed,
        // A file, not a folder: nothing to make the same.
        Ok(None) => return Ok(()),
        Err(e) => {
            sink.not_done(&format!("cannot list {}", output::safe(name)), &e);
            return recover(global, client, &e).await;
        }
    };
    for extra in extra_here(name, &listed, root) {
        let gone = match extra.folder {
            true => std::fs::remove_dir_all(&extra.path),
            false => std::fs::remove_file(&extra.path),
        };
        match gone {
            Ok(()) => sink.deleted(&extra.path, extra.folder),
            Err(e) => sink.not_deleted(&extra.path, e),
        }
    }
    Ok(())
}

/// What is below the local copy of hub folder `name` (in `root`) that the folder, `listed`,
/// does not hold.
pub(crate) fn extra_here(name: &str, listed: &[Entry], root: &Path) -> Vec<mirror::LocalExtra> {
    let folder = name.trim_end_matches('/');
    let parent_len = folder.rfind('/').map_or(0, |i| i + 1);
    // The local copy is `root/LAST`, `LAST` the folder's own name: matched by that name.
    let last = &folder[parent_len..];
    let wanted = mirror::Wanted {
        files: listed
            .iter()
            .filter(|e| !e.name.ends_with('/'))
            .map(|e| e.name[parent_len..].to_owned())
            .collect(),
        folders: listed
            .iter()
            .filter_map(|e| e.name.strip_suffix('/'))
            .map(|f| f[parent_len..].to_owned())
            .collect(),
        kept: HashSet::new(),
    }
    .with_ancestors();
    mirror::extra_here(&root.join(last), last, &wanted)
}

/// Where a download's outcomes go: the command line's report, or the JSON mode's answer.
pub(crate) trait DownloadSink: Notes {
    fn got(&mut self, row: GetRow);
    /// What was downloaded so far (or found here already).
    fn rows(&self) -> &[GetRow];
    /// A folder's file that could not be downloaded (the rest still come).
    fn refused(&mut self, name: &str, e: &ClientError);
    /// A local file or folder deleted by `--delete` (`folder`: with everything in it).
    fn deleted(&mut self, path: &Path, folder: bool);
    fn not_deleted(&mut self, path: &Path, e: std::io::Error);
}

impl DownloadSink for Report<GetRow> {
    fn got(&mut self, row: GetRow) {
        self.rows.push(row);
    }
    fn rows(&self) -> &[GetRow] {
        &self.rows
    }
    fn refused(&mut self, name: &str, e: &ClientError) {
        Report::refused(
            self,
            format_args!("cannot download {}", output::safe(name)),
            e,
        );
    }
    fn deleted(&mut self, path: &Path, folder: bool) {
        if !self.quiet {
            let slash = if folder { "/" } else { "" };
            eprintln!("deleted {}{slash}", path.display());
        }
    }
    fn not_deleted(&mut self, path: &Path, e: std::io::Error) {
        self.fail(format_args!("cannot delete {}: {e}", path.display()));
    }
}

/// `get NAME -o -`: the file to standard output, taken up again from the bytes already written
/// when the connection is lost.
async fn get_to_stdout(global: &Global, client: &mut HubClient, name: &str) -> Result<()> {
    let bar = Bar::new(name, global.quiet);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut streamed = Streamed::default();
    Retries::new(global)
        .run(client, &download_of(name), async |c| {
            download_to_writer(c, name, &mut out, &bar, &mut streamed).await
        })
        .await?;
    Ok(())
}

fn upload_of(name: &str) -> String {
    format!("upload of {}", output::safe(name))
}

fn download_of(name: &str) -> String {
    format!("download of {}", output::safe(name))
}

/// `put - --as NAME`: standard input, kept in a temporary file first (the protocol announces a
/// size before the bytes), uploaded, then removed.
async fn put_stdin(
    global: &Global,
    client: &mut HubClient,
    files: &[PathBuf],
    naming: &Naming,
    force: bool,
) -> Result<ExitCode> {
    let Some(name) = naming.as_name.as_deref().filter(|_| files.len() == 1) else {
        anyhow::bail!("put - reads standard input: give it alone, with --as NAME");
    };
    let copy = spool(None, name)
        .await
        .context("cannot read standard input")?;
    let quiet = global.json || global.quiet;
    let result = Retries::new(global)
        .run(client, &upload_of(name), async |c| {
            put_one(c, &copy.0, Some(name), force, quiet).await
        })
        .await;
    let mut report = Report::new(global);
    match result {
        Ok(row) => report.rows.push(row),
        Err(e) => report.refused(format_args!("cannot upload standard input"), &e),
    }
    report.finish(global)
}

/// A local file to compare with what the hub holds.
pub(crate) struct Held {
    path: PathBuf,
    size: u64,
    blake3: Option<troca_proto::Hash>,
}

impl Held {
    /// The local file `path` and the hub's entry for its name (`None`: the hub has none).
    pub fn of(path: &Path, entry: Option<&Entry>) -> Held {
        Held {
            path: path.to_path_buf(),
            size: entry.map_or(0, |e| e.size),
            blake3: entry.and_then(|e| e.blake3),
        }
    }
}

/// Whether each local file holds exactly what the hub holds (see [`holds`]), checked in one
/// task off the runtime: one hand-off per file would cost more than the check (10,000 files of
/// a folder: half a second).
pub(crate) async fn held_here(files: impl Iterator<Item = Held>) -> Vec<bool> {
    let files: Vec<Held> = files.collect();
    let count = files.len();
    tokio::task::spawn_blocking(move || {
        // A folder that is not there holds none of its files: one look, not one per file
        // (a fresh download of a tree).
        let mut folders: HashMap<&Path, bool> = HashMap::new();
        files
            .iter()
            .map(|f| {
                let folder = troca_net::durable::folder_of(&f.path);
                *folders.entry(folder).or_insert_with(|| folder.is_dir())
                    && holds(&f.path, f.size, f.blake3)
            })
            .collect()
    })
    .await
    .unwrap_or_else(|_| vec![false; count])
}

/// Whether the local file `path` holds exactly what the hub holds: the same size and BLAKE3
/// hash. Without the hub's hash (not computed yet) nothing is assumed. Blocking.
fn holds(path: &Path, size: u64, blake3: Option<troca_proto::Hash>) -> bool {
    let Some(theirs) = blake3 else { return false };
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size) {
        return false;
    }
    let ours = std::fs::File::open(path).and_then(|f| {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(f)?;
        Ok(hasher.finalize())
    });
    matches!(ours, Ok(h) if h.as_bytes() == &theirs)
}

/// The hub's entry for the file `name`, if there is one.
pub(crate) async fn entry_of(
    client: &mut HubClient,
    name: &str,
) -> Result<Option<Entry>, ClientError> {
    Ok(client
        .list(name)
        .await?
        .into_iter()
        .find(|e| e.name == name))
}

/// What a pipe or standard input gave, in a temporary file deleted when this is dropped.
struct Spooled(PathBuf);

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Copies `source` (standard input if `None`) into a new temporary file. A pipe has no size
/// and cannot be read twice; an upload needs both (the size first, then the bytes, to hash
/// and to resume).
async fn spool(source: Option<PathBuf>, name: &str) -> std::io::Result<Spooled> {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let copy = Spooled(std::env::temp_dir().join(format!(
        "troca-stdin-{}-{n}-{}",
        std::process::id(),
        super::output::hex(blake3::hash(name.as_bytes()).as_bytes())
    )));
    let path = copy.0.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        match source {
            Some(source) => std::io::copy(&mut std::fs::File::open(source)?, &mut out),
            None => std::io::copy(&mut std::io::stdin().lock(), &mut out),
        }
    })
    .await??;
    Ok(copy)
}

/// The files in folder `name` on the hub, if it names a folder (`NAME/`, or a name with files
/// below it: no store lets a name be a file and a folder at once, so it has no file of its own).
pub(crate) async fn folder_files(
    client: &mut HubClient,
    name: &str,
) -> Result<Option<Vec<Entry>>, ClientError> {
    let folder = name.trim_end_matches('/');
    if folder.is_empty() {
        return Ok(None);
    }
    let inside = client.list(&format!("{folder}/")).await?;
    if inside.is_empty() && name.ends_with('/') {
        // `NAME/` names a folder: never taken for a file.
        return Err(ClientError::Hub {
            code: ErrorCode::NotFound,
            message: format!("no folder named {folder:?} on the hub"),
        });
    }
    if inside.is_empty() {
        return Ok(None);
    }
    // (Listing `folder` itself to be sure would walk the whole tree a second time.)
    Ok(Some(inside))
}

/// Downloads every file of folder `name` into `root`, as `root/FOLDER/...` (its last part and
/// the paths below it), making folders as needed. Each file resumes and verifies on its own.
async fn get_folder(
    client: &mut HubClient,
    name: &str,
    files: &[Entry],
    root: &Path,
    how: Placing,
    quiet: bool,
    sink: &mut impl DownloadSink,
) -> Result<(), ClientError> {
    let folder = name.trim_end_matches('/');
    let parent_len = folder.rfind('/').map_or(0, |i| i + 1);
    let (small, large): (Vec<&Entry>, Vec<&Entry>) = files
        .iter()
        .partition(|f| !f.name.ends_with('/') && f.size <= troca_net::batch::MAX_SMALL_GET);
    let plan = SmallPlan {
        files: &small,
        parent_len,
        root,
        how,
        quiet,
    };
    get_small(client, plan, sink).await?;
    for f in large {
        let Some(rel) = below_folder(&f.name, parent_len) else {
            continue;
        };
        let local = root.join(rel);
        if rel.ends_with('/') {
            // A folder that holds no file: made, empty, as on the hub.
            std::fs::create_dir_all(&local).map_err(|e| ClientError::local(&local, e))?;
            continue;
        }
        if let Some(dir) = local.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let e = ClientError::local(dir, e);
                sink.refused(&f.name, &e);
                continue;
            }
        }
        match get_one(client, &f.name, Some(&local), how, quiet).await {
            Ok(row) => sink.got(row),
            // A lost connection ends the folder (to be taken up again); one file refused or
            // corrupt is that file's failure, and the rest still come.
            Err(e) if crate::retry::transient(&e) => return Err(e),
            Err(e) => sink.refused(&f.name, &e),
        }
    }
    Ok(())
}

/// A folder's file or empty folder (`name`, from the hub) as a path below the folder's
/// parent (the first `parent_len` bytes left out); `None` unless each part is a plain name,
/// never `..` or absolute.
pub(crate) fn below_folder(name: &str, parent_len: usize) -> Option<&str> {
    let rel = name.get(parent_len..)?;
    troca_proto::RemoteName::parse(rel.trim_end_matches('/')).ok()?;
    Some(rel)
}

/// The small files of a folder download, and where they go.
#[derive(Clone, Copy)]
struct SmallPlan<'a> {
    files: &'a [&'a Entry],
    /// How much of each name is the folder's parent (left out of the local path).
    parent_len: usize,
    root: &'a Path,
    how: Placing,
    quiet: bool,
}

/// The small files of a folder download, pipelined and made durable in batches.
async fn get_small(
    client: &mut HubClient,
    plan: SmallPlan<'_>,
    sink: &mut impl DownloadSink,
) -> Result<(), ClientError> {
    let quiet = plan.quiet;
    let wanted = small_wanted(plan, sink).await;
    let tree = TreeBar::new(wanted.len(), wanted.iter().map(|w| w.size).sum(), quiet);
    let done = troca_net::batch::download_small(client, &wanted, |i, r| match r {
        Ok(got) => {
            let name = &wanted[i].name;
            if got.path != wanted[i].target {
                tree.note(&format!(
                    "{} exists; saved {} as {}",
                    wanted[i].target.display(),
                    output::safe(name),
                    got.path.display()
                ));
            }
            // As a large file's line says it: the hub's name, then where it landed.
            let to = format!("{name} to {}", got.path.display());
            tree.done("downloaded", &to, got.size);
            sink.got(GetRow {
                name: name.clone(),
                path: got.path.display().to_string(),
                size: got.size,
                blake3: hex(&got.blake3),
            });
        }
        Err(e) => sink.refused(&wanted[i].name, &e),
    })
    .await;
    tree.finish("downloaded");
    done
}

/// Which of a folder download's small files are to be fetched, and where: those already here
/// (the same as on the hub) are reported and left, and each target's folder is made.
async fn small_wanted(
    plan: SmallPlan<'_>,
    sink: &mut impl DownloadSink,
) -> Vec<troca_net::batch::SmallGet> {
    let SmallPlan {
        files,
        parent_len,
        root,
        how,
        quiet,
    } = plan;
    let mut wanted = Vec::with_capacity(files.len());
    let mut made: std::collections::HashSet<PathBuf> = Default::default();
    // (Small files only: never a folder's `NAME/`.)
    let files: Vec<(&Entry, PathBuf)> = files
        .iter()
        .filter_map(|f| Some((*f, root.join(below_folder(&f.name, parent_len)?))))
        .collect();
    // Files already here, the same as on the hub: not fetched again.
    let same = match how.skips_identical() {
        false => vec![false; files.len()],
        true => held_here(files.iter().map(|(f, t)| Held::of(t, Some(f)))).await,
    };
    let mut here = Vec::new();
    for ((f, target), same) in files.into_iter().zip(same) {
        if same {
            here.push(target.display().to_string());
            sink.got(GetRow {
                name: f.name.clone(),
                path: target.display().to_string(),
                size: f.size,
                blake3: hex(&f.blake3.expect("compared")),
            });
            continue;
        }
        if let Some(dir) = target.parent() {
            if !made.contains(dir) {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    let e = ClientError::local(dir, e);
                    sink.refused(&f.name, &e);
                    continue;
                }
                made.insert(dir.to_path_buf());
            }
        }
        wanted.push(troca_net::batch::SmallGet {
            name: f.name.clone(),
            size: f.size,
            target,
            replace: how.replaces(),
        });
    }
    if !quiet {
        say_already_here(&here);
    }
    wanted
}

/// Names the local files left as they were because they already hold the hub's: each one in a
/// log, or a count on a terminal when there are many.
fn say_already_here(paths: &[String]) {
    if paths.len() > 20 && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("troca: {} files are already here (identical)", paths.len());
        return;
    }
    for p in paths {
        eprintln!("troca: {p} is already here (identical)");
    }
}

/// Progress for many small files: one bar for them all on a terminal and, for more than a few,
/// a summary at the end instead of a line per file (a log still gets a line per file).
struct TreeBar {
    bar: Bar,
    terminal: bool,
    quiet: bool,
    files: std::cell::Cell<u64>,
    bytes: std::cell::Cell<u64>,
}

impl TreeBar {
    fn new(files: usize, total: u64, quiet: bool) -> TreeBar {
        use troca_net::Progress;
        let label = output::count(files as u64, "file", "files");
        let bar = Bar::new(&label, quiet);
        bar.start(total, 0);
        TreeBar {
            bar,
            // A few files are named one by one; many only summed up on a terminal.
            terminal: files > 20 && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            quiet,
            files: Default::default(),
            bytes: Default::default(),
        }
    }

    fn done(&self, verb: &str, name: &str, size: u64) {
        use troca_net::Progress;
        self.files.set(self.files.get() + 1);
        self.bytes.set(self.bytes.get() + size);
        self.bar.advance(size);
        if !self.quiet && !self.terminal {
            self.bar.note_plain(&format!(
                "{verb} {} ({})",
                output::safe(name),
                output::size(size)
            ));
        }
    }

    fn note(&self, msg: &str) {
        use troca_net::Progress;
        self.bar.note(msg);
    }

    fn finish(&self, verb: &str) {
        use troca_net::Progress;
        self.bar.finish();
        if !self.quiet && self.terminal {
            let files = output::count(self.files.get(), "file", "files");
            eprintln!("{verb} {files} ({})", output::size(self.bytes.get()));
        }
    }
}

#[derive(Serialize)]
struct RmRow {
    name: String,
    /// How many files went (a folder's, with -r).
    files: u64,
}

pub(crate) async fn rm(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    recursive: bool,
) -> Result<ExitCode> {
    let mut report = Report::new(global);
    for name in names {
        match client.remove(name, recursive).await {
            Ok(files) => {
                if !global.json && !global.quiet {
                    match (name.ends_with('/') || files != 1, files) {
                        (false, _) => eprintln!("removed {}", output::safe(name)),
                        (true, 1) => eprintln!("removed {} (1 file)", output::safe(name)),
                        (true, n) => eprintln!("removed {} ({n} files)", output::safe(name)),
                    }
                }
                report.rows.push(RmRow {
                    name: name.clone(),
                    files,
                });
            }
            Err(ClientError::Hub {
                code: troca_proto::ErrorCode::NotEmpty,
                message,
            }) => {
                report.fail(format_args!(
                    "cannot remove {}: {}; use rm -r to delete it with everything in it",
                    output::safe(name),
                    output::safe(&message)
                ));
            }
            Err(e) => {
                report.refused(format_args!("cannot remove {}", output::safe(name)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

#[derive(Serialize)]
pub(crate) struct FolderRow {
    name: String,
    created: bool,
}

pub(crate) async fn mkdir(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
) -> Result<ExitCode> {
    let mut report = Report::new(global);
    for name in names {
        match client.make_folder(name).await {
            Ok(created) => {
                if !global.json && !global.quiet {
                    let what = if created { "created" } else { "already there:" };
                    eprintln!("{what} {}", output::safe(name));
                }
                report.rows.push(FolderRow {
                    name: name.clone(),
                    created,
                });
            }
            Err(e) => {
                report.refused(format_args!("cannot create {}", output::safe(name)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

/// What `mv` and `cp` take: sources, then where they go.
struct Placed<'a> {
    target: String,
    sources: &'a [String],
}

/// The sources and the target of `mv` or `cp` NAMES; several sources go into a folder, as
/// with mv(1) and cp(1). `None` without at least one of each.
fn placed(names: &[String]) -> Option<Placed<'_>> {
    let (target, sources) = names.split_last()?;
    if sources.is_empty() {
        return None;
    }
    let target = if sources.len() > 1 && !target.ends_with('/') {
        format!("{target}/")
    } else {
        target.clone()
    };
    Some(Placed { target, sources })
}

#[derive(Serialize)]
pub(crate) struct MoveRow {
    from: String,
    name: String,
}

/// `mv A B` renames; `mv A B... FOLDER` (or a FOLDER ending in `/`) moves into the folder.
pub(crate) async fn mv(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    force: bool,
) -> Result<ExitCode> {
    let Some(Placed { target, sources }) = placed(names) else {
        return usage("mv takes what to move and where to");
    };
    let mut report = Report::new(global);
    for from in sources {
        match client.rename(from, &target, force).await {
            Ok(name) => {
                if !global.json && !global.quiet {
                    eprintln!("moved {} to {}", output::safe(from), output::safe(&name));
                }
                report.rows.push(MoveRow {
                    from: from.clone(),
                    name,
                });
            }
            Err(e) => {
                report.refused(format_args!("cannot move {}", output::safe(from)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

#[derive(Serialize)]
pub(crate) struct CopyRow {
    from: String,
    name: String,
    files: u64,
    bytes: u64,
}

/// `cp A B` copies to a new name; `cp A B... FOLDER` (or a FOLDER ending in `/`) copies into
/// the folder. The hub copies; a long copy shows its progress on a terminal.
pub(crate) async fn cp(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    force: bool,
) -> Result<ExitCode> {
    let Some(Placed { target, sources }) = placed(names) else {
        return usage("cp takes what to copy and where to");
    };
    let mut report = Report::new(global);
    for from in sources {
        let shown = crate::progress::CopyShown::new(global, from);
        let copied = client.copy(from, &target, force, |c| shown.update(c.files, c.bytes));
        let copied = copied.await;
        shown.finish();
        match copied {
            Ok(c) => {
                if !global.json && !global.quiet {
                    eprintln!(
                        "copied {} to {} ({})",
                        output::safe(from),
                        output::safe(&c.name),
                        copied_amount(c.files, c.bytes)
                    );
                }
                report.rows.push(CopyRow {
                    from: from.clone(),
                    name: c.name,
                    files: c.files,
                    bytes: c.bytes,
                });
            }
            Err(e) => {
                report.refused(format_args!("cannot copy {}", output::safe(from)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

/// "3 files, 12.0 MiB" (or "1 file, 4 B").
pub(crate) fn copied_amount(files: u64, bytes: u64) -> String {
    let plural = if files == 1 { "" } else { "s" };
    format!("{files} file{plural}, {}", output::size(bytes))
}

/// Files and folders whose names contain `text`, in every folder.
pub(crate) async fn find(global: &Global, client: &mut HubClient, text: &str) -> Result<ExitCode> {
    let found = client.find(text).await?;
    let entries = &found.entries;
    if global.json {
        print_json(&json::files(entries))?;
    } else if entries.is_empty() && !found.cut {
        eprintln!(
            "troca: no file or folder name contains {:?}",
            output::safe(text)
        );
    } else {
        print_entries(entries);
    }
    if found.cut && !global.quiet {
        eprintln!("troca: {}", cut_search(entries.len()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a search that may have left names out did, in words.
pub(crate) fn cut_search(found: usize) -> String {
    let most = troca_hub::service::MAX_FOUND;
    if found >= most {
        format!(
            "a search answers at most {most} names, the first by name: there may be more; \
             search for more of the name to narrow it"
        )
    } else {
        "the hub stopped looking at the most names it lets a search look at \
         (serve --search-names): there may be more"
            .to_owned()
    }
}

/// One line per entry: size, time, name (a folder as `NAME/`, without a size).
fn print_entries(entries: &[Entry]) {
    for e in entries {
        let size = if e.name.ends_with('/') {
            "-".to_owned()
        } else {
            output::size(e.size)
        };
        println!(
            "{:>10}  {}  {}",
            size,
            output::local_time(e.modified_ns),
            output::safe(&e.name)
        );
    }
}

pub(crate) async fn who(global: &Global, client: &mut HubClient) -> Result<ExitCode> {
    let clients = client.who().await?;
    if global.json {
        print_json(&json::clients(clients))?;
        return Ok(ExitCode::SUCCESS);
    }
    // Hubs sharing one database name the hub each client is on.
    let hubs = clients.iter().any(|c| !c.hub.is_empty());
    let hub_column = |h: &str| {
        if hubs {
            format!(" {:<16}", output::safe(h))
        } else {
            String::new()
        }
    };
    println!(
        "{:<24} {:<22} {:<16} {:<32} {:>10} {:>10}{}",
        "NAME",
        "ADDRESS",
        "SINCE",
        "DOING",
        "SENT",
        "RECEIVED",
        hub_column("HUB")
    );
    for c in clients {
        let doing = match c.activity {
            Activity::Idle => "idle".to_owned(),
            a => format!(
                "{} {} {}%",
                a.as_str(),
                output::safe(&c.target),
                (c.done * 100).checked_div(c.total).unwrap_or(100)
            ),
        };
        println!(
            "{:<24} {:<22} {:<16} {:<32} {:>10} {:>10}{}",
            output::safe(&c.name),
            output::safe(&c.address),
            output::local_time(c.connected_ns),
            doing,
            output::size(c.bytes_sent),
            output::size(c.bytes_received),
            hub_column(&c.hub)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a history page's "older entries" hint comes from: the command line, or the shell
/// (whose `history` takes a count and `--before` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HistoryFace {
    CommandLine,
    Shell,
}

/// The command that shows the page after the one `query` asked for, which ends before `next`.
fn next_history_page(query: &History, next: u64, face: HistoryFace) -> String {
    match face {
        HistoryFace::Shell => format!("history {} --before {next}", query.limit),
        HistoryFace::CommandLine => {
            let mut cmd = format!("troca history --limit {}", query.limit);
            for (flag, value) in [("--client", &query.client), ("--op", &query.op)] {
                if let Some(v) = value {
                    cmd.push_str(&format!(" {flag} {}", output::shell_word(v)));
                }
            }
            format!("{cmd} --before {next}")
        }
    }
}

pub(crate) async fn history(
    global: &Global,
    client: &mut HubClient,
    query: History,
    face: HistoryFace,
) -> Result<ExitCode> {
    let hint = |next| next_history_page(&query, next, face);
    let page = client.history(query.clone()).await?;
    if global.json {
        print_json(&json::history(page.entries))?;
    } else if page.entries.is_empty() {
        eprintln!("troca: no history entries match");
    } else {
        print_history(page.entries);
    }
    if page.next != 0 {
        eprintln!("older entries: {}", output::safe(&hint(page.next)));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_history(entries: Vec<HistoryEntry>) {
    for e in entries {
        println!(
            "{}  {:<20} {:<22} {:<8} {:<30} {:<6} {:>10} {:>9.1} ms{}",
            output::local_time_precise(e.time_ns),
            output::safe(&e.client),
            output::safe(&e.address),
            output::safe(&e.op),
            output::safe(&e.target),
            if e.ok { "ok" } else { "FAILED" },
            output::size(e.bytes),
            e.duration_us as f64 / 1000.0,
            if e.error.is_empty() {
                String::new()
            } else {
                format!("  {}", output::safe(&e.error))
            }
        );
    }
}

pub(crate) async fn status(global: &Global, client: &mut HubClient) -> Result<ExitCode> {
    let s = client.status().await?;
    let time = json::zoned_time(s.time_ns, s.utc_offset_s);
    let hub_key = client.hub_key();
    let key = hub_key.map(|k| k.to_string());
    if global.json {
        let mut v = serde_json::to_value(json::status(&s))?;
        v["key"] = key.map_or(serde_json::Value::Null, serde_json::Value::String);
        v["curl_pin"] = hub_key.map_or(serde_json::Value::Null, |k| k.curl_pin().into());
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("hub time     {time} ({})", s.time_zone);
    match key {
        Some(k) => {
            println!("key          {k} (TLS 1.3)");
            if let Some(h) = hub_key {
                println!("curl pin     {}", h.curl_pin());
            }
        }
        None => println!("key          none: not encrypted (--plaintext)"),
    }
    println!("uptime       {}", output::duration(s.uptime_s));
    println!("version      troca {}", s.version);
    let count = output::count;
    println!(
        "shared       {}, {}",
        count(s.files, "file", "files"),
        output::size(s.bytes)
    );
    println!(
        "clients      {} connected, {} transferring",
        s.clients, s.transfers
    );
    println!(
        "cache        {}, {}; {}, {}, {}",
        count(s.cache_entries, "file", "files"),
        output::size(s.cache_bytes),
        count(s.cache_hits, "hit", "hits"),
        count(s.cache_misses, "miss", "misses"),
        count(s.cache_evictions, "eviction", "evictions")
    );
    println!(
        "partials     {} held for resume or running, {}",
        count(s.partials, "upload", "uploads"),
        output::size(s.partial_bytes)
    );
    if !s.hubs.is_empty() {
        let names: Vec<String> = s
            .hubs
            .iter()
            .map(|h| output::safe(h).into_owned())
            .collect();
        println!(
            "hubs         {} running: {}",
            s.hubs.len(),
            names.join(", ")
        );
    }
    print_standing(&s.you);
    Ok(ExitCode::SUCCESS)
}

/// The lines of `status` about the asking client: who it is to the hub, and what it may add.
fn print_standing(you: &troca_proto::msg::Standing) {
    use troca_proto::msg::CallerRole;
    let role = match you.role {
        CallerRole::Anonymous => "no token",
        CallerRole::Read => "read token (list and download)",
        CallerRole::Write => "write token",
        CallerRole::Admin => "admin token",
        CallerRole::Upload => "upload token (sends new files, sees nothing)",
    };
    match &you.folder {
        Some(f) => println!("you          {role}, held to {}/", output::safe(f)),
        None => println!("you          {role}"),
    }
    let room = match (you.may_upload, you.room) {
        (false, _) => "none: you may not upload here".to_owned(),
        (true, Some(room)) => format!("{} free for your uploads", output::size(room)),
        (true, None) => "not known (the store does not say)".to_owned(),
    };
    println!("room         {room}");
    if let Some(q) = you.quota {
        let bytes = match q.bytes {
            0 => format!("{} (no bound)", output::size(q.used_bytes)),
            b => format!("{} of {}", output::size(q.used_bytes), output::size(b)),
        };
        let files = match q.files {
            0 => format!(
                "{} (no bound)",
                output::count(q.used_files, "file", "files")
            ),
            f => format!("{} of {}", q.used_files, output::count(f, "file", "files")),
        };
        println!("quota        your token keeps {bytes}, {files}");
    }
}

pub(crate) async fn time(global: &Global, client: &mut HubClient) -> Result<ExitCode> {
    let s = client.status().await?;
    if global.json {
        print_json(&json::time(&s))?;
    } else {
        println!("{}", json::zoned_time(s.time_ns, s.utc_offset_s));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{owner_key_in, with_default_port};

    /// Processes that start at once for the same hub all get one key: none goes without, none
    /// gets a key another replaces, and no temporary file stays.
    #[test]
    fn an_owner_key_made_by_many_at_once_is_one_key() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let keys: Vec<Option<String>> = std::thread::scope(|s| {
                let made: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| owner_key_in(dir.path(), "127.0.0.1:13370", None)))
                    .collect();
                made.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let first = keys[0].clone().expect("a key");
            assert_eq!(first.len(), 64, "round {round}");
            assert!(keys.iter().all(|k| k.as_ref() == Some(&first)), "{keys:?}");
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(files, 1, "round {round}");
        }
    }

    #[test]
    fn a_hub_address_without_a_port_gets_the_default() {
        assert_eq!(with_default_port("example.org", 13370), "example.org:13370");
        assert_eq!(with_default_port("example.org:80", 13370), "example.org:80");
        assert_eq!(with_default_port("192.0.2.1", 13370), "192.0.2.1:13370");
        assert_eq!(with_default_port("192.0.2.1:9", 13370), "192.0.2.1:9");
        assert_eq!(with_default_port("::1", 13370), "[::1]:13370");
        assert_eq!(with_default_port("[::1]", 13370), "[::1]:13370");
        assert_eq!(with_default_port("[::1]:9", 13370), "[::1]:9");
    }
}
