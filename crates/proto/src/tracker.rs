//! The swarm tracker's UDP messages (REG, LST, UPD, END), pure codecs.
//!
//! Every datagram starts with `magic: [u8;4] = "TRK2"`, `kind: u8`, `txn: u32` (chosen by the
//! client, echoed in the answer). Requests then carry `cookie: u64`: a value the tracker handed
//! to this source address (see [`Connect`]); until a client has one, the tracker answers only
//! `Connect`, and never with more bytes than it received, so a forged source address cannot turn
//! the tracker into an amplifier. Payloads stay under [`MAX_DATAGRAM`] bytes; long lists are
//! paged with a cursor.

use crate::codec::{DecodeError, Put, Reader};
use crate::key::HubKey;
use crate::{Hash, MAX_SHORT_STR};

/// The first four bytes of every tracker datagram.
pub const TRACKER_MAGIC: [u8; 4] = *b"TRK2";
/// The largest datagram either side sends.
pub const MAX_DATAGRAM: usize = 1200;
/// A peer's secret, chosen at REG, needed for UPD and END.
pub type Secret = [u8; 16];

/// A shared file as the tracker knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The BLAKE3 hash of the contents.
    pub id: Hash,
    pub size: u64,
    pub name: String,
}

impl FileInfo {
    pub fn encoded_len(&self) -> usize {
        32 + 8 + 2 + self.name.len()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_hash(&self.id);
        out.put_u64(self.size);
        out.put_str(&self.name);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: r.hash()?,
            size: r.u64()?,
            name: r.str("name", MAX_SHORT_STR)?,
        })
    }
}

/// How an `Update` changes a peer's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// These files are the whole list (the first page of a long one).
    Replace,
    /// These files are added (later pages).
    Add,
    /// These files (by id) are gone.
    Remove,
}

/// Where a peer serves, and the key its TLS certificate shows (downloaders pin it; `None`: the
/// peer serves in plaintext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    pub addr: std::net::SocketAddr,
    pub key: Option<HubKey>,
}

impl PeerAddr {
    /// The bytes it takes in a page.
    pub fn encoded_len(&self) -> usize {
        let ip = if self.addr.is_ipv4() { 4 } else { 16 };
        1 + ip + 2 + 1 + if self.key.is_some() { 32 } else { 0 }
    }
}

/// One file in a listing, with the peers that have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: FileInfo,
    pub peers: Vec<PeerAddr>,
}

/// A tracker request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Asks for a cookie. Padded to [`CONNECT_LEN`] so the answer is never larger.
    Connect,
    /// Registers (or refreshes) this address as a peer serving on `port` with TLS under `key`
    /// (or in plaintext), with `files` as its list (the first page; more go in `Update(Add)`).
    Register {
        port: u16,
        secret: Secret,
        key: Option<HubKey>,
        files: Vec<FileInfo>,
    },
    /// Lists files whose id is `id`, or whose name is `filter` or ends with `/filter` when
    /// `whole_name`, or contains `filter`, from `cursor` on.
    List {
        filter: String,
        id: Option<Hash>,
        cursor: u32,
        whole_name: bool,
    },
    Update {
        secret: Secret,
        mode: UpdateMode,
        files: Vec<FileInfo>,
    },
    /// Leaves.
    End { secret: Secret },
}

/// A tracker answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Cookie(u64),
    Ok,
    /// A page of a listing; `next` is the cursor for the next page, if any.
    Page {
        files: Vec<Listed>,
        next: Option<u32>,
    },
    Error {
        code: u16,
        message: String,
    },
}

/// A whole datagram: header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<T> {
    pub txn: u32,
    /// Requests carry the cookie (0 for `Connect`); answers carry 0.
    pub cookie: u64,
    pub body: T,
}

/// The size of a `Connect` request, padding included.
pub const CONNECT_LEN: usize = 4 + 1 + 4 + 8 + 16;

/// Tracker error codes.
pub mod codes {
    pub const BAD_COOKIE: u16 = 1;
    pub const WRONG_SECRET: u16 = 2;
    pub const NOT_REGISTERED: u16 = 3;
    pub const TOO_MANY_FILES: u16 = 4;
    pub const TOO_MANY_PEERS: u16 = 5;
    /// A file name breaks the naming rules (control characters, bidirectional overrides, …).
    pub const BAD_NAME: u16 = 6;
}

fn header(out: &mut Vec<u8>, kind: u8, txn: u32, cookie: u64) {
    out.extend_from_slice(&TRACKER_MAGIC);
    out.put_u8(kind);
    out.put_u32(txn);
    out.put_u64(cookie);
}

