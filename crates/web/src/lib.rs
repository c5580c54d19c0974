//! The hub on the web: an HTTP API and a browser page, served beside the native protocol by the
//! same [`Hub`]. Every operation goes through the hub's service (one name check, one access
//! policy, one history, one list of connected clients), never around it.
//!
//! - [`router`]: the whole HTTP face as an axum `Router`, testable without a socket.
//! - [`serve`]: accepts connections until shutdown; each connection is a client in `troca who`.
//! - `api`: JSON views of files, status, clients and history. `files`: downloads (ranges, ETags),
//!   uploads and deletions. `page`: the embedded page and its assets.

mod api;
mod dav;
mod error;
mod files;
mod folders;
mod forwarded;
mod linger;
pub mod metrics;
mod page;
pub mod qr;
mod share;
mod zipstream;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Weak;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use troca_hub::clients::Registration;
use troca_hub::clients::Session;
use troca_hub::error::HubError;
use troca_hub::service::now_ns;
use troca_hub::Hub;
use troca_net::limits::AddressSlot;
use troca_net::pace::{PaceSwitch, Paced};
use troca_net::stall::WriteStall;

pub use error::ApiError;

/// The client behind a request: its connection's session in the hub's registry.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub session: Arc<Session>,
    /// The client's address: its connection's, or, through a trusted reverse proxy, the one
    /// the proxy names (with port 0).
    pub address: SocketAddr,
    /// The trusted reverse proxy the request came through, if any.
    pub via: Option<IpAddr>,
    /// The path the request's pages and links live beneath: `--path-prefix`, and a share
    /// link's `/s/TOKEN` when the request came through one.
    pub base: Arc<str>,
    /// Whether the request came through a share link.
    pub shared: bool,
}

/// The path a share link's request's pages and links live beneath (see [`Visitor::base`]), for
/// a [`Visitor`] made after it came through the link (router tests).
#[derive(Clone)]
struct Base(Arc<str>);

/// The name a web client shows in `troca who` and the history, from its User-Agent.
fn visitor_name(req: &Request) -> String {
    let agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("unknown");
    let agent: String = agent.chars().filter(|c| !c.is_control()).take(40).collect();
    format!("web ({agent})")
}

/// Gives every request a [`Visitor`]: the connection's, when [`serve`] made one, or one for the
/// request alone (router tests, other servers).
async fn visitor(State(hub): State<Arc<Hub>>, mut req: Request, next: Next) -> Response {
    let name = visitor_name(&req);
    if let Some(v) = req.extensions().get::<Visitor>() {
        if *v.session.name() != *name {
            v.session.rename(&name);
        }
        return next.run(req).await;
    }
    let address = SocketAddr::from(([0, 0, 0, 0], 0));
    let registration = hub.clients().join(address, &name, now_ns());
    let base = req.extensions().get::<Base>().map(|b| Arc::clone(&b.0));
    req.extensions_mut().insert(Visitor {
        session: Arc::clone(&registration.session),
        address,
        via: None,
        shared: base.is_some(),
        base: base.unwrap_or_else(|| hub.config().web_prefix.as_str().into()),
    });
    let response = next.run(req).await;
    drop(registration);
    response
}

/// The HTTP face of `hub`.
pub fn router(hub: Arc<Hub>) -> Router {
    // The WebDAV handler goes to its routes alone (a layer would touch every request).
    let dav = {
        let handler = dav::handler(&hub, &hub.config().web_prefix);
        axum::routing::any(move |hub, visitor, req| {
            dav::serve(hub, visitor, Arc::clone(&handler), req)
        })
    };
    let inner = Router::new()
        .route("/", get(page::index).options(dav::root_options))
        .route("/files/", get(page::index).head(page::index))
        .route("/api/folders", axum::routing::post(folders::make_folder))
        .route("/api/move", axum::routing::post(folders::rename))
        .route("/api/copy", axum::routing::post(folders::copy))
        .route("/api/find", get(folders::find))
        .route("/api/me", get(folders::me))
        .route("/api/resume", get(folders::resume))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/api/files", get(api::files))
        .route("/api/status", get(api::status))
        .route("/api/clients", get(api::clients))
        .route("/api/history", get(api::history))
        .route("/api/partials", get(api::partials))
        .route("/api/shares", get(share::list).post(share::make))
        .route("/api/health", get(api::health))
        .route("/api/qr", axum::routing::post(qr::qr))
        .route("/api/shares/{id}", axum::routing::delete(share::revoke))
        .route(
            "/api/partials/{key}",
            axum::routing::delete(api::remove_partial),
        )
        .route(
            "/files/{*path}",
            get(files::get)
                .head(files::get)
                .put(files::put)
                .delete(files::delete),
        )
        .route("/dav", dav.clone())
        .route("/dav/", dav.clone())
        .route("/dav/{*path}", dav)
        .fallback(page::not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&hub), visitor))
        .with_state(Arc::clone(&hub));
    let prefix: Arc<str> = hub.config().web_prefix.as_str().into();
    // A share link's `/s/TOKEN/…`: the same routes again, through the link (`share.rs`).
    let through = {
        let (prefix, inner) = (Arc::clone(&prefix), inner.clone());
        axum::routing::any(move |req| share::through(Arc::clone(&prefix), inner.clone(), req))
    };
    let app = inner.route("/s/{*link}", through);
    if prefix.is_empty() {
        return app;
    }
    // Beneath a path (`--path-prefix`): the same routes there, and nothing elsewhere.
    Router::new()
        .fallback_service(app)
        .layer(middleware::from_fn(move |req, next| {
            beneath(Arc::clone(&prefix), req, next)
        }))
}

