//! Many small files at once: `PutSmall` requests sent back to back are stored in batches, each
//! answered on its own, in order; a bad one fails alone; nothing is left half-done.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use troca_proto::msg::{Hello, PutSmall};
use troca_proto::{decode_frame, encode_frame, ErrorCode, Message, MAGIC};

/// A raw native connection: send frames, read messages. Over plaintext (the hub runs with
/// `--plaintext`): what is tested is the protocol, which TLS only carries.
struct Raw {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str, owner_key: &str) -> Raw {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut raw = Raw {
            sock,
            buf: Vec::new(),
        };
        raw.send(&[Hello {
            magic: MAGIC,
            version: troca_proto::PROTOCOL_VERSION,
            client: "batcher".into(),
            token: None,
            owner_key: Some(owner_key.into()),
        }
        .into()]);
        assert!(matches!(raw.read(), Message::Welcome(_)));
        raw
    }

    /// Sends all of `msgs` in one write.
    fn send(&mut self, msgs: &[Message]) {
        let mut out = Vec::new();
        for m in msgs {
            encode_frame(m, &mut out);
        }
        self.sock.write_all(&out).unwrap();
    }

    fn read(&mut self) -> Message {
        loop {
            if let Some((m, used)) = decode_frame(&self.buf).unwrap() {
                self.buf.drain(..used);
                return m;
            }
            let mut chunk = [0u8; 65536];
            let n = self.sock.read(&mut chunk).unwrap();
            assert!(n > 0, "the hub closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn small(name: &str, data: &[u8], force: bool) -> Message {
    PutSmall {
        name: name.into(),
        force,
        blake3: *blake3::hash(data).as_bytes(),
        modified_ns: 0,
        data: data.to_vec(),
    }
    .into()
}

#[test]
fn a_batch_of_small_files_is_answered_in_order_and_a_bad_one_fails_alone() {
    let s = Scratch::new();
    std::fs::write(s.share.join("theirs.txt"), "someone else's").unwrap();
    let hub = Hub::start(&s.share, &["--plaintext"]);
    let mut raw = Raw::connect(&hub.addr, "key-one");
    let mut lie = small("lie.txt", b"what was sent", false);
    if let Message::PutSmall(p) = &mut lie {
        p.blake3 = *blake3::hash(b"something else").as_bytes();
    }
    // 600 good files across two folders, with five bad ones among them: more than one batch.
    let mut msgs = Vec::new();
    for i in 0..600 {
        msgs.push(small(
            &format!("f{}/n{i}.txt", i % 2),
            format!("file {i}").as_bytes(),
            false,
        ));
        match i {
            10 => msgs.push(lie.clone()),
            20 => msgs.push(small("theirs.txt", b"mine now", true)),
            30 => msgs.push(small("f0/n0.txt", b"again", false)),
            40 => msgs.push(small("../escape.txt", b"x", false)),
            50 => msgs.push(small("f1/n1.txt/inside", b"x", false)),
            _ => {}
        }
    }
    raw.send(&msgs);
    let mut codes = Vec::new();
    for m in &msgs {
        let Message::PutSmall(sent) = m else {
            unreachable!()
        };
        match raw.read() {
            Message::PutDone(done) => {
                assert_eq!(done.name, sent.name);
                assert_eq!(done.blake3, sent.blake3);
                codes.push(None);
            }
            Message::Error(e) => codes.push(Some((sent.name.clone(), e.code))),
            other => panic!("{other:?}"),
        }
    }
    let failed: Vec<(String, ErrorCode)> = codes.into_iter().flatten().collect();
    assert_eq!(
        failed,
        [
            ("lie.txt".to_owned(), ErrorCode::Integrity),
            ("theirs.txt".to_owned(), ErrorCode::Forbidden),
            ("f0/n0.txt".to_owned(), ErrorCode::AlreadyExists),
            ("../escape.txt".to_owned(), ErrorCode::InvalidName),
            ("f1/n1.txt/inside".to_owned(), ErrorCode::BadRequest),
        ]
    );
    for i in [0, 1, 299, 599] {
        let got = std::fs::read_to_string(s.share.join(format!("f{}/n{i}.txt", i % 2))).unwrap();
        assert_eq!(got, format!("file {i}"));
    }
    assert_eq!(
        std::fs::read_to_string(s.share.join("theirs.txt")).unwrap(),
        "someone else's"
    );
    assert!(!s.share.join("lie.txt").exists());
    assert!(!s.tmp.path().join("escape.txt").exists());
    let staged = std::fs::read_dir(s.share.join(".troca/uploads/small"))
        .unwrap()
        .count();
    assert_eq!(staged, 0, "files left in the batch folder");

    // Every file is recorded, and its owner key may replace it in a later batch.
    let rows = json(&hub.troca(
        &s.client,
        &["--json", "history", "--op", "put", "--limit", "1000"],
    ));
    assert_eq!(rows.as_array().unwrap().len(), 605);
    raw.send(&[small("f0/n0.txt", b"replaced", true)]);
    assert!(matches!(raw.read(), Message::PutDone(_)));
    let mut other = Raw::connect(&hub.addr, "key-two");
    other.send(&[small("f0/n2.txt", b"not yours", true)]);
    assert!(matches!(other.read(), Message::Error(e) if e.code == ErrorCode::Forbidden));
    assert_eq!(
        std::fs::read_to_string(s.share.join("f0/n0.txt")).unwrap(),
        "replaced"
    );
}

/// `troca put DIR` and `troca get DIR` move a tree of small files byte for byte, and a second
/// `get` keeps the first copy (free names), as single downloads do.
#[test]
fn a_tree_of_small_files_goes_up_and_down_whole() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let tree = s.client.join("tree");
    for i in 0..700 {
        let path = tree.join(format!("d{}/f{i}.bin", i % 7));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        random_file(&path, (i * 37 % 9000) as u64, &format!("f{i}"));
    }
    random_file(&tree.join("big.bin"), 3_000_000, "big");
    ok(&hub.troca(&s.client, &["put", "tree"]));
    assert_eq!(files_under(&s.share.join("tree")), files_under(&tree));
    ok(&hub.troca(&s.client, &["get", "tree", "-o", "back"]));
    for name in files_under(&tree) {
        assert_eq!(
            hash_file(&s.client.join("back/tree").join(&name)),
            hash_file(&tree.join(&name))
        );
    }
    // Again: what is already here is left alone; a file changed here is kept, and the hub's
    // saved beside it.
    std::fs::write(s.client.join("back/tree/d0/f0.bin"), "changed here").unwrap();
    let out = hub.troca(&s.client, &["get", "tree", "-o", "back"]);
    ok(&out);
    assert!(s.client.join("back/tree/d0/f0_downloaded.bin").exists());
    assert_eq!(
        files_under(&s.client.join("back/tree")).len(),
        files_under(&tree).len() + 1,
        "only the changed file came again"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("already here"));
    assert!(files_under(&s.client.join("back"))
        .iter()
        .all(|n| !n.ends_with(".part")));
}

/// Runs of `PutSmall` sent in one go fill several batches, stored two at a time: every file is
/// answered in order, a file sent again (with `force`) in the next batch replaces the earlier
/// one rather than racing it, and a request after the run is answered after all of it.
#[test]
fn batches_in_flight_together_keep_the_order_of_their_files() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--plaintext"]);
    let mut raw = Raw::connect(&hub.addr, "key-one");
    // The same 600 names, six times: any two batches in a row share names.
    let mut msgs = Vec::new();
    for round in 0..6 {
        for i in 0..600 {
            let data = format!("round {round} file {i}");
            msgs.push(small(
                &format!("r/d{}/n{i}", i % 5),
                data.as_bytes(),
                round > 0,
            ));
        }
    }
    msgs.push(troca_proto::msg::Status.into());
    raw.send(&msgs);
    for (n, m) in msgs[..3600].iter().enumerate() {
        let Message::PutSmall(sent) = m else {
            unreachable!()
        };
        match raw.read() {
            Message::PutDone(done) => assert_eq!(done.name, sent.name, "answer {n}"),
            other => panic!("answer {n} ({}): {other:?}", sent.name),
        }
    }
    assert!(matches!(raw.read(), Message::StatusInfo(_)));
    for i in 0..600 {
        let got = std::fs::read_to_string(s.share.join(format!("r/d{}/n{i}", i % 5))).unwrap();
        assert_eq!(got, format!("round 5 file {i}"));
    }
}

