//! The TLS 1.3 record layer (RFC 8446 §5) once the handshake is over: application records
//! sealed and opened in place, in the connection's own buffer, with the keys rustls agreed.
//! No I/O and no clock here; [`crate::sealed`] moves the bytes.
//!
//! Why not leave records to rustls: its buffered API copies every record received into its
//! own buffer, decrypts it there, copies the plaintext into an allocated queue and then into
//! the caller's buffer; this layer decrypts where the bytes landed and copies once.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// The record header: type, legacy version, length.
pub const HEADER: usize = 5;
/// The AEAD tag after each record's ciphertext (all TLS 1.3 suites).
pub const TAG: usize = 16;
/// The most plaintext a record carries.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The most ciphertext a record may carry (plaintext, its type byte, padding and tag).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// The longest record on the wire.
pub const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT;
/// What sealing adds to a record's plaintext: header, inner type byte, tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;

/// The outer type of every protected record, and the inner type of application data.
const APPLICATION_DATA: u8 = 23;

/// What a record carries, once opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alert,
    Handshake,
    ApplicationData,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Alert => 21,
            Kind::Handshake => 22,
            Kind::ApplicationData => APPLICATION_DATA,
        }
    }
}

/// Why a record, or the bytes after the handshake, are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("a TLS record of {0} bytes is over the limit")]
    Overflow(usize),
    #[error("an unprotected TLS record (type {0}) after the handshake")]
    NotProtected(u8),
    #[error("a TLS record failed authentication")]
    Authentication,
    #[error("a TLS record of unknown inner type {0}")]
    UnknownType(u8),
    #[error("a TLS handshake message of {0} bytes after the handshake is over the limit")]
    HandshakeTooLong(usize),
    #[error("an unexpected TLS handshake message (type {0}) after the handshake")]
    UnexpectedHandshake(u8),
    #[error("the cipher suite is not one this side seals records with")]
    UnknownSuite,
}

/// The length of the record at the start of `bytes`, once all of it has arrived (`None`
/// before: an incomplete record is a normal state).
pub fn whole(bytes: &[u8]) -> Result<Option<usize>, RecordError> {
    let Some(header) = bytes.get(..HEADER) else {
        return Ok(None);
    };
    if header[0] != APPLICATION_DATA {
        return Err(RecordError::NotProtected(header[0]));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(RecordError::Overflow(len));
    }
    Ok((bytes.len() >= HEADER + len).then_some(HEADER + len))
}

/// One direction's key, its IV and the number of the next record.
pub struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    seq: u64,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key and IV are secrets: only the algorithm and the count are shown.
        f.debug_struct("Keys")
            .field("algorithm", self.key.algorithm())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A record opened in place: its type and where its content lies within the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub kind: Kind,
    pub content: std::ops::Range<usize>,
}

impl Keys {
    /// The keys rustls derived, from record number `seq` on.
    pub fn new(secrets: &ConnectionTrafficSecrets, seq: u64) -> Result<Self, RecordError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::UnknownSuite),
        };
        let key =
            UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::UnknownSuite)?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| RecordError::UnknownSuite)?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The number of the next record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The per-record nonce (RFC 8446 §5.3), and the count moved on: a nonce is never reused.
    fn next_nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }

    /// Seals a record of `kind` whose `len` bytes of content already sit at
    /// `buf[HEADER..HEADER + len]`: writes the header, the inner type and the tag around them.
    /// `buf` must hold `len + OVERHEAD` bytes, and `len` be at most [`MAX_PLAINTEXT`]. Returns
    /// the record's length.
    pub fn seal(&mut self, kind: Kind, buf: &mut [u8], len: usize) -> usize {
        debug_assert!(len <= MAX_PLAINTEXT);
        buf[HEADER + len] = kind.byte();
        self.seal_inner(buf, len + 1)
    }

    /// Seals the inner plaintext (content, type, any padding) at `buf[HEADER..HEADER + len]`.
    fn seal_inner(&mut self, buf: &mut [u8], len: usize) -> usize {
        let sealed = len + TAG;
        let length = u16::try_from(sealed).expect("a record's length fits its header");
        let [hi, lo] = length.to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        buf[..HEADER].copy_from_slice(&header);
        let nonce = self.next_nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut buf[HEADER..HEADER + len])
            .expect("a record is far below the AEAD's length limit");
        buf[HEADER + len..HEADER + sealed].copy_from_slice(tag.as_ref());
        HEADER + sealed
    }

    /// Opens one whole record (as measured by [`whole`]) in place.
    pub fn open(&mut self, record: &mut [u8]) -> Result<Opened, RecordError> {
        let (header, body) = record.split_at_mut(HEADER);
        let header: [u8; HEADER] = (&*header).try_into().expect("split at HEADER");
        if body.len() < TAG + 1 {
            // Too short to hold a tag and an inner type: no key could have sealed it.
            self.seq += 1;
            return Err(RecordError::Authentication);
        }
        let nonce = self.next_nonce();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), body)
            .map_err(|_| RecordError::Authentication)?;
        // The inner type is the last byte that is not padding.
        let end = plain
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(RecordError::UnknownType(0))?;
        let kind = match plain[end] {
            21 => Kind::Alert,
            22 => Kind::Handshake,
            APPLICATION_DATA => Kind::ApplicationData,
            other => return Err(RecordError::UnknownType(other)),
        };
        Ok(Opened {
            kind,
            content: HEADER..HEADER + end,
        })
    }
}

