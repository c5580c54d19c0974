//! Share links: made with a write or admin token on every face, they let anyone who has one
//! read what they share (a file, or a folder with its page, files and zip) through the web face
//! with a browser, curl or wget, and nothing else; they are bounded in time and number, and stop
//! working when revoked, when they expire, or when the token that made them does. Upload links
//! let anyone who has one send new files into a folder, within a quota, and see nothing.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// A token of `role` made in `hub`'s state folder.
fn token(hub: &Hub, role: &str) -> String {
    make_token(hub, role, &[])
}

/// The status and body of a GET of `url`.
fn fetch(url: &str) -> (u16, String) {
    let out = curl(&["-o", "-", "-w", "\n%{http_code}", url]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// `troca share` as JSON rows: `[{id, name, link, expires}]`.
fn share(hub: &Hub, cwd: &std::path::Path, token: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "share"];
    all.extend_from_slice(args);
    json(&hub.troca_with(cwd, token, &all))
        .as_array()
        .unwrap()
        .clone()
}

fn link(row: &Value) -> String {
    row["link"].as_str().unwrap().to_owned()
}

/// The status of a request made with curl's `args`, and its body.
fn status_of(args: &[&str]) -> (u16, String) {
    let mut all = vec!["-o", "-", "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// The share link's own base (`…/s/TOKEN`), from a link to something it shares.
fn share_base(link: &str) -> String {
    let at = link.find("/files/").unwrap();
    link[..at].to_owned()
}

#[test]
fn a_share_link_reads_what_it_shares_and_nothing_else_until_revoked() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("photos/a.txt", "hello"),
            ("photos/sub/b.txt", "bee"),
            ("other/secret.txt", "not for you"),
            ("report.pdf", "the report"),
        ],
    );
    let hub = Hub::start(&s.share, &["--require-token"]);
    let web = hub.web.clone().unwrap();
    let (write, read) = (token(&hub, "write"), token(&hub, "read"));

    // A read token cannot hand out what it was given.
    let err = fails(&hub.troca_with(&s.client, &read, &["share", "photos/"]), 1);
    assert!(err.contains("read token cannot make share links"), "{err}");

    let rows = share(&hub, &s.client, &write, &["photos", "report.pdf"]);
    assert_eq!(rows[0]["name"], "photos/", "{rows:?}");
    assert_eq!(rows[1]["name"], "report.pdf", "{rows:?}");
    let (folder, file) = (link(&rows[0]), link(&rows[1]));
    // On the web face the client reached, as the hub printed it.
    assert!(
        folder.starts_with(web.trim_end_matches('/')),
        "{folder} vs {web}"
    );
    assert!(file.ends_with("/files/report.pdf"), "{file}");
    let base = share_base(&folder);

    // The folder's page, its files, a sub-folder and its zip; every link stays in the share.
    let (status, page) = fetch(&folder);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-share=\"1\""), "{page}");
    let path = &base[base.find("/s/").unwrap()..];
    for href in page.split("href=\"").skip(1) {
        let href = href.split('"').next().unwrap();
        assert!(href.starts_with(path), "a link out of the share: {href}");
    }
    assert_eq!(fetch(&format!("{folder}a.txt")), (200, "hello".into()));
    assert_eq!(fetch(&format!("{folder}sub/b.txt")), (200, "bee".into()));
    let zip = s.tmp.path().join("photos.zip");
    let out = curl(&["-o", zip.to_str().unwrap(), &format!("{folder}?zip")]);
    assert!(out.status.success());
    let listed = Command::new("unzip").arg("-l").arg(&zip).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("a.txt") && listed.contains("sub/b.txt"),
        "{listed}"
    );
    // A file's link saves under its own name with `curl -O`.
    let out = Command::new("curl")
        .args(["-sS", "-O", &file])
        .current_dir(&s.client)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(s.client.join("report.pdf")).unwrap(),
        "the report"
    );

    // Nothing outside what it shares, and nothing but reading.
    let (status, body) = fetch(&format!("{base}/files/other/secret.txt"));
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("not for you"));
    let (status, _) = fetch(&format!("{}/files/photos/a.txt", share_base(&file)));
    assert_eq!(status, 403, "a file's link reaches that file only");
    std::fs::write(s.client.join("new.txt"), "new").unwrap();
    let put = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-T",
        s.client.join("new.txt").to_str().unwrap(),
        &format!("{folder}new.txt"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&put.stdout),
        "403",
        "a read link uploads nothing"
    );
    assert!(!s.share.join("photos/new.txt").exists());
    for closed in ["/api/status", "/api/clients", "/api/history", "/api/shares"] {
        let (status, _) = fetch(&format!("{base}{closed}"));
        assert_eq!(status, 404, "{closed}");
    }

    // Listed for the token that made them (newest first), never with their secrets.
    let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["report.pdf", "photos/"]);
    assert!(!listed
        .to_string()
        .contains(&base[base.rfind('/').unwrap() + 1..]));
    fails(&hub.troca_with(&s.client, &read, &["shares"]), 1);

    // Revoked: it stops working at once, and says so in words.
    let id = rows[0]["id"].as_u64().unwrap().to_string();
    ok(&hub.troca_with(&s.client, &write, &["unshare", &id]));
    let (status, body) = fetch(&folder);
    assert_eq!(status, 401);
    assert!(body.contains("This share link does not work"), "{body}");
    assert_eq!(fetch(&file), (200, "the report".into()));

    // The history records the share, never its secret.
    let admin = hub.admin_token();
    let history = ok(&hub.troca_with(&s.client, &admin, &["--json", "history"]));
    let entries: Vec<Value> = serde_json::from_str(&history).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["op"] == "share" && e["target"] == "photos" && e["ok"] == true),
        "{history}"
    );
    let secret = &base[base.rfind('/').unwrap() + 1..];
    assert!(!history.contains(secret), "{history}");
}

