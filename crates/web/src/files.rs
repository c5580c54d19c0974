//! `/files/{path}`: downloads (`GET`, `HEAD`, one range, ETags from the BLAKE3 hash), uploads
//! (`PUT`, streamed to a partial file, verified, renamed) and deletions (`DELETE`).
//!
//! The path is percent-decoded once, here, and the result goes through the same name check as
//! the native protocol's names (in the hub's service): `%2F`, `%2E%2E`, backslashes and the like
//! reach that check as the characters they encode and are refused there like any other bad name.

use crate::api::{caller_resuming, pending, recorded, Done};
use crate::error::ApiError;
use crate::Visitor;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use troca_hub::access::Caller;
use troca_hub::clients::Busy;
use troca_hub::records::Pending;
use troca_hub::service::{Download, Source};
use troca_hub::spool::Spool;
use troca_hub::store::{Body as StoreBody, StoredFile};
use troca_hub::transfer::Incoming;
use troca_hub::{Hub, HubError};
use troca_net::IoBuf;
use troca_proto::msg::{Activity, Put};
use troca_proto::Hash;

/// Bytes read from the file per body chunk.
const CHUNK: usize = 256 * 1024;

/// The remote name in a `/files/…` path, percent-decoded once.
fn remote_name(uri: &Uri) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
    let name = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| HubError::BadRequest("the path is not valid UTF-8".into()))?;
    Ok(name.into_owned())
}

fn etag(hash: &Hash) -> String {
    format!("\"{}\"", troca_proto::hex(hash))
}

/// Whether an `If-None-Match` list names this ETag.
fn matches_etag(list: &HeaderValue, tag: &str) -> bool {
    list.to_str().is_ok_and(|l| {
        l.split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == tag || t == "*")
    })
}

/// A single byte range to send: `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Full,
    Part(u64, u64),
}

/// Reads a `Range` header. Several ranges, other units and malformed values are ignored (the
/// whole file is sent, as RFC 9110 allows); a well-formed range outside the file is refused.
fn parse_range(value: Option<&HeaderValue>, size: u64) -> Result<Want, ApiError> {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(Want::Full);
    };
    if spec.contains(',') {
        return Ok(Want::Full);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(Want::Full);
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(0) => Err(ApiError::BadRange(size)),
            Some(_) if size == 0 => Err(ApiError::BadRange(size)),
            Some(n) => Ok(Want::Part(size.saturating_sub(n), size - 1)),
            None => Ok(Want::Full),
        },
        // bytes=A-
        (false, true) => match num(a) {
            Some(start) if start >= size => Err(ApiError::BadRange(size)),
            Some(start) => Ok(Want::Part(start, size - 1)),
            None => Ok(Want::Full),
        },
        // bytes=A-B
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    Err(ApiError::BadRange(size))
                } else {
                    Ok(Want::Part(start, end.min(size - 1)))
                }
            }
            _ => Ok(Want::Full),
        },
        (true, true) => Ok(Want::Full),
    }
}

/// `Content-Disposition` for `name`: its last part, ASCII-safe in `filename` and exact (UTF-8,
/// percent-encoded) in `filename*`.
pub(crate) fn disposition(name: &str, attachment: bool) -> HeaderValue {
    let base = name.rsplit('/').next().unwrap_or(name);
    let ascii: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let exact = percent_encoding::utf8_percent_encode(base, percent_encoding::NON_ALPHANUMERIC);
    let kind = if attachment { "attachment" } else { "inline" };
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{exact}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn content_type(name: &str) -> HeaderValue {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text = if mime.type_() == mime_guess::mime::TEXT && mime.get_param("charset").is_none() {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(ns: i64) -> Option<HeaderValue> {
    let t = jiff::Timestamp::from_nanosecond(i128::from(ns)).ok()?;
    HeaderValue::from_str(&t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()).ok()
}

#[derive(Debug, Deserialize)]
pub(crate) struct GetQuery {
    download: Option<String>,
    zip: Option<String>,
    /// A folder's listing from the row after this one.
    after: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    v.as_deref()
        .is_some_and(|v| matches!(v, "" | "1" | "true" | "yes"))
}

pub(crate) async fn get(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let name = remote_name(&uri)?;
    if name.is_empty() || name.ends_with('/') {
        return match q.zip {
            Some(_) => crate::folders::zip(&hub, &v, &headers, &name).await,
            None => {
                let after = q.after.as_deref();
                crate::folders::listing(&hub, &v, &headers, &name, after).await
            }
        };
    }
    let query = uri.query().map_or(String::new(), |q| format!("?{q}"));
    // A folder named without its slash: where its listing is, so relative links work.
    let to_folder = || {
        let to = format!("{}/{query}", crate::page::href(&v.base, &name));
        (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, to)]).into_response()
    };
    let asked = Asked {
        head: method == Method::HEAD,
        attachment: truthy(&q.download),
    };
    send_file(&hub, &v, &headers, &name, asked, to_folder).await
}

/// How a file was asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    /// `HEAD`: the headers only.
    pub head: bool,
    /// Saved as a file rather than shown (`Content-Disposition: attachment`).
    pub attachment: bool,
}

