//! QR codes for links: `POST /api/qr` answers the text it is sent (a share link) as an SVG
//! image, which the page shows beside the link so that a phone can scan it. The text comes in
//! the body, not the URL, so a link's secret never lands in a proxy's access log.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

/// The longest text made into a code (a link with a long name fits well within it).
pub const MAX_TEXT: usize = 2048;

/// `text` as a QR code in SVG (black on white, with its quiet zone), or `None` when it cannot be
/// one (too long).
pub fn svg_of(text: &str) -> Option<String> {
    if text.len() > MAX_TEXT {
        return None;
    }
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(240, 240)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

/// `POST /api/qr` with the text as the body: `200 image/svg+xml`, or `413` past
/// [`MAX_TEXT`] bytes. It reads nothing of the hub, so it needs no token.
pub(crate) async fn qr(text: String) -> Response {
    match svg_of(&text) {
        Some(svg) => (
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            svg,
        )
            .into_response(),
        None => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a QR code holds at most {MAX_TEXT} bytes of text here"),
        )
            .into_response(),
    }
}