/// A folder download keeps each file of its batches open until they are named: where the
/// process may open only 64 files (soft and hard limit), the batches shrink to fit, and every
/// file still comes.
#[test]
fn a_folder_download_fits_a_small_limit_on_open_files() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    for i in 0..300 {
        let path = s.share.join(format!("many/d{}/f{i}.txt", i % 3));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("file {i}")).unwrap();
    }
    let mut cmd = std::process::Command::new("sh");
    cmd.current_dir(&s.client)
        .envs(hub.client_env())
        .env("XDG_DATA_HOME", hub.client_data())
        .args(["-c", "ulimit -n 64 && exec \"$0\" get many -o back", TROCA]);
    ok(&cmd.output().unwrap());
    assert_eq!(
        files_under(&s.client.join("back/many")),
        files_under(&s.share.join("many"))
    );
}

/// `hashes_of` asks for files' hashes as `Get`s from their ends: a file with the size given
/// yields its hash without its bytes; one of another size (whose bytes then come, and are
/// skipped) or a missing one yields `None`; the connection stays in step for what follows.
#[tokio::test(flavor = "current_thread")]
async fn hashes_are_asked_for_without_the_bytes() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(s.share.join("h.bin"), &body).unwrap();
    let mut client = troca_net::HubClient::connect(&hub.addr, &hub.options())
        .await
        .unwrap();
    let ask = |name: &str, size: u64| troca_net::batch::SizedName {
        name: name.into(),
        size,
    };
    let got = troca_net::batch::hashes_of(
        &mut client,
        &[
            ask("h.bin", 300_000),
            ask("h.bin", 400_000),
            ask("h.bin", 100_000),
            ask("missing.bin", 5),
            ask("h.bin", 300_000),
        ],
    )
    .await
    .unwrap();
    let hash = *blake3::hash(&body).as_bytes();
    assert_eq!(got, [Some(hash), None, None, None, Some(hash)]);
    let mut names = std::iter::once("h.bin".to_owned());
    let mut whole = Vec::new();
    troca_net::batch::get_pipelined(&mut client, 1, || names.next(), |_, d| whole = d.to_vec())
        .await
        .unwrap();
    assert_eq!(whole, body);
}