/// Answers a `GET` or `HEAD` of file `name` (ranges, ETags, `If-None-Match`), recorded in the
/// history; `folder` answers when the name is a folder.
pub(crate) async fn send_file(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    name: &str,
    asked: Asked,
    folder: impl FnOnce() -> Response,
) -> Result<Response, ApiError> {
    let head = asked.head;
    let name = name.to_owned();
    let record = pending(v, if head { "head" } else { "get" }, name.clone());
    // A cut download continued: allowed by a share link whose downloads are spent, if it
    // counted this one.
    let resuming = !head
        && matches!(parse_range(headers.get(header::RANGE), u64::MAX), Ok(Want::Part(a, _)) if a > 0);
    let canonical = troca_proto::RemoteName::parse(&name).ok();
    let resume = canonical.as_ref().filter(|_| resuming).map(|n| n.as_str());
    let opened = async {
        let caller = caller_resuming(hub, v, headers, resume).await?;
        let download = hub.download(&caller, &name, 0)?;
        Ok::<_, ApiError>((caller, download))
    };
    let (caller, download) = match opened.await {
        Ok(opened) => opened,
        Err(ApiError::Hub(HubError::NotAFile(_))) => {
            record.finish(hub.history_log(), Ok(0));
            return Ok(folder());
        }
        Err(e) => {
            record.finish(hub.history_log(), Err(e.record_text()));
            return Err(e);
        }
    };
    let tag = download.hash.as_ref().map(etag);
    if let (Some(tag), Some(inm)) = (&tag, headers.get(header::IF_NONE_MATCH)) {
        if matches_etag(inm, tag) {
            record.finish(hub.history_log(), Ok(0));
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag.clone())]).into_response());
        }
    }
    let want = match wanted(headers, tag.as_deref(), download.size()) {
        Ok(w) => w,
        Err(e) => {
            record.finish(hub.history_log(), Err(e.record_text()));
            return Err(e);
        }
    };
    if !head {
        // A share link that allows only so many downloads counts this one.
        let resumed = matches!(want, Want::Part(a, _) if a > 0);
        let counted = hub.count_download(&caller, download.name.as_str(), resumed);
        if let Err(e) = counted.await.map_err(|e| linked(v, e)) {
            record.finish(hub.history_log(), Err(e.record_text()));
            return Err(e);
        }
        // An object's GET opens before the answer's headers, so a store that cannot be
        // reached is an error status, not a body cut short.
        if let Err(e) = prepare_object(&download, want).await {
            record.finish(hub.history_log(), Err(e.record_text()));
            return Err(e);
        }
    }
    let response = answer_headers(&name, &download, want, tag, asked.attachment);
    let body = if head {
        record.finish(hub.history_log(), Ok(0));
        Body::empty()
    } else {
        body(hub, v, record, download, want)
    };
    response
        .body(body)
        .map_err(|e| HubError::Internal(format!("cannot answer: {e}")).into())
}

/// A hub error as a visitor through a share link sees it (without hints about tokens).
pub(crate) fn linked(v: &Visitor, e: HubError) -> ApiError {
    match v.shared {
        true => ApiError::Linked(e),
        false => ApiError::Hub(e),
    }
}

/// The part of a file of `size` bytes the request wants. A range applies only to the version
/// the client holds (`If-Range`), if it names one.
fn wanted(headers: &HeaderMap, tag: Option<&str>, size: u64) -> Result<Want, ApiError> {
    let range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| tag.is_some_and(|t| v.to_str().is_ok_and(|v| v == t)));
    if range_ok {
        parse_range(headers.get(header::RANGE), size)
    } else {
        Ok(Want::Full)
    }
}

