//! The hub against a hostile client or a hostile local user: each test is an attack that once
//! worked, run against the real binary, asserting that it no longer does.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use troca_net::client::{ClientOptions, HubClient};
use troca_proto::msg::Put;

/// How many attempts of each operation the path race makes on each face.
fn attempts() -> u64 {
    std::env::var("TROCA_RACE_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Swaps `a` and `b` (a folder inside the share and a link to outside) until dropped.
struct Swapper {
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn start(a: &Path, b: &Path) -> Swapper {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        let (a, b) = (c(a), c(b));
        let stop = Arc::new(AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let (s, n) = (Arc::clone(&stop), Arc::clone(&swaps));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // SAFETY: two valid NUL-terminated paths.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(r, 0, "exchange failed: {}", std::io::Error::last_os_error());
                n.fetch_add(1, Ordering::Relaxed);
            }
        });
        Swapper {
            stop,
            swaps,
            thread: Some(thread),
        }
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A share with `d/` (a real folder holding `f` = "inside") and `l` (a link to a folder outside
/// holding `f` = "OUTSIDE" and `x`, a file nothing may delete), swapped in a loop.
struct RaceSetup {
    scratch: Scratch,
    outside: std::path::PathBuf,
    hub: Hub,
    _swapper: Swapper,
}

fn race_setup(link_target: &str) -> RaceSetup {
    let scratch = Scratch::new();
    let outside = scratch.tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f"), b"OUTSIDE").unwrap();
    std::fs::write(outside.join("x"), b"keep me").unwrap();
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("sub/keep"), b"keep me too").unwrap();
    std::fs::create_dir_all(scratch.share.join("d")).unwrap();
    std::fs::write(scratch.share.join("d/f"), b"inside").unwrap();
    let target = if link_target == "absolute" {
        outside.clone()
    } else {
        std::path::PathBuf::from("../outside")
    };
    std::os::unix::fs::symlink(target, scratch.share.join("l")).unwrap();
    let hub = Hub::start(&scratch.share, &[]);
    let swapper = Swapper::start(&scratch.share.join("d"), &scratch.share.join("l"));
    RaceSetup {
        scratch,
        outside,
        hub,
        _swapper: swapper,
    }
}

impl RaceSetup {
    fn swaps(&self) -> u64 {
        self._swapper.swaps.load(Ordering::Relaxed)
    }

    /// Files that appeared outside besides the two put there.
    fn strays(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "f" && n != "x" && n != "sub")
            .collect();
        names.sort();
        names
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(std::fs::read(self.outside.join("f")).unwrap(), b"OUTSIDE");
        assert!(self.outside.join("x").exists(), "x outside was deleted");
        assert!(
            self.outside.join("sub/keep").exists(),
            "sub/keep outside was deleted or moved"
        );
        let in_sub = std::fs::read_dir(self.outside.join("sub")).unwrap().count();
        assert_eq!(in_sub, 1, "something was added to sub outside");
        assert_eq!(self.strays(), Vec::<String>::new(), "files written outside");
    }
}

/// Gets, deletes and uploads through a folder swapped for a link to outside, on the native face:
/// nothing outside is read, deleted or written. So too folder operations: moving, deleting a
/// tree, making a folder, searching.
#[test]
fn native_path_operations_never_leave_the_share_while_a_folder_is_swapped() {
    for flavour in ["absolute", "relative"] {
        let race = race_setup(flavour);
        let token = race.hub.admin_token();
        let rt = runtime();
        let (mut inside_reads, mut outside_reads) = (0u64, 0u64);
        rt.block_on(async {
            let options = ClientOptions {
                name: "racer".into(),
                token: Some(token),
                ..race.hub.options()
            };
            let mut c = HubClient::connect(&race.hub.addr, &options).await.unwrap();
            let mut buf = [0u8; 64];
            for i in 0..attempts() {
                if let Ok(mut d) = c.get("d/f", 0).await {
                    let n = d.header().size as usize;
                    let mut got = 0;
                    while got < n {
                        got += d.read(&mut buf[got..n]).await.unwrap();
                    }
                    d.finish().await.unwrap();
                    match &buf[..n] {
                        b"inside" => inside_reads += 1,
                        b"OUTSIDE" => outside_reads += 1,
                        other => panic!("read {other:?}"),
                    }
                }
                assert!(
                    c.remove("d/x", false).await.is_err(),
                    "d/x never exists inside"
                );
                let name = format!("d/new-{i}");
                let put = Put {
                    name,
                    size: 1,
                    source_mtime_ns: 0,
                    force: false,
                };
                if let Ok(mut up) = c.put(put).await {
                    up.write(b"n").await.unwrap();
                    let _ = up.finish(*blake3::hash(b"n").as_bytes()).await;
                }
                assert!(c.rename("d/x", "stolen", true).await.is_err());
                assert!(c.rename("d/sub", "stolen", true).await.is_err());
                assert!(c.remove("d/sub", true).await.is_err(), "d/sub is outside");
                let _ = c.make_folder("d/made").await;
                // A search walks the whole share: not every round.
                if i % 16 == 0 {
                    let found = c.find("keep").await.unwrap();
                    assert!(found.entries.is_empty(), "found outside: {found:?}");
                }
            }
        });
        assert!(race.swaps() > 1000, "the folder was hardly swapped");
        race.assert_outside_untouched();
        assert_eq!(outside_reads, 0, "{flavour}: read outside the share");
        assert!(
            inside_reads > 0,
            "{flavour}: the race never let a get through"
        );
    }
}

/// A keep-alive HTTP/1.1 connection speaking just enough to send a request and read the answer.
struct Http {
    reader: BufReader<TcpStream>,
    /// The last answer's headers, names in lower case.
    headers: Vec<(String, String)>,
}

impl Http {
    fn connect(web: &str) -> Http {
        let addr = web
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Http {
            reader: BufReader::new(stream),
            headers: Vec::new(),
        }
    }

    /// Sends one request; returns the status and body.
    fn request(&mut self, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        );
        self.send(method, &head, body)
    }

    /// Sends `head` (ending in its empty line) and `body` as they are, the whole of both before
    /// reading a byte of the answer, as many simple clients do; returns the status and body.
    fn send(&mut self, method: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        self.headers.clear();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
                let header = (k.to_ascii_lowercase(), v.trim().to_owned());
                self.headers.push(header);
            }
        }
        let mut body = vec![0u8; len];
        if method != "HEAD" {
            self.reader.read_exact(&mut body).unwrap();
        }
        (status, body)
    }
}

