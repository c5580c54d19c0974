//! The tracker on a real UDP socket (port 0), driven by the real client: register, list, update,
//! leave; secrets; cookies and amplification; paging; expiry; limits; malformed packets.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use troca_proto::tracker::{
    codes, Answer, Datagram, FileInfo, Request, UpdateMode, CONNECT_LEN, MAX_DATAGRAM,
};
use troca_tracker::client::{TrackerClient, TrackerError};
use troca_tracker::{run, Stats, TrackerConfig};

struct Tracker {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn tracker(config: TrackerConfig) -> Tracker {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    tokio::spawn(run(socket, config, Arc::clone(&stats), stop.clone()));
    Tracker { addr, stats, stop }
}

fn file(name: &str) -> FileInfo {
    FileInfo {
        id: *blake3::hash(name.as_bytes()).as_bytes(),
        size: name.len() as u64,
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn peers_register_list_update_and_leave() {
    let t = tracker(TrackerConfig::default()).await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    let mut b = TrackerClient::new(t.addr).await.unwrap();
    a.register(7001, [1; 16], None, &[file("x.png"), file("y.png")])
        .await
        .unwrap();
    b.register(7002, [2; 16], None, &[file("y.png"), file("z.txt")])
        .await
        .unwrap();

    let all = a.list("", None).await.unwrap();
    assert_eq!(all.len(), 3);
    let y = all.iter().find(|l| l.file.name == "y.png").unwrap();
    let mut ports: Vec<u16> = y.peers.iter().map(|p| p.addr.port()).collect();
    ports.sort();
    assert_eq!(ports, [7001, 7002]);
    assert!(
        y.peers.iter().all(|p| p.addr.ip().is_loopback()),
        "the source address, not a claimed one"
    );
    assert_eq!(a.list("png", None).await.unwrap().len(), 2);
    assert_eq!(
        a.list("", Some(file("z.txt").id)).await.unwrap()[0]
            .file
            .name,
        "z.txt"
    );

    a.update([1; 16], UpdateMode::Remove, &[file("y.png")])
        .await
        .unwrap();
    a.update([1; 16], UpdateMode::Add, &[file("w.gif")])
        .await
        .unwrap();
    let all = b.list("", None).await.unwrap();
    assert_eq!(
        all.iter()
            .find(|l| l.file.name == "y.png")
            .unwrap()
            .peers
            .len(),
        1
    );
    assert!(all.iter().any(|l| l.file.name == "w.gif"));

    a.end([1; 16]).await.unwrap();
    let names: Vec<String> = b
        .list("", None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.file.name)
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"y.png".to_owned()) && names.contains(&"z.txt".to_owned()));
}

#[tokio::test]
async fn update_and_end_need_the_secret_given_at_registration() {
    let t = tracker(TrackerConfig::default()).await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    a.register(7001, [1; 16], None, &[file("a")]).await.unwrap();
    let wrong = a
        .update([9; 16], UpdateMode::Replace, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            wrong,
            TrackerError::Refused {
                code: codes::WRONG_SECRET,
                ..
            }
        ),
        "{wrong}"
    );
    let wrong = a.end([9; 16]).await.unwrap_err();
    assert!(matches!(
        wrong,
        TrackerError::Refused {
            code: codes::WRONG_SECRET,
            ..
        }
    ));
    let wrong = a.register(7001, [9; 16], None, &[]).await.unwrap_err();
    assert!(matches!(
        wrong,
        TrackerError::Refused {
            code: codes::WRONG_SECRET,
            ..
        }
    ));
    assert_eq!(a.list("", None).await.unwrap().len(), 1, "still registered");
    // Another address cannot end someone else's registration: it is not registered at all.
    let mut b = TrackerClient::new(t.addr).await.unwrap();
    let e = b.end([1; 16]).await.unwrap_err();
    assert!(matches!(
        e,
        TrackerError::Refused {
            code: codes::NOT_REGISTERED,
            ..
        }
    ));
}

