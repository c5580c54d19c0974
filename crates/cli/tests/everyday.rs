//! What a newcomer tries first: options with units, empty results that say so.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn sizes_take_units_and_durations_bare_seconds() {
    let s = Scratch::new();
    let hub = Hub::start(
        &s.share,
        &[
            "--cache-size",
            "64M",
            "--cache-max-file",
            "512K",
            "--idle-timeout",
            "10",
        ],
    );
    ok(&hub.troca(&s.client, &["status"]));
}

#[test]
fn an_empty_listing_says_so_on_stderr_and_leaves_stdout_empty() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let out = hub.troca(&s.client, &["ls"]);
    assert_eq!(ok(&out), "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shares no files"),
        "{out:?}"
    );
    let out = hub.troca(&s.client, &["ls", "nothing/"]);
    assert_eq!(ok(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no files whose names start with"));
    let out = hub.troca(&s.client, &["--json", "ls"]);
    assert_eq!(ok(&out).trim(), "[]");
}

#[test]
fn a_folder_goes_up_and_comes_back_with_its_paths() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let photos = s.client.join("photos");
    std::fs::create_dir_all(photos.join("2024/deep")).unwrap();
    std::fs::create_dir_all(photos.join("empty")).unwrap();
    random_file(&photos.join("a.jpg"), 70_000, "a");
    random_file(&photos.join("2024/b.jpg"), 3 << 20, "b");
    std::fs::write(photos.join("2024/deep/c.txt"), "c").unwrap();
    ok(&hub.troca(&s.client, &["put", "photos", "--to", "shared"]));
    assert_eq!(
        files_under(&s.share),
        [
            "shared/photos/2024/b.jpg",
            "shared/photos/2024/deep/c.txt",
            "shared/photos/a.jpg"
        ]
    );
    // A folder holding nothing is made on the hub too, as cp -r and rsync -a make it.
    assert!(s.share.join("shared/photos/empty").is_dir());
    // Back, by the folder's name, into a folder that does not exist yet.
    ok(&hub.troca(&s.client, &["get", "shared/photos", "-o", "dl"]));
    assert!(s.client.join("dl/photos/empty").is_dir());
    for f in ["a.jpg", "2024/b.jpg", "2024/deep/c.txt"] {
        assert_eq!(
            hash_file(&s.client.join("dl/photos").join(f)),
            hash_file(&photos.join(f)),
            "{f}"
        );
    }
    // One file into a folder named with a trailing slash, made on the way.
    ok(&hub.troca(&s.client, &["get", "shared/photos/a.jpg", "-o", "one/"]));
    assert!(s.client.join("one/a.jpg").is_file());
}

/// `--delete` makes the other side the same as the folder sent or fetched: what differs
/// replaced, what the source lacks deleted (files and whole folders), what the source left
/// out on purpose (a link) kept, a link here deleted without touching where it leads; and
/// nothing deleted when something could not be sent.
#[test]
fn put_and_get_with_delete_make_the_other_side_the_same() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let photos = s.client.join("photos");
    let first = [
        ("a.txt", "a"),
        ("same.txt", "s"),
        ("sub/b.txt", "b"),
        ("old/x/c.txt", "c"),
    ];
    for (name, text) in first {
        std::fs::create_dir_all(photos.join(name).parent().unwrap()).unwrap();
        std::fs::write(photos.join(name), text).unwrap();
    }
    ok(&hub.troca(&s.client, &["put", "photos", "--to", "bk"]));
    // Things change here; the hub also holds a file by the name of a link here.
    std::fs::remove_dir_all(photos.join("old")).unwrap();
    std::fs::remove_file(photos.join("sub/b.txt")).unwrap();
    std::fs::write(photos.join("a.txt"), "a, changed").unwrap();
    std::fs::write(photos.join("new.txt"), "n").unwrap();
    std::os::unix::fs::symlink("/etc", photos.join("link")).unwrap();
    std::fs::write(s.share.join("bk/photos/link"), "kept").unwrap();
    std::fs::write(s.share.join("bk/photos/stray.txt"), "s").unwrap();

    // A file the hub refuses (its name holds a backslash): nothing is deleted.
    std::fs::write(photos.join("bad\\name.txt"), "x").unwrap();
    let err = fails(
        &hub.troca(&s.client, &["put", "photos", "--to", "bk", "--delete"]),
        1,
    );
    assert!(err.contains("nothing deleted on the hub"), "{err}");
    assert!(s.share.join("bk/photos/stray.txt").is_file());
    assert!(s.share.join("bk/photos/old/x/c.txt").is_file());
    std::fs::remove_file(photos.join("bad\\name.txt")).unwrap();

    // What this client uploaded goes; a file put there by other means needs the admin token.
    let err = fails(
        &hub.troca(&s.client, &["put", "photos", "--to", "bk", "--delete"]),
        1,
    );
    assert!(err.contains("deleted bk/photos/old/ on the hub"), "{err}");
    assert!(err.contains("cannot delete bk/photos/stray.txt"), "{err}");
    let admin = hub.admin_token();
    let args = ["put", "photos", "--to", "bk", "--delete"];
    let out = hub.troca_with(&s.client, &admin, &args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        err.contains("deleted bk/photos/stray.txt on the hub"),
        "{err}"
    );
    assert!(
        !err.contains("uploaded"),
        "what is the same is not sent again: {err}"
    );
    assert_eq!(
        files_under(&s.share.join("bk")),
        [
            "photos/a.txt",
            "photos/link",
            "photos/new.txt",
            "photos/same.txt"
        ]
    );
    assert_eq!(
        std::fs::read(s.share.join("bk/photos/a.txt")).unwrap(),
        b"a, changed"
    );
    assert!(
        s.share.join("bk/photos/sub").is_dir(),
        "a folder held here stays, empty"
    );

    // Down: a copy with extras of its own, a changed file and a link leading out.
    let copy = s.client.join("dl/photos");
    std::fs::create_dir_all(copy.join("extra/deep")).unwrap();
    std::fs::write(copy.join("extra/deep/e.txt"), "e").unwrap();
    std::fs::write(copy.join("a.txt"), "old").unwrap();
    std::fs::write(copy.join("mine.txt"), "m").unwrap();
    let outside = s.client.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), "p").unwrap();
    std::os::unix::fs::symlink(&outside, copy.join("out")).unwrap();
    ok(&hub.troca(&s.client, &["get", "bk/photos", "-o", "dl", "--delete"]));
    let mut here: Vec<String> = walkdir::WalkDir::new(&copy)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&copy)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    here.sort();
    assert_eq!(here, ["a.txt", "link", "new.txt", "same.txt", "sub"]);
    assert_eq!(std::fs::read(copy.join("a.txt")).unwrap(), b"a, changed");
    assert_eq!(std::fs::read(outside.join("precious.txt")).unwrap(), b"p");
    // Again: nothing differs, so nothing is fetched or deleted.
    let out = hub.troca(&s.client, &["get", "bk/photos", "-o", "dl", "--delete"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        !err.contains("downloaded") && !err.contains("deleted"),
        "{err}"
    );
}

