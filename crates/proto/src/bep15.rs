//! BitTorrent's UDP tracker protocol (BEP 15), pure codecs, so ordinary BitTorrent clients can use
//! a troca tracker.
//!
//! A BEP 15 request never starts with troca's `TRK2` magic: a connect request starts with the
//! protocol id (`00 00 04 17 27 10 19 80`), and every other request with a connection id the
//! tracker issued, whose first byte troca keeps at `0x80` or above ([`CONNECTION_ID_MARK`]). So
//! the first four bytes tell the two protocols apart.

use crate::codec::DecodeError;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic number that opens a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// A bit set in every connection id troca hands out (see the module's documentation).
pub const CONNECTION_ID_MARK: u64 = 1 << 63;

pub const ACTION_CONNECT: u32 = 0;
pub const ACTION_ANNOUNCE: u32 = 1;
pub const ACTION_SCRAPE: u32 = 2;
pub const ACTION_ERROR: u32 = 3;

/// The longest list of info-hashes one scrape may carry (BEP 15: about 74 fit a datagram).
pub const MAX_SCRAPE: usize = 74;

pub type InfoHash = [u8; 20];
pub type PeerId = [u8; 20];

/// What an announce says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    None,
    Completed,
    Started,
    Stopped,
}

impl Event {
    fn from_u32(v: u32) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Event::None,
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            v => {
                return Err(DecodeError::BadValue {
                    field: "event",
                    value: v.into(),
                })
            }
        })
    }

    fn to_u32(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// An announce: a peer of `info_hash` says where it listens and how far it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub connection_id: u64,
    pub transaction_id: u32,
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// The address the peer claims (ignored: peers are known by their packets' source).
    pub ip: u32,
    pub key: u32,
    /// How many peers it wants; negative means "the tracker's default".
    pub num_want: i32,
    pub port: u16,
}

/// A BEP 15 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect {
        transaction_id: u32,
    },
    Announce(Announce),
    Scrape {
        connection_id: u64,
        transaction_id: u32,
        info_hashes: Vec<InfoHash>,
    },
}

/// Counts for one info-hash in a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScrapeStats {
    pub seeders: u32,
    pub completed: u32,
    pub leechers: u32,
}

/// A BEP 15 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Connect {
        transaction_id: u32,
        connection_id: u64,
    },
    /// Peers are all IPv4 or all IPv6: the family of the socket the request came in on.
    Announce {
        transaction_id: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        transaction_id: u32,
        stats: Vec<ScrapeStats>,
    },
    Error {
        transaction_id: u32,
        message: String,
    },
}

/// Whether a datagram is BEP 15 rather than troca's own protocol.
pub fn is_bep15(datagram: &[u8]) -> bool {
    datagram.get(..4) != Some(&crate::tracker::TRACKER_MAGIC[..])
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn hash(&mut self) -> Result<[u8; 20], DecodeError> {
        Ok(self.take(20)?.try_into().expect("20"))
    }
}

impl Request {
    /// Decodes a request. Bytes after an announce's fixed part (BEP 41 options) are ignored.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = R(buf);
        let connection_id = r.u64()?;
        let action = r.u32()?;
        let transaction_id = r.u32()?;
        match action {
            ACTION_CONNECT if connection_id == PROTOCOL_ID => {
                Ok(Request::Connect { transaction_id })
            }
            ACTION_CONNECT => Err(DecodeError::BadValue {
                field: "protocol id",
                value: connection_id,
            }),
            ACTION_ANNOUNCE => Ok(Request::Announce(Announce {
                connection_id,
                transaction_id,
                info_hash: r.hash()?,
                peer_id: r.hash()?,
                downloaded: r.u64()?,
                left: r.u64()?,
                uploaded: r.u64()?,
                event: Event::from_u32(r.u32()?)?,
                ip: r.u32()?,
                key: r.u32()?,
                num_want: r.u32()? as i32,
                port: r.u16()?,
            })),
            ACTION_SCRAPE => {
                if r.0.is_empty() || r.0.len() % 20 != 0 || r.0.len() / 20 > MAX_SCRAPE {
                    return Err(DecodeError::BadValue {
                        field: "scrape length",
                        value: r.0.len() as u64,
                    });
                }
                let info_hashes =
                    r.0.chunks_exact(20)
                        .map(|c| c.try_into().expect("20"))
                        .collect();
                Ok(Request::Scrape {
                    connection_id,
                    transaction_id,
                    info_hashes,
                })
            }
            a => Err(DecodeError::BadValue {
                field: "action",
                value: a.into(),
            }),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Connect { transaction_id } => {
                out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
            }
            Request::Announce(a) => {
                out.extend_from_slice(&a.connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&a.transaction_id.to_be_bytes());
                out.extend_from_slice(&a.info_hash);
                out.extend_from_slice(&a.peer_id);
                out.extend_from_slice(&a.downloaded.to_be_bytes());
                out.extend_from_slice(&a.left.to_be_bytes());
                out.extend_from_slice(&a.uploaded.to_be_bytes());
                out.extend_from_slice(&a.event.to_u32().to_be_bytes());
                out.extend_from_slice(&a.ip.to_be_bytes());
                out.extend_from_slice(&a.key.to_be_bytes());
                out.extend_from_slice(&a.num_want.to_be_bytes());
                out.extend_from_slice(&a.port.to_be_bytes());
            }
            Request::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            } => {
                out.extend_from_slice(&connection_id.to_be_bytes());
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for h in info_hashes {
                    out.extend_from_slice(h);
                }
            }
        }
    }
}

