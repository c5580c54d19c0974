//! The metrics listener (`--metrics ADDR` on `serve`, `tracker` and `peer`): `GET /metrics`
//! answers the server's metrics in the OpenMetrics text format, on an address of its own so it
//! can stay on a private network while the other faces are exposed.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Makes the metrics' text when Prometheus asks.
pub type Render = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// The media type of OpenMetrics text.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn metrics(render: Render) -> Response {
    let mut r = render().await.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    render: Render,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(move || metrics(Arc::clone(&render))));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