/// An upload refused before or part-way through its body (here by the address's quota) is
/// answered, even to a client that sends all of its body before reading: the hub reads the
/// rest and throws it away rather than closing on unread bytes, which would reset the
/// connection under the answer. The connection then serves the next request.
#[test]
fn a_refused_upload_is_answered_to_a_client_that_sends_all_before_reading() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--upload-quota-per-ip", "12M"]);
    let body = vec![7u8; 20 << 20];
    let mut http = Http::connect(hub.web.as_deref().unwrap());
    // With its length: refused before a byte of it is read.
    let (status, answer) = http.request("PUT", "/files/sized.bin", "", &body);
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&answer));
    let (status, _) = http.request("GET", "/api/status", "", b"");
    assert_eq!(status, 200);
    // Chunked: refused once 12 MiB came.
    let mut chunked = Vec::new();
    for piece in body.chunks(1 << 20) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for path in ["/files/chunked.bin", "/dav/chunked.bin"] {
        let head =
            format!("PUT {path} HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n");
        let (status, answer) = http.send("PUT", &head, &chunked);
        assert!(
            status == 429 || status == 507,
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        // WebDAV's refusal of a PUT closes the connection, once its answer is out.
        let closes = http
            .headers
            .contains(&("connection".into(), "close".into()));
        assert_eq!(closes, path.starts_with("/dav/"), "{path}");
        if closes {
            http = Http::connect(hub.web.as_deref().unwrap());
        }
        let (status, _) = http.request("GET", "/api/status", "", b"");
        assert_eq!(status, 200);
    }
    for name in ["sized.bin", "chunked.bin"] {
        assert!(!s.share.join(name).exists(), "{name}");
    }
}

/// The same race on the web face.
#[test]
fn web_path_operations_never_leave_the_share_while_a_folder_is_swapped() {
    let race = race_setup("absolute");
    let auth = format!("Authorization: Bearer {}\r\n", race.hub.admin_token());
    let mut http = Http::connect(race.hub.web.as_deref().unwrap());
    let (mut inside_reads, mut outside_reads) = (0u64, 0u64);
    for i in 0..attempts() {
        match http.request("GET", "/files/d/f", "", b"") {
            (200, body) if body == b"inside" => inside_reads += 1,
            (200, body) if body == b"OUTSIDE" => outside_reads += 1,
            (200, body) => panic!("read {body:?}"),
            _ => {}
        }
        let (status, _) = http.request("DELETE", "/files/d/x", &auth, b"");
        assert_ne!(status / 100, 2, "d/x never exists inside");
        http.request("PUT", &format!("/files/d/web-{i}"), "", b"w");
    }
    assert!(race.swaps() > 1000, "the folder was hardly swapped");
    race.assert_outside_untouched();
    assert_eq!(outside_reads, 0, "read outside the share");
    assert!(inside_reads > 0, "the race never let a get through");
    drop(race.scratch);
}

/// The state folder holds the history, owners and token hashes: other local users may not read
/// it, nor the database files in it (even when they were made by an older, laxer hub).
#[test]
fn the_state_folder_and_its_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let state = s.share.join(".troca");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(state.join("troca.db"), b"").unwrap();
    std::fs::set_permissions(
        state.join("troca.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["ls"]));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    for f in ["troca.db", "troca.db-wal", "troca.db-shm", "admin.token"] {
        let p = state.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert!(
        state.join("troca.db-wal").exists(),
        "the WAL is checked too"
    );
}

/// Waits for `cond`, checking every 10 ms; a minute without it fails the test (a hang would
/// only time out the whole run).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The soft descriptor limit of this process, raised to the hard one first.
fn descriptor_limit() -> usize {
    troca_net::raise_fd_limit();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur as usize
}

/// A connection from another loopback address (127.0.0.2), as a second host would make.
fn connect_from_elsewhere(addr: &str) -> std::net::TcpStream {
    let rt = runtime();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        socket.connect(addr.parse().unwrap()).await.unwrap()
    });
    let std = stream.into_std().unwrap();
    std.set_nonblocking(false).unwrap();
    std
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

/// Everything a connection receives until the other side closes it (bounded by a generous
/// read timeout so a hub that never closes fails the test instead of hanging it).
fn read_to_close(stream: &mut std::net::TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the connection was not closed: {e}"),
        }
    }
}

/// Thousands of half-open connections from one address (each sent one byte and went quiet)
/// neither shut another address out of either face nor grow the hub without bound; the
/// connections past the per-address cap are told why they are refused.
#[test]
fn one_address_cannot_lock_others_out_of_either_face() {
    // More than the hub's whole connection limit, so one address alone could fill it.
    let n = 3_000.min(descriptor_limit().saturating_sub(1_000) / 2);
    let s = Scratch::new();
    std::fs::write(s.share.join("hello.txt"), b"hello").unwrap();
    let hub = Hub::start(
        &s.share,
        &[
            "--max-connections",
            "2048",
            "--max-connections-per-ip",
            "64",
        ],
    );
    let web = hub
        .web
        .clone()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut held = Vec::with_capacity(2 * n);
    // Each sends the first byte of what its face expects (a TLS record's type, an HTTP method),
    // so the hub waits for more instead of rejecting it at once and freeing its room.
    for _ in 0..n {
        for (addr, byte) in [(&hub.addr, b"\x16"), (&web, b"G")] {
            let mut c = TcpStream::connect(addr.as_str()).unwrap();
            let _ = c.write_all(byte);
            held.push(c);
        }
    }
    // Those past the cap were refused at once, with the reason (the first past it is read: the
    // ones within it are cut after the handshake timeout, which may free room for later ones on
    // a slow machine).
    let native_refusal = read_to_close(&mut held[2 * 64]);
    assert!(
        String::from_utf8_lossy(&native_refusal).contains("too many connections from your address"),
        "{native_refusal:?}"
    );
    let web_refusal = String::from_utf8(read_to_close(&mut held[2 * 64 + 1])).unwrap();
    assert!(web_refusal.starts_with("HTTP/1.1 503"), "{web_refusal}");
    // Another address is served on both faces.
    let rt = runtime();
    let elsewhere = connect_from_elsewhere(&hub.addr);
    elsewhere.set_nonblocking(true).unwrap();
    let listed = rt.block_on(async {
        let stream = tokio::net::TcpStream::from_std(elsewhere).unwrap();
        let mut c = HubClient::over(stream, &hub.addr, &hub.options())
            .await
            .unwrap();
        c.list("").await.unwrap()
    });
    assert_eq!(listed.len(), 1);
    let mut http = Http {
        reader: BufReader::new(connect_from_elsewhere(&web)),
        headers: Vec::new(),
    };
    assert_eq!(
        http.request("GET", "/files/hello.txt", "", b""),
        (200, b"hello".to_vec())
    );
    let rss = rss_mib(hub.daemon.child.id());
    assert!(
        rss < 256,
        "hub RSS {rss} MiB with {n} half-open connections per face"
    );
    eprintln!("{n} half-open connections per face from one address; hub RSS {rss} MiB");
}