#[test]
fn a_share_link_lives_only_as_long_as_the_token_that_made_it() {
    let s = Scratch::new();
    write_tree(&s.share, &[("a.txt", "a")]);
    let hub = Hub::start(&s.share, &[]);
    let write = token(&hub, "write");
    let rows = share(&hub, &s.client, &write, &["a.txt"]);
    let a = link(&rows[0]);
    assert_eq!(fetch(&a), (200, "a".into()));
    let state = hub.dir.join(".troca");
    let list = json(
        &Command::new(TROCA)
            .args(["--json", "token", "list", "--state"])
            .arg(&state)
            .output()
            .unwrap(),
    );
    let maker = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "write")
        .unwrap()["id"]
        .to_string();
    // On the hub's machine, `token list` shows the link, labelled, and which token made it.
    let link_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "share of a.txt")
        .unwrap();
    assert_eq!(link_row["shared_by"].to_string(), maker, "{list}");
    assert_eq!(link_row["folder"], "a.txt", "{list}");
    ok(&Command::new(TROCA)
        .args(["token", "revoke", &maker, "--state"])
        .arg(&state)
        .output()
        .unwrap());
    assert_eq!(fetch(&a).0, 401, "the maker's token is revoked");
}

#[test]
fn share_links_are_bounded_in_time_and_number_and_expire() {
    let s = Scratch::new();
    write_tree(&s.share, &[("a.txt", "a"), ("b.txt", "b")]);
    let hub = Hub::start(
        &s.share,
        &["--max-share-time", "2d", "--max-shares-per-token", "2"],
    );
    let (write, other) = (token(&hub, "write"), token(&hub, "write"));
    let err = fails(
        &hub.troca_with(&s.client, &write, &["share", "a.txt", "--expires", "3d"]),
        1,
    );
    assert!(err.contains("lasts at most 2 days"), "{err}");

    let first = share(&hub, &s.client, &write, &["a.txt"]);
    share(&hub, &s.client, &write, &["b.txt"]);
    let err = fails(&hub.troca_with(&s.client, &write, &["share", "a.txt"]), 1);
    assert!(err.contains("2 share links working"), "{err}");
    // Another token's links are its own: it cannot see or revoke these.
    let id = first[0]["id"].as_u64().unwrap().to_string();
    let err = fails(&hub.troca_with(&s.client, &other, &["unshare", &id]), 1);
    assert!(err.contains("share link"), "{err}");
    assert_eq!(fetch(&link(&first[0])).0, 200);
    // The admin sees every link, and who made each.
    let all = json(&hub.troca_with(&s.client, &hub.admin_token(), &["--json", "shares"]));
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert!(
        all[0]["made_by"].as_str().unwrap().starts_with("token "),
        "{all}"
    );
    ok(&hub.troca_with(&s.client, &hub.admin_token(), &["unshare", &id]));
    assert_eq!(fetch(&link(&first[0])).0, 401);

    // Room again; a link of one second expires, which is the event waited for.
    let short = share(&hub, &s.client, &write, &["a.txt", "--expires", "1s"]);
    let mut tries = 0;
    loop {
        let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
        let state = listed[0]["state"].as_str().unwrap().to_owned();
        if state == "expired" {
            break;
        }
        tries += 1;
        assert!(tries < 600, "{listed}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(fetch(&link(&short[0])).0, 401);
}

#[test]
fn the_page_and_the_json_mode_make_and_revoke_share_links() {
    let s = Scratch::new();
    write_tree(&s.share, &[("docs/a.txt", "a")]);
    let hub = Hub::start(&s.share, &[]);
    let web = hub.web.clone().unwrap();
    let write = token(&hub, "write");
    let header = s.tmp.path().join("auth");
    std::fs::write(&header, format!("Authorization: Bearer {write}")).unwrap();
    let auth = format!("@{}", header.display());

    // The HTTP API the page uses.
    let out = curl(&[
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"name":"docs/","expires_s":3600}"#,
        &format!("{web}api/shares"),
    ]);
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = made["path"].as_str().unwrap();
    assert!(
        path.starts_with("/s/troca_") && path.ends_with("/files/docs/"),
        "{made}"
    );
    let url = format!("{}{path}a.txt", web.trim_end_matches('/'));
    assert_eq!(fetch(&url), (200, "a".into()));
    let out = curl(&["-H", &auth, &format!("{web}api/shares")]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["name"], "docs/", "{listed}");
    let anonymous = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{web}api/shares"),
    ]);
    assert_eq!(String::from_utf8_lossy(&anonymous.stdout), "403");
    let id = made["id"].to_string();
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        "-H",
        &auth,
        &format!("{web}api/shares/{id}"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
    assert_eq!(fetch(&url).0, 401);

    // The JSON line mode.
    let mut child = Command::new(TROCA)
        .arg("json")
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("XDG_DATA_HOME", hub.client_data())
        .env("TROCA_TOKEN", &write)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        r#"{{"operation":"share","name":"docs/a.txt","id":1}}"#
    )
    .unwrap();
    writeln!(stdin, r#"{{"operation":"list_shares","id":2}}"#).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let link = lines[0]["link"].as_str().unwrap();
    assert_eq!(fetch(link), (200, "a".into()));
    assert_eq!(lines[1]["shares"][0]["name"], "docs/a.txt", "{lines:?}");
    assert_eq!(lines[1]["shares"][0]["state"], "active", "{lines:?}");
}

