//! Whole-file transfers through the real binary: large round trips verified by hash, files that
//! were already in the shared folder, listing and JSON output.

mod common;
use common::*;

#[test]
fn round_trip_of_a_256_mib_file_keeps_every_byte() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let src = s.client.join("big.bin");
    random_file(&src, 256 << 20, "big");
    let want = hash_file(&src);

    let put = json(&hub.troca(&s.client, &["--json", "put", "big.bin"]));
    assert_eq!(put[0]["name"], "big.bin");
    assert_eq!(put[0]["size"], 256u64 << 20);
    assert_eq!(put[0]["blake3"], want.as_str());
    assert_eq!(hash_file(&s.share.join("big.bin")), want);

    let listed = json(&hub.troca(&s.client, &["--json", "ls"]));
    assert_eq!(listed[0]["blake3"], want.as_str());

    let out = s.tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let got = json(&hub.troca(&out, &["--json", "get", "big.bin"]));
    assert_eq!(got[0]["blake3"], want.as_str());
    assert_eq!(got[0]["path"], "big.bin");
    assert_eq!(hash_file(&out.join("big.bin")), want);
    assert!(!out.join("big.bin.part").exists());
}

#[test]
fn download_to_stdout_streams_the_exact_bytes() {
    let s = Scratch::new();
    random_file(&s.share.join("f.bin"), 3 << 20, "stdout");
    let hub = Hub::start(&s.share, &[]);
    let out = hub.troca(&s.client, &["get", "f.bin", "-o", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(s.share.join("f.bin")).unwrap());
    assert!(
        common::files_under(&s.client).is_empty(),
        "nothing written locally"
    );
}

#[test]
fn files_already_in_the_folder_are_listed_and_served() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.share.join("docs/old")).unwrap();
    std::fs::write(s.share.join("readme.txt"), "hello").unwrap();
    std::fs::write(s.share.join("docs/old/notes.md"), "notes").unwrap();
    let hub = Hub::start(&s.share, &[]);

    let listed = json(&hub.troca(&s.client, &["--json", "ls"]));
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/old/notes.md", "readme.txt"]);
    assert_eq!(listed[1]["size"], 5);
    assert!(listed[1]["blake3"].is_null(), "not hashed until needed");
    assert!(listed[1]["modified"].as_str().unwrap().ends_with('Z'));

    ok(&hub.troca(&s.client, &["get", "docs/old/notes.md"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("notes.md")).unwrap(),
        "notes"
    );

    // Serving the file taught the hub its hash.
    let listed = json(&hub.troca(&s.client, &["--json", "ls", "docs/"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(
        listed[0]["blake3"],
        blake3::hash(b"notes").to_hex().as_str()
    );
    // The state folder is never listed.
    assert!(s.share.join(".troca").is_dir());
}

#[test]
fn a_file_changed_on_disk_is_served_fresh_and_verified() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "first version").unwrap();
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["get", "a.txt"]));
    std::fs::write(s.share.join("a.txt"), "second, longer version").unwrap();
    ok(&hub.troca(&s.client, &["get", "--force", "a.txt"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("a.txt")).unwrap(),
        "second, longer version"
    );
}

#[test]
fn empty_files_and_names_with_spaces_round_trip() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("empty file.txt"), "").unwrap();
    ok(&hub.troca(
        &s.client,
        &["put", "empty file.txt", "--as", "dir with space/ação.txt"],
    ));
    assert_eq!(
        std::fs::read(s.share.join("dir with space/ação.txt")).unwrap(),
        b""
    );
    let out = s.tmp.path().join("o");
    std::fs::create_dir(&out).unwrap();
    ok(&hub.troca(&out, &["get", "dir with space/ação.txt"]));
    assert_eq!(std::fs::read(out.join("ação.txt")).unwrap(), b"");
}

#[test]
fn several_files_in_one_command() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    for n in ["a", "b", "c"] {
        std::fs::write(s.client.join(n), n).unwrap();
    }
    let put = json(&hub.troca(&s.client, &["--json", "put", "a", "b", "c"]));
    assert_eq!(put.as_array().unwrap().len(), 3);
    let dest = s.tmp.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let got = json(&hub.troca(
        &s.client,
        &["--json", "get", "a", "b", "c", "-o", dest.to_str().unwrap()],
    ));
    assert_eq!(got.as_array().unwrap().len(), 3);
    assert_eq!(files_under(&dest), ["a", "b", "c"]);
    let rm = json(&hub.troca_with(&s.client, &hub.admin_token(), &["--json", "rm", "a", "b"]));
    assert_eq!(rm.as_array().unwrap().len(), 2);
    assert_eq!(files_under(&s.share), ["c"]);
}