/// Sends `bytes` one at a time, a few per second, until told to stop or the peer is gone;
/// returns how many were sent.
fn trickle(mut stream: std::net::TcpStream, bytes: Vec<u8>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        for (i, b) in bytes.iter().enumerate() {
            if stream.write_all(&[*b]).is_err() {
                return i;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        bytes.len()
    })
}

/// A request trickled a byte at a time is cut after the request timeout on both faces, however
/// long the idle timeout is, and the native one is recorded as `invalid`.
#[test]
fn a_request_trickled_byte_by_byte_is_cut_on_both_faces() {
    let s = Scratch::new();
    // Plaintext, so the test can write frames itself (TLS would only carry them).
    let hub = Hub::start(&s.share, &["--request-timeout", "1s", "--plaintext"]);
    // Native: a proper hello, then a List frame a byte at a time.
    let mut native = TcpStream::connect(&hub.addr).unwrap();
    let mut hello = Vec::new();
    troca_proto::encode_frame(
        &troca_proto::msg::Hello {
            magic: troca_proto::MAGIC,
            version: troca_proto::PROTOCOL_VERSION,
            client: "slow".into(),
            token: None,
            owner_key: None,
        }
        .into(),
        &mut hello,
    );
    native.write_all(&hello).unwrap();
    let mut list = Vec::new();
    troca_proto::encode_frame(
        &troca_proto::msg::List {
            prefix: "x".repeat(100),
        }
        .into(),
        &mut list,
    );
    let sent = trickle(native.try_clone().unwrap(), list.clone());
    let got = read_to_close(&mut native);
    assert!(
        String::from_utf8_lossy(&got).contains("must arrive within"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        sent.join().unwrap() < list.len(),
        "the whole frame got through"
    );
    let history = ok(&hub.troca(&s.client, &["history", "--json"]));
    assert!(history.contains("\"invalid\""), "{history}");

    // Web: a request line, then headers a byte at a time.
    let web = hub.web.clone().unwrap();
    let mut http =
        TcpStream::connect(web.trim_start_matches("http://").trim_end_matches('/')).unwrap();
    http.write_all(b"GET /api/status HTTP/1.1\r\nHost: hub\r\n")
        .unwrap();
    let headers = b"X-Slow: "
        .iter()
        .chain([b'a'; 120].iter())
        .copied()
        .collect::<Vec<u8>>();
    let sent = trickle(http.try_clone().unwrap(), headers.clone());
    read_to_close(&mut http);
    assert!(
        sent.join().unwrap() < headers.len(),
        "the headers were never cut"
    );
}

/// A history request asks for at most one page, however large its limit, on both faces, and
/// says where the next page starts.
#[test]
fn a_history_request_gets_one_bounded_page_and_a_cursor() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut c = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
        for _ in 0..1_500 {
            c.who().await.unwrap();
        }
        let everything = troca_proto::msg::History {
            limit: u32::MAX,
            client: None,
            op: None,
            before: 0,
        };
        let page = c.history(everything.clone()).await.unwrap();
        assert_eq!(page.entries.len(), 1_000);
        assert_eq!(page.next, page.entries.last().unwrap().id);
        let rest = c
            .history(troca_proto::msg::History {
                before: page.next,
                ..everything
            })
            .await
            .unwrap();
        assert!(rest.entries.len() >= 500, "{}", rest.entries.len());
        assert!(rest.entries[0].id < page.next);
        assert_eq!(rest.next, 0, "nothing older is left");
    });
    let mut http = Http::connect(hub.web.as_deref().unwrap());
    let head = "GET /api/history?limit=4294967295 HTTP/1.1\r\nHost: hub\r\n\r\n";
    http.reader.get_mut().write_all(head.as_bytes()).unwrap();
    let mut line = String::new();
    let mut link = None;
    let mut len = 0;
    loop {
        line.clear();
        http.reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("link:") {
            link = Some(v.trim().to_owned());
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    http.reader.read_exact(&mut body).unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1_000);
    let link = link.expect("a Link header to the next page");
    assert!(
        link.contains("before=") && link.contains("rel=\"next\""),
        "{link}"
    );
}

/// The id of the file at `path`, as peers compute it.
fn swarm_id(path: &Path) -> troca_proto::Hash {
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    troca_peer::library::hash_pieces(&mut f, len).unwrap().0
}

