//! WebDAV (RFC 4918, classes 1 and 2) at `/dav/`, so the hub mounts as a drive: rclone's
//! `webdav` remote, cadaver, davfs2, and the file managers of Windows, macOS and Linux.
//!
//! `dav-server` speaks the protocol (XML, `If` headers, multistatus answers); behind it
//! [`fs::HubFs`] calls the hub's own operations and [`locks::HubLocks`] keeps locks in the hub's
//! table, honoured by every face. This module is the door: it authenticates the request (a
//! token as HTTP Basic's password, or as a Bearer token), refuses what the hub does not serve
//! (`Depth: infinity` listings, a `Destination` on another host or outside `/dav/`, a `PUT`
//! without a length), serves `GET`/`HEAD` of files through the web face's own download path,
//! keeps the times clients give files ([`times`]), and records every request in the history.

mod fs;
mod locks;
mod times;

use crate::api::{bearer, caller, pending};
use crate::error::ApiError;
use crate::files::{send_file, Asked};
use crate::Visitor;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dav_server::DavHandler;
use std::sync::Arc;
use troca_hub::access::Caller;
use troca_hub::{Hub, HubError};
use troca_proto::Hash;

/// Where WebDAV lives on the web face.
pub(crate) const PREFIX: &str = "/dav";

/// What every filesystem call of one request knows.
#[derive(Clone)]
pub(crate) struct Ctx {
    caller: Caller,
    visitor: Visitor,
    /// The sender's hash (`X-Troca-Blake3`), checked against a `PUT`'s bytes when sent.
    sender_hash: Option<Hash>,
    /// The time a `PUT` gives its file (`X-OC-Mtime`), in nanoseconds; 0: now.
    modified_ns: i64,
    /// A `PUT` whose body comes without its length (chunked): gathered, then stored.
    unsized_put: bool,
    /// The dead properties of the entries a `PROPFIND`'s listing read last.
    ahead: Arc<std::sync::Mutex<troca_hub::names::PropsAhead>>,
}

/// The protocol handler, made once for the hub (and for each request through a share link,
/// whose paths lie beneath the link).
pub(crate) type Dav = Arc<DavHandler<Ctx>>;

/// The handler of requests beneath `base` (`--path-prefix`, or a share link's `/s/TOKEN`
/// beneath it) + `/dav`.
pub(crate) fn handler(hub: &Arc<Hub>, base: &str) -> Dav {
    // A partial update (`PATCH`) would write into a file in place: not a thing troca does.
    let mut methods = dav_server::DavMethodSet::all();
    methods.remove(dav_server::DavMethod::Patch);
    let config = DavHandler::builder()
        .methods(methods)
        .strip_prefix(format!("{base}{PREFIX}"))
        .filesystem(Box::new(fs::HubFs {
            hub: Arc::clone(hub),
        }))
        .locksystem(Box::new(locks::HubLocks {
            hub: Arc::clone(hub),
        }))
        // A listing shows a link to a folder as the folder; a delete or a move takes the link.
        .hide_symlinks(false)
        .autoindex(true);
    Arc::new(config.build_handler())
}

/// What only a client with a token may ask for: an anonymous client may read and add new
/// names, but never change what is there (nor lock it away from its owner), so it is asked for
/// credentials at once rather than refused member by member.
const CHANGES: [&str; 5] = ["DELETE", "MOVE", "PROPPATCH", "LOCK", "UNLOCK"];

/// A lock keeps a name from everyone else: only a token that may write takes one.
fn may_lock(hub: &Hub, who: &Caller, name: &str) -> Result<(), ApiError> {
    who.may_create(
        hub.tokens(),
        hub.config().read_only,
        name.trim_end_matches('/'),
    )?;
    Ok(())
}

/// The history's word for a WebDAV method.
fn op(method: &Method) -> &'static str {
    match method.as_str() {
        "PROPFIND" => "list",
        "PROPPATCH" => "props",
        "MKCOL" => "mkdir",
        "DELETE" => "rm",
        "PUT" => "put",
        "COPY" => "cp",
        "MOVE" => "mv",
        "LOCK" => "lock",
        "UNLOCK" => "unlock",
        "OPTIONS" => "options",
        "GET" => "get",
        "HEAD" => "head",
        _ => "webdav",
    }
}

