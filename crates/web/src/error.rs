//! HTTP answers for the hub's errors: the status a browser or `curl` understands, and a JSON body
//! with the same code and message the native protocol would send.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use troca_hub::HubError;
use troca_proto::ErrorCode;

/// A refused request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A hub error answered through a share link: the same, without the hints about tokens
    /// and `?overwrite=1`, which a link's visitor cannot use.
    #[error(transparent)]
    Linked(HubError),
    #[error("an upload needs a Content-Length")]
    LengthRequired,
    #[error("requested range not satisfiable (the file has {0} bytes)")]
    BadRange(u64),
    /// A resumed upload's body starts past what the hub holds of the file.
    #[error("the hub holds the first {0} bytes of this file: send the rest from there")]
    SendFrom(u64),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        let hub = match self {
            ApiError::LengthRequired => return StatusCode::LENGTH_REQUIRED,
            ApiError::BadRange(_) => return StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::SendFrom(_) => return StatusCode::CONFLICT,
            ApiError::Hub(e) | ApiError::Linked(e) => e,
        };
        match hub.code() {
            ErrorCode::BadRequest | ErrorCode::InvalidName | ErrorCode::UnsupportedVersion => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists
            | ErrorCode::IsAFolder
            | ErrorCode::NotEmpty
            | ErrorCode::TakenOver => StatusCode::CONFLICT,
            ErrorCode::Busy => match hub {
                HubError::UploadInProgress(_) => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            ErrorCode::Integrity => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Locked => StatusCode::LOCKED,
            ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
            // A token's quota is room it may keep, which waiting does not bring (RFC 4918).
            ErrorCode::Quota if matches!(hub, HubError::TokenQuota(_)) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            ErrorCode::Quota => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::Hidden => StatusCode::FORBIDDEN,
            ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Internal | ErrorCode::Deferred | ErrorCode::Other(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The protocol's code, as text (`not_found`, …).
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Hub(e) | ApiError::Linked(e) => e.code(),
            ApiError::LengthRequired => ErrorCode::BadRequest,
            ApiError::BadRange(_) | ApiError::SendFrom(_) => ErrorCode::BadRequest,
        }
    }

    /// The message for a web client: the hub's, with what to do in HTTP terms.
    pub fn message(&self) -> String {
        if let ApiError::Linked(_) = self {
            return self.to_string();
        }
        let hint = match self.code() {
            ErrorCode::AlreadyExists => "; add ?overwrite=1 to replace it",
            ErrorCode::Unauthorized => "; send it as Authorization: Bearer TOKEN",
            ErrorCode::Forbidden | ErrorCode::Quota => {
                " (a token is sent as Authorization: Bearer TOKEN)"
            }
            _ => "",
        };
        format!("{self}{hint}")
    }

    /// How the history records it.
    pub fn record_text(&self) -> String {
        format!("{}: {self}", self.code())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = serde_json::json!({
            "error": self.code().to_string(),
            "message": self.message(),
        });
        let retry_after = match &self {
            ApiError::Hub(HubError::Quota {
                retry_after: Some(wait),
                ..
            }) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            _ => None,
        };
        if let Some(secs) = retry_after {
            body["retry_after"] = secs.into();
        }
        if let ApiError::SendFrom(offset) = self {
            body["offset"] = offset.into();
        }
        let mut r = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
        }
        if let Some(secs) = retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        if let ApiError::SendFrom(offset) = self {
            r.headers_mut()
                .insert("x-troca-offset", header::HeaderValue::from(offset));
        }
        if let ApiError::BadRange(size) = self {
            if let Ok(v) = format!("bytes */{size}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        r
    }
}
