//! Nothing is overwritten unless asked: remote names need `--force`, local files get free
//! `_downloaded` names.

mod common;
use common::*;

#[test]
fn an_existing_remote_name_is_refused_without_force() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("a.txt"), "v1").unwrap();
    ok(&hub.troca(&s.client, &["put", "a.txt"]));
    std::fs::write(s.client.join("a.txt"), "v2").unwrap();
    let err = fails(&hub.troca(&s.client, &["put", "a.txt"]), 1);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.share.join("a.txt")).unwrap(),
        "v1"
    );
    // Replacing needs rights: someone else's upload needs the admin token.
    let err = fails(
        &hub.troca_as(&s.client, "someone", None, &["put", "--force", "a.txt"]),
        1,
    );
    assert!(err.contains("needs a token"), "{err}");
    ok(&hub.troca_with(&s.client, &hub.admin_token(), &["put", "--force", "a.txt"]));
    assert_eq!(
        std::fs::read_to_string(s.share.join("a.txt")).unwrap(),
        "v2"
    );
}

/// Files put in the hub's folder by other means (a copy, rsync) have no hash on the hub yet: a
/// folder sent again asks the hub for them, so the identical ones are not sent, while one that
/// only has the same size is still refused as taken.
#[test]
fn a_folder_sent_again_over_files_copied_to_the_hub_sends_none_that_are_identical() {
    let s = Scratch::new();
    let tree = s.client.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::create_dir_all(s.share.join("tree/sub")).unwrap();
    for (name, body) in [
        ("a.txt", "same a"),
        ("sub/b.bin", "same b"),
        ("c.txt", "ours c"),
    ] {
        std::fs::write(tree.join(name), body).unwrap();
    }
    std::fs::write(s.share.join("tree/a.txt"), "same a").unwrap();
    std::fs::write(s.share.join("tree/sub/b.bin"), "same b").unwrap();
    std::fs::write(s.share.join("tree/c.txt"), "hubs c").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let err = fails(&hub.troca(&s.client, &["put", "tree"]), 1);
    assert!(
        err.contains("2 files already on the hub (identical), not sent again"),
        "{err}"
    );
    assert!(
        err.contains("already exists") && err.contains("tree/c.txt"),
        "{err}"
    );
    let history = json(&hub.troca(&s.client, &["--json", "history", "--op", "put"]));
    let targets: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert_eq!(targets, ["tree/c.txt"], "only the changed file was sent");
    assert_eq!(
        std::fs::read(s.share.join("tree/c.txt")).unwrap(),
        b"hubs c"
    );
}

/// Putting or getting a folder again moves only what differs: a file identical on both sides
/// (same size and BLAKE3) is left as it is and is not a failure; a different one is still
/// refused (put) or saved beside (get).
#[test]
fn a_folder_sent_again_sends_only_what_is_new_and_refuses_what_changed() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let tree = s.client.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("small.txt"), "small").unwrap();
    random_file(&tree.join("sub/big.bin"), 3 << 20, "big");
    ok(&hub.troca(&s.client, &["put", "tree"]));
    std::fs::write(tree.join("sub/new.txt"), "new").unwrap();
    let out = hub.troca(&s.client, &["put", "tree"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("2 files already on the hub (identical), not sent again"),
        "{err}"
    );
    // Found by listing the folder's place: neither was sent to be refused.
    let history = json(&hub.troca(&s.client, &["--json", "history", "--limit", "200"]));
    let puts_of = |name: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["op"] == "put" && e["target"] == name)
            .count()
    };
    assert_eq!(puts_of("tree/small.txt"), 1, "{history}");
    assert_eq!(puts_of("tree/sub/big.bin"), 1, "{history}");
    // A file named on its own is sent, refused, then found the same.
    let out = hub.troca(&s.client, &["put", "tree/sub/big.bin", "--to", "tree/sub"]);
    ok(&out);
    let alone = String::from_utf8_lossy(&out.stderr);
    assert!(
        alone.contains("tree/sub/big.bin is already on the hub (identical)"),
        "{alone}"
    );
    assert!(err.contains("uploaded tree/sub/new.txt"), "{err}");
    let out = hub.troca(&s.client, &["--json", "put", "tree"]);
    assert_eq!(
        json(&out).as_array().unwrap().len(),
        3,
        "every file has its row"
    );
    assert_eq!(
        std::fs::read(s.share.join("tree/sub/new.txt")).unwrap(),
        b"new"
    );
    // Changed here: refused as before, and the hub's copy untouched.
    std::fs::write(tree.join("small.txt"), "edited").unwrap();
    let err = fails(&hub.troca(&s.client, &["put", "tree"]), 1);
    assert!(
        err.contains("already exists") && err.contains("tree/small.txt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(s.share.join("tree/small.txt")).unwrap(),
        b"small"
    );
    // The other way: a file already here is not fetched again, nor saved as a copy.
    let out = hub.troca(&s.client, &["get", "tree/sub/big.bin", "-o", "tree/sub/"]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already here"),
        "{out:?}"
    );
    assert!(!tree.join("sub/big_downloaded.bin").exists());
}