#[test]
fn beneath_a_path_prefix_a_share_link_keeps_its_links_beneath_both() {
    let s = Scratch::new();
    write_tree(&s.share, &[("docs/a.txt", "a"), ("top.txt", "t")]);
    let hub = Hub::start(&s.share, &["--path-prefix", "/hub"]);
    let write = token(&hub, "write");
    let rows = share(&hub, &s.client, &write, &["docs/"]);
    let folder = link(&rows[0]);
    assert!(folder.contains("/hub/s/troca_"), "{folder}");
    let (status, page) = fetch(&folder);
    assert_eq!(status, 200, "{page}");
    let base = share_base(&folder);
    let path = &base[base.find("/hub/s/").unwrap()..];
    for href in page.split("href=\"").skip(1) {
        let href = href.split('"').next().unwrap();
        assert!(href.starts_with(path), "a link out of the share: {href}");
    }
    assert_eq!(fetch(&format!("{folder}a.txt")), (200, "a".into()));
    // The link's bare top goes to its `/`, and nothing of it is reached outside the prefix.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &base,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("301 {base}/"));
    let outside = folder.replace("/hub/s/", "/s/");
    assert_eq!(fetch(&outside).0, 404);
}

#[test]
fn a_link_names_the_public_url_when_given_and_none_without_a_web_face() {
    let s = Scratch::new();
    write_tree(&s.share, &[("a b.txt", "a")]);
    let hub = Hub::start(
        &s.share,
        &["--public-url", "https://files.example.org/hub/"],
    );
    let write = token(&hub, "write");
    let rows = share(&hub, &s.client, &write, &["a b.txt"]);
    let link = link(&rows[0]);
    assert!(
        link.starts_with("https://files.example.org/hub/s/troca_")
            && link.ends_with("/files/a%20b.txt"),
        "{link}"
    );
    drop(hub);

    let s = Scratch::new();
    write_tree(&s.share, &[("a.txt", "a")]);
    let hub = Hub::start(&s.share, &["--no-http"]);
    let write = token(&hub, "write");
    let rows = share(&hub, &s.client, &write, &["a.txt"]);
    assert!(rows[0]["link"].is_null(), "{rows:?}");
    let out = hub.troca_with(&s.client, &write, &["share", "a.txt"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no web face"), "{said}");
    assert!(ok(&out).is_empty(), "no link on stdout");
}

#[test]
fn an_upload_link_takes_new_files_within_its_quota_and_shows_nothing() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("inbox/old.txt", "private"),
            ("other/secret.txt", "not for you"),
        ],
    );
    let hub = Hub::start(&s.share, &["--require-token"]);
    let (write, other, read) = (
        token(&hub, "write"),
        token(&hub, "write"),
        token(&hub, "read"),
    );
    let err = fails(
        &hub.troca_with(&s.client, &read, &["share", "--upload", "inbox/"]),
        1,
    );
    assert!(err.contains("read token cannot make share links"), "{err}");
    let err = fails(
        &hub.troca_with(&s.client, &write, &["share", "--upload", "inbox/old.txt"]),
        1,
    );
    assert!(err.contains("goes to a folder"), "{err}");
    let rows = share(
        &hub,
        &s.client,
        &write,
        &["--upload", "inbox", "--max-files", "3"],
    );
    assert_eq!(rows[0]["upload"], true, "{rows:?}");
    let link = link(&rows[0]);
    assert!(link.ends_with("/files/inbox/"), "{link}");
    let base = share_base(&link);

    // `curl -T FILE LINK` sends a file under its own name.
    for (name, text) in [("a.txt", "from a stranger"), ("old.txt", "replaced?")] {
        std::fs::write(s.client.join(name), text).unwrap();
    }
    let a = s.client.join("a.txt");
    let (status, body) = status_of(&["-T", a.to_str().unwrap(), &link]);
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        std::fs::read_to_string(s.share.join("inbox/a.txt")).unwrap(),
        "from a stranger"
    );

    // Nothing is read through it: not what it sent, not what was there, not the folder.
    for url in [
        format!("{link}a.txt"),
        format!("{link}old.txt"),
        format!("{link}?zip"),
        format!("{base}/api/files?prefix=inbox/"),
        format!("{base}/api/find?q=old"),
        format!("{base}/files/other/secret.txt"),
    ] {
        let (status, body) = fetch(&url);
        assert_eq!(status, 403, "{url}: {body}");
        assert!(
            !body.contains("private") && !body.contains("stranger"),
            "{body}"
        );
    }
    let (status, page) = fetch(&link);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-upload=\"1\""), "{page}");
    assert!(
        !page.contains("old.txt") && !page.contains("a.txt"),
        "{page}"
    );
    // The share's top sends the visitor on to the link's folder.
    let (status, _) = fetch(&format!("{base}/"));
    assert_eq!(status, 303);

    // Never over a file: a name taken is refused, with or without asking to replace.
    let old = s.client.join("old.txt");
    let (status, body) = status_of(&["-T", old.to_str().unwrap(), &link]);
    assert_eq!(status, 409, "{body}");
    assert!(
        !body.contains("overwrite"),
        "no hint a link cannot use: {body}"
    );
    let over = format!("{link}old.txt?overwrite=1");
    let (status, body) = status_of(&["-T", old.to_str().unwrap(), &over]);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        std::fs::read_to_string(s.share.join("inbox/old.txt")).unwrap(),
        "private"
    );
    // Nowhere but its folder, and nothing but uploads.
    let elsewhere = format!("{base}/files/other/x.txt");
    assert_eq!(status_of(&["-T", a.to_str().unwrap(), &elsewhere]).0, 403);
    assert!(!s.share.join("other/x.txt").exists());
    let deleted = status_of(&["-X", "DELETE", &format!("{link}a.txt")]);
    assert_eq!(deleted.0, 405);
    assert!(s.share.join("inbox/a.txt").exists());

    // The link's token on the native face: it uploads, and lists, reads and shares nothing.
    let secret = &base[base.rfind('/').unwrap() + 1..];
    std::fs::write(s.client.join("b.txt"), "bee").unwrap();
    ok(&hub.troca_with(&s.client, secret, &["put", "b.txt", "--to", "inbox/"]));
    for args in [
        &["ls", "inbox/"][..],
        &["get", "inbox/old.txt", "-o", "-"],
        &["find", "old"],
        &["rm", "inbox/b.txt"],
        &["share", "inbox/"],
    ] {
        let err = fails(&hub.troca_with(&s.client, secret, args), 1);
        assert!(
            err.contains("only uploads new files") || err.contains("cannot make share links"),
            "{args:?}: {err}"
        );
    }
    let status = ok(&hub.troca_with(&s.client, secret, &["status"]));
    assert!(status.contains("upload token"), "{status}");
    // Nor how many files the folder holds.
    let counted = json(&hub.troca_with(&s.client, secret, &["--json", "status"]));
    assert_eq!(
        (counted["files"].as_u64(), counted["bytes"].as_u64()),
        (Some(0), Some(0))
    );

    // Within its quota of three files.
    std::fs::write(s.client.join("c.txt"), "c").unwrap();
    std::fs::write(s.client.join("d.txt"), "d").unwrap();
    let c = s.client.join("c.txt");
    assert_eq!(status_of(&["-T", c.to_str().unwrap(), &link]).0, 201);
    let d = s.client.join("d.txt");
    let (status, body) = status_of(&["-T", d.to_str().unwrap(), &link]);
    assert_eq!(status, 507, "{body}");
    assert!(!s.share.join("inbox/d.txt").exists());

    // What came in is its maker's to move and delete, and no other writer's.
    let err = fails(
        &hub.troca_with(&s.client, &other, &["rm", "inbox/a.txt"]),
        1,
    );
    assert!(err.contains("needs the admin token"), "{err}");
    ok(&hub.troca_with(&s.client, &write, &["rm", "inbox/a.txt"]));
    ok(&hub.troca_with(&s.client, &write, &["mv", "inbox/b.txt", "inbox/bee.txt"]));
    let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
    let upload = &listed[0]["upload"];
    assert_eq!(upload["max_files"], 3, "{listed}");
    assert_eq!(upload["files"], 2, "{listed}");
    assert_eq!(
        upload["max_bytes"],
        10u64 << 30,
        "the hub's most by default: {listed}"
    );
    // Room again after the maker's delete: one more file goes in.
    assert_eq!(status_of(&["-T", d.to_str().unwrap(), &link]).0, 201);

    // Revoked, it takes nothing more.
    let id = rows[0]["id"].as_u64().unwrap().to_string();
    ok(&hub.troca_with(&s.client, &write, &["unshare", &id]));
    std::fs::write(s.client.join("e.txt"), "e").unwrap();
    let e = s.client.join("e.txt");
    let (status, body) = status_of(&["-T", e.to_str().unwrap(), &link]);
    assert_eq!(status, 401, "{body}");
    assert!(!s.share.join("inbox/e.txt").exists());
}

