//! A whole peer (`Peer::start`) against an in-process tracker: what the tracker hears when the
//! folder changes, when the peer stops, and finding files by name and id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use troca_net::NoProgress;
use troca_peer::{download, Error, LookupError, Peer, PeerConfig, ServerConfig};
use troca_proto::tracker::{Listed, PeerAddr};
use troca_tracker::client::TrackerClient;
use troca_tracker::{Stats, TrackerConfig};

async fn tracker() -> (SocketAddr, CancellationToken) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(troca_tracker::run(
        socket,
        TrackerConfig::default(),
        Arc::new(Stats::default()),
        stop.clone(),
    ));
    (addr, stop)
}

async fn peer(dir: &std::path::Path, tracker: SocketAddr) -> Arc<Peer> {
    peer_refreshing(dir, tracker, Duration::from_secs(60)).await
}

async fn peer_refreshing(
    dir: &std::path::Path,
    tracker: SocketAddr,
    refresh: Duration,
) -> Arc<Peer> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = PeerConfig {
        share_folder: true,
        dir: dir.to_path_buf(),
        only_images: false,
        tracker,
        refresh,
        server: ServerConfig::default(),
        download: download::Options::default(),
        // Every peer of the test run shares one identity, as a user's peers do.
        identity: Some(Arc::new(
            troca_net::identity::Identity::load_or_create(
                &std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("peer-state"),
            )
            .unwrap(),
        )),
    };
    Peer::start(listener, config, CancellationToken::new())
        .await
        .unwrap()
}

async fn names(tracker: SocketAddr) -> Vec<String> {
    let mut c = TrackerClient::new(tracker).await.unwrap();
    let mut v: Vec<String> = c
        .list("", None)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.file.name)
        .collect();
    v.sort();
    v
}

/// Polls the tracker until `check` holds (the watcher reacts within a second or so).
async fn until(tracker: SocketAddr, what: &str, check: impl Fn(&[String]) -> bool) {
    for _ in 0..100 {
        if check(&names(tracker).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "timed out waiting for: {what}; tracker has {:?}",
        names(tracker).await
    );
}

#[tokio::test]
async fn the_tracker_hears_of_files_that_appear_change_and_go() {
    let (t, _stop) = tracker().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("first.txt"), b"1").unwrap();
    let p = peer(dir.path(), t).await;
    assert_eq!(names(t).await, ["first.txt"], "registered at start");

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/second.txt"), b"2").unwrap();
    until(t, "a new file in a new folder", |n| {
        n == ["first.txt", "sub/second.txt"]
    })
    .await;

    std::fs::write(dir.path().join("first.txt"), b"changed").unwrap();
    let new_id = *blake3::hash(b"changed").as_bytes();
    for _ in 0..100 {
        let mut c = TrackerClient::new(t).await.unwrap();
        if !c.list("", Some(new_id)).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = TrackerClient::new(t).await.unwrap();
    let old = c
        .list("", Some(*blake3::hash(b"1").as_bytes()))
        .await
        .unwrap();
    assert!(old.is_empty(), "the old contents are no longer offered");
    assert_eq!(c.list("", Some(new_id)).await.unwrap().len(), 1);

    std::fs::remove_file(dir.path().join("sub/second.txt")).unwrap();
    until(t, "the removal", |n| n == ["first.txt"]).await;

    p.stop().await.unwrap();
    assert!(names(t).await.is_empty(), "END at stop removes everything");
}

#[tokio::test]
async fn a_name_with_two_different_contents_is_an_error_listing_both_ids() {
    let (t, _stop) = tracker().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(a.path().join("notes.txt"), b"version one").unwrap();
    std::fs::write(b.path().join("notes.txt"), b"version two").unwrap();
    let _pa = peer(a.path(), t).await;
    let _pb = peer(b.path(), t).await;
    let out = tempfile::tempdir().unwrap();
    let me = peer(out.path(), t).await;
    let err = me
        .fetch("notes.txt", Arc::new(NoProgress))
        .await
        .unwrap_err();
    let Error::Lookup(LookupError::Ambiguous { choices, .. }) = &err else {
        panic!("expected ambiguity, got {err}");
    };
    for v in [&b"version one"[..], b"version two"] {
        let hex = blake3::hash(v).to_hex();
        assert!(choices.contains(hex.as_str()), "{choices}");
    }
    // Either id (or its first 16 digits, as `swarm ls` prints it) picks one.
    let prefix = &blake3::hash(b"version two").to_hex()[..16];
    let o = me.fetch(prefix, Arc::new(NoProgress)).await.unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), b"version two");
    // What a peer downloads it shares at once.
    let mut c = TrackerClient::new(t).await.unwrap();
    let listed: Vec<Listed> = c
        .list("", Some(*blake3::hash(b"version two").as_bytes()))
        .await
        .unwrap();
    assert_eq!(listed[0].peers.len(), 2, "{listed:?}");
    let mine = PeerAddr {
        addr: me.local_addr(),
        key: me.key(),
    };
    assert!(mine.key.is_some());
    assert!(listed[0].peers.contains(&mine), "listed with its key");
}

#[tokio::test]
async fn an_unknown_name_is_not_found() {
    let (t, _stop) = tracker().await;
    let d = tempfile::tempdir().unwrap();
    let me = peer(d.path(), t).await;
    let err = me
        .fetch("nothing-here", Arc::new(NoProgress))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Lookup(LookupError::NotFound(_))),
        "{err}"
    );
}

#[tokio::test]
async fn a_peer_started_before_its_tracker_registers_once_it_is_up() {
    // The tracker's port is taken but nobody answers yet.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let t = socket.local_addr().unwrap();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("early.txt"), b"early").unwrap();
    let _p = peer_refreshing(d.path(), t, Duration::from_millis(500)).await;
    tokio::spawn(troca_tracker::run(
        socket,
        TrackerConfig::default(),
        Arc::new(Stats::default()),
        CancellationToken::new(),
    ));
    until(t, "a late registration", |n| n == ["early.txt"]).await;
}

/// A tracker that has gone quiet (here a socket that hears and never answers) does not hold a
/// stopping peer for long: the clock is tokio's paused one, so the bound is checked exactly.
#[tokio::test(start_paused = true)]
async fn a_peer_whose_tracker_is_silent_stops_within_the_bound() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    // Start registers, hears nothing, and serves anyway.
    let p = peer(dir.path(), silent.local_addr().unwrap()).await;
    let began = tokio::time::Instant::now();
    let stopped = p.stop().await;
    assert!(
        matches!(
            stopped,
            Err(Error::Tracker(
                troca_tracker::client::TrackerError::NoAnswer(_)
            ))
        ),
        "{stopped:?}"
    );
    assert!(
        began.elapsed() <= troca_peer::LEAVE_WITHIN,
        "stopping took {:?}",
        began.elapsed()
    );
    let mut heard = [0u8; 2048];
    assert!(
        silent.try_recv_from(&mut heard).is_ok(),
        "the peer tried to tell the tracker"
    );
}
