//! Request bodies that are read to their end, within bounds, after the answer went out.
//!
//! A hub that refuses an upload part-way (a full disk, a quota) answers at once. If it then
//! closed the connection with the client's bytes still unread, the kernel would send a reset,
//! and a client still sending (curl, most scripts, which read only after they sent) would see
//! "connection reset" instead of the answer. So, as web servers do ("lingering close"), the
//! rest of a body its handler let go is read and thrown away for a while, and the client reads
//! the answer; a body that ends in time leaves the connection open for the next request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// The most of a let-go body read and thrown away: past it, the connection is closed.
pub const LINGER_BYTES: u64 = 64 << 20;

/// A request body that, let go before its end, is read to its end on its own task: for at most
/// `within` and [`LINGER_BYTES`].
#[derive(Debug)]
pub(crate) struct Lingering {
    inner: Option<Incoming>,
    /// Whether the client waits for `100 Continue` before it sends the body: then the body,
    /// never asked for, is never sent, and reading it would ask for it.
    waits: bool,
    asked: bool,
    within: Duration,
}

impl Lingering {
    pub(crate) fn new(inner: Incoming, waits: bool, within: Duration) -> Self {
        Self {
            inner: Some(inner),
            waits,
            asked: false,
            within,
        }
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.asked = true;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if inner.is_end_stream() || (self.waits && !self.asked) {
            return;
        }
        // Outside a runtime (never on a connection), the body just goes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(inner, self.within));
        }
    }
}

/// Reads `body` and throws it away, until its end, `within` or [`LINGER_BYTES`].
async fn drain(mut body: Incoming, within: Duration) {
    let read = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
}

/// Whether a request's client waits for `100 Continue` before sending its body.
pub(crate) fn waits_for_continue(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}
