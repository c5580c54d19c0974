//! The PROXY protocol (HAProxy's, versions 1 and 2): how a TCP proxy or load balancer in front
//! of a listener says which client each connection is for, in a header before the
//! connection's own bytes. A hub reads it only on connections from its trusted proxies
//! (`--trusted-proxy`), and only if one is there: the same proxy may also send plain HTTP with
//! `X-Forwarded-For`.
//!
//! [`classify`] is pure (bytes in, a verdict out; a header not all here yet is a normal state,
//! not an error). [`read_client`] peeks at the socket until the verdict is in, then takes the
//! header's bytes off it and leaves the rest for the protocol that follows (TLS, HTTP or the
//! native frames), so the stream stays a plain `TcpStream`. The parsing is the `ppp` crate's.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How version 1 begins.
const V1: &[u8] = b"PROXY ";
/// How version 2 begins.
const V2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is one line of at most this many bytes, `\r\n` included.
const V1_MAX: usize = 107;
/// The longest version 2 header read: addresses and a few hundred bytes of TLVs (the TLS
/// details, a unique id), which the hub does not use.
pub const MAX_HEADER: usize = 1024;

/// What the first bytes of a connection from a trusted proxy are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a PROXY header: the connection's own protocol starts at once.
    Absent,
    /// The start of a header, or of bytes that may still turn out to be one: more are needed.
    Incomplete,
    /// A header of `len` bytes. `client` is who the connection is for; `None` when the proxy
    /// speaks for itself (version 2's `LOCAL`, a health check; version 1's `UNKNOWN`) or for
    /// a client that is not on IP.
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// A header that cannot be read, or longer than [`MAX_HEADER`].
    Invalid,
}

/// The verdict on a connection's first `bytes` (at least one).
pub fn classify(bytes: &[u8]) -> Verdict {
    let could_be = |sig: &[u8]| sig.starts_with(&bytes[..bytes.len().min(sig.len())]);
    if !could_be(V1) && !could_be(V2) {
        return Verdict::Absent;
    }
    if bytes.starts_with(V2) {
        return version_2(bytes);
    }
    if bytes.starts_with(V1) {
        return version_1(bytes);
    }
    Verdict::Incomplete
}

fn version_2(bytes: &[u8]) -> Verdict {
    let Some(length) = bytes.get(14..16) else {
        return Verdict::Incomplete;
    };
    let len = 16 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    if len > MAX_HEADER {
        return Verdict::Invalid;
    }
    let Some(header) = bytes.get(..len) else {
        return Verdict::Incomplete;
    };
    let Ok(h) = ppp::v2::Header::try_from(header) else {
        return Verdict::Invalid;
    };
    let client = match (h.command, h.addresses) {
        (ppp::v2::Command::Local, _) => None,
        (_, ppp::v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        (_, ppp::v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::from((a.source_address, a.source_port)))
        }
        _ => None,
    };
    Verdict::Header { len, client }
}

fn version_1(bytes: &[u8]) -> Verdict {
    let within = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = within.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX {
            Verdict::Invalid
        } else {
            Verdict::Incomplete
        };
    };
    let len = end + 2;
    let Ok(h) = ppp::v1::Header::try_from(&bytes[..len]) else {
        return Verdict::Invalid;
    };
    let client = match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    Verdict::Header { len, client }
}