#[test]
fn a_restarted_hub_still_knows_the_hashes_it_computed() {
    let s = Scratch::new();
    std::fs::write(s.share.join("known.txt"), "hash me once").unwrap();
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["get", "known.txt"]));
    let (status, _) = hub.terminate();
    assert!(status.success());
    let hub = Hub::start(&s.share, &[]);
    let listed = json(&hub.troca(&s.client, &["--json", "ls"]));
    assert_eq!(
        listed[0]["blake3"],
        blake3::hash(b"hash me once").to_hex().as_str(),
        "known without hashing again"
    );
}

/// Asserts that `what` took at least `secs`: a lower bound, which a slow machine only makes
/// easier to meet, so it cannot fail for being slow; without a limit these transfers take
/// milliseconds on loopback.
fn took_at_least(what: &str, started: std::time::Instant, secs: f64) {
    let took = started.elapsed().as_secs_f64();
    assert!(
        took >= secs,
        "{what} took {took:.2} s, under the {secs} s its limit allows"
    );
}

/// The hub's bandwidth limits hold on every face (native, web, WebDAV), both ways, and so does
/// a client's own `--max-rate` against a hub without any; the bytes arrive intact.
#[test]
fn bandwidth_limits_hold_on_every_face_and_for_a_client() {
    if !needs("curl", "an HTTP client to drive the web face") {
        return;
    }
    let s = Scratch::new();
    let c = &s.client;
    random_file(&s.share.join("down.bin"), 2 << 20, "rate-down");
    random_file(&c.join("up.bin"), 2 << 20, "rate-up");
    let want_down = hash_file(&s.share.join("down.bin"));
    let want_up = hash_file(&c.join("up.bin"));
    let limits = [
        "--max-download-rate",
        "2M",
        "--max-upload-rate-per-ip",
        "2M",
    ];
    let hub = Hub::start(&s.share, &limits);
    let web = hub.web.clone().unwrap();
    // 2 MiB at 2 MiB/s: a second, less the burst of 50 ms a limit lets through at once.
    let secs = 0.9;

    let t = std::time::Instant::now();
    ok(&hub.troca(c, &["get", "down.bin", "-o", "native.bin"]));
    took_at_least("a native download", t, secs);
    assert_eq!(hash_file(&c.join("native.bin")), want_down);

    let t = std::time::Instant::now();
    ok(&hub.troca(c, &["put", "up.bin", "--as", "native-up.bin"]));
    took_at_least("a native upload", t, secs);
    assert_eq!(hash_file(&s.share.join("native-up.bin")), want_up);

    for (face, path) in [("web", "files"), ("WebDAV", "dav")] {
        let got = c.join(format!("{face}.bin"));
        let t = std::time::Instant::now();
        let url = format!("{web}{path}/down.bin");
        let out = curl(&["-f", "-o", got.to_str().unwrap(), &url]);
        assert!(out.status.success(), "{out:?}");
        took_at_least(&format!("a {face} download"), t, secs);
        assert_eq!(hash_file(&got), want_down);

        let t = std::time::Instant::now();
        let url = format!("{web}{path}/{face}-up.bin");
        let out = curl(&["-f", "-T", c.join("up.bin").to_str().unwrap(), &url]);
        assert!(out.status.success(), "{out:?}");
        took_at_least(&format!("a {face} upload"), t, secs);
        assert_eq!(hash_file(&s.share.join(format!("{face}-up.bin"))), want_up);
    }

    let other = Scratch::new();
    random_file(&other.share.join("down.bin"), 2 << 20, "rate-down");
    let free = Hub::start(&other.share, &[]);
    let t = std::time::Instant::now();
    ok(&free.troca(c, &["--max-rate", "2M", "get", "down.bin", "-o", "own.bin"]));
    took_at_least("a download held to the client's --max-rate", t, secs);
    assert_eq!(hash_file(&c.join("own.bin")), want_down);
    let t = std::time::Instant::now();
    ok(&free.troca(c, &["put", "up.bin", "--max-rate", "2M"]));
    took_at_least("an upload held to the client's --max-rate", t, secs);
    assert_eq!(hash_file(&other.share.join("up.bin")), want_up);
}