/// Opens the GET of an object's wanted bytes (nothing to do for a file or a cached copy).
async fn prepare_object(download: &Download, want: Want) -> Result<(), ApiError> {
    let Source::Stored(StoredFile {
        body: StoreBody::Object(o),
        ..
    }) = &download.source
    else {
        return Ok(());
    };
    let (start, end) = bounds(want, download.size());
    if start == end {
        return Ok(());
    }
    o.prepare(start, end, false)
        .await
        .map_err(|e| HubError::Backend(format!("cannot read {}: {e}", download.name)).into())
}

/// Where `want` starts and ends (exclusive) in a file of `size` bytes.
fn bounds(want: Want, size: u64) -> (u64, u64) {
    match want {
        Want::Full => (0, size),
        Want::Part(a, b) => (a, b + 1),
    }
}

/// The status and headers of a download's answer.
fn answer_headers(
    name: &str,
    download: &Download,
    want: Want,
    tag: Option<String>,
    attachment: bool,
) -> axum::http::response::Builder {
    let size = download.size();
    let (start, end) = bounds(want, size);
    let mut response = Response::builder()
        .status(match want {
            Want::Full => StatusCode::OK,
            Want::Part(..) => StatusCode::PARTIAL_CONTENT,
        })
        .header(header::CONTENT_TYPE, content_type(name))
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_DISPOSITION, disposition(name, attachment))
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // A shared HTML file must not run scripts with the page's origin (and its token).
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    if let Some(tag) = tag {
        response = response.header(header::ETAG, tag);
    }
    if let Some(date) = http_date(download.version.modified_ns) {
        response = response.header(header::LAST_MODIFIED, date);
    }
    if let Want::Part(a, b) = want {
        response = response.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{size}"));
    }
    response
}

/// The body of a download: from memory, or streamed from the store.
fn body(hub: &Arc<Hub>, v: &Visitor, record: Pending, download: Download, want: Want) -> Body {
    let (start, end) = bounds(want, download.size());
    let len = end - start;
    if len == 0 {
        record.finish(hub.history_log(), Ok(0));
        return Body::empty();
    }
    if let Source::Memory(data) = &download.source {
        v.session.sent(len);
        record.finish(hub.history_log(), Ok(len));
        return Body::from(Bytes::from_owner(Arc::clone(data)).slice(start as usize..end as usize));
    }
    let busy = Busy::start(
        &v.session,
        Activity::Downloading,
        download.name.as_str(),
        download.size(),
        start,
    );
    // Hash what goes out when the whole file does and its hash is not known yet.
    let hasher = (download.hash.is_none() && want == Want::Full).then(blake3::Hasher::new);
    let object = match &download.source {
        Source::Stored(StoredFile {
            body: StoreBody::Object(o),
            ..
        }) => o.take_prepared(start, end),
        _ => None,
    };
    Body::from_stream(FileStream {
        object,
        hub: Arc::clone(hub),
        visitor: v.clone(),
        download,
        pos: start,
        end,
        sent: 0,
        hasher,
        record: Some(record),
        spares: Spares::default(),
        _busy: busy,
    })
}

/// A file's bytes as a response body, read chunk by chunk as the client takes them (constant
/// memory), on the task serving the connection: a page-cache read costs less than handing it to
/// another thread. Records the request when it ends, however it ends.
struct FileStream {
    hub: Arc<Hub>,
    visitor: Visitor,
    download: Download,
    pos: u64,
    end: u64,
    sent: u64,
    hasher: Option<blake3::Hasher>,
    record: Option<Pending>,
    spares: Spares,
    /// An object's bytes, as its GET delivers them (a file is read chunk by chunk instead).
    object: Option<futures_core::stream::BoxStream<'static, std::io::Result<Bytes>>>,
    _busy: Busy,
}

/// Buffers a [`FileStream`] has read into, back from the connection once sent.
type Spares = Arc<std::sync::Mutex<Vec<IoBuf>>>;

/// A chunk of a file on its way out; its buffer goes back to the stream's spares when sent.
struct Chunk {
    buf: Option<IoBuf>,
    spares: Spares,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or_default()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let (Some(buf), Ok(mut spares)) = (self.buf.take(), self.spares.lock()) {
            // The connection holds a chunk or two at a time; keep no more than that.
            if spares.len() < 2 {
                spares.push(buf);
            }
        }
    }
}

