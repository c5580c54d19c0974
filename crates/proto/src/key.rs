//! A hub's key as people see it: the SHA-256 of its public key (the certificate's
//! SubjectPublicKeyInfo, which stays the same when the certificate is renewed with the same
//! key), written in base32 in groups of four (`ABCD-EFGH-…`, 13 groups) so it can be read aloud
//! and compared; and the one-line connect string `troca://HOST:PORT/#KEY` that names a hub and
//! its key together.

use sha2::Digest;
use std::fmt;

/// The fingerprint of a hub's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HubKey(pub [u8; 32]);

/// Why a written key or connect string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a hub key is 52 letters and digits (base32, dashes allowed), not {0:?}")]
    BadKey(String),
    #[error("a connect string looks like troca://HOST:PORT/#KEY, not {0:?}")]
    BadConnectString(String),
}

impl HubKey {
    /// The key of a DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki(spki_der: &[u8]) -> HubKey {
        HubKey(sha2::Sha256::digest(spki_der).into())
    }

    /// The form `curl --pinnedpubkey sha256//…` takes: base64 of the same hash.
    pub fn curl_pin(&self) -> String {
        format!("sha256//{}", data_encoding::BASE64.encode(&self.0))
    }
}

impl fmt::Display for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = data_encoding::BASE32_NOPAD.encode(&self.0);
        let groups: Vec<&str> = text
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
            .collect();
        f.write_str(&groups.join("-"))
    }
}

impl fmt::Debug for HubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HubKey({self})")
    }
}

impl std::str::FromStr for HubKey {
    type Err = KeyError;

    /// Accepts the displayed form in any case, with or without dashes and spaces.
    fn from_str(s: &str) -> Result<HubKey, KeyError> {
        let compact: String = s
            .chars()
            .filter(|c| *c != '-' && !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(compact.as_bytes())
            .map_err(|_| KeyError::BadKey(s.to_owned()))?;
        let hash: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadKey(s.to_owned()))?;
        Ok(HubKey(hash))
    }
}

/// A hub's address and, when given, its key: `troca://HOST:PORT/#KEY` (the port and the key may
/// be left out), or a bare `HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    pub address: String,
    pub key: Option<HubKey>,
}

impl ConnectString {
    pub fn parse(s: &str) -> Result<ConnectString, KeyError> {
        let s = s.trim();
        let Some(rest) = s.strip_prefix("troca://") else {
            return Ok(ConnectString {
                address: s.to_owned(),
                key: None,
            });
        };
        let bad = || KeyError::BadConnectString(s.to_owned());
        let (address, key) = match rest.split_once('#') {
            Some((a, k)) => (a, Some(k.parse::<HubKey>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let address = address.trim_end_matches('/');
        if address.is_empty() || address.contains('/') {
            return Err(bad());
        }
        Ok(ConnectString {
            address: address.to_owned(),
            key,
        })
    }
}

impl fmt::Display for ConnectString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(k) => write!(f, "troca://{}/#{k}", self.address),
            None => write!(f, "troca://{}/", self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_reads_aloud_in_groups_and_back() {
        let k = HubKey::from_spki(b"some public key");
        let shown = k.to_string();
        assert_eq!(shown.len(), 52 + 12, "{shown}");
        assert!(shown.split('-').all(|g| g.len() == 4), "{shown}");
        assert_eq!(shown.parse::<HubKey>().unwrap(), k);
        assert_eq!(
            shown
                .to_lowercase()
                .replace('-', " ")
                .parse::<HubKey>()
                .unwrap(),
            k
        );
        assert!("ABCD-EFGH".parse::<HubKey>().is_err());
        assert!(k.curl_pin().starts_with("sha256//"));
    }

    #[test]
    fn connect_strings_name_a_hub_and_its_key() {
        let k = HubKey::from_spki(b"k");
        let c = ConnectString::parse(&format!("troca://192.168.1.20:13370/#{k}")).unwrap();
        assert_eq!(c.address, "192.168.1.20:13370");
        assert_eq!(c.key, Some(k));
        assert_eq!(ConnectString::parse(&c.to_string()).unwrap(), c);
        let bare = ConnectString::parse("hub.lan").unwrap();
        assert_eq!((bare.address.as_str(), bare.key), ("hub.lan", None));
        let v6 = ConnectString::parse("troca://[::1]:13370/").unwrap();
        assert_eq!(v6.address, "[::1]:13370");
        assert!(ConnectString::parse("troca://h/#nope").is_err());
        assert!(ConnectString::parse("troca://h/x/#").is_err());
    }

    proptest! {
        #[test]
        fn every_key_round_trips_through_its_text(bytes in any::<[u8; 32]>()) {
            let k = HubKey(bytes);
            prop_assert_eq!(k.to_string().parse::<HubKey>().unwrap(), k);
        }

        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in ".{0,80}") {
            let _ = s.parse::<HubKey>();
            let _ = ConnectString::parse(&s);
        }
    }
}
