//! The JSON API: the same records as the CLI's `--json`, built by `troca_proto::json`.

use crate::error::ApiError;
use crate::Visitor;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use std::future::Future;
use std::io;
use std::sync::Arc;
use troca_hub::access::Caller;
use troca_hub::records::{PageQuery, Pending};
use troca_hub::{Hub, Listing};
use troca_proto::json;
use troca_proto::msg::Entry;

/// The token in `Authorization: Bearer TOKEN`, or the password of `Authorization: Basic`
/// (any user name: WebDAV clients, `curl -u`, and `wget --password` only know that form).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, value) = v.trim().split_once(' ')?;
    let value = value.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        value.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = data_encoding::BASE64.decode(value.as_bytes()).ok()?;
        let pair = String::from_utf8(decoded).ok()?;
        pair.split_once(':')?.1.to_owned()
    } else {
        return None;
    };
    Some(token).filter(|t| !t.is_empty())
}

/// Who is asking, by the same rules as a native `Hello` (and the same slow-down for wrong
/// tokens).
pub(crate) async fn caller(
    hub: &Arc<Hub>,
    visitor: &Visitor,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    caller_resuming(hub, visitor, headers, None).await
}

/// [`caller`] for a download of `resume` that starts past its first byte, which a share link
/// whose downloads are spent still allows if it continues one the link counted.
pub(crate) async fn caller_resuming(
    hub: &Arc<Hub>,
    visitor: &Visitor,
    headers: &HeaderMap,
    resume: Option<&str>,
) -> Result<Caller, ApiError> {
    let (token, from) = (bearer(headers), visitor.address.ip());
    let mut caller = match resume {
        Some(name) => hub.authenticate_resume(token, from, name).await?,
        None => hub.authenticate(token, from).await?,
    };
    // The page keeps an owner key of its own, as the CLI does, sent in this header.
    caller.owner_key = headers
        .get("x-troca-owner")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= troca_proto::MAX_SHORT_STR)
        .map(troca_hub::access::owner_key_hash);
    Ok(caller)
}

/// A history record for a request by `visitor`.
pub(crate) fn pending(visitor: &Visitor, op: &'static str, target: String) -> Pending {
    visitor.session.pending(op, target)
}

/// The reads a page may repeat on a timer without each one going into the history (when sent
/// with `X-Troca-Poll`): nothing changes and no file is read.
const POLLED: [&str; 3] = ["status", "who", "history"];

/// Runs a request that needs a caller, and records it with its outcome.
/// What a recorded request did: its answer, the bytes it moved, and a note for the history.
pub(crate) struct Done<T> {
    pub value: T,
    pub bytes: u64,
    pub note: Option<&'static str>,
}

impl<T> From<(T, u64)> for Done<T> {
    fn from((value, bytes): (T, u64)) -> Self {
        Done {
            value,
            bytes,
            note: None,
        }
    }
}

