//! The HTTP face without a socket: requests go straight into `router(hub)`.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;
use troca_hub::{Hub, HubConfig};

struct Fixture {
    dir: tempfile::TempDir,
    hub: Arc<Hub>,
}

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(tune: impl FnOnce(&mut HubConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = HubConfig::new(dir.path());
        tune(&mut config);
        let hub = Arc::new(Hub::open(config).unwrap());
        Fixture { dir, hub }
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    fn admin(&self) -> String {
        std::fs::read_to_string(&self.hub.admin_token_file().path)
            .unwrap()
            .trim()
            .to_owned()
    }

    async fn send(&self, req: Request<Body>) -> Response {
        troca_web::router(Arc::clone(&self.hub))
            .oneshot(req)
            .await
            .unwrap()
    }

    async fn get(&self, uri: &str) -> Response {
        self.send(req(Method::GET, uri).body(Body::empty()).unwrap())
            .await
    }
}

fn req(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::USER_AGENT, "router-test/1.0")
}

async fn body(r: Response) -> Vec<u8> {
    r.into_body().collect().await.unwrap().to_bytes().to_vec()
}

async fn json(r: Response) -> serde_json::Value {
    serde_json::from_slice(&body(r).await).unwrap()
}

fn h(r: &Response, name: header::HeaderName) -> &str {
    r.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_api_answers_with_the_same_fields_as_the_cli() {
    let f = Fixture::new();
    f.write("docs/a.txt", b"alpha");
    f.write("b.bin", b"beta");
    let r = f.get("/api/files?prefix=docs/").await;
    assert_eq!(r.status(), StatusCode::OK);
    let files = json(r).await;
    assert_eq!(files.as_array().unwrap().len(), 1);
    assert_eq!(files[0]["name"], "docs/a.txt");
    assert_eq!(files[0]["size"], 5);
    assert!(files[0]["modified"].as_str().unwrap().ends_with('Z'));
    assert!(files[0].get("blake3").is_some());

    let status = json(f.get("/api/status").await).await;
    for key in ["time", "uptime_s", "version", "files", "bytes", "clients"] {
        assert!(status.get(key).is_some(), "status has {key}: {status}");
    }
    assert_eq!(status["files"], 2);

    // The caller is connected while it asks, and shows under its User-Agent.
    let clients = json(f.get("/api/clients").await).await;
    assert!(clients
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "web (router-test/1.0)" && c.get("connected_at").is_some()));

    f.hub.history_log().flush();
    let history = json(f.get("/api/history?limit=10").await).await;
    let ops: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["who", "status", "list"], "newest first");
    for key in ["time", "client", "address", "op", "target", "ok", "bytes"] {
        assert!(history[0].get(key).is_some(), "history has {key}");
    }
}

#[tokio::test]
async fn downloads_carry_type_disposition_etag_and_honour_ranges() {
    let f = Fixture::new();
    f.write("photos/cat picture.png", b"\x89PNG not really");
    let r = f.get("/files/photos/cat%20picture.png").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, header::CONTENT_TYPE), "image/png");
    assert_eq!(h(&r, header::CONTENT_LENGTH), "15");
    assert_eq!(h(&r, header::ACCEPT_RANGES), "bytes");
    assert!(h(&r, header::CONTENT_DISPOSITION).starts_with("inline; filename=\"cat picture.png\""));
    let tag = h(&r, header::ETAG).to_owned();
    assert_eq!(
        tag,
        format!("\"{}\"", blake3::hash(b"\x89PNG not really").to_hex())
    );
    assert_eq!(body(r).await, b"\x89PNG not really");

    let r = f.get("/files/photos/cat%20picture.png?download=1").await;
    assert!(h(&r, header::CONTENT_DISPOSITION).starts_with("attachment;"));

    // Unchanged since the client's copy.
    let r = f
        .send(
            req(Method::GET, "/files/photos/cat%20picture.png")
                .header(header::IF_NONE_MATCH, &tag)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(body(r).await.is_empty());

    // One range.
    let ranged = |range: &'static str| {
        req(Method::GET, "/files/photos/cat%20picture.png")
            .header(header::RANGE, range)
            .body(Body::empty())
            .unwrap()
    };
    let r = f.send(ranged("bytes=1-3")).await;
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(h(&r, header::CONTENT_RANGE), "bytes 1-3/15");
    assert_eq!(body(r).await, b"PNG");
    let r = f.send(ranged("bytes=-6")).await;
    assert_eq!(body(r).await, b"really");
    let r = f.send(ranged("bytes=15-")).await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h(&r, header::CONTENT_RANGE), "bytes */15");
    // A range for another version of the file is not applied.
    let r = f
        .send(
            req(Method::GET, "/files/photos/cat%20picture.png")
                .header(header::RANGE, "bytes=1-3")
                .header(header::IF_RANGE, "\"an-old-version\"")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await.len(), 15);

    // HEAD: the headers, no body.
    let r = f
        .send(
            req(Method::HEAD, "/files/photos/cat%20picture.png")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(h(&r, header::CONTENT_LENGTH), "15");
    assert!(body(r).await.is_empty());
}

