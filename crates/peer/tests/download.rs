//! The multi-source downloader against real piece servers on loopback (and, where a peer must
//! misbehave in a precise way, a small fake one): corrupt peers, dying peers, resume.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use troca_net::{Connection, NoProgress, Progress};
use troca_peer::download::{download, Options, Wanted};
use troca_peer::library::PARTIAL_DIR;
use troca_peer::{Library, ServerConfig};
use troca_proto::msg::{Bitfield, PieceData, PieceHashes, Welcome};
use troca_proto::pieces::Layout;
use troca_proto::tracker::PeerAddr;
use troca_proto::{Message, MAX_FRAME_LEN, PROTOCOL_VERSION};

/// The pieces of files this small (sizes and rates below are counted in them).
const PIECE: usize = troca_proto::pieces::MIN_PIECE as usize;

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut h = blake3::Hasher::new();
    h.update(&[seed]);
    let mut reader = h.finalize_xof();
    out.resize(len, 0);
    reader.fill(&mut out);
    out
}

/// A real peer server sharing `dir`, stopped when the token is cancelled.
async fn serve(dir: &Path, config: ServerConfig) -> (SocketAddr, CancellationToken) {
    let library = Arc::new(Library::new(dir.to_path_buf(), false));
    library.scan().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(troca_peer::server::run(
        listener,
        library,
        Arc::default(),
        config,
        stop.clone(),
    ));
    (addr, stop)
}

fn share(data: &[u8], name: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join(name), data).unwrap();
    d
}

fn wanted(data: &[u8], name: &str) -> Wanted {
    Wanted {
        id: *blake3::hash(data).as_bytes(),
        size: data.len() as u64,
        name: name.into(),
    }
}

fn fast_options() -> Options {
    Options {
        stall_timeout: Duration::from_secs(5),
        // These peers serve in plaintext (no identity in their configuration).
        allow_plaintext: true,
        ..Options::default()
    }
}

/// Peers serving in plaintext, as the tracker lists them.
fn plain(addrs: &[SocketAddr]) -> Vec<PeerAddr> {
    addrs
        .iter()
        .map(|&addr| PeerAddr { addr, key: None })
        .collect()
}

#[tokio::test]
async fn a_corrupt_peer_is_dropped_and_the_file_is_still_right() {
    let data = bytes(24 * PIECE + 77, 1);
    let (a, b, c) = (
        share(&data, "f.bin"),
        share(&data, "f.bin"),
        share(&data, "f.bin"),
    );
    // The good peers are held to 12 MiB/s each, so the download lasts about a second: time
    // enough, however loaded the machine, for the corrupt peer to fail as often as it takes to
    // be dropped (else the download could end first, and this test would see it fail once).
    let good = || ServerConfig {
        max_rate: Some(12 * PIECE as u64),
        ..ServerConfig::default()
    };
    let (pa, _sa) = serve(a.path(), good()).await;
    let (pb, _sb) = serve(b.path(), good()).await;
    let (pc, _sc) = serve(c.path(), ServerConfig::default()).await;
    // Peer c's copy rots after it was hashed: same length and modification time, other bytes,
    // so its server keeps offering it under the old id.
    let path = c.path().join("f.bin");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut rotten = data.clone();
    for piece in rotten.chunks_mut(PIECE) {
        piece[0] ^= 0xff;
    }
    std::fs::write(&path, &rotten).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let o = download(
        &wanted(&data, "f.bin"),
        &plain(&[pc, pa, pb]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), data, "the file is exact");
    let bad = o.peers.iter().find(|p| p.addr == pc).unwrap();
    assert_eq!(bad.pieces, 0, "nothing from the corrupt peer was kept");
    assert_eq!(bad.bad_pieces, Options::default().max_failures);
    assert!(bad
        .dropped
        .as_deref()
        .unwrap()
        .contains("failed verification"));
    for good in o.peers.iter().filter(|p| p.addr != pc) {
        assert!(good.dropped.is_none(), "{good:?}");
        assert!(good.pieces > 0, "{} did its share", good.addr);
    }
    assert!(!out.path().join(PARTIAL_DIR).exists(), "no partial left");
}

/// `data`'s piece layout and piece hashes.
fn pieces_of(data: &[u8]) -> (Layout, Vec<troca_proto::Hash>) {
    let layout = Layout::for_len(data.len() as u64);
    let hashes = (0..layout.count())
        .map(|i| {
            let (start, len) = layout.range(i);
            layout.piece_hash(i, &data[start as usize..(start + len) as usize])
        })
        .collect();
    (layout, hashes)
}

