//! Tokens and roles: the default policy (anyone may read and add; replacing and deleting need the
//! admin token or the uploader's token), read/write/admin tokens, revocation without a restart,
//! `--read-only`, `--require-token`, and secrets kept out of output.

mod common;
use common::*;
use std::process::Command;

fn token(hub: &Hub, role: &str) -> String {
    let out = Command::new(TROCA)
        .args([
            "token", "create", "--role", role, "--label", role, "--state",
        ])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let stdout = ok(&out);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    assert!(lines[0].starts_with("troca_"));
    lines[0].to_owned()
}

#[test]
fn roles_decide_who_may_upload_replace_and_delete() {
    let s = Scratch::new();
    std::fs::write(s.share.join("theirs.txt"), "theirs").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let (read, w1, w2) = (
        token(&hub, "read"),
        token(&hub, "write"),
        token(&hub, "write"),
    );
    std::fs::write(s.client.join("f.txt"), "f").unwrap();

    // read: may read, may not upload.
    ok(&hub.troca_with(&s.client, &read, &["ls"]));
    let err = fails(&hub.troca_with(&s.client, &read, &["put", "f.txt"]), 1);
    assert!(err.contains("read token cannot upload"), "{err}");
    let status = ok(&hub.troca_with(&s.client, &read, &["status"]));
    assert!(
        status.contains("you          read token (list and download)\nroom         none: you may not upload here"),
        "{status}"
    );

    // write: uploads, and may delete what it uploaded, not another's file.
    ok(&hub.troca_with(&s.client, &w1, &["put", "f.txt", "--as", "mine.txt"]));
    let err = fails(
        &hub.troca_as(&s.client, "w2", Some(&w2), &["rm", "mine.txt"]),
        1,
    );
    assert!(
        err.contains("needs the admin token or the token that uploaded it"),
        "{err}"
    );
    fails(&hub.troca_with(&s.client, &w1, &["rm", "theirs.txt"]), 1);
    fails(
        &hub.troca_as(
            &s.client,
            "w2",
            Some(&w2),
            &["put", "--force", "f.txt", "--as", "mine.txt"],
        ),
        1,
    );
    ok(&hub.troca_with(
        &s.client,
        &w1,
        &["put", "--force", "f.txt", "--as", "mine.txt"],
    ));
    ok(&hub.troca_with(&s.client, &w1, &["rm", "mine.txt"]));

    // Anonymous: may add, may not delete another's upload (its own, by its owner key, it may).
    ok(&hub.troca(&s.client, &["put", "f.txt", "--as", "anon.txt"]));
    fails(
        &hub.troca_as(&s.client, "stranger", None, &["rm", "anon.txt"]),
        1,
    );

    // admin: anything.
    let admin = hub.admin_token();
    ok(&hub.troca_with(&s.client, &admin, &["rm", "theirs.txt", "anon.txt"]));
    assert_eq!(files_under(&s.share), Vec::<String>::new());
}

