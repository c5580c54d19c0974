//! TLS for clients: the hub is trusted by its key's fingerprint (pinned, or remembered in the
//! user's known hubs), not by a certificate authority, the way SSH trusts hosts. The handshake
//! completes only if the key matches; nothing (no token, no owner key) is sent before.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};
use troca_proto::key::HubKey;

/// The ALPN name of the native protocol over TLS.
pub const ALPN: &[u8] = b"troca/1";

/// The fingerprint of a certificate's public key (SHA-256 of its SubjectPublicKeyInfo).
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Option<HubKey> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(HubKey::from_spki(parsed.subject_public_key_info().as_ref()))
}

/// How a client trusts the hub it connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// TLS, and the hub's key must be this one. `None`: no key is known yet, so the handshake
    /// fails with [`crate::ClientError::UnknownHubKey`] saying which key the hub showed.
    Key(Option<HubKey>),
    /// No TLS at all (only when the hub is run with `--plaintext` too).
    #[default]
    Plaintext,
}

/// Accepts the hub's certificate only if its key is the expected one, and remembers the key
/// it saw (for the message when it is not).
#[derive(Debug)]
pub(crate) struct PinnedKey {
    expected: Option<HubKey>,
    pub(crate) seen: Arc<Mutex<Option<HubKey>>>,
    provider: Arc<CryptoProvider>,
    /// Certificate authorities that vouch for a hub with no pinned key (a `--tls-cert` hub).
    authorities: Option<Arc<dyn ServerCertVerifier>>,
}

impl ServerCertVerifier for PinnedKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let key = fingerprint_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        *self.seen.lock().expect("seen key poisoned") = Some(key);
        match (self.expected, &self.authorities) {
            (Some(k), _) if k == key => Ok(ServerCertVerified::assertion()),
            // No key pinned: a certificate an authority vouches for, for this host name.
            (None, Some(authorities)) => authorities
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .map_err(|_| {
                    rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    )
                }),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.3 client configuration that trusts only `expected`; the verifier is returned too,
/// to read the key the hub showed.
pub(crate) fn client_config(
    expected: Option<HubKey>,
    roots: Option<Arc<rustls::RootCertStore>>,
) -> Result<(Arc<rustls::ClientConfig>, Arc<PinnedKey>), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let authorities = match roots.filter(|r| !r.is_empty()) {
        Some(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots,
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?
                as Arc<dyn ServerCertVerifier>,
        ),
        None => None,
    };
    let verifier = Arc::new(PinnedKey {
        expected,
        seen: Arc::default(),
        provider: Arc::clone(&provider),
        authorities,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    // After the handshake records are sealed here, not by rustls (`sealed`).
    config.enable_secret_extraction = true;
    Ok((Arc::new(config), verifier))
}

/// A TLS connection to a swarm peer that must show `key` (the one it registered with the
/// tracker). A peer showing another key is refused before anything is sent.
pub async fn connect_peer(
    tcp: tokio::net::TcpStream,
    key: HubKey,
) -> std::io::Result<crate::stream::Stream> {
    let (config, verifier) = client_config(Some(key), None).map_err(std::io::Error::other)?;
    let name = ServerName::try_from("troca-peer").expect("a valid name");
    match crate::sealed::connect(tcp, config, name).await {
        Ok(tls) => Ok(crate::stream::Stream::Tls(Box::new(tls))),
        Err(e) => Err(match *verifier.seen.lock().expect("seen key poisoned") {
            Some(seen) if seen != key => std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("shows key {seen}, not the {key} it registered"),
            ),
            _ => std::io::Error::new(e.kind(), format!("TLS handshake failed ({e})")),
        }),
    }
}