impl futures_core::Stream for FileStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.pos >= this.end {
            this.completed();
            return Poll::Ready(None);
        }
        if let Some(object) = this.object.as_mut() {
            return match object.as_mut().poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => {
                    this.pos += bytes.len() as u64;
                    this.sent += bytes.len() as u64;
                    this.visitor.session.sent(bytes.len() as u64);
                    Poll::Ready(Some(Ok(bytes)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(this.failed(e)))),
                Poll::Ready(None) => Poll::Ready(Some(Err(this.failed(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the object ended early",
                ))))),
            };
        }
        let want = CHUNK.min((this.end - this.pos) as usize);
        // Page-aligned, so the page-cache copy runs at full speed (see `troca_net::iobuf`), and
        // reused once sent: a fresh buffer per chunk costs a page fault per 4 KiB.
        let spare = this.spares.lock().ok().and_then(|mut s| s.pop());
        let mut buf = spare
            .filter(|b| b.len() >= want)
            .unwrap_or_else(|| IoBuf::new(want));
        let Source::Stored(file) = &this.download.source else {
            unreachable!("files in memory are sent whole")
        };
        let n = match file.read_at(&mut buf[..want], this.pos) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was sent",
            )),
            Ok(n) => Ok(n),
            Err(e) => Err(e),
        };
        match n {
            Ok(n) => {
                if let Some(h) = &mut this.hasher {
                    h.update(&buf[..n]);
                }
                this.pos += n as u64;
                this.sent += n as u64;
                this.visitor.session.sent(n as u64);
                let chunk = Chunk {
                    buf: Some(buf),
                    spares: Arc::clone(&this.spares),
                };
                Poll::Ready(Some(Ok(Bytes::from_owner(chunk).slice(..n))))
            }
            Err(e) => Poll::Ready(Some(Err(this.failed(e)))),
        }
    }
}

impl FileStream {
    /// Reading failed: records why and ends the body there.
    fn failed(&mut self, e: std::io::Error) -> std::io::Error {
        if let Some(r) = self.record.take() {
            r.finish(self.hub.history_log(), Err(format!("internal: {e}")));
        }
        self.pos = self.end;
        self.hasher = None;
        self.object = None;
        e
    }

    /// Everything was handed to the connection: record the download, and remember the hash if
    /// the whole file went out.
    fn completed(&mut self) {
        if let Some(hasher) = self.hasher.take() {
            self.hub
                .remember_hash(&self.download, *hasher.finalize().as_bytes());
        }
        if let Some(r) = self.record.take() {
            r.finish(self.hub.history_log(), Ok(self.sent));
        }
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        // hyper stops polling once it has the `Content-Length` bytes, so a complete download
        // usually ends here rather than with a last `None` from `poll_next`.
        if self.pos >= self.end {
            self.completed();
            return;
        }
        // Dropped before the end: the client went away.
        if let Some(r) = self.record.take() {
            let left = self.end - self.pos;
            r.finish(
                self.hub.history_log(),
                Err(format!("the client left with {left} bytes unsent")),
            );
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PutQuery {
    overwrite: Option<String>,
}

/// The history's note on an upload whose sender gave no hash to check it against.
pub(crate) const UNVERIFIED: &str = "unverified: no X-Troca-Blake3 header";

/// The optional `X-Troca-Blake3` header: the sender's hash of the file, checked end to end.
fn sender_hash(headers: &HeaderMap) -> Result<Option<Hash>, ApiError> {
    match headers.get("x-troca-blake3") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| blake3::Hash::from_hex(s.trim()).ok())
            .map(|h| Some(*h.as_bytes()))
            .ok_or_else(|| {
                HubError::BadRequest("X-Troca-Blake3 is not a BLAKE3 hash in hex".into()).into()
            }),
    }
}

pub(crate) async fn put(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let name = remote_name(&uri)?;
    let force = truthy(&q.overwrite);
    let target = name.clone();
    let (hub, v, headers) = (&hub, &v, &headers);
    recorded(hub, v, headers, "put", target, |caller| async move {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
        let length = match length {
            Some(length) => length,
            None if unsized_body(headers) => {
                return put_unsized(hub, v, headers, name, force, body, &caller).await;
            }
            None => return Err(ApiError::LengthRequired),
        };
        let part = BodyPart::of(headers, length)?;
        let theirs = sender_hash(headers)?;
        let put = Put {
            name: name.clone(),
            size: part.size,
            // Unknown unless the sender says (0): such an upload never resumes.
            source_mtime_ns: part.modified_ns,
            force,
        };
        let resume = troca_hub::service::Resume::WhenTimedAndLarge;
        let mut upload = hub.begin_upload_with(&put, &caller, resume).await?;
        let resumed = upload.offset();
        if part.start > resumed {
            // Stopped, not abandoned: what the hub holds stays for the sender's next try, and
            // the name is let go before the answer (its writer done), so that try finds it free.
            let why = HubError::BadRequest(format!("the body starts past byte {resumed}"));
            drop(upload.interrupted(why).await);
            return Err(ApiError::SendFrom(resumed));
        }
        let _busy = Busy::start(&v.session, Activity::Uploading, &name, part.size, resumed);
        let stall = hub.config().stall_timeout;
        let skip = resumed - part.start;
        if let Err(e) = receive_body(body, &mut upload, v, stall, skip).await {
            return Err(upload.interrupted(e).await.into());
        }
        let verified = theirs.is_some();
        let done = hub
            .finish_upload(upload, theirs, force, &caller)
            .await?
            .done;
        Ok(stored(done, verified, resumed))
    })
    .await
}

/// Whether a body comes without its length (sent chunked) and whole: not a part of a file.
pub(crate) fn unsized_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && !headers.contains_key(header::CONTENT_RANGE)
}