#[test]
fn completions_and_the_manual_are_printed() {
    let run = |args: &[&str]| {
        std::process::Command::new(TROCA)
            .args(args)
            .output()
            .unwrap()
    };
    for (shell, marker) in [
        ("bash", "_troca()"),
        ("zsh", "#compdef troca"),
        ("fish", "complete -c troca"),
    ] {
        let out = ok(&run(&["completions", shell]));
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("serve"), "{shell} completes the commands");
    }
    let man = ok(&run(&["man"]));
    assert!(man.contains(".TH troca 1"), "{man}");
}

/// Runs `troca serve DIR` on a free port, for a start that must fail, until it ends.
fn serve_expecting_an_end(dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(TROCA)
        .arg("serve")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--no-http"])
        .output()
        .unwrap()
}

#[test]
fn serving_a_file_says_it_is_not_a_folder() {
    let s = Scratch::new();
    let file = s.tmp.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let out = serve_expecting_an_end(&file);
    let err = fails(&out, 1);
    assert!(err.contains("is a file, not a folder"), "{err}");
}

/// `--port`, what other file servers take, says what troca takes instead (a usage error:
/// nothing is served).
#[test]
fn serve_port_says_which_options_to_use() {
    let s = Scratch::new();
    let out = std::process::Command::new(TROCA)
        .arg("serve")
        .arg(&s.share)
        .args(["--port", "8080"])
        .output()
        .unwrap();
    let err = fails(&out, 2);
    assert!(
        err.contains("use --listen 127.0.0.1:8080 (this machine only) or --listen 0.0.0.0:8080"),
        "{err}"
    );
    assert!(!s.share.join(".troca").exists(), "nothing was started");
}

/// A second hub on a state folder in use would clear the first one's uploads in progress:
/// it is refused, naming the process that holds it, and the first goes on serving.
#[test]
fn a_second_hub_on_the_same_state_folder_is_refused() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let out = serve_expecting_an_end(&s.share);
    let err = fails(&out, 1);
    let pid = hub.daemon.child.id();
    assert!(
        err.contains(&format!(
            "another hub (process {pid}) is using the state folder"
        )),
        "{err}"
    );
    std::fs::write(s.client.join("a.txt"), "a").unwrap();
    ok(&hub.troca(&s.client, &["put", "a.txt"]));
}

#[test]
fn put_dash_uploads_standard_input_under_its_as_name() {
    use std::io::Write;
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut child = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("XDG_DATA_HOME", hub.client_data())
        .args(["put", "-", "--as", "logs/today.txt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from a pipe\n")
        .unwrap();
    ok(&child.wait_with_output().unwrap());
    assert_eq!(
        std::fs::read(s.share.join("logs/today.txt")).unwrap(),
        b"from a pipe\n"
    );
    let err = fails(&hub.troca(&s.client, &["put", "-"]), 1);
    assert!(err.contains("--as NAME"), "{err}");
}

#[test]
fn a_folders_links_and_special_files_are_named_as_skipped_and_a_named_pipe_is_read_once() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let tree = s.client.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/kept.txt"), "kept").unwrap();
    std::os::unix::fs::symlink("/etc/hostname", tree.join("link")).unwrap();
    std::os::unix::fs::symlink("..", tree.join("sub/loop")).unwrap();
    let fifo = tree.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let bad = tree.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("inside.txt"), "x").unwrap();
    // A name that is not UTF-8 cannot be stored as written: a failure, not a silent rename.
    let err = fails(&hub.troca(&s.client, &["put", "tree"]), 1);
    assert_eq!(files_under(&s.share), ["tree/sub/kept.txt"]);
    for (what, why) in [
        ("tree/link", "a symbolic link"),
        ("tree/sub/loop", "a symbolic link"),
        ("tree/fifo", "not a regular file"),
        ("name/inside.txt", "not valid UTF-8"),
    ] {
        let found = err
            .lines()
            .any(|l| l.starts_with("troca: skipped tree/") && l.contains(what) && l.contains(why));
        assert!(found, "{what}: {err}");
    }
    // Named on the command line, a pipe is read once into a temporary file, like `put -`.
    let writer = std::thread::spawn(move || std::fs::write(fifo, "through a pipe"));
    ok(&hub.troca(&s.client, &["put", "tree/fifo", "--as", "piped.txt"]));
    writer.join().unwrap().unwrap();
    assert_eq!(
        std::fs::read(s.share.join("piped.txt")).unwrap(),
        b"through a pipe"
    );
}