/// With no batch memory left (here: none at all), small files are still stored, one at a time.
#[test]
fn without_batch_memory_small_files_go_one_at_a_time() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--batch-memory", "0"]);
    let tree = s.client.join("few");
    for i in 0..50 {
        let path = tree.join(format!("f{i}.txt"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{i}")).unwrap();
    }
    ok(&hub.troca(&s.client, &["put", "few"]));
    assert_eq!(files_under(&s.share.join("few")), files_under(&tree));
}

/// `get_pipelined` (what the load generator drives hubs with) keeps many `Get`s in flight on
/// one connection: every file comes back whole and verified, in the order asked, and a name
/// that is not there fails the call with the hub's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_come_back_whole_and_in_order() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let sizes: Vec<usize> = (0..40).map(|i| i * 613 % 7000).collect();
    for (i, size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..*size).map(|b| (b * 31 + i) as u8).collect();
        std::fs::write(s.share.join(format!("p{i}.bin")), data).unwrap();
    }
    let mut client = troca_net::HubClient::connect(&hub.addr, &hub.options())
        .await
        .unwrap();
    // 500 requests over the 40 files, at most 16 in flight.
    let mut asked = (0..500).map(|n| format!("p{}.bin", n * 7 % 40));
    let mut got: Vec<(String, Vec<u8>)> = Vec::new();
    let keep = |name: &str, data: &[u8]| got.push((name.to_owned(), data.to_vec()));
    troca_net::batch::get_pipelined(&mut client, 16, || asked.next(), keep)
        .await
        .unwrap();
    assert_eq!(got.len(), 500);
    for (n, (name, data)) in got.iter().enumerate() {
        assert_eq!(
            name,
            &format!("p{}.bin", n * 7 % 40),
            "answer {n} out of order"
        );
        assert_eq!(data, &std::fs::read(s.share.join(name)).unwrap(), "{name}");
    }
    let mut names = ["p1.bin", "missing.bin", "p2.bin"]
        .map(String::from)
        .into_iter();
    let err = troca_net::batch::get_pipelined(&mut client, 4, || names.next(), |_, _| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.bin"), "{err}");
}