/// The hub's name for the request's path (for the history and the file downloads).
fn name_in(path: &str) -> Option<String> {
    let raw = path.strip_prefix(PREFIX)?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?;
    Some(decoded.trim_start_matches('/').to_owned())
}

/// The lock tokens an `If` header presents: every `<opaquelocktoken:…>` in it.
fn lock_tokens(headers: &HeaderMap) -> Vec<String> {
    let Some(v) = headers.get("if").and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    v.split('<')
        .filter_map(|s| s.split_once('>'))
        .map(|(t, _)| t.trim())
        .filter(|t| t.starts_with("opaquelocktoken:"))
        .take(64)
        .map(str::to_owned)
        .collect()
}

/// A plain answer with a short text.
fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// What the hub does not serve, refused before `dav-server` sees it.
fn refusal(req: &Request, base: &str) -> Option<Response> {
    let headers = req.headers();
    let dots = name_in(req.uri().path())
        .is_some_and(|n| n.split('/').any(|part| part == "." || part == ".."));
    if dots {
        // `%2e%2e` is `..` once decoded: no path walks out of where it says it is.
        return Some(plain(StatusCode::BAD_REQUEST, "a path with . or .. in it"));
    }
    let method = req.method().as_str();
    let depth = headers.get("depth").and_then(|v| v.to_str().ok());
    if method == "PROPFIND" && depth.is_some_and(|d| d.eq_ignore_ascii_case("infinity")) {
        // RFC 4918 §9.1: a listing of everything beneath, refused with this precondition.
        let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\">\
                    <D:propfind-finite-depth/></D:error>\n";
        let mut r = (StatusCode::FORBIDDEN, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        return Some(r);
    }
    if method == "PUT" && times::oc_mtime(headers).is_err() {
        return Some(plain(
            StatusCode::BAD_REQUEST,
            "X-OC-Mtime is not a time in Unix seconds",
        ));
    }
    if method == "PUT" && !says_length(headers) && !crate::files::unsized_body(headers) {
        return Some(plain(
            StatusCode::LENGTH_REQUIRED,
            "an upload needs a Content-Length, or a body sent chunked",
        ));
    }
    if headers
        .get("if")
        .is_some_and(|v| !if_header_is_safe(v.as_bytes()))
    {
        return Some(plain(StatusCode::BAD_REQUEST, "a malformed If header"));
    }
    if matches!(method, "COPY" | "MOVE") {
        let proxied = req
            .extensions()
            .get::<crate::Visitor>()
            .is_some_and(|v| v.via.is_some());
        return destination_refusal(headers, proxied, base);
    }
    None
}

/// Whether an upload says its length: `Content-Length`, or `X-Expected-Entity-Length` as
/// macOS's Finder sends beside a chunked body.
fn says_length(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CONTENT_LENGTH) || headers.contains_key("x-expected-entity-length")
}

/// Whether `dav-server`'s `If` parser can read `v` without running off its end: it does when a
/// `<` or `[` is never closed. Tokenizes as that parser does and says no where it would fail.
fn if_header_is_safe(v: &[u8]) -> bool {
    const MAX: usize = 16 * 1024;
    let space = |c: u8| b" \t\r\n".contains(&c);
    let special = |c: u8| b"<>()[]".contains(&c);
    if v.len() > MAX {
        return false;
    }
    let mut buf = v;
    loop {
        while buf.first().is_some_and(|&c| space(c)) {
            buf = &buf[1..];
        }
        let Some(&first) = buf.first() else {
            return true;
        };
        let close = match first {
            b'(' | b')' => {
                buf = &buf[1..];
                continue;
            }
            b'<' => b'>',
            b'[' => b']',
            _ => {
                // A word: up to the next space or special character (the parser refuses it if
                // empty, which is safe).
                let end = buf.iter().position(|&c| space(c) || special(c) || c < 32);
                match end {
                    Some(0) => return true,
                    Some(n) => buf = &buf[n..],
                    None => return true,
                }
                continue;
            }
        };
        let mut i = 1;
        let mut quoted = false;
        loop {
            let Some(&c) = buf.get(i) else {
                return false;
            };
            if !quoted && c == close {
                break;
            }
            if space(c) {
                // The parser stops here with an error of its own.
                return true;
            }
            quoted ^= c == b'"';
            i += 1;
        }
        buf = &buf[i + 1..];
    }
}