/// A handshake message after the handshake: a session ticket, or a key update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostHandshake {
    NewSessionTicket(Vec<u8>),
    /// A key update; `true` if the peer asks for one back.
    KeyUpdate {
        requested: bool,
    },
}

/// The longest handshake message taken after the handshake (session tickets are small).
pub const MAX_POST_HANDSHAKE: usize = 64 * 1024;

/// Handshake messages, joined across records.
#[derive(Debug, Default)]
pub struct Joiner {
    pending: Vec<u8>,
}

impl Joiner {
    /// Adds a handshake record's content.
    pub fn push(&mut self, content: &[u8]) -> Result<(), RecordError> {
        if self.pending.len() + content.len() > MAX_POST_HANDSHAKE + 4 {
            return Err(RecordError::HandshakeTooLong(
                self.pending.len() + content.len(),
            ));
        }
        self.pending.extend_from_slice(content);
        Ok(())
    }

    /// Whether part of a message is still waiting for the rest.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<PostHandshake>, RecordError> {
        let Some(&[kind, a, b, c]) = self.pending.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        if len > MAX_POST_HANDSHAKE {
            return Err(RecordError::HandshakeTooLong(len));
        }
        let Some(body) = self.pending.get(4..4 + len) else {
            return Ok(None);
        };
        let message = match (kind, body) {
            (4, body) => PostHandshake::NewSessionTicket(body.to_vec()),
            (24, [0]) => PostHandshake::KeyUpdate { requested: false },
            (24, [1]) => PostHandshake::KeyUpdate { requested: true },
            (other, _) => return Err(RecordError::UnexpectedHandshake(other)),
        };
        self.pending.drain(..4 + len);
        Ok(Some(message))
    }
}