#[test]
fn an_uploader_without_a_token_may_undo_its_own_uploads_and_nobody_elses() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("draft.txt"), "draft").unwrap();
    std::fs::write(s.client.join("v2.txt"), "second draft").unwrap();
    ok(&hub.troca(&s.client, &["put", "draft.txt", "--as", "notes/today.txt"]));
    ok(&hub.troca(
        &s.client,
        &["put", "v2.txt", "--as", "notes/today.txt", "--force"],
    ));
    assert_eq!(
        std::fs::read_to_string(s.share.join("notes/today.txt")).unwrap(),
        "second draft"
    );
    // Someone else (another owner key) may not touch it.
    hub.trust_in(&s.tmp.path().join("someone-else"));
    let other = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .env("TROCA_HUB", &hub.addr)
        .env("XDG_DATA_HOME", s.tmp.path().join("someone-else"))
        .args(["rm", "notes/today.txt"])
        .output()
        .unwrap();
    let err = fails(&other, 1);
    assert!(err.contains("needs"), "{err}");
    // Its uploader may.
    ok(&hub.troca(&s.client, &["rm", "notes/today.txt"]));
    assert!(!s.share.join("notes/today.txt").exists());
    // The key stays on the client, readable by its owner only.
    let keys: Vec<_> = std::fs::read_dir(hub.client_data().join("troca/owner-keys"))
        .unwrap()
        .collect();
    assert_eq!(keys.len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &keys[0].as_ref().unwrap().metadata().unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// mkdir, mv, rm -r, find and ls --search on the command line, with owners' rights.
#[test]
fn folders_on_the_hub_from_the_command_line() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::create_dir_all(s.client.join("notes/old")).unwrap();
    std::fs::write(s.client.join("notes/a.txt"), "a").unwrap();
    std::fs::write(s.client.join("notes/old/b.txt"), "b").unwrap();
    ok(&hub.troca(&s.client, &["put", "notes"]));

    // An empty folder exists and is listed as one.
    let made = ok(&hub.troca(&s.client, &["mkdir", "photos/2026"]));
    assert!(made.is_empty(), "notes go to stderr: {made}");
    assert!(s.share.join("photos/2026").is_dir());
    let listed = ok(&hub.troca(&s.client, &["ls", "photos/"]));
    assert!(listed.contains("photos/2026/"), "{listed}");
    // A folder in the way is never replaced, and the refusal does not suggest --force.
    ok(&hub.troca(&s.client, &["mkdir", "elsewhere/2026"]));
    let err = fails(
        &hub.troca(&s.client, &["mv", "elsewhere/2026", "photos/"]),
        1,
    );
    assert!(
        err.contains("\"photos/2026/\" is a folder on the hub, which nothing replaces"),
        "{err}"
    );
    assert!(!err.contains("--force"), "{err}");
    // Nor does a folder take a file's place, or --force help it (as with mv(1)); a file in
    // the way of a new folder is said to be one.
    std::fs::write(s.share.join("photos/cover.txt"), "c").unwrap();
    let err = fails(
        &hub.troca_with(
            &s.client,
            &hub.admin_token(),
            &["mv", "--force", "elsewhere", "photos/cover.txt"],
        ),
        1,
    );
    assert!(
        err.contains(
            "\"photos/cover.txt\" is a file on the hub, and a folder never takes a file's place"
        ),
        "{err}"
    );
    assert!(!err.contains("use --force"), "{err}");
    assert!(s.share.join("elsewhere/2026").is_dir());
    let err = fails(
        &hub.troca(&s.client, &["mkdir", "photos/cover.txt/inner"]),
        1,
    );
    assert!(!err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(s.share.join("photos/cover.txt")).unwrap(),
        b"c"
    );
    std::fs::remove_file(s.share.join("photos/cover.txt")).unwrap();

    // Rename, move into a folder, and refuse to replace without --force.
    ok(&hub.troca(&s.client, &["mv", "notes/a.txt", "notes/first.txt"]));
    assert_eq!(
        std::fs::read(s.share.join("notes/first.txt")).unwrap(),
        b"a"
    );
    ok(&hub.troca(&s.client, &["mv", "notes/first.txt", "photos/2026"]));
    assert!(s.share.join("photos/2026/first.txt").is_file());
    std::fs::write(s.client.join("c.txt"), "c").unwrap();
    ok(&hub.troca(&s.client, &["put", "c.txt"]));
    let err = fails(
        &hub.troca(&s.client, &["mv", "c.txt", "notes/old/b.txt"]),
        1,
    );
    assert!(err.contains("already exists"), "{err}");
    ok(&hub.troca(&s.client, &["mv", "--force", "c.txt", "notes/old/b.txt"]));
    assert_eq!(
        std::fs::read(s.share.join("notes/old/b.txt")).unwrap(),
        b"c"
    );

    // Someone else may not move or delete what this client uploaded.
    let other = hub.troca_as(&s.client, "other", None, &["mv", "notes", "theirs"]);
    assert!(fails(&other, 1).contains("needs"), "{}", fails(&other, 1));
    let other = hub.troca_as(&s.client, "other", None, &["rm", "-r", "notes"]);
    fails(&other, 1);
    assert!(s.share.join("notes/old/b.txt").exists());

    // Search in every folder, any case; then remove a whole folder.
    let found = ok(&hub.troca(&s.client, &["find", "FIRST"]));
    assert!(found.contains("photos/2026/first.txt"), "{found}");
    // Each entry's own name, not the folders it is in; a text with a `/` looks at whole names.
    let found = json(&hub.troca(&s.client, &["--json", "find", "phot"]));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["name"], "photos/", "{found}");
    let found = json(&hub.troca(&s.client, &["--json", "find", "2026/f"]));
    assert_eq!(found[0]["name"], "photos/2026/first.txt", "{found}");
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    let found = json(&hub.troca(&s.client, &["--json", "ls", "--search", "old"]));
    assert_eq!(found[0]["name"], "notes/old/", "{found}");
    let err = fails(&hub.troca(&s.client, &["rm", "notes"]), 1);
    assert!(err.contains("rm -r"), "{err}");
    let gone = json(&hub.troca(&s.client, &["--json", "rm", "-r", "notes"]));
    assert_eq!(gone[0]["files"], 1, "{gone}");
    assert!(!s.share.join("notes").exists());
    let history = ok(&hub.troca(&s.client, &["history", "--op", "mv"]));
    assert!(
        history.contains("notes/a.txt -> notes/first.txt"),
        "{history}"
    );
}