/// A `Destination` must be on this hub (the request's own host, or through a trusted reverse
/// proxy the host its client asked for, `X-Forwarded-Host`) and beneath `/dav/` (beneath the
/// web face's `base`, its `--path-prefix`).
fn destination_refusal(headers: &HeaderMap, proxied: bool, base: &str) -> Option<Response> {
    let dest = headers.get("destination").and_then(|v| v.to_str().ok())?;
    let uri: axum::http::Uri = match dest.parse() {
        Ok(u) => u,
        Err(_) => return Some(plain(StatusCode::BAD_REQUEST, "a bad Destination")),
    };
    if let Some(authority) = uri.authority() {
        let forwarded = headers
            .get_all("x-forwarded-host")
            .iter()
            .filter(|_| proxied)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        let mut hosts = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .into_iter()
            .chain(forwarded);
        if !hosts.any(|h| h.trim().eq_ignore_ascii_case(authority.as_str())) {
            return Some(plain(
                StatusCode::BAD_GATEWAY,
                "the Destination is on another server",
            ));
        }
    }
    let path = uri.path().strip_prefix(base).unwrap_or("");
    if path != PREFIX && !path.starts_with("/dav/") {
        return Some(plain(
            StatusCode::FORBIDDEN,
            "the Destination is outside /dav/",
        ));
    }
    None
}

/// The sender's hash in `X-Troca-Blake3`, if it is one.
fn sender_hash(headers: &HeaderMap) -> Option<Hash> {
    let v = headers.get("x-troca-blake3")?.to_str().ok()?;
    blake3::Hash::from_hex(v.trim()).ok().map(|h| *h.as_bytes())
}

/// A request for credentials WebDAV clients answer (they send none until asked).
fn challenge(why: &str) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"troca\", charset=\"UTF-8\""),
    );
    r
}

/// Every request to `/dav` and beneath.
pub(crate) async fn serve(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    dav: Dav,
    req: Request,
) -> Response {
    let Some(name) = name_in(req.uri().path()) else {
        return plain(StatusCode::BAD_REQUEST, "the path is not valid UTF-8");
    };
    let method = req.method().clone();
    let is_read = method == Method::GET || method == Method::HEAD;
    if is_read && !name.is_empty() && !name.ends_with('/') {
        return get_file(&hub, &v, req.headers(), &name, method == Method::HEAD).await;
    }
    let mut record = pending(&v, op(&method), name.clone());
    record.face = "dav";
    if let Some(r) = refusal(&req, &v.base) {
        record.finish(hub.history_log(), Err(format!("{}", r.status())));
        return r;
    }
    let who = match authorize(&hub, &v, req.headers(), method.as_str(), &name).await {
        Ok(who) => who,
        Err((response, why)) => {
            record.finish(hub.history_log(), Err(why));
            return response;
        }
    };
    let anonymous = who.token.is_none();
    let put_size = (method == Method::PUT)
        .then(|| req.headers().get(header::CONTENT_LENGTH))
        .flatten()
        .and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
    let timed = method == Method::PUT && req.headers().contains_key("x-oc-mtime");
    // A body sent without its length: the history gets the size stored, looked up after.
    let unsized_put = (method == Method::PUT && put_size.is_none()).then(|| who.clone());
    let Some(mut response) = answer(&hub, &dav, &v, req, who, &name).await else {
        record.finish(
            hub.history_log(),
            Err("internal: the WebDAV handler failed".into()),
        );
        let why = "the request could not be handled";
        return plain(StatusCode::INTERNAL_SERVER_ERROR, why);
    };
    let status = response.status();
    let outcome = if status.is_success() || status.is_redirection() {
        let stored = match unsized_put {
            Some(who) => hub.stat(&who, &name).await.map_or(0, |s| s.size),
            None => 0,
        };
        Ok(put_size.unwrap_or(stored))
    } else {
        Err(format!("{status}"))
    };
    record.finish(hub.history_log(), outcome);
    // A client that sent no credentials is asked for them rather than told no.
    if anonymous && status == StatusCode::FORBIDDEN {
        return challenge("this needs a token (as the password)");
    }
    let h = response.headers_mut();
    if method == Method::OPTIONS {
        // What the hub serves: classes 1 and 2, no partial updates.
        h.insert("dav", HeaderValue::from_static("1, 2"));
    }
    if timed && status.is_success() {
        // ownCloud's word that the file has the time it was given.
        h.insert("x-oc-mtime", HeaderValue::from_static("accepted"));
    }
    response
}

