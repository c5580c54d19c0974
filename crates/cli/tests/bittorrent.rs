//! A real BitTorrent client (Debian's aria2c) uses `troca tracker` over BEP 15: a seeder and a
//! leecher find each other through it and the file goes across. `scripts/test` installs aria2.

mod common;
use common::*;
use sha1::{Digest, Sha1};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bencodes a small value tree.
enum B<'a> {
    Int(u64),
    Bytes(&'a [u8]),
    Dict(Vec<(&'a str, B<'a>)>),
}

fn bencode(v: &B<'_>, out: &mut Vec<u8>) {
    match v {
        B::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
        B::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        B::Dict(items) => {
            out.push(b'd');
            // Keys in order, as the format requires.
            let mut items: Vec<&(&str, B<'_>)> = items.iter().collect();
            items.sort_by_key(|(k, _)| *k);
            for (k, v) in items {
                bencode(&B::Bytes(k.as_bytes()), out);
                bencode(v, out);
            }
            out.push(b'e');
        }
    }
}

fn aria2c(dir: &std::path::Path, torrent: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = Command::new("aria2c");
    c.arg(format!("--dir={}", dir.display()))
        // aria2 speaks UDP trackers through its DHT socket, so DHT must be on; with no entry
        // points and its own state file it talks to nobody else.
        .args(["--enable-dht=true", "--enable-dht6=false"])
        .arg(format!("--dht-listen-port={}", free_port()))
        .arg(format!("--dht-file-path={}/dht.dat", dir.display()))
        .args([
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-tracker-connect-timeout=5",
            "--bt-tracker-interval=1",
            "--summary-interval=0",
            "--console-log-level=warn",
            "--check-integrity=true",
        ])
        .arg(format!("--listen-port={}", free_port()))
        .args(extra)
        .arg(torrent)
        .stdin(Stdio::null());
    c
}

#[test]
fn aria2c_clients_share_a_file_through_a_troca_tracker() {
    if !needs("aria2c", "a real BitTorrent client") {
        return;
    }
    let s = Scratch::new();
    let tracker = Daemon::start(&["tracker", "--listen", "127.0.0.1:0", "--stats-every", "0"]);
    let seed_dir = s.tmp.path().join("seed");
    let leech_dir = s.tmp.path().join("leech");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::create_dir_all(&leech_dir).unwrap();
    let data_path = seed_dir.join("shared.bin");
    random_file(&data_path, 300 * 1024, "bittorrent");
    let data = std::fs::read(&data_path).unwrap();

    let piece = 32 * 1024;
    let pieces: Vec<u8> = data
        .chunks(piece)
        .flat_map(|c| Sha1::digest(c).to_vec())
        .collect();
    let announce = format!("udp://{}/announce", tracker.addr);
    let torrent = B::Dict(vec![
        ("announce", B::Bytes(announce.as_bytes())),
        (
            "info",
            B::Dict(vec![
                ("length", B::Int(data.len() as u64)),
                ("name", B::Bytes(b"shared.bin")),
                ("piece length", B::Int(piece as u64)),
                ("pieces", B::Bytes(&pieces)),
            ]),
        ),
    ]);
    let mut bytes = Vec::new();
    bencode(&torrent, &mut bytes);
    let torrent_path = s.tmp.path().join("shared.torrent");
    std::fs::write(&torrent_path, bytes).unwrap();

    // The seeder has the whole file and seeds until killed.
    let mut seeder = aria2c(&seed_dir, &torrent_path, &["--seed-ratio=0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("aria2c is installed (scripts/test installs aria2)");
    // Wait until the tracker knows the seeder (a BEP 15 scrape says so), so the leecher's first
    // answer lists it.
    let info_hash: [u8; 20] = {
        let mut info = Vec::new();
        let B::Dict(items) = &torrent else {
            unreachable!()
        };
        bencode(&items[1].1, &mut info);
        Sha1::digest(&info).into()
    };
    let started = Instant::now();
    while scrape_seeders(&tracker.addr, info_hash) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the seeder never announced"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let leecher = aria2c(&leech_dir, &torrent_path, &["--seed-time=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = leecher.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: plain kill(2) of a child that may already have exited.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    let out = leecher.wait_with_output().unwrap();
    let _ = seeder.kill();
    let _ = seeder.wait();
    drop(watchdog);
    assert!(
        out.status.success(),
        "aria2c failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(leech_dir.join("shared.bin")).unwrap(), data);
}

/// Seeders of `info_hash` according to the tracker, by BEP 15 connect + scrape.
fn scrape_seeders(tracker: &str, info_hash: [u8; 20]) -> u32 {
    use troca_proto::bep15::{Request, Response};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let ask = |req: Request| {
        let mut out = Vec::new();
        req.encode(&mut out);
        socket.send_to(&out, tracker).unwrap();
        let mut buf = [0u8; 1500];
        let n = socket.recv(&mut buf).unwrap();
        Response::decode(&buf[..n], false).unwrap()
    };
    let Response::Connect { connection_id, .. } = ask(Request::Connect { transaction_id: 1 })
    else {
        panic!("no connect answer");
    };
    match ask(Request::Scrape {
        connection_id,
        transaction_id: 2,
        info_hashes: vec![info_hash],
    }) {
        Response::Scrape { stats, .. } => stats[0].seeders,
        other => panic!("{other:?}"),
    }
}