#[test]
fn an_upload_link_is_bounded_by_the_hubs_most() {
    let s = Scratch::new();
    write_tree(&s.share, &[("inbox/.keep", "")]);
    let hub = Hub::start(
        &s.share,
        &["--max-share-upload", "1M", "--max-share-upload-files", "0"],
    );
    let write = token(&hub, "write");
    let err = fails(
        &hub.troca_with(
            &s.client,
            &write,
            &["share", "--upload", "inbox/", "--max-size", "2M"],
        ),
        1,
    );
    assert!(err.contains("takes at most 1.0 MiB"), "{err}");
    let rows = share(&hub, &s.client, &write, &["--upload", "inbox/"]);
    let link = link(&rows[0]);
    let big = s.client.join("big.bin");
    std::fs::write(&big, vec![7u8; (1 << 20) + 1]).unwrap();
    let (status, body) = status_of(&["-T", big.to_str().unwrap(), &link]);
    assert_eq!(status, 507, "{body}");
    assert!(!s.share.join("inbox/big.bin").exists());
    let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
    assert_eq!(listed[0]["upload"]["max_bytes"], 1 << 20, "{listed}");
    assert_eq!(listed[0]["upload"]["max_files"], 0, "{listed}");
}

#[test]
fn a_token_with_a_quota_hands_out_no_more_room_than_it_has() {
    let s = Scratch::new();
    write_tree(&s.share, &[("inbox/.keep", "")]);
    let hub = Hub::start(&s.share, &[]);
    let write = make_token(&hub, "write", &["--quota", "10K"]);
    let first = share(&hub, &s.client, &write, &["--upload", "inbox/"]);
    let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
    assert_eq!(
        listed[0]["upload"]["max_bytes"],
        10 << 10,
        "cut to its room: {listed}"
    );
    let err = fails(
        &hub.troca_with(&s.client, &write, &["share", "--upload", "inbox/"]),
        1,
    );
    assert!(err.contains("may take at most 0 B"), "{err}");
    let id = first[0]["id"].as_u64().unwrap().to_string();
    ok(&hub.troca_with(&s.client, &write, &["unshare", &id]));
    let err = fails(
        &hub.troca_with(
            &s.client,
            &write,
            &["share", "--upload", "inbox/", "--max-size", "20K"],
        ),
        1,
    );
    assert!(err.contains("may take at most 10.0 KiB"), "{err}");
    share(
        &hub,
        &s.client,
        &write,
        &["--upload", "inbox/", "--max-size", "4K"],
    );
    let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
    assert_eq!(listed[0]["upload"]["max_bytes"], 4 << 10, "{listed}");
}

