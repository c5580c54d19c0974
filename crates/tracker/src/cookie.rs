//! Stateless connection cookies, as BitTorrent's BEP 15 connection ids: a keyed BLAKE3 hash of the
//! source address and a two-minute time bucket. A cookie proves the address receives packets
//! there; it is accepted during its bucket and the next, so it lives two to four minutes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

const BUCKET: Duration = Duration::from_secs(120);
/// Bit 62 of a tagged id carries its bucket's parity.
const PARITY: u64 = 1 << 62;

#[derive(Debug)]
pub(crate) struct Cookies {
    key: [u8; 32],
    epoch: Instant,
}

impl Cookies {
    pub(crate) fn new() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(Self {
            key,
            epoch: Instant::now(),
        })
    }

    fn bucket(&self, now: Instant) -> u64 {
        (now.duration_since(self.epoch).as_secs() / BUCKET.as_secs()) + 1
    }

    fn make(&self, from: SocketAddr, bucket: u64) -> u64 {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        match from.ip() {
            std::net::IpAddr::V4(v4) => h.update(&v4.octets()),
            std::net::IpAddr::V6(v6) => h.update(&v6.octets()),
        };
        h.update(&from.port().to_be_bytes());
        h.update(&bucket.to_be_bytes());
        let mut c = [0u8; 8];
        c.copy_from_slice(&h.finalize().as_bytes()[..8]);
        // Zero means "no cookie" on the wire.
        u64::from_be_bytes(c).max(1)
    }

    pub(crate) fn issue(&self, from: SocketAddr, now: Instant) -> u64 {
        self.make(from, self.bucket(now))
    }

    pub(crate) fn valid(&self, from: SocketAddr, cookie: u64, now: Instant) -> bool {
        let b = self.bucket(now);
        cookie == self.make(from, b) || cookie == self.make(from, b - 1)
    }

    /// A connection id for BEP 15: the cookie with `mark` set and the bucket's parity in bit 62,
    /// so checking it takes one hash, not two (announces are the tracker's hottest path).
    pub(crate) fn issue_tagged(&self, from: SocketAddr, mark: u64, now: Instant) -> u64 {
        let b = self.bucket(now);
        (self.make(from, b) & !PARITY) | ((b & 1) << 62) | mark
    }

    /// Whether `id` is one [`Cookies::issue_tagged`] gave `from` in this bucket or the last.
    pub(crate) fn valid_tagged(&self, from: SocketAddr, id: u64, mark: u64, now: Instant) -> bool {
        if id & mark != mark {
            return false;
        }
        let b = self.bucket(now);
        // The bucket the id names: this one, or (if the parity differs) the one before.
        let named = if (id >> 62) & 1 == b & 1 { b } else { b - 1 };
        id == (self.make(from, named) & !PARITY) | ((named & 1) << 62) | mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_bound_to_its_address_and_expires() {
        let c = Cookies::new().unwrap();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let now = Instant::now();
        let k = c.issue(a, now);
        assert!(c.valid(a, k, now));
        assert!(!c.valid(b, k, now));
        assert!(!c.valid("10.0.0.1:5001".parse().unwrap(), k, now));
        assert!(c.valid(a, k, now + BUCKET));
        assert!(!c.valid(a, k, now + 3 * BUCKET));
        assert!(!c.valid(a, 0, now));
    }

    #[test]
    fn tagged_ids_are_checked_with_one_hash_and_live_as_long() {
        let c = Cookies::new().unwrap();
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mark = 1 << 63;
        let now = Instant::now();
        let id = c.issue_tagged(a, mark, now);
        assert_ne!(id & mark, 0);
        assert!(c.valid_tagged(a, id, mark, now));
        assert!(c.valid_tagged(a, id, mark, now + BUCKET));
        assert!(!c.valid_tagged(a, id, mark, now + 2 * BUCKET + BUCKET / 2));
        assert!(!c.valid_tagged("10.0.0.2:5000".parse().unwrap(), id, mark, now));
        assert!(!c.valid_tagged(a, id & !mark, mark, now));
        assert!(!c.valid_tagged(a, id ^ 1, mark, now));
    }
}