/// `troca swarm get ID` in `cwd`, run off the async workers.
async fn swarm_get(
    tracker: &str,
    cwd: &Path,
    id: &troca_proto::Hash,
    extra: &'static [&'static str],
) -> std::process::Output {
    let hex = blake3::Hash::from_bytes(*id).to_hex().to_string();
    let (t, cwd) = (tracker.to_owned(), cwd.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(TROCA)
            .current_dir(&cwd)
            .args(["swarm", "get", &hex, "--tracker", &t, "-o", "."])
            .args(extra)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn tracker_client(tracker: &str, from: &str) -> troca_tracker::client::TrackerClient {
    let rt = tokio::runtime::Handle::current();
    let (t, l) = (
        tracker.parse().unwrap(),
        format!("{from}:0").parse().unwrap(),
    );
    tokio::task::block_in_place(|| {
        rt.block_on(troca_tracker::client::TrackerClient::bound(t, l))
            .unwrap()
    })
}

/// A liar who claims a real file's id first with a wrong size (and leaves), and an address that
/// registers the same id 32 times from lower ports with nothing behind them, neither hide the
/// honest peer nor poison the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liars_on_the_tracker_neither_eclipse_nor_poison_an_honest_peer() {
    use troca_proto::key::HubKey;
    use troca_proto::tracker::FileInfo;
    let s = Scratch::new();
    let file = s.share.join("report.bin");
    random_file(&file, 3 << 20, "honest");
    let id = swarm_id(&file);
    let size = 3u64 << 20;
    let tracker = Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]);
    // The poisoner claims the id first, with size + 1 and another name, then leaves.
    let mut poisoner = tracker_client(&tracker.addr, "127.0.0.3");
    let claim = |size, name: &str| FileInfo {
        id,
        size,
        name: name.to_owned(),
    };
    poisoner
        .register(
            9,
            [3; 16],
            Some(HubKey([3; 32])),
            &[claim(size + 1, "virus.exe")],
        )
        .await
        .unwrap();
    poisoner.end([3; 16]).await.unwrap();
    // Another stays, with size + 1 too.
    let mut stayer = tracker_client(&tracker.addr, "127.0.0.3");
    stayer
        .register(
            9,
            [4; 16],
            Some(HubKey([4; 32])),
            &[claim(size + 1, "virus.exe")],
        )
        .await
        .unwrap();
    // 32 registrations of the true claim from one address, serving nothing.
    let mut eclipse = Vec::new();
    for i in 0..32u8 {
        let mut c = tracker_client(&tracker.addr, "127.0.0.2");
        c.register(
            1,
            [i; 16],
            Some(HubKey([i; 32])),
            &[claim(size, "report.bin")],
        )
        .await
        .unwrap();
        eclipse.push(c);
    }
    // The honest peer, from 127.0.0.1.
    let peer = Daemon::start(&[
        "peer".as_ref(),
        s.share.as_os_str(),
        "--tracker".as_ref(),
        tracker.addr.as_ref(),
    ]);
    let mut asker = tracker_client(&tracker.addr, "127.0.0.1");
    let honest = loop {
        let listed = asker.list("", Some(id)).await.unwrap();
        let true_claim = listed.iter().find(|l| l.file.size == size);
        if let Some(l) = true_claim.filter(|l| {
            l.peers
                .iter()
                .any(|p| p.addr.ip().to_string() == "127.0.0.1")
        }) {
            break l.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(honest.file.name, "report.bin", "the name most holders give");
    // Every listing has the honest peer, however the sample falls.
    for _ in 0..20 {
        let listed = asker.list("", Some(id)).await.unwrap();
        let l = listed.iter().find(|l| l.file.size == size).unwrap();
        assert!(
            l.peers
                .iter()
                .any(|p| p.addr.ip().to_string() == "127.0.0.1"),
            "{:?}",
            l.peers
        );
    }
    let out = swarm_get(&tracker.addr, &s.client, &id, &[]).await;
    ok(&out);
    assert_eq!(hash_file(&s.client.join("report.bin")), hash_file(&file));
    drop(peer);
}

/// Names from the network cannot carry terminal escapes or bidirectional overrides: the hub
/// refuses them in a Hello, a Register and a file name, the tracker in a file name, and what the
/// CLI prints of a refused request shows them escaped.
#[test]
fn terminal_escapes_and_bidi_overrides_never_reach_a_terminal_raw() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let rt = runtime();
    rt.block_on(async {
        let evil = ClientOptions {
            name: "\u{1b}]0;owned\u{7}".into(),
            ..hub.options()
        };
        let refused = HubClient::connect(&hub.addr, &evil).await.unwrap_err();
        assert!(refused.to_string().contains("client name"), "{refused}");
        let mut c = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
        assert!(c.register("ana\u{202e}").await.is_err());
        let put = Put {
            name: "invoice\u{202e}txt.exe".into(),
            size: 1,
            source_mtime_ns: 0,
            force: false,
        };
        let err = c.put(put).await.unwrap_err();
        assert!(err.to_string().contains("bidirectional"), "{err}");
        // A request for a name with a terminal escape is refused and recorded as it came.
        assert!(c.get("\u{1b}[2Jgone", 0).await.is_err());
    });
    let out = ok(&hub.troca(&s.client, &["history", "--limit", "10"]));
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{202e}'),
        "{out:?}"
    );
    assert!(out.contains("\\u{1b}[2Jgone"), "{out}");
    // The tracker refuses such file names outright.
    let tracker = Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]);
    rt.block_on(async {
        let mut c = troca_tracker::client::TrackerClient::new(tracker.addr.parse().unwrap())
            .await
            .unwrap();
        let f = troca_proto::tracker::FileInfo {
            id: [1; 32],
            size: 1,
            name: "a\u{1b}[31m.txt".into(),
        };
        let err = c.register(9, [1; 16], None, &[f]).await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    });
}