#[test]
fn a_revoked_token_is_refused_without_a_restart_and_wrong_tokens_are_recorded() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let w = token(&hub, "write");
    ok(&hub.troca_with(&s.client, &w, &["ls"]));
    let list = ok(&Command::new(TROCA)
        .args(["--json", "token", "list", "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap());
    assert!(!list.contains(&w), "secrets are never listed");
    let id = serde_json::from_str::<serde_json::Value>(&list).unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    ok(&Command::new(TROCA)
        .args(["token", "revoke", &id.to_string(), "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap());
    let err = fails(&hub.troca_with(&s.client, &w, &["ls"]), 1);
    assert!(err.contains("token is not valid"), "{err}");
    let err = fails(&hub.troca_with(&s.client, "troca_made_up", &["ls"]), 1);
    assert!(err.contains("token is not valid"), "{err}");

    let hist = json(&hub.troca(&s.client, &["--json", "history", "--op", "hello"]));
    assert_eq!(hist.as_array().unwrap().len(), 2, "{hist}");
    assert!(hist.as_array().unwrap().iter().all(|h| h["ok"] == false));
    let text = serde_json::to_string(&hist).unwrap();
    assert!(
        !text.contains(&w) && !text.contains("troca_made_up"),
        "tokens never reach the history"
    );
}

/// A token made with `--expires` works until then and is refused after, without a restart;
/// `token list` says which have expired.
#[test]
fn a_token_is_refused_once_it_expires() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let state = hub.dir.join(".troca");
    let create = |lifetime: &str| {
        let out = Command::new(TROCA)
            .args(["token", "create", "--role", "read", "--expires", lifetime])
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains("accepted until"), "{err}");
        ok(&out).trim().to_owned()
    };
    let (day, second) = (create("1d"), create("1s"));
    ok(&hub.troca_with(&s.client, &day, &["ls"]));
    let states = || {
        let list = ok(&Command::new(TROCA)
            .args(["--json", "token", "list", "--state"])
            .arg(&state)
            .output()
            .unwrap());
        let rows: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
        rows.iter()
            .map(|r| r["state"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // The one-second token's expiry is the event waited for.
    let mut tries = 0;
    while states() != ["active", "expired"] {
        tries += 1;
        assert!(tries < 600, "{:?}", states());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = fails(&hub.troca_with(&s.client, &second, &["ls"]), 1);
    assert!(err.contains("wrong, revoked or expired"), "{err}");
    ok(&hub.troca_with(&s.client, &day, &["ls"]));
    let table = ok(&Command::new(TROCA)
        .args(["token", "list", "--state"])
        .arg(&state)
        .output()
        .unwrap());
    assert!(
        table.contains("EXPIRES") && table.contains("expired"),
        "{table}"
    );
    let bad = Command::new(TROCA)
        .args(["token", "create", "--role", "read", "--expires", "0s"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("above zero"));
}

#[test]
fn read_only_refuses_every_write_even_the_admins() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &["--read-only"]);
    let admin = hub.admin_token();
    std::fs::write(s.client.join("b.txt"), "b").unwrap();
    let err = fails(&hub.troca_with(&s.client, &admin, &["put", "b.txt"]), 1);
    assert!(err.contains("read-only"), "{err}");
    fails(&hub.troca_with(&s.client, &admin, &["rm", "a.txt"]), 1);
    ok(&hub.troca(&s.client, &["get", "a.txt"]));
    assert_eq!(files_under(&s.share), ["a.txt"]);
    let status = json(&hub.troca_with(&s.client, &admin, &["--json", "status"]));
    assert_eq!(status["you"]["role"], "admin", "{status}");
    assert_eq!(status["you"]["may_upload"], false, "{status}");
    assert_eq!(status["you"]["room"], 0, "{status}");
}

#[test]
fn require_token_refuses_clients_without_one() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &["--require-token"]);
    let err = fails(&hub.troca(&s.client, &["ls"]), 1);
    assert!(err.contains("requires a token"), "{err}");
    let r = token(&hub, "read");
    assert!(ok(&hub.troca_with(&s.client, &r, &["ls"])).contains("a.txt"));
    // A token file works as well as the environment.
    let file = s.tmp.path().join("tok");
    std::fs::write(&file, format!("{r}\n")).unwrap();
    ok(&hub.troca(
        &s.client,
        &["--token-file", file.to_str().unwrap(), "get", "a.txt"],
    ));
}

#[test]
fn the_admin_token_is_private_and_never_printed() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let path = hub.dir.join(".troca/admin.token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let admin = hub.admin_token();
    ok(&hub.troca_with(&s.client, &admin, &["ls"]));
    let (_, stderr) = hub.terminate();
    assert!(stderr.contains("admin.token"), "says where it is: {stderr}");
    assert!(!stderr.contains(&admin), "never the token itself");
}

/// `curl` of the hub's web face with a token (as a header read from a file, so it stays out of
/// the arguments): the status and the body.
fn web(token_header: &std::path::Path, args: &[&str]) -> (String, Vec<u8>) {
    let mut all = vec!["-s", "-o", "-", "-w", "\n%{http_code}", "-H"];
    let header = format!("@{}", token_header.display());
    all.push(&header);
    all.extend_from_slice(args);
    let out = Command::new("curl").args(&all).output().unwrap();
    let mut body = out.stdout;
    let at = body.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8(body.split_off(at)).unwrap();
    (status.trim().to_owned(), body)
}

#[test]
fn a_token_held_to_a_folder_reaches_only_that_folder_on_every_face() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("clients/acme/a.txt", "a"),
            ("clients/acme0/c.txt", "cc"),
            ("clients/bob/b.txt", "b"),
            ("top.txt", "t"),
        ],
    );
    let hub = Hub::start(&s.share, &["--require-token"]);
    let (acme, err) = folder_token(&hub, "write", "/clients/acme/");
    assert!(err.contains("for clients/acme/"), "{err}");
    let troca = |args: &[&str]| hub.troca_with(&s.client, &acme, args);
    let status = ok(&troca(&["status"]));
    assert!(
        status.contains("you          write token, held to clients/acme/\n"),
        "{status}"
    );
    // Its status counts the folder's files, not the share's.
    let counted = json(&troca(&["--json", "status"]));
    assert_eq!(
        (counted["files"].as_u64(), counted["bytes"].as_u64()),
        (Some(1), Some(1))
    );
    let admin_status = json(&hub.troca_with(&s.client, &hub.admin_token(), &["--json", "status"]));
    assert_eq!(admin_status["files"], 4, "{admin_status}");

    // Native: listings, searches and reads see only the folder.
    let listed = ok(&troca(&["ls"]));
    assert!(listed.contains("clients/acme/a.txt"), "{listed}");
    assert!(
        !listed.contains("bob") && !listed.contains("top.txt"),
        "{listed}"
    );
    assert!(ok(&troca(&["ls", "clients/bob/"])).is_empty());
    let found = ok(&troca(&["find", "txt"]));
    assert!(
        found.contains("clients/acme/a.txt") && !found.contains("b.txt"),
        "{found}"
    );
    let err = fails(&troca(&["get", "clients/bob/b.txt", "-o", "-"]), 1);
    assert!(err.contains("outside clients/acme/"), "{err}");
    assert_eq!(ok(&troca(&["get", "clients/acme/a.txt", "-o", "-"])), "a");

    // Writes: in the folder by the token's role, nowhere else, and never the folder itself.
    std::fs::write(s.client.join("f.txt"), "f").unwrap();
    ok(&troca(&["put", "f.txt", "--to", "clients/acme"]));
    let err = fails(&troca(&["put", "f.txt"]), 1);
    assert!(err.contains("outside clients/acme/"), "{err}");
    let err = fails(&troca(&["put", "f.txt", "--as", "clients/bob/f.txt"]), 1);
    assert!(err.contains("outside clients/acme/"), "{err}");
    let err = fails(&troca(&["mv", "clients/acme/f.txt", "clients/f.txt"]), 1);
    assert!(err.contains("outside clients/acme/"), "{err}");
    ok(&troca(&["mv", "clients/acme/f.txt", "clients/acme/g.txt"]));
    ok(&troca(&["mkdir", "clients/acme/sub"]));
    assert!(fails(&troca(&["mkdir", "elsewhere"]), 1).contains("outside"));
    assert!(fails(&troca(&["rm", "-r", "clients/acme"]), 1).contains("outside"));
    assert!(fails(&troca(&["rm", "top.txt"]), 1).contains("outside"));
    ok(&troca(&["rm", "clients/acme/g.txt"]));
    assert!(s.share.join("top.txt").exists() && s.share.join("clients/bob/b.txt").exists());

    // Others' requests show only where they touch the folder.
    let admin = hub.admin_token();
    ok(&hub.troca_with(&s.client, &admin, &["get", "top.txt", "-o", "-"]));
    let history = json(&hub.troca_with(&s.client, &acme, &["--json", "history"]));
    let targets: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert!(targets.contains(&"clients/acme/a.txt"), "{targets:?}");
    assert!(
        targets.iter().all(|t| t.starts_with("clients/acme")),
        "{targets:?}"
    );

    // The web face and WebDAV, with the token as a Bearer header.
    if !needs("curl", "an HTTP client") {
        return;
    }
    let header = s.tmp.path().join("auth");
    std::fs::write(&header, format!("Authorization: Bearer {acme}\n")).unwrap();
    let web_url = hub.web.clone().unwrap();
    let at = |path: &str| format!("{web_url}{path}");
    let (code, body) = web(&header, &[&at("files/clients/acme/a.txt")]);
    assert_eq!((code.as_str(), body.as_slice()), ("200", &b"a"[..]));
    assert_eq!(web(&header, &[&at("files/clients/bob/b.txt")]).0, "403");
    assert_eq!(web(&header, &[&at("files/top.txt")]).0, "403");
    let me = |prefix: &str| {
        let (code, body) = web(&header, &[&at(&format!("api/me?prefix={prefix}"))]);
        assert_eq!(code, "200");
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let (root, inside) = (me(""), me("clients/acme/"));
    assert_eq!(root["folder"], "clients/acme");
    assert_eq!(
        (root["role"].as_str(), root["may_upload"].as_bool()),
        (Some("write"), Some(false))
    );
    assert_eq!(inside["may_upload"], true);
    let (code, body) = web(&header, &[&at("api/files?prefix=")]);
    let body = String::from_utf8(body).unwrap();
    assert_eq!(code, "200");
    assert!(
        body.contains("clients/acme/a.txt") && !body.contains("b.txt"),
        "{body}"
    );
    let (code, body) = web(&header, &[&at("files/clients/")]);
    let page = String::from_utf8_lossy(&body);
    assert!(
        code == "200" && page.contains("acme") && !page.contains("bob"),
        "{page}"
    );
    let (code, zip) = web(&header, &[&at("files/clients/?zip")]);
    let has = |name: &[u8]| zip.windows(name.len()).any(|w| w == name);
    assert!(
        code == "200" && has(b"clients/acme/a.txt") && !has(b"b.txt"),
        "{code}"
    );
    assert_eq!(
        web(
            &header,
            &["-X", "PUT", "--data-binary", "x", &at("files/top2.txt")]
        )
        .0,
        "403"
    );
    let (code, body) = web(
        &header,
        &["-X", "PROPFIND", "-H", "Depth: 1", &at("dav/clients/")],
    );
    let body = String::from_utf8_lossy(&body);
    assert!(
        code == "207" && body.contains("acme") && !body.contains("bob"),
        "{body}"
    );
    assert_eq!(web(&header, &[&at("dav/clients/bob/b.txt")]).0, "403");
    assert_eq!(
        web(&header, &["-X", "PROPFIND", &at("dav/top.txt")]).0,
        "403"
    );
    let lock =
        "<?xml version=\"1.0\"?><lockinfo xmlns=\"DAV:\"><lockscope><exclusive/></lockscope>\
                <locktype><write/></locktype></lockinfo>";
    let locked = web(&header, &["-X", "LOCK", "--data", lock, &at("dav/top.txt")]).0;
    assert_eq!(locked, "403");
    ok(&hub.troca_with(&s.client, &admin, &["rm", "top.txt"]));
}

/// A token held to a folder searches only that folder: 5,001 matches elsewhere, sorting before
/// it, neither crowd out its own nor make its answer look cut.
#[test]
fn a_search_by_a_token_held_to_a_folder_looks_only_in_it() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.share.join("archive")).unwrap();
    for i in 0..5_001 {
        std::fs::write(s.share.join(format!("archive/x-{i:05}.txt")), "").unwrap();
    }
    write_tree(
        &s.share,
        &[("clients/acme/x.txt", "x"), ("clients/x.txt", "")],
    );
    let hub = Hub::start(&s.share, &[]);
    let (acme, _) = folder_token(&hub, "read", "clients/acme");
    let names = |out: &std::process::Output| -> Vec<String> {
        let rows = json(out);
        let rows = rows.as_array().unwrap().iter();
        rows.map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let out = hub.troca_with(&s.client, &acme, &["--json", "find", "x"]);
    assert_eq!(names(&out), ["clients/acme/x.txt"]);
    let out = hub.troca_with(&s.client, &acme, &["find", "x"]);
    assert!(ok(&out).ends_with("clients/acme/x.txt\n"));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The folder itself is found, as it is listed; the one holding it is not.
    let out = hub.troca_with(&s.client, &acme, &["--json", "find", "c"]);
    assert_eq!(names(&out), ["clients/acme/"]);
    let anyone = ok(&hub.troca(&s.client, &["find", "x"]));
    assert_eq!(anyone.lines().count(), 5_000, "the share's first 5,000");
}

#[test]
fn a_tokens_quota_bounds_what_its_uploads_keep_on_every_face_and_deleting_frees_room() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let out = Command::new(TROCA)
        .args(["token", "create", "--role", "write", "--label", "q"])
        .args(["--quota", "1M", "--quota-files", "3", "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let q = ok(&out).trim().to_owned();
    let c = &s.client;
    random_file(&c.join("a.bin"), 600 << 10, "a");
    random_file(&c.join("b.bin"), 600 << 10, "b");
    random_file(&c.join("small.bin"), 300 << 10, "s");

    ok(&hub.troca_with(c, &q, &["put", "a.bin"]));
    let err = fails(&hub.troca_with(c, &q, &["put", "b.bin"]), 1);
    assert!(
        err.contains("this token may keep 1.0 MiB on the hub and keeps 600.0 KiB"),
        "{err}"
    );
    assert!(!s.share.join("b.bin").exists());
    // Replacing its own file takes only what it adds.
    ok(&hub.troca_with(c, &q, &["put", "--force", "b.bin", "--as", "a.bin"]));
    ok(&hub.troca_with(c, &q, &["put", "small.bin"]));

    // The web face and WebDAV say 507, and write nothing.
    let web = hub.web.clone().unwrap();
    let bearer = format!("Authorization: Bearer {q}");
    let put = |url: &str| {
        let file = c.join("b.bin");
        let args = [
            "-H",
            &bearer,
            "-T",
            file.to_str().unwrap(),
            "-o",
            "/dev/null",
        ];
        ok(&curl(&[&args[..], &["-w", "%{http_code}", url]].concat()))
    };
    assert_eq!(put(&format!("{web}files/web.bin")), "507");
    assert_eq!(put(&format!("{web}dav/dav.bin")), "507");
    assert!(!s.share.join("web.bin").exists() && !s.share.join("dav.bin").exists());

    // Deleting frees room; then the files bound holds a batch of small files to what fits.
    ok(&hub.troca_with(c, &q, &["rm", "a.bin"]));
    assert_eq!(put(&format!("{web}files/web.bin")), "201");
    std::fs::create_dir(c.join("tiny")).unwrap();
    for n in 0..3 {
        std::fs::write(c.join(format!("tiny/{n}.txt")), format!("{n}")).unwrap();
    }
    let err = fails(&hub.troca_with(c, &q, &["put", "tiny"]), 1);
    assert!(
        err.contains("may keep 3 files on the hub and keeps 3 files"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(s.share.join("tiny")).unwrap().count(), 1);

    // `token list` says what it keeps, against its quota.
    let out = Command::new(TROCA)
        .args(["--json", "token", "list", "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let listed = json(&out);
    let row = &listed[0];
    assert_eq!(row["quota"]["bytes"], 1 << 20);
    assert_eq!(row["used"]["files"], 3);
    assert_eq!(row["used"]["bytes"], (600 << 10) + (300 << 10) + 1);
    // The page learns the same from /api/me.
    let me = curl(&["-H", &bearer, &format!("{web}api/me")]);
    let me: serde_json::Value = serde_json::from_slice(&me.stdout).unwrap();
    assert_eq!(me["quota"]["bytes"], 1 << 20);
    assert_eq!(me["quota"]["used_files"], 3);
    assert_eq!(
        me["room"],
        (1 << 20) - (900 << 10) - 1,
        "the quota's rest: {me}"
    );
    // `troca status` says the same, for people and for scripts.
    let status = ok(&hub.troca_with(c, &q, &["status"]));
    assert!(status.contains("you          write token\n"), "{status}");
    assert!(
        status.contains("room         124.0 KiB free for your uploads"),
        "{status}"
    );
    assert!(
        status.contains("quota        your token keeps 900.0 KiB of 1.0 MiB, 3 of 3 files"),
        "{status}"
    );
    let status = json(&hub.troca_with(c, &q, &["--json", "status"]));
    assert_eq!(status["you"]["room"], me["room"], "{status}");
    assert_eq!(status["you"]["quota"], me["quota"], "{status}");
    assert_eq!(status["you"]["role"], "write");
    let me = curl(&[&format!("{web}api/me")]);
    let me: serde_json::Value = serde_json::from_slice(&me.stdout).unwrap();
    assert!(me["quota"].is_null(), "{me}");
    assert!(
        me["room"].as_u64().unwrap() > 1 << 20,
        "the disk's room: {me}"
    );

    // A quota changed on the hub's machine holds from the token's next check.
    let out = Command::new(TROCA)
        .args([
            "token",
            "quota",
            &row["id"].to_string(),
            "--quota-files",
            "0",
            "--state",
        ])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("of 1.0 MiB"));
    ok(&hub.troca_with(c, &q, &["put", "tiny"]));
    assert_eq!(std::fs::read_dir(s.share.join("tiny")).unwrap().count(), 3);
}

/// What the page asks `/api/me` for: the names under a folder its visitor may change. They
/// come a page at a time however many it uploaded (here by token and by owner key at once, so
/// each name has two records and pages end between a name's two), and only while each file is
/// what its upload left: a file edited by hand shows no Delete the hub would then refuse.
#[test]
fn the_page_learns_every_file_its_visitor_may_change_and_no_other() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let w = token(&hub, "write");
    let c = &s.client;
    std::fs::create_dir(c.join("many")).unwrap();
    let names: Vec<String> = (0..1500).map(|i| format!("many/f{i:04}.txt")).collect();
    for name in &names {
        std::fs::write(c.join(name), name).unwrap();
    }
    ok(&hub.troca_with(c, &w, &["put", "many"]));
    // One name recorded by token alone, first in order: pages then end between a name's two.
    let web = hub.web.clone().unwrap();
    let bearer = format!("Authorization: Bearer {w}");
    let put = curl(&["-H", &bearer, "-T", "-", &format!("{web}files/many/a.txt")]);
    ok(&put);
    std::fs::write(s.share.join("many/theirs.txt"), "put there by hand").unwrap();
    // The owner key the client sent beside its token.
    let keys = std::fs::read_dir(hub.client_data().join("troca/owner-keys")).unwrap();
    let keys: Vec<_> = keys.map(|e| e.unwrap().path()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = std::fs::read_to_string(&keys[0]).unwrap().trim().to_owned();
    let me = |headers: &[String], prefix: &str| -> serde_json::Value {
        let mut args: Vec<&str> = Vec::new();
        for h in headers {
            args.extend(["-H", h]);
        }
        let url = format!("{web}api/me?prefix={prefix}");
        args.push(&url);
        let out = curl(&args);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let owned = |me: &serde_json::Value| -> Vec<String> {
        let all = me["owned"].as_array().unwrap().iter();
        all.map(|n| n.as_str().unwrap().to_owned()).collect()
    };
    let both = [bearer.clone(), format!("X-Troca-Owner: {key}")];
    let by_key = names.clone();
    let mut names = names;
    names.insert(0, "many/a.txt".into());
    for (headers, expected) in [
        (&both[..], &names),
        (&both[..1], &names),
        (&both[1..], &by_key),
    ] {
        let got = me(headers, "many/");
        assert_eq!(got["may_upload"], true);
        assert_eq!(got["may_change_all"], false);
        assert_eq!(&owned(&got), expected, "{headers:?}");
    }
    // A folder's share of them, and none of another's.
    let tens = owned(&me(&both, "many/f00"));
    assert_eq!(tens, by_key[..100], "many/f00");
    assert!(owned(&me(&both, "other/")).is_empty());

    // Edited by hand, a file is no longer its uploader's, on the page as on every face.
    std::fs::write(s.share.join("many/f0007.txt"), "edited by hand").unwrap();
    let mut left = names.clone();
    left.retain(|n| n != "many/f0007.txt");
    assert_eq!(owned(&me(&both, "many/")), left);
    let err = fails(&hub.troca_with(c, &w, &["rm", "many/f0007.txt"]), 1);
    assert!(err.contains("the token that uploaded it"), "{err}");
    // An admin may change everything, and is sent no list.
    let admin = me(
        &[format!("Authorization: Bearer {}", hub.admin_token())],
        "",
    );
    assert_eq!(admin["may_change_all"], true);
    assert!(owned(&admin).is_empty());
}

/// The shared folder is also a folder its users edit. A file uploaded with a token and then
/// deleted by hand no longer counts against the token's quota, and whoever uploaded a file (by
/// token or by owner key) gets no rights over one put in its place, or changed, by other means.
#[test]
fn files_changed_outside_the_hub_are_no_longer_their_uploaders() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let out = Command::new(TROCA)
        .args(["token", "create", "--role", "write", "--label", "q"])
        .args(["--quota-files", "2", "--state"])
        .arg(hub.dir.join(".troca"))
        .output()
        .unwrap();
    let q = ok(&out).trim().to_owned();
    let c = &s.client;
    for name in ["a.txt", "b.txt", "c.txt", "d.txt", "mine.txt"] {
        std::fs::write(c.join(name), name).unwrap();
    }
    ok(&hub.troca_with(c, &q, &["put", "a.txt", "b.txt"]));
    let err = fails(&hub.troca_with(c, &q, &["put", "c.txt"]), 1);
    assert!(err.contains("may keep 2 files"), "{err}");

    // Deleted by hand: the next upload finds the room it left.
    std::fs::remove_file(s.share.join("a.txt")).unwrap();
    ok(&hub.troca_with(c, &q, &["put", "c.txt"]));
    let err = fails(&hub.troca_with(c, &q, &["put", "d.txt"]), 1);
    assert!(err.contains("keeps 2 files"), "b.txt and c.txt: {err}");

    // Another file put in b.txt's place by hand is not the token's.
    std::fs::remove_file(s.share.join("b.txt")).unwrap();
    std::fs::write(s.share.join("b.txt"), "someone else's").unwrap();
    set_mtime(&s.share.join("b.txt"), 1_000_000_000);
    let err = fails(&hub.troca_with(c, &q, &["rm", "b.txt"]), 1);
    assert!(
        err.contains("needs the admin token or the token that uploaded it"),
        "{err}"
    );
    fails(
        &hub.troca_with(c, &q, &["put", "--force", "d.txt", "--as", "b.txt"]),
        1,
    );
    assert_eq!(
        std::fs::read_to_string(s.share.join("b.txt")).unwrap(),
        "someone else's"
    );
    // Nor does it count against its quota any more.
    ok(&hub.troca_with(c, &q, &["put", "d.txt"]));

    // The same for an upload without a token, owned by its client's owner key: its own,
    // untouched, it may delete; once changed by hand, not.
    ok(&hub.troca(c, &["put", "mine.txt", "--as", "anon.txt"]));
    ok(&hub.troca(c, &["put", "mine.txt"]));
    ok(&hub.troca(c, &["rm", "mine.txt"]));
    std::fs::write(s.share.join("anon.txt"), "edited by hand").unwrap();
    let err = fails(&hub.troca(c, &["rm", "anon.txt"]), 1);
    assert!(err.contains("needs a token"), "{err}");
    assert!(s.share.join("anon.txt").exists());

    // `token list` counts what the token's uploads still keep: c.txt and d.txt.
    let listed = json(
        &Command::new(TROCA)
            .args(["--json", "token", "list", "--state"])
            .arg(hub.dir.join(".troca"))
            .output()
            .unwrap(),
    );
    assert_eq!(listed[0]["used"]["files"], 2, "{listed}");
    assert_eq!(listed[0]["used"]["bytes"], 10, "{listed}");
}

/// A folder's page marks the rows its visitor may rename or delete, as the hub decides them:
/// an owner key's own files, and the folders all of whose files are its own (an empty one
/// holds nobody's); everything for the admin; never the folder a token is held to. Each mark
/// is checked against the hub: what is marked deletes, what is not is refused.
#[test]
fn a_folder_page_marks_what_its_visitor_may_change_as_the_hub_decides() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let key = format!("X-Troca-Owner: {}", "7".repeat(64));
    for name in ["mine/a.txt", "mine/deep/b.txt", "mixed/m.txt", "k.txt"] {
        ok(&curl(&[
            "-f",
            "-H",
            &key,
            "-T",
            "-",
            &format!("{web}files/{name}"),
        ]));
    }
    write_tree(
        &s.share,
        &[("mixed/theirs.txt", "by hand"), ("theirs.txt", "by hand")],
    );
    std::fs::create_dir(s.share.join("empty")).unwrap();
    let marked = |headers: &[&str]| -> Vec<String> {
        let (rows, _) = folder_page(&hub, "", None, headers);
        rows.into_iter()
            .filter(|r| r.mine)
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(marked(&[&key]), ["empty/", "mine/", "k.txt"]);
    assert_eq!(
        marked(&[]),
        ["empty/"],
        "without the key, only what is nobody's"
    );
    let admin = format!("Authorization: Bearer {}", hub.admin_token());
    let everything = ["empty/", "mine/", "mixed/", "k.txt", "theirs.txt"];
    assert_eq!(marked(&[&admin]), everything);
    // Inside a folder, its files one by one.
    let (rows, _) = folder_page(&hub, "mixed/", None, &[&key]);
    let mine: Vec<(&str, bool)> = rows.iter().map(|r| (r.name.as_str(), r.mine)).collect();
    assert_eq!(mine, [("mixed/m.txt", true), ("mixed/theirs.txt", false)]);

    // A search marks the files the same way; a folder only for the admin.
    let found = |headers: &[&str]| -> Vec<(String, bool)> {
        let mut args = vec!["-f"];
        for h in headers {
            args.extend(["-H", h]);
        }
        let url = format!("{web}api/find?q=t");
        args.push(&url);
        let rows: serde_json::Value = serde_json::from_slice(&curl(&args).stdout).unwrap();
        let rows = rows.as_array().unwrap().iter();
        rows.map(|r| (r["name"].as_str().unwrap().into(), r["mine"] == true))
            .collect()
    };
    let by_key = found(&[&key]);
    let want = [
        ("empty/", false),
        ("k.txt", true),
        ("mine/a.txt", true),
        ("mine/deep/b.txt", true),
        ("mixed/m.txt", true),
        ("mixed/theirs.txt", false),
        ("theirs.txt", false),
    ];
    let want: Vec<(String, bool)> = want.iter().map(|(n, m)| (n.to_string(), *m)).collect();
    assert_eq!(by_key, want);
    assert!(found(&[]).iter().all(|(_, m)| !m));
    assert!(found(&[&admin]).iter().all(|(_, m)| *m));

    // A token held to mine/ sees the way there, which it may not move or delete.
    let (held, _) = folder_token(&hub, "write", "mine");
    let bearer = format!("Authorization: Bearer {held}");
    let (rows, _) = folder_page(&hub, "", None, &[&bearer]);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].name.as_str(), rows[0].mine), ("mine/", false));

    // The hub agrees: what is unmarked is refused, what is marked goes.
    let delete = |name: &str| -> String {
        let url = format!("{web}files/{name}?recursive=1");
        let out = curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            "-H",
            &key,
            &url,
        ]);
        ok(&out)
    };
    assert_eq!(delete("mixed/"), "403");
    assert_eq!(delete("theirs.txt"), "403");
    for name in ["empty/", "mine/", "k.txt"] {
        assert_eq!(delete(name), "204", "{name}");
    }
    assert!(!s.share.join("mine").exists() && s.share.join("mixed/m.txt").exists());
}

