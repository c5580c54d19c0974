//! The web face from the outside: the real `troca serve`, driven by `curl` and by headless
//! Chromium (through chromedriver and fantoccini). `scripts/test` installs both.

mod common;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/test installs it)")
}

#[test]
fn curl_uploads_and_downloads_ranges() {
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

/// chromedriver on a free port, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--window-size={width},{height}"),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session")
}

/// The text of the file table's rows.
async fn rows(c: &Client) -> String {
    c.find(Locator::Css("#files tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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

#[tokio::test(flavor = "multi_thread")]
async fn in_chromium_the_page_uploads_lists_downloads_and_deletes() {
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

    // Upload through the file input.
    let upload = s.client.join("photo.jpg");
    random_file(&upload, 300 * 1024, "browser");
    c.find(Locator::Css("#upload"))
        .await
        .unwrap()
        .send_keys(upload.to_str().unwrap())
        .await
        .unwrap();
    wait_until(&c, "the uploaded file", |t| t.contains("photo.jpg")).await;
    assert_eq!(hash_file(&s.share.join("photo.jpg")), hash_file(&upload));

    // Download through the page's own link, in the browser, and compare the bytes.
    let link = c.find(Locator::LinkText("photo.jpg")).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    assert_eq!(href, "/files/photo.jpg?download=1");
    let got = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0]).then(r => r.arrayBuffer())
               .then(b => done(Array.from(new Uint8Array(b))));",
            vec![serde_json::json!(href)],
        )
        .await
        .unwrap();
    let got: Vec<u8> = serde_json::from_value(got).unwrap();
    assert_eq!(got, std::fs::read(&upload).unwrap());

    // Folders are navigable, and the filter narrows the list.
    c.find(Locator::LinkText("albums/"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let t = wait_until(&c, "the folder", |t| t.contains("song.ogg")).await;
    assert!(!t.contains("photo.jpg"), "{t}");
    c.find(Locator::LinkText("home"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_until(&c, "home again", |t| t.contains("photo.jpg")).await;
    c.find(Locator::Css("#filter"))
        .await
        .unwrap()
        .send_keys("phot")
        .await
        .unwrap();
    let t = wait_until(&c, "the filter", |t| !t.contains(xss)).await;
    assert!(t.contains("photo.jpg"));
    c.find(Locator::Css("#filter"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();

    // Delete what this browser uploaded: its owner key is enough, no token asked.
    c.find(Locator::Css("button[aria-label='Delete photo.jpg']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(c.get_alert_text().await.unwrap(), "Delete photo.jpg?");
    c.accept_alert().await.unwrap();
    wait_until(&c, "the deletion", |t| !t.contains("photo.jpg")).await;
    assert!(!s.share.join("photo.jpg").exists());

    // Someone else's file: the hub asks for a token; give the admin's.
    std::fs::write(s.share.join("theirs.txt"), "not mine").unwrap();
    c.refresh().await.unwrap();
    wait_until(&c, "the other file listed", |t| t.contains("theirs.txt")).await;
    c.find(Locator::Css("button[aria-label='Delete theirs.txt']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(c.get_alert_text().await.unwrap(), "Delete theirs.txt?");
    c.accept_alert().await.unwrap();
    let started = Instant::now();
    let prompt = loop {
        match c.get_alert_text().await {
            Ok(t) => break t,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("no token prompt: {e}"),
        }
    };
    assert!(prompt.contains("token"), "{prompt}");
    c.send_alert_text(&hub.admin_token()).await.unwrap();
    c.accept_alert().await.unwrap();
    wait_until(&c, "the deletion", |t| !t.contains("theirs.txt")).await;
    assert!(!s.share.join("theirs.txt").exists());

    // The status panel shows the hub's time and the browser among the clients.
    let status = c
        .find(Locator::Css("#status"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("hub time"), "{status}");
    let who = json(&hub.troca(&s.client, &["--json", "who"]));
    assert!(
        who.as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"].as_str().unwrap().starts_with("web (Mozilla")),
        "{who}"
    );

    // A screenshot for the README, when asked for.
    if let Ok(path) = std::env::var("TROCA_SCREENSHOT") {
        c.goto(&web).await.unwrap();
        wait_until(&c, "the listing", |t| t.contains("albums/")).await;
        std::fs::write(path, c.screenshot().await.unwrap()).unwrap();
    }
    c.close().await.unwrap();

    // On a phone-sized screen nothing needs sideways scrolling.
    let phone = browser(&driver, 390, 844).await;
    phone.goto(&web).await.unwrap();
    wait_until(&phone, "the listing", |t| t.contains("albums/")).await;
    let fits = phone
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, true, "the page is wider than a phone");
    phone.close().await.unwrap();
}
