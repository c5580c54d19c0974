//! The web face from the outside: the real `troca serve`, driven by `curl` and by headless
//! Chromium (through chromedriver and fantoccini). `scripts/test` installs both.

mod common;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn curl_uploads_and_downloads_ranges() {
    if !needs("curl", "an HTTP client to drive the web face") {
        return;
    }
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    assert!(
        web.starts_with("http://127.0.0.1:") && web.ends_with('/'),
        "{web}"
    );
    let local = s.client.join("data.bin");
    random_file(&local, 3 << 20, "curl");
    let out = curl(&[
        "-T",
        local.to_str().unwrap(),
        &format!("{web}files/in/data.bin"),
    ]);
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["blake3"], hash_file(&local).as_str());
    assert_eq!(hash_file(&s.share.join("in/data.bin")), hash_file(&local));

    let out = curl(&["-r", "1048576-1048675", &format!("{web}files/in/data.bin")]);
    let whole = std::fs::read(&local).unwrap();
    assert_eq!(out.stdout, &whole[1048576..1048676]);
    let back = s.client.join("back.bin");
    let out = curl(&[
        "-o",
        back.to_str().unwrap(),
        "-w",
        "%{http_code}",
        &format!("{web}files/in/data.bin"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    assert_eq!(hash_file(&back), hash_file(&local));
    // Resuming a partial download with curl -C - fetches only the rest.
    std::fs::write(&back, &whole[..1000]).unwrap();
    let out = curl(&[
        "-C",
        "-",
        "-o",
        back.to_str().unwrap(),
        "-w",
        "%{http_code} %{size_download}",
        &format!("{web}files/in/data.bin"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("206 {}", whole.len() - 1000)
    );
    assert_eq!(hash_file(&back), hash_file(&local));
    // The web client shows in the history beside native ones.
    let history = json(&hub.troca(&s.client, &["--json", "history", "--op", "put"]));
    assert_eq!(history[0]["target"], "in/data.bin");
    assert!(history[0]["client"]
        .as_str()
        .unwrap()
        .starts_with("web (curl/"));
}

/// hyper stops polling a body once it has its `Content-Length` bytes, so a download that ended
/// well was once recorded as "the client left with 0 bytes unsent", and the hash computed on the
/// way out was dropped (every later download hashed the file again).
#[test]
fn a_whole_web_download_is_recorded_as_done_and_its_hash_remembered() {
    if !needs("curl", "an HTTP client to drive the web face") {
        return;
    }
    let s = Scratch::new();
    // Larger than the hot cache's files, so it streams; put there by hand, so its hash is unknown.
    let size: u64 = 3 << 20;
    random_file(&s.share.join("big.bin"), size, "web-hash");
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let listed = json(&hub.troca(&s.client, &["--json", "ls", "big.bin"]));
    assert!(listed[0]["blake3"].is_null(), "{listed}");

    let back = s.client.join("back.bin");
    let out = curl(&["-o", back.to_str().unwrap(), &format!("{web}files/big.bin")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(hash_file(&back), hash_file(&s.share.join("big.bin")));

    let history = json(&hub.troca(&s.client, &["--json", "history", "--op", "get"]));
    assert_eq!(history[0]["target"], "big.bin", "{history}");
    assert_eq!(history[0]["ok"], true, "{history}");
    assert_eq!(history[0]["bytes"], size, "{history}");
    let listed = json(&hub.troca(&s.client, &["--json", "ls", "big.bin"]));
    assert_eq!(listed[0]["blake3"], hash_file(&back).as_str(), "{listed}");
}

/// `/api/health` (and `troca health`, over the native protocol) answers a load balancer without
/// a token, without a history entry and without the checker becoming a client; and says when
/// the shared folder is gone.
#[test]
fn the_health_check_needs_no_token_leaves_no_record_and_sees_the_folder_go() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &["--require-token", "--hub-name", "front-1"]);
    let url = format!("{}api/health", hub.web.clone().unwrap());
    let admin = hub.admin_token();
    let history = || json(&hub.troca_with(&s.client, &admin, &["--json", "history"]));
    let before = history().as_array().unwrap().len();
    for _ in 0..5 {
        let out = curl(&["-s", "-w", " %{http_code}", &url]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            r#"{"hub":"front-1","ok":true} 200"#
        );
    }
    // The container's check, natively: no token either, even on a hub that requires one.
    // Its key, kept where deleting the share below leaves it.
    let state = s.tmp.path().join("kept");
    std::fs::create_dir(&state).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(hub.dir.join(".troca/tls"))
        .arg(&state)
        .status()
        .unwrap();
    assert!(copied.success());
    let native = || {
        std::process::Command::new(TROCA)
            .args(["health", "--hub", &hub.addr, "--state"])
            .arg(&state)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        assert_eq!(ok(&native()), "ok: front-1\n");
    }
    let after = history();
    // The one request more is the first `history` itself.
    assert_eq!(after.as_array().unwrap().len(), before + 1, "{after}");
    // A checker that keeps its connection open is still no client.
    let web_addr = hub.web.clone().unwrap();
    let web_addr = web_addr.trim_start_matches("http://").trim_end_matches('/');
    let mut held = std::net::TcpStream::connect(web_addr).unwrap();
    let ask = b"GET /api/health HTTP/1.1\r\nHost: hub\r\nUser-Agent: checker/1\r\n\r\n";
    std::io::Write::write_all(&mut held, ask).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let n = std::io::Read::read(&mut held, &mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    let clients = json(&hub.troca_with(&s.client, &admin, &["--json", "who"]));
    assert_eq!(
        clients.as_array().unwrap().len(),
        1,
        "only the asker: {clients}"
    );
    drop(held);

    std::fs::remove_dir_all(&s.share).unwrap();
    let started = Instant::now();
    loop {
        let out = curl(&["-s", "-w", " %{http_code}", &url]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with(" 503") {
            assert!(text.contains("cannot reach where its files are"), "{text}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = fails(&native(), 1);
    assert!(err.contains("cannot reach where its files are"), "{err}");
    // The details go to the hub's log, once.
    let (_, log) = hub.terminate();
    assert_eq!(log.matches("was deleted").count(), 1, "{log}");
}

/// chromedriver on a free port, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test installs chromium-driver)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver(child, port)
}

async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    browser_pinned(driver, width, height, None).await
}

/// A browser that trusts an HTTPS hub by its key (base64 SHA-256 of the public key), as a user
/// who checked the fingerprint would.
async fn browser_pinned(driver: &Driver, width: u32, height: u32, spki: Option<&str>) -> Client {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        format!("--window-size={width},{height}"),
    ];
    if let Some(spki) = spki {
        args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// The text of the file table's rows.
/// The text of the file table ("" while the page is being replaced by another).
async fn rows(c: &Client) -> String {
    match c.find(Locator::Css("#files tbody")).await {
        Ok(table) => table.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits for the page to be at `path`; returns it.
async fn wait_for_path(c: &Client, path: &str) -> String {
    let started = Instant::now();
    loop {
        let at = c.current_url().await.unwrap().path().to_owned();
        if at == path {
            return at;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {path}; the page is at {at}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_until(c: &Client, what: &str, check: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = rows(c).await;
        if check(&text) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}; table: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the first element matching `css`.
/// Types `text` into the element `css` selects (a file input takes a path).
async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .send_keys(text)
        .await
        .unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Answers the page's dialog: types `text` (if any) and presses its OK button.
async fn answer_dialog(c: &Client, text: Option<&str>) -> String {
    let started = Instant::now();
    loop {
        let open = c
            .execute("return document.querySelector('#dialog').open", vec![])
            .await
            .unwrap();
        if open == serde_json::json!(true) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no dialog opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let title = c
        .find(Locator::Css("#dialog-title"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    if let Some(text) = text {
        let input = c.find(Locator::Css("#dialog-input")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }
    click(c, "#dialog-ok").await;
    title
}

/// Runs `script` (which gets `done` as its last argument) in the page and returns its result.
async fn in_page(c: &Client, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
    c.execute_async(script, args).await.unwrap()
}

/// The bytes at `href`, fetched by the page.
/// Every URL the page has requested since it loaded (its script's requests and its assets).
async fn requested(c: &Client) -> Vec<String> {
    let asked = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(asked).unwrap()
}

/// Uploads a `len`-byte `photo.jpg` through the page's file input, checks it arrived whole, then
/// downloads it through the page's own link (which must be `href`) in the browser and compares
/// the bytes.
async fn upload_and_fetch(c: &Client, s: &Scratch, len: u64, href: &str) {
    let upload = s.client.join("photo.jpg");
    random_file(&upload, len, "browser");
    type_into(c, "#upload", upload.to_str().unwrap()).await;
    wait_until(c, "the uploaded file", |t| t.contains("photo.jpg")).await;
    assert_eq!(hash_file(&s.share.join("photo.jpg")), hash_file(&upload));
    let link = c.find(Locator::LinkText("photo.jpg")).await.unwrap();
    let shown = link.attr("href").await.unwrap().unwrap();
    assert_eq!(shown, href);
    assert_eq!(fetch_bytes(c, href).await, std::fs::read(&upload).unwrap());
}

async fn fetch_bytes(c: &Client, href: &str) -> Vec<u8> {
    let got = in_page(
        c,
        "const done = arguments[arguments.length - 1];
         fetch(arguments[0]).then(r => r.arrayBuffer())
           .then(b => done(Array.from(new Uint8Array(b))));",
        vec![serde_json::json!(href)],
    )
    .await;
    serde_json::from_value(got).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_the_page_uploads_lists_downloads_and_deletes() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    let xss = "<img src=x onerror=alert(1)>.txt";
    std::fs::write(s.share.join(xss), "not html").unwrap();
    std::fs::create_dir(s.share.join("albums")).unwrap();
    std::fs::write(s.share.join("albums/song.ogg"), "la la").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(&web).await.unwrap();

    // The hostile name is shown as text: no image element was made from it, no alert fired.
    let text = wait_until(&c, "the listing", |t| t.contains(xss)).await;
    assert!(text.contains("albums/"), "folders are listed: {text}");
    let imgs = c
        .execute(
            "return document.querySelectorAll('#files img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(imgs, 0);
    assert!(c.get_alert_text().await.is_err(), "no alert is open");

    // Upload through the file input, download through the page's own link.
    upload_and_fetch(&c, &s, 300 * 1024, "/files/photo.jpg?download=1").await;

    // Folders are pages of their own; the search looks in every folder.
    click(&c, "a[href='/files/albums/']").await;
    let t = wait_until(&c, "the folder", |t| t.contains("song.ogg")).await;
    assert!(!t.contains("photo.jpg"), "{t}");
    type_into(&c, "#search", "phot").await;
    let t = wait_until(&c, "the search", |t| t.contains("photo.jpg")).await;
    assert!(!t.contains("song.ogg"), "{t}");
    // What this browser uploaded it may delete from the search's matches too.
    let delete = Locator::Css("button[aria-label='Delete photo.jpg']");
    assert!(c.find(delete).await.is_ok(), "no Delete among the matches");
    c.find(Locator::LinkText("home"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(&c, "home again", |t| t.contains("photo.jpg")).await;

    // A search that may have left names out says so.
    std::fs::create_dir(s.share.join("many")).unwrap();
    for i in 0..5_001 {
        std::fs::write(s.share.join(format!("many/clip-{i:05}.ogg")), "").unwrap();
    }
    type_into(&c, "#search", "clip").await;
    let t = wait_until(&c, "the note", |t| {
        t.contains("Only the first 5,000 matches")
    })
    .await;
    assert!(t.contains("clip-04999.ogg") && !t.contains("clip-05000.ogg"));
    c.refresh().await.unwrap();
    wait_until(&c, "home again", |t| t.contains("photo.jpg")).await;
    // The page asked for its own folder's rows, never for everything beneath it.
    let asked = requested(&c).await;
    assert!(
        asked.iter().any(|u| u.ends_with("/me?prefix=&owned=0")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|u| u.contains("/api/files")), "{asked:?}");

    // Delete what this browser uploaded: its owner key is enough, no token asked.
    click(&c, "button[aria-label='Delete photo.jpg']").await;
    assert_eq!(answer_dialog(&c, None).await, "Delete photo.jpg?");
    wait_until(&c, "the deletion", |t| !t.contains("photo.jpg")).await;
    assert!(!s.share.join("photo.jpg").exists());

    // Someone else's file: no Delete offered until a token that allows it is given.
    std::fs::write(s.share.join("theirs.txt"), "not mine").unwrap();
    c.refresh().await.unwrap();
    wait_until(&c, "the other file listed", |t| t.contains("theirs.txt")).await;
    assert!(c
        .find(Locator::Css("button[aria-label='Delete theirs.txt']"))
        .await
        .is_err());
    click(&c, "#token-button").await;
    assert_eq!(
        answer_dialog(&c, Some(&hub.admin_token())).await,
        "Access token"
    );
    let started = Instant::now();
    while c
        .find(Locator::Css("button[aria-label='Delete theirs.txt']"))
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no Delete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(&c, "button[aria-label='Delete theirs.txt']").await;
    answer_dialog(&c, None).await;
    wait_until(&c, "the deletion", |t| !t.contains("theirs.txt")).await;
    assert!(!s.share.join("theirs.txt").exists());
    let token_text = c
        .find(Locator::Css("#token-button"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(token_text, "Token (admin)");

    // The browser, with its several connections, is one client; its polling stays out of the
    // history.
    let who = json(&hub.troca(&s.client, &["--json", "who"]));
    let browsers = who
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"].as_str().unwrap().starts_with("web (Mozilla"))
        .count();
    assert_eq!(browsers, 1, "{who}");
    let status = c
        .find(Locator::Css("#status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("connected"), "{status}");
    let history = json(&hub.troca(&s.client, &["--json", "history", "--limit", "200"]));
    let polls = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| matches!(h["op"].as_str(), Some("status" | "who" | "history")))
        .filter(|h| h["client"].as_str().unwrap().starts_with("web"))
        .count();
    assert_eq!(polls, 0, "{history}");

    // When the hub goes away, the page says so instead of showing stale figures.
    drop(hub);
    c.execute("refreshSide()", vec![]).await.unwrap();
    let started = Instant::now();
    loop {
        let status = c
            .find(Locator::Css("#status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if status.contains("Cannot reach the hub") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.close().await.unwrap();
}

/// What [`CuttingRelay`] saw.
#[derive(Debug, Default)]
struct Relayed {
    /// Bytes the browser sent in requests that begin with `PUT `.
    put_bytes: std::sync::atomic::AtomicU64,
    /// Connections cut: the upload once past the limit, then every repeat of it without
    /// `Content-Range` (a browser retrying on its own), never the page's resumed `PUT`.
    cuts: std::sync::atomic::AtomicU64,
    /// `PUT`s that carried `Content-Range` (the page going on from what the hub holds).
    ranged_puts: std::sync::atomic::AtomicU64,
}

/// A TCP relay in front of the web face, for a link that drops during an upload: the first
/// connection to carry more than `limit` bytes of a `PUT` is cut there, and so is every later
/// `PUT` that comes without `Content-Range` (Chromium sends a request again by itself after a
/// reset, twice here; those must fail too, so the page's own retry is what completes the file).
fn cutting_relay(target: &str, limit: u64) -> (String, std::sync::Arc<Relayed>) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}/", listener.local_addr().unwrap());
    let target = target
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let seen = std::sync::Arc::new(Relayed::default());
    let shared = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = std::net::TcpStream::connect(&target).unwrap();
            let (mut back_from, mut back_to) =
                (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back_from, &mut back_to);
                let _ = back_to.shutdown(std::net::Shutdown::Both);
            });
            let seen = std::sync::Arc::clone(&shared);
            std::thread::spawn(move || {
                let (mut from, mut to) = (client, server);
                let mut buf = vec![0u8; 65536];
                let mut in_put = 0u64;
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let head = String::from_utf8_lossy(&buf[..n.min(4096)]).to_ascii_lowercase();
                    if head.starts_with("put ") {
                        in_put = 0;
                        if head.contains("content-range:") {
                            seen.ranged_puts.fetch_add(1, SeqCst);
                        } else if seen.cuts.load(SeqCst) > 0 {
                            seen.cuts.fetch_add(1, SeqCst);
                            break;
                        }
                    }
                    if head.starts_with("put ") || in_put > 0 {
                        in_put += n as u64;
                        seen.put_bytes.fetch_add(n as u64, SeqCst);
                    }
                    if in_put > limit && seen.cuts.load(SeqCst) == 0 {
                        seen.cuts.fetch_add(1, SeqCst);
                        break;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
                let _ = from.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, seen)
}

/// A large upload from the page whose connection drops goes on from what the hub holds: the
/// file lands whole, and the browser sent little more than the file once.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_an_upload_cut_off_goes_on_from_what_the_hub_holds() {
    use std::sync::atomic::Ordering::SeqCst;
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let size = 12u64 << 20;
    let (relay, seen) = cutting_relay(hub.web.as_deref().unwrap(), 5 << 20);
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(&relay).await.unwrap();
    wait_until(&c, "the listing", |_| true).await;
    let file = s.client.join("video.mp4");
    random_file(&file, size, "browser-resume");
    type_into(&c, "#upload", file.to_str().unwrap()).await;
    wait_until(&c, "the uploaded file", |t| t.contains("video.mp4")).await;
    assert_eq!(hash_file(&s.share.join("video.mp4")), hash_file(&file));
    assert!(
        seen.cuts.load(SeqCst) >= 2,
        "the upload and the browser's own retries were cut"
    );
    assert_eq!(
        seen.ranged_puts.load(SeqCst),
        1,
        "the page went on with Content-Range"
    );
    let sent = seen.put_bytes.load(SeqCst);
    assert!(
        sent < size + (1 << 20),
        "sent {sent} bytes for {size}: started over"
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_folders_upload_rename_zip_and_fit_a_phone() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    std::fs::create_dir(s.share.join("50% off")).unwrap();
    std::fs::write(s.share.join("50% off/deal.txt"), "cheap").unwrap();
    // Over HTTPS, the browser trusting the hub's own key.
    let hub = Hub::start(&s.share, &["--https"]);
    let web = hub.web.clone().unwrap();
    assert!(web.starts_with("https://"), "{web}");
    let spki = spki_pin(&hub);
    let driver = chromedriver();
    let c = browser_pinned(&driver, 1280, 900, Some(&spki)).await;
    c.goto(&web).await.unwrap();

    // A folder whose name needs escaping opens.
    wait_until(&c, "the listing", |t| t.contains("50% off/")).await;
    click(&c, "a[href='/files/50%25%20off/']").await;
    wait_until(&c, "the folder", |t| t.contains("deal.txt")).await;
    c.goto(&web).await.unwrap();
    wait_until(&c, "home", |t| t.contains("50% off/")).await;

    // A new folder, then a whole local folder uploaded into it through the folder picker.
    click(&c, "#new-folder").await;
    assert_eq!(answer_dialog(&c, Some("trips")).await, "New folder");
    wait_until(&c, "the new folder", |t| t.contains("trips/")).await;
    assert!(s.share.join("trips").is_dir());
    click(&c, "a[href='/files/trips/']").await;
    wait_until(&c, "the empty folder", |t| t.contains("No files here yet")).await;
    let tree = s.client.join("lisbon");
    std::fs::create_dir_all(tree.join("day 2")).unwrap();
    random_file(&tree.join("tram.jpg"), 200_000, "tram");
    random_file(&tree.join("day 2/castle.jpg"), 150_000, "castle");
    type_into(&c, "#upload-folder", tree.to_str().unwrap()).await;
    wait_until(&c, "the uploaded folder", |t| t.contains("lisbon/")).await;
    let start = Instant::now();
    while !s.share.join("trips/lisbon/day 2/castle.jpg").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "folder upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hash_file(&s.share.join("trips/lisbon/day 2/castle.jpg")),
        hash_file(&tree.join("day 2/castle.jpg"))
    );

    // Rename the folder: its files move with it.
    click(&c, "button[aria-label='Rename or move lisbon']").await;
    answer_dialog(&c, Some("trips/lisboa")).await;
    wait_until(&c, "the renamed folder", |t| t.contains("lisboa/")).await;
    assert!(s.share.join("trips/lisboa/tram.jpg").is_file());
    assert!(!s.share.join("trips/lisbon").exists());

    // Copy the folder into another: the hub copies, each file named once whole.
    click(&c, "button[aria-label='Copy lisboa']").await;
    answer_dialog(&c, Some("backup/")).await;
    let copied = s.share.join("backup/lisboa/day 2/castle.jpg");
    let start = Instant::now();
    while !copied.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "folder copy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hash_file(&copied),
        hash_file(&tree.join("day 2/castle.jpg"))
    );

    // The folder as a zip, fetched by the browser, unpacked and compared byte for byte.
    let zip_href = c
        .find(Locator::Css("#zip"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(zip_href, "/files/trips/?zip");
    let bytes = fetch_bytes(&c, &zip_href).await;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(
        names,
        ["trips/lisboa/day 2/castle.jpg", "trips/lisboa/tram.jpg"]
    );
    for (inner, local) in [
        ("trips/lisboa/tram.jpg", tree.join("tram.jpg")),
        (
            "trips/lisboa/day 2/castle.jpg",
            tree.join("day 2/castle.jpg"),
        ),
    ] {
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name(inner).unwrap(), &mut got).unwrap();
        assert_eq!(got, std::fs::read(local).unwrap(), "{inner}");
    }

    // Delete the folder with everything in it (this browser uploaded it all).
    click(&c, "button[aria-label='Delete lisboa']").await;
    let title = answer_dialog(&c, None).await;
    assert_eq!(title, "Delete lisboa?");
    wait_until(&c, "the deleted folder", |t| !t.contains("lisboa/")).await;
    assert!(!s.share.join("trips/lisboa").exists());
    c.close().await.unwrap();

    // On a phone-sized screen nothing needs sideways scrolling, and sizes and dates show.
    let phone = browser_pinned(&driver, 390, 844, Some(&spki)).await;
    phone.goto(&web).await.unwrap();
    wait_until(&phone, "the listing", |t| t.contains("50% off/")).await;
    let fits = phone
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, true, "the page is wider than a phone");
    let meta = phone
        .find(Locator::Css("td.name .meta"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(meta.contains("1 file"), "{meta}");
    phone.close().await.unwrap();
}

/// The README's screenshots, with ordinary names: written when `TROCA_SCREENSHOTS` names a
/// folder (`scripts/screenshots` does), checked for being real PNGs either way.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_screenshots_come_from_the_real_page() {
    if !needs("chromedriver", "the screenshots come from a real Chromium") {
        return;
    }
    let s = Scratch::new();
    for (name, len) in [
        ("Holiday photos/beach.jpg", 2_400_000),
        ("Holiday photos/sunset.jpg", 3_100_000),
        ("Recipes/bread.md", 4_000),
        ("budget-2026.ods", 48_000),
        ("meeting-notes.md", 6_500),
        ("quarterly report.pdf", 1_250_000),
    ] {
        let path = s.share.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        random_file(&path, len, name);
    }
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let driver = chromedriver();
    let out = std::env::var_os("TROCA_SCREENSHOTS").map(std::path::PathBuf::from);
    for (file, width, height) in [("desktop.png", 1100, 620), ("phone.png", 390, 760)] {
        let c = browser(&driver, width, height).await;
        c.goto(&web).await.unwrap();
        wait_until(&c, "the listing", |t| t.contains("quarterly report.pdf")).await;
        // Wait for the script's own rendering (local dates) and the side panels.
        let start = Instant::now();
        while c.find(Locator::Css("#history li")).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no activity shown"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let png = c.screenshot().await.unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        if let Some(dir) = &out {
            std::fs::write(dir.join(file), &png).unwrap();
        }
        c.close().await.unwrap();
    }
}

/// The tree both mirroring tests copy: names with spaces and a `%`, nested folders.
const MIRRORED: [&str; 4] = [
    "50% off/e.txt",
    "a.txt",
    "docs/b.txt",
    "docs/deep er/c d.txt",
];

/// A hub sharing [`MIRRORED`], and where a mirror of it goes.
fn mirror_setup() -> (Scratch, Hub, std::path::PathBuf) {
    let s = Scratch::new();
    for name in MIRRORED {
        let path = s.share.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        random_file(&path, 20_000, name);
    }
    let hub = Hub::start(&s.share, &[]);
    let mirror = s.client.join("mirror");
    std::fs::create_dir(&mirror).unwrap();
    (s, hub, mirror)
}

/// The mirror holds exactly the shared files, byte for byte.
fn assert_mirrored(s: &Scratch, mirror: &std::path::Path) {
    let got = files_under(mirror);
    assert_eq!(got, MIRRORED);
    for name in &got {
        assert_eq!(
            hash_file(&mirror.join(name)),
            hash_file(&s.share.join(name))
        );
    }
}

/// `wget -r` mirrors a hub from its plain HTML listings: no JavaScript involved.
#[test]
fn wget_mirrors_a_hub_without_javascript() {
    if !needs("wget", "it mirrors the hub as a user would") {
        return;
    }
    let (s, hub, mirror) = mirror_setup();
    let status = Command::new("wget")
        .args(["-q", "-r", "-np", "-nH", "--cut-dirs=1", "-e", "robots=off"])
        .arg("-R")
        .arg("index.html*")
        .arg(format!("{}files/", hub.web.as_ref().unwrap()))
        .current_dir(&mirror)
        .status()
        .expect("wget is installed (scripts/test installs it)");
    assert!(status.success());
    assert_mirrored(&s, &mirror);
}

/// rclone's `http` remote reads the same plain listings: it copies the whole tree.
#[test]
fn rclone_copies_a_hub_through_its_http_remote() {
    if !needs("rclone", "its http remote copies the hub") {
        return;
    }
    let (s, hub, mirror) = mirror_setup();
    let out = Command::new("rclone")
        .args(["copy", "--http-url"])
        .arg(format!("{}files/", hub.web.as_ref().unwrap()))
        .arg(":http:")
        .arg(&mirror)
        .env("RCLONE_CONFIG", s.client.join("rclone.conf"))
        .output()
        .expect("rclone is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_mirrored(&s, &mirror);
}

/// The hub's key as a base64 SHA-256 pin (what curl and Chromium take).
fn spki_pin(hub: &Hub) -> String {
    let key: troca_proto::key::HubKey = hub.key.as_ref().unwrap().parse().unwrap();
    key.curl_pin().trim_start_matches("sha256//").to_owned()
}

/// The web face speaks HTTPS with the hub's own key: curl with the right pin gets the page, a
/// wrong pin is refused before any request.
#[test]
fn curl_reaches_the_https_face_only_with_the_right_pin() {
    if !needs("curl", "its --pinnedpubkey checks the HTTPS key") {
        return;
    }
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "over tls").unwrap();
    let hub = Hub::start(&s.share, &["--https"]);
    let web = hub.web.clone().unwrap();
    assert!(web.starts_with("https://"), "{web}");
    let pin = format!("sha256//{}", spki_pin(&hub));
    let out = curl(&["-k", "--pinnedpubkey", &pin, &format!("{web}files/a.txt")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"over tls");
    let wrong = troca_proto::key::HubKey([9; 32]).curl_pin();
    let out = curl(&["-k", "--pinnedpubkey", &wrong, &format!("{web}files/a.txt")]);
    assert_eq!(out.status.code(), Some(90), "curl's code for a wrong pin");
    assert!(out.stdout.is_empty());
    // Plain HTTP to the HTTPS port gets nothing served.
    let plain = curl(&[&web.replace("https://", "http://")]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("over tls"));
}

/// A token held to a folder, given to the page of a hub that asks for one: the page shows the
/// folders on the way to it and what is in it, nothing else, and names the folder and what the
/// token keeps of its quota on its Token button.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_a_token_held_to_a_folder_sees_only_that_folder() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    let names = ["clients/acme/plan.txt", "clients/bob/secret.txt", "top.txt"];
    write_tree(&s.share, &names.map(|n| (n, n)));
    let hub = Hub::start(&s.share, &["--require-token"]);
    let out = std::process::Command::new(TROCA)
        .args([
            "token",
            "create",
            "--role",
            "write",
            "--folder",
            "clients/acme",
        ])
        .args(["--quota", "1M", "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let token = ok(&out).trim().to_owned();
    random_file(&s.client.join("report.bin"), 300 << 10, "r");
    ok(&hub.troca_with(
        &s.client,
        &token,
        &["put", "report.bin", "--to", "clients/acme/"],
    ));
    let web = hub.web.clone().unwrap();
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(&web).await.unwrap();
    answer_dialog(&c, Some(&token)).await;
    // Given the token at the top, the page goes straight to the token's folder.
    let text = wait_until(&c, "the token's files", |t| t.contains("plan.txt")).await;
    assert!(!text.contains("top.txt") && !text.contains("bob"), "{text}");
    let at = c.current_url().await.unwrap();
    assert_eq!(at.path(), "/files/clients/acme/");
    let button = c.find(Locator::Css("#token-button")).await.unwrap();
    assert_eq!(
        button.text().await.unwrap(),
        "Token (write, clients/acme/, 300.0 KiB of 1.0 MiB used)"
    );
    // What it may still upload: its quota's rest, the disk having more room.
    let room = c.find(Locator::Css("#room")).await.unwrap();
    assert_eq!(
        room.text().await.unwrap(),
        "724.0 KiB free for your uploads"
    );
    // So does a folder on the way.
    c.goto(&format!("{web}files/clients/")).await.unwrap();
    wait_for_path(&c, "/files/clients/acme/").await;
    wait_until(&c, "the token's files again", |t| t.contains("plan.txt")).await;
    c.close().await.unwrap();
}

/// A write token's page offers Share on each row and hands out a link; opened in a browser with
/// nothing else, the link shows what it shares (no token asked for, no side panels), its files
/// download, and a file's link goes straight to the file.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_a_write_token_shares_a_folder_and_the_link_opens_it() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("trip/a.txt", "sea"),
            ("trip/b.txt", "sand"),
            ("home.txt", "h"),
        ],
    );
    let hub = Hub::start(&s.share, &["--require-token"]);
    let token = make_token(&hub, "write", &[]);
    let web = hub.web.clone().unwrap();
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(&web).await.unwrap();
    answer_dialog(&c, Some(&token)).await;
    wait_until(&c, "the share's folders", |t| t.contains("trip/")).await;
    click(&c, "button[aria-label='Make a link to trip']").await;
    assert_eq!(answer_dialog(&c, Some("2")).await, "Share trip");
    // The second dialog holds the link.
    let link = link_shown(&c, "Link to trip").await;
    assert!(link.starts_with(&format!("{web}s/troca_")), "{link}");
    assert!(link.ends_with("/files/trip/"), "{link}");
    let maker = c;

    // Someone else, with nothing but the link.
    let c = browser(&driver, 1280, 900).await;
    c.goto(&link).await.unwrap();
    let text = wait_until(&c, "the shared folder", |t| t.contains("b.txt")).await;
    assert!(
        text.contains("a.txt") && !text.contains("home.txt"),
        "{text}"
    );
    let status = c.find(Locator::Css("#status")).await.unwrap();
    assert_eq!(status.text().await.unwrap(), "Shared with you: trip");
    let asked = c
        .execute("return document.querySelector('#dialog').open", vec![])
        .await
        .unwrap();
    assert_eq!(asked, serde_json::json!(false), "no token asked for");
    let a = c.find(Locator::LinkText("a.txt")).await.unwrap();
    let href = a.attr("href").await.unwrap().unwrap();
    assert_eq!(fetch_bytes(&c, &href).await, b"sea");
    let asked_for = requested(&c).await;
    assert!(
        asked_for
            .iter()
            .all(|u| u.contains("/s/troca_") || u.ends_with("/favicon.ico")),
        "everything through the link: {asked_for:?}"
    );
    // The top of the link goes to what it shares.
    let top = &link[..link.find("/files/").unwrap() + 1];
    c.goto(top).await.unwrap();
    let path = url_path(&link);
    wait_for_path(&c, &path).await;
    // So does a file's link's: to the file itself.
    let made = json(&hub.troca_with(&s.client, &token, &["--json", "share", "home.txt"]));
    let file = made[0]["link"].as_str().unwrap();
    c.goto(&file[..file.find("/files/").unwrap() + 1])
        .await
        .unwrap();
    wait_for_path(&c, &url_path(file)).await;
    c.close().await.unwrap();

    // The maker's page lists its links and revokes one.
    click(&maker, "#links-button").await;
    let listed = |c: &Client| {
        let c = c.clone();
        async move {
            let list = c.find(Locator::Css("#links-list")).await.unwrap();
            list.text().await.unwrap()
        }
    };
    let started = Instant::now();
    while !listed(&maker).await.contains("trip/ · until") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no link listed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    click(&maker, "button[aria-label='Revoke the link to trip/']").await;
    while !listed(&maker).await.contains("trip/ · revoked") {
        assert!(started.elapsed() < Duration::from_secs(10), "not revoked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = curl(&["-o", "/dev/null", "-w", "%{http_code}", &link]);
    assert_eq!(String::from_utf8_lossy(&gone.stdout), "401");
    maker.close().await.unwrap();
}

/// The page's share dialog makes a link for so many downloads: the link's dialog says so and
/// shows a QR code of it that a scanner reads back, the maker's list counts them, and once
/// spent the link is refused and listed as used up.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_a_link_made_for_one_download_is_spent_by_it() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    write_tree(&s.share, &[("plan.txt", "the plan")]);
    let hub = Hub::start(&s.share, &["--require-token"]);
    let token = make_token(&hub, "write", &[]);
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(hub.web.as_deref().unwrap()).await.unwrap();
    answer_dialog(&c, Some(&token)).await;
    wait_until(&c, "the share's files", |t| t.contains("plan.txt")).await;
    click(&c, "button[aria-label='Make a link to plan.txt']").await;
    let extra = c.find(Locator::Css("#dialog-extra-input")).await.unwrap();
    extra.send_keys("1").await.unwrap();
    assert_eq!(answer_dialog(&c, None).await, "Share plan.txt");
    let text = dialog_shown(&c, "Link to plan.txt", "#dialog-text").await;
    assert!(text.contains(", for 1 download."), "{text}");
    // Beside the link, a QR code of it, for a phone: what a scanner reads off the screen.
    let picture = c.find(Locator::Css("#dialog-image")).await.unwrap();
    let started = Instant::now();
    while c
        .execute(
            "return document.querySelector('#dialog-image').naturalWidth",
            vec![],
        )
        .await
        .unwrap()
        == serde_json::json!(0)
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no QR code");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let png = picture.screenshot().await.unwrap();
    let grey = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .unwrap()
        .to_luma8();
    let (w, h) = (grey.width() as usize, grey.height() as usize);
    let scanned = scan_qr(w, h, |x, y| grey.get_pixel(x as u32, y as u32).0[0]);
    let link = link_shown(&c, "Link to plan.txt").await;
    assert_eq!(scanned, link);

    let listed = |want: &'static str| {
        let c = c.clone();
        async move {
            let started = Instant::now();
            loop {
                click(&c, "#links-button").await;
                // The dialog opens once the page has the links: read them then, not before
                // (closed before it opened, it would open over the next click).
                c.wait()
                    .for_element(Locator::Css("#links[open]"))
                    .await
                    .unwrap();
                let list = c.find(Locator::Css("#links-list")).await.unwrap();
                let text = list.text().await.unwrap();
                c.execute("document.querySelector('#links').close()", vec![])
                    .await
                    .unwrap();
                if text.contains(want) {
                    return text;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{want:?} not in {text:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    listed("plan.txt (0 of 1 download)").await;
    let got = curl(&["-s", "-w", " %{http_code}", &link]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "the plan 200");
    let gone = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &link]);
    assert_eq!(String::from_utf8_lossy(&gone.stdout), "401");
    listed("plan.txt (1 of 1 download) · used up").await;
    c.close().await.unwrap();
}

/// A write token's page asks for files in the folder it shows; whoever opens the upload link
/// sees only a place to send files, sends two of the same name (the second numbered, nothing
/// replaced), and never what the folder held; the maker's list counts what came in.
#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_an_upload_link_sends_files_and_shows_nothing_of_the_folder() {
    if !needs("chromedriver", "the page runs in a real Chromium") {
        return;
    }
    let s = Scratch::new();
    write_tree(&s.share, &[("inbox/old.txt", "private")]);
    let hub = Hub::start(&s.share, &["--require-token"]);
    let token = make_token(&hub, "write", &[]);
    let web = hub.web.clone().unwrap();
    let driver = chromedriver();
    let maker = browser(&driver, 1280, 900).await;
    maker.goto(&format!("{web}files/inbox/")).await.unwrap();
    answer_dialog(&maker, Some(&token)).await;
    wait_until(&maker, "the folder", |t| t.contains("old.txt")).await;
    click(&maker, "#request-button").await;
    assert_eq!(
        answer_dialog(&maker, Some("3")).await,
        "Ask for files in inbox"
    );
    let link = link_shown(&maker, "Link to send files to inbox").await;
    assert!(link.ends_with("/files/inbox/"), "{link}");

    // A stranger with the link: a place to send files, and nothing of what the folder holds.
    let c = browser(&driver, 1280, 900).await;
    c.goto(&link).await.unwrap();
    let text = wait_until(&c, "the upload page", |t| t.contains("Nothing sent")).await;
    assert!(!text.contains("old.txt"), "{text}");
    let status = c.find(Locator::Css("#status")).await.unwrap();
    let started = Instant::now();
    while !status
        .text()
        .await
        .unwrap()
        .starts_with("Send files to inbox/")
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no status");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for hidden in [
        "#search",
        "#zip",
        "#new-folder",
        "#links-button",
        "#token-button",
    ] {
        let shown = c.find(Locator::Css(hidden)).await.unwrap();
        assert!(!shown.is_displayed().await.unwrap(), "{hidden} shown");
    }
    let (first, second) = (s.client.join("a/report.txt"), s.client.join("b/report.txt"));
    for (path, text) in [(&first, "first"), (&second, "second")] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    type_into(&c, "#upload", first.to_str().unwrap()).await;
    wait_until(&c, "the first file sent", |t| t.contains("report.txt")).await;
    type_into(&c, "#upload", second.to_str().unwrap()).await;
    let text = wait_until(&c, "the second, numbered", |t| t.contains("report (2).txt")).await;
    assert!(!text.contains("old.txt"), "{text}");
    let read = |name: &str| std::fs::read_to_string(s.share.join("inbox").join(name)).unwrap();
    assert_eq!(read("report.txt"), "first");
    assert_eq!(read("report (2).txt"), "second");
    assert_eq!(read("old.txt"), "private");
    let asked_for = requested(&c).await;
    assert!(
        asked_for
            .iter()
            .all(|u| u.contains("/s/troca_") || u.ends_with("/favicon.ico")),
        "everything through the link: {asked_for:?}"
    );
    c.close().await.unwrap();

    // The maker's list says what came in.
    click(&maker, "#links-button").await;
    let started = Instant::now();
    loop {
        let list = maker.find(Locator::Css("#links-list")).await.unwrap();
        let text = list.text().await.unwrap();
        if text.contains("files sent to inbox/ (2 files") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    maker.close().await.unwrap();
}

/// The link the page's dialog titled `title` shows, once it is open; the dialog is closed.
async fn link_shown(c: &Client, title: &str) -> String {
    let link = dialog_shown(c, title, "#dialog-input").await;
    click(c, "#dialog-cancel").await;
    link
}

/// What the page's dialog titled `title` holds in `what` (an input's value, else its text),
/// once it is open; the dialog stays open.
async fn dialog_shown(c: &Client, title: &str, what: &str) -> String {
    let started = Instant::now();
    loop {
        let value = c
            .execute(
                "const d = document.querySelector('#dialog');
                 if (!d.open || document.querySelector('#dialog-title').textContent !== arguments[0])
                   return null;
                 const e = document.querySelector(arguments[1]);
                 return e.value !== undefined ? e.value : e.textContent",
                vec![serde_json::json!(title), serde_json::json!(what)],
            )
            .await
            .unwrap();
        if let Some(v) = value.as_str() {
            return v.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {title:?} shown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of a URL.
fn url_path(url: &str) -> String {
    let rest = &url[url.find("://").unwrap() + 3..];
    rest[rest.find('/').unwrap()..].to_owned()
}

/// A folder's page costs what the folder holds and a bounded count beneath it: each sub-folder
/// shows its files and bytes while `--count-names` allows (an empty folder beneath counts as no
/// file), the rest show none; and its pages follow the folder's own entries, a folder's
/// contents never among them.
#[test]
fn a_folder_page_counts_within_its_bound_and_pages_by_its_own_entries() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("a/one.txt", "1"),
            ("b/1.txt", "1"),
            ("b/2.txt", "22"),
            ("b/3.txt", "333"),
            ("c/1.txt", "1"),
            ("c/2.txt", "2"),
            ("top.txt", "top"),
            ("many/zz-sub/1.txt", "1"),
            ("many/zz-sub/2.txt", "2"),
        ],
    );
    std::fs::create_dir(s.share.join("a/empty")).unwrap();
    for i in 0..5_001 {
        std::fs::write(s.share.join(format!("many/f{i:05}.txt")), "").unwrap();
    }
    // a/ reads two names, b/ the three left: c/ and many/ find none left.
    let hub = Hub::start(&s.share, &["--count-names", "5"]);
    let (rows, more) = folder_page(&hub, "", None, &[]);
    assert_eq!(more, None);
    let got: Vec<(&str, Option<u64>, Option<u64>)> = rows
        .iter()
        .map(|r| (r.name.as_str(), r.files, r.size))
        .collect();
    assert_eq!(
        got,
        [
            ("a/", Some(1), Some(1)),
            ("b/", Some(3), Some(6)),
            ("c/", None, None),
            ("many/", None, None),
            ("top.txt", Some(1), Some(3)),
        ]
    );
    let html = ok(&curl(&[&format!("{}files/", hub.web.clone().unwrap())]));
    assert!(html.contains("<td class=\"num\">—</td>"), "{html}");

    // 5,002 rows: a full page, then the rest after its last name.
    let (first, more) = folder_page(&hub, "many/", None, &[]);
    assert_eq!(first.len(), 5_000);
    assert_eq!(more.as_deref(), Some("many/f04999.txt"));
    let (rest, end) = folder_page(&hub, "many/", more.as_deref(), &[]);
    assert_eq!(end, None);
    let names: Vec<&str> = rest.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["many/zz-sub/", "many/f05000.txt"], "folders first");
    assert_eq!(rest[0].files, Some(2));
    // After a folder's row: the rows after it, none of what it holds.
    let (after_a, _) = folder_page(&hub, "", Some("a/"), &[]);
    assert_eq!(after_a[0].name, "b/");
    assert_eq!(after_a.len(), 4);
    // A folder that is not there.
    let missing = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{}files/nowhere/", hub.web.clone().unwrap()),
    ]);
    assert_eq!(ok(&missing), "404");
}

/// Starts a proxy and waits until it accepts connections on each of `ports`; what it says on
/// stderr goes to `log` (where nginx writes its errors too), shown if it stops.
fn listening(mut cmd: Command, ports: &[u16], log: &std::path::Path) -> Child {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in ports {
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                let said = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{name} stopped ({status}): {said}");
            }
            assert!(Instant::now() < deadline, "{name} did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

/// A real nginx in front of a hub's web face, on a free port, as the README shows it.
struct Nginx {
    child: Child,
    /// `http://127.0.0.1:PORT`
    url: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A graceful stop, so that the master takes its worker with it.
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory preconditions; the pid is our own child's, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Starts nginx in `dir` proxying `location` (`/`, or a path such as `/troca/`, passed on
/// whole) to the hub at `web` (`http://HOST:PORT/`), and waits until it accepts connections.
fn nginx_in_front_of(web: &str, dir: &std::path::Path, location: &str) -> Nginx {
    let upstream = web.trim_start_matches("http://");
    let upstream = upstream.split('/').next().unwrap();
    let port = free_port();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let d = dir.display();
    let conf = format!(
        "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream troca {{ server {upstream}; keepalive 8; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
         location {location} {{\n      proxy_pass http://troca;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-Host $http_host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         proxy_buffering off;\n      proxy_request_buffering off;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let mut nginx = Command::new("nginx");
    nginx
        .args(["-e", &format!("{d}/error.log"), "-p", &format!("{d}"), "-c"])
        .arg(&path)
        .args(["-g", "daemon off;"]);
    let child = listening(nginx, &[port], &dir.join("error.log"));
    Nginx {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// curl from `from` (a loopback address of its own, as another machine would be).
fn curl_from(from: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["--interface", from, "-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("a status code");
    (code.parse().expect("a status code"), body.to_owned())
}

/// Opens a download from `from` through `url` and reads none of it, so the request stays in
/// flight: it holds its place among its client's connections until dropped.
fn held_download(
    rt: &tokio::runtime::Runtime,
    from: &str,
    url: &str,
    name: &str,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let server: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(server).await.unwrap();
        let head = format!("GET /files/{name} HTTP/1.1\r\nHost: {server}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
    })
}

#[test]
fn behind_a_trusted_proxy_each_client_has_its_own_address_limits_and_place() {
    if !needs("nginx", "a reverse proxy in front of the web face") {
        return;
    }
    let s = Scratch::new();
    let share = s.share.clone();
    random_file(&share.join("big.bin"), 64 << 20, "big");
    std::fs::write(share.join("small.txt"), b"small").unwrap();
    let hub = Hub::start(
        &share,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--max-connections-per-ip",
            "2",
            "--upload-files-per-ip",
            "1",
        ],
    );
    let proxy = nginx_in_front_of(hub.web.as_deref().unwrap(), s.tmp.path(), "/");
    let at = |path: &str| format!("{}{path}", proxy.url);
    let (a, b) = ("127.0.0.2", "127.0.0.3");

    // Each client behind the proxy has its own upload quota, and cannot claim another's
    // address: nginx appends the address it saw, which the hub reads first.
    let put = |from: &str, name: &str, extra: &[&str]| {
        let mut args = vec!["-T", "-", &at(&format!("/files/{name}"))[..]]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|e| e.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl_from(from, &args).0
    };
    assert_eq!(put(a, "a1.txt", &[]), 201);
    assert_eq!(
        put(a, "a2.txt", &[]),
        429,
        "the second file is past a's quota"
    );
    assert_eq!(
        put(a, "a2.txt", &["-H", "X-Forwarded-For: 198.51.100.1"]),
        429
    );
    assert_eq!(put(b, "b1.txt", &[]), 201, "b's quota is its own");

    // The history says who uploaded what, by the clients' addresses.
    let (code, history) = curl_from(
        b,
        &[
            "-H",
            &format!("Authorization: Bearer {}", hub.admin_token()),
            &at("/api/history?op=put"),
        ],
    );
    assert_eq!(code, 200, "{history}");
    let rows: serde_json::Value = serde_json::from_str(&history).unwrap();
    let by = |target: &str| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == target)
            .map(|r| r["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(by("a1.txt"), [a]);
    assert_eq!(by("b1.txt"), [b]);

    // Connections per address count each client's requests in flight, not the proxy's
    // connections: a holds two downloads, a third is refused, b is served meanwhile.
    let rt = runtime();
    let held = [
        held_download(&rt, a, &proxy.url, "big.bin"),
        held_download(&rt, a, &proxy.url, "big.bin"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, who) = curl_from(b, &[&at("/api/clients")]);
        let who: serde_json::Value = serde_json::from_str(&who).unwrap();
        let downloading = who
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["address"] == a && c["target"] == "big.bin")
            .count();
        if downloading == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a's downloads never showed in who: {who}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = curl_from(a, &[&at("/files/small.txt")]);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("too many connections from your address"),
        "{body}"
    );
    assert_eq!(
        curl_from(b, &[&at("/files/small.txt")]),
        (200, "small".to_owned())
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl_from(a, &[&at("/files/small.txt")]).0 != 200 {
        assert!(Instant::now() < deadline, "a's places were not given back");
        std::thread::sleep(Duration::from_millis(20));
    }

    // WebDAV's MOVE names its Destination by the host the client asked for, which the hub
    // takes from the proxy's X-Forwarded-Host; the same header from a client is not believed.
    let admin = format!("troca:{}", hub.admin_token());
    let dest = format!("Destination: {}", at("/dav/moved.txt"));
    let (code, body) = curl_from(
        b,
        &["-u", &admin, "-X", "MOVE", "-H", &dest, &at("/dav/a1.txt")],
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        curl_from(b, &[&at("/files/moved.txt")]),
        (200, String::new())
    );
    let direct = hub.web.as_deref().unwrap().trim_end_matches('/');
    let forged = format!(
        "X-Forwarded-Host: {}",
        proxy.url.trim_start_matches("http://")
    );
    let (code, body) = curl_from(
        b,
        &[
            "-u",
            &admin,
            "-X",
            "MOVE",
            "-H",
            &dest,
            "-H",
            &forged,
            &format!("{direct}/dav/b1.txt"),
        ],
    );
    assert_eq!(code, 502, "{body}");

    // A hub that trusts no proxy says, once, how to tell a proxy's clients apart.
    drop(proxy);
    let other = s.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let plain = Hub::start(&other, &[]);
    let url = format!("{}api/status", plain.web.as_deref().unwrap());
    assert_eq!(
        curl_from(a, &["-H", "X-Forwarded-For: 203.0.113.9", &url]).0,
        200
    );
    plain
        .daemon
        .wait_for_stderr("start the hub with --trusted-proxy 127.0.0.2");
}

/// HAProxy in TCP mode in front of both of a hub's faces, connecting to the hub from
/// 127.0.0.5 and naming each client with the PROXY protocol (version 2 to the native
/// protocol, version 1 to the web face). Stopped when dropped.
struct HaProxy {
    child: Child,
    native: u16,
    web: u16,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_in_front_of(hub: &Hub, dir: &std::path::Path) -> HaProxy {
    let web = hub.web.as_deref().unwrap();
    let web = web.trim_start_matches("http://").trim_end_matches('/');
    let (native, front) = (free_port(), free_port());
    let conf = format!(
        "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 10s\n  timeout client 60s\n\
         timeout server 60s\nlisten native\n  bind 127.0.0.1:{native}\n\
         server hub {} send-proxy-v2 source 127.0.0.5\nlisten web\n  bind 127.0.0.1:{front}\n\
         server hub {web} send-proxy source 127.0.0.5\n",
        hub.addr
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let mut haproxy = Command::new("haproxy");
    haproxy.args(["-db", "-f"]).arg(&path);
    let child = listening(haproxy, &[native, front], &dir.join("haproxy.log"));
    HaProxy {
        child,
        native,
        web: front,
    }
}

#[test]
fn behind_a_tcp_proxy_the_proxy_protocol_names_each_client_on_both_faces() {
    if !needs("haproxy", "a TCP proxy in front of both faces") {
        return;
    }
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--trusted-proxy", "127.0.0.5"]);
    let proxy = haproxy_in_front_of(&hub, s.tmp.path());
    std::fs::write(s.client.join("native.txt"), b"through the proxy").unwrap();

    // The native protocol through the proxy, TLS end to end: the client checks the hub's own
    // key, and the hub sees the client's address, not the proxy's.
    let through = format!(
        "troca://127.0.0.1:{}/#{}",
        proxy.native,
        hub.key.as_deref().unwrap()
    );
    let out = Command::new(TROCA)
        .current_dir(&s.client)
        .env("TROCA_HUB", &through)
        .env("XDG_DATA_HOME", hub.client_data())
        .env_remove("TROCA_TOKEN")
        .args(["put", "native.txt"])
        .output()
        .unwrap();
    ok(&out);

    // The web face through the proxy, from a client address of its own.
    let (code, body) = curl_from(
        "127.0.0.2",
        &[
            "-T",
            "-",
            &format!("http://127.0.0.1:{}/files/web.txt", proxy.web),
        ],
    );
    assert_eq!(code, 201, "{body}");

    let history = curl(&[
        "-H",
        &format!("Authorization: Bearer {}", hub.admin_token()),
        &format!("{}api/history?op=put", hub.web.as_deref().unwrap()),
    ]);
    let rows: serde_json::Value = serde_json::from_str(&ok(&history)).unwrap();
    let from = |target: &str| -> String {
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == target);
        row.unwrap_or_else(|| panic!("{target} in {rows}"))["address"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(from("native.txt").starts_with("127.0.0.1:"), "{rows}");
    assert!(from("web.txt").starts_with("127.0.0.2:"), "{rows}");

    // A header from an address the hub does not trust is not believed: it is no request.
    use std::io::{Read, Write};
    let web = hub
        .web
        .as_deref()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut raw = std::net::TcpStream::connect(web).unwrap();
    raw.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 80\r\nGET /api/status HTTP/1.1\r\nHost: hub\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn beneath_a_path_prefix_the_page_its_script_and_webdav_work_behind_nginx() {
    if !needs("nginx", "a reverse proxy that forwards one path")
        || !needs("chromedriver", "the page runs in a real Chromium")
    {
        return;
    }
    let s = Scratch::new();
    std::fs::create_dir(s.share.join("docs")).unwrap();
    std::fs::write(s.share.join("docs/notes.txt"), "notes").unwrap();
    let hub = Hub::start(
        &s.share,
        &["--path-prefix", "/troca", "--trusted-proxy", "127.0.0.1"],
    );
    let web = hub.web.clone().unwrap();
    assert!(web.ends_with("/troca/"), "the printed address: {web}");
    // The hub itself answers only beneath its prefix.
    let root = web.trim_end_matches("troca/");
    let status = |url: &str| curl(&["-o", "/dev/null", "-w", "%{http_code}", url]);
    assert_eq!(ok(&status(&format!("{root}files/"))), "404");
    let proxy = nginx_in_front_of(&web, s.tmp.path(), "/troca/");
    let site = format!("{}/troca/", proxy.url);

    // The page through the proxy: its links, its script's requests and its uploads all stay
    // beneath the prefix.
    let driver = chromedriver();
    let c = browser(&driver, 1280, 900).await;
    c.goto(&site).await.unwrap();
    wait_until(&c, "the listing", |t| t.contains("docs/")).await;
    upload_and_fetch(&c, &s, 200 * 1024, "/troca/files/photo.jpg?download=1").await;
    click(&c, "a[href='/troca/files/docs/']").await;
    wait_until(&c, "the folder", |t| t.contains("notes.txt")).await;
    let asked = requested(&c).await;
    let paths: Vec<&str> = asked
        .iter()
        .map(|u| u.split_once("/troca/").map_or(u.as_str(), |(_, p)| p))
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("api/me?")), "{asked:?}");
    assert!(asked.iter().all(|u| u.starts_with(&site)), "{asked:?}");
    c.close().await.unwrap();

    // WebDAV beneath the prefix: listings name it, and a MOVE's Destination carries it.
    let admin = format!("troca:{}", hub.admin_token());
    let listing = curl(&[
        "-u",
        &admin,
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("{site}dav/docs/"),
    ]);
    let listing = ok(&listing);
    assert!(
        listing.contains("<D:href>/troca/dav/docs/notes.txt</D:href>"),
        "{listing}"
    );
    let dest = format!("Destination: {site}dav/docs/moved.txt");
    let moved = curl(&[
        "-u",
        &admin,
        "-X",
        "MOVE",
        "-H",
        &dest,
        "-w",
        "%{http_code}",
        &format!("{site}dav/docs/notes.txt"),
    ]);
    assert_eq!(ok(&moved), "201");
    assert_eq!(
        std::fs::read_to_string(s.share.join("docs/moved.txt")).unwrap(),
        "notes"
    );
    let outside = format!("Destination: {}/dav/docs/x.txt", proxy.url);
    let refused = curl(&[
        "-u",
        &admin,
        "-X",
        "MOVE",
        "-H",
        &outside,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{site}dav/docs/moved.txt"),
    ]);
    assert_eq!(ok(&refused), "403");
}
