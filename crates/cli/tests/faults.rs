//! Faults on the hub's side of the wire: clients that vanish or stall mid-upload, a full disk,
//! stale partial uploads. Each costs only the client concerned; nothing half-written appears under
//! a real name, and the hub keeps serving everyone else.

mod common;
use common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use troca_net::{ClientError, HubClient};
use troca_proto::msg::Put;
use troca_proto::ErrorCode;

async fn start_upload(hub: &Hub, name: &str, size: u64) -> HubClient {
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    client
        .put(Put {
            name: name.into(),
            size,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    client
}

/// Waits until the hub no longer lists a client busy with `target` in `troca who`: it has
/// noticed the connection is gone (or cut it), and finished with it.
async fn until_gone(hub: &Hub, cwd: &std::path::Path, target: &str) {
    loop {
        let who = json(&hub.troca(cwd, &["--json", "who"]));
        let busy = who
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["target"] == target && c["activity"] != "idle");
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn partials(share: &std::path::Path) -> Vec<String> {
    files_under(&share.join(".troca/uploads"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnecting_mid_upload_leaves_no_file() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut up = client
        .put(Put {
            name: "half.bin".into(),
            size: 1 << 20,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    up.write(&vec![7u8; 300_000]).await.unwrap();
    drop(client);
    until_gone(&hub, &s.client, "half.bin").await;

    assert!(
        files_under(&s.share).is_empty(),
        "{:?}",
        files_under(&s.share)
    );
    let listed = json(&hub.troca(&s.client, &["--json", "ls"]));
    assert_eq!(listed.as_array().unwrap().len(), 0);
    assert_eq!(
        partials(&s.share).len(),
        2,
        "partial kept for resume (data + record)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_times_out_while_others_are_served() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--stall-timeout", "1s"]);
    let mut staller = start_upload(&hub, "stalled.bin", 1 << 20).await;

    // Others are served while the staller holds its connection.
    std::fs::write(s.client.join("other.txt"), "other").unwrap();
    ok(&hub.troca(&s.client, &["put", "other.txt"]));

    until_gone(&hub, &s.client, "stalled.bin").await;
    // The hub has given up on the staller: its connection is closed.
    let err = staller.list("").await.unwrap_err();
    assert!(matches!(err, ClientError::Io(_)), "{err:?}");
    assert_eq!(files_under(&s.share), ["other.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_partial_uploads_are_cleaned_after_their_ttl() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--partial-ttl", "1s"]);
    // The upload is abandoned right after the hub said it was ready.
    drop(start_upload(&hub, "stale.bin", 1 << 20).await);
    let mut cleaned = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if partials(&s.share).is_empty() {
            cleaned = true;
            break;
        }
    }
    assert!(cleaned, "still there: {:?}", partials(&s.share));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_clear_error_and_leaves_nothing_behind() {
    if !needs_root("it mounts a small tmpfs to fill") {
        return;
    }
    let s = Scratch::new();
    let disk_dir = s.tmp.path().join("small");
    let disk = SmallDisk::mount(&disk_dir, "24m");
    let hub = Hub::start(&disk.path, &[]);

    // Too big from the start: refused before a byte is sent.
    random_file(&s.client.join("huge.bin"), 32 << 20, "huge");
    let err = fails(&hub.troca(&s.client, &["put", "huge.bin"]), 1);
    assert!(err.contains("not enough space"), "{err}");

    // The disk fills up mid-upload: for a small upload (written through the page cache) and
    // for one large enough to be written with direct I/O.
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let filler = disk.path.join("filler");
    for size in [5u64 << 20, 12 << 20] {
        let mut up = client
            .put(Put {
                name: "mid.bin".into(),
                size,
                source_mtime_ns: 1,
                force: false,
            })
            .await
            .unwrap();
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            while f.write_all(&[1u8; 64 * 1024]).is_ok() {}
        }
        up.write(&vec![9u8; size as usize]).await.unwrap();
        let err = up.finish([0; 32]).await.unwrap_err();
        assert!(
            matches!(
                &err,
                ClientError::Hub {
                    code: ErrorCode::NoSpace,
                    ..
                }
            ),
            "{size} bytes: {err:?}"
        );
        assert!(err.to_string().contains("disk is full"), "{err}");
        assert!(!disk.path.join("mid.bin").exists());
        assert!(
            partials(&disk.path).is_empty(),
            "partial data freed: {:?}",
            partials(&disk.path)
        );
        std::fs::remove_file(&filler).unwrap();
    }

    // Space back: the same hub serves again, on the same connection too.
    client.list("").await.unwrap();
    std::fs::write(s.client.join("small.txt"), "fits").unwrap();
    ok(&hub.troca(&s.client, &["put", "small.txt"]));
    assert_eq!(
        std::fs::read_to_string(disk.path.join("small.txt")).unwrap(),
        "fits"
    );
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hash_at_the_end_of_an_upload_discards_it() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut up = client
        .put(Put {
            name: "bad.bin".into(),
            size: 4,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    up.write(b"abcd").await.unwrap();
    let err = up
        .finish(*blake3::hash(b"abce").as_bytes())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Hub {
                code: ErrorCode::Integrity,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(files_under(&s.share).is_empty());
    assert!(partials(&s.share).is_empty());
    // The connection is still in step.
    assert!(client.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_download_is_dropped_while_others_are_served() {
    let s = Scratch::new();
    // Far larger than the socket buffers, so the hub blocks on this client.
    random_file(&s.share.join("big.bin"), 64 << 20, "stall-get");
    std::fs::write(s.share.join("small.txt"), "small").unwrap();
    let hub = Hub::start(&s.share, &["--stall-timeout", "1s"]);
    // Hash it first, so the stalled download goes through sendfile.
    let warm = hub.troca(&s.client, &["get", "big.bin", "-o", "-", "-q"]);
    assert!(warm.status.success());

    let mut staller = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut dl = staller.get("big.bin", 0).await.unwrap();
    let mut first = [0u8; 4096];
    dl.read(&mut first).await.unwrap();
    // ... and now it reads no more.
    ok(&hub.troca(&s.client, &["get", "small.txt"]));
    until_gone(&hub, &s.client, "big.bin").await;
    // The hub gave up: the rest of the stream ends early instead of arriving.
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let ended_early = loop {
        match dl.read(&mut buf).await {
            Ok(0) => break false,
            Ok(n) => got += n as u64,
            Err(_) => break true,
        }
    };
    assert!(
        ended_early,
        "received the whole file ({got} bytes) despite stalling"
    );
}

/// A hub that goes silent mid-answer (it sent a file's header, then nothing) is given up on
/// after `--timeout`, with a message saying so, rather than waited for for ever.
#[test]
fn a_client_gives_up_on_a_hub_gone_silent() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (said, silent) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut frames = Vec::new();
        let next = |s: &mut std::net::TcpStream, frames: &mut Vec<u8>| loop {
            if let Ok(Some((m, used))) = troca_proto::decode_frame(frames) {
                frames.drain(..used);
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the client left early");
            frames.extend_from_slice(&chunk[..n]);
        };
        let mut out = Vec::new();
        assert!(matches!(
            next(&mut s, &mut frames),
            troca_proto::Message::Hello(_)
        ));
        let welcome = troca_proto::msg::Welcome {
            version: troca_proto::PROTOCOL_VERSION,
            server: "silent".into(),
            max_frame: troca_proto::MAX_FRAME_LEN as u32,
        };
        troca_proto::encode_frame(&welcome.into(), &mut out);
        s.write_all(&out).unwrap();
        assert!(matches!(
            next(&mut s, &mut frames),
            troca_proto::Message::Get(_)
        ));
        let header = troca_proto::msg::FileHeader {
            size: 1000,
            offset: 0,
            modified_ns: 0,
        };
        out.clear();
        troca_proto::encode_frame(&header.into(), &mut out);
        s.write_all(&out).unwrap();
        s.write_all(&[7u8; 10]).unwrap();
        // Holds the connection open, saying nothing more, until the client is done.
        let _ = silent.recv();
    });
    let out = std::process::Command::new(TROCA)
        .env("TROCA_HUB", &addr)
        .env("TROCA_PLAINTEXT", "1")
        .env_remove("TROCA_TOKEN")
        .args([
            "get",
            "file.bin",
            "-o",
            "-",
            "--timeout",
            "1s",
            "--retries",
            "1",
        ])
        .output()
        .unwrap();
    drop(said);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("the hub said nothing for 1 s"), "{err}");
    // Tried once more (the hub takes the connection but never welcomes it), then given up.
    assert!(err.contains("trying again in 1s (1 of 1)"), "{err}");
}

/// Which way a [`cutting_proxy`] counts bytes before it cuts.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    ToHub,
    ToClient,
}

/// A proxy to `target` that cuts the first connection (both ways at once) once `after` bytes
/// have gone `way`; connections after it pass whole. Returns its address and how many
/// connections it cut.
fn cutting_proxy(target: &str, way: Way, after: u64) -> (String, Arc<AtomicU64>) {
    proxy(target, way, after, false)
}

/// Like [`cutting_proxy`], but the first connection is left open, silent: no byte more is
/// passed `way` (a peer that stopped reading, or a link that died without a word).
fn stalling_proxy(target: &str, way: Way, after: u64) -> (String, Arc<AtomicU64>) {
    proxy(target, way, after, true)
}

fn proxy(target: &str, way: Way, after: u64, stall: bool) -> (String, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cuts = Arc::new(AtomicU64::new(0));
    let (target, seen_cuts) = (target.to_owned(), Arc::clone(&cuts));
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(hub) = std::net::TcpStream::connect(&target) else {
                return;
            };
            let pairs = [
                (
                    Way::ToHub,
                    client.try_clone().unwrap(),
                    hub.try_clone().unwrap(),
                ),
                (
                    Way::ToClient,
                    hub.try_clone().unwrap(),
                    client.try_clone().unwrap(),
                ),
            ];
            for (this_way, mut from, mut to) in pairs {
                let limit = (n == 0 && this_way == way).then_some(after);
                let (cuts, ends) = (
                    Arc::clone(&seen_cuts),
                    [client.try_clone().unwrap(), hub.try_clone().unwrap()],
                );
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    let mut moved = 0u64;
                    while let Ok(got) = std::io::Read::read(&mut from, &mut buf) {
                        let n = match limit {
                            Some(limit) => got.min((limit - moved) as usize),
                            None => got,
                        };
                        if got == 0 || std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                            break;
                        }
                        moved += n as u64;
                        if limit == Some(moved) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            if stall {
                                // Hold both ends open, reading nothing more, until the test ends.
                                let _held = (from, to, ends);
                                loop {
                                    std::thread::park();
                                }
                            }
                            for end in &ends {
                                let _ = end.shutdown(std::net::Shutdown::Both);
                            }
                            return;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (addr, cuts)
}

/// The client through `proxy` to `hub`, trusting the hub's key.
fn troca_through(
    hub: &Hub,
    proxy: &str,
    cwd: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(TROCA)
        .current_dir(cwd)
        .env("XDG_DATA_HOME", hub.client_data())
        .env("TROCA_HUB", proxy)
        .env("TROCA_HUB_KEY", hub.key.as_ref().unwrap())
        .env_remove("TROCA_TOKEN")
        .args(args)
        .output()
        .unwrap()
}

/// A download and an upload cut off by a lost connection are taken up again where they stopped,
/// in the same command: the file arrives whole, and only the rest is sent again.
#[test]
fn a_transfer_cut_off_by_a_lost_connection_resumes_in_the_same_command() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let size = 24 * 1024 * 1024 + 5;
    random_file(&s.share.join("big.bin"), size, "cut-get");
    let want = hash_file(&s.share.join("big.bin"));

    // Into a file: the `.part` file is resumed.
    let (proxy, cuts) = cutting_proxy(&hub.addr, Way::ToClient, 5 << 20);
    let out = troca_through(&hub, &proxy, &s.client, &["get", "big.bin"]);
    let said = ok(&out) + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert!(said.contains("trying again in 1s (1 of 5)"), "{said}");
    assert!(said.contains("resuming big.bin at byte"), "{said}");
    assert_eq!(hash_file(&s.client.join("big.bin")), want);

    // To standard output: it goes on from the bytes already written.
    let (proxy, cuts) = cutting_proxy(&hub.addr, Way::ToClient, 7 << 20);
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["-q", "get", "big.bin", "-o", "-"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert_eq!(out.stdout.len() as u64, size);
    assert_eq!(blake3::hash(&out.stdout).to_hex().as_str(), want);

    // An upload: the hub keeps what arrived, and the next try sends the rest.
    let (proxy, cuts) = cutting_proxy(&hub.addr, Way::ToHub, 6 << 20);
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["put", "big.bin", "--as", "again.bin"],
    );
    let said = ok(&out) + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert!(
        said.contains("resuming upload of again.bin at byte"),
        "{said}"
    );
    assert_eq!(hash_file(&s.share.join("again.bin")), want);

    // Without tries again, the command fails as before and the next one resumes.
    std::fs::remove_file(s.client.join("big.bin")).unwrap();
    let (proxy, _) = cutting_proxy(&hub.addr, Way::ToClient, 5 << 20);
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["get", "big.bin", "--retries", "0"],
    );
    let err = fails(&out, 1);
    assert!(err.contains("cannot download big.bin"), "{err}");
    assert!(s.client.join("big.bin.part").exists(), "{err}");
    assert!(!s.client.join("big.bin").exists());
}

/// A folder of small files cut off mid-way: the files not answered are sent again, and every
/// one arrives once, whole.
#[test]
fn a_folder_upload_cut_off_sends_the_files_not_answered_again() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let dir = s.client.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..400 {
        random_file(
            &dir.join(format!("f{i:03}.bin")),
            20_000,
            &format!("many-{i}"),
        );
    }
    let (proxy, cuts) = cutting_proxy(&hub.addr, Way::ToHub, 3 << 20);
    let out = troca_through(&hub, &proxy, &s.client, &["--json", "put", "many"]);
    let rows = json(&out);
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trying again"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows.as_array().unwrap().len(), 400, "{rows}");
    for i in 0..400 {
        let name = format!("f{i:03}.bin");
        assert_eq!(
            hash_file(&s.share.join("many").join(&name)),
            hash_file(&dir.join(&name)),
            "{name}"
        );
    }

    // And back: a folder download cut off fetches what it had not.
    let back = s.client.join("back");
    let (proxy, cuts) = cutting_proxy(&hub.addr, Way::ToClient, 3 << 20);
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["--json", "get", "many", "-o", "back"],
    );
    let rows = json(&out);
    assert_eq!(cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert_eq!(rows.as_array().unwrap().len(), 400, "{rows}");
    for i in 0..400 {
        let name = format!("f{i:03}.bin");
        assert_eq!(
            hash_file(&back.join("many").join(&name)),
            hash_file(&dir.join(&name)),
            "{name}"
        );
    }
}

/// An upload to a hub that stops taking bytes, the connection still open: the client gives up
/// after `--timeout` instead of waiting for ever, and its next try sends the rest.
#[test]
fn an_upload_to_a_hub_that_stops_reading_is_given_up_on_and_tried_again() {
    let s = Scratch::new();
    // The hub would wait long on the stalled connection: the next try takes the upload over.
    let hub = Hub::start(&s.share, &[]);
    let file = s.client.join("big.bin");
    random_file(&file, 64 * 1024 * 1024, "stalled-put");
    let (proxy, stalls) = stalling_proxy(&hub.addr, Way::ToHub, 6 << 20);
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["put", "big.bin", "--timeout", "2s"],
    );
    let said = ok(&out) + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(stalls.load(Ordering::SeqCst), 1, "the proxy stalled once");
    assert!(said.contains("took no byte for 2 s"), "{said}");
    assert_eq!(hash_file(&s.share.join("big.bin")), hash_file(&file));
}

/// A download to standard output goes on across a hub killed and started again: the client
/// connects again once the hub is back and takes the file from the bytes it already wrote out.
#[test]
fn a_download_to_stdout_goes_on_across_a_hub_restart() {
    use std::io::Read;
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--no-http"]);
    let size: u64 = 96 * 1024 * 1024;
    random_file(&s.share.join("big.bin"), size, "restart");
    let want = hash_file(&s.share.join("big.bin"));
    let mut child = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("XDG_DATA_HOME", hub.client_data())
        .args(["get", "big.bin", "-o", "-", "--retries", "8"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // The first bytes arrive; the client then waits on this test to read more, mid-file.
    let mut got = vec![0u8; 8 << 20];
    stdout.read_exact(&mut got).unwrap();
    // The hub is killed and started again on the same port with the same state (and key).
    let addr = hub.addr.clone();
    drop(hub);
    let hub = Hub::start_on(&s.share, &addr, &["--no-http"]);
    stdout.read_to_end(&mut got).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("trying again"), "{said}");
    assert!(said.contains("resuming big.bin at byte"), "{said}");
    assert_eq!(got.len() as u64, size);
    assert_eq!(blake3::hash(&got).to_hex().as_str(), want);
    drop(hub);
}

/// A client that sends request after request and reads no answer: once the answers fill the
/// socket, the hub gives up on it after `--stall-timeout` instead of holding the connection
/// (and its slot) for ever.
#[test]
fn a_client_that_reads_no_answers_is_dropped() {
    use std::io::Write;
    use troca_proto::msg::{Hello, List};
    let s = Scratch::new();
    for i in 0..200 {
        let name = format!("a-long-name-to-fill-the-listing-{i:03}.txt");
        std::fs::write(s.share.join(name), "x").unwrap();
    }
    let hub = Hub::start(&s.share, &["--plaintext", "--stall-timeout", "1s"]);
    let mut raw = std::net::TcpStream::connect(&hub.addr).unwrap();
    let hello = Hello {
        magic: troca_proto::MAGIC,
        version: troca_proto::PROTOCOL_VERSION,
        client: "never-reads".into(),
        token: None,
        owner_key: None,
    };
    let mut frames = Vec::new();
    troca_proto::encode_frame(&hello.into(), &mut frames);
    raw.write_all(&frames).unwrap();
    frames.clear();
    let list = troca_proto::Message::from(List {
        prefix: String::new(),
    });
    for _ in 0..1000 {
        troca_proto::encode_frame(&list, &mut frames);
    }
    // A thousand listings of 200 names, far more than the sockets' buffers hold, and not a
    // byte read: the hub's writes stop, then so do its reads of this socket.
    let never_reads = |c: &serde_json::Value| c["name"] == "never-reads";
    until_who(&hub, &s.client, |who| who.iter().any(never_reads));
    raw.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = raw.write_all(&frames);
    until_who(&hub, &s.client, |who| !who.iter().any(never_reads));
}

/// The same on the web face: a download the client never reads.
#[test]
fn a_web_client_that_reads_nothing_is_dropped() {
    use std::io::{Read, Write};
    let s = Scratch::new();
    // Far larger than the sockets' buffers.
    random_file(&s.share.join("big.bin"), 64 << 20, "web-stall");
    let hub = Hub::start(&s.share, &["--stall-timeout", "1s"]);
    let web = hub.web.clone().unwrap();
    let web = web.trim_start_matches("http://").trim_end_matches('/');
    let mut raw = std::net::TcpStream::connect(web).unwrap();
    raw.write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The answer has begun: from here the download is the hub's to give up on.
    let mut first = [0u8; 12];
    raw.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let downloading = |c: &serde_json::Value| c["target"] == "big.bin";
    until_who(&hub, &s.client, |who| !who.iter().any(downloading));
    // It was cut off: what the sockets held, not the whole file.
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.len() < 32 << 20, "{} bytes came", rest.len());
}

/// Waits until `troca who`'s clients satisfy `seen`; fails a minute on.
fn until_who(hub: &Hub, cwd: &std::path::Path, seen: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let who = json(&hub.troca(cwd, &["--json", "who"]));
        if seen(who.as_array().unwrap()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "a minute on: {who}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An upload whose link died without a word (the hub still waits on the old connection) is
/// taken over at once by its owner's next try, long before the hub's stall timeout, and goes
/// on from the bytes the hub holds. Another owner is still told the name is busy.
#[test]
fn an_upload_on_a_dead_link_is_taken_over_by_its_owner_at_once() {
    let s = Scratch::new();
    // The hub would wait ten minutes on the dead connection.
    let hub = Hub::start(&s.share, &["--stall-timeout", "600s"]);
    let file = s.client.join("big.bin");
    random_file(&file, 64 << 20, "taken-over");

    // The owner's upload stalls in the proxy; the hub waits on it.
    let (proxy, stalls) = stalling_proxy(&hub.addr, Way::ToHub, 6 << 20);
    let args = ["put", "big.bin", "--timeout", "600s", "--retries", "0"];
    let stalled = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .env("XDG_DATA_HOME", hub.client_data())
        .env("TROCA_HUB", &proxy)
        .env("TROCA_HUB_KEY", hub.key.as_ref().unwrap())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _stalled = Killed(stalled);
    let uploading = |c: &serde_json::Value| c["target"] == "big.bin";
    until_who(&hub, &s.client, |who| {
        stalls.load(Ordering::SeqCst) == 1 && who.iter().any(uploading)
    });

    // Someone else: busy.
    let other = s.client.join("other-data");
    let out = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .env("XDG_DATA_HOME", &other)
        .envs(hub.client_env())
        .env("TROCA_HUB_KEY", hub.key.as_ref().unwrap())
        .env_remove("TROCA_TOKEN")
        .args(["put", "big.bin", "--retries", "0"])
        .output()
        .unwrap();
    let err = fails(&out, 1);
    assert!(err.contains("being uploaded by another client"), "{err}");

    // The owner again, on a new connection: the old one is stopped, the rest sent.
    let out = troca_through(
        &hub,
        &proxy,
        &s.client,
        &["put", "big.bin", "--retries", "0"],
    );
    let said = ok(&out) + &String::from_utf8_lossy(&out.stderr);
    let at = said
        .split("resuming upload of big.bin at byte ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(at.is_some_and(|at| at > 0 && at <= 6 << 20), "{said}");
    assert_eq!(hash_file(&s.share.join("big.bin")), hash_file(&file));
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