/// Anyone may hold an upload link, so what an address sends through links counts against its
/// address's quota (`--upload-quota-per-ip`, `--upload-files-per-ip`), as uploads without a
/// token do, on the web and the native face, over all the links it uses; the maker's own
/// uploads are not counted.
#[test]
fn what_one_address_sends_through_upload_links_stays_within_its_quota() {
    let s = Scratch::new();
    write_tree(&s.share, &[("inbox/.keep", ""), ("drop/.keep", "")]);
    let quota = ["--upload-files-per-ip", "4", "--upload-quota-per-ip", "1M"];
    let hub = Hub::start(&s.share, &quota);
    let write = token(&hub, "write");
    let first = link(&share(&hub, &s.client, &write, &["--upload", "inbox/"])[0]);
    let second = link(&share(&hub, &s.client, &write, &["--upload", "drop/"])[0]);
    let base = share_base(&second);
    let secret = &base[base.rfind('/').unwrap() + 1..];

    let big = s.client.join("big.bin");
    std::fs::write(&big, vec![7u8; (1 << 20) + 1]).unwrap();
    let (status, body) = status_of(&["-T", big.to_str().unwrap(), &first]);
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("more than an address may upload through share links (1.0 MiB an hour)"),
        "{body}"
    );
    assert!(!s.share.join("inbox/big.bin").exists());

    let one = s.client.join("one.txt");
    std::fs::write(&one, "one").unwrap();
    assert_eq!(status_of(&["-T", one.to_str().unwrap(), &first]).0, 201);
    assert_eq!(status_of(&["-T", one.to_str().unwrap(), &second]).0, 201);
    // The native face, a folder of three in one batch: two fit, the third is refused.
    write_tree(
        &s.client,
        &[("tree/a", "a"), ("tree/b", "b"), ("tree/c", "c")],
    );
    let err = fails(
        &hub.troca_with(&s.client, secret, &["put", "tree", "--to", "drop/"]),
        1,
    );
    assert!(
        err.contains("may upload 4 files an hour through share links and without a token"),
        "{err}"
    );
    assert!(
        !err.contains("--token-file"),
        "no hint a link cannot use: {err}"
    );
    assert_eq!(
        std::fs::read_dir(s.share.join("drop/tree"))
            .unwrap()
            .count(),
        2
    );
    let two = s.client.join("two.txt");
    std::fs::write(&two, "two").unwrap();
    let (status, body) = status_of(&["-T", two.to_str().unwrap(), &first]);
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("has used 4 files"), "{body}");
    assert!(!s.share.join("inbox/two.txt").exists());

    // The links' maker, with a token of its own, is not counted.
    ok(&hub.troca_with(&s.client, &write, &["put", "two.txt", "--to", "inbox/"]));
    assert!(s.share.join("inbox/two.txt").exists());
}

