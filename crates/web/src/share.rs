//! Share links on the web face: beneath `/s/TOKEN/`, the page, files and zips the link's token
//! reaches, and WebDAV (`/s/TOKEN/dav/`, to mount them), for reading; for an upload link, the page and uploads into its folder (the hub's
//! service refuses each what its token does not allow); and the API that makes, lists and
//! revokes links for the page (`POST /api/shares`, `GET /api/shares`, `DELETE /api/shares/ID`).

use crate::api::recorded;
use crate::{ApiError, Visitor};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use axum::{Extension, Json};
use std::sync::Arc;
use tower::ServiceExt;
use troca_hub::service::ShareAsk;
use troca_hub::Hub;
use troca_proto::json::ShareQuery;

/// The longest token a share link's path may carry.
const MAX_TOKEN: usize = 128;

/// What a share link reaches: the page and its script, files, folders and zips, the API reads
/// the page makes, where an upload resumes, and WebDAV (to mount what it shares). Not the
/// hub's status, who is connected or the history.
fn reached(rest: &str) -> bool {
    matches!(
        rest,
        "/" | "/app.js" | "/app.css" | "/api/me" | "/api/files" | "/api/find" | "/api/resume"
    ) || rest.starts_with("/files/")
        || is_dav(rest)
}

fn is_dav(rest: &str) -> bool {
    rest == "/dav" || rest.starts_with("/dav/")
}

/// The methods a share link may use, as `Allow` says.
const ALLOW: &str = "GET, HEAD, PUT, OPTIONS, PROPFIND";

/// What a share link may ask: to read (through WebDAV too, which also lists and asks what it
/// offers), and to upload (`PUT` of `/files/…`), which only an upload link's token is allowed.
/// WebDAV is for reading only: its uploads look at the folder first, which an upload link
/// may not.
fn allowed(method: &Method, rest: &str) -> bool {
    match method.as_str() {
        "GET" | "HEAD" => true,
        "PUT" => rest.starts_with("/files/"),
        "OPTIONS" | "PROPFIND" => is_dav(rest),
        _ => false,
    }
}

/// A request beneath `/s/TOKEN/` (after the web face's `prefix`), served by `app` as the same
/// request without that part, presenting TOKEN (in place of any it carried), for reading only;
/// its pages' links stay beneath the link.
pub(crate) async fn through(prefix: Arc<str>, app: Router, mut req: Request) -> Response {
    let path = req.uri().path();
    let link = path.strip_prefix("/s/").unwrap_or_default();
    let (token, rest) = link.split_once('/').unwrap_or((link, ""));
    let valid = !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return crate::page::not_found().await;
    }
    let base: Arc<str> = format!("{prefix}/s/{token}").into();
    if !link.contains('/') {
        return crate::moved_to(format!("{base}/"), req.uri().query());
    }
    let rest = format!("/{rest}");
    if !allowed(req.method(), &rest) {
        let allow = [(header::ALLOW, ALLOW)];
        let why = "a share link reads files, or uploads new ones; nothing else";
        return (StatusCode::METHOD_NOT_ALLOWED, allow, why).into_response();
    }
    if !reached(&rest) {
        return crate::page::not_found().await;
    }
    let (Ok(bearer), Some(uri)) = (
        HeaderValue::from_str(&format!("Bearer {token}")),
        crate::with_path(&req, &rest),
    ) else {
        return crate::page::not_found().await;
    };
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(header::AUTHORIZATION, bearer);
    // The link is the only credential: no owner key rides along.
    headers.remove("x-troca-owner");
    crate::through_link(&mut req, base);
    let Ok(response) = app.oneshot(req).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        // Whoever follows a dead link is told so in words, not asked for a token.
        return dead_link();
    }
    response
}

/// The answer to a share link that does not work (any more).
fn dead_link() -> Response {
    let why = "This share link does not work: it has expired, was revoked, or was copied \
               incompletely. Ask whoever sent it for a new one.\n";
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        why,
    )
        .into_response()
}

/// `POST /api/shares {name, expires_s, upload, max_bytes, max_files, max_downloads}`: a new
/// share link, as `{id, name, path, expires, upload, max_downloads}` where `path` is the link's path on this web face (with
/// its prefix).
pub(crate) async fn make(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Json(body): Json<ShareQuery>,
) -> Result<Response, ApiError> {
    let hub = &hub;
    let prefix = hub.config().web_prefix.clone();
    let upload = body.bounds();
    let ask = ShareAsk::new(body.expires_s.unwrap_or(0), upload, body.max_downloads);
    let name = body.name;
    recorded(
        hub,
        &v,
        &headers,
        "share",
        name.clone(),
        |caller| async move {
            let made = hub.share(&caller, &name, ask).await?;
            let path = troca_hub::service::share_path(&made.secret, &made.name);
            let answer = serde_json::json!({
                "id": made.id,
                "name": made.name,
                "path": format!("{prefix}{path}"),
                "expires": troca_proto::json::rfc3339(made.expires_ns),
                "upload": upload.is_some(),
                "max_downloads": ask.max_downloads,
            });
            Ok(((StatusCode::CREATED, Json(answer)).into_response(), 0))
        },
    )
    .await
}

/// `GET /api/shares`: the caller's share links, newest first.
pub(crate) async fn list(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let hub = &hub;
    recorded(
        hub,
        &v,
        &headers,
        "shares",
        String::new(),
        |caller| async move {
            let rows: Vec<_> = hub
                .shares(&caller)
                .await?
                .into_iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id,
                        "name": s.name,
                        "state": s.state,
                        "created": troca_proto::json::rfc3339(s.created_ns),
                        "expires": troca_proto::json::rfc3339(s.expires_ns),
                        "made_by": s.made_by,
                        "upload": s.upload.map(|u| serde_json::json!({
                            "max_bytes": u.bytes,
                            "max_files": u.files,
                            "bytes": u.used_bytes,
                            "files": u.used_files,
                        })),
                        "max_downloads": s.max_downloads,
                        "downloads": s.downloads,
                    })
                })
                .collect();
            Ok((Json(rows).into_response(), 0))
        },
    )
    .await
}

/// `DELETE /api/shares/ID`: revokes a share link.
pub(crate) async fn revoke(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let hub = &hub;
    recorded(
        hub,
        &v,
        &headers,
        "unshare",
        id.to_string(),
        |caller| async move {
            hub.unshare(&caller, id).await?;
            Ok((StatusCode::NO_CONTENT.into_response(), 0))
        },
    )
    .await
}
