//! BitTorrent's UDP tracker protocol (BEP 15) on the tracker's port, beside troca's own: connect,
//! announce, scrape, stopped, bad connection ids, IPv6.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use troca_proto::bep15::{Announce, Event, Request, Response, CONNECTION_ID_MARK};
use troca_tracker::client::TrackerClient;
use troca_tracker::{run_on, Stats, TrackerConfig};

async fn start(addrs: &[&str]) -> (Vec<SocketAddr>, CancellationToken) {
    let mut sockets = Vec::new();
    for a in addrs {
        sockets.push(UdpSocket::bind(a).await.unwrap());
    }
    let bound = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let stop = CancellationToken::new();
    tokio::spawn(run_on(
        sockets,
        TrackerConfig::default(),
        Arc::new(Stats::default()),
        stop.clone(),
    ));
    (bound, stop)
}

/// A minimal BEP 15 client on its own socket.
struct Client {
    socket: UdpSocket,
    tracker: SocketAddr,
    connection_id: u64,
}

impl Client {
    async fn new(tracker: SocketAddr) -> Self {
        let local = if tracker.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        let socket = UdpSocket::bind(local).await.unwrap();
        let mut c = Client {
            socket,
            tracker,
            connection_id: 0,
        };
        match c.ask(&Request::Connect { transaction_id: 1 }).await {
            Response::Connect {
                transaction_id: 1,
                connection_id,
            } => c.connection_id = connection_id,
            other => panic!("{other:?}"),
        }
        c
    }

    async fn raw(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.socket.send_to(bytes, self.tracker).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = tokio::time::timeout(Duration::from_millis(500), self.socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        buf.truncate(n);
        Some(buf)
    }

    async fn ask(&self, req: &Request) -> Response {
        let mut out = Vec::new();
        req.encode(&mut out);
        let answer = self.raw(&out).await.expect("an answer");
        Response::decode(&answer, self.tracker.is_ipv6()).unwrap()
    }

    async fn announce(&self, port: u16, left: u64, event: Event, num_want: i32) -> Response {
        self.ask(&Request::Announce(Announce {
            connection_id: self.connection_id,
            transaction_id: 7,
            info_hash: [0xab; 20],
            peer_id: [port as u8; 20],
            downloaded: 0,
            left,
            uploaded: 0,
            event,
            ip: 0,
            key: 1,
            num_want,
            port,
        }))
        .await
    }
}

fn peers(r: &Response) -> Vec<SocketAddr> {
    match r {
        Response::Announce { peers, .. } => peers.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn announces_find_the_other_peers_never_the_announcer() {
    let (addrs, _stop) = start(&["127.0.0.1:0"]).await;
    let seeder = Client::new(addrs[0]).await;
    assert_ne!(seeder.connection_id & CONNECTION_ID_MARK, 0);
    let first = seeder.announce(6881, 0, Event::Started, -1).await;
    assert!(peers(&first).is_empty());
    let leecher = Client::new(addrs[0]).await;
    let second = leecher.announce(6882, 1000, Event::Started, -1).await;
    assert_eq!(
        peers(&second),
        ["127.0.0.1:6881".parse::<SocketAddr>().unwrap()]
    );
    let Response::Announce {
        interval,
        seeders,
        leechers,
        ..
    } = second
    else {
        unreachable!()
    };
    assert_eq!((seeders, leechers), (1, 1));
    assert!(interval > 0);
    assert_eq!(
        peers(&seeder.announce(6881, 0, Event::None, 10).await),
        ["127.0.0.1:6882".parse::<SocketAddr>().unwrap()]
    );

    match seeder
        .ask(&Request::Scrape {
            connection_id: seeder.connection_id,
            transaction_id: 9,
            info_hashes: vec![[0xab; 20], [0; 20]],
        })
        .await
    {
        Response::Scrape {
            transaction_id: 9,
            stats,
        } => {
            assert_eq!((stats[0].seeders, stats[0].leechers), (1, 1));
            assert_eq!((stats[1].seeders, stats[1].leechers), (0, 0));
        }
        other => panic!("{other:?}"),
    }
    seeder.announce(6881, 0, Event::Stopped, -1).await;
    assert!(
        peers(&leecher.announce(6882, 1000, Event::None, -1).await).is_empty(),
        "stopped is gone"
    );
}

#[tokio::test]
async fn a_forged_connection_id_gets_no_larger_answer_and_no_peers() {
    let (addrs, _stop) = start(&["127.0.0.1:0"]).await;
    let honest = Client::new(addrs[0]).await;
    honest.announce(6881, 0, Event::Started, -1).await;
    let mut forger = Client::new(addrs[0]).await;
    forger.connection_id = honest.connection_id; // another address's id
    let mut out = Vec::new();
    Request::Announce(Announce {
        connection_id: forger.connection_id,
        transaction_id: 3,
        info_hash: [0xab; 20],
        peer_id: [0; 20],
        downloaded: 0,
        left: 1,
        uploaded: 0,
        event: Event::Started,
        ip: 0,
        key: 0,
        num_want: 200,
        port: 1,
    })
    .encode(&mut out);
    let answer = forger.raw(&out).await.expect("a refusal");
    assert!(
        answer.len() <= out.len(),
        "{} > {}",
        answer.len(),
        out.len()
    );
    assert!(matches!(
        Response::decode(&answer, false).unwrap(),
        Response::Error {
            transaction_id: 3,
            ..
        }
    ));
    // Garbage gets nothing at all.
    assert!(forger.raw(&[0u8; 5]).await.is_none());
}

#[tokio::test]
async fn troca_and_bittorrent_clients_share_the_port() {
    let (addrs, _stop) = start(&["127.0.0.1:0"]).await;
    let bt = Client::new(addrs[0]).await;
    bt.announce(6881, 0, Event::Started, -1).await;
    let mut troca = TrackerClient::new(addrs[0]).await.unwrap();
    troca.register(7000, [1; 16], None, &[]).await.unwrap();
    assert!(troca.list("", None).await.unwrap().is_empty());
    assert!(
        peers(
            &Client::new(addrs[0])
                .await
                .announce(6882, 5, Event::None, -1)
                .await
        )
        .len()
            == 1
    );
}

#[tokio::test]
async fn ipv6_announcers_get_ipv6_peers() {
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    drop(probe);
    let (addrs, _stop) = start(&["127.0.0.1:0", "[::1]:0"]).await;
    let v4 = Client::new(addrs[0]).await;
    v4.announce(6881, 0, Event::Started, -1).await;
    let a = Client::new(addrs[1]).await;
    assert!(
        peers(&a.announce(6881, 0, Event::Started, -1).await).is_empty(),
        "no IPv4 peer in an IPv6 answer"
    );
    let b = Client::new(addrs[1]).await;
    assert_eq!(
        peers(&b.announce(6882, 1, Event::Started, -1).await),
        ["[::1]:6881".parse::<SocketAddr>().unwrap()]
    );
}