fn read_header(buf: &[u8]) -> Result<(u8, u32, u64, Reader<'_>), DecodeError> {
    let mut r = Reader::new(buf);
    if r.magic()? != TRACKER_MAGIC {
        return Err(DecodeError::BadValue {
            field: "magic",
            value: 0,
        });
    }
    let kind = r.u8()?;
    let txn = r.u32()?;
    let cookie = r.u64()?;
    Ok((kind, txn, cookie, r))
}

fn put_files(out: &mut Vec<u8>, files: &[FileInfo]) {
    out.put_u16(files.len() as u16);
    for f in files {
        f.encode(out);
    }
}

fn read_files(r: &mut Reader<'_>) -> Result<Vec<FileInfo>, DecodeError> {
    let n = r.u16()? as usize;
    if n > MAX_DATAGRAM / 42 {
        return Err(DecodeError::BadValue {
            field: "files",
            value: n as u64,
        });
    }
    (0..n).map(|_| FileInfo::decode(r)).collect()
}

fn put_addr(out: &mut Vec<u8>, a: &std::net::SocketAddr) {
    match a {
        std::net::SocketAddr::V4(v4) => {
            out.put_u8(4);
            out.extend_from_slice(&v4.ip().octets());
        }
        std::net::SocketAddr::V6(v6) => {
            out.put_u8(6);
            out.extend_from_slice(&v6.ip().octets());
        }
    }
    out.put_u16(a.port());
}

fn read_addr(r: &mut Reader<'_>) -> Result<std::net::SocketAddr, DecodeError> {
    let ip: std::net::IpAddr = match r.u8()? {
        4 => {
            let b = r.u32()?.to_be_bytes();
            std::net::Ipv4Addr::from(b).into()
        }
        6 => {
            let hi = r.u64()?;
            let lo = r.u64()?;
            std::net::Ipv6Addr::from(((hi as u128) << 64) | lo as u128).into()
        }
        v => {
            return Err(DecodeError::BadValue {
                field: "address family",
                value: v.into(),
            })
        }
    };
    Ok(std::net::SocketAddr::new(ip, r.u16()?))
}

impl Datagram<Request> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        match &self.body {
            Request::Connect => {
                header(out, 0x01, self.txn, self.cookie);
                out.resize(start + CONNECT_LEN, 0);
            }
            Request::Register {
                port,
                secret,
                key,
                files,
            } => {
                header(out, 0x02, self.txn, self.cookie);
                out.put_u16(*port);
                out.extend_from_slice(secret);
                out.put_opt_hash(key.as_ref().map(|k| &k.0));
                put_files(out, files);
            }
            Request::List {
                filter,
                id,
                cursor,
                whole_name,
            } => {
                header(out, 0x03, self.txn, self.cookie);
                out.put_str(filter);
                out.put_opt_hash(id.as_ref());
                out.put_u32(*cursor);
                out.put_bool(*whole_name);
            }
            Request::Update {
                secret,
                mode,
                files,
            } => {
                header(out, 0x04, self.txn, self.cookie);
                out.extend_from_slice(secret);
                out.put_u8(match mode {
                    UpdateMode::Replace => 0,
                    UpdateMode::Add => 1,
                    UpdateMode::Remove => 2,
                });
                put_files(out, files);
            }
            Request::End { secret } => {
                header(out, 0x05, self.txn, self.cookie);
                out.extend_from_slice(secret);
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (kind, txn, cookie, mut r) = read_header(buf)?;
        let secret = |r: &mut Reader<'_>| -> Result<Secret, DecodeError> {
            let h = r.hash_prefix16()?;
            Ok(h)
        };
        let body = match kind {
            0x01 => {
                // Padding: the rest must be zeros, and the request at least CONNECT_LEN long.
                if buf.len() < CONNECT_LEN {
                    return Err(DecodeError::Truncated);
                }
                return Ok(Self {
                    txn,
                    cookie,
                    body: Request::Connect,
                });
            }
            0x02 => Request::Register {
                port: r.u16()?,
                secret: secret(&mut r)?,
                key: r.opt_hash("key")?.map(HubKey),
                files: read_files(&mut r)?,
            },
            0x03 => Request::List {
                filter: r.str("filter", MAX_SHORT_STR)?,
                id: r.opt_hash("id")?,
                cursor: r.u32()?,
                whole_name: r.bool("whole_name")?,
            },
            0x04 => Request::Update {
                secret: secret(&mut r)?,
                mode: match r.u8()? {
                    0 => UpdateMode::Replace,
                    1 => UpdateMode::Add,
                    2 => UpdateMode::Remove,
                    v => {
                        return Err(DecodeError::BadValue {
                            field: "mode",
                            value: v.into(),
                        })
                    }
                },
                files: read_files(&mut r)?,
            },
            0x05 => Request::End {
                secret: secret(&mut r)?,
            },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        r.finish()?;
        Ok(Self { txn, cookie, body })
    }
}