/// A read link may allow only so many downloads, counted on every face as each begins (a
/// file's bytes, a folder's zip as one; a `HEAD` is none) and in the records, so its maker sees
/// them; once spent the link is refused like an expired one, and listed as used up.
/// A download cut short through a link for one download goes on where it stopped (curl's
/// `-C -`, as a browser resumes) without spending another: from the same address, for the same
/// file. A new download from the start, or from another address, is refused.
#[test]
fn a_cut_download_through_a_link_for_one_download_goes_on_where_it_stopped() {
    let s = Scratch::new();
    let whole: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(s.share.join("film.bin"), &whole).unwrap();
    let hub = Hub::start(&s.share, &[]);
    let write = token(&hub, "write");
    let rows = share(
        &hub,
        &s.client,
        &write,
        &["film.bin", "--max-downloads", "1"],
    );
    let file = link(&rows[0]);
    let part = s.client.join("film.bin");
    let part_path = part.to_str().unwrap();
    let cut = |args: &[&str]| {
        let mut all = vec!["-s", "-o", part_path, "-w", "%{http_code}"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&curl(&all).stdout).into_owned()
    };

    // The first 100,000 bytes, then the connection is gone: the link's one download is spent.
    assert_eq!(cut(&["-r", "0-99999", &file]), "206");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 100_000);
    let listed = ok(&hub.troca_with(&s.client, &write, &["shares"]));
    assert!(listed.contains("(1 of 1 downloads)"), "{listed}");
    assert_eq!(fetch(&file).0, 401, "a new download is refused");

    // Elsewhere, the same range is a download of its own, and none is left.
    let other = [
        "--interface",
        "127.0.0.2",
        "-o",
        "/dev/null",
        "-r",
        "100000-",
    ];
    assert_eq!(status_of(&[&other[..], &[&file]].concat()).0, 401);

    // Here, it goes on where it stopped, and the file is whole.
    assert_eq!(cut(&["-C", "-", &file]), "206");
    assert_eq!(std::fs::read(&part).unwrap(), whole);
    let listed = ok(&hub.troca_with(&s.client, &write, &["shares"]));
    assert!(listed.contains("(1 of 1 downloads)"), "{listed}");
    assert_eq!(
        status_of(&["-r", "0-", &file]).0,
        401,
        "from the start: new"
    );
}

