//! The JSON line mode: requests, malformed lines and unknown operations, answered one
//! line each, in order, with the request's id echoed.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn run_script(hub: &Hub, cwd: &std::path::Path, lines: &[&str]) -> Vec<Value> {
    let mut child = Command::new(TROCA)
        .arg("json")
        .current_dir(cwd)
        .env("TROCA_HUB", &hub.addr)
        .env("TROCA_NAME", "scripted")
        .env("XDG_DATA_HOME", hub.client_data())
        .env_remove("TROCA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn the_json_requests_upload_list_download_and_delete_answer_line_by_line() {
    let s = Scratch::new();
    std::fs::write(s.client.join("test.txt"), "test file").unwrap();
    std::fs::create_dir(s.client.join("other")).unwrap();
    std::fs::write(s.client.join("other/test.txt"), "another test").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let out = run_script(
        &hub,
        &s.client,
        &[
            r#"{"operation": "register", "name": "name"}"#,
            r#"{"operation": "list"}"#,
            r#"{"operation": "upload", "file_path": "test.txt", "id": 1}"#,
            r#"{"operation": "upload", "file_path": "other/test.txt"}"#,
            r#"{"operation": "list"}"#,
            r#"{"operation": "download", "file_name": "test.txt", "save_to": "copy.txt"}"#,
            r#"{"operation": "download", "file_name": "test.txt"}"#,
            r#"not json at all"#,
            r#"["operation", "list"]"#,
            r#"{"operation": "fly", "id": "x"}"#,
            r#"{"operation": "download"}"#,
            r#"{"operation": "remove", "file_name": "test.txt"}"#,
            r#"{"operation": "list_clients"}"#,
            r#"{"operation": "history"}"#,
            r#"{"operation": "status"}"#,
            r#"{"operation": "time"}"#,
            r#"{"operation": "q"}"#,
            r#"{"operation": "list"}"#,
        ],
    );
    assert_eq!(out.len(), 17, "one answer per line up to q: {out:#?}");
    assert_eq!(out[0]["ok"], true);
    assert_eq!(out[1]["files"].as_array().unwrap().len(), 0);
    assert_eq!(out[2]["ok"], true);
    assert_eq!(out[2]["id"], 1);
    assert_eq!(out[2]["file"]["name"], "test.txt");
    assert_eq!(out[2]["file"]["size"], 9);
    assert_eq!(out[3]["ok"], false);
    assert_eq!(out[3]["error"]["code"], "already_exists");
    let message = out[3]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"force\": true") && !message.contains("--force"),
        "{message}"
    );
    assert_eq!(out[4]["files"][0]["name"], "test.txt");
    assert_eq!(out[5]["file"]["path"], "copy.txt");
    assert_eq!(
        std::fs::read_to_string(s.client.join("copy.txt")).unwrap(),
        "test file"
    );
    // test.txt is here already, identical: not downloaded again, nor copied beside it.
    assert_eq!(out[6]["file"]["path"], "test.txt");
    assert!(!s.client.join("test_downloaded.txt").exists());
    assert_eq!(out[7]["error"]["code"], "bad_json");
    assert_eq!(out[8]["error"]["code"], "bad_request");
    assert_eq!(out[9]["error"]["code"], "unknown_operation");
    assert_eq!(out[9]["id"], "x");
    assert_eq!(out[10]["error"]["code"], "missing_field");
    // Its own upload: the uploader may remove it (by its owner key).
    assert_eq!(out[11]["removed"], "test.txt", "{}", out[11]);
    let clients = out[12]["clients"].as_array().unwrap();
    assert!(
        clients.iter().any(|c| c["name"] == "name"),
        "registered name shows: {clients:?}"
    );
    let history = out[13]["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["op"] == "rm" && h["ok"] == true));
    // The register request is recorded under the name it was made with; everything after under the new one.
    for h in history {
        let want = if h["op"] == "register" {
            "scripted"
        } else {
            "name"
        };
        assert_eq!(h["client"], want, "{h}");
    }
    assert_eq!(
        out[14]["status"]["files"], 0,
        "test.txt was removed by its uploader"
    );
    assert!(out[15]["time"].as_str().unwrap().contains('T'));
    assert_eq!(out[16]["bye"], true);
}

#[test]
fn an_unreachable_hub_is_an_answer_not_a_crash() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let addr = hub.addr.clone();
    drop(hub);
    let mut child = Command::new(TROCA)
        .arg("json")
        .env("TROCA_HUB", &addr)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.as_mut().unwrap(),
        r#"{{"operation": "list", "id": 5}}"#
    )
    .unwrap();
    writeln!(child.stdin.as_mut().unwrap(), r#"{{"operation": "time"}}"#).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["ok"], false);
        assert_eq!(l["error"]["code"], "connection");
    }
    assert_eq!(lines[0]["id"], 5);
}