impl Datagram<Answer> {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match &self.body {
            Answer::Cookie(c) => {
                header(out, 0x81, self.txn, self.cookie);
                out.put_u64(*c);
            }
            Answer::Ok => header(out, 0x82, self.txn, self.cookie),
            Answer::Page { files, next } => {
                header(out, 0x83, self.txn, self.cookie);
                out.put_u16(files.len() as u16);
                for l in files {
                    l.file.encode(out);
                    out.put_u16(l.peers.len() as u16);
                    for p in &l.peers {
                        put_addr(out, &p.addr);
                        out.put_opt_hash(p.key.as_ref().map(|k| &k.0));
                    }
                }
                match next {
                    Some(n) => {
                        out.put_u8(1);
                        out.put_u32(*n);
                    }
                    None => out.put_u8(0),
                }
            }
            Answer::Error { code, message } => {
                header(out, 0xff, self.txn, self.cookie);
                out.put_u16(*code);
                out.put_str(crate::codec::truncate_utf8(message, 200));
            }
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (kind, txn, cookie, mut r) = read_header(buf)?;
        let body = match kind {
            0x81 => Answer::Cookie(r.u64()?),
            0x82 => Answer::Ok,
            0x83 => {
                let n = r.u16()? as usize;
                let mut files = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let file = FileInfo::decode(&mut r)?;
                    let np = r.u16()? as usize;
                    let mut peers = Vec::with_capacity(np.min(256));
                    for _ in 0..np {
                        peers.push(PeerAddr {
                            addr: read_addr(&mut r)?,
                            key: r.opt_hash("key")?.map(HubKey),
                        });
                    }
                    files.push(Listed { file, peers });
                }
                let next = if r.bool("next")? {
                    Some(r.u32()?)
                } else {
                    None
                };
                Answer::Page { files, next }
            }
            0xff => Answer::Error {
                code: r.u16()?,
                message: r.str("message", MAX_SHORT_STR)?,
            },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        r.finish()?;
        Ok(Self { txn, cookie, body })
    }
}

/// The bytes a `Listed` takes in a page, to fill pages up to the datagram limit.
pub fn listed_len(l: &Listed) -> usize {
    l.file.encoded_len() + 2 + l.peers.iter().map(PeerAddr::encoded_len).sum::<usize>()
}