/// A peer that lies: it offers a file that does not exist (random piece hashes that merge to
/// its id) and answers every piece with garbage, forever.
async fn serve_fake_file(
    listener: tokio::net::TcpListener,
    size: u64,
    hashes: Vec<troca_proto::Hash>,
) {
    use troca_proto::msg::{PieceData, PieceHashes, Welcome, HASHES_PER_FRAME};
    use troca_proto::Message;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let hashes = hashes.clone();
        tokio::spawn(async move {
            let mut conn = troca_net::Connection::new(stream);
            let garbage = vec![0x5a; 1 << 20];
            while let Ok(Some(msg)) = conn.read_message().await {
                let sent = match msg {
                    Message::Hello(_) => {
                        let welcome = Welcome {
                            version: troca_proto::PROTOCOL_VERSION,
                            server: "liar".into(),
                            max_frame: troca_proto::MAX_FRAME_LEN as u32,
                        };
                        conn.send(&welcome.into()).await
                    }
                    Message::Pieces(_) => {
                        let n = hashes.chunks(HASHES_PER_FRAME).count();
                        for (i, c) in hashes.chunks(HASHES_PER_FRAME).enumerate() {
                            let h = PieceHashes {
                                size,
                                hashes: c.to_vec(),
                                last: i + 1 == n,
                            };
                            conn.queue(&h.into());
                        }
                        conn.flush().await
                    }
                    Message::GetPiece(g) => {
                        let layout = troca_proto::pieces::Layout::for_len(size);
                        let len = layout.range(g.index.into()).1;
                        let mut r = conn
                            .send(
                                &PieceData {
                                    index: g.index,
                                    len,
                                }
                                .into(),
                            )
                            .await;
                        let mut left = len;
                        while r.is_ok() && left > 0 {
                            let n = left.min(garbage.len() as u64) as usize;
                            r = conn.write_raw(&garbage[..n]).await;
                            left -= n as u64;
                        }
                        r
                    }
                    _ => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }
}

/// The largest resident size of the children this process has waited for, in MiB.
fn children_peak_rss_mib() -> i64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss / 1024
}

/// Liars from four addresses list a file that does not exist. One too large for the disk is
/// refused before anything is created; one that fits is fetched in bounded memory, every liar
/// dropped, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_file_from_liars_costs_neither_memory_nor_disk() {
    use troca_proto::tracker::FileInfo;
    let s = Scratch::new();
    let tracker = Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let free = troca_net::durable::available_bytes(&s.client);
    for (size, name) in [
        (1u64 << 40, "huge.bin"),
        ((free / 4).min(8 << 30), "fits.bin"),
    ] {
        let layout = troca_proto::pieces::Layout::for_len(size);
        let hashes: Vec<troca_proto::Hash> = (0..layout.count())
            .map(|i| *blake3::hash(format!("{name}{i}").as_bytes()).as_bytes())
            .collect();
        let id = layout.root(&hashes).unwrap();
        let mut liars = Vec::new();
        for (i, addr) in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
            .iter()
            .enumerate()
        {
            let listener = tokio::net::TcpListener::bind(format!("{addr}:0"))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(serve_fake_file(listener, size, hashes.clone()));
            let mut c = tracker_client(&tracker.addr, addr);
            let f = FileInfo {
                id,
                size,
                name: name.into(),
            };
            c.register(port, [i as u8 + 1; 16], None, &[f])
                .await
                .unwrap();
            liars.push(c);
        }
        // The liars serve in plaintext, so the downloader must agree to it to try them.
        let out = swarm_get(&tracker.addr, &s.client, &id, &["--plaintext"]).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        if size == 1 << 40 {
            assert!(err.contains("not enough space"), "{err}");
        }
        assert_eq!(
            files_under(&s.client),
            Vec::<String>::new(),
            "{name}: {err}"
        );
        assert!(
            !s.client.join(".troca-swarm").exists(),
            "{name}: the partial folder is gone"
        );
        let peak = children_peak_rss_mib();
        assert!(peak < 64, "{name}: swarm get peaked at {peak} MiB");
        eprintln!(
            "{name}: {size} bytes in pieces of {}; peak RSS {peak} MiB",
            layout.piece
        );
    }
}

fn put(name: &str, size: u64) -> Put {
    Put {
        name: name.into(),
        size,
        source_mtime_ns: 1,
        force: false,
    }
}

/// Two uploads that together exceed the free space: the second is refused at once (the first
/// reserved its size when it began), and the first completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reserves_its_space_so_the_next_is_refused_at_once() {
    if !needs_root("it mounts a small tmpfs to fill") {
        return;
    }
    let s = Scratch::new();
    let disk = SmallDisk::mount(&s.tmp.path().join("disk"), "64m");
    let share = disk.path.join("share");
    let hub = Hub::start(&share, &[]);
    let body = vec![7u8; 40 << 20];
    let mut a = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut up = a.put(put("a.bin", body.len() as u64)).await.unwrap();
    up.write(&body[..1 << 20]).await.unwrap();
    let mut b = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let refused = b.put(put("b.bin", 40 << 20)).await.unwrap_err();
    assert!(
        refused.to_string().contains("not enough space"),
        "{refused}"
    );
    up.write(&body[1 << 20..]).await.unwrap();
    up.finish(*blake3::hash(&body).as_bytes()).await.unwrap();
    assert_eq!(
        std::fs::metadata(share.join("a.bin")).unwrap().len(),
        40 << 20
    );
    drop(hub);
}

/// `--keep-free` leaves room on the disk: an upload that would eat into it is refused on every
/// path (a large file, a small one in a batch, the web face, WebDAV), while one that leaves it
/// goes through, and reading goes on.
#[test]
fn uploads_leave_the_space_to_keep_free_on_every_face() {
    if !needs_root("it mounts a small tmpfs") {
        return;
    }
    let s = Scratch::new();
    let disk = SmallDisk::mount(&s.tmp.path().join("disk"), "64m");
    let share = disk.path.join("share");
    let c = &s.client;
    random_file(&c.join("one.bin"), 20 << 20, "keep-free-one");
    random_file(&c.join("two.bin"), 20 << 20, "keep-free-two");
    std::fs::write(c.join("note.txt"), "a small file").unwrap();
    {
        // Half of 64 MiB kept free: the first 20 MiB fit, the next do not (44 MiB would
        // still be free on the disk).
        let hub = Hub::start(&share, &["--keep-free", "50%"]);
        ok(&hub.troca(c, &["put", "one.bin"]));
        let err = fails(&hub.troca(c, &["put", "two.bin"]), 1);
        assert!(err.contains("not enough space"), "{err}");
        assert!(!share.join("two.bin").exists());
    }
    let hub = Hub::start(&share, &["--keep-free", "100%"]);
    let err = fails(&hub.troca(c, &["put", "note.txt"]), 1);
    assert!(err.contains("not enough space"), "{err}");
    for path in ["/files/web.txt", "/dav/dav.txt"] {
        // A connection each: a refused body may be left unread, and the connection closed.
        let mut http = Http::connect(hub.web.as_deref().unwrap());
        let (status, body) = http.request("PUT", path, "", b"a small file");
        assert_eq!(status, 507, "{path}: {}", String::from_utf8_lossy(&body));
    }
    ok(&hub.troca(c, &["get", "one.bin", "-o", "got/"]));
    assert_eq!(
        hash_file(&c.join("got/one.bin")),
        hash_file(&c.join("one.bin"))
    );
    let names: Vec<String> = std::fs::read_dir(&share)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".troca")
        .collect();
    assert_eq!(names, ["one.bin"]);
}