#[tokio::test]
async fn a_large_file_streams_whole_and_its_hash_becomes_its_etag() {
    let f = Fixture::new();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 7)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    f.write("big.bin", &data);
    let r = f.get("/files/big.bin").await;
    assert!(r.headers().get(header::ETAG).is_none(), "not hashed yet");
    assert_eq!(body(r).await, data);
    let r = f.get("/files/big.bin").await;
    assert_eq!(
        h(&r, header::ETAG),
        format!("\"{}\"", blake3::hash(&data).to_hex()),
        "hashed while it was sent the first time"
    );
    let r = f
        .send(
            req(Method::GET, "/files/big.bin")
                .header(header::RANGE, "bytes=4194304-")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(body(r).await, &data[4194304..]);
}

#[tokio::test]
async fn a_large_upload_lands_byte_for_byte() {
    // Large enough to be written with direct I/O, with a tail that is not a whole block.
    let f = Fixture::new();
    let data: Vec<u8> = (0..9 * 1024 * 1024 + 4321)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let r = f
        .send(
            req(Method::PUT, "/files/large.bin")
                .header(header::CONTENT_LENGTH, data.len())
                .header("x-troca-blake3", blake3::hash(&data).to_hex().as_str())
                .body(Body::from(data.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(f.dir.path().join("large.bin")).unwrap(), data);
}

fn put(uri: &str, bytes: &'static [u8]) -> axum::http::request::Builder {
    req(Method::PUT, uri).header(header::CONTENT_LENGTH, bytes.len())
}

#[tokio::test]
async fn uploads_land_whole_and_replacing_or_deleting_needs_rights() {
    let f = Fixture::new();
    let r = f
        .send(
            put("/files/new/notes.txt", b"first")
                .body(Body::from(&b"first"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let done = json(r).await;
    assert_eq!(done["name"], "new/notes.txt");
    assert_eq!(done["blake3"], blake3::hash(b"first").to_hex().as_str());
    assert_eq!(
        std::fs::read(f.dir.path().join("new/notes.txt")).unwrap(),
        b"first"
    );

    // Taken: refused, then replaced only with ?overwrite=1 and the right token.
    let again = || {
        put("/files/new/notes.txt", b"second")
            .body(Body::from(&b"second"[..]))
            .unwrap()
    };
    let r = f.send(again()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // The page's own advice, never the command line's.
    let message = json(r).await["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("?overwrite=1") && !message.contains("--"),
        "{message}"
    );
    let r = f
        .send(
            put("/files/new/notes.txt?overwrite=1", b"second")
                .body(Body::from(&b"second"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "anonymous may not replace"
    );
    let r = f
        .send(
            put("/files/new/notes.txt?overwrite=1", b"second")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
                .body(Body::from(&b"second"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        std::fs::read(f.dir.path().join("new/notes.txt")).unwrap(),
        b"second"
    );

    // A wrong token is refused as such.
    let r = f
        .send(
            req(Method::DELETE, "/files/new/notes.txt")
                .header(header::AUTHORIZATION, "Bearer not-a-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h(&r, header::WWW_AUTHENTICATE), "Bearer");
    let r = f
        .send(
            req(Method::DELETE, "/files/new/notes.txt")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = f
        .send(
            req(Method::DELETE, "/files/new/notes.txt")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!f.dir.path().join("new/notes.txt").exists());
}

#[tokio::test]
async fn a_bad_upload_leaves_nothing_under_the_name() {
    let f = Fixture::new();
    // The sender's hash does not match what arrived.
    let r = f
        .send(
            put("/files/x.txt", b"hello")
                .header("x-troca-blake3", blake3::hash(b"other").to_hex().as_str())
                .body(Body::from(&b"hello"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!f.dir.path().join("x.txt").exists());
    // No length.
    let r = f
        .send(
            req(Method::PUT, "/files/y.txt")
                .body(Body::from("abc"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::LENGTH_REQUIRED);
    // A body shorter than announced.
    let r = f
        .send(
            req(Method::PUT, "/files/z.txt")
                .header(header::CONTENT_LENGTH, 100)
                .body(Body::from("short"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!f.dir.path().join("z.txt").exists());
    assert_eq!(
        std::fs::read_dir(f.dir.path().join(".troca/uploads"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "small")
            .count(),
        0,
        "no partial upload is kept"
    );
}

#[tokio::test]
async fn encoded_tricks_cannot_leave_the_shared_folder() {
    let f = Fixture::new();
    f.write("ok.txt", b"fine");
    let outside = f.dir.path().parent().unwrap().join("outside.txt");
    let tricks = [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E/%2E%2E/etc/passwd",
        "..%2fsecret",
        "%2e%2e%5c%2e%2e%5cwindows",
        "..\\..\\windows",
        "%2Fetc%2Fpasswd",
        "sub/%2E%2E/%2E%2E/outside.txt",
        "ok.txt%00.png",
        ".troca/admin.token",
        "%2Etroca%2Fadmin.token",
        "%C0%AE%C0%AE/etc/passwd",
        "a%0Ab",
    ];
    for t in tricks {
        let r = f.get(&format!("/files/{t}")).await;
        assert!(
            r.status() == StatusCode::BAD_REQUEST || r.status() == StatusCode::NOT_FOUND,
            "GET {t} gave {}",
            r.status()
        );
        let r = f
            .send(
                put(&format!("/files/{t}"), b"evil")
                    .body(Body::from(&b"evil"[..]))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "PUT {t}");
    }
    assert!(!outside.exists());
    let admin = f.admin();
    assert_eq!(
        std::fs::read_to_string(&f.hub.admin_token_file().path)
            .unwrap()
            .trim(),
        admin,
        "the admin token is untouched"
    );
    // And the listing never shows the state folder.
    let files = json(f.get("/api/files").await).await;
    assert_eq!(files.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_hub_that_requires_tokens_refuses_the_api_but_serves_the_page() {
    let f = Fixture::with(|c| c.require_token = true);
    assert_eq!(f.get("/api/files").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.get("/files/x").await.status(), StatusCode::UNAUTHORIZED);
    let r = f
        .send(
            req(Method::GET, "/api/files")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    // The page still comes (so its script can ask for a token), without the listing.
    f.write("secret.txt", b"s");
    let page = f.get("/").await;
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(page.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let body = String::from_utf8(
        axum::body::to_bytes(page.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(body.contains("asks for a token"), "{body}");
    assert!(!body.contains("secret.txt"), "{body}");
}

#[tokio::test]
async fn the_page_forbids_inline_scripts_and_loads_nothing_from_elsewhere() {
    let f = Fixture::new();
    let r = f.get("/").await;
    let csp = h(&r, header::CONTENT_SECURITY_POLICY).to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"));
    let html = String::from_utf8(body(r).await).unwrap();
    // Every script has a src on this origin; no inline handlers; nothing from other hosts.
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..html[i..].find('>').unwrap() + i];
        assert!(tag.contains("src=\"/"), "inline or foreign script: {tag}");
    }
    let handler = html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let word: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        !word.is_empty() && rest[word.len()..].starts_with('=')
    });
    assert!(!handler, "an inline event handler");
    assert!(!html.contains("http://") && !html.contains("https://"));
    for asset in ["/app.js", "/app.css"] {
        let r = f.get(asset).await;
        assert_eq!(r.status(), StatusCode::OK);
        let text = String::from_utf8(body(r).await).unwrap();
        assert!(
            !text.contains("innerHTML"),
            "{asset} builds HTML from strings"
        );
        assert!(!text.contains("http://") && !text.contains("https://"));
    }
    // Shared files are sandboxed: an uploaded HTML page cannot script the hub's origin.
    f.write("page.html", b"<script>alert(1)</script>");
    let r = f.get("/files/page.html").await;
    assert_eq!(h(&r, header::CONTENT_SECURITY_POLICY), "sandbox");
    assert_eq!(h(&r, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

async fn body_text(r: Response) -> String {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn post_json(f: &Fixture, uri: &str, body: serde_json::Value) -> Response {
    f.send(
        req(Method::POST, uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-troca-owner", "router-owner")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn folders_over_http_make_move_find_list_and_delete() {
    let f = Fixture::new();
    let r = post_json(&f, "/api/folders", serde_json::json!({"name": "a/b"})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(f.dir.path().join("a/b").is_dir());
    let r = post_json(&f, "/api/folders", serde_json::json!({"name": "a/b"})).await;
    assert_eq!(r.status(), StatusCode::OK, "an existing folder is fine");
    f.write("a/b/<b>x<b> & y.txt", b"hello");
    // The empty folder is listed as a folder; the listing page escapes every name.
    let rows: serde_json::Value =
        serde_json::from_str(&body_text(f.get("/api/files?prefix=a/").await).await).unwrap();
    assert_eq!(rows[0]["name"], "a/b/<b>x<b> & y.txt", "{rows}");
    let page = body_text(f.get("/files/a/b/").await).await;
    assert!(page.contains("&lt;b&gt;x&lt;b&gt; &amp; y.txt"), "{page}");
    assert!(!page.contains("<b>x<b>"), "{page}");
    assert!(
        page.contains("href=\"/files/a/b/%3Cb%3Ex%3Cb%3E%20%26%20y%2Etxt\""),
        "{page}"
    );
    let r = f.get("/files/a").await;
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()[header::LOCATION], "/files/a/");
    assert_eq!(
        f.get("/files/nothing/").await.status(),
        StatusCode::NOT_FOUND
    );
    // Search finds the file in its folder, any case.
    let found = body_text(f.get("/api/find?q=Y.TXT").await).await;
    assert!(found.contains("a/b/<b>x<b> & y.txt"), "{found}");
    // Move the folder: someone else's file in it needs the admin token.
    let r = post_json(
        &f,
        "/api/move",
        serde_json::json!({"from": "a/b", "to": "c"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = f
        .send(
            req(Method::POST, "/api/move")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
                .body(Body::from(r#"{"from": "a/b", "to": "c"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(f.dir.path().join("c/<b>x<b> & y.txt").is_file());
    // A file sent to a folder's name: a conflict no overwrite resolves, and not offered one.
    for uri in ["/files/c", "/files/c?overwrite=1"] {
        let r = f
            .send(
                req(Method::PUT, uri)
                    .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
                    .header(header::CONTENT_LENGTH, 6)
                    .body(Body::from("a file"))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "{uri}");
        let body = json(r).await;
        assert_eq!(body["error"], "is_a_folder", "{body}");
        assert!(
            !body["message"].as_str().unwrap().contains("overwrite"),
            "{body}"
        );
    }
    assert!(f.dir.path().join("c/<b>x<b> & y.txt").is_file());
    // A folder with files goes only with ?recursive=1 (and the right to delete each file).
    let del = |uri: &str| {
        req(Method::DELETE, uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", f.admin()))
            .body(Body::empty())
            .unwrap()
    };
    let r = f.send(del("/files/c/")).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(body_text(r).await.contains("not_empty"));
    assert_eq!(
        f.send(del("/files/c/?recursive=1")).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(!f.dir.path().join("c").exists());
    assert!(f.dir.path().join("a").is_dir());
}

#[tokio::test]
async fn a_folder_zip_holds_every_file_byte_for_byte() {
    let f = Fixture::new();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    f.write("docs/big.bin", &big);
    f.write("docs/sub/small.txt", b"small");
    f.write("other.txt", b"not in the zip");
    let r = f.get("/files/docs/?zip").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/zip");
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["docs/big.bin", "docs/sub/small.txt"]);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("docs/big.bin").unwrap(), &mut got).unwrap();
    assert_eq!(got, big);
}

/// A file of more than 4 GiB goes into the zip with zip64 fields, streamed: the archive reads
/// back whole (a sparse file, so the test writes little).
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_zip_of_more_than_4_gib_uses_zip64() {
    use http_body_util::BodyExt;
    use std::io::Write;
    let f = Fixture::new();
    let big = f.dir.path().join("huge/sparse.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    let len = (4u64 << 30) + 12_345;
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"the end", len - 7).unwrap();
    f.write("huge/small.txt", b"small");
    let r = f.get("/files/huge/?zip").await;
    assert_eq!(r.status(), StatusCode::OK);
    // In memory where there is a tmpfs: 4 GiB written to the disk would slow every other test
    // that writes (the suite runs in parallel), past their stall timeouts.
    let shm = std::path::Path::new("/dev/shm");
    let out_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let out_path = out_dir.path().join("huge.zip");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&out_path).unwrap());
    let mut body = r.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            out.write_all(&data).unwrap();
        }
    }
    drop(out);
    // Info-ZIP's unzip reads the zip64 fields and checks every CRC-32 too.
    let tested = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&out_path)
        .output()
        .expect("unzip (scripts/test installs it)");
    assert!(tested.status.success(), "{tested:?}");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out_path).unwrap()).unwrap();
    let entry = zip.by_name("huge/sparse.bin").unwrap();
    assert_eq!(entry.size(), len);
    drop(entry);
    // Reading the whole entry checks its CRC-32; the last bytes are the ones written.
    let mut entry = zip.by_name("huge/sparse.bin").unwrap();
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    loop {
        let n = std::io::Read::read(&mut entry, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen += n as u64;
        tail = buf[..n].to_vec();
    }
    assert_eq!(seen, len);
    assert!(tail.ends_with(b"the end"));
    drop(entry);
    let mut small = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("huge/small.txt").unwrap(), &mut small).unwrap();
    assert_eq!(small, "small");
}

/// An upload is verified end to end only when its sender gives a hash; one without is kept
/// (the bytes are whole, fsynced and hashed) but said to be unverified, in the answer and in
/// the history.
#[tokio::test]
async fn an_upload_without_the_senders_hash_is_recorded_as_unverified() {
    let f = Fixture::new();
    let r = f
        .send(
            put("/files/plain.txt", b"hello")
                .body(Body::from(&b"hello"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(json(r).await["verified"], false);
    let r = f
        .send(
            put("/files/checked.txt", b"hello")
                .header("x-troca-blake3", blake3::hash(b"hello").to_hex().as_str())
                .body(Body::from(&b"hello"[..]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(json(r).await["verified"], true);
    f.hub.history_log().flush();
    let rows = json(f.get("/api/history?op=put").await).await;
    let note = |target: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == target)
            .unwrap_or_else(|| panic!("{target} in {rows}"))["note"]
            .clone()
    };
    assert_eq!(note("plain.txt"), "unverified: no X-Troca-Blake3 header");
    assert!(note("checked.txt").is_null());
}

/// Files in the hub's partial-upload folder (not its folder for small files).
fn partial_files(f: &Fixture) -> usize {
    std::fs::read_dir(f.dir.path().join(".troca/uploads"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "small")
        .count()
}

/// A PUT of `name` announcing `size` bytes whose body is fed through the returned sender.
fn fed_put(
    f: &Fixture,
    name: &str,
    size: usize,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<Response>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let request = req(Method::PUT, &format!("/files/{name}"))
        .header(header::CONTENT_LENGTH, size)
        .body(Body::from_stream(stream))
        .unwrap();
    let router = troca_web::router(Arc::clone(&f.hub));
    (
        tx,
        tokio::spawn(async move { router.oneshot(request).await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_upload_gathers_in_memory_within_the_batch_memory_and_holds_its_name() {
    // With --batch-memory the bytes wait in memory: no partial file. Without it, they stream
    // to one. Either way the name is held until the upload ends, and it lands whole.
    for (memory, partials_while_sending) in [(64 << 20, 0), (0, 2)] {
        let f = Fixture::with(|c| c.batch_memory = memory);
        let (tx, sending) = fed_put(&f, "a.txt", 10);
        tx.send(bytes::Bytes::from_static(b"hello")).await.unwrap();
        // Once the first is under way (it holds the name then), a second is refused as busy.
        for _ in 0..10_000 {
            if f.hub.status(&Default::default()).await.unwrap().transfers == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let r = f
            .send(
                put("/files/a.txt", b"other")
                    .body(Body::from(&b"other"[..]))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "memory {memory}");
        let message = json(r).await["message"].as_str().unwrap().to_owned();
        assert!(message.contains("being uploaded"), "{message}");
        assert_eq!(partial_files(&f), partials_while_sending, "memory {memory}");
        tx.send(bytes::Bytes::from_static(b" you")).await.unwrap();
        tx.send(bytes::Bytes::from_static(b"!")).await.unwrap();
        drop(tx);
        let r = sending.await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "memory {memory}");
        assert_eq!(
            json(r).await["blake3"],
            blake3::hash(b"hello you!").to_hex().as_str()
        );
        assert_eq!(
            std::fs::read(f.dir.path().join("a.txt")).unwrap(),
            b"hello you!"
        );
        assert_eq!(partial_files(&f), 0, "memory {memory}");
        let small = f.dir.path().join(".troca/uploads/small");
        assert_eq!(
            std::fs::read_dir(small).unwrap().count(),
            0,
            "memory {memory}"
        );

        // Cut off half-way: nothing under the name, and the name is free again.
        let (tx, sending) = fed_put(&f, "b.txt", 10);
        tx.send(bytes::Bytes::from_static(b"half")).await.unwrap();
        drop(tx);
        assert_eq!(sending.await.unwrap().status(), StatusCode::BAD_REQUEST);
        assert!(!f.dir.path().join("b.txt").exists());
        let r = f
            .send(
                put("/files/b.txt", b"whole")
                    .body(Body::from(&b"whole"[..]))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "memory {memory}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_uploads_at_once_each_land_whole_and_one_name_goes_to_one() {
    let f = Arc::new(Fixture::new());
    let body_of = |i: usize| format!("file {i} ").repeat(i + 1).into_bytes();
    std::fs::create_dir(f.dir.path().join("many")).unwrap();
    let mut sending = Vec::new();
    for i in 0..64 {
        let (f, data) = (Arc::clone(&f), body_of(i));
        sending.push(tokio::spawn(async move {
            let r = f
                .send(
                    req(Method::PUT, &format!("/dav/many/f{i}.txt"))
                        .header(header::CONTENT_LENGTH, data.len())
                        .body(Body::from(data))
                        .unwrap(),
                )
                .await;
            r.status()
        }));
    }
    for (i, s) in sending.into_iter().enumerate() {
        assert_eq!(s.await.unwrap(), StatusCode::CREATED, "f{i}");
        let stored = std::fs::read(f.dir.path().join(format!("many/f{i}.txt"))).unwrap();
        assert_eq!(stored, body_of(i), "f{i}");
    }

    // Eight uploads of one new name at once: one is stored, the others refused.
    let mut sending = Vec::new();
    for i in 0..8 {
        let (f, data) = (Arc::clone(&f), body_of(i));
        sending.push(tokio::spawn(async move {
            f.send(
                req(Method::PUT, "/files/one.txt")
                    .header(header::CONTENT_LENGTH, data.len())
                    .body(Body::from(data))
                    .unwrap(),
            )
            .await
            .status()
        }));
    }
    let mut won = Vec::new();
    for (i, s) in sending.into_iter().enumerate() {
        match s.await.unwrap() {
            StatusCode::CREATED => won.push(i),
            StatusCode::CONFLICT => {}
            other => panic!("upload {i}: {other}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let stored = std::fs::read(f.dir.path().join("one.txt")).unwrap();
    assert_eq!(stored, body_of(won[0]));
    let small = f.dir.path().join(".troca/uploads/small");
    assert_eq!(std::fs::read_dir(small).unwrap().count(), 0);
}

/// A folder larger than a page of its listing: the page without JavaScript shows a page of
/// rows (folders first) and links to the next, which goes on where it stopped, so following
/// the links (as `wget -r` does) reaches every entry once. A sub-folder's row at a page's end
/// does not come back on the next with what is beneath it.
#[tokio::test]
async fn a_large_folder_lists_a_page_at_a_time_with_a_link_to_the_next() {
    let f = Fixture::new();
    let total = 12_000;
    for i in 0..total {
        f.write(&format!("big/f{i:05}.txt"), b"");
    }
    for sub in ["big/a-sub/x.txt", "big/f05000/y.txt", "big/f05000/z.txt"] {
        f.write(sub, b"12");
    }
    let href = |name: &str| format!("href=\"/files/big/{name}\"");
    let mut seen = Vec::new();
    let mut uri = "/files/big/".to_owned();
    let mut pages = 0;
    loop {
        let page = body_text(f.get(&uri).await).await;
        pages += 1;
        let rows: Vec<&str> = page
            .split("<tr data-name=\"")
            .skip(1)
            .map(|r| r.split('"').next().unwrap())
            .collect();
        assert!(rows.len() <= 5_000, "{} rows on one page", rows.len());
        if pages == 1 {
            assert_eq!(rows[0], "big/a-sub/", "folders first");
            assert!(page.contains(&href("a%2Dsub/")));
        }
        seen.extend(rows.iter().map(|r| r.to_string()));
        let Some(more) = page
            .split("<p class=\"more\" id=\"more\"><a href=\"")
            .nth(1)
        else {
            break;
        };
        uri = more.split('"').next().unwrap().replace("&amp;", "&");
    }
    assert_eq!(pages, 3);
    let mut want: Vec<String> = (0..total).map(|i| format!("big/f{i:05}.txt")).collect();
    want.extend(["big/a-sub/".to_owned(), "big/f05000/".to_owned()]);
    want.sort();
    seen.sort();
    assert_eq!(seen.len(), want.len(), "every entry once");
    assert_eq!(seen, want);
}

/// A request body that brings `sent`, then breaks off.
/// A `PUT` of `big.bin` (the file `data`, last modified at `modified`) from byte `from` on,
/// without its body.
fn rest_of(data: &[u8], from: usize, modified: &str) -> axum::http::request::Builder {
    let size = data.len();
    req(Method::PUT, "/files/big.bin")
        .header(header::CONTENT_LENGTH, size - from)
        .header("x-troca-modified", modified)
        .header(
            header::CONTENT_RANGE,
            format!("bytes {from}-{}/{size}", size - 1),
        )
}

/// A request's body: `data` from byte `from` on.
trait BodyFrom {
    fn body_from(self, data: &[u8], from: usize) -> Request<Body>;
}

impl BodyFrom for axum::http::request::Builder {
    fn body_from(self, data: &[u8], from: usize) -> Request<Body> {
        self.body(Body::from(data[from..].to_vec())).unwrap()
    }
}

fn cut_off(sent: &[u8]) -> Body {
    Body::from_stream(futures_util::stream::iter(vec![
        Ok(bytes::Bytes::copy_from_slice(sent)),
        Err(std::io::Error::other("the link dropped")),
    ]))
}

/// An upload that says its file's time (`X-Troca-Modified`) leaves what it stored when its
/// body breaks off; `/api/resume` says how much, and a `PUT` of the rest (`Content-Range`)
/// completes it, verified whole. A `PUT` starting past what the hub holds is told where to
/// start; one starting before it has the overlap dropped. Without the time nothing stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_upload_cut_off_resumes_from_what_the_hub_holds() {
    let f = Fixture::new();
    let data: Vec<u8> = (0..9 * 1024 * 1024 + 4321)
        .map(|i| (i * 13 % 251) as u8)
        .collect();
    let size = data.len();
    let modified = "1764900000000";
    let first = 4 * 1024 * 1024 + 17;
    let cut = cut_off(&data[..first]);
    let r = f
        .send(
            req(Method::PUT, "/files/big.bin")
                .header(header::CONTENT_LENGTH, size)
                .header("x-troca-modified", modified)
                .body(cut)
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let resume =
        |modified: &str| format!("/api/resume?name=big.bin&size={size}&modified={modified}");
    let held = json(f.get(&resume(modified)).await).await["offset"]
        .as_u64()
        .unwrap();
    assert_eq!(held, first as u64, "every byte received was kept");
    assert_eq!(
        json(f.get(&resume("1764900000001")).await).await["offset"],
        0
    );
    assert!(!f.dir.path().join("big.bin").exists());

    // Past what the hub holds: told where to start, and nothing is lost.
    let past = held as usize + 1;
    let r = f
        .send(rest_of(&data, past, modified).body_from(&data, past))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        h(&r, header::HeaderName::from_static("x-troca-offset")),
        held.to_string()
    );
    assert_eq!(json(f.get(&resume(modified)).await).await["offset"], held);

    // From a little before: the overlap is dropped, the rest lands, verified end to end.
    let from = held as usize - 1000;
    let r = f
        .send(
            rest_of(&data, from, modified)
                .header("x-troca-blake3", blake3::hash(&data).to_hex().as_str())
                .body_from(&data, from),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let done = json(r).await;
    assert_eq!(done["resumed_from"], held);
    assert_eq!(done["verified"], true);
    assert_eq!(std::fs::read(f.dir.path().join("big.bin")).unwrap(), data);
    assert_eq!(partial_files(&f), 0);

    // Without the file's time, a cut upload leaves nothing behind.
    let cut = cut_off(&data[..first]);
    let r = f
        .send(
            req(Method::PUT, "/files/other.bin")
                .header(header::CONTENT_LENGTH, size)
                .body(cut)
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(partial_files(&f), 0);
}

/// A `PUT` starting past what the hub holds is told where to start, and the name is free again
/// by the time it is told: the sender's next `PUT`, sent at once, is never refused as "being
/// uploaded". (The upload's writer thread used to hold the name until it ended on its own;
/// here that lost the race several times in 300 tries.)
#[tokio::test(flavor = "multi_thread")]
async fn a_put_told_where_to_start_has_let_go_of_the_name() {
    let f = Fixture::new();
    let data: Vec<u8> = (0..9 * 1024 * 1024 + 4321)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let size = data.len();
    let modified = "1764900000000";
    let first = 4 * 1024 * 1024 + 17;
    let r = f
        .send(
            req(Method::PUT, "/files/big.bin")
                .header(header::CONTENT_LENGTH, size)
                .header("x-troca-modified", modified)
                .body(cut_off(&data[..first]))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let past = first + 1;
    for _ in 0..300 {
        let r = f
            .send(rest_of(&data, past, modified).body_from(&data, past))
            .await;
        let offset = r.headers().get("x-troca-offset").cloned();
        let (status, body) = (r.status(), json(r).await);
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(offset.unwrap(), first.to_string().as_str());
    }
}