/// A `PUT` whose length is known only at its end: gathered by the hub first
/// ([`troca_hub::spool`]), then stored as any other; it never resumes.
async fn put_unsized(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    name: String,
    force: bool,
    body: Body,
    caller: &Caller,
) -> Result<Done<Response>, ApiError> {
    let theirs = sender_hash(headers)?;
    let modified_ns = BodyPart::of(headers, 0)?.modified_ns;
    let _busy = Busy::start(&v.session, Activity::Uploading, &name, 0, 0);
    let put = Put {
        name,
        size: 0,
        source_mtime_ns: modified_ns,
        force,
    };
    let mut spool = hub.spool(put, caller).await?;
    receive_into(body, &mut spool, v, hub.config().stall_timeout).await?;
    let done = spool.upload(theirs).await?.done;
    let verified = theirs.is_some();
    Ok(stored(done, verified, 0))
}

/// The answer to a stored `PUT`: what was stored, and whether the sender's hash said so.
fn stored(done: troca_proto::msg::PutDone, verified: bool, resumed: u64) -> Done<Response> {
    let answer = (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "name": done.name,
            "size": done.size,
            "blake3": troca_proto::hex(&done.blake3),
            "verified": verified,
            "resumed_from": resumed,
        })),
    );
    Done {
        value: answer.into_response(),
        bytes: done.size,
        note: (!verified).then_some(UNVERIFIED),
    }
}

/// Feeds a request body to a [`Spool`], each chunk as it comes, within the stall timeout.
async fn receive_into(
    mut body: Body,
    spool: &mut Spool,
    v: &Visitor,
    stall: std::time::Duration,
) -> Result<(), HubError> {
    while let Some(data) = next_chunk(&mut body, stall).await? {
        v.session.received(data.len() as u64);
        spool.take(&data).await?;
    }
    Ok(())
}

/// The next bytes of a request body (`None` at its end), within the stall timeout.
async fn next_chunk(
    body: &mut Body,
    stall: std::time::Duration,
) -> Result<Option<Bytes>, HubError> {
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => return Err(HubError::Timeout("upload stalled".into())),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                return Err(HubError::BadRequest(format!("the upload broke off: {e}")))
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// What a `PUT`'s body holds: bytes `start..` of a file of `size` bytes last modified at
/// `modified_ns` (0: unknown, so the upload can never resume), from `Content-Range` and
/// `X-Troca-Modified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BodyPart {
    start: u64,
    size: u64,
    modified_ns: i64,
}

