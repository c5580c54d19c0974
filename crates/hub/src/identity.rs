//! The hub's TLS: its identity ([`Identity`], in `STATE/tls/` or given with `--tls-cert` and
//! `--tls-key`) and the server configurations of its two faces.

use crate::error::HubError;
use std::sync::Arc;
pub use troca_net::identity::{Identity, IdentityError};
use troca_net::tls::ALPN;

/// An identity with the server configurations made from it: the native protocol's and the web
/// face's (which differ by ALPN).
#[derive(Debug)]
pub struct Tls {
    pub identity: Identity,
    pub native: Arc<rustls::ServerConfig>,
    pub http: Arc<rustls::ServerConfig>,
}

impl Tls {
    pub fn new(identity: Identity) -> Result<Tls, HubError> {
        Ok(Tls {
            native: identity.server_config(&[ALPN])?,
            http: identity.server_config(&[b"http/1.1"])?,
            identity,
        })
    }

    /// The TLS a hub runs with in `mode` (`None`: plaintext); its own key lives in `state`.
    pub fn for_mode(
        mode: &crate::config::TlsMode,
        state: &std::path::Path,
    ) -> Result<Option<Arc<Tls>>, HubError> {
        let identity = match mode {
            crate::config::TlsMode::Plaintext => return Ok(None),
            crate::config::TlsMode::OwnKey => Identity::load_or_create(state)?,
            crate::config::TlsMode::Given { cert, key } => Identity::from_files(cert, key, true)?,
        };
        Ok(Some(Arc::new(Tls::new(identity)?)))
    }
}

impl From<IdentityError> for HubError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Io { what, source } => HubError::io(what, source),
            IdentityError::Invalid(why) => HubError::BadRequest(why),
        }
    }
}