/// A request beneath the web face's path `prefix`, handed on without it; its bare prefix is
/// sent to the prefix's `/`; anything else is not found.
async fn beneath(prefix: Arc<str>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix(&*prefix) else {
        return page::not_found().await;
    };
    if rest.is_empty() {
        return moved_to(format!("{prefix}/"), req.uri().query());
    }
    if !rest.starts_with('/') {
        return page::not_found().await;
    }
    let rest = rest.to_owned();
    match with_path(&req, &rest) {
        Some(uri) => *req.uri_mut() = uri,
        None => return page::not_found().await,
    }
    next.run(req).await
}

/// The request's URI with `path` in place of its path, its query kept.
fn with_path(req: &Request, path: &str) -> Option<axum::http::Uri> {
    match req.uri().query() {
        Some(q) => format!("{path}?{q}").parse().ok(),
        None => path.parse().ok(),
    }
}

/// Marks the request as come through a share link, its pages and links beneath `base`
/// ([`Visitor::base`]).
fn through_link(req: &mut Request, base: Arc<str>) {
    if let Some(v) = req.extensions_mut().get_mut::<Visitor>() {
        v.base = Arc::clone(&base);
        v.shared = true;
    }
    req.extensions_mut().insert(Base(base));
}

/// A permanent redirect to `to`, with the request's query.
fn moved_to(to: String, query: Option<&str>) -> Response {
    let to = match query {
        Some(q) => format!("{to}?{q}"),
        None => to,
    };
    (
        axum::http::StatusCode::MOVED_PERMANENTLY,
        [(axum::http::header::LOCATION, to)],
    )
        .into_response()
}

/// A web connection's stream.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<troca_net::sealed::Sealed<tokio::net::TcpStream>>),
}

/// HTTP/1.1 as the web face serves it. A request's headers must arrive within the request
/// timeout, however long the connection was idle before, and fit in `MAX_HEAD`: one host
/// holding connections open with a byte at a time, or with endless headers, pins neither
/// slots nor memory.
fn http_builder(hub: &Hub) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(hub.config().request_timeout)
        .max_buf_size(MAX_HEAD);
    http
}

/// The requests of one web connection, each handed to the router with its [`Visitor`]. The
/// connection is registered as a client at its first request: by the page's client cookie,
/// so one browser's several connections are one client in `troca who`. A trusted reverse
/// proxy's connection carries the requests of many clients: each request is its client's.
#[derive(Clone)]
struct Visits {
    app: Router,
    hub: Arc<Hub>,
    browsers: Arc<Browsers>,
    address: SocketAddr,
    /// Whether `address` is a trusted reverse proxy.
    proxied: bool,
    /// Behind a proxy with bandwidth limits: each request's client's pace.
    pace: Option<Arc<PaceSwitch>>,
    registration: Arc<std::sync::Mutex<Option<Joined>>>,
    /// `--path-prefix`, each request's [`Visitor::base`] unless a share link's.
    base: Arc<str>,
    /// Where health checks ask (`/api/health` beneath the prefix): answered without making
    /// the checker a client.
    health: Arc<str>,
}