#[test]
fn folders_through_json_requests() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.client.join("album/day 1")).unwrap();
    random_file(&s.client.join("album/a.jpg"), 5_000, "a");
    random_file(&s.client.join("album/day 1/b.jpg"), 6_000, "b");
    std::os::unix::fs::symlink("a.jpg", s.client.join("album/link.jpg")).unwrap();
    let hub = Hub::start(&s.share, &[]);
    let out = run_script(
        &hub,
        &s.client,
        &[
            r#"{"operation": "upload", "file_path": "album", "to": "trips", "id": 1}"#,
            r#"{"operation": "make_folder", "name": "archive/2026"}"#,
            r#"{"operation": "move", "from": "trips/album", "to": "archive/2026/"}"#,
            r#"{"operation": "find", "text": "B.JPG"}"#,
            r#"{"operation": "copy", "from": "archive/2026/album", "to": "kept"}"#,
            r#"{"operation": "copy", "from": "archive/2026/album", "to": "kept"}"#,
            r#"{"operation": "copy", "from": "archive/2026/album", "to": "kept"}"#,
        ],
    );
    let uploaded: Vec<&str> = out[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(uploaded, ["trips/album/a.jpg", "trips/album/day 1/b.jpg"]);
    // A link is not followed, and the answer says so.
    assert_eq!(out[0]["skipped"][0]["reason"], "link", "{}", out[0]);
    assert!(out[0]["skipped"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("album/link.jpg"));
    assert_eq!(out[1]["created"], true);
    assert_eq!(out[2]["name"], "archive/2026/album", "{out:?}");
    assert_eq!(
        hash_file(&s.share.join("archive/2026/album/day 1/b.jpg")),
        hash_file(&s.client.join("album/day 1/b.jpg"))
    );
    assert_eq!(out[3]["files"][0]["name"], "archive/2026/album/day 1/b.jpg");
    assert_eq!(out[4]["name"], "kept", "{}", out[4]);
    assert_eq!(out[4]["files"], 2, "{}", out[4]);
    assert_eq!(
        hash_file(&s.share.join("kept/day 1/b.jpg")),
        hash_file(&s.client.join("album/day 1/b.jpg"))
    );
    // Then "kept" is a folder: the next copy goes into it, as with cp(1), and the one
    // after finds its place taken.
    assert_eq!(out[5]["name"], "kept/album", "{}", out[5]);
    assert_eq!(out[6]["error"]["code"], "is_a_folder", "{}", out[6]);
    // A folder is never replaced: no hint to set "force".
    let message = out[6]["error"]["message"].as_str().unwrap();
    assert!(!message.contains("force"), "{message}");
    let out = run_script(
        &hub,
        &s.client,
        &[
            r#"{"operation": "remove", "file_name": "archive"}"#,
            r#"{"operation": "remove", "file_name": "archive", "recursive": true}"#,
        ],
    );
    assert_eq!(out[0]["error"]["code"], "not_empty", "{}", out[0]);
    assert_eq!(out[1]["files"], 2, "{}", out[1]);
    assert!(!s.share.join("archive").exists());
    assert!(s.share.join("trips").is_dir(), "only what was named goes");
    // Sent again after a change here: the identical file counts as sent, the changed one is
    // listed as refused, and the answer is still one line.
    let again = r#"{"operation": "upload", "file_path": "album", "to": "again"}"#;
    run_script(&hub, &s.client, &[again]);
    random_file(&s.client.join("album/a.jpg"), 5_000, "changed");
    let out = run_script(&hub, &s.client, &[again]);
    assert_eq!(out[0]["ok"], true, "{}", out[0]);
    assert_eq!(out[0]["files"][0]["name"], "again/album/day 1/b.jpg");
    assert_eq!(out[0]["failed"][0]["error"]["code"], "already_exists");
    assert!(out[0]["failed"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("album/a.jpg"));
    // With "delete": the changed file replaced, what the folder lacks deleted, its empty
    // folder made; the link left out is not deleted.
    std::fs::create_dir_all(s.client.join("album/empty")).unwrap();
    std::fs::remove_dir_all(s.client.join("album/day 1")).unwrap();
    std::fs::write(s.share.join("again/album/link.jpg"), "kept").unwrap();
    let mirror = r#"{"operation": "upload", "file_path": "album", "to": "again", "delete": true}"#;
    let out = run_script(&hub, &s.client, &[mirror]);
    assert_eq!(out[0]["ok"], true, "{}", out[0]);
    assert_eq!(out[0]["failed"], serde_json::json!([]), "{}", out[0]);
    assert_eq!(out[0]["created"], serde_json::json!(["again/album/empty"]));
    assert_eq!(out[0]["deleted"], serde_json::json!(["again/album/day 1/"]));
    assert_eq!(
        hash_file(&s.share.join("again/album/a.jpg")),
        hash_file(&s.client.join("album/a.jpg"))
    );
    assert!(s.share.join("again/album/link.jpg").is_file());
    assert!(!s.share.join("again/album/day 1").exists());
    json_folder_downloads(&hub, &s);
}

/// A folder downloaded through JSON requests: every file, what failed, and with "delete" what
/// the hub does not hold deleted here (nothing while anything failed).
fn json_folder_downloads(hub: &Hub, s: &Scratch) {
    let get = r#"{"operation": "download", "file_name": "again/album", "save_to": "dl"}"#;
    let out = run_script(hub, &s.client, &[get]);
    assert_eq!(out[0]["ok"], true, "{}", out[0]);
    let mut got: Vec<&str> = out[0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["again/album/a.jpg", "again/album/link.jpg"]);
    assert_eq!(
        hash_file(&s.client.join("dl/album/a.jpg")),
        hash_file(&s.share.join("again/album/a.jpg"))
    );
    assert!(s.client.join("dl/album/empty").is_dir(), "{}", out[0]);
    // A file that cannot be placed here (a file where its folder goes) fails alone, and then
    // nothing is deleted.
    std::fs::create_dir_all(s.share.join("again/album/x")).unwrap();
    std::fs::write(s.share.join("again/album/x/y.txt"), "y").unwrap();
    std::fs::write(s.client.join("dl/album/x"), "in the way").unwrap();
    std::fs::write(s.client.join("dl/album/stale.txt"), "stale").unwrap();
    std::fs::create_dir_all(s.client.join("dl/album/old")).unwrap();
    let mirror =
        r#"{"operation": "download", "file_name": "again/album", "save_to": "dl", "delete": true}"#;
    let out = run_script(hub, &s.client, &[mirror]);
    assert_eq!(out[0]["ok"], true, "{}", out[0]);
    assert_eq!(
        out[0]["failed"][0]["name"], "again/album/x/y.txt",
        "{}",
        out[0]
    );
    assert_eq!(out[0]["failed"][0]["error"]["code"], "local", "{}", out[0]);
    assert_eq!(out[0]["deleted"], serde_json::json!([]), "{}", out[0]);
    assert!(out[0]["note"].as_str().unwrap().contains("nothing deleted"));
    assert!(s.client.join("dl/album/stale.txt").exists());
    // Out of the way, the same request makes the copy the same as the hub's folder.
    std::fs::remove_file(s.client.join("dl/album/x")).unwrap();
    let out = run_script(hub, &s.client, &[mirror]);
    assert_eq!(out[0]["failed"], serde_json::json!([]), "{}", out[0]);
    let mut deleted: Vec<&str> = out[0]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        ["dl/album/old/", "dl/album/stale.txt"],
        "{}",
        out[0]
    );
    assert_eq!(
        std::fs::read(s.client.join("dl/album/x/y.txt")).unwrap(),
        b"y"
    );
    assert!(!s.client.join("dl/album/old").exists());
    assert!(
        s.client.join("dl/album/a.jpg").is_file(),
        "what the hub holds stays"
    );
}

/// Past the upload quota of an address without a token, the JSON mode answers with the code
/// `quota` and says how to start it with a token.
#[test]
fn an_upload_past_the_quota_is_answered_with_its_code() {
    let s = Scratch::new();
    std::fs::write(s.client.join("one.txt"), "one").unwrap();
    std::fs::write(s.client.join("two.txt"), "two").unwrap();
    let hub = Hub::start(&s.share, &["--upload-files-per-ip", "1"]);
    let out = run_script(
        &hub,
        &s.client,
        &[
            r#"{"operation": "upload", "file_path": "one.txt"}"#,
            r#"{"operation": "upload", "file_path": "two.txt"}"#,
        ],
    );
    assert!(out[0].get("error").is_none(), "{}", out[0]);
    assert_eq!(out[1]["error"]["code"], "quota", "{}", out[1]);
    let message = out[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 file an hour") && message.contains("TROCA_TOKEN"),
        "{message}"
    );
    assert!(!s.share.join("two.txt").exists());
}