/// A folder's zip keeps its list of files on disk once it outgrows memory (a MiB), and that
/// file, too, leaves `--keep-free` of the disk: past it the zip stops, cut off (never a zip that
/// looks whole), and the history says why; a small folder's zip still comes whole.
#[test]
fn a_zip_too_large_to_list_in_memory_leaves_the_space_to_keep_free() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.share.join("many")).unwrap();
    for i in 0..20_000 {
        std::fs::write(s.share.join(format!("many/file-{i:05}.txt")), "").unwrap();
    }
    write_tree(&s.share, &[("few/a.txt", "a"), ("few/b.txt", "b")]);
    let hub = Hub::start(&s.share, &["--keep-free", "100%"]);
    let web = hub.web.clone().unwrap();
    let few = curl(&["-f", &format!("{web}files/few/?zip")]);
    assert!(few.status.success());
    let archive = zip::ZipArchive::new(std::io::Cursor::new(few.stdout)).unwrap();
    assert_eq!(archive.len(), 2, "its two files");
    let many = curl(&["-f", "-o", "/dev/null", &format!("{web}files/many/?zip")]);
    assert!(
        !many.status.success(),
        "a cut-off zip must not end as a whole one"
    );
    let history = ok(&hub.troca(&s.client, &["history", "--op", "zip"]));
    assert!(history.contains("no_space"), "{history}");
}

/// An address without a token uploads within its quota (bytes and files per window), on
/// every face; a batch stores the files that fit and refuses the rest, saying why once; a
/// token lifts the quota.
#[test]
fn uploads_from_one_address_stay_within_its_quota_on_every_face() {
    let s = Scratch::new();
    let c = &s.client;
    random_file(&c.join("first.bin"), 700 << 10, "quota-first");
    random_file(&c.join("second.bin"), 700 << 10, "quota-second");
    std::fs::create_dir(c.join("tree")).unwrap();
    for i in 0..10 {
        std::fs::write(c.join(format!("tree/f{i}.txt")), format!("file {i}")).unwrap();
    }
    let quota = [
        "--upload-quota-per-ip",
        "1M",
        "--upload-files-per-ip",
        "6",
        "--upload-quota-window",
        "1h",
    ];
    let hub = Hub::start(&s.share, &quota);
    ok(&hub.troca(c, &["put", "first.bin"]));
    let err = fails(&hub.troca(c, &["put", "second.bin"]), 1);
    assert!(
        err.contains("may upload 1.0 MiB an hour without a token") && err.contains("try again in"),
        "{err}"
    );
    assert!(err.contains("--token-file"), "{err}");
    assert!(!s.share.join("second.bin").exists());

    // One file used of six: five of the folder's ten go, the rest are refused in one line.
    let err = fails(&hub.troca(c, &["put", "tree"]), 1);
    assert_eq!(err.matches("6 files an hour").count(), 1, "{err}");
    assert!(
        err.contains("4 more files refused for the same reason"),
        "{err}"
    );
    assert!(err.contains("has used 6 files"), "{err}");
    assert_eq!(std::fs::read_dir(s.share.join("tree")).unwrap().count(), 5);
    let err = fails(&hub.troca(c, &["mkdir", "more"]), 1);
    assert!(err.contains("6 files an hour"), "{err}");

    let mut http = Http::connect(hub.web.as_deref().unwrap());
    let (status, body) = http.request("PUT", "/files/web.txt", "", b"a small file");
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    let retry = http.headers.iter().find(|(k, _)| k == "retry-after");
    let retry: u64 = retry.expect("Retry-After").1.parse().unwrap();
    // A file's share of an hour drains in 10 minutes.
    assert!((1..=600).contains(&retry), "{retry}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "quota");
    assert_eq!(body["retry_after"], retry);
    let mut http = Http::connect(hub.web.as_deref().unwrap());
    let (status, _) = http.request("PUT", "/dav/dav.txt", "", b"a small file");
    assert_eq!(status, 507);

    // With a token nothing is counted.
    ok(&hub.troca_with(c, &hub.admin_token(), &["put", "second.bin"]));
    assert_eq!(
        hash_file(&s.share.join("second.bin")),
        hash_file(&c.join("second.bin"))
    );
    let names: Vec<String> = std::fs::read_dir(&s.share)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".troca")
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

/// A search may look at every name of the share, and a folder's page at every name beneath it
/// (to count what each sub-folder holds). Sixty-four of each at once from one address run one
/// after the other: the hub takes on no thread for each (without the bound its blocking pool
/// grew by one thread per walk in flight), and every one is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_from_one_address_run_one_at_a_time() {
    let s = Scratch::new();
    for d in 0..40 {
        let folder = s.share.join(format!("folder{d}"));
        std::fs::create_dir_all(&folder).unwrap();
        for f in 0..500 {
            std::fs::File::create(folder.join(format!("file{f}.txt"))).unwrap();
        }
    }
    let hub = Hub::start(&s.share, &[]);
    let pid = hub.daemon.child.id();
    let threads = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line[8..].trim().parse::<usize>().unwrap()
    };
    let mut clients = Vec::new();
    for _ in 0..64 {
        clients.push(HubClient::connect(&hub.addr, &hub.options()).await.unwrap());
    }
    // One search first, so the threads every search needs are there before counting.
    let found = clients[0].find("file499").await.unwrap();
    assert_eq!(found.entries.len(), 40);
    let before = threads();
    let searches: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { c.find("nothing-like-this").await }))
        .collect();
    for s in searches {
        assert!(s.await.unwrap().unwrap().entries.is_empty());
    }
    let grew = threads().saturating_sub(before);
    assert!(grew <= 4, "the hub took on {grew} threads for 64 searches");

    let web = hub.web.clone().unwrap();
    let pages: Vec<_> = (0..64)
        .map(|_| {
            let web = web.clone();
            std::thread::spawn(move || Http::connect(&web).request("GET", "/files/", "", b""))
        })
        .collect();
    for p in pages {
        let (status, body) = p.join().unwrap();
        assert_eq!(status, 200);
        assert!(String::from_utf8_lossy(&body).contains("folder39/"));
    }
    let grew = threads().saturating_sub(before);
    assert!(
        grew <= 4,
        "the hub took on {grew} threads for 64 folder pages"
    );
}