/// `download_small` over several batches (the requests run a batch ahead, and batches are put
/// in place while the next arrives): every file is reported once, whole and under its name, a
/// name the hub does not have fails alone wherever it falls in a batch, and nothing else is
/// left in the folder.
#[tokio::test(flavor = "current_thread")]
async fn small_downloads_over_several_batches_each_end_once() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let missing = [0, 255, 256, 511, 700];
    let out = s.client.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut wanted = Vec::new();
    for i in 0..701usize {
        let name = format!("q{i}.bin");
        if !missing.contains(&i) {
            let data: Vec<u8> = (0..(i * 97 % 5000)).map(|b| (b * 13 + i) as u8).collect();
            std::fs::write(s.share.join(&name), data).unwrap();
        }
        wanted.push(troca_net::batch::SmallGet {
            name: name.clone(),
            size: 0,
            target: out.join(&name),
            replace: false,
        });
    }
    let mut client = troca_net::HubClient::connect(&hub.addr, &hub.options())
        .await
        .unwrap();
    let mut ended: Vec<Option<Result<std::path::PathBuf, String>>> = vec![None; wanted.len()];
    troca_net::batch::download_small(&mut client, &wanted, |i, r| {
        assert!(ended[i].is_none(), "file {i} reported twice");
        ended[i] = Some(r.map(|got| got.path).map_err(|e| e.to_string()));
    })
    .await
    .unwrap();
    for (i, end) in ended.into_iter().enumerate() {
        let name = format!("q{i}.bin");
        match end.unwrap_or_else(|| panic!("file {i} never reported")) {
            Ok(path) => {
                assert!(!missing.contains(&i), "{name} cannot have come");
                assert_eq!(path, out.join(&name));
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    std::fs::read(s.share.join(&name)).unwrap()
                );
            }
            Err(e) => assert!(missing.contains(&i) && e.contains(&name), "{name}: {e}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        701 - missing.len(),
        "only the downloaded files are in the folder"
    );
}

/// A TCP relay to `target` that passes the client's bytes on, and the hub's until `limit` of
/// them have gone by: then it closes both sides, as a link that drops mid-answer.
fn cutting_proxy(target: &str, limit: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let target = target.to_owned();
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let server = TcpStream::connect(&target).unwrap();
        let (mut up_from, mut up_to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = up_from.read(&mut buf) {
                if n == 0 || up_to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let (mut from, mut to) = (server, client);
        let mut left = limit;
        let mut buf = [0u8; 65536];
        while left > 0 {
            match from.read(&mut buf[..left.min(65536)]) {
                Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => left -= n,
                _ => break,
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
    addr
}

/// A link that drops in the middle of a folder download: the files that arrived whole before
/// it are durable and under their names, reported once each, in the order asked; the download
/// fails; nothing half-written or unnamed is left in the folder.
#[tokio::test(flavor = "current_thread")]
async fn a_folder_download_cut_midway_keeps_what_arrived_and_nothing_else() {
    // As the client does at start: batches as large as they go (the limit decides their size).
    let nofile = rustix::process::Resource::Nofile;
    let mut limit = rustix::process::getrlimit(nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(nofile, limit);
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let out = s.client.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut wanted = Vec::new();
    for i in 0..700usize {
        let name = format!("c{i:03}.bin");
        let data: Vec<u8> = (0..1000).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(s.share.join(&name), data).unwrap();
        wanted.push(troca_net::batch::SmallGet {
            name,
            size: 1000,
            target: out.join(format!("c{i:03}.bin")),
            replace: false,
        });
    }
    // About 300 files' answers (each a little over 1,000 bytes), past the first batches.
    let proxy = cutting_proxy(&hub.addr, 350_000);
    let mut client = troca_net::HubClient::connect(&proxy, &hub.options())
        .await
        .unwrap();
    let mut ended: Vec<Option<bool>> = vec![None; wanted.len()];
    let result = troca_net::batch::download_small(&mut client, &wanted, |i, r| {
        assert!(ended[i].is_none(), "file {i} reported twice");
        ended[i] = Some(r.is_ok());
    })
    .await;
    assert!(result.is_err(), "the download cannot have ended well");
    let got = ended.iter().take_while(|e| **e == Some(true)).count();
    // About 1,090 bytes went by per file (320 files here): those of the batch the link dropped
    // in are kept too, not only the batches before it (256 files, at most 256 per batch).
    assert!((290..700).contains(&got), "{got} files came whole");
    assert!(
        ended[got..].iter().all(Option::is_none),
        "files after the cut are not reported: {:?}",
        &ended[got..got + 5]
    );
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let expected: Vec<String> = (0..got).map(|i| format!("c{i:03}.bin")).collect();
    assert_eq!(
        left, expected,
        "only the files that came whole are in the folder"
    );
    for name in &left {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(s.share.join(name)).unwrap(),
            "{name}"
        );
    }
}
