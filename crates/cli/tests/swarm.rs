//! The swarm from the outside: `troca tracker`, `troca peer` processes and `troca swarm ls|get`.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use troca_proto::tracker::FileInfo;
use troca_tracker::client::TrackerClient;

fn start_tracker() -> Daemon {
    Daemon::start(&["tracker", "--listen", "127.0.0.1:0"])
}

/// `troca peer DIR` registered with `tracker`, with extra `args`.
fn start_peer(dir: &Path, tracker: &Daemon, args: &[&str]) -> Daemon {
    start_peer_with_lines(dir, tracker, args, 0).0
}

/// [`start_peer`], also returning the `extra` lines it prints after `listening on`.
fn start_peer_with_lines(
    dir: &Path,
    tracker: &Daemon,
    args: &[&str],
    extra: usize,
) -> (Daemon, Vec<String>) {
    let mut all = vec![
        "peer".as_ref(),
        dir.as_os_str(),
        "--tracker".as_ref(),
        tracker.addr.as_ref(),
    ];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    Daemon::start_with_lines(&all, extra)
}

fn swarm(tracker: &Daemon, cwd: &Path, args: &[&str]) -> Output {
    Command::new(TROCA)
        .current_dir(cwd)
        .env("TROCA_TRACKER", &tracker.addr)
        .args(args)
        .output()
        .unwrap()
}

/// A folder for a seeder holding one random file `name` of `bytes`; returns the folder.
fn seeder_folder(s: &Scratch, name: &str, bytes: u64) -> std::path::PathBuf {
    let dir = s.tmp.path().join("seeder");
    std::fs::create_dir(&dir).unwrap();
    random_file(&dir.join(name), bytes, name);
    dir
}

/// `n` downloaders started at once, each running `troca ARGS` in its own folder (`downI`).
fn downloaders(
    s: &Scratch,
    t: &Daemon,
    n: usize,
    args: &[&str],
) -> Vec<(std::path::PathBuf, std::process::Child)> {
    (0..n)
        .map(|i| {
            let dir = s.tmp.path().join(format!("down{i}"));
            std::fs::create_dir(&dir).unwrap();
            let child = Command::new(TROCA)
                .current_dir(&dir)
                .env("TROCA_TRACKER", &t.addr)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (dir, child)
        })
        .collect()
}