/// A download keeps the time the file has on the hub, as `rsync -t` and `wget` keep theirs: a
/// large file (streamed), a folder's small files (in batches), and a file fetched again over
/// an older copy with `--force`.
#[test]
fn downloads_keep_the_time_files_have_on_the_hub() {
    use std::time::{Duration, UNIX_EPOCH};
    let s = Scratch::new();
    random_file(&s.share.join("big.bin"), 3 << 20, "dated-big");
    write_tree(&s.share, &[("dated/a.txt", "a"), ("dated/sub/b.txt", "b")]);
    let times = [
        ("big.bin", 1_577_934_245),
        ("dated/a.txt", 1_300_000_000),
        ("dated/sub/b.txt", 1_400_000_123),
    ];
    for (name, secs) in times {
        set_mtime(&s.share.join(name), secs);
    }
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["get", "big.bin", "dated"]));
    let modified = |name: &str| {
        let m = std::fs::metadata(s.client.join(name)).unwrap();
        m.modified().unwrap().duration_since(UNIX_EPOCH).unwrap()
    };
    for (name, secs) in times {
        assert_eq!(modified(name), Duration::from_secs(secs), "{name}");
    }
    std::fs::write(s.share.join("dated/a.txt"), "a, changed").unwrap();
    set_mtime(&s.share.join("dated/a.txt"), 1_600_000_000);
    ok(&hub.troca(
        &s.client,
        &["get", "--force", "dated/a.txt", "-o", "dated/"],
    ));
    assert_eq!(
        std::fs::read_to_string(s.client.join("dated/a.txt")).unwrap(),
        "a, changed"
    );
    assert_eq!(modified("dated/a.txt"), Duration::from_secs(1_600_000_000));
}

/// An upload keeps the time its source file has, on the hub as on the way back: a large file
/// (streamed), a folder's small files (in batches), and a web upload that says its file's time
/// (`X-Troca-Modified`, as the page sends it), small or large.
#[test]
fn uploads_keep_the_time_their_files_have() {
    use std::time::{Duration, UNIX_EPOCH};
    if !needs("curl", "an HTTP client to drive the web face") {
        return;
    }
    let s = Scratch::new();
    let c = &s.client;
    random_file(&c.join("big.bin"), 3 << 20, "kept-big");
    write_tree(c, &[("tree/a.txt", "a"), ("tree/sub/b.txt", "b")]);
    let times = [
        ("big.bin", 1_577_934_245),
        ("tree/a.txt", 1_300_000_000),
        ("tree/sub/b.txt", 1_400_000_123),
    ];
    for (name, secs) in times {
        set_mtime(&c.join(name), secs);
    }
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(c, &["put", "big.bin", "tree"]));
    let on_hub = |name: &str| {
        let m = std::fs::metadata(s.share.join(name)).unwrap();
        m.modified().unwrap().duration_since(UNIX_EPOCH).unwrap()
    };
    for (name, secs) in times {
        assert_eq!(on_hub(name), Duration::from_secs(secs), "{name}");
    }
    let listed = json(&hub.troca(c, &["--json", "ls", "tree/"]));
    let a = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "tree/a.txt");
    assert!(
        a.is_some_and(|a| a["modified"].as_str().unwrap().starts_with("2011-03-13")),
        "{listed}"
    );

    let web = hub.web.clone().unwrap();
    random_file(&c.join("web-big.bin"), 2 << 20, "kept-web");
    for (file, ms) in [
        ("big.bin", 1_234_567_890_123i64),
        ("web-big.bin", 1_111_111_111_000),
    ] {
        let url = format!("{web}files/web/{file}");
        let header = format!("X-Troca-Modified: {ms}");
        let out = curl(&[
            "-f",
            "-T",
            c.join(file).to_str().unwrap(),
            "-H",
            &header,
            &url,
        ]);
        assert!(out.status.success(), "{out:?}");
        let want = Duration::from_millis(ms as u64);
        assert_eq!(on_hub(&format!("web/{file}")), want, "{file}");
    }
    // A small one, gathered in memory and stored with others, keeps its time too.
    std::fs::write(c.join("small.txt"), "small").unwrap();
    let out = curl(&[
        "-f",
        "-T",
        c.join("small.txt").to_str().unwrap(),
        "-H",
        "X-Troca-Modified: 1000000000000",
        &format!("{web}files/web/small.txt"),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(on_hub("web/small.txt"), Duration::from_secs(1_000_000_000));
}