/// The admin's view of the partial uploads (`GET /api/partials`).
fn partials(hub: &Hub) -> Vec<serde_json::Value> {
    let mut http = Http::connect(hub.web.as_deref().unwrap());
    let auth = format!("Authorization: Bearer {}\r\n", hub.admin_token());
    let (status, body) = http.request("GET", "/api/partials", &auth, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// A client of `hub` from loopback address `ip`.
async fn client_from(hub: &Hub, ip: &str) -> HubClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(hub.addr.parse().unwrap()).await.unwrap();
    HubClient::over(stream, &hub.addr, &hub.options())
        .await
        .unwrap()
}

/// A client that sends most of a large upload to a small disk and vanishes does not keep
/// everyone else out: its partial shows in status and to the admin, is kept within its
/// address's budget, and gives its space to the next upload that needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_are_budgeted_shown_and_give_way() {
    if !needs_root("it mounts a small tmpfs to fill") {
        return;
    }
    let s = Scratch::new();
    let disk = SmallDisk::mount(&s.tmp.path().join("disk"), "64m");
    let share = disk.path.join("share");
    let hub = Hub::start(&share, &["--partial-budget-per-ip", "60m"]);
    // A stranger sends 8 MiB of a 10 MiB file, then 48 MiB of a 50 MiB one, and vanishes.
    for (name, size, sent) in [
        ("small.bin", 10u64 << 20, 8usize << 20),
        ("big.bin", 50 << 20, 48 << 20),
    ] {
        let mut c = client_from(&hub, "127.0.0.2").await;
        let mut up = c.put(put(name, size)).await.unwrap();
        up.write(&vec![1u8; sent]).await.unwrap();
        drop(c);
    }
    // Both abandoned; together over the 60 MiB budget? No: 56 MiB, so both are kept.
    let held = loop {
        let p = partials(&hub);
        if p.len() == 2
            && p.iter()
                .all(|r| r["active"] == false && r["held"].as_u64().unwrap() > 0)
        {
            break p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(held.iter().all(|r| r["address"] == "127.0.0.2"), "{held:?}");
    let status = json(&hub.troca(&s.client, &["--json", "status"]));
    assert_eq!(status["partial_uploads"]["count"], 2, "{status}");
    // An upload that would not fit even in their space is refused, and costs them nothing.
    let mut c = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let refused = c.put(put("huge.bin", 1 << 30)).await.err().unwrap();
    assert!(refused.to_string().contains("space"), "{refused}");
    assert_eq!(partials(&hub).len(), 2);
    // Someone else's 30 MiB upload needs the space: the oldest abandoned partials give way.
    let body = vec![9u8; 30 << 20];
    let mut c = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    let mut up = c.put(put("mine.bin", body.len() as u64)).await.unwrap();
    up.write(&body).await.unwrap();
    up.finish(*blake3::hash(&body).as_bytes()).await.unwrap();
    let left = partials(&hub);
    assert!(left.len() < 2, "{left:?}");
    // The admin removes what is left; anyone else may not.
    for p in &left {
        let key = p["key"].as_str().unwrap();
        let mut http = Http::connect(hub.web.as_deref().unwrap());
        let (status, _) = http.request("DELETE", &format!("/api/partials/{key}"), "", b"");
        assert_eq!(status, 403);
        let auth = format!("Authorization: Bearer {}\r\n", hub.admin_token());
        let (status, _) = http.request("DELETE", &format!("/api/partials/{key}"), &auth, b"");
        assert_eq!(status, 204);
    }
    assert!(partials(&hub).is_empty());
}

/// Uploads begun and dropped at once hold almost no bytes, so no byte budget ever removes
/// them; a client making many would fill the state folder with them, and every walk of them
/// (each new upload's budget check, `status`) would grow. They are kept within a count: of six
/// begun by one address, three stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_begun_and_dropped_are_kept_within_a_count() {
    let s = Scratch::new();
    let flags = ["--partial-files-per-ip", "3", "--partial-ttl", "20s"];
    let hub = Hub::start(&s.share, &flags);
    for i in 0..6 {
        let mut c = client_from(&hub, "127.0.0.2").await;
        let mut up = c.put(put(&format!("f{i}.bin"), 1 << 30)).await.unwrap();
        up.write(&[1]).await.unwrap();
        drop(c);
    }
    // The hub looks at its partials now and then (each new upload's check, at most once a
    // second, and a sweep every quarter of --partial-ttl): wait until it has trimmed them.
    wait_until("the partials are trimmed to their count", || {
        partials(&hub).len() <= 3
    });
    let left = partials(&hub);
    assert_eq!(left.len(), 3, "the newest three stay: {left:?}");
    assert!(left.iter().all(|p| p["address"] == "127.0.0.2"), "{left:?}");
}

/// A web PUT broken off mid-body cannot be resumed (HTTP has no way to), so it leaves nothing
/// behind: no partial held for a day in the state folder.
#[test]
fn an_interrupted_web_upload_leaves_nothing_behind() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut http = Http::connect(hub.web.as_deref().unwrap());
    let head = "PUT /files/cut.bin HTTP/1.1\r\nHost: hub\r\nContent-Length: 52428800\r\n\r\n";
    let stream = http.reader.get_mut();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&vec![3u8; 10 << 20]).unwrap();
    // Seen by the hub as a partial upload while it runs…
    wait_until("the upload shows", || !partials(&hub).is_empty());
    drop(http);
    // …and gone once the client is.
    wait_until("the partial is dropped", || partials(&hub).is_empty());
    assert_eq!(files_under(&s.share), Vec::<String>::new());
}

/// Requests made while the hub's disk is full are still recorded: the history holds them in
/// memory and writes them once there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_what_happened_while_the_disk_was_full() {
    if !needs_root("it mounts a small tmpfs to fill") {
        return;
    }
    let s = Scratch::new();
    let disk = SmallDisk::mount(&s.tmp.path().join("disk"), "16m");
    let share = disk.path.join("share");
    let hub = Hub::start(&share, &[]);
    let mut c = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    c.who().await.unwrap();
    // Fill the disk.
    let filler = disk.path.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 16];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    for _ in 0..50 {
        c.list("while-full/").await.unwrap();
    }
    // Let the writer try (and fail) at least once while the disk is full.
    let page = c
        .history(troca_proto::msg::History {
            limit: 10,
            client: None,
            op: Some("list".into()),
            before: 0,
        })
        .await;
    drop(page);
    std::fs::remove_file(&filler).unwrap();
    let page = c
        .history(troca_proto::msg::History {
            limit: 100,
            client: None,
            op: Some("list".into()),
            before: 0,
        })
        .await
        .unwrap();
    let while_full = page
        .entries
        .iter()
        .filter(|e| e.target == "while-full/")
        .count();
    assert_eq!(while_full, 50);
}

