//! The hub's records: who is connected and doing what, the history (which survives restarts and
//! records refusals), status and time, and the hot-file cache.

mod common;
use common::*;
use troca_net::{ClientOptions, HubClient};
use troca_proto::msg::Put;

fn named(hub: &Hub, name: &str) -> ClientOptions {
    ClientOptions {
        name: name.into(),
        ..hub.options()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_shows_named_clients_and_what_they_are_doing() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let mut ana = HubClient::connect(&hub.addr, &named(&hub, "ana"))
        .await
        .unwrap();
    ana.list("").await.unwrap();
    let mut bo = HubClient::connect(&hub.addr, &named(&hub, "temp"))
        .await
        .unwrap();
    bo.register("bo").await.unwrap();
    let mut up = bo
        .put(Put {
            name: "movie.bin".into(),
            size: 1000,
            source_mtime_ns: 1,
            force: false,
        })
        .await
        .unwrap();
    up.write(&[1u8; 400]).await.unwrap();

    // The hub reads an upload's bytes in batches (up to 100 ms apart for a trickle like this),
    // so ask until the 400 bytes show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let who = loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let who = json(&hub.troca(&s.client, &["--name", "carol", "--json", "who"]));
        let bo_done = who
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == "bo"))
            .map(|r| r["done"].clone());
        if bo_done == Some(serde_json::json!(400)) || std::time::Instant::now() > deadline {
            break who;
        }
    };
    let rows = who.as_array().unwrap();
    let find = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {who}"))
    };
    assert_eq!(find("ana")["activity"], "idle");
    let bo_row = find("bo");
    assert_eq!(bo_row["activity"], "uploading");
    assert_eq!(bo_row["target"], "movie.bin");
    assert_eq!(bo_row["done"], 400);
    assert_eq!(bo_row["total"], 1000);
    assert_eq!(bo_row["bytes_received"], 400);
    assert!(bo_row["connected_at"].as_str().unwrap().ends_with('Z'));
    assert!(bo_row["address"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(find("carol").is_object(), "the asking client is listed too");
    assert!(
        rows.iter().all(|r| r["name"] != "temp"),
        "the old name is gone"
    );

    // The human form says the same.
    let text = ok(&hub.troca(&s.client, &["who"]));
    assert!(text.contains("uploading movie.bin 40%"), "{text}");
    let _ = up;
}

#[test]
fn history_survives_a_restart_and_records_refusals() {
    let s = Scratch::new();
    std::fs::write(s.client.join("keep.txt"), "keep").unwrap();
    let hub = Hub::start(&s.share, &[]);
    ok(&hub.troca(&s.client, &["--name", "ana", "put", "keep.txt"]));
    fails(
        &hub.troca_as(&s.client, "eve", None, &["--name", "eve", "rm", "keep.txt"]),
        1,
    );
    let (status, _) = hub.terminate();
    assert!(status.success());

    let hub = Hub::start(&s.share, &[]);
    let all = json(&hub.troca(&s.client, &["--json", "history"]));
    let rows = all.as_array().unwrap();
    let put = rows
        .iter()
        .find(|r| r["op"] == "put")
        .expect("the put survived the restart");
    assert_eq!(put["client"], "ana");
    assert_eq!(put["target"], "keep.txt");
    assert_eq!(put["ok"], true);
    assert_eq!(put["bytes"], 4);
    let rm = rows
        .iter()
        .find(|r| r["op"] == "rm")
        .expect("the refused rm is recorded");
    assert_eq!(rm["client"], "eve");
    assert_eq!(rm["ok"], false);
    assert!(rm["error"].as_str().unwrap().contains("forbidden"), "{rm}");
    assert!(rm["time"].as_str().unwrap().ends_with('Z'));
    assert!(rm["address"].as_str().unwrap().starts_with("127.0.0.1:"));

    let only_rm = json(&hub.troca(&s.client, &["--json", "history", "--op", "rm"]));
    assert_eq!(only_rm.as_array().unwrap().len(), 1);
    let only_ana = json(&hub.troca(&s.client, &["--json", "history", "--client", "ana"]));
    assert!(only_ana
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["client"] == "ana"));
    let one = json(&hub.troca(&s.client, &["--json", "history", "--limit", "1"]));
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(
        one[0]["op"], "history",
        "newest first: the previous history request"
    );

    // A page that leaves older entries says the command that shows them, with the same
    // filters; run as said, it does.
    let said = succeeds(&hub.troca(&s.client, &["history", "--limit", "1", "--op", "history"]));
    let hint = said
        .lines()
        .find_map(|l| l.strip_prefix("older entries: troca "))
        .unwrap_or_else(|| panic!("a hint to the next page: {said}"));
    let words: Vec<&str> = hint.split(' ').collect();
    assert_eq!(&words[..5], ["history", "--limit", "1", "--op", "history"]);
    let mut args = vec!["--json"];
    args.extend(&words);
    let next = json(&hub.troca(&s.client, &args));
    let next = next.as_array().unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["op"], "history");
}

