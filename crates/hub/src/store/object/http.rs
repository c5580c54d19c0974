//! The object store's HTTP client: reqwest, limited by time without progress rather than by a
//! request's whole time. A part sent over a slow link may take minutes and is fine while its
//! bytes keep leaving; a store that stops answering (a node cut off from its peers, a gateway
//! hung) fails the request after `idle`, and the S3 client's retries or the caller's take over.
//! reqwest's own `read_timeout` would not do: it also runs while a request's body is still being
//! sent. A request's bytes count as moved once the kernel takes them, so its last socket buffer's
//! worth (at most `net.ipv4.tcp_wmem`'s largest size, 4 MiB by default) must reach the store
//! within `idle`: far inside the default limit on any link a store is used over.

use async_trait::async_trait;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody,
    HttpResponse, HttpResponseBody, HttpService,
};
use object_store::ClientOptions;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The most of a request's body handed on at once, so a large part shows progress as it goes
/// rather than once at its end (the pieces share the part's memory).
const SLICE: usize = 64 << 10;

/// Makes the S3 client's HTTP client: connections within `connect`, requests failed after
/// `idle` without a byte moving either way.
#[derive(Debug, Clone, Copy)]
pub struct Connector {
    pub connect: Duration,
    pub idle: Duration,
}

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .connect_timeout(self.connect)
            // As object_store's own client: HTTP/2's flow control slows large transfers.
            .http1_only()
            .tcp_nodelay(true)
            .user_agent(concat!("troca/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(Watched {
            client,
            idle: self.idle,
        }))
    }
}

#[derive(Debug)]
struct Watched {
    client: reqwest::Client,
    idle: Duration,
}

#[async_trait]
impl HttpService for Watched {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = parts
            .uri
            .to_string()
            .parse()
            .map_err(|e| HttpError::new(HttpErrorKind::Request, e))?;
        let mut request = reqwest::Request::new(parts.method, url);
        *request.headers_mut() = parts.headers;
        let progress = Arc::new(Progress::new());
        *request.body_mut() = Some(reqwest::Body::wrap(Sent {
            body,
            left: Bytes::new(),
            progress: Arc::clone(&progress),
        }));
        let response = self.client.execute(request);
        let response = tokio::select! {
            r = response => r.map_err(reqwest_err)?,
            () = progress.stalled(self.idle) => return Err(stalled(self.idle)),
        };
        let (parts, body) = http::Response::from(response).into_parts();
        let body = HttpResponseBody::new(Received::new(body, self.idle));
        Ok(HttpResponse::from_parts(parts, body))
    }
}

/// When a request last moved a byte, in milliseconds from its start.
struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Returns once `idle` has passed without a mark.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let due = self.start + last + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// A request's body, handed on a slice at a time, each slice marking progress.
struct Sent {
    body: HttpRequestBody,
    left: Bytes,
    progress: Arc<Progress>,
}

impl Body for Sent {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.progress.mark();
        if self.left.is_empty() {
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.left = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
        let n = self.left.len().min(SLICE);
        Poll::Ready(Some(Ok(Frame::data(self.left.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let left = self.left.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + left);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + left);
        }
        hint
    }
}

/// A response's body: a wait for the store longer than `idle` fails it. Only waits count, so
/// a reader that takes its time is never cut off by this.
struct Received {
    body: reqwest::Body,
    idle: Duration,
    /// The end of the current wait, reset rather than remade at each (a download waits many
    /// times a second).
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl Received {
    fn new(body: reqwest::Body, idle: Duration) -> Self {
        Self {
            body,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
        }
    }
}

impl Body for Received {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            self.waiting = false;
            return Poll::Ready(frame.map(|r| r.map_err(reqwest_err)));
        }
        if !self.waiting {
            self.waiting = true;
            let due = Instant::now() + self.idle;
            self.timer.as_mut().reset(due);
        }
        ready!(self.timer.as_mut().poll(cx));
        self.waiting = false;
        Poll::Ready(Some(Err(stalled(self.idle))))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn stalled(idle: Duration) -> HttpError {
    let e = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the store moved no byte for {} s", idle.as_secs_f64()),
    );
    HttpError::new(HttpErrorKind::Timeout, e)
}

/// A reqwest error, with the kind the S3 client decides retries by (its own mapping is private).
fn reqwest_err(e: reqwest::Error) -> HttpError {
    let kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else {
        io_kind(&e).unwrap_or(HttpErrorKind::Unknown)
    };
    HttpError::new(kind, e)
}

/// The kind of the I/O error or hyper error under `e`, if any says.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<HttpErrorKind> {
    let mut source = e.source();
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_closed() || h.is_incomplete_message() || h.is_body_write_aborted() {
                return Some(HttpErrorKind::Request);
            }
            if h.is_timeout() {
                return Some(HttpErrorKind::Timeout);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::TimedOut => return Some(HttpErrorKind::Timeout),
                K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof => {
                    return Some(HttpErrorKind::Interrupted)
                }
                _ => {}
            }
        }
        source = e.source();
    }
    None
}
