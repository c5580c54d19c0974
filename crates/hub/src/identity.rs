//! The hub's identity for TLS: a key pair and a self-signed certificate made on first start and
//! kept in the state folder (readable by the hub's user only), or a certificate and key given
//! by the operator (`--tls-cert`, `--tls-key`). Clients pin the key's fingerprint
//! ([`troca_proto::key::HubKey`]), so a LAN needs no certificate authority.

use crate::error::HubError;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use troca_proto::key::HubKey;

/// The ALPN name of the native protocol over TLS.
pub const ALPN: &[u8] = b"troca/1";

/// A certificate chain and its key, with the key's fingerprint.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub fingerprint: HubKey,
    /// Whether the certificate came from the operator (and so may be CA-issued).
    pub given: bool,
}

impl Identity {
    /// The hub's own identity in `STATE/tls/`, made on first start.
    pub fn load_or_create(state: &Path) -> Result<Identity, HubError> {
        let dir = state.join("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() || !key.exists() {
            create(&dir, &cert, &key)?;
        }
        Identity::from_files(&cert, &key, false)
    }

    /// An identity from PEM files (a certificate chain, leaf first, and its private key).
    pub fn from_files(cert: &Path, key: &Path, given: bool) -> Result<Identity, HubError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| HubError::io(format!("cannot read {}", p.display()), e))
        };
        let bad = |p: &Path, what: &str| HubError::BadRequest(format!("{}: {what}", p.display()));
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut read(cert)?.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|_| bad(cert, "not a PEM certificate"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| bad(cert, "holds no certificate"))?;
        let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
            .map_err(|_| bad(key, "not a PEM private key"))?
            .ok_or_else(|| bad(key, "holds no private key"))?;
        let fingerprint =
            fingerprint_of(leaf).ok_or_else(|| bad(cert, "not an X.509 certificate"))?;
        Ok(Identity {
            chain,
            key: key_der,
            fingerprint,
            given,
        })
    }

    /// The TLS 1.3 server configuration, offering the native protocol's ALPN.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, HubError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HubError::BadRequest(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                HubError::BadRequest(format!("the TLS key does not fit its certificate: {e}"))
            })?;
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

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
}

/// The fingerprint of a certificate's public key (what clients pin and `curl --pinnedpubkey`
/// checks): the same function the clients use.
pub use troca_net::tls::fingerprint_of;

/// Makes a P-256 key and a self-signed certificate for it, private to the hub's user.
fn create(dir: &Path, cert: &Path, key: &Path) -> Result<(), HubError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let failed = |e: rcgen::Error| HubError::BadRequest(format!("cannot make a TLS key: {e}"));
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["troca-hub".to_owned(), "localhost".to_owned()])
            .map_err(failed)?;
    // Browsers cap a leaf's life at 397 days; clients pin the key, which renewing keeps.
    params.not_after = params.not_before + std::time::Duration::from_secs(397 * 24 * 3600);
    let certificate = params.self_signed(&pair).map_err(failed)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| HubError::io(format!("cannot create {}", dir.display()), e))?;
    let write = |path: &PathBuf, text: &str| -> Result<(), HubError> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| HubError::io(format!("cannot write {}", tmp.display()), e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| HubError::io(format!("cannot write {}", path.display()), e))
    };
    write(&key.to_path_buf(), &pair.serialize_pem())?;
    write(&cert.to_path_buf(), &certificate.pem())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_identity_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert!(first.server_config(&[ALPN]).is_ok());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(other.path()).unwrap().fingerprint,
            first.fingerprint
        );
    }
}