impl Response {
    /// Appends the response. Announce peers of the other family than the first are skipped, so
    /// a response is always all IPv4 or all IPv6.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Response::Connect {
                transaction_id,
                connection_id,
            } => {
                out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&connection_id.to_be_bytes());
            }
            Response::Announce {
                transaction_id,
                interval,
                leechers,
                seeders,
                peers,
            } => {
                out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(&interval.to_be_bytes());
                out.extend_from_slice(&leechers.to_be_bytes());
                out.extend_from_slice(&seeders.to_be_bytes());
                let v6 = peers.first().is_some_and(SocketAddr::is_ipv6);
                for p in peers {
                    match p {
                        SocketAddr::V4(a) if !v6 => out.extend_from_slice(&a.ip().octets()),
                        SocketAddr::V6(a) if v6 => out.extend_from_slice(&a.ip().octets()),
                        _ => continue,
                    }
                    out.extend_from_slice(&p.port().to_be_bytes());
                }
            }
            Response::Scrape {
                transaction_id,
                stats,
            } => {
                out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                for s in stats {
                    out.extend_from_slice(&s.seeders.to_be_bytes());
                    out.extend_from_slice(&s.completed.to_be_bytes());
                    out.extend_from_slice(&s.leechers.to_be_bytes());
                }
            }
            Response::Error {
                transaction_id,
                message,
            } => {
                out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
                out.extend_from_slice(&transaction_id.to_be_bytes());
                out.extend_from_slice(message.as_bytes());
            }
        }
    }

    /// Decodes a response (what a client does). `v6` says whether it came over IPv6, which
    /// BEP 15 uses to tell the peer format.
    pub fn decode(buf: &[u8], v6: bool) -> Result<Self, DecodeError> {
        let mut r = R(buf);
        let action = r.u32()?;
        let transaction_id = r.u32()?;
        match action {
            ACTION_CONNECT => Ok(Response::Connect {
                transaction_id,
                connection_id: r.u64()?,
            }),
            ACTION_ANNOUNCE => {
                let interval = r.u32()?;
                let leechers = r.u32()?;
                let seeders = r.u32()?;
                let each = if v6 { 18 } else { 6 };
                if r.0.len() % each != 0 {
                    return Err(DecodeError::Truncated);
                }
                let mut peers = Vec::with_capacity(r.0.len() / each);
                while !r.0.is_empty() {
                    let ip: std::net::IpAddr = if v6 {
                        Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).expect("16")).into()
                    } else {
                        Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).expect("4")).into()
                    };
                    peers.push(SocketAddr::new(ip, r.u16()?));
                }
                Ok(Response::Announce {
                    transaction_id,
                    interval,
                    leechers,
                    seeders,
                    peers,
                })
            }
            ACTION_SCRAPE => {
                if r.0.len() % 12 != 0 {
                    return Err(DecodeError::Truncated);
                }
                let mut stats = Vec::new();
                while !r.0.is_empty() {
                    stats.push(ScrapeStats {
                        seeders: r.u32()?,
                        completed: r.u32()?,
                        leechers: r.u32()?,
                    });
                }
                Ok(Response::Scrape {
                    transaction_id,
                    stats,
                })
            }
            ACTION_ERROR => Ok(Response::Error {
                transaction_id,
                message: String::from_utf8_lossy(r.0).into_owned(),
            }),
            a => Err(DecodeError::BadValue {
                field: "action",
                value: a.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            any::<u32>().prop_map(|transaction_id| Request::Connect { transaction_id }),
            (
                (
                    any::<u64>(),
                    any::<u32>(),
                    any::<[u8; 20]>(),
                    any::<[u8; 20]>()
                ),
                (any::<u64>(), any::<u64>(), any::<u64>(), 0u32..4),
                (any::<u32>(), any::<u32>(), any::<i32>(), any::<u16>()),
            )
                .prop_map(|((c, t, h, p), (d, l, u, e), (ip, key, n, port))| {
                    Request::Announce(Announce {
                        connection_id: c,
                        transaction_id: t,
                        info_hash: h,
                        peer_id: p,
                        downloaded: d,
                        left: l,
                        uploaded: u,
                        event: Event::from_u32(e).unwrap(),
                        ip,
                        key,
                        num_want: n,
                        port,
                    })
                }),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::collection::vec(any::<[u8; 20]>(), 1..=MAX_SCRAPE)
            )
                .prop_map(|(connection_id, transaction_id, info_hashes)| {
                    Request::Scrape {
                        connection_id,
                        transaction_id,
                        info_hashes,
                    }
                }),
        ]
    }

    #[test]
    fn the_fuzz_seed_corpus_holds_every_request_kind() {
        let seeds: Vec<Vec<u8>> = crate::testkit::samples(request(), 64)
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                r.encode(&mut out);
                out
            })
            .collect();
        crate::testkit::seed_corpus("bep15_decode", &seeds, |b| Request::decode(b).is_ok());
    }

    proptest! {
        /// Valid requests, mutated: past the protocol id into every decoder.
        #[test]
        fn mutated_requests_are_refused_or_round_trip(req in request(), m in crate::testkit::mutations()) {
            let mut out = Vec::new();
            req.encode(&mut out);
            let bytes = crate::testkit::mutate(out, &m);
            if let Ok(r) = Request::decode(&bytes) {
                let mut again = Vec::new();
                r.encode(&mut again);
                prop_assert_eq!(Request::decode(&again).unwrap(), r);
            }
        }

        #[test]
        fn requests_round_trip(req in request()) {
            let mut out = Vec::new();
            req.encode(&mut out);
            prop_assert_eq!(Request::decode(&out).unwrap(), req);
        }

        #[test]
        fn announce_responses_round_trip(
            t in any::<u32>(), i in any::<u32>(), l in any::<u32>(), s in any::<u32>(),
            v4 in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..50),
            v6 in proptest::collection::vec((any::<[u8; 16]>(), any::<u16>()), 0..50),
        ) {
            for (peers, is_v6) in [
                (v4.iter().map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(*ip).into(), *p)).collect::<Vec<_>>(), false),
                (v6.iter().map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(*ip).into(), *p)).collect(), true),
            ] {
                let resp = Response::Announce { transaction_id: t, interval: i, leechers: l, seeders: s, peers };
                let mut out = Vec::new();
                resp.encode(&mut out);
                prop_assert_eq!(Response::decode(&out, is_v6).unwrap(), resp);
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Request::decode(&bytes);
        }
    }

    #[test]
    fn the_spec_examples_decode() {
        // A connect request as every client sends it.
        let mut c = PROTOCOL_ID.to_be_bytes().to_vec();
        c.extend_from_slice(&[0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            Request::decode(&c).unwrap(),
            Request::Connect {
                transaction_id: 0xdeadbeef
            }
        );
        assert!(is_bep15(&c));
        assert!(!is_bep15(b"TRK2\x01rest"));
        // An announce is 98 bytes; extensions after it are ignored.
        let mut a = Vec::new();
        Request::Announce(Announce {
            connection_id: CONNECTION_ID_MARK | 5,
            transaction_id: 1,
            info_hash: [1; 20],
            peer_id: [2; 20],
            downloaded: 0,
            left: 10,
            uploaded: 0,
            event: Event::Started,
            ip: 0,
            key: 9,
            num_want: -1,
            port: 6881,
        })
        .encode(&mut a);
        assert_eq!(a.len(), 98);
        a.extend_from_slice(&[2, 5, b'/', b'a', b'n', b'n', b'o']);
        assert!(
            matches!(Request::decode(&a).unwrap(), Request::Announce(x) if x.port == 6881 && x.num_want == -1)
        );
    }
}