#[test]
fn get_saves_beside_an_existing_file_as_downloaded() {
    let s = Scratch::new();
    std::fs::write(s.share.join("photo.png"), "remote").unwrap();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("photo.png"), "local").unwrap();

    let out = hub.troca(&s.client, &["get", "photo.png"]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("photo_downloaded.png"),
        "says where it went: {err}"
    );
    let out = hub.troca(&s.client, &["--json", "get", "photo.png"]);
    assert_eq!(json(&out)[0]["path"], "photo_downloaded_2.png");

    assert_eq!(
        std::fs::read_to_string(s.client.join("photo.png")).unwrap(),
        "local"
    );
    assert_eq!(
        std::fs::read_to_string(s.client.join("photo_downloaded.png")).unwrap(),
        "remote"
    );
    assert_eq!(
        std::fs::read_to_string(s.client.join("photo_downloaded_2.png")).unwrap(),
        "remote"
    );

    ok(&hub.troca(&s.client, &["get", "--force", "photo.png"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("photo.png")).unwrap(),
        "remote"
    );
}

#[test]
fn output_path_names_a_file_or_a_folder() {
    let s = Scratch::new();
    std::fs::write(s.share.join("x.txt"), "x").unwrap();
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["get", "x.txt", "-o", "renamed.txt"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("renamed.txt")).unwrap(),
        "x"
    );
    std::fs::create_dir(s.client.join("into")).unwrap();
    ok(&hub.troca(&s.client, &["get", "x.txt", "-o", "into"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("into/x.txt")).unwrap(),
        "x"
    );
}

#[test]
fn usage_errors_exit_with_status_2() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("a"), "a").unwrap();
    std::fs::write(s.client.join("b"), "b").unwrap();
    fails(&hub.troca(&s.client, &["get", "a", "b", "-o", "-"]), 2);
    std::fs::write(s.client.join("not-a-dir"), "a file").unwrap();
    fails(
        &hub.troca(&s.client, &["get", "a", "b", "-o", "not-a-dir"]),
        2,
    );
    fails(&hub.troca(&s.client, &["put", "a", "b", "--as", "x"]), 2);
    fails(&hub.troca(&s.client, &["frobnicate"]), 2);
    fails(&hub.troca(&s.client, &["put"]), 2);
    assert!(files_under(&s.share).is_empty());
}

#[test]
fn an_unreachable_hub_is_one_clear_line_and_status_1() {
    let s = Scratch::new();
    let out = std::process::Command::new(TROCA)
        .args(["--hub", "127.0.0.1:1", "ls"])
        .output()
        .unwrap();
    let err = fails(&out, 1);
    assert_eq!(
        err.trim(),
        "troca: cannot reach hub at 127.0.0.1:1: connection refused (is \"troca serve\" running?)"
    );
    drop(s);
}

#[test]
fn rm_deletes_and_reports_missing_files() {
    let s = Scratch::new();
    std::fs::write(s.share.join("gone.txt"), "x").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let admin = hub.admin_token();
    ok(&hub.troca_with(&s.client, &admin, &["rm", "gone.txt"]));
    assert!(!s.share.join("gone.txt").exists());
    let err = fails(&hub.troca_with(&s.client, &admin, &["rm", "gone.txt"]), 1);
    assert!(err.contains("no file named \"gone.txt\""), "{err}");
}

/// A small file sent to a folder's name is refused as a folder, with or without `--force`,
/// and the folder keeps what it holds; a file sent to a free name in a folder of several goes.
#[test]
fn a_file_sent_to_a_folders_name_is_refused_and_the_folder_kept() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::create_dir_all(s.share.join("docs")).unwrap();
    std::fs::write(s.share.join("docs/inside.txt"), "kept").unwrap();
    std::fs::write(s.client.join("note.txt"), "a note").unwrap();
    for force in [false, true] {
        let mut args = vec!["put", "note.txt", "--as", "docs"];
        if force {
            args.push("--force");
        }
        let err = fails(&hub.troca_with(&s.client, &hub.admin_token(), &args), 1);
        assert!(err.contains("is a folder"), "--force {force}: {err}");
        assert_eq!(
            std::fs::read_to_string(s.share.join("docs/inside.txt")).unwrap(),
            "kept"
        );
    }
    ok(&hub.troca(&s.client, &["put", "note.txt", "--as", "docs/note.txt"]));
    assert_eq!(
        std::fs::read_to_string(s.share.join("docs/note.txt")).unwrap(),
        "a note"
    );
}
