//! `troca serve`: binds the native protocol and (unless `--no-http`) the web face, prints both
//! real addresses, runs the hub until SIGINT or SIGTERM, then
//! waits (up to the grace period) for transfers in progress.

use crate::args::Serve;
use anyhow::{Context, Result};
use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use troca_hub::HubConfig;

pub fn main(args: Serve) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Serve) -> Result<ExitCode> {
    if args.dir.exists() && !args.dir.is_dir() {
        anyhow::bail!(
            "{} is a file, not a folder: give the folder to share",
            args.dir.display()
        );
    }
    // The web face is bound first: share links name its port.
    let web = if args.no_http {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&args.http)
                .await
                .with_context(|| format!("cannot listen for HTTP on {}", args.http))?,
        )
    };
    let mut config = hub_config(&args);
    // The web face uses the hub's key too, unless told to stay plain.
    let plaintext = matches!(config.tls, troca_hub::config::TlsMode::Plaintext);
    let https = !plaintext && !args.http_plaintext;
    config.web_base = web_base(&args, web.as_ref(), https)?;
    let hub = Arc::new(
        troca_hub::Hub::open(config)
            .with_context(|| format!("cannot share {}", args.dir.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("troca: sharing {}", hub.location());
    if let Some(file) = &args.config {
        eprintln!("troca: settings from {}", file.display());
    }
    // Where the admin token is, never the token itself.
    let token = hub.admin_token_file();
    eprintln!(
        "troca: {} admin token is in {} (readable by its owner only)",
        if token.created { "a new" } else { "the" },
        token.path.display()
    );
    if let Some(limits) = rate_limits(hub.config().rates) {
        eprintln!("troca: {limits}");
    }
    if !args.hide.is_empty() {
        let quoted: Vec<String> = args.hide.iter().map(|p| format!("{p:?}")).collect();
        eprintln!(
            "troca: hiding names like {} (and what such folders hold) from every client",
            quoted.join(", ")
        );
    }
    let metrics = metrics_listener(args.metrics.as_deref()).await?;
    let signals = Signals::catch()?;
    // Caught before the hub says it listens, like the others: a SIGHUP then is not fatal.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    print_addresses(&hub, &listener, web.as_ref(), metrics.as_ref(), https)?;
    // On a thread of its own, never waited for: a large share's walk must not hold up serving,
    // nor the exit.
    let walked = Arc::clone(&hub);
    let _ = std::thread::Builder::new()
        .name("unserved".into())
        .spawn(move || report_unserved(&walked));

    let shutdown = CancellationToken::new();
    let faces = Faces::start(&hub, listener, web, metrics, https, &args, &shutdown);
    let reloads = tokio::spawn(reload_on_hangup(Arc::clone(&hub), hup));
    signals.wait().await;
    reloads.abort();
    eprintln!("troca: shutting down; finishing transfers in progress");
    shutdown.cancel();
    faces.stop(&hub, args.shutdown_grace).await?;
    Ok(ExitCode::SUCCESS)
}

/// How many entries of the share the walk for what cannot be served looks at, at most.
const UNSERVED_BUDGET: u64 = 1_000_000;

/// Tells the person sharing what in the folder the hub cannot serve (names it cannot carry,
/// FIFOs and the like), which would otherwise only be missing from every listing.
fn report_unserved(hub: &troca_hub::Hub) {
    use crate::output::count;
    let Some(found) = hub.unserved(UNSERVED_BUDGET) else {
        return;
    };
    let mut kinds = Vec::new();
    if found.names > 0 {
        kinds.push(format!(
            "{} that cannot be served (not UTF-8, or with control characters)",
            count(found.names, "name", "names")
        ));
    }
    if found.special > 0 {
        kinds.push(format!(
            "{} (FIFOs, sockets, devices)",
            count(found.special, "special file", "special files")
        ));
    }
    if found.links > 0 {
        kinds.push(match found.links {
            1 => "1 link that leads out of the share, back to it, or nowhere".to_owned(),
            n => format!("{n} links that lead out of the share, back to it, or nowhere"),
        });
    }
    if kinds.is_empty() {
        return;
    }
    let within = if found.partial {
        format!(" in its first {UNSERVED_BUDGET} entries")
    } else {
        String::new()
    };
    eprintln!(
        "troca: not shared from {}{within}: {}. For example {}",
        hub.location(),
        kinds.join("; "),
        found.examples.join(", ")
    );
}

/// The bandwidth limits in words, for the person starting the hub (`None`: there are none).
fn rate_limits(rates: troca_net::pace::Limits) -> Option<String> {
    let one = |what: &str, limit: troca_net::pace::Limit| {
        let rate = |r: u64| format!("{}/s", crate::output::size(r));
        match (limit.total, limit.per_address) {
            (None, None) => None,
            (Some(t), None) => Some(format!("{what} at most {} in all", rate(t))),
            (None, Some(a)) => Some(format!("{what} at most {} per address", rate(a))),
            (Some(t), Some(a)) => Some(format!(
                "{what} at most {} in all, {} per address",
                rate(t),
                rate(a)
            )),
        }
    };
    let parts: Vec<String> = [one("downloads", rates.send), one("uploads", rates.receive)]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The hub's settings, from the command line.
fn hub_config(args: &Serve) -> HubConfig {
    let mut config = HubConfig::new(&args.dir);
    if let Some(state) = &args.state {
        config.state_dir = state.clone();
    }
    config.max_connections = args.max_connections;
    config.idle_timeout = args.idle_timeout;
    config.max_connections_per_ip = args.max_connections_per_ip.max(1);
    config.request_timeout = args.request_timeout;
    config.stall_timeout = args.stall_timeout;
    config.partial_ttl = args.partial_ttl;
    config.partial_budget = partial_budget(args);
    config.keep_free = args.keep_free;
    config.upload_quota = troca_hub::quota::QuotaLimits {
        bytes: args.upload_quota_per_ip,
        files: args.upload_files_per_ip,
        window: args.upload_quota_window,
    };
    // What the hub sends is what its clients download.
    config.rates = troca_net::pace::Limits {
        send: troca_net::pace::Limit {
            total: args.max_download_rate,
            per_address: args.max_download_rate_per_ip,
        },
        receive: troca_net::pace::Limit {
            total: args.max_upload_rate,
            per_address: args.max_upload_rate_per_ip,
        },
    };
    config.history_keep = args.history_keep;
    config.cache_size = args.cache_size;
    config.cache_max_file = args.cache_max_file;
    config.hash_cache = args.hash_cache;
    config.batch_memory = args.batch_memory;
    config.metrics = args.metrics.is_some();
    config.web_prefix = args.path_prefix.clone();
    config.trusted_proxies =
        troca_hub::config::TrustedProxies::merged(args.trusted_proxies.clone());
    config.max_searches = args.max_searches.max(1);
    config.max_zips = args.max_zips.max(1);
    config.shares = troca_hub::config::ShareLimits {
        default_time: args.share_time.min(args.max_share_time),
        max_time: args.max_share_time,
        per_token: args.max_shares_per_token,
        keep: args.share_keep,
        upload: troca_hub::records::Amount {
            bytes: args.max_share_upload,
            files: args.max_share_upload_files,
        },
    };
    config.search_names = match args.search_names {
        0 => u64::MAX,
        n => n,
    };
    config.count_names = match args.count_names {
        0 => u64::MAX,
        n => n,
    };
    config.max_locks = args.max_locks;
    config.max_locks_per_token = args.max_locks_per_token;
    config.max_lock_time = args.max_lock_time;
    config.read_only = args.read_only;
    config.require_token = args.require_token;
    config.hide.clone_from(&args.hide);
    config.store = args.store.clone().map(|mut s| {
        s.credentials_file = args.store_credentials_file.clone();
        s
    });
    config.db = args.database.address();
    config.object_grace = args.object_grace;
    config.store_part_memory = args.store_part_memory;
    config.store_timeout = args.store_timeout;
    if let Some(name) = &args.hub_name {
        config.hub_name = name.clone();
    }
    config.tls = match (&args.tls_cert, &args.tls_key, args.plaintext) {
        (Some(cert), Some(key), _) => troca_hub::config::TlsMode::Given {
            cert: cert.clone(),
            key: key.clone(),
        },
        (_, _, true) => troca_hub::config::TlsMode::Plaintext,
        _ => troca_hub::config::TlsMode::OwnKey,
    };
    config
}

/// The web face's address as share links give it: `--public-url`, or its scheme and port with
/// `*` for the host (the client puts in the one it reached the hub by); empty without one.
fn web_base(args: &Serve, web: Option<&tokio::net::TcpListener>, https: bool) -> Result<String> {
    if let Some(url) = &args.public_url {
        return Ok(url.clone());
    }
    let Some(web) = web else {
        return Ok(String::new());
    };
    let scheme = if https { "https" } else { "http" };
    let port = web.local_addr()?.port();
    Ok(format!("{scheme}://*:{port}{}", args.path_prefix))
}

/// What interrupted uploads may keep, per address and in all.
fn partial_budget(args: &Serve) -> troca_hub::store::PartialBudget {
    use troca_hub::store::PartialLimit;
    troca_hub::store::PartialBudget {
        per_address: PartialLimit {
            bytes: args.partial_budget_per_ip,
            files: args.partial_files_per_ip,
        },
        total: PartialLimit {
            bytes: args.partial_budget,
            files: args.partial_files,
        },
    }
}

/// The addresses others reach a socket bound to `bound` by: `bound` itself, or for an
/// unspecified one (`0.0.0.0`, `::`), this machine's addresses that are up, those of its
/// networks first and loopback last (IPv6 link-local ones, which need a zone, left out).
fn reachable(bound: IpAddr) -> Vec<IpAddr> {
    if !bound.is_unspecified() {
        return vec![bound];
    }
    let found = match nix::ifaddrs::getifaddrs() {
        Ok(all) => all
            .filter(|i| i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
            .filter_map(|i| i.address)
            .filter_map(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    reachable_among(bound, found)
}

/// [`reachable`] among the addresses `found` on this machine's interfaces.
fn reachable_among(bound: IpAddr, found: Vec<IpAddr>) -> Vec<IpAddr> {
    let link_local =
        |ip: &IpAddr| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    // `0.0.0.0` takes IPv4 only; `::` both (Linux's default, dual stack).
    let family = |ip: &IpAddr| bound.is_ipv6() || ip.is_ipv4();
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in found {
        if family(&ip) && !link_local(&ip) && !ip.is_unspecified() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort_by_key(IpAddr::is_loopback);
    if out.is_empty() {
        out.push(bound);
    }
    out
}

/// Prints where the hub listens, on stdout (scripts read these lines), and its key.
fn print_addresses(
    hub: &troca_hub::Hub,
    listener: &tokio::net::TcpListener,
    web: Option<&tokio::net::TcpListener>,
    metrics: Option<&tokio::net::TcpListener>,
    https: bool,
) -> Result<()> {
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    if let Some(web) = web {
        let scheme = if https { "https" } else { "http" };
        let prefix = &hub.config().web_prefix;
        // Bound to every address: the ones others can type, this network's first.
        let at = web.local_addr()?;
        for ip in reachable(at.ip()) {
            let at = std::net::SocketAddr::new(ip, at.port());
            println!("{scheme}://{at}{prefix}/");
        }
    }
    if let Some(m) = metrics {
        println!("metrics http://{}/metrics", m.local_addr()?);
    }
    match hub.tls() {
        // The key clients check, and one line that names the hub and its key together.
        Some(tls) => {
            let key = tls.identity.fingerprint;
            println!("key {key}");
            let ip = reachable(addr.ip()).into_iter().next().unwrap_or(addr.ip());
            let addr = std::net::SocketAddr::new(ip, addr.port());
            println!("connect with: troca --hub 'troca://{addr}/#{key}' ls");
        }
        None => eprintln!("troca: warning: the native protocol is not encrypted (--plaintext)"),
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// SIGHUP reads a given certificate again (renewed on disk); other signals stop the hub.
async fn reload_on_hangup(hub: Arc<troca_hub::Hub>, mut hup: tokio::signal::unix::Signal) {
    while hup.recv().await.is_some() {
        match hub.reload_tls() {
            Ok(Some(key)) => eprintln!("troca: TLS certificate reloaded; key {key}"),
            Ok(None) => {}
            Err(e) => eprintln!("troca: cannot reload the TLS certificate: {e}"),
        }
    }
}

/// The tasks serving the hub: the native protocol, the web face and the metrics.
struct Faces {
    server: tokio::task::JoinHandle<Result<(), troca_hub::HubError>>,
    web: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    metrics: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Faces {
    fn start(
        hub: &Arc<troca_hub::Hub>,
        listener: tokio::net::TcpListener,
        web: Option<tokio::net::TcpListener>,
        metrics: Option<tokio::net::TcpListener>,
        https: bool,
        args: &Serve,
        shutdown: &CancellationToken,
    ) -> Self {
        let server = tokio::spawn(troca_hub::serve(
            listener,
            Arc::clone(hub),
            shutdown.clone(),
        ));
        let web = web.map(|web| {
            tokio::spawn(troca_web::serve(
                web,
                Arc::clone(hub),
                shutdown.clone(),
                args.shutdown_grace,
                https,
            ))
        });
        let metrics = metrics.map(|listener| {
            let from = Arc::clone(hub);
            let render: troca_web::metrics::Render = Arc::new(move || {
                let hub = Arc::clone(&from);
                Box::pin(async move { hub.metrics_text().await.unwrap_or_default() })
            });
            tokio::spawn(troca_web::metrics::serve(
                listener,
                render,
                shutdown.clone(),
            ))
        });
        Self {
            server,
            web,
            metrics,
        }
    }

    /// Waits for the faces to stop once shutdown is cancelled: the web face within its own
    /// grace period, transfers on the native protocol for up to `grace`.
    async fn stop(self, hub: &Arc<troca_hub::Hub>, grace: std::time::Duration) -> Result<()> {
        if let Some(web) = self.web {
            let _ = web.await;
        }
        if let Some(m) = self.metrics {
            let _ = m.await;
        }
        match tokio::time::timeout(grace, self.server).await {
            Ok(joined) => joined.context("the hub failed")??,
            Err(_) => {
                eprintln!("troca: transfers still running after the grace period; stopping");
                // Keep what the history has so far, even when cutting transfers short.
                let h = Arc::clone(hub);
                let _ = tokio::task::spawn_blocking(move || h.history_log().flush()).await;
            }
        }
        Ok(())
    }
}

/// The listener of `--metrics ADDR`, if asked for.
pub(crate) async fn metrics_listener(
    addr: Option<&str>,
) -> Result<Option<tokio::net::TcpListener>> {
    let Some(a) = addr else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen for metrics on {a}"))?;
    Ok(Some(listener))
}

/// `troca health`: asks the hub at `hub` whether it can serve (its files' store and its
/// database answer), pinned to the key in `state` (the hub's own state folder, so no prompt
/// and no known_hubs), without a token; exit 0 if it says so within `limit`.
pub fn health(
    hub: &str,
    state: Option<&std::path::Path>,
    limit: std::time::Duration,
) -> Result<ExitCode> {
    let trust = match state {
        Some(dir) => {
            let tls = dir.join("tls");
            anyhow::ensure!(
                tls.is_dir(),
                "no key in {} (is the hub running there?)",
                tls.display()
            );
            let identity = troca_net::identity::Identity::load_or_create(dir)
                .with_context(|| format!("cannot read the hub's key in {}", dir.display()))?;
            troca_net::Trust::Key(Some(identity.fingerprint))
        }
        None => troca_net::Trust::Plaintext,
    };
    let options = troca_net::ClientOptions {
        name: "health".into(),
        trust,
        silence: Some(limit),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let asked = runtime.block_on(async {
        let ask = troca_net::HubClient::health(hub, &options);
        tokio::time::timeout(limit, ask).await
    });
    match asked {
        Ok(Ok(report)) if report.ok => {
            println!("ok: {}", crate::output::safe(&report.hub));
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(report)) => {
            eprintln!(
                "troca health: {hub}: {}",
                crate::output::safe(&report.error)
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => {
            eprintln!("troca health: {hub}: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => {
            eprintln!("troca health: {hub}: no answer within {limit:?}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() -> Result<()> {
    Signals::catch()?.wait().await;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment this is made: a server makes it before it says
/// it is listening, so a signal sent right after is never the default (dying mid-transfer).
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn catch() -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod reachable_tests {
    use super::*;

    fn ips(all: &[&str]) -> Vec<IpAddr> {
        all.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_hub_on_every_address_names_its_networks_first_and_loopback_last() {
        let found = ips(&[
            "127.0.0.1",
            "::1",
            "192.168.1.20",
            "fe80::1",
            "2001:db8::5",
            "10.0.0.7",
        ]);
        let any4: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(
            reachable_among(any4, found.clone()),
            ips(&["192.168.1.20", "10.0.0.7", "127.0.0.1"])
        );
        let any6: IpAddr = "::".parse().unwrap();
        assert_eq!(
            reachable_among(any6, found),
            ips(&[
                "192.168.1.20",
                "2001:db8::5",
                "10.0.0.7",
                "127.0.0.1",
                "::1"
            ])
        );
        assert_eq!(
            reachable_among(any4, Vec::new()),
            [any4],
            "none found: as bound"
        );
        let one: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(reachable(one), [one], "a given address is the one");
        // This machine's own: loopback at least, never the unspecified address.
        let here = reachable(any4);
        assert!(here.iter().any(IpAddr::is_loopback), "{here:?}");
        assert!(!here.contains(&any4), "{here:?}");
    }
}