/// A search answers at most 5,000 names, the first by name; when it may have left some out
/// it says so on stderr, and a narrower one answers whole without the note.
#[test]
fn a_search_that_may_have_left_names_out_says_so() {
    let s = Scratch::new();
    for i in 0..5_001 {
        std::fs::write(s.share.join(format!("photo-{i:05}.jpg")), "").unwrap();
    }
    let hub = Hub::start(&s.share, &[]);
    let out = hub.troca(&s.client, &["find", "photo"]);
    let found = ok(&out);
    assert_eq!(found.lines().count(), 5_000);
    assert!(found.lines().next().unwrap().ends_with("photo-00000.jpg"));
    assert!(found.lines().last().unwrap().ends_with("photo-04999.jpg"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("at most 5000 names") && err.contains("narrow"),
        "{err}"
    );
    let out = hub.troca(&s.client, &["find", "photo-0499"]);
    assert_eq!(ok(&out).lines().count(), 10);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hub looks at a bounded number of names for one search (`--search-names`): past them it
/// answers what it found, and every face says the answer may be incomplete; a search with no
/// such bound in the way says nothing.
#[test]
fn a_search_stopped_at_its_budget_says_so_on_every_face() {
    let s = Scratch::new();
    for i in 0..300 {
        std::fs::write(s.share.join(format!("f-{i:03}")), "").unwrap();
    }
    let hub = Hub::start(&s.share, &["--search-names", "100"]);
    let out = hub.troca(&s.client, &["find", "f-"]);
    let found = ok(&out).lines().count();
    assert!((1..=100).contains(&found), "{found} names");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--search-names") && err.contains("there may be more"),
        "{err}"
    );
    // A search that finds nothing in what it looked at says so, not "no name contains".
    let out = hub.troca(&s.client, &["find", "nothing"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--search-names") && !err.contains("no file"),
        "{err}"
    );

    // The JSON line mode.
    let mut child = Command::new(TROCA)
        .arg("json")
        .env("TROCA_HUB", &hub.addr)
        .env("XDG_DATA_HOME", hub.client_data())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ask = b"{\"operation\": \"find\", \"text\": \"f-\"}\n";
    child.stdin.take().unwrap().write_all(ask).unwrap();
    let answer: serde_json::Value =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(answer["cut"], true, "{answer}");

    // The web face, in a header beside the same rows.
    let web = hub.web.clone().unwrap();
    let out = curl(&["-i", &format!("{web}api/find?q=f-")]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("\r\nx-troca-cut: 1\r\n"), "{text}");

    // Within the budget: the whole answer, and no word of a cut.
    drop(hub);
    let hub = Hub::start(&s.share, &["--search-names", "1000"]);
    let out = hub.troca(&s.client, &["find", "f-"]);
    assert_eq!(ok(&out).lines().count(), 300);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = curl(&["-i", &format!("{}api/find?q=f-", hub.web.clone().unwrap())]);
    assert!(!String::from_utf8_lossy(&out.stdout)
        .to_lowercase()
        .contains("x-troca-cut"));
}

/// `troca status` counts in words that agree with the number: one file, one hit, two files.
#[test]
fn status_says_one_file_and_two_files() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("a.txt"), "one").unwrap();
    ok(&hub.troca(&s.client, &["put", "a.txt"]));
    ok(&hub.troca(&s.client, &["get", "a.txt", "-o", "-"]));
    ok(&hub.troca(&s.client, &["get", "a.txt", "-o", "-"]));
    let status = ok(&hub.troca(&s.client, &["status"]));
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"))
            .to_owned()
    };
    assert!(line("shared ").contains(" 1 file, "), "{status}");
    assert!(
        line("cache ").contains("1 file, ")
            && line("cache ").contains("1 hit, 1 miss, 0 evictions"),
        "{status}"
    );
    assert!(line("partials ").contains("0 uploads held"), "{status}");
    std::fs::write(s.client.join("b.txt"), "two").unwrap();
    ok(&hub.troca(&s.client, &["put", "b.txt"]));
    let status = ok(&hub.troca(&s.client, &["status"]));
    assert!(status.contains(" 2 files, "), "{status}");
}

/// One file of a folder download that cannot be saved (a local file is where its folder would
/// go) fails alone: the command says which and exits 1, and every other file, small or large,
/// still arrives.
#[test]
fn a_file_of_a_folder_that_cannot_be_saved_fails_alone() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    for (name, len) in [
        ("f/blocked/big.bin", 3 << 20),
        ("f/blocked/small.txt", 10),
        ("f/big.bin", 3 << 20),
        ("f/small.txt", 10),
        ("f/z/last.bin", 2 << 20),
    ] {
        let path = s.share.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        random_file(&path, len, name);
    }
    std::fs::create_dir_all(s.client.join("out/f")).unwrap();
    std::fs::write(s.client.join("out/f/blocked"), "a file, not a folder").unwrap();
    let out = hub.troca(&s.client, &["get", "f", "-o", "out"]);
    let err = fails(&out, 1);
    assert!(err.contains("cannot download f/blocked/big.bin"), "{err}");
    assert!(err.contains("cannot download f/blocked/small.txt"), "{err}");
    for name in ["f/big.bin", "f/small.txt", "f/z/last.bin"] {
        assert_eq!(
            hash_file(&s.client.join("out").join(name)),
            hash_file(&s.share.join(name)),
            "{name}"
        );
    }
}

/// Owner keys go with the hub's key, not the address typed: the same hub reached by another
/// name knows the same owner. A key kept for the address before is taken over.
#[test]
fn an_owner_is_known_whatever_address_reaches_the_hub() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    // A key kept for this address (as clients kept them before).
    let keys = hub.client_data().join("troca/owner-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let kept = "0f".repeat(32);
    std::fs::write(keys.join(hub.addr.replace(':', "_")), &kept).unwrap();

    std::fs::write(s.client.join("mine.txt"), "mine").unwrap();
    ok(&hub.troca(&s.client, &["put", "mine.txt"]));
    let by_key = keys.join(format!("key-{}", hub.key.as_ref().unwrap()));
    assert_eq!(std::fs::read_to_string(&by_key).unwrap(), kept);

    // Another name for the same hub: the same owner, who may delete it.
    let port = hub.addr.rsplit_once(':').unwrap().1;
    let out = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .env("XDG_DATA_HOME", hub.client_data())
        .env("TROCA_HUB", format!("localhost:{port}"))
        .env("TROCA_HUB_KEY", hub.key.as_ref().unwrap())
        .env_remove("TROCA_TOKEN")
        .args(["rm", "mine.txt"])
        .output()
        .unwrap();
    ok(&out);
    assert!(!s.share.join("mine.txt").exists());
}