/// Reads one frame from a raw connection (None at end of stream or after `secs` seconds).
fn read_frame(stream: &mut TcpStream, secs: u64) -> Option<troca_proto::Message> {
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(secs)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((m, _))) = troca_proto::decode_frame(&buf) {
            return Some(m);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn hello_frame() -> Vec<u8> {
    let mut out = Vec::new();
    troca_proto::encode_frame(
        &troca_proto::msg::Hello {
            magic: troca_proto::MAGIC,
            version: troca_proto::PROTOCOL_VERSION,
            client: "probe".into(),
            token: None,
            owner_key: None,
        }
        .into(),
        &mut out,
    );
    out
}

/// 300 connections to a peer that never say hello, from one address, neither lock out a
/// downloader from another address nor stay open past the handshake timeout.
#[test]
fn silent_connections_do_not_lock_a_peer() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), b"a").unwrap();
    let tracker = Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]);
    // Plaintext: the test speaks the protocol itself.
    let peer = Daemon::start(&[
        "peer".as_ref(),
        s.share.as_os_str(),
        "--tracker".as_ref(),
        tracker.addr.as_ref(),
        "--plaintext".as_ref(),
    ]);
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&peer.addr).unwrap())
        .collect();
    // Those past the per-address cap are told so.
    let last = silent.last_mut().unwrap();
    match read_frame(last, 60) {
        Some(troca_proto::Message::Error(e)) => {
            assert_eq!(e.code, troca_proto::ErrorCode::Busy, "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
    // Another address is served.
    let mut other = connect_from_elsewhere(&peer.addr);
    other.write_all(&hello_frame()).unwrap();
    assert!(matches!(
        read_frame(&mut other, 60),
        Some(troca_proto::Message::Welcome(_))
    ));
    // A silent one is cut after the handshake timeout, with the reason.
    match read_frame(&mut silent[0], 60) {
        Some(troca_proto::Message::Error(e)) => {
            assert_eq!(e.code, troca_proto::ErrorCode::Timeout, "{}", e.message)
        }
        other => panic!("{other:?}"),
    }
}

/// A hub out of file descriptors tells new clients it is busy and closes them, rather than
/// leaving them hanging in the listen queue.
#[test]
fn a_hub_out_of_descriptors_answers_busy() {
    let s = Scratch::new();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(TROCA)
        .args([
            "serve",
            s.share.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--no-http",
            // Plaintext: the test speaks the protocol itself.
            "--plaintext",
        ])
        .args(["--max-connections-per-ip", "10000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let mut held = Vec::new();
    let mut busy = None;
    for _ in 0..200 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(&hello_frame()).unwrap();
        match read_frame(&mut c, 60) {
            Some(troca_proto::Message::Welcome(_)) => held.push(c),
            other => {
                busy = Some(other);
                break;
            }
        }
    }
    match busy {
        Some(Some(troca_proto::Message::Error(e))) => {
            assert_eq!(e.code, troca_proto::ErrorCode::Busy, "{}", e.message)
        }
        other => panic!("never refused, or not with Busy: {other:?}"),
    }
    // Room again once some leave.
    held.truncate(held.len() - 8);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&hello_frame()).unwrap();
    let mut welcomed = matches!(
        read_frame(&mut c, 60),
        Some(troca_proto::Message::Welcome(_))
    );
    for _ in 0..50 {
        if welcomed {
            break;
        }
        // The hub may not have seen the closes yet.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(&hello_frame()).unwrap();
        welcomed = matches!(
            read_frame(&mut c, 60),
            Some(troca_proto::Message::Welcome(_))
        );
    }
    assert!(welcomed);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn zips_read_slowly_take_at_most_their_bound_of_threads_and_the_rest_wait() {
    let s = Scratch::new();
    std::fs::create_dir(s.share.join("big")).unwrap();
    random_file(&s.share.join("big/data.bin"), 32 << 20, "zip");
    let hub = Hub::start(&s.share, &["--max-zips", "2"]);
    let pid = hub.daemon.child.id();
    let threads = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line[8..].trim().parse::<usize>().unwrap()
    };
    let web = hub.web.clone().unwrap();
    let zip_url = format!("{web}files/big/?zip");
    // One zip read whole first, so the threads a zip needs are there before counting.
    ok(&curl(&["-o", "/dev/null", &zip_url]));
    let before = threads();

    // Twelve readers from twelve addresses ask for the folder as a zip and read nothing.
    let addr = web.trim_start_matches("http://").trim_end_matches('/');
    let rt = runtime();
    let held: Vec<std::net::TcpStream> = (10..22)
        .map(|i| {
            let stream = rt.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(format!("127.0.0.{i}:0").parse().unwrap())
                    .unwrap();
                socket.connect(addr.parse().unwrap()).await.unwrap()
            });
            let mut stream = stream.into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            let head = format!("GET /files/big/?zip HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            stream.write_all(head.as_bytes()).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let answered = |held: &[std::net::TcpStream]| {
        held.iter()
            .filter(|s| s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0))
            .count()
    };
    let arrived = || {
        let who = curl(&[&format!("{web}api/clients")]);
        let who: serde_json::Value = serde_json::from_str(&ok(&who)).unwrap();
        who.as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["address"].as_str()?.parse::<std::net::SocketAddr>().ok())
            .filter(|a| matches!(a.ip(), std::net::IpAddr::V4(v4) if (10..22).contains(&v4.octets()[3])))
            .count()
    };
    wait_until("every zip request reached the hub", || arrived() == 12);
    wait_until("two zips are being written", || answered(&held) >= 2);

    // Meanwhile the hub serves others, uploads (which need its blocking pool) included.
    let up = s.client.join("note.txt");
    std::fs::write(&up, "still here").unwrap();
    let put = curl(&[
        "-T",
        up.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{web}files/note.txt"),
    ]);
    assert_eq!(ok(&put), "201");
    assert_eq!(
        answered(&held),
        2,
        "more zips than --max-zips were written at once"
    );
    let grew = threads().saturating_sub(before);
    assert!(
        grew <= 4,
        "the hub took on {grew} threads for 12 zips read slowly"
    );

    // A reader that goes away gives its turn to one that waits.
    let (running, mut waiting): (Vec<_>, Vec<_>) = held
        .into_iter()
        .partition(|s| s.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0));
    drop(running);
    wait_until("a waiting zip is written", || answered(&waiting) >= 1);
    waiting.clear();
}