impl BodyPart {
    fn of(headers: &HeaderMap, length: u64) -> Result<Self, ApiError> {
        let bad = |m: &str| ApiError::Hub(HubError::BadRequest(m.to_owned()));
        let modified_ns = match headers.get("x-troca-modified") {
            None => 0,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|ms| *ms > 0)
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or_else(|| bad("X-Troca-Modified is not a time in milliseconds"))?,
        };
        let Some(range) = headers.get(header::CONTENT_RANGE) else {
            return Ok(Self {
                start: 0,
                size: length,
                modified_ns,
            });
        };
        if modified_ns == 0 {
            return Err(bad("a PUT of part of a file needs X-Troca-Modified"));
        }
        let (start, size) = range
            .to_str()
            .ok()
            .and_then(content_range)
            .filter(|(start, size)| start + length == *size)
            .ok_or_else(|| bad("Content-Range must be bytes START-END/SIZE, to the file's end"))?;
        Ok(Self {
            start,
            size,
            modified_ns,
        })
    }
}

/// `bytes START-END/SIZE` with END the last byte: (START, SIZE).
fn content_range(s: &str) -> Option<(u64, u64)> {
    let (range, size) = s.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, size): (u64, u64, u64) =
        (start.parse().ok()?, end.parse().ok()?, size.parse().ok()?);
    (start <= end && end + 1 == size).then_some((start, size))
}

/// Feeds a request body to an upload, each chunk as it comes (constant memory), each step
/// within the stall timeout; the first `skip` bytes (held already) are dropped.
async fn receive_body(
    mut body: Body,
    upload: &mut Incoming,
    v: &Visitor,
    stall: std::time::Duration,
    mut skip: u64,
) -> Result<(), HubError> {
    while let Some(data) = next_chunk(&mut body, stall).await? {
        v.session.received(data.len() as u64);
        let dropped = skip.min(data.len() as u64);
        skip -= dropped;
        upload.take(&data[dropped as usize..]).await?;
    }
    Ok(())
}

/// A request body that fails once the client sends nothing for the stall timeout, so a
/// client that stops mid-upload holds no partial upload open for ever.
pub(crate) struct Patient {
    inner: Body,
    stall: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Patient {
    pub(crate) fn new(inner: Body, stall: std::time::Duration) -> Self {
        Self {
            inner,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
        }
    }
}

impl axum::body::HttpBody for Patient {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + this.stall;
                this.timer.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(std::io::Error::other)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the upload stalled",
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteQuery {
    recursive: Option<String>,
}

pub(crate) async fn delete(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let name = remote_name(&uri)?;
    let hub = &hub;
    let recursive = truthy(&q.recursive);
    recorded(hub, &v, &headers, "rm", name.clone(), |caller| async move {
        hub.remove(&name, recursive, &caller).await?;
        Ok((StatusCode::NO_CONTENT, 0))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, size: u64) -> Result<Want, u64> {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), size).map_err(|e| match e {
            ApiError::BadRange(n) => n,
            other => panic!("{other}"),
        })
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-9", 100), Ok(Want::Part(0, 9)));
        assert_eq!(range("bytes=90-", 100), Ok(Want::Part(90, 99)));
        assert_eq!(range("bytes=-10", 100), Ok(Want::Part(90, 99)));
        assert_eq!(range("bytes=-1000", 100), Ok(Want::Part(0, 99)));
        assert_eq!(range("bytes=50-5000", 100), Ok(Want::Part(50, 99)));
        assert_eq!(range("bytes=100-", 100), Err(100));
        assert_eq!(range("bytes=-0", 100), Err(100));
        assert_eq!(range("bytes=0-", 0), Err(0));
        // Ignored, so the whole file is sent: several ranges, other units, nonsense.
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(Want::Full));
        assert_eq!(range("items=0-1", 100), Ok(Want::Full));
        assert_eq!(range("bytes=9-2", 100), Ok(Want::Full));
        assert_eq!(range("bytes=x-y", 100), Ok(Want::Full));
    }

    #[test]
    fn content_disposition_is_safe_and_exact() {
        let d = disposition("dir/naïve \"quote\".txt", true);
        assert_eq!(
            d.to_str().unwrap(),
            "attachment; filename=\"na_ve _quote_.txt\"; filename*=UTF-8''na%C3%AFve%20%22quote%22%2Etxt"
        );
    }

    #[test]
    fn paths_are_decoded_once() {
        let uri: Uri = "/files/a%252Fb".parse().unwrap();
        assert_eq!(remote_name(&uri).unwrap(), "a%2Fb");
        let uri: Uri = "/files/a%2Fb".parse().unwrap();
        assert_eq!(remote_name(&uri).unwrap(), "a/b");
    }
}