/// `--hide` keeps names out of sight and reach on every face, admin included: not listed,
/// found, zipped or read, never written, moved or deleted, and a folder that holds one is not
/// moved or deleted whole; what is on disk stays as it was.
#[test]
fn hidden_names_are_out_of_sight_and_reach_on_every_face() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            (".env", "SECRET=1"),
            (".ssh/id_ed25519", "private"),
            ("proj/.git/config", "[core]"),
            ("proj/main.rs", "fn main() {}"),
            ("certs/site.key", "key"),
            ("certs/site.pem", "pem"),
            ("report.pdf", "report"),
        ],
    );
    let bad = Command::new(TROCA)
        .args(["serve", "--listen", "127.0.0.1:0", "--hide", "a/b"])
        .arg(&s.share)
        .output()
        .unwrap();
    let err = fails(&bad, 2);
    assert!(err.contains("'a/b'") && err.contains("one name"), "{err}");

    // A link to a hidden folder, and one to a hidden file: what they lead to stays hidden.
    std::os::unix::fs::symlink(".ssh", s.share.join("keys")).unwrap();
    std::os::unix::fs::symlink("certs/site.key", s.share.join("cert.txt")).unwrap();
    let hub = Hub::start(&s.share, &["--hide", ".*", "--hide", "*.key"]);
    hub.daemon
        .wait_for_stderr("hiding names like \".*\", \"*.key\" (and what such folders hold)");
    let admin = hub.admin_token();
    let troca = |args: &[&str]| hub.troca_with(&s.client, &admin, args);
    let out_of_reach = |out: &std::process::Output| {
        let err = fails(out, 1);
        assert!(
            err.contains("out of reach: this hub hides names like"),
            "{err}"
        );
        assert!(!err.contains("--token-file"), "no token helps: {err}");
    };

    // Listed and found: none of them, at any depth.
    let listed = ok(&troca(&["ls"]));
    for shown in ["proj/main.rs", "certs/site.pem", "report.pdf"] {
        assert!(listed.contains(shown), "{shown} in {listed}");
    }
    let through_link = ok(&troca(&["ls", "keys/"]));
    assert!(!through_link.contains("id_ed25519"), "{through_link}");
    // Nor the links that lead to them.
    for hidden in [".env", ".ssh", ".git", "site.key", "keys", "cert.txt"] {
        assert!(!listed.contains(hidden), "{hidden} in {listed}");
        let found = troca(&["find", hidden.trim_start_matches('.')]);
        assert!(!String::from_utf8_lossy(&found.stdout).contains(hidden));
    }

    // Counted: the hub's totals are those of what it shows.
    let status = json(&troca(&["--json", "status"]));
    let files = json(&troca(&["--json", "ls"]));
    let files = files.as_array().unwrap();
    let bytes: u64 = files.iter().map(|f| f["size"].as_u64().unwrap()).sum();
    assert_eq!(status["files"], files.len(), "{status} {files:?}");
    assert_eq!(status["bytes"], bytes, "{status} {files:?}");

    // Read, written, moved, deleted, shared: refused alike, whether the name exists or not.
    for args in [
        &["get", ".env", "-o", "-"][..],
        &["get", ".ssh/id_ed25519", "-o", "-"],
        &["get", "proj/.git/config", "-o", "-"],
        &["get", "certs/site.key", "-o", "-"],
        &["get", ".nothing", "-o", "-"],
        &["get", "keys/id_ed25519", "-o", "-"],
        &["get", "cert.txt", "-o", "-"],
        &["mkdir", "photos/.thumbs"],
        &["mv", "report.pdf", ".report.pdf"],
        &["mv", ".env", "env.txt"],
        &["rm", ".env"],
        &["rm", "-r", ".ssh/"],
        &["share", ".env"],
    ] {
        out_of_reach(&troca(args));
    }
    std::fs::write(s.client.join("new.key"), "k").unwrap();
    out_of_reach(&troca(&["put", "new.key"]));
    out_of_reach(&troca(&["put", "new.key", "--as", ".hidden.pdf"]));
    let err = fails(&troca(&["rm", "-r", "proj/"]), 1);
    assert!(err.contains("would take files this hub hides"), "{err}");
    let err = fails(&troca(&["mv", "proj", "project"]), 1);
    assert!(err.contains("would take files this hub hides"), "{err}");
    // A folder going up: what is not hidden arrives; what is, is named and refused.
    write_tree(
        &s.client,
        &[("up/a.txt", "a"), ("up/.b", "b"), ("up/c.key", "c")],
    );
    let err = fails(&troca(&["put", "up/"]), 1);
    assert!(err.contains("out of reach"), "{err}");
    assert!(
        err.contains("1 more file refused for the same reason (names this hub hides)"),
        "said once, then counted: {err}"
    );
    assert!(s.share.join("up/a.txt").exists());
    assert!(!s.share.join("up/.b").exists() && !s.share.join("up/c.key").exists());
    // A folder coming down brings what is shown only.
    ok(&troca(&["get", "proj", "-o", "back"]));
    assert!(s.client.join("back/proj/main.rs").exists());
    assert!(!s.client.join("back/proj/.git").exists());

    // The web face and WebDAV, anonymous and with the admin token.
    let web = hub.web.clone().unwrap();
    let bearer = format!("Authorization: Bearer {admin}");
    let code = |args: &[&str]| -> String {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}", "-H", &bearer];
        all.extend_from_slice(args);
        ok(&curl(&all))
    };
    for url in [
        "keys/id_ed25519",
        "cert.txt",
        ".env",
        ".ssh/",
        ".ssh/id_ed25519",
        "certs/site.key",
        "proj/.git/",
    ] {
        assert_eq!(code(&[&format!("{web}files/{url}")]), "403", "{url}");
        assert_eq!(code(&[&format!("{web}dav/{url}")]), "403", "dav/{url}");
    }
    assert_eq!(
        code(&["-T", "/dev/null", &format!("{web}files/x/.new")]),
        "403"
    );
    assert_eq!(
        code(&["-T", "/dev/null", &format!("{web}dav/new.key")]),
        "403"
    );
    let refused = ok(&curl(&[&format!("{web}files/.env")]));
    assert!(refused.contains("\"error\":\"hidden\""), "{refused}");
    assert!(!refused.contains("Bearer"), "no token helps: {refused}");
    let dest = format!("Destination: {web}dav/.report.pdf");
    assert_eq!(
        code(&["-X", "MOVE", "-H", &dest, &format!("{web}dav/report.pdf")]),
        "403"
    );
    let text = |args: &[&str]| -> String {
        let mut all = vec!["-H", &bearer];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&curl(&all).stdout).into_owned()
    };
    let shown = [
        text(&[&format!("{web}api/files")]),
        text(&[&format!("{web}api/find?q=e")]),
        text(&[&format!("{web}files/proj/")]),
        text(&[&web]),
        text(&[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            &format!("{web}dav/proj/"),
        ]),
        text(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{web}dav/")]),
        text(&[&format!("{web}files/proj/?zip")]),
        text(&[&format!("{web}files/?zip")]),
    ];
    for (i, body) in shown.iter().enumerate() {
        assert!(
            body.contains("main.rs") || body.contains("report.pdf"),
            "{i}: {body}"
        );
        for hidden in [".env", ".ssh", ".git", "site.key", "SECRET"] {
            assert!(!body.contains(hidden), "{i}: {hidden} in {body}");
        }
    }

    // A link that leads into a hidden folder shows it empty, on every face.
    for body in [
        text(&[
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            &format!("{web}dav/keys/"),
        ]),
        text(&[&format!("{web}files/keys/")]),
        text(&[&format!("{web}api/files?prefix=keys/")]),
    ] {
        assert!(!body.contains("id_ed25519"), "{body}");
    }

    // On disk, nothing moved.
    assert_eq!(
        std::fs::read_to_string(s.share.join(".env")).unwrap(),
        "SECRET=1"
    );
    assert!(s.share.join("proj/.git/config").exists() && s.share.join("report.pdf").exists());
    assert!(s.share.join(".ssh/id_ed25519").exists());
}