/// A folder shared as it is may hold what the hub cannot serve: it says so when it starts,
/// naming a few (escaped), rather than leaving them silently missing from every listing; what
/// it can serve is served, and its own state folder is not counted.
#[test]
fn serve_names_what_it_cannot_share() {
    use std::os::unix::ffi::OsStrExt;
    let s = Scratch::new();
    std::fs::write(s.share.join("fine.txt"), "fine").unwrap();
    std::fs::write(s.share.join("new\nline.txt"), "x").unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname.txt");
    std::fs::write(s.share.join(bad), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.share.join("out")).unwrap();
    std::os::unix::fs::symlink("fine.txt", s.share.join("in")).unwrap();
    let fifo = std::ffi::CString::new(s.share.join("pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let hub = Hub::start(&s.share, &[]);
    let said = hub.daemon.wait_for_stderr("troca: not shared from");
    let line = said
        .lines()
        .find(|l| l.starts_with("troca: not shared from"))
        .unwrap();
    assert!(line.contains("2 names that cannot be served"), "{line}");
    assert!(line.contains("1 special file"), "{line}");
    assert!(line.contains("1 link that leads out"), "{line}");
    assert!(line.contains(r#""new\nline.txt""#), "{line}");
    assert!(line.contains(r#""bad\xFFname.txt""#), "{line}");
    assert!(
        !line.contains(".troca") && !line.contains("fine.txt"),
        "{line}"
    );
    let listed = ok(&hub.troca(&s.client, &["ls"]));
    assert!(
        listed.contains("fine.txt") && listed.contains("in"),
        "{listed}"
    );
}

#[test]
fn a_link_to_a_folder_inside_the_share_is_a_folder_on_every_face() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[("photos/a.txt", "a"), ("photos/2024/b.txt", "b")],
    );
    std::os::unix::fs::symlink("photos", s.share.join("fotos")).unwrap();
    // A link to its own folder: a loop, listed, never walked into unasked.
    std::os::unix::fs::symlink(".", s.share.join("photos/2024/again")).unwrap();
    let hub = Hub::start(&s.share, &[]);
    let names = |out: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.rsplit("  ").next().unwrap().to_owned())
            .collect()
    };
    let all = ok(&hub.troca(&s.client, &["ls"]));
    assert_eq!(
        names(&all),
        [
            "fotos/",
            "photos/2024/again/",
            "photos/2024/b.txt",
            "photos/a.txt"
        ]
    );
    let inside = ok(&hub.troca(&s.client, &["ls", "fotos/"]));
    assert_eq!(
        names(&inside),
        ["fotos/2024/again/", "fotos/2024/b.txt", "fotos/a.txt"]
    );
    let found = ok(&hub.troca(&s.client, &["find", "again"]));
    assert_eq!(names(&found), ["photos/2024/again/"]);

    // A download of the link brings the folder it reaches, under the link's name.
    ok(&hub.troca(&s.client, &["get", "fotos", "-o", "dl"]));
    assert_eq!(
        std::fs::read_to_string(s.client.join("dl/fotos/a.txt")).unwrap(),
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(s.client.join("dl/fotos/2024/b.txt")).unwrap(),
        "b"
    );
    // A name ending in `/` is a folder, or nothing: never a file of that name.
    let said = fails(&hub.troca(&s.client, &["get", "nothing/", "-o", "dl/"]), 1);
    assert!(said.contains(r#"no folder named "nothing""#), "{said}");
    assert!(!s.client.join("dl_downloaded").exists());

    // The web face: the HTTP API, the page without JavaScript, a zip, WebDAV.
    let web = hub.web.clone().unwrap();
    let api = curl(&[&format!("{web}api/files?prefix=fotos/2024/")]);
    let api: serde_json::Value = serde_json::from_slice(&api.stdout).unwrap();
    let api: Vec<&str> = api
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(api, ["fotos/2024/again/", "fotos/2024/b.txt"]);
    let page = String::from_utf8(curl(&[&format!("{web}files/")]).stdout).unwrap();
    assert!(page.contains(r#"href="/files/fotos/""#), "{page}");
    let zip = s.client.join("fotos.zip");
    ok(&curl(&[
        "-o",
        zip.to_str().unwrap(),
        &format!("{web}files/fotos/?zip"),
    ]));
    // Info-ZIP's unzip tests every entry's CRC-32, then unpacks the same files byte for byte.
    let unzipped = s.client.join("unzipped");
    let out = std::process::Command::new("unzip")
        .arg("-tq")
        .arg(&zip)
        .output()
        .expect("unzip (scripts/test installs it)");
    assert!(ok(&out).contains("No errors detected"), "{out:?}");
    ok(&std::process::Command::new("unzip")
        .arg("-q")
        .arg(&zip)
        .arg("-d")
        .arg(&unzipped)
        .output()
        .unwrap());
    let got = files_under(&unzipped);
    assert!(
        got.contains(&"fotos/2024/b.txt".to_owned()) && got.contains(&"fotos/a.txt".to_owned()),
        "{got:?}"
    );
    for name in &got {
        assert_eq!(
            std::fs::read(unzipped.join(name)).unwrap(),
            std::fs::read(s.share.join(name)).unwrap(),
            "{name}"
        );
    }
    let dav = curl(&[
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 1",
        &format!("{web}dav/fotos/"),
    ]);
    let dav = String::from_utf8(dav.stdout).unwrap();
    for href in ["/dav/fotos/2024/", "/dav/fotos/a.txt"] {
        assert!(
            dav.contains(&format!("<D:href>{href}</D:href>")),
            "{href} in {dav}"
        );
    }

    // Deleting or moving a link takes the link, never what it reaches: on the command line,
    // and through WebDAV, whose delete of a folder walks what it holds.
    let admin = format!("x:{}", hub.admin_token());
    let dav = |method: &str, name: &str, extra: &[&str]| -> String {
        let url = format!("{web}dav/{name}");
        let mut args = vec![
            "-u",
            &admin,
            "-X",
            method,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        ok(&curl(&args))
    };
    let to = format!("Destination: {web}dav/bilder");
    assert_eq!(dav("MOVE", "fotos/", &["-H", &to]), "201");
    assert!(s
        .share
        .join("bilder")
        .symlink_metadata()
        .unwrap()
        .is_symlink());
    assert_eq!(dav("DELETE", "bilder/", &[]), "204");
    std::fs::create_dir(s.share.join("other")).unwrap();
    std::os::unix::fs::symlink("../photos", s.share.join("other/l")).unwrap();
    assert_eq!(dav("DELETE", "other/", &[]), "204");
    std::os::unix::fs::symlink("photos", s.share.join("fotos")).unwrap();
    // With the slash, the name means the folder it leads to: refused, saying how to delete
    // the link instead.
    let err = fails(
        &hub.troca_with(&s.client, &hub.admin_token(), &["rm", "-r", "fotos/"]),
        1,
    );
    assert!(
        err.contains("\"fotos\" is a link to a folder") && err.contains("without the slash"),
        "{err}"
    );
    ok(&hub.troca_with(&s.client, &hub.admin_token(), &["rm", "-r", "fotos"]));
    for gone in ["fotos", "bilder", "other"] {
        assert!(s.share.join(gone).symlink_metadata().is_err(), "{gone}");
    }
    for (f, text) in [("photos/a.txt", "a"), ("photos/2024/b.txt", "b")] {
        assert_eq!(
            std::fs::read_to_string(s.share.join(f)).unwrap(),
            text,
            "{f} is kept"
        );
    }
}

/// Wildcards pick names on the hub, as a shell picks files (and as scp and sftp do): `*` and
/// `?` within a folder, `**` across them, a backslash for a plain character; a pattern that
/// matches nothing is a name of its own.
#[test]
fn wildcards_pick_names_on_the_hub_for_get_rm_mv_share_and_ls() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("a.pdf", "a"),
            ("b.pdf", "b"),
            ("notes.txt", "n"),
            ("docs/c.pdf", "c"),
            ("docs/old/d.pdf", "d"),
            ("logs/1.tmp", "1"),
            ("logs/2.tmp", "2"),
            ("logs/keep.log", "k"),
            ("photo [1].jpg", "p"),
            ("what*.txt", "w"),
        ],
    );
    let hub = Hub::start(&s.share, &[]);
    let admin = hub.admin_token();

    // get: the top level's PDFs only, then every PDF in every folder.
    ok(&hub.troca(&s.client, &["get", "*.pdf", "-o", "top/"]));
    assert_eq!(files_under(&s.client.join("top")), ["a.pdf", "b.pdf"]);
    ok(&hub.troca(&s.client, &["get", "**/*.pdf", "-o", "all/"]));
    let all = files_under(&s.client.join("all"));
    assert!(
        all.contains(&"d.pdf".to_owned()) && all.len() == 4,
        "{all:?}"
    );
    // Several matches cannot all go to standard output.
    let err = fails(&hub.troca(&s.client, &["get", "*.pdf", "-o", "-"]), 2);
    assert!(err.contains("-o - takes a single NAME"), "{err}");

    // ls: what matches, and what is in the folders that match.
    let listed = json(&hub.troca(&s.client, &["--json", "ls", "d*"]));
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs/c.pdf", "docs/old/d.pdf"]);
    let err = fails_or_empty(&hub.troca(&s.client, &["ls", "*.zip"]));
    assert!(err.contains("no names match"), "{err}");

    // rm: a folder's temporary files and nothing else.
    let gone = json(&hub.troca_with(&s.client, &admin, &["--json", "rm", "logs/*.tmp"]));
    assert_eq!(gone.as_array().unwrap().len(), 2, "{gone}");
    assert!(s.share.join("logs/keep.log").exists());
    assert!(!s.share.join("logs/1.tmp").exists());

    // mv: several matches go into a folder.
    ok(&hub.troca_with(&s.client, &admin, &["mkdir", "archive"]));
    ok(&hub.troca_with(&s.client, &admin, &["mv", "?.pdf", "archive"]));
    assert!(s.share.join("archive/a.pdf").is_file() && s.share.join("archive/b.pdf").is_file());

    // A name that only looks like a pattern, and an escaped wildcard.
    ok(&hub.troca(&s.client, &["get", "photo [1].jpg", "-o", "plain/"]));
    assert!(s.client.join("plain/photo [1].jpg").is_file());
    let got = ok(&hub.troca(&s.client, &["get", r"what\*.txt", "-o", "-"]));
    assert_eq!(got, "w");
    let err = fails(&hub.troca(&s.client, &["get", "nothing*"]), 1);
    assert!(err.contains("nothing*"), "{err}");

    // share: a link for each match.
    let write = make_token(&hub, "write", &[]);
    let made = json(&hub.troca_with(&s.client, &write, &["--json", "share", "archive/*"]));
    assert_eq!(made.as_array().unwrap().len(), 2, "{made}");
}

/// An empty `ls` exits 0 with its note on stderr.
fn fails_or_empty(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A hub on every address (`0.0.0.0`) names the addresses others can type, not `0.0.0.0`: its
/// page on each (loopback last), and a connect string that works as printed.
#[test]
fn a_hub_on_every_address_prints_addresses_others_can_use() {
    use std::io::BufRead;
    let s = Scratch::new();
    let mut child = std::process::Command::new(TROCA)
        .args(["serve", s.share.to_str().unwrap(), "--listen", "0.0.0.0:0"])
        .args(["--http", "0.0.0.0:0", "--http-plaintext"])
        .env("XDG_DATA_HOME", s.tmp.path().join("hub-data"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{lines:?}");
        let done = line.starts_with("connect with:");
        lines.push(line.trim().to_owned());
        if done {
            break;
        }
    }
    assert!(lines[0].starts_with("listening on 0.0.0.0:"), "{lines:?}");
    let pages: Vec<&String> = lines.iter().filter(|l| l.starts_with("http://")).collect();
    assert!(!pages.is_empty(), "{lines:?}");
    assert!(
        lines[1..].iter().all(|l| !l.contains("0.0.0.0")),
        "{lines:?}"
    );
    assert!(
        pages.last().unwrap().starts_with("http://127.0.0.1:"),
        "{lines:?}"
    );
    for page in &pages {
        let got = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", page]);
        assert_eq!(String::from_utf8_lossy(&got.stdout), "200", "{page}");
    }
    // The connect string, pasted as printed, reaches the hub and pins its key.
    let connect = lines.last().unwrap();
    let hub = connect.split('\'').nth(1).unwrap();
    let listed = std::process::Command::new(TROCA)
        .args(["--hub", hub, "ls"])
        .env("XDG_DATA_HOME", s.tmp.path().join("client-data"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    assert!(
        String::from_utf8_lossy(&listed.stderr).contains("shares no files"),
        "{listed:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The systemd unit in `contrib/` is one systemd takes without a word, and the hub it starts
/// runs with exactly its arguments.
#[test]
fn the_systemd_unit_in_contrib_is_valid_and_its_hub_starts() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../contrib/systemd/troca.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/troca");

    // Its arguments, with this build, a scratch folder and free ports.
    let s = Scratch::new();
    let share = s.share.join("shared");
    let share = share.to_str().unwrap();
    let here: Vec<&str> = args[1..]
        .iter()
        .map(|a| match *a {
            "/var/lib/troca/shared" => share,
            a if a.starts_with("0.0.0.0:") => "127.0.0.1:0",
            a => a,
        })
        .collect();
    let hub = Daemon::start(&here);
    assert!(hub.addr.starts_with("127.0.0.1:"), "{}", hub.addr);
    assert!(std::path::Path::new(share)
        .join(".troca/admin.token")
        .exists());

    if !needs("systemd-analyze", "the unit in contrib/systemd is checked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("troca.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/troca", TROCA)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.is_empty(), "not a word: {said}");
}

/// `cp` copies on the hub: a file to a new name or into a folder, a folder whole (its empty
/// folders too, nothing the hub hides), several at once into a folder; never over a file
/// without --force, never over a folder, never into itself. The copy is the copier's own,
/// its hash known; the HTTP API copies the same way and the history records each copy.
#[test]
fn cp_copies_files_and_folders_on_the_hub() {
    let s = Scratch::new();
    write_tree(
        &s.share,
        &[
            ("a.txt", "a"),
            ("photos/2024/x.jpg", "x"),
            ("photos/.thumbs/x.jpg", "t"),
            ("photos/y.jpg", "yy"),
        ],
    );
    std::fs::create_dir_all(s.share.join("photos/empty")).unwrap();
    let big = 5 * 1024 * 1024 + 3;
    random_file(&s.share.join("photos/big.bin"), big, "cp");
    let hub = Hub::start(&s.share, &["--hide", ".*"]);
    let troca = |args: &[&str]| hub.troca(&s.client, args);
    let read = |name: &str| std::fs::read_to_string(s.share.join(name)).unwrap();

    // A file: to a new name; not over another without --force; over it with.
    let said = troca(&["cp", "a.txt", "b.txt"]);
    ok(&said);
    let said = String::from_utf8_lossy(&said.stderr);
    assert!(
        said.contains("copied a.txt to b.txt (1 file, 1 B)"),
        "{said}"
    );
    assert_eq!(read("b.txt"), "a");
    let err = fails(&troca(&["cp", "photos/y.jpg", "b.txt"]), 1);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(read("b.txt"), "a");
    ok(&troca(&["cp", "-f", "photos/y.jpg", "b.txt"]));
    assert_eq!(read("b.txt"), "yy");

    // A folder, whole, into another: what it hides stays behind.
    let copied = json(&troca(&["--json", "cp", "-r", "photos", "backup/"]));
    assert_eq!(copied[0]["name"], "backup/photos", "{copied}");
    assert_eq!(copied[0]["files"], 3, "{copied}");
    assert_eq!(copied[0]["bytes"], big + 3, "{copied}");
    let copy = s.share.join("backup/photos");
    assert_eq!(
        hash_file(&copy.join("big.bin")),
        hash_file(&s.share.join("photos/big.bin"))
    );
    assert_eq!(read("backup/photos/2024/x.jpg"), "x");
    assert!(copy.join("empty").is_dir());
    assert!(!copy.join(".thumbs").exists());
    // The hub learnt each copy's hash as it wrote it.
    let listed = json(&troca(&["--json", "ls", "backup/photos/big.bin"]));
    assert_eq!(
        listed[0]["blake3"],
        hash_file(&s.share.join("photos/big.bin"))
    );

    // Never over a folder (and --force is no help there), never into itself.
    let err = fails(&troca(&["cp", "photos", "backup/"]), 1);
    assert!(
        err.contains("\"backup/photos/\" is a folder on the hub, which nothing replaces"),
        "{err}"
    );
    assert!(!err.contains("--force"), "{err}");
    let err = fails(&troca(&["cp", "photos", "photos/again"]), 1);
    assert!(
        err.contains("cannot copy \"photos\" to \"photos/again\": that is itself or inside it"),
        "{err}"
    );

    // Several at once (a wildcard among them) go into a folder.
    ok(&troca(&["cp", "photos/*.jpg", "a.txt", "picked"]));
    assert_eq!(read("picked/y.jpg"), "yy");
    assert_eq!(read("picked/a.txt"), "a");

    // The copy is the copier's own: another client may not delete it, the copier may.
    fails(&hub.troca_as(&s.client, "other", None, &["rm", "b.txt"]), 1);
    ok(&troca(&["rm", "b.txt"]));

    // The HTTP API.
    let web = hub.web.clone().unwrap();
    let answer = ok(&curl(&[
        "-f",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"from": "photos/y.jpg", "to": "web/"}"#,
        &format!("{web}api/copy"),
    ]));
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["name"], "web/y.jpg", "{answer}");
    assert_eq!(answer["files"], 1, "{answer}");
    assert_eq!(read("web/y.jpg"), "yy");
    let refused = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"from": "a.txt", "to": "web/y.jpg"}"#,
        &format!("{web}api/copy"),
    ]);
    assert_eq!(ok(&refused), "409");

    let history = ok(&troca(&["history", "--op", "cp"]));
    assert!(history.contains("photos -> backup/"), "{history}");
    assert!(history.contains("photos/y.jpg -> web/"), "{history}");
}

/// `serve --config FILE` takes the hub's settings from a TOML file; what the command line says
/// wins, and a wrong setting stops the hub before it starts, naming the file and the setting.
#[test]
fn a_hub_takes_its_settings_from_a_file() {
    let s = Scratch::new();
    std::fs::write(s.share.join("id.key"), "secret").unwrap();
    std::fs::write(s.share.join("notes.txt"), "notes").unwrap();
    std::fs::write(s.client.join("new.txt"), "new").unwrap();
    let file = s.client.join("hub.toml");
    // The command line gives its own folder and address: the file's are not used (nothing
    // listens on 192.0.2.1, and no such folder is made).
    let elsewhere = s.client.join("not-shared");
    let settings = format!(
        "# the hub's settings\nfolder = {elsewhere:?}\nlisten = \"192.0.2.1:1\"\n\
         read-only = true\nhide = [\"*.key\", \".git\"]\nmax-connections-per-ip = 64\n"
    );
    std::fs::write(&file, settings).unwrap();
    let hub = Hub::start(&s.share, &["--config", file.to_str().unwrap()]);
    hub.daemon.wait_for_stderr("settings from");
    assert_eq!(
        ok(&hub.troca(&s.client, &["ls"]))
            .trim_end()
            .lines()
            .count(),
        1
    );
    let err = fails(&hub.troca(&s.client, &["put", "new.txt"]), 1);
    assert!(err.contains("read-only"), "{err}");
    assert!(!elsewhere.exists());
    // A wrong setting: the hub does not start, and says where and what.
    for (text, said) in [
        (
            "lisen = \"0.0.0.0:13370\"",
            "`lisen` is not a setting of `troca serve`; did you mean `listen`?",
        ),
        (
            "cache-size = \"lots\"",
            "`cache-size`: invalid value 'lots'",
        ),
        ("\n\nlisten = ", "hub.toml:3: not valid TOML"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(common::TROCA)
            .args(["serve", "--config", file.to_str().unwrap()])
            .arg(&s.share)
            .output()
            .unwrap();
        let err = fails(&out, 2);
        assert!(err.contains(said) && err.contains("hub.toml"), "{err}");
    }
}

/// `--dry-run` (`-n`) says what a put or a get would send, replace, make and delete, one line
/// each (or JSON), and changes nothing on either side.
#[test]
fn a_dry_run_says_what_would_happen_and_changes_nothing() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let c = &s.client;
    write_tree(c, &[("album/a.txt", "a"), ("album/sub/b.txt", "b")]);
    std::fs::create_dir_all(c.join("album/empty")).unwrap();
    let out = ok(&hub.troca(c, &["put", "album", "-n"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "send album/a.txt",
            "send album/sub/b.txt",
            "create album/empty/"
        ]
    );
    assert!(files_under(&s.share).is_empty(), "nothing sent");
    ok(&hub.troca(c, &["put", "album"]));
    // All the same on the hub: nothing to do, but for --force alone, which sends again.
    let out = hub.troca(c, &["put", "album", "-n"]);
    assert_eq!(ok(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to do"));
    let out = ok(&hub.troca(c, &["put", "album", "-n", "--force"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["replace album/a.txt", "replace album/sub/b.txt"]
    );
    // Changed here: a.txt differs, c.txt is new, b.txt gone.
    write_tree(c, &[("album/a.txt", "a, changed"), ("album/c.txt", "c")]);
    std::fs::remove_file(c.join("album/sub/b.txt")).unwrap();
    let out = ok(&hub.troca(c, &["put", "album", "--dry-run"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["refuse album/a.txt", "send album/c.txt"]
    );
    let out = ok(&hub.troca(c, &["--json", "put", "album", "-n", "--delete"]));
    let steps: Vec<(String, String)> = serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["action"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("replace", "album/a.txt"),
        ("send", "album/c.txt"),
        ("delete", "album/sub/b.txt"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, n)| (a.to_string(), n.to_string()))
        .collect();
    assert_eq!(steps, want, "{out}");
    assert_eq!(std::fs::read(s.share.join("album/a.txt")).unwrap(), b"a");
    assert!(s.share.join("album/sub/b.txt").is_file());
    assert!(!s.share.join("album/c.txt").exists());
    // Down: what would come, where, and what would be deleted here.
    write_tree(c, &[("dl/album/a.txt", "a"), ("dl/album/stale.txt", "old")]);
    let out = ok(&hub.troca(c, &["get", "album", "-o", "dl", "-n", "--delete"]));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "create dl/album/empty/",
            "download album/sub/b.txt -> dl/album/sub/b.txt",
            "delete dl/album/stale.txt",
        ],
        "a.txt is here already"
    );
    assert!(!c.join("dl/album/empty").exists());
    assert!(c.join("dl/album/stale.txt").is_file());
    assert!(!c.join("dl/album/sub").exists());
}

/// `troca ls | head`: a reader that goes away early ends troca quietly, without a panic.
#[test]
fn a_reader_closing_stdout_early_ends_troca_quietly() {
    let s = Scratch::new();
    std::fs::write(s.share.join("one.txt"), "1").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let mut child = Command::new(common::TROCA)
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("XDG_DATA_HOME", hub.client_data())
        .args(["--json", "ls"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before troca has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