/// The answer to a request the door let through: a `PROPPATCH` of times only is answered
/// here, anything else by `dav-server`.
async fn answer(
    hub: &Arc<Hub>,
    dav: &Dav,
    v: &Visitor,
    req: Request,
    who: Caller,
    name: &str,
) -> Option<Response> {
    let req = match req.method().as_str() {
        "PROPPATCH" => match times::patch(hub, name, req, &who).await {
            times::Patched::Done(r) => return Some(r),
            times::Patched::NotOurs(req) => req,
        },
        "COPY" => match copy_folder(hub, &v.base, Copying::of(&req), &who, name).await {
            Some(r) => return Some(r),
            None => req,
        },
        _ => req,
    };
    let response = handle(hub, dav, v, req, who).await?;
    Some(response.map(Body::new))
}

/// What a `COPY` asks for, read from its headers.
struct Copying {
    depth: Option<String>,
    destination: Option<String>,
}

impl Copying {
    fn of(req: &Request) -> Self {
        let header = |h: &str| Some(req.headers().get(h)?.to_str().ok()?.to_owned());
        Self {
            depth: header("depth"),
            destination: header("destination"),
        }
    }
}

/// A `COPY` of a whole folder to a new name, answered by the hub's own copy (files copied by
/// the store and stored in batches) rather than file by file through `dav-server`; `None`
/// for any other `COPY` (a file, `Depth: 0`, a destination that exists, whose `Overwrite`
/// rules `dav-server` applies, or whose parent is missing, its `409`).
async fn copy_folder(
    hub: &Arc<Hub>,
    base: &str,
    copying: Copying,
    who: &Caller,
    name: &str,
) -> Option<Response> {
    let depth = copying.depth.as_deref();
    if depth.is_some_and(|d| !d.eq_ignore_ascii_case("infinity")) || name.is_empty() {
        return None;
    }
    let dest: axum::http::Uri = copying.destination?.parse().ok()?;
    let to = name_in(dest.path().strip_prefix(base)?)?;
    let to = to.trim_end_matches('/');
    let parent = to.rsplit_once('/').map_or("", |(p, _)| p);
    if to.is_empty() || !hub.stat(who, name).await.ok()?.folder {
        return None;
    }
    let parent_is_folder = hub.stat(who, parent).await.is_ok_and(|s| s.folder);
    if !parent_is_folder || !matches!(hub.stat(who, to).await, Err(HubError::NotFound(_))) {
        return None;
    }
    let progress = Default::default();
    Some(match hub.copy(name, to, false, who, &progress).await {
        Ok(_) => plain(StatusCode::CREATED, "copied"),
        Err(e) => ApiError::Hub(e).into_response(),
    })
}

/// Who is asking, with the lock tokens it presents; or the answer that refuses it, and why
/// (for the history).
async fn authorize(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    method: &str,
    name: &str,
) -> Result<Caller, (Response, String)> {
    if bearer(headers).is_none() && CHANGES.contains(&method) {
        let ask = challenge("this needs a token (as the password)");
        return Err((ask, "unauthorized: no token".into()));
    }
    let mut who = match caller(hub, v, headers).await {
        Ok(c) => c,
        Err(e) => {
            let why = e.record_text();
            let answer = match e {
                ApiError::Hub(HubError::Unauthorized(text)) => challenge(&text),
                other => other.into_response(),
            };
            return Err((answer, why));
        }
    };
    if method == "LOCK" {
        if let Err(e) = may_lock(hub, &who, name) {
            let why = e.record_text();
            return Err((e.into_response(), why));
        }
    }
    who.lock_tokens = lock_tokens(headers);
    Ok(who)
}