/// The stderr of a command that succeeded.
fn succeeds(out: &std::process::Output) -> String {
    ok(out);
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn status_figures_match_what_was_uploaded_and_time_is_the_hubs() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    for (name, len) in [("a", 10), ("b", 2000), ("c", 300_000)] {
        random_file(&s.client.join(name), len, name);
        ok(&hub.troca(&s.client, &["put", name]));
    }
    let st = json(&hub.troca(&s.client, &["--json", "status"]));
    assert_eq!(st["files"], 3);
    assert_eq!(st["bytes"], 10 + 2000 + 300_000);
    assert_eq!(st["clients"], 1, "the asking client");
    assert_eq!(st["transfers"], 0);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptime_s"].as_u64().is_some());
    let hub_time: jiff::Timestamp = st["time"].as_str().unwrap().parse().unwrap();
    let skew = jiff::Timestamp::now()
        .duration_since(hub_time)
        .as_secs()
        .abs();
    assert!(skew < 60, "hub time {hub_time} is the hub's clock");
    assert!(!st["time_zone"].as_str().unwrap().is_empty());

    let t = ok(&hub.troca(&s.client, &["time"]));
    let parsed: jiff::Timestamp = t.trim().parse().expect("RFC 3339");
    assert!(
        jiff::Timestamp::now()
            .duration_since(parsed)
            .as_secs()
            .abs()
            < 60
    );
}

#[test]
fn the_cache_serves_hot_files_and_never_a_stale_one() {
    let s = Scratch::new();
    std::fs::write(s.share.join("hot.txt"), "version one").unwrap();
    let hub = Hub::start(&s.share, &[]);
    for _ in 0..3 {
        let out = hub.troca(&s.client, &["get", "hot.txt", "-o", "-"]);
        assert_eq!(out.stdout, b"version one");
    }
    let st = json(&hub.troca(&s.client, &["--json", "status"]));
    assert_eq!(st["cache"]["hits"], 2);
    assert_eq!(st["cache"]["misses"], 1);
    assert_eq!(st["cache"]["entries"], 1);
    assert_eq!(st["cache"]["bytes"], 11);

    // Changed on disk behind the hub's back, same size: a new mtime makes it another file.
    std::fs::write(s.share.join("hot.txt"), "version two").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(s.share.join("hot.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let out = hub.troca(&s.client, &["get", "hot.txt", "-o", "-"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"version two");

    // Replaced through the hub: the entry is dropped at once.
    std::fs::write(s.client.join("hot.txt"), "version three, longer").unwrap();
    ok(&hub.troca_with(
        &s.client,
        &hub.admin_token(),
        &["put", "--force", "hot.txt"],
    ));
    let out = hub.troca(&s.client, &["get", "hot.txt", "-o", "-"]);
    assert_eq!(out.stdout, b"version three, longer");
}

#[test]
fn the_cache_can_be_turned_off() {
    let s = Scratch::new();
    std::fs::write(s.share.join("f"), "x").unwrap();
    let hub = Hub::start(&s.share, &["--cache-size", "0"]);
    for _ in 0..2 {
        assert!(hub
            .troca(&s.client, &["get", "f", "-o", "-"])
            .status
            .success());
    }
    let st = json(&hub.troca(&s.client, &["--json", "status"]));
    assert_eq!(st["cache"]["entries"], 0);
    assert_eq!(st["cache"]["hits"], 0);
}