/// Every token a hub refuses, on every face, is one warning on its log with the client's
/// address and never the token, which fail2ban's filter in `contrib/` picks up.
#[test]
fn refused_tokens_are_logged_with_their_address_for_fail2ban() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let wrong = [
        "troca_wrongnative",
        "troca_wrongweb",
        "troca_wrongdav",
        "troca_nolink",
    ];
    fails(&hub.troca_with(&s.client, wrong[0], &["ls"]), 1);
    let code = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        ok(&curl(&all))
    };
    let bearer = format!("Authorization: Bearer {}", wrong[1]);
    assert_eq!(code(&["-H", &bearer, &format!("{web}api/files")]), "401");
    let basic = format!("me:{}", wrong[2]);
    assert_eq!(code(&["-u", &basic, &format!("{web}dav/")]), "401");
    assert_eq!(code(&[&format!("{web}s/{}/", wrong[3])]), "401");

    let line = "WARN troca_hub::service: refused a token that is not valid, from 127.0.0.1\n";
    let log = loop {
        let said = hub.daemon.wait_for_stderr(line);
        if said.matches(line).count() >= wrong.len() {
            break said;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(log.matches(line).count(), wrong.len(), "{log}");
    for secret in wrong {
        assert!(!log.contains(secret), "{secret} in the log: {log}");
    }

    if !needs(
        "fail2ban-regex",
        "the fail2ban filter in contrib/ is checked on a hub's log",
    ) {
        return;
    }
    let file = s.client.join("troca.log");
    std::fs::write(&file, &log).unwrap();
    let filter = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/fail2ban/filter.d/troca.conf")
        .canonicalize()
        .unwrap();
    // As a file holds them (fail2ban finds each line's time), and as the journal does (the
    // time is the journal's own; the line keeps the hub's).
    for dates in [&[][..], &["-d", "{NONE}"]] {
        let out = Command::new("fail2ban-regex")
            .args(dates)
            .arg(&file)
            .arg(&filter)
            .output()
            .unwrap();
        let report = ok(&out);
        let matched = format!("0 ignored, {} matched", wrong.len());
        assert!(report.contains(&matched), "{dates:?}: {report}");
    }
}
