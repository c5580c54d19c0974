//! A TLS identity: a key pair and a self-signed certificate made on first start and kept in a
//! state folder (readable by its owner only), or a certificate and key given by the operator.
//! Hubs and peers each have one; clients pin the key's fingerprint
//! ([`troca_proto::key::HubKey`]), so a LAN needs no certificate authority.

use crate::tls::fingerprint_of;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use troca_proto::key::HubKey;

/// Why an identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> IdentityError {
    move |source| IdentityError::Io { what, source }
}

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
    /// The identity kept in `STATE/tls/`, made on first start.
    pub fn load_or_create(state: &Path) -> Result<Identity, IdentityError> {
        let dir = state.join("tls");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if !cert.exists() || !key.exists() {
            create(state, &dir)?;
        }
        Identity::from_files(&cert, &key, false)
    }

    /// An identity from PEM files (a certificate chain, leaf first, and its private key).
    pub fn from_files(cert: &Path, key: &Path, given: bool) -> Result<Identity, IdentityError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(io_error(format!("cannot read {}", p.display())));
        let bad = |p: &Path, what: &str| IdentityError::Invalid(format!("{}: {what}", p.display()));
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
    pub fn server_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| IdentityError::Invalid(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                IdentityError::Invalid(format!("the TLS key does not fit its certificate: {e}"))
            })?;
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        // After the handshake the native protocol seals its own records (`sealed`).
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}

/// Makes a P-256 key and a self-signed certificate for it in `dir`, private to the owner.
/// Both files are written in a new folder that is then renamed into place, so processes
/// starting at once (a user's peers) end up sharing one whole identity.
fn create(state: &Path, dir: &Path) -> Result<(), IdentityError> {
    use std::os::unix::fs::DirBuilderExt;
    let failed = |e: rcgen::Error| IdentityError::Invalid(format!("cannot make a TLS key: {e}"));
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["troca-hub".to_owned(), "localhost".to_owned()])
            .map_err(failed)?;
    // Browsers cap a leaf's life at 397 days; clients pin the key, which renewing keeps.
    params.not_after = params.not_before + std::time::Duration::from_secs(397 * 24 * 3600);
    let certificate = params.self_signed(&pair).map_err(failed)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| IdentityError::Invalid(e.to_string()))?;
    let fresh = state.join(format!("tls.new-{}", u64::from_le_bytes(nonce)));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&fresh)
        .map_err(io_error(format!("cannot create {}", fresh.display())))?;
    let written = write_private(&fresh.join("key.pem"), &pair.serialize_pem())
        .and_then(|()| write_private(&fresh.join("cert.pem"), &certificate.pem()));
    let placed = written.and_then(|()| place(&fresh, dir));
    let _ = std::fs::remove_dir_all(&fresh);
    placed
}

/// Renames the folder `fresh` to `dir`, unless another process placed a whole one first. A
/// folder left half-written (by an older version or a crash) is replaced.
fn place(fresh: &Path, dir: &Path) -> Result<(), IdentityError> {
    let whole = |d: &Path| d.join("cert.pem").exists() && d.join("key.pem").exists();
    let rename = || {
        std::fs::rename(fresh, dir).map_err(io_error(format!("cannot create {}", dir.display())))
    };
    match rename() {
        Ok(()) => Ok(()),
        Err(_) if whole(dir) => Ok(()),
        Err(_) => {
            std::fs::remove_dir_all(dir)
                .map_err(io_error(format!("cannot replace {}", dir.display())))?;
            rename().or_else(|e| if whole(dir) { Ok(()) } else { Err(e) })
        }
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(format!("cannot write {}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_error(format!("cannot write {}", path.display())))
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
        assert!(first.server_config(&[crate::tls::ALPN]).is_ok());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Identity::load_or_create(other.path()).unwrap().fingerprint,
            first.fingerprint
        );
    }

    #[test]
    fn processes_starting_at_once_end_up_with_one_identity() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let keys: Vec<HubKey> = std::thread::scope(|s| {
            let started: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Identity::load_or_create(&state).unwrap().fingerprint))
                .collect();
            started.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        let left: Vec<_> = std::fs::read_dir(&state).unwrap().collect();
        assert_eq!(left.len(), 1, "only tls/ is left: {left:?}");
    }
}