/// The names the tracker lists, sorted.
fn listed(tracker: &Daemon) -> Vec<String> {
    let out = swarm(tracker, Path::new("."), &["--json", "swarm", "ls"]);
    let rows = json(&out);
    let mut v: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn swarm_ls_shows_what_peers_registered() {
    let t = start_tracker();
    let mut peer = TrackerClient::new(t.addr.parse().unwrap()).await.unwrap();
    let file = FileInfo {
        id: *blake3::hash(b"img").as_bytes(),
        size: 3,
        name: "cat.png".into(),
    };
    peer.register(9000, [7; 16], None, &[file]).await.unwrap();
    let out = Command::new(TROCA)
        .args(["--json", "swarm", "ls", "--tracker", &t.addr])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(rows[0]["name"], "cat.png");
    assert_eq!(rows[0]["id"], blake3::hash(b"img").to_hex().as_str());
    assert_eq!(rows[0]["peers"][0], "127.0.0.1:9000");
    let out = Command::new(TROCA)
        .args(["swarm", "ls", "--tracker", &t.addr, "dog"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "", "the filter leaves nothing");
}

#[test]
fn a_file_comes_from_three_peers_and_a_peer_killed_midway_costs_nothing() {
    let s = Scratch::new();
    let t = start_tracker();
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    for i in 0..3 {
        let d = s.tmp.path().join(format!("peer{i}"));
        std::fs::create_dir(&d).unwrap();
        if i == 0 {
            random_file(&d.join("big.bin"), 40 << 20, "swarm");
        } else {
            std::fs::copy(dirs[0].join("big.bin"), d.join("big.bin")).unwrap();
        }
        dirs.push(d);
    }
    // Capped uploads make the download take a few seconds, so a peer can die in the middle.
    let mut peers: Vec<Option<Daemon>> = dirs
        .iter()
        .map(|d| Some(start_peer(d, &t, &["--max-rate", "6M"])))
        .collect();
    let get = Command::new(TROCA)
        .current_dir(&s.client)
        .env("TROCA_TRACKER", &t.addr)
        .args(["--json", "swarm", "get", "big.bin"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill one peer once some pieces have arrived.
    let record_dir = s.client.join(".troca-swarm");
    let started = std::time::Instant::now();
    while !record_dir.exists() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Some pieces are in: a bit is set past the record's header (magic, id, size).
    let some_piece = || {
        std::fs::read_dir(&record_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pieces"))
            .any(|e| std::fs::read(e.path()).is_ok_and(|r| r.iter().skip(44).any(|&b| b != 0)))
    };
    while !some_piece() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = peers[1].take().unwrap();
    let victim_addr = victim.addr.clone();
    drop(victim); // SIGKILL: no END, connections cut mid-piece.
    let out = get.wait_with_output().unwrap();
    let report = json(&out);
    assert_eq!(
        hash_file(&s.client.join("big.bin")),
        hash_file(&dirs[0].join("big.bin"))
    );
    assert_eq!(report["path"], "./big.bin");
    let rows = report["peers"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{report}");
    let dead = rows
        .iter()
        .find(|r| r["address"] == victim_addr.as_str())
        .unwrap();
    assert!(
        !dead["dropped"].is_null(),
        "the killed peer is reported: {report}"
    );
    for r in rows.iter().filter(|r| r["address"] != victim_addr.as_str()) {
        assert!(r["dropped"].is_null(), "{report}");
        assert!(r["pieces"].as_u64().unwrap() > 0, "{report}");
    }
    assert!(!record_dir.exists(), "the partial folder is gone");
    drop(peers);
}

#[test]
fn only_images_shares_files_by_what_they_contain() {
    let s = Scratch::new();
    let t = start_tracker();
    std::fs::write(
        s.share.join("fake.jpg"),
        "only text pretending to be a JPEG",
    )
    .unwrap();
    std::fs::write(
        s.share.join("real.dat"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
    )
    .unwrap();
    std::fs::write(s.share.join("photo.gif"), b"GIF89a\x01\0\x01\0\0\0\0;").unwrap();
    let _p = start_peer(&s.share, &t, &["--only", "images"]);
    assert_eq!(listed(&t), ["photo.gif", "real.dat"]);
}

#[test]
fn a_peer_tells_the_tracker_about_new_files_and_leaves_when_stopped() {
    let s = Scratch::new();
    let t = start_tracker();
    std::fs::write(s.share.join("one.txt"), "1").unwrap();
    let p = start_peer(&s.share, &t, &[]);
    assert_eq!(listed(&t), ["one.txt"]);
    std::fs::write(s.share.join("two.txt"), "2").unwrap();
    let started = std::time::Instant::now();
    while listed(&t) != ["one.txt", "two.txt"] {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no UPD: {:?}",
            listed(&t)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, err) = p.terminate();
    assert!(status.success(), "{err}");
    assert!(err.contains("leaving the swarm"), "{err}");
    assert!(listed(&t).is_empty(), "END removed its files");
}

/// A tracker gone quiet (a socket that hears and never answers) does not turn stopping a peer
/// into a failure: the peer says so and exits as usual.
#[test]
fn a_peer_whose_tracker_is_silent_still_stops_cleanly() {
    let s = Scratch::new();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    std::fs::write(s.share.join("one.txt"), "1").unwrap();
    let args = [
        "peer".as_ref(),
        s.share.as_os_str(),
        "--tracker".as_ref(),
        addr.as_ref(),
    ];
    let (p, _) = Daemon::start_with_lines(&args, 0);
    let (status, err) = p.terminate();
    assert!(status.success(), "{err}");
    assert!(err.contains("leaving the swarm"), "{err}");
    assert!(err.contains("did not hear this peer leave"), "{err}");
    let mut heard = [0u8; 2048];
    silent.set_nonblocking(true).unwrap();
    assert!(
        silent.recv_from(&mut heard).is_ok(),
        "it tried to tell the tracker"
    );
}

#[test]
fn swarm_get_of_an_ambiguous_name_lists_the_ids() {
    let s = Scratch::new();
    let t = start_tracker();
    let (a, b) = (s.tmp.path().join("a"), s.tmp.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("same.txt"), "first").unwrap();
    std::fs::write(b.join("same.txt"), "second").unwrap();
    let _pa = start_peer(&a, &t, &[]);
    let _pb = start_peer(&b, &t, &[]);
    let out = swarm(&t, &s.client, &["swarm", "get", "same.txt"]);
    let err = fails(&out, 1);
    assert!(
        err.contains(blake3::hash(b"first").to_hex().as_str()),
        "{err}"
    );
    assert!(
        err.contains(blake3::hash(b"second").to_hex().as_str()),
        "{err}"
    );
    let out = swarm(
        &t,
        &s.client,
        &["swarm", "get", &blake3::hash(b"second").to_hex()[..16]],
    );
    ok(&out);
    assert_eq!(std::fs::read(s.client.join("same.txt")).unwrap(), b"second");
}

/// `troca peer` on the scratch share, in a pseudo-terminal (so it shows the menu).
fn peer_in_pty(s: &Scratch, t: &Daemon) -> rexpect::session::PtySession {
    let mut cmd = Command::new(TROCA);
    cmd.arg("peer")
        .arg(&s.share)
        .args(["--tracker", &t.addr])
        .env("HOME", s.tmp.path());
    rexpect::session::spawn_command(cmd, Some(15_000)).unwrap()
}

#[test]
fn the_peer_menu_registers_lists_downloads_and_quits() {
    let s = Scratch::new();
    let t = start_tracker();
    let other = s.tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("song.ogg"), "la la la").unwrap();
    let _o = start_peer(&other, &t, &[]);
    let mut p = peer_in_pty(&s, &t);
    p.exp_string("1 join the swarm").unwrap();
    p.exp_string("peer> ").unwrap();
    p.send_line("2").unwrap();
    p.exp_string("song.ogg").unwrap();
    p.exp_string("peer> ").unwrap();
    p.send_line("3").unwrap();
    p.exp_string("id or name> ").unwrap();
    p.send_line("song.ogg").unwrap();
    p.exp_string("song.ogg").unwrap();
    p.exp_string("peer> ").unwrap();
    assert_eq!(
        std::fs::read(s.share.join("song.ogg")).unwrap(),
        b"la la la"
    );
    p.send_line("5").unwrap();
    p.exp_string("left the swarm").unwrap();
    p.exp_string("peer> ").unwrap();
    assert_eq!(
        listed(&t),
        ["song.ogg"],
        "only the other peer's copy is listed"
    );
    // The shell's Portuguese words work here too.
    p.send_line("ajuda").unwrap();
    p.exp_string("listar").unwrap();
    p.send_line("entrar").unwrap();
    p.exp_string("joined the swarm, sharing 1 file").unwrap();
    p.send_line("6").unwrap();
    p.exp_eof().unwrap();
    assert_eq!(listed(&t), ["song.ogg"]);
    // Ctrl-C at the prompt stops the peer too, with END.
    let mut p = peer_in_pty(&s, &t);
    p.exp_string("peer> ").unwrap();
    let rows = json(&swarm(&t, &s.client, &["--json", "swarm", "ls"]));
    assert_eq!(
        rows[0]["peers"].as_array().unwrap().len(),
        2,
        "registered again"
    );
    p.send_control('c').unwrap();
    p.exp_string("leaving the swarm").unwrap();
    p.exp_eof().unwrap();
    let mut c = std::process::Command::new(TROCA);
    let out = c
        .args(["--json", "swarm", "ls", "--tracker", &t.addr])
        .output()
        .unwrap();
    assert_eq!(
        json(&out)[0]["peers"].as_array().unwrap().len(),
        1,
        "quit sent END"
    );
}

/// A flash crowd: one seeder with a slow upload and four downloaders started together. Each
/// downloader shares the pieces it has while it downloads, so they trade among themselves:
/// their reports show pieces from each other, not only from the seeder, and every copy
/// verifies.
#[test]
fn downloaders_started_together_trade_pieces_with_each_other() {
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "crowd.bin", 24 << 20);
    let seeder = start_peer(&seed_dir, &t, &["--max-rate", "8M"]);
    let gets = downloaders(&s, &t, 4, &["--json", "swarm", "get", "crowd.bin"]);
    let want = hash_file(&seed_dir.join("crowd.bin"));
    let mut from_others = 0;
    for (dir, child) in gets {
        let out = child.wait_with_output().unwrap();
        let report = json(&out);
        assert_eq!(hash_file(&dir.join("crowd.bin")), want, "{report}");
        for row in report["peers"].as_array().unwrap() {
            if row["address"] != seeder.addr.as_str() {
                from_others += row["pieces"].as_u64().unwrap();
            }
        }
        assert!(!dir.join(".troca-swarm").exists(), "no partial left");
    }
    assert!(
        from_others > 0,
        "the downloaders got pieces from each other, not only from the seeder"
    );
}

/// `--no-share` only downloads: the tracker never lists the downloader, and nothing is served.
/// Without it, the finished download leaves the tracker when `swarm get` exits.
#[test]
fn swarm_get_without_sharing_is_a_client_only() {
    let s = Scratch::new();
    let t = start_tracker();
    let dir = seeder_folder(&s, "solo.bin", 3 << 20);
    let seeder = start_peer(&dir, &t, &[]);
    let out = swarm(
        &t,
        &s.client,
        &["--json", "swarm", "get", "solo.bin", "--no-share"],
    );
    let report = json(&out);
    assert_eq!(
        hash_file(&s.client.join("solo.bin")),
        hash_file(&dir.join("solo.bin"))
    );
    assert_eq!(report["peers"][0]["address"], seeder.addr.as_str());
    // Only the seeder is listed: the downloader never registered, or has left.
    let rows = json(&swarm(&t, &s.client, &["--json", "swarm", "ls"]));
    assert_eq!(rows[0]["peers"].as_array().unwrap().len(), 1, "{rows}");
    let again = s.tmp.path().join("again");
    std::fs::create_dir(&again).unwrap();
    ok(&swarm(&t, &again, &["swarm", "get", "solo.bin"]));
    let rows = json(&swarm(&t, &s.client, &["--json", "swarm", "ls"]));
    assert_eq!(
        rows[0]["peers"].as_array().unwrap().len(),
        1,
        "a sharing download leaves the tracker when it exits: {rows}"
    );
}

/// A peer sends at most `--upload-slots` pieces at once: the other requests are answered busy,
/// the downloaders hear `SlotFree` when a slot opens and ask again, and every download
/// completes and verifies.
#[test]
fn requests_past_the_upload_slots_are_answered_busy_and_asked_again_when_one_frees() {
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "slots.bin", 12 << 20);
    let args = [
        "--upload-slots",
        "1",
        "--max-rate",
        "16M",
        "--metrics",
        "127.0.0.1:0",
    ];
    let (_seeder, lines) = start_peer_with_lines(&seed_dir, &t, &args, 2);
    let metrics = lines
        .iter()
        .find_map(|l| l.strip_prefix("metrics "))
        .expect("the peer's metrics address")
        .to_owned();
    // Three downloaders that only download: each asks the seeder for several pieces at once.
    let gets = downloaders(&s, &t, 3, &["swarm", "get", "slots.bin", "--no-share"]);
    let want = hash_file(&seed_dir.join("slots.bin"));
    for (dir, child) in gets {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(hash_file(&dir.join("slots.bin")), want);
    }
    let scraped = Command::new("curl")
        .args(["-sf", &metrics])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&scraped.stdout);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(value("troca_peer_busy_answers_total ") > 0, "{text}");
    // Downloaders that do not share are never deferred (nobody could give them the piece).
    assert_eq!(value("troca_peer_pieces_deferred_total "), 0, "{text}");
    // Every piece went out once per downloader: refusals cost no extra copies.
    let pieces = troca_proto::pieces::Layout::for_len(12 << 20).count();
    assert_eq!(value("troca_peer_pieces_served_total "), 3 * pieces);
}

/// A downloader that takes its pieces a trickle at a time cannot keep a peer's only upload
/// slot: its piece must go out within the idle timeout (and no write may stall that long), so
/// its connection is closed, the slot is freed, and an honest downloader gets the file while
/// the slow one is still far from having its pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_too_slow_for_a_piece_loses_its_upload_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "slow.bin", 8 << 20);
    let path = seed_dir.join("slow.bin");
    let id = *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes();
    let seeder = start_peer(
        &seed_dir,
        &t,
        &["--plaintext", "--upload-slots", "1", "--idle-timeout", "3s"],
    );
    // The hostile downloader: a tiny receive window, every piece asked for, then a trickle.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(seeder.addr.parse().unwrap()).await.unwrap();
    let mut out = Vec::new();
    let hello = troca_proto::msg::Hello {
        magic: troca_proto::MAGIC,
        version: troca_proto::PROTOCOL_VERSION,
        client: "slow".into(),
        token: None,
        owner_key: None,
    };
    troca_proto::encode_frame(&hello.into(), &mut out);
    // Every piece: more than the kernel's buffers between them hold, so the sending stalls.
    let layout = troca_proto::pieces::Layout::for_len(8 << 20);
    for index in 0..layout.count() as u32 {
        troca_proto::encode_frame(&troca_proto::msg::GetPiece { id, index }.into(), &mut out);
    }
    tcp.write_all(&out).await.unwrap();
    // Once the honest download is done, it reads what is left at full speed, to its end.
    let drain = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let draining = std::sync::Arc::clone(&drain);
    let trickle = tokio::spawn(async move {
        let (mut got, mut buf) = (0u64, vec![0u8; 1 << 16]);
        loop {
            let fast = draining.load(std::sync::atomic::Ordering::Relaxed);
            let want = if fast { buf.len() } else { 1024 };
            match tcp.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n as u64,
            }
            if !fast {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // The honest downloader, started while the slow one holds the only slot.
    let dir = s.tmp.path().join("honest");
    std::fs::create_dir(&dir).unwrap();
    let honest = swarm(
        &t,
        &dir,
        &["swarm", "get", "slow.bin", "--no-share", "--plaintext"],
    );
    ok(&honest);
    assert_eq!(hash_file(&dir.join("slow.bin")), hash_file(&path));
    drain.store(true, std::sync::atomic::Ordering::Relaxed);
    let slow = trickle.await.unwrap();
    let asked = layout.len;
    assert!(
        slow < asked,
        "the peer closed the slow connection before its pieces were all sent ({slow} of {asked} bytes came)"
    );
}

/// A connection to a peer that has said hello, as a downloader's.
async fn peer_connection(
    addr: &str,
    recv_buffer: Option<u32>,
) -> troca_net::connection::Connection<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes).unwrap();
    }
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let mut conn = troca_net::connection::Connection::new(tcp);
    let hello = troca_proto::msg::Hello {
        magic: troca_proto::MAGIC,
        version: troca_proto::PROTOCOL_VERSION,
        client: "test".into(),
        token: None,
        owner_key: None,
    };
    conn.send(&hello.into()).await.unwrap();
    let welcome = conn.read_message().await.unwrap();
    assert!(
        matches!(welcome, Some(troca_proto::msg::Message::Welcome(_))),
        "{welcome:?}"
    );
    conn
}

/// A downloader's connection to a peer that has said it wants file `id` (`sharing` or not)
/// and heard which pieces the peer holds.
async fn holding(
    addr: &str,
    recv_buffer: Option<u32>,
    id: troca_proto::Hash,
    sharing: bool,
) -> troca_net::connection::Connection<tokio::net::TcpStream> {
    let mut conn = peer_connection(addr, recv_buffer).await;
    let holding = troca_proto::msg::Holding { id, sharing };
    conn.send(&holding.into()).await.unwrap();
    let bits = conn.read_message().await.unwrap();
    assert!(
        matches!(bits, Some(troca_proto::msg::Message::Bitfield(_))),
        "{bits:?}"
    );
    conn
}

/// Initial seeding, on by default: while some piece has gone to no sharing downloader, a
/// seeder answers `Deferred` a sharing downloader's request for a piece it gave one still
/// connected, sends the pieces nobody has at once (no `SlotFree` to wait for), and sends a
/// deferred piece when the same connection asks for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_sends_each_piece_once_before_any_twice() {
    use troca_proto::msg::{GetPiece, Message};
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "crowd.bin", 8 << 20);
    let id = *blake3::hash(&std::fs::read(seed_dir.join("crowd.bin")).unwrap()).as_bytes();
    let layout = troca_proto::pieces::Layout::for_len(8 << 20);
    let last = layout.count() as u32 - 1;
    let seeder = start_peer(&seed_dir, &t, &["--plaintext", "--upload-slots", "4"]);
    // A sharing downloader that asks for every piece but the last and reads nothing: the
    // first pieces go out to it, and one stays sending (more than the kernel's buffers hold).
    let mut a = holding(&seeder.addr, Some(4096), id, true).await;
    for index in 0..last {
        a.queue(&GetPiece { id, index }.into());
    }
    a.flush().await.unwrap();
    let mut b = holding(&seeder.addr, None, id, true).await;
    // Another sharing downloader asks for piece 0, which `a` holds. Until `a`'s connection
    // stalls there are moments between its pieces when no slot is sending, and then nothing is
    // deferred (the link would idle): so ask until it is.
    let (_, len0) = layout.range(0);
    let mut tries = 0;
    loop {
        b.send(&GetPiece { id, index: 0 }.into()).await.unwrap();
        match b.read_message().await.unwrap() {
            Some(Message::Error(e)) => {
                assert_eq!(e.code, troca_proto::ErrorCode::Deferred, "{e:?}");
                break;
            }
            header => read_piece(&mut b, header, 0, len0).await,
        }
        tries += 1;
        assert!(
            tries < 1000,
            "piece 0 should be deferred while piece {last} has gone to nobody"
        );
    }
    // The last piece, which nobody has: sent at once, with no `SlotFree` before it.
    b.send(&GetPiece { id, index: last }.into()).await.unwrap();
    let (_, len) = layout.range(last.into());
    let header = b.read_message().await.unwrap();
    read_piece(&mut b, header, last, len).await;
    // Asked again on the same connection, the deferred piece is sent: a downloader with
    // nothing else to ask never waits on a deferral.
    b.send(&GetPiece { id, index: 0 }.into()).await.unwrap();
    let header = b.read_message().await.unwrap();
    read_piece(&mut b, header, 0, len0).await;
    // A downloader that does not share is never deferred: nobody could give it the piece.
    let mut c = holding(&seeder.addr, None, id, false).await;
    c.send(&GetPiece { id, index: 0 }.into()).await.unwrap();
    match c.read_message().await.unwrap() {
        Some(Message::Error(e)) => assert_eq!(e.code, troca_proto::ErrorCode::Busy, "{e:?}"),
        header => read_piece(&mut c, header, 0, len0).await,
    }
}