#[test]
fn a_share_link_allows_only_so_many_downloads() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("report.txt", "the report"),
            ("docs/a.txt", "a"),
            ("docs/b.txt", "b"),
        ],
    );
    let hub = Hub::start(&s.share, &[]);
    let write = token(&hub, "write");
    let out = hub.troca_with(
        &s.client,
        &write,
        &["share", "report.txt", "--max-downloads", "2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("shared for 2 downloads"), "{stderr}");
    let file = ok(&out).trim().to_owned();
    let base = share_base(&file);
    let secret = &base[base.rfind('/').unwrap() + 1..];
    let used = || {
        let listed = json(&hub.troca_with(&s.client, &write, &["--json", "shares"]));
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "report.txt")
            .unwrap()
            .clone();
        (
            row["downloads"].as_u64().unwrap(),
            row["state"].as_str().unwrap().to_owned(),
        )
    };

    assert_eq!(status_of(&["-I", &file]).0, 200);
    assert_eq!(used(), (0, "active".to_owned()), "a HEAD downloads nothing");
    assert_eq!(fetch(&file), (200, "the report".to_owned()));
    assert_eq!(used(), (1, "active".to_owned()));
    // The link's token on the native face counts the same.
    let got = ok(&hub.troca_with(&s.client, secret, &["get", "report.txt", "-o", "-"]));
    assert_eq!(got, "the report");
    assert_eq!(used(), (2, "used up".to_owned()));
    let (status, body) = fetch(&file);
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("the report"), "{body}");
    let err = fails(
        &hub.troca_with(&s.client, secret, &["get", "report.txt", "-o", "-"]),
        1,
    );
    assert!(err.contains("not valid"), "{err}");
    let listed = ok(&hub.troca_with(&s.client, &write, &["shares"]));
    assert!(
        listed.contains("used up") && listed.contains("(2 of 2 downloads)"),
        "{listed}"
    );

    // A folder's zip counts once, whatever it holds.
    let rows = share(&hub, &s.client, &write, &["docs/", "--max-downloads", "1"]);
    let folder = link(&rows[0]);
    let zip = s.client.join("docs.zip");
    let fetched = curl(&["-sf", "-o", zip.to_str().unwrap(), &format!("{folder}?zip")]);
    assert!(fetched.status.success(), "{fetched:?}");
    let unzipped = std::process::Command::new("unzip")
        .args(["-p", zip.to_str().unwrap(), "docs/b.txt"])
        .output()
        .unwrap();
    assert_eq!(unzipped.stdout, b"b");
    assert_eq!(fetch(&format!("{folder}a.txt")).0, 401);

    // An upload link counts no downloads.
    let refused = fails(
        &hub.troca_with(
            &s.client,
            &write,
            &["share", "--upload", "docs/", "--max-downloads", "1"],
        ),
        2,
    );
    assert!(refused.contains("cannot be used with"), "{refused}");
    let web = hub.web.as_deref().unwrap();
    let body = r#"{"name":"docs/","upload":true,"max_downloads":1}"#;
    let auth = format!("Authorization: Bearer {write}");
    let (status, answer) = status_of(&[
        "-X",
        "POST",
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        body,
        &format!("{web}api/shares"),
    ]);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("counts no downloads"), "{answer}");
}