impl Visits {
    fn call(
        &self,
        mut req: Request<hyper::body::Incoming>,
    ) -> impl std::future::Future<Output = Result<Response, std::convert::Infallible>> {
        let checked = (req.uri().path() == &*self.health).then(|| Arc::clone(&self.hub));
        let address = self.client(req.headers());
        // Behind a proxy each request counts as a connection of its client while it runs (the
        // proxy's own connections are not counted against its address).
        let slot =
            (self.proxied && checked.is_none()).then(|| self.hub.addresses().take(address.ip()));
        let refused = matches!(slot, Some(None));
        if !refused && checked.is_none() {
            if let Some(switch) = &self.pace {
                switch.set(self.hub.pace(address.ip()));
            }
            let session = self.session(address, client_cookie(req.headers()));
            let via = self.proxied.then_some(self.address.ip());
            req.extensions_mut().insert(Visitor {
                session,
                address,
                via,
                base: Arc::clone(&self.base),
                shared: false,
            });
        }
        let mut app = self.app.clone();
        let max = self.hub.config().max_connections_per_ip;
        // A body let go part-way is read to its end for up to the request timeout, so that its
        // client, still sending, gets the answer rather than a reset.
        let waits = linger::waits_for_continue(req.headers());
        let within = self.hub.config().request_timeout;
        let req = req.map(|b| axum::body::Body::new(linger::Lingering::new(b, waits, within)));
        async move {
            if let Some(hub) = checked {
                return Ok(api::health_answer(&hub).await);
            }
            if refused {
                let busy = ApiError::from(HubError::TooManyFromAddress(max));
                return Ok(axum::response::IntoResponse::into_response(busy));
            }
            let response = app.call(req).await?;
            Ok(match slot.flatten() {
                Some(slot) => {
                    response.map(|body| axum::body::Body::new(Holding { body, _slot: slot }))
                }
                None => response,
            })
        }
    }

    /// The address a request is from: the connection's, or the client a trusted proxy names.
    fn client(&self, headers: &axum::http::HeaderMap) -> SocketAddr {
        let trusted = &self.hub.config().trusted_proxies;
        if !self.proxied {
            forwarded::notice_untrusted(self.address.ip(), headers, trusted);
            return self.address;
        }
        SocketAddr::new(
            forwarded::client_address(self.address.ip(), headers, trusted),
            0,
        )
    }

    fn session(&self, address: SocketAddr, cookie: Option<String>) -> Arc<Session> {
        let mut mine = self.registration.lock().expect("registration poisoned");
        // A connection first seen without the cookie joins its browser once it has one; a
        // proxy's joins each request's client.
        let stale = mine.as_ref().is_none_or(|j| {
            (j.cookie.is_none() && cookie.is_some())
                || (self.proxied && (j.address != address || j.cookie != cookie))
        });
        if stale {
            *mine = Some(Joined {
                registration: self.browsers.join(&self.hub, address, cookie.clone()),
                cookie,
                address,
            });
        }
        let joined = mine.as_ref().expect("just joined");
        Arc::clone(&joined.registration.session)
    }
}

/// A response's body that holds its request's place among its client's connections until it
/// is sent (behind a reverse proxy, where a request stands for a connection).
struct Holding {
    body: axum::body::Body,
    /// Held, never read: dropping it frees the place.
    _slot: AddressSlot,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The web clients known by the page's `troca-client` cookie (with their address): each is one
/// registration, kept while any of its connections is open.
#[derive(Debug, Default)]
struct Browsers(std::sync::Mutex<HashMap<(IpAddr, String), Weak<Registration>>>);

impl Browsers {
    fn join(&self, hub: &Hub, address: SocketAddr, cookie: Option<String>) -> Arc<Registration> {
        let Some(cookie) = cookie else {
            return Arc::new(hub.clients().join(address, "web", now_ns()));
        };
        let mut all = self.0.lock().expect("browsers poisoned");
        let key = (address.ip(), cookie);
        if let Some(r) = all.get(&key).and_then(Weak::upgrade) {
            return r;
        }
        all.retain(|_, r| r.strong_count() > 0);
        let r = Arc::new(hub.clients().join(address, "web", now_ns()));
        all.insert(key, Arc::downgrade(&r));
        r
    }
}

/// A connection's registration, and the cookie and address it was made for.
#[derive(Debug)]
struct Joined {
    registration: Arc<Registration>,
    cookie: Option<String>,
    address: SocketAddr,
}

/// The name of the cookie that groups one browser's connections into one client. It carries no
/// right: it only says which connections belong together (from the same address).
pub(crate) const CLIENT_COOKIE: &str = "troca-client";

/// A fresh value for [`CLIENT_COOKIE`].
pub(crate) fn new_client_cookie() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!("{}:{n}:{}", now_ns(), std::process::id());
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_owned()
}