/// Checks that `header` is a `PieceData` for `index` of `len` bytes, and reads the bytes.
async fn read_piece(
    conn: &mut troca_net::connection::Connection<tokio::net::TcpStream>,
    header: Option<troca_proto::msg::Message>,
    index: u32,
    len: u64,
) {
    match header {
        Some(troca_proto::msg::Message::PieceData(p)) => {
            assert_eq!((p.index, p.len), (index, len));
        }
        other => panic!("piece {index}: {other:?}"),
    }
    let mut bytes = vec![0u8; len as usize];
    read_exactly(conn, &mut bytes).await;
}

async fn read_exactly(
    conn: &mut troca_net::connection::Connection<tokio::net::TcpStream>,
    dst: &mut [u8],
) {
    let mut got = 0;
    while got < dst.len() {
        let n = conn.read_raw(&mut dst[got..]).await.unwrap();
        assert!(n > 0, "the connection ended inside a piece");
        got += n;
    }
}

/// A peer the tracker lists that cannot serve yet (here: nothing listens on its address; in a
/// crowd, a downloader registered before it holds anything) is tried again at the next look
/// for peers, and gives pieces once it can, instead of being written off for the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_could_not_serve_at_first_is_tried_again() {
    use std::io::BufRead;
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "late.bin", 24 << 20);
    let id = *blake3::hash(&std::fs::read(seed_dir.join("late.bin")).unwrap()).as_bytes();
    let _seeder = start_peer(&seed_dir, &t, &["--plaintext", "--max-rate", "4M"]);
    // An address listed for the file where no peer listens yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut fake = TrackerClient::new(t.addr.parse().unwrap()).await.unwrap();
    let file = FileInfo {
        id,
        size: 24 << 20,
        name: "late.bin".into(),
    };
    fake.register(port, [9; 16], None, &[file]).await.unwrap();
    let dir = s.tmp.path().join("getter");
    std::fs::create_dir(&dir).unwrap();
    let mut get = Command::new(TROCA)
        .current_dir(&dir)
        .env("TROCA_TRACKER", &t.addr)
        .env("TROCA_LOG", "troca_peer=info")
        .args(["--plaintext", "--json", "swarm", "get", "late.bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the download has given up on that address a first time, a peer with the file
    // starts there.
    let late = format!("127.0.0.1:{port}");
    let mut stderr = std::io::BufReader::new(get.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no first try");
        if line.contains(&late) && line.contains("dropped") {
            break;
        }
    }
    let late_dir = s.tmp.path().join("late");
    std::fs::create_dir(&late_dir).unwrap();
    std::fs::copy(seed_dir.join("late.bin"), late_dir.join("late.bin")).unwrap();
    let listen = ["--plaintext", "--listen", late.as_str()];
    let _late_peer = start_peer(&late_dir, &t, &listen);
    let out = get.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(
        hash_file(&dir.join("late.bin")),
        hash_file(&seed_dir.join("late.bin"))
    );
    let from_late = report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == late.as_str())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(from_late["pieces"].as_u64().unwrap() > 0, "{report}");
}