/// `troca share --qr` draws each link as a QR code on stderr (stdout keeps the link alone),
/// which a scanner reads back as that very link; the web face draws one for the page too,
/// within a bound on its text.
#[test]
fn a_link_comes_as_a_qr_code_a_scanner_reads() {
    let s = Scratch::new();
    write_tree(&s.share, &[("inbox/.keep", ""), ("notes.txt", "n")]);
    let hub = Hub::start(&s.share, &[]);
    let write = token(&hub, "write");
    let out = hub.troca_with(&s.client, &write, &["share", "--upload", "inbox/", "--qr"]);
    let link = ok(&out).trim().to_owned();
    assert!(link.contains("/s/troca_"), "{link}");
    let drawn = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !drawn.contains('\x1b'),
        "no colours off a terminal: {drawn}"
    );
    assert_eq!(scan_terminal_qr(&drawn), link);

    let web = hub.web.as_deref().unwrap();
    let svg = curl(&[
        "-f",
        "-X",
        "POST",
        "--data-binary",
        &link,
        &format!("{web}api/qr"),
    ]);
    assert!(svg.status.success(), "{svg:?}");
    let svg = String::from_utf8_lossy(&svg.stdout).into_owned();
    assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    let long = "x".repeat(2049);
    let (status, _) = status_of(&[
        "-X",
        "POST",
        "--data-binary",
        &long,
        &format!("{web}api/qr"),
    ]);
    assert_eq!(status, 413);
}