/// The page's client cookie (`troca-client`: random hex it makes once), if well formed.
pub(crate) fn client_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(CLIENT_COOKIE)?.strip_prefix('='))
        .find(|v| (16..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
}

/// The most a request's head (request line and headers) may take; hyper answers 431 past it.
/// Also the read buffer's cap, which bodies stream through.
pub const MAX_HEAD: usize = 64 * 1024;

/// What a connection gets when the process is out of descriptors.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 5\r\n\
Connection: close\r\n\r\n";

/// Answers a connection the hub will not serve with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, why: HubError) {
    use tokio::io::AsyncWriteExt;
    let body = format!("{why}\n");
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves one connection's requests: over TLS (the handshake within the request timeout, on
/// the connection's task) when `tls` is given.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    visits: Visits,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let (address, http) = (visits.address, http_builder(&visits.hub));
    let limit = visits.hub.config().request_timeout;
    // A client that asks and reads nothing must not hold its connection for ever.
    let stall = visits.hub.config().stall_timeout;
    // Outside the stall timer: waiting for the bandwidth limit is not the client's stall.
    let pace = visits
        .pace
        .clone()
        .ok_or_else(|| visits.hub.pace(address.ip()));
    let service = hyper::service::service_fn(move |req| visits.call(req));
    let io = match tls {
        None => Io::Plain(stream),
        Some(tls) => {
            match tokio::time::timeout(limit, troca_net::sealed::accept(stream, tls)).await {
                Ok(Ok(s)) => Io::Tls(Box::new(s)),
                _ => return,
            }
        }
    };
    let served = match io {
        Io::Plain(s) => {
            let io = TokioIo::new(paced(WriteStall::new(s, stall), pace));
            watcher.watch(http.serve_connection(io, service)).await
        }
        Io::Tls(s) => {
            let io = TokioIo::new(paced(WriteStall::new(s, stall), pace));
            watcher.watch(http.serve_connection(io, service)).await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%address, "web connection ended: {e}");
    }
}

/// `stream` under its connection's pace, or under a switch that each request sets.
fn paced<S>(stream: S, pace: Result<Arc<PaceSwitch>, Option<troca_net::pace::Pace>>) -> Paced<S> {
    match pace {
        Ok(switch) => Paced::switched(stream, switch),
        Err(pace) => Paced::new(stream, pace),
    }
}

/// Who a new connection is for, and its place among its address's connections: the client a
/// trusted proxy's PROXY protocol header names, if it sends one; a trusted proxy's connection
/// (sending HTTP, its clients named by `X-Forwarded-For`) counts against the total only, each
/// of its requests against its client's address instead. `None`: refused or dropped.
async fn admit(
    stream: tokio::net::TcpStream,
    mut visits: Visits,
    early: Option<AddressSlot>,
) -> Option<(tokio::net::TcpStream, Visits, Option<AddressSlot>)> {
    if early.is_some() {
        // Not a trusted proxy's: its address is its client's, and its place was taken.
        return Some((stream, visits, early));
    }
    let hub = Arc::clone(&visits.hub);
    let (stream, address) = troca_hub::server::client_of(&hub, stream, visits.address).await?;
    visits.address = address;
    visits.proxied = hub.config().trusted_proxies.contains(address.ip());
    if visits.proxied {
        visits.pace = (!hub.config().rates.is_none()).then(Arc::default);
        return Some((stream, visits, None));
    }
    let Some(slot) = hub.addresses().take(address.ip()) else {
        let max = hub.config().max_connections_per_ip;
        refuse(stream, HubError::TooManyFromAddress(max)).await;
        return None;
    };
    Some((stream, visits, Some(slot)))
}

/// Serves the HTTP face on `listener` until `shutdown`, then lets requests in progress finish
/// for up to `grace`. Each connection is registered as a client of the hub while it is open.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
    grace: Duration,
    https: bool,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&hub));
    let base: Arc<str> = hub.config().web_prefix.as_str().into();
    let health: Arc<str> = format!("{base}/api/health").into();
    let browsers = Arc::new(Browsers::default());
    let slots = Arc::new(Semaphore::new(hub.config().max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tasks = TaskTracker::new();
    loop {
        let Some((stream, address)) = troca_net::accept(&listener, &shutdown, BUSY).await else {
            break;
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            let max = hub.config().max_connections;
            tasks.spawn(refuse(stream, HubError::TooManyConnections(max)));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let early = match troca_hub::server::early_place(&hub, address) {
            Ok(early) => early,
            Err(e) => {
                tasks.spawn(refuse(stream, e));
                continue;
            }
        };
        let visits = Visits {
            app: app.clone(),
            hub: Arc::clone(&hub),
            browsers: Arc::clone(&browsers),
            address,
            proxied: false,
            pace: None,
            registration: Arc::default(),
            base: Arc::clone(&base),
            health: Arc::clone(&health),
        };
        // The configuration in use now (a reloaded certificate applies from the next one).
        let tls = hub.tls().filter(|_| https).map(|t| Arc::clone(&t.http));
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let Some((stream, visits, from_address)) = admit(stream, visits, early).await else {
                return;
            };
            let _held = (permit, from_address, Arc::clone(&visits.registration));
            serve_connection(stream, tls, visits, watcher).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("web requests still running after the grace period");
    }
    tasks.close();
    Ok(())
}