/// A peer that gives `data`'s piece hashes and then `pieces_before_dying` good pieces, then
/// cuts the connection mid-piece and stops accepting new ones, as a killed process would.
async fn dying_peer(data: Vec<u8>, pieces_before_dying: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (layout, hashes) = pieces_of(&data);
    let data = Arc::new(data);
    let served = Arc::new(AtomicU64::new(0));
    let dead = CancellationToken::new();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = dead.cancelled() => return,
                r = listener.accept() => r.unwrap(),
            };
            let (data, hashes, served, dead) =
                (data.clone(), hashes.clone(), served.clone(), dead.clone());
            tokio::spawn(async move {
                let mut conn = Connection::new(stream);
                loop {
                    let msg = tokio::select! {
                        _ = dead.cancelled() => return,
                        m = conn.read_message() => m,
                    };
                    match msg {
                        Ok(Some(Message::Hello(_))) => conn.queue(
                            &Welcome {
                                version: PROTOCOL_VERSION,
                                server: "dying".into(),
                                max_frame: MAX_FRAME_LEN as u32,
                            }
                            .into(),
                        ),
                        Ok(Some(Message::Pieces(_))) => conn.queue(
                            &PieceHashes {
                                size: data.len() as u64,
                                hashes: hashes.clone(),
                                last: true,
                            }
                            .into(),
                        ),
                        Ok(Some(Message::Holding(h))) => conn.queue(
                            &Bitfield::of(h.id, &vec![true; layout.count() as usize]).into(),
                        ),
                        Ok(Some(Message::GetPiece(g))) => {
                            let (start, len) = layout.range(g.index.into());
                            let (start, len) = (start as usize, len as usize);
                            conn.queue(
                                &PieceData {
                                    index: g.index,
                                    len: len as u64,
                                }
                                .into(),
                            );
                            let n = served.fetch_add(1, Ordering::SeqCst);
                            if n as usize >= pieces_before_dying {
                                // Half a piece, then gone for good. The write side closes
                                // first and the requests still coming are read and ignored:
                                // closing with unread requests would send a reset, which
                                // can throw away pieces the client has not read yet, and this
                                // test counts them.
                                conn.queue_raw(&data[start..start + len / 2]);
                                let _ = conn.shutdown().await;
                                dead.cancel();
                                while let Ok(Some(_)) = conn.read_message().await {}
                                return;
                            }
                            conn.queue_raw(&data[start..start + len]);
                        }
                        _ => return,
                    }
                    if conn.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_peer_that_dies_mid_download_costs_only_its_in_flight_pieces() {
    let data = bytes(16 * PIECE, 2);
    let a = share(&data, "f.bin");
    // The healthy peer is slow, so the dying one is surely asked for pieces before it dies.
    let slow = ServerConfig {
        max_rate: Some(16 * PIECE as u64),
        ..ServerConfig::default()
    };
    let (pa, _sa) = serve(a.path(), slow).await;
    let dying = dying_peer(data.clone(), 3).await;
    let out = tempfile::tempdir().unwrap();
    let o = download(
        &wanted(&data, "f.bin"),
        &plain(&[dying, pa]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
    let d = o.peers.iter().find(|p| p.addr == dying).unwrap();
    assert_eq!(d.pieces, 3, "the pieces it gave before dying were kept");
    assert!(d.dropped.is_some());
    let a = o.peers.iter().find(|p| p.addr == pa).unwrap();
    assert!(a.pieces >= 13, "the other peer made up for it");
}

/// Counts bytes as they are verified and written.
#[derive(Default)]
struct Count(AtomicU64);
impl Progress for Count {
    fn advance(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn an_interrupted_download_resumes_from_its_verified_pieces() {
    let data = bytes(20 * PIECE, 3);
    let a = share(&data, "movie.mkv");
    let slow = ServerConfig {
        max_rate: Some(8 * PIECE as u64),
        ..ServerConfig::default()
    };
    let (slow_peer, stop_slow) = serve(a.path(), slow).await;
    let out = tempfile::tempdir().unwrap();
    let want = wanted(&data, "movie.mkv");
    let count = Arc::new(Count::default());
    let progress = Arc::clone(&count);
    let first = tokio::time::timeout(
        Duration::from_millis(1500),
        download(
            &want,
            &plain(&[slow_peer]),
            out.path(),
            &fast_options(),
            progress,
        ),
    )
    .await;
    assert!(first.is_err(), "the first try was cut short");
    stop_slow.cancel();
    let held = count.0.load(Ordering::Relaxed);
    assert!(
        held >= 2 * PIECE as u64,
        "some pieces arrived first ({held} bytes)"
    );
    let hex = blake3::Hash::from_bytes(want.id).to_hex();
    let part = out.path().join(PARTIAL_DIR).join(format!("{hex}.part"));
    assert!(out
        .path()
        .join(PARTIAL_DIR)
        .join(format!("{hex}.pieces"))
        .exists());
    assert!(
        !out.path().join("movie.mkv").exists(),
        "nothing under the real name"
    );
    // Spoil the first held piece (pieces come in no fixed order): the record says verified,
    // the bytes say otherwise, so it is fetched again rather than trusted. The record is
    // `TRSP`, the id, the size, then a bit per piece.
    let record = std::fs::read(part.with_extension("pieces")).unwrap();
    let bits = &record[4 + 32 + 8..];
    let first = (0..bits.len() * 8)
        .find(|i| bits[i / 8] & (1 << (i % 8)) != 0)
        .expect("a piece is held");
    let f = std::fs::File::options().write(true).open(&part).unwrap();
    let at = first as u64 * PIECE as u64 + 10;
    std::os::unix::fs::FileExt::write_all_at(&f, b"spoiled", at).unwrap();
    drop(f);

    let b = share(&data, "movie.mkv");
    let (fast_peer, _s) = serve(b.path(), ServerConfig::default()).await;
    let count = Arc::new(Count::default());
    let o = download(
        &want,
        &plain(&[fast_peer]),
        out.path(),
        &fast_options(),
        Arc::clone(&count),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
    let held_pieces = held / PIECE as u64;
    assert_eq!(
        o.resumed_pieces,
        held_pieces - 1,
        "all held pieces but the spoiled one"
    );
    assert_eq!(
        count.0.load(Ordering::Relaxed),
        data.len() as u64 - o.resumed_pieces * PIECE as u64,
        "only the missing pieces were downloaded"
    );
    assert!(!out.path().join(PARTIAL_DIR).exists());
}

#[tokio::test]
async fn a_download_never_overwrites_a_local_file() {
    let data = bytes(3 * PIECE, 4);
    let a = share(&data, "photo.png");
    let (pa, _s) = serve(a.path(), ServerConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("photo.png"), b"mine").unwrap();
    let o = download(
        &wanted(&data, "photo.png"),
        &plain(&[pa]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(o.path, out.path().join("photo_downloaded.png"));
    assert_eq!(
        std::fs::read(out.path().join("photo.png")).unwrap(),
        b"mine"
    );
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
}

#[tokio::test]
async fn when_every_peer_is_gone_the_error_says_so_and_keeps_what_arrived() {
    let data = bytes(6 * PIECE, 5);
    let dying = dying_peer(data.clone(), 2).await;
    let out = tempfile::tempdir().unwrap();
    let want = wanted(&data, "f.bin");
    let err = download(
        &want,
        &plain(&[dying]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("4 of 6 pieces still missing"), "{msg}");
    assert!(
        msg.contains("run the same command again to resume"),
        "{msg}"
    );
    let hex = blake3::Hash::from_bytes(want.id).to_hex();
    assert!(out
        .path()
        .join(PARTIAL_DIR)
        .join(format!("{hex}.part"))
        .exists());
    assert!(!out.path().join("f.bin").exists());
}

#[tokio::test]
async fn the_end_does_not_wait_for_the_slowest_peer() {
    let data = bytes(8 * PIECE, 6);
    let (a, b) = (share(&data, "f.bin"), share(&data, "f.bin"));
    // So slow that one piece from it would take 16 s: if the download waited for the pieces it
    // was asked for, it would end with pieces from it. In the end game the fast peer fetches
    // them too, and the first good copy wins.
    let crawl = ServerConfig {
        max_rate: Some(64 * 1024),
        ..ServerConfig::default()
    };
    let (slow, _s1) = serve(a.path(), crawl).await;
    let (fast, _s2) = serve(b.path(), ServerConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    let o = download(
        &wanted(&data, "f.bin"),
        &plain(&[slow, fast]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
    let s = o.peers.iter().find(|p| p.addr == slow).unwrap();
    let f = o.peers.iter().find(|p| p.addr == fast).unwrap();
    assert_eq!(s.pieces, 0, "nothing waited for the slow peer: {s:?}");
    assert_eq!(f.pieces, 8, "the fast peer fetched every piece: {f:?}");
    assert!(s.dropped.is_none(), "a slow peer is not a bad one");
}

/// A peer that claims every piece in its bitfield but refuses each piece asked of it.
async fn bitfield_liar(data: &[u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (layout, hashes) = pieces_of(data);
    let size = data.len() as u64;
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let hashes = hashes.clone();
            tokio::spawn(async move {
                let mut conn = Connection::new(stream);
                while let Ok(Some(msg)) = conn.read_message().await {
                    let answer: Message = match msg {
                        Message::Hello(_) => Welcome {
                            version: PROTOCOL_VERSION,
                            server: "liar".into(),
                            max_frame: MAX_FRAME_LEN as u32,
                        }
                        .into(),
                        Message::Pieces(_) => PieceHashes {
                            size,
                            hashes: hashes.clone(),
                            last: true,
                        }
                        .into(),
                        Message::Holding(h) => {
                            Bitfield::of(h.id, &vec![true; layout.count() as usize]).into()
                        }
                        Message::GetPiece(g) => troca_proto::msg::Error::new(
                            troca_proto::ErrorCode::NotFound,
                            format!("piece {} is not here yet", g.index),
                        )
                        .into(),
                        _ => return,
                    };
                    if conn.send(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_peer_lying_in_its_bitfield_is_dropped_and_the_download_completes() {
    let data = bytes(12 * PIECE, 9);
    let a = share(&data, "f.bin");
    // The honest peer is slow, so the liar is surely asked (and found out) meanwhile.
    let slow = ServerConfig {
        max_rate: Some(12 * PIECE as u64),
        ..ServerConfig::default()
    };
    let (honest, _s) = serve(a.path(), slow).await;
    let liar = bitfield_liar(&data).await;
    let out = tempfile::tempdir().unwrap();
    let o = download(
        &wanted(&data, "f.bin"),
        &plain(&[liar, honest]),
        out.path(),
        &fast_options(),
        Arc::new(NoProgress),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
    let l = o.peers.iter().find(|p| p.addr == liar).unwrap();
    assert_eq!(l.pieces, 0);
    assert_eq!(l.bad_pieces, Options::default().max_failures, "{l:?}");
    assert!(l.dropped.is_some(), "{l:?}");
    let h = o.peers.iter().find(|p| p.addr == honest).unwrap();
    assert_eq!(h.pieces, 12, "the honest peer gave every piece");
}

/// A download shared while it runs (`Options::share`) offers, from the start of a resume, the
/// pieces an interrupted attempt left verified.
#[tokio::test]
async fn a_resumed_download_shares_the_pieces_it_already_holds() {
    let data = bytes(12 * PIECE, 4);
    let a = share(&data, "f.bin");
    let slow = ServerConfig {
        max_rate: Some(6 * PIECE as u64),
        ..ServerConfig::default()
    };
    let (peer, _s) = serve(a.path(), slow).await;
    let out = tempfile::tempdir().unwrap();
    let want = wanted(&data, "f.bin");
    // A first attempt, stopped once two pieces are in.
    let count = Arc::new(Count::default());
    let first = {
        let (want, dir, count) = (want.clone(), out.path().to_path_buf(), Arc::clone(&count));
        tokio::spawn(
            async move { download(&want, &plain(&[peer]), &dir, &fast_options(), count).await },
        )
    };
    while count.0.load(Ordering::Relaxed) < 2 * PIECE as u64 {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.abort();
    let _ = first.await;
    let held = count.0.load(Ordering::Relaxed) / PIECE as u64;

    let partials = Arc::new(troca_peer::partial::Partials::default());
    let options = Options {
        share: Some(Arc::clone(&partials)),
        ..fast_options()
    };
    let second = {
        let (want, dir) = (want.clone(), out.path().to_path_buf());
        tokio::spawn(async move {
            download(&want, &plain(&[peer]), &dir, &options, Arc::new(NoProgress)).await
        })
    };
    let partial = loop {
        if let Some(p) = partials.get(&want.id) {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let offered = (0..12).filter(|&i| partial.holds(i)).count() as u64;
    assert!(
        offered >= held,
        "{offered} pieces offered, {held} were held"
    );
    let o = second.await.unwrap().unwrap();
    assert!(o.resumed_pieces >= held);
    assert_eq!(std::fs::read(&o.path).unwrap(), data);
    assert!(
        (0..12).all(|i| partial.holds(i)),
        "every piece offered by the end"
    );
}