async fn raw(t: &Tracker, packet: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(packet, t.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn without_a_valid_cookie_no_answer_is_larger_than_the_request() {
    let t = tracker(TrackerConfig::default()).await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    a.register(
        7001,
        [1; 16],
        None,
        &(0..30)
            .map(|i| file(&format!("file-{i}")))
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();

    // A listing (which would be large) with a forged or missing cookie.
    for cookie in [0u64, 12345] {
        let mut req = Vec::new();
        Datagram {
            txn: 7,
            cookie,
            body: Request::List {
                filter: String::new(),
                id: None,
                cursor: 0,
                whole_name: false,
            },
        }
        .encode(&mut req);
        let answer = raw(&t, &req).await.expect("a small refusal");
        assert!(
            answer.len() <= req.len(),
            "{} > {}",
            answer.len(),
            req.len()
        );
        let d = Datagram::<Answer>::decode(&answer).unwrap();
        assert!(matches!(
            d.body,
            Answer::Error {
                code: codes::BAD_COOKIE,
                ..
            }
        ));
        assert_eq!(d.txn, 7);
    }
    // A connect without its padding gets nothing; garbage gets nothing.
    let mut connect = Vec::new();
    Datagram {
        txn: 1,
        cookie: 0,
        body: Request::Connect,
    }
    .encode(&mut connect);
    assert_eq!(connect.len(), CONNECT_LEN);
    assert!(raw(&t, &connect[..12]).await.is_none());
    assert!(raw(&t, b"GET / HTTP/1.1\r\n\r\n").await.is_none());
    assert!(raw(&t, &[]).await.is_none());
    assert!(t.stats.dropped.load(Ordering::Relaxed) >= 3);
    assert!(t.stats.bad_cookies.load(Ordering::Relaxed) >= 2);
    // ... and the tracker still serves.
    assert_eq!(a.list("", None).await.unwrap().len(), 30);
}

#[tokio::test]
async fn thousands_of_files_are_registered_and_listed_in_pages() {
    let t = tracker(TrackerConfig::default()).await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    let files: Vec<FileInfo> = (0..3000)
        .map(|i| file(&format!("photo-{i:05}.jpg")))
        .collect();
    a.register(7001, [1; 16], None, &files).await.unwrap();
    let listed = a.list("", None).await.unwrap();
    assert_eq!(listed.len(), 3000);
    let mut names: Vec<&str> = listed.iter().map(|l| l.file.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3000, "no file twice, none missing");
    // Every page fits the datagram limit.
    let mut c = TrackerClient::new(t.addr).await.unwrap();
    c.list("", None).await.unwrap(); // gets a cookie
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut connect = Vec::new();
    Datagram {
        txn: 1,
        cookie: 0,
        body: Request::Connect,
    }
    .encode(&mut connect);
    s.send_to(&connect, t.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).await.unwrap();
    let Answer::Cookie(cookie) = Datagram::<Answer>::decode(&buf[..n]).unwrap().body else {
        panic!()
    };
    let mut req = Vec::new();
    Datagram {
        txn: 2,
        cookie,
        body: Request::List {
            filter: String::new(),
            id: None,
            cursor: 0,
            whole_name: false,
        },
    }
    .encode(&mut req);
    s.send_to(&req, t.addr).await.unwrap();
    let (n, _) = s.recv_from(&mut buf).await.unwrap();
    assert!(n <= MAX_DATAGRAM, "a page of {n} bytes");
}

#[tokio::test]
async fn registrations_expire_unless_refreshed() {
    let t = tracker(TrackerConfig {
        lifetime: Duration::from_millis(300),
        ..TrackerConfig::default()
    })
    .await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    let mut b = TrackerClient::new(t.addr).await.unwrap();
    a.register(7001, [1; 16], None, &[file("a")]).await.unwrap();
    b.register(7002, [2; 16], None, &[file("b")]).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        b.update([2; 16], UpdateMode::Add, &[]).await.unwrap(); // b refreshes, a does not
    }
    let names: Vec<String> = b
        .list("", None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.file.name)
        .collect();
    assert_eq!(names, ["b"]);
}

#[tokio::test]
async fn limits_on_files_per_peer_and_peers_per_address() {
    let t = tracker(TrackerConfig {
        max_files_per_peer: 5,
        max_peers_per_ip: 2,
        ..TrackerConfig::default()
    })
    .await;
    let mut a = TrackerClient::new(t.addr).await.unwrap();
    let six: Vec<FileInfo> = (0..6).map(|i| file(&i.to_string())).collect();
    let e = a.register(7001, [1; 16], None, &six).await.unwrap_err();
    assert!(matches!(
        e,
        TrackerError::Refused {
            code: codes::TOO_MANY_FILES,
            ..
        }
    ));
    a.register(7001, [1; 16], None, &six[..5]).await.unwrap();
    let mut b = TrackerClient::new(t.addr).await.unwrap();
    b.register(7002, [2; 16], None, &[]).await.unwrap();
    let mut c = TrackerClient::new(t.addr).await.unwrap();
    let e = c.register(7003, [3; 16], None, &[]).await.unwrap_err();
    assert!(matches!(
        e,
        TrackerError::Refused {
            code: codes::TOO_MANY_PEERS,
            ..
        }
    ));
}