/// Bytes of a page besides its files: header, count, cursor.
pub const PAGE_OVERHEAD: usize = 4 + 1 + 4 + 8 + 2 + 5;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> impl Strategy<Value = FileInfo> {
        (any::<[u8; 32]>(), any::<u64>(), "[a-z .]{0,40}").prop_map(|(id, size, name)| FileInfo {
            id,
            size,
            name,
        })
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            Just(Request::Connect),
            (
                any::<u16>(),
                any::<[u8; 16]>(),
                proptest::option::of(any::<[u8; 32]>()),
                proptest::collection::vec(file(), 0..5)
            )
                .prop_map(|(port, secret, key, files)| Request::Register {
                    port,
                    secret,
                    key: key.map(HubKey),
                    files
                }),
            (
                "[a-z]{0,10}",
                proptest::option::of(any::<[u8; 32]>()),
                any::<u32>(),
                any::<bool>()
            )
                .prop_map(|(filter, id, cursor, whole_name)| Request::List {
                    filter,
                    id,
                    cursor,
                    whole_name
                }),
            (
                any::<[u8; 16]>(),
                0u8..3,
                proptest::collection::vec(file(), 0..5)
            )
                .prop_map(|(secret, m, files)| {
                    Request::Update {
                        secret,
                        mode: [UpdateMode::Replace, UpdateMode::Add, UpdateMode::Remove]
                            [m as usize],
                        files,
                    }
                }),
            any::<[u8; 16]>().prop_map(|secret| Request::End { secret }),
        ]
    }

    fn answer() -> impl Strategy<Value = Answer> {
        let addr = (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| std::net::SocketAddr::from((ip, port)));
        let addr6 = (any::<[u16; 8]>(), any::<u16>())
            .prop_map(|(ip, port)| std::net::SocketAddr::from((ip, port)));
        let peer = (
            prop_oneof![addr, addr6],
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(|(addr, key)| PeerAddr {
                addr,
                key: key.map(HubKey),
            });
        let listed = (file(), proptest::collection::vec(peer, 0..4))
            .prop_map(|(file, peers)| Listed { file, peers });
        prop_oneof![
            any::<u64>().prop_map(Answer::Cookie),
            Just(Answer::Ok),
            (
                proptest::collection::vec(listed, 0..4),
                proptest::option::of(any::<u32>())
            )
                .prop_map(|(files, next)| Answer::Page { files, next }),
            (any::<u16>(), "[a-z ]{0,50}")
                .prop_map(|(code, message)| Answer::Error { code, message }),
        ]
    }

    #[test]
    fn the_fuzz_seed_corpus_holds_requests_and_answers() {
        let mut seeds = Vec::new();
        for body in crate::testkit::samples(request(), 48) {
            let mut buf = Vec::new();
            Datagram {
                txn: 1,
                cookie: 2,
                body,
            }
            .encode(&mut buf);
            seeds.push(buf);
        }
        for body in crate::testkit::samples(answer(), 48) {
            let mut buf = Vec::new();
            Datagram {
                txn: 1,
                cookie: 0,
                body,
            }
            .encode(&mut buf);
            seeds.push(buf);
        }
        crate::testkit::seed_corpus("tracker_decode", &seeds, |b| {
            Datagram::<Request>::decode(b).is_ok() || Datagram::<Answer>::decode(b).is_ok()
        });
    }

    proptest! {
        /// Valid datagrams, mutated: past the magic into every decoder; what decodes round-trips.
        #[test]
        fn mutated_datagrams_are_refused_or_round_trip(
            req in request(), ans in answer(), m in crate::testkit::mutations()
        ) {
            let mut buf = Vec::new();
            Datagram { txn: 1, cookie: 2, body: req }.encode(&mut buf);
            Datagram { txn: 3, cookie: 0, body: ans }.encode(&mut buf);
            let bytes = crate::testkit::mutate(buf, &m);
            if let Ok(d) = Datagram::<Request>::decode(&bytes) {
                let mut again = Vec::new();
                d.encode(&mut again);
                prop_assert_eq!(Datagram::<Request>::decode(&again).unwrap(), d);
            }
            if let Ok(d) = Datagram::<Answer>::decode(&bytes) {
                let mut again = Vec::new();
                d.encode(&mut again);
                prop_assert_eq!(Datagram::<Answer>::decode(&again).unwrap(), d);
            }
        }

        #[test]
        fn requests_round_trip(body in request(), txn in any::<u32>(), cookie in any::<u64>()) {
            let d = Datagram { txn, cookie, body };
            let mut buf = Vec::new();
            d.encode(&mut buf);
            prop_assert_eq!(Datagram::<Request>::decode(&buf).unwrap(), d);
        }

        #[test]
        fn answers_round_trip(body in answer(), txn in any::<u32>(), cookie in any::<u64>()) {
            let d = Datagram { txn, cookie, body };
            let mut buf = Vec::new();
            d.encode(&mut buf);
            prop_assert_eq!(Datagram::<Answer>::decode(&buf).unwrap(), d);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Datagram::<Request>::decode(&bytes);
            let _ = Datagram::<Answer>::decode(&bytes);
        }
    }

    /// Found by the fuzzer: an answer carrying a non-zero cookie field did not re-encode to itself.
    #[test]
    fn regression_answer_with_a_cookie_field_round_trips() {
        let bytes = [
            0x54, 0x52, 0x4b, 0x32, 0x82, 0xab, 0xec, 0xec, 0xec, 0xec, 0xec, 0xec, 0x13, 0x13,
            0x00, 0x00, 0x0a,
        ];
        let d = Datagram::<Answer>::decode(&bytes).unwrap();
        let mut again = Vec::new();
        d.encode(&mut again);
        assert_eq!(Datagram::<Answer>::decode(&again).unwrap(), d);
    }

    #[test]
    fn a_cookie_answer_is_never_larger_than_the_connect_request() {
        let mut req = Vec::new();
        Datagram {
            txn: 1,
            cookie: 0,
            body: Request::Connect,
        }
        .encode(&mut req);
        let mut ans = Vec::new();
        Datagram {
            txn: 1,
            cookie: 0,
            body: Answer::Cookie(u64::MAX),
        }
        .encode(&mut ans);
        assert_eq!(req.len(), CONNECT_LEN);
        assert!(ans.len() <= req.len());
        // A short connect (no padding) is refused, so it cannot buy a larger answer.
        assert!(Datagram::<Request>::decode(&req[..20]).is_err());
    }
}