/// A downloader that asks and asks and reads no answer is dropped once the peer's answers have
/// waited `--idle-timeout` for it, instead of holding the connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloader_that_reads_no_answers_is_dropped() {
    use std::time::{Duration, Instant};
    let s = Scratch::new();
    let t = start_tracker();
    let seed_dir = seeder_folder(&s, "asked.bin", 8 << 20);
    let id = *blake3::hash(&std::fs::read(seed_dir.join("asked.bin")).unwrap()).as_bytes();
    let seeder = start_peer(&seed_dir, &t, &["--plaintext", "--idle-timeout", "1s"]);
    let mut conn = holding(&seeder.addr, Some(4096), id, false).await;
    let mut asks = Vec::new();
    for _ in 0..1000 {
        let ask = troca_proto::msg::Holding { id, sharing: false };
        troca_proto::encode_frame(&ask.into(), &mut asks);
    }
    // Each `Holding` is answered with a `Bitfield`, none read: the answers fill the sockets'
    // buffers, the peer's writes stop, then its reads. Once it gives up, it closes a socket
    // holding unread requests: the kernel resets the connection, and a write here fails.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let wrote = tokio::time::timeout(Duration::from_millis(100), conn.write_raw(&asks)).await;
        // Written, or still waiting: the peer holds on.
        if let Ok(Err(e)) = wrote {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                ),
                "{e}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the peer still holds a downloader that reads nothing, a minute on"
        );
    }
}