pub(crate) async fn recorded<T, D, F, Fut>(
    hub: &Arc<Hub>,
    visitor: &Visitor,
    headers: &HeaderMap,
    op: &'static str,
    target: String,
    work: F,
) -> Result<T, ApiError>
where
    F: FnOnce(Caller) -> Fut,
    Fut: Future<Output = Result<D, ApiError>>,
    D: Into<Done<T>>,
{
    let record = pending(visitor, op, target);
    let result = match caller(hub, visitor, headers).await {
        Ok(c) => work(c).await.map(Into::into),
        Err(e) => Err(e),
    };
    // A page refreshing its side panels says so; those looks would bury everything else.
    let polled = headers.contains_key("x-troca-poll") && POLLED.contains(&op);
    match result {
        Ok(Done { value, bytes, note }) => {
            if !polled {
                record.finish_noted(hub.history_log(), Ok(bytes), note);
            }
            Ok(value)
        }
        Err(e) => {
            record.finish(hub.history_log(), Err(e.record_text()));
            match e {
                ApiError::Hub(e) if visitor.shared => Err(ApiError::Linked(e)),
                e => Err(e),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FilesQuery {
    #[serde(default)]
    prefix: String,
}

pub(crate) async fn files(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
) -> Result<Response, ApiError> {
    let prefix = q.prefix.clone();
    let h = &hub;
    recorded(&hub, &v, &headers, "list", q.prefix, |caller| async move {
        let mut listing = h.list(&caller, &prefix);
        // The first page is read before answering, so a refusal is still a status code.
        let first = listing.next_page().await?.unwrap_or_default();
        Ok((json_listing(first, listing), 0))
    })
    .await
}

/// A listing as one JSON array, written a page at a time. A page that cannot be read cuts the
/// body short (the array never closes), so a client cannot take part of a listing for all.
fn json_listing(first: Vec<Entry>, listing: Listing) -> Response {
    struct State {
        page: Option<Vec<Entry>>,
        listing: Listing,
        started: bool,
    }
    let state = State {
        page: Some(first),
        listing,
        started: false,
    };
    let body = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        let page = match st.page.take() {
            Some(page) => Some(page),
            None => match st.listing.next_page().await {
                Ok(page) => page,
                Err(e) => return Some((Err(io::Error::other(e.to_string())), None)),
            },
        };
        let Some(page) = page else {
            return Some((Ok(Bytes::from_static(b"]")), None));
        };
        let mut out = Vec::with_capacity(page.len() * 128 + 2);
        for row in json::files(&page) {
            out.push(if st.started { b',' } else { b'[' });
            st.started = true;
            serde_json::to_writer(&mut out, &row)
                .map_err(io::Error::other)
                .ok()?;
        }
        if !st.started {
            out.push(b'[');
            st.started = true;
        }
        Some((Ok(Bytes::from(out)), Some(st)))
    });
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(body),
    )
        .into_response()
}

pub(crate) async fn status(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let asked = Arc::clone(&hub);
    recorded(
        &hub,
        &v,
        &headers,
        "status",
        String::new(),
        |c| async move { Ok((Json(json::status(&asked.status(&c).await?)), 0)) },
    )
    .await
}

pub(crate) async fn clients(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Json<Vec<json::ClientRow>>, ApiError> {
    let h = &hub;
    recorded(
        &hub,
        &v,
        &headers,
        "who",
        String::new(),
        |caller| async move { Ok((Json(json::clients(h.who(&caller).await)), 0)) },
    )
    .await
}

pub(crate) async fn history(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Query(q): Query<json::HistoryQuery>,
) -> Result<Response, ApiError> {
    let h = &hub;
    recorded(
        &hub,
        &v,
        &headers,
        "history",
        String::new(),
        |caller| async move {
            let query = PageQuery {
                limit: q.limit,
                before: q.before,
                client: q.client,
                op: q.op,
            };
            let limit = query.limit.min(troca_proto::msg::MAX_HISTORY_PAGE);
            let filters = next_page_filters(&query);
            let page = h.history(query, &caller).await?;
            let mut response = Json(json::history(page.entries)).into_response();
            // The next page, as GitHub's API and RFC 8288 give it.
            if page.next != 0 {
                let link = format!(
                    "</api/history?limit={limit}&before={}{filters}>; rel=\"next\"",
                    page.next
                );
                if let Ok(v) = HeaderValue::from_str(&link) {
                    response.headers_mut().insert(header::LINK, v);
                }
            }
            Ok((response, 0))
        },
    )
    .await
}

/// The filters of `query` as they continue in the next page's address.
fn next_page_filters(query: &PageQuery) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut out = String::new();
    if let Some(c) = &query.client {
        out += &format!("&client={}", enc(c));
    }
    if let Some(o) = &query.op {
        out += &format!("&op={}", enc(o));
    }
    out
}

/// The partial uploads the hub holds (admin token only).
pub(crate) async fn partials(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let h = Arc::clone(&hub);
    recorded(
        &hub,
        &v,
        &headers,
        "partials",
        String::new(),
        |caller| async move {
            let rows: Vec<Value> = h
                .partial_uploads(&caller)
                .await?
                .into_iter()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "name": p.name,
                        "size": p.size,
                        "held": p.held,
                        "address": p.address,
                        "active": p.active,
                        "modified": json::rfc3339(p.modified_ns),
                    })
                })
                .collect();
            Ok((Json(Value::Array(rows)), 0))
        },
    )
    .await
}

/// Removes one partial upload (admin token only).
pub(crate) async fn remove_partial(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    axum::extract::Path(key): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<axum::http::StatusCode, ApiError> {
    let h = Arc::clone(&hub);
    recorded(
        &hub,
        &v,
        &headers,
        "partials",
        key.clone(),
        |caller| async move {
            h.remove_partial(&key, &caller).await?;
            Ok((axum::http::StatusCode::NO_CONTENT, 0))
        },
    )
    .await
}

/// `GET /api/health`: `200 {"ok": true, "hub": NAME}` while the hub can serve, `503 {"ok":
/// false, "error": …}` when its store or database cannot be reached. Needs no token, is not
/// recorded, and makes no one a client (see `Hub::health`).
pub(crate) async fn health(State(hub): State<Arc<Hub>>) -> Response {
    health_answer(&hub).await
}

pub(crate) async fn health_answer(hub: &Arc<Hub>) -> Response {
    let (status, body) = match hub.health().await {
        Ok(()) => (
            axum::http::StatusCode::OK,
            serde_json::json!({ "ok": true, "hub": hub.config().hub_name }),
        ),
        Err(error) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "ok": false, "hub": hub.config().hub_name, "error": error.to_string() }),
        ),
    };
    let no_store = [(axum::http::header::CACHE_CONTROL, "no-store")];
    (status, no_store, Json(body)).into_response()
}