/// Hands the request to `dav-server` (its body failing after the stall timeout), with one
/// level for a `PROPFIND` without `Depth`. `None` if it panicked: `dav-server` parses what
/// clients send, and a panic on some input must cost that request only.
async fn handle(
    hub: &Arc<Hub>,
    dav: &Dav,
    v: &Visitor,
    req: Request,
    who: Caller,
) -> Option<axum::http::Response<dav_server::body::Body>> {
    let ctx = Ctx {
        sender_hash: sender_hash(req.headers()),
        // Refused at the door when not a time.
        modified_ns: times::oc_mtime(req.headers()).ok().flatten().unwrap_or(0),
        unsized_put: req.method() == Method::PUT
            && !says_length(req.headers())
            && crate::files::unsized_body(req.headers()),
        visitor: v.clone(),
        caller: who.clone(),
        ahead: Default::default(),
    };
    let stall = hub.config().stall_timeout;
    let mut req = req.map(|b| Body::new(crate::files::Patient::new(b, stall)));
    // Beneath a path prefix (or a link), dav-server names what it lists by the whole path, as
    // clients see it.
    let base = &v.base;
    if !base.is_empty() {
        let whole = format!("{base}{}", req.uri());
        if let Ok(uri) = whole.parse() {
            *req.uri_mut() = uri;
        }
    }
    if req.method().as_str() == "PROPFIND" && !req.headers().contains_key("depth") {
        // No Depth means infinity (RFC 4918 §9.1), which the hub does not serve: one level.
        req.headers_mut()
            .insert("depth", HeaderValue::from_static("1"));
    }
    let beneath_link;
    let dav = match v.shared {
        true => {
            beneath_link = handler(hub, &v.base);
            &beneath_link
        }
        false => dav,
    };
    let handled = std::panic::AssertUnwindSafe(dav.handle_guarded(req, who.principal(), ctx));
    futures_util::FutureExt::catch_unwind(handled).await.ok()
}

/// `OPTIONS /`: Windows' WebDAV client asks the server's root before the share's address.
pub(crate) async fn root_options() -> Response {
    let mut r = StatusCode::OK.into_response();
    let h = r.headers_mut();
    h.insert("dav", HeaderValue::from_static("1, 2"));
    h.insert("ms-author-via", HeaderValue::from_static("DAV"));
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, GET, HEAD"),
    );
    r
}

/// `GET`/`HEAD` of a file: the web face's download path (ranges, ETags, the hot-file cache).
async fn get_file(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    name: &str,
    head: bool,
) -> Response {
    let asked = Asked {
        head,
        attachment: false,
    };
    let to_folder = || {
        let to = format!("{}{PREFIX}/{}/", v.base, crate::page::href_path(name));
        (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
    };
    match send_file(hub, v, headers, name, asked, to_folder).await {
        Ok(r) => r,
        Err(ApiError::Hub(HubError::Unauthorized(why))) => challenge(&why),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_headers_that_would_run_off_the_end_are_refused() {
        let ok = [
            "(<opaquelocktoken:a-b> [\"e\"]) (Not <DAV:no-lock> [\"e\"])",
            "<http://h/dav/x> (<opaquelocktoken:a>)",
            "(Not <DAV:no-lock>)",
            "(<a b>)",
            "",
        ];
        for v in ok {
            assert!(if_header_is_safe(v.as_bytes()), "{v}");
        }
        let bad = ["(<opaquelocktoken:a", "([\"e]", "([\"e]\")", "<"];
        for v in bad {
            assert!(!if_header_is_safe(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn lock_tokens_are_read_from_the_if_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "if",
            HeaderValue::from_static(
                "<http://x/dav/a> (<opaquelocktoken:1> [\"e\"]) (Not <DAV:no-lock>)",
            ),
        );
        assert_eq!(lock_tokens(&h), vec!["opaquelocktoken:1".to_owned()]);
    }
}