/// A key update message asking for none back (RFC 8446 §4.6.3).
pub const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];
/// A close_notify alert.
pub const CLOSE_NOTIFY: [u8; 2] = [1, 0];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secrets(byte: u8, which: u8) -> ConnectionTrafficSecrets {
        let iv = rustls::crypto::cipher::Iv::from([byte ^ 0x5a; 12]);
        // (AES-128 keys cannot be made outside rustls; the handshake tests cover the suite.)
        match which % 2 {
            0 => ConnectionTrafficSecrets::Aes256Gcm {
                key: [byte; 32].into(),
                iv,
            },
            _ => ConnectionTrafficSecrets::Chacha20Poly1305 {
                key: [byte; 32].into(),
                iv,
            },
        }
    }

    fn sealed(keys: &mut Keys, kind: Kind, content: &[u8], padding: usize) -> Vec<u8> {
        let mut buf = vec![0u8; content.len() + OVERHEAD + padding];
        buf[HEADER..HEADER + content.len()].copy_from_slice(content);
        let n = keys.seal(kind, &mut buf, content.len());
        buf.truncate(n);
        buf
    }

    proptest! {
        /// What one side seals, the other opens, record after record, in every suite.
        #[test]
        fn sealed_records_open_to_what_went_in(
            key in any::<u8>(),
            suite in 0u8..2,
            start in any::<u32>(),
            records in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..2000), 0u8..3),
                1..8,
            ),
        ) {
            let mut tx = Keys::new(&secrets(key, suite), u64::from(start)).unwrap();
            let mut rx = Keys::new(&secrets(key, suite), u64::from(start)).unwrap();
            let mut stream = Vec::new();
            for (content, kind) in &records {
                let kind = [Kind::Alert, Kind::Handshake, Kind::ApplicationData][usize::from(*kind)];
                stream.extend(sealed(&mut tx, kind, content, 0));
            }
            let mut at = 0;
            for (content, kind) in &records {
                let kind = [Kind::Alert, Kind::Handshake, Kind::ApplicationData][usize::from(*kind)];
                // Every prefix short of the whole record is incomplete, not an error.
                let len = whole(&stream[at..]).unwrap().unwrap();
                for cut in [0, 1, HEADER - 1, HEADER, len - 1] {
                    prop_assert_eq!(whole(&stream[at..at + cut]).unwrap(), None);
                }
                let opened = rx.open(&mut stream[at..at + len]).unwrap();
                prop_assert_eq!(opened.kind, kind);
                prop_assert_eq!(&stream[at + opened.content.start..at + opened.content.end], &content[..]);
                at += len;
            }
            prop_assert_eq!(at, stream.len());
        }

        /// Any byte changed, or a record taken out of order, fails to open.
        #[test]
        fn a_changed_or_reordered_record_fails_authentication(
            content in prop::collection::vec(any::<u8>(), 1..3000),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut tx = Keys::new(&secrets(9, 0), 0).unwrap();
            let first = sealed(&mut tx, Kind::ApplicationData, &content, 0);
            let second = sealed(&mut tx, Kind::ApplicationData, &content, 0);
            let mut changed = first.clone();
            let i = HEADER + flip.index(changed.len() - HEADER);
            changed[i] ^= 1 << bit;
            let mut rx = Keys::new(&secrets(9, 0), 0).unwrap();
            prop_assert_eq!(rx.open(&mut changed), Err(RecordError::Authentication));
            let mut rx = Keys::new(&secrets(9, 0), 0).unwrap();
            let mut out_of_order = second;
            prop_assert_eq!(rx.open(&mut out_of_order), Err(RecordError::Authentication));
        }

        /// Handshake messages come out whole however the bytes are split into records.
        #[test]
        fn handshake_messages_join_across_records(
            ticket in prop::collection::vec(any::<u8>(), 0..600),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut bytes = vec![4u8, 0, 0, 0];
            bytes[1..4].copy_from_slice(&(ticket.len() as u32).to_be_bytes()[1..]);
            bytes.extend(&ticket);
            bytes.extend(KEY_UPDATE);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len())).collect();
            at.push(0);
            at.push(bytes.len());
            at.sort_unstable();
            let mut joiner = Joiner::default();
            let mut got = Vec::new();
            for pair in at.windows(2) {
                joiner.push(&bytes[pair[0]..pair[1]]).unwrap();
                while let Some(message) = joiner.next_message().unwrap() {
                    got.push(message);
                }
            }
            prop_assert_eq!(got, vec![
                PostHandshake::NewSessionTicket(ticket),
                PostHandshake::KeyUpdate { requested: false },
            ]);
            prop_assert!(joiner.is_empty());
        }
    }

    /// Padding after the inner type is taken off; a record of padding alone is refused.
    #[test]
    fn padding_is_removed_and_a_record_of_only_padding_is_refused() {
        let mut tx = Keys::new(&secrets(1, 0), 0).unwrap();
        let mut rx = Keys::new(&secrets(1, 0), 0).unwrap();
        let mut buf = vec![0u8; 64];
        buf[HEADER..HEADER + 3].copy_from_slice(b"hi\x17");
        let n = tx.seal_inner(&mut buf, 9);
        let opened = rx.open(&mut buf[..n]).unwrap();
        assert_eq!(opened.kind, Kind::ApplicationData);
        assert_eq!(&buf[opened.content], b"hi");
        let mut zeros = vec![0u8; 64];
        let n = tx.seal_inner(&mut zeros, 6);
        assert_eq!(rx.open(&mut zeros[..n]), Err(RecordError::UnknownType(0)));
    }

    /// Records that cannot be protected ones are refused before any key is used.
    #[test]
    fn unprotected_and_oversized_records_are_refused() {
        assert_eq!(
            whole(&[22, 3, 3, 0, 10]),
            Err(RecordError::NotProtected(22))
        );
        let [hi, lo] = ((MAX_CIPHERTEXT + 1) as u16).to_be_bytes();
        assert_eq!(
            whole(&[23, 3, 3, hi, lo]),
            Err(RecordError::Overflow(MAX_CIPHERTEXT + 1))
        );
        let mut short = [23, 3, 3, 0, 3, 1, 2, 3];
        let mut rx = Keys::new(&secrets(1, 0), 0).unwrap();
        assert_eq!(rx.open(&mut short), Err(RecordError::Authentication));
    }
}