/// Reads a PROXY header off `stream` if it begins with one, within `within`: the client it
/// names, or `None` (no header, or one in which the proxy speaks for itself). A header that
/// cannot be read, a connection closed before its first byte, or time running out is an error:
/// the connection is to be dropped.
pub async fn read_client(
    stream: &mut TcpStream,
    within: Duration,
) -> io::Result<Option<SocketAddr>> {
    let read = async {
        let mut buf = [0u8; MAX_HEADER];
        loop {
            let n = stream.peek(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            match classify(&buf[..n]) {
                Verdict::Absent => return Ok(None),
                Verdict::Header { len, client } => {
                    stream.read_exact(&mut buf[..len]).await?;
                    return Ok(client);
                }
                Verdict::Invalid => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a PROXY protocol header that cannot be read",
                    ))
                }
                // A proxy writes its header at once; the rest of it is a moment away.
                Verdict::Incomplete => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};
    use proptest::prelude::*;

    fn v2(client: SocketAddr, server: SocketAddr, tlv: &[u8]) -> Vec<u8> {
        let mut b = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (client, server),
        );
        if !tlv.is_empty() {
            b = b.write_tlv(ppp::v2::Type::NoOp, tlv).unwrap();
        }
        b.build().unwrap()
    }

    #[test]
    fn a_version_1_line_names_its_client() {
        let header = b"PROXY TCP4 203.0.113.9 192.0.2.1 4711 13370\r\n";
        let line = [header.as_slice(), b"GET / HTTP/1.1\r\n"].concat();
        assert_eq!(
            classify(&line),
            Verdict::Header {
                len: header.len(),
                client: Some("203.0.113.9:4711".parse().unwrap())
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n\x16\x03\x01";
        assert!(
            matches!(classify(line), Verdict::Header { client: Some(c), .. } if c.ip().to_string() == "2001:db8::7")
        );
        assert_eq!(
            classify(b"PROXY UNKNOWN\r\n"),
            Verdict::Header {
                len: 15,
                client: None
            }
        );
    }

    #[test]
    fn protocols_that_only_begin_alike_are_told_apart() {
        // HTTP and TLS from a trusted proxy that sends no header.
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Verdict::Absent);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Verdict::Absent);
        assert_eq!(classify(b"PUT /files/a HTTP/1.1"), Verdict::Absent);
        assert_eq!(classify(b"PROPFIND /dav/ HTTP/1.1"), Verdict::Absent);
        // Not enough yet to say.
        assert_eq!(classify(b"P"), Verdict::Incomplete);
        assert_eq!(classify(b"PRO"), Verdict::Incomplete);
        assert_eq!(classify(b"PROXY TCP4 203.0"), Verdict::Incomplete);
        assert_eq!(classify(b"\r\n\r\n"), Verdict::Incomplete);
        // A line that never ends, or does not parse.
        assert_eq!(
            classify(&[b"PROXY ".as_slice(), &[b'1'; 200]].concat()),
            Verdict::Invalid
        );
        assert_eq!(classify(b"PROXY TCP4 nonsense\r\n"), Verdict::Invalid);
    }

    #[test]
    fn version_2_names_its_client_or_speaks_for_itself() {
        let client: SocketAddr = "203.0.113.9:4711".parse().unwrap();
        let server: SocketAddr = "192.0.2.1:13370".parse().unwrap();
        let mut bytes = v2(client, server, b"");
        let len = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            classify(&bytes),
            Verdict::Header {
                len,
                client: Some(client)
            }
        );
        let local = Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Stream,
            (client, server),
        )
        .build()
        .unwrap();
        assert!(matches!(
            classify(&local),
            Verdict::Header { client: None, .. }
        ));
        // Longer than the hub reads.
        let long = v2(client, server, &[0; MAX_HEADER]);
        assert_eq!(classify(&long), Verdict::Invalid);
    }

    fn address() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    proptest! {
        /// A header with whatever follows it names its client once whole, and is incomplete
        /// (never absent, never another client) at every shorter length.
        #[test]
        fn a_header_is_read_whole_or_waited_for(
            client in address(),
            server in address(),
            tlv in proptest::collection::vec(any::<u8>(), 0..64),
            rest in proptest::collection::vec(any::<u8>(), 0..32),
            text in any::<bool>(),
        ) {
            // A header carries one family for both ends.
            let server = if client.is_ipv4() == server.is_ipv4() { server } else { client };
            let header = if text {
                ppp::v1::Addresses::from((client, server)).to_string().into_bytes()
            } else {
                v2(client, server, &tlv)
            };
            let whole = [header.as_slice(), &rest].concat();
            prop_assert_eq!(classify(&whole), Verdict::Header { len: header.len(), client: Some(client) });
            for cut in 1..header.len() {
                prop_assert_eq!(classify(&whole[..cut]), Verdict::Incomplete, "cut at {}", cut);
            }
        }

        /// Any bytes at all: a verdict, never a panic; a header found is within what was given.
        #[test]
        fn any_bytes_get_a_verdict(bytes in proptest::collection::vec(any::<u8>(), 1..300), sig in 0usize..3) {
            let bytes = match sig {
                0 => bytes,
                1 => [V1, &bytes].concat(),
                _ => [V2, &bytes].concat(),
            };
            if let Verdict::Header { len, .. } = classify(&bytes) {
                prop_assert!(len <= bytes.len());
            }
        }
    }

    #[tokio::test]
    async fn a_header_is_taken_off_the_stream_and_the_rest_left() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut near = TcpStream::connect(addr).await.unwrap();
        let (mut far, _) = listener.accept().await.unwrap();
        // The header arrives in two parts, and the protocol's bytes after it.
        near.write_all(b"PROXY TCP4 203.0.113.9 ").await.unwrap();
        let reading = tokio::spawn(async move {
            let client = read_client(&mut far, Duration::from_secs(30)).await;
            let mut rest = [0u8; 5];
            far.read_exact(&mut rest).await.unwrap();
            (client.unwrap(), rest)
        });
        near.write_all(b"192.0.2.1 4711 80\r\nhello").await.unwrap();
        let (client, rest) = reading.await.unwrap();
        assert_eq!(client, Some("203.0.113.9:4711".parse().unwrap()));
        assert_eq!(&rest, b"hello");
    }
}
