//! What a newcomer tries first: options with units, empty results that say so.

mod common;

use common::*;

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
