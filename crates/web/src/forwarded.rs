//! Which client a web request comes from when it reaches the hub through reverse proxies it
//! trusts (`--trusted-proxy`). Pure: a connection's address and a request's headers in, an
//! address out.
//!
//! A proxy appends the address it received the request from to `X-Forwarded-For`, so the
//! header's entries, read from the right, are the hops nearest the hub first. The client is the
//! first entry from the right that is not itself a trusted proxy: entries further left were
//! written by whoever sent the request and may say anything. Only `X-Forwarded-For` is read:
//! the proxies people run (nginx, HAProxy, Caddy, Traefik, Apache, Envoy) append to it, and a
//! `Forwarded` header that a proxy passes through untouched would be the client's own word.

use axum::http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use troca_hub::config::TrustedProxies;

/// The header a proxy names its client in.
pub(crate) const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The most entries of `X-Forwarded-For` looked at: a chain of proxies is a few hops long, and
/// past them the last trusted hop stands for the client.
const MAX_HOPS: usize = 32;

/// The address the request on a connection from `peer` is from: `peer` itself unless it is a
/// trusted proxy; then the nearest hop of its `X-Forwarded-For` that is not a trusted proxy
/// (or, when every hop is trusted or an entry cannot be read, the last trusted hop before it).
pub(crate) fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted.contains(client) {
        return client;
    }
    let mut looked = 0;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            looked += 1;
            let Some(hop) = hop(entry).filter(|_| looked <= MAX_HOPS) else {
                return client;
            };
            if !trusted.contains(hop) {
                return hop;
            }
            client = hop;
        }
    }
    client
}

/// Says once in the log that requests carry `X-Forwarded-For` from an address the hub does not
/// trust as a proxy: if a proxy sends them, all its clients share its address's limits.
pub(crate) fn notice_untrusted(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) {
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !trusted.is_empty() || !headers.contains_key(X_FORWARDED_FOR) {
        return;
    }
    if !TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let peer = peer.to_canonical();
        tracing::warn!(
            "web requests from {peer} say X-Forwarded-For: if a reverse proxy sends them, start \
             the hub with --trusted-proxy {peer}, so that each of its clients has its own limits \
             and place in `troca who` (now they share {peer}'s)"
        );
    }
}

/// One entry of `X-Forwarded-For`: an address, perhaps with a port (`1.2.3.4:5`, `[::1]:5`)
/// or in brackets (`[::1]`).
fn hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let bare = entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .unwrap_or(entry);
    let ip = bare
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_that_is_not_trusted_is_the_client_whatever_it_says() {
        let h = with(&["203.0.113.9"]);
        assert_eq!(
            client_address(ip("192.0.2.1"), &h, &trusted("10.0.0.0/8")),
            ip("192.0.2.1")
        );
        let none = TrustedProxies::default();
        assert_eq!(client_address(ip("127.0.0.1"), &h, &none), ip("127.0.0.1"));
    }

    #[test]
    fn the_nearest_hop_that_is_not_a_proxy_is_the_client() {
        let t = trusted("127.0.0.1,10.0.0.0/8");
        // The client wrote the first entry itself; the proxy appended its real address.
        let h = with(&["198.51.100.7, 203.0.113.9, 10.1.2.3"]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("203.0.113.9"));
        // Several header lines read as one list, the last line nearest.
        let h = with(&["198.51.100.7", "203.0.113.9", "10.1.2.3"]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("203.0.113.9"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_read() {
        let t = trusted("::1");
        for (entry, want) in [
            ("203.0.113.9:4711", "203.0.113.9"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            (" 2001:db8::7 ", "2001:db8::7"),
            ("::ffff:203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                client_address(ip("::1"), &with(&[entry]), &t),
                ip(want),
                "{entry}"
            );
        }
        // A proxy on 127.0.0.1 reaching a hub that listens on [::] shows as ::ffff:127.0.0.1.
        let t = trusted("127.0.0.1");
        let h = with(&["203.0.113.9"]);
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &h, &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn without_a_readable_hop_the_last_trusted_one_stands_for_the_client() {
        let t = trusted("127.0.0.1,10.0.0.9");
        assert_eq!(
            client_address(ip("127.0.0.1"), &with(&[]), &t),
            ip("127.0.0.1")
        );
        let h = with(&["203.0.113.9, unknown, 10.0.0.9"]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("10.0.0.9"));
        let h = with(&["203.0.113.9,"]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("127.0.0.1"));
        let long = vec!["10.0.0.9"; MAX_HOPS + 5].join(",") + ",203.0.113.9";
        let h = with(&[&format!("198.51.100.1,{long}")]);
        assert_eq!(client_address(ip("127.0.0.1"), &h, &t), ip("203.0.113.9"));
    }

    /// A hop in a generated chain: a trusted proxy, a client address, or an entry no one can
    /// read.
    #[derive(Debug, Clone)]
    enum Hop {
        Proxy(u8),
        Client(u32),
        Garbage(String),
    }

    fn hops() -> impl Strategy<Value = Vec<Hop>> {
        let hop = prop_oneof![
            any::<u8>().prop_map(Hop::Proxy),
            any::<u32>().prop_map(Hop::Client),
            "[a-z ;=\\[\\]]{0,8}".prop_map(Hop::Garbage),
        ];
        proptest::collection::vec(hop, 0..12)
    }

    fn text(h: &Hop) -> String {
        match h {
            Hop::Proxy(n) => format!("10.0.0.{n}"),
            // Outside 10.0.0.0/24.
            Hop::Client(n) => format!("{}", std::net::Ipv4Addr::from(*n | 0x8000_0000)),
            Hop::Garbage(g) => g.clone(),
        }
    }

    proptest! {
        /// Reading from the right, the first client hop wins; a hop that cannot be read ends
        /// the walk at the proxy before it; however the entries are split into lines.
        #[test]
        fn the_client_is_the_first_untrusted_hop_from_the_right(chain in hops(), split in 0usize..12) {
            let t = trusted("10.0.0.0/24");
            let peer = ip("10.0.0.200");
            let entries: Vec<String> = chain.iter().map(text).collect();
            // One line, or two: an entry is never lost at a line's end.
            let split = split.min(entries.len());
            let lines = if split == 0 || split == entries.len() {
                vec![entries.join(",")]
            } else {
                vec![entries[..split].join(","), entries[split..].join(",")]
            };
            let mut h = HeaderMap::new();
            for l in &lines {
                h.append(X_FORWARDED_FOR, l.parse().unwrap());
            }
            let mut want = peer;
            for hop in chain.iter().rev() {
                match hop {
                    Hop::Proxy(_) => want = ip(&text(hop)),
                    Hop::Client(_) => { want = ip(&text(hop)); break }
                    Hop::Garbage(g) => {
                        if let Some(read) = super::hop(g) {
                            want = read;
                            if !t.contains(read) { break }
                        } else {
                            break
                        }
                    }
                }
            }
            prop_assert_eq!(client_address(peer, &h, &t), want);
        }
    }
}
