//! Metrics from the outside: a real Prometheus (Debian's package, installed by `scripts/test`)
//! scrapes `troca serve --metrics` and its values match what the test did.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus server scraping `target` every second; killed on drop.
struct Prometheus {
    child: Child,
    api: String,
    _data: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn scraping(targets: &[&str]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let targets = targets.join(", ");
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs: [{{job_name: troca, \
                 static_configs: [{{targets: [{targets}]}}]}}]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("db").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prometheus {
            child,
            api: format!("http://127.0.0.1:{port}/api/v1"),
            _data: data,
        }
    }

    /// The value of `query` once Prometheus has one that `done` accepts (it scrapes every
    /// second): waits for that event, up to a minute.
    fn value_when(&self, query: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "5",
                    "-G",
                    &format!("{}/query", self.api),
                ])
                .args(["--data-urlencode", &format!("query={query}")])
                .output()
                .unwrap();
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let value = v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok());
            if let Some(x) = value {
                if done(x) {
                    return x;
                }
            }
            last = value;
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{query} never matched (last {last:?})");
    }
}

#[test]
fn prometheus_scrapes_what_a_hub_a_tracker_and_a_peer_did() {
    if !needs("prometheus", "the metrics' scraper") || !needs("curl", "an HTTP client") {
        return;
    }
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--metrics", "127.0.0.1:0"]);
    let metrics = hub.metrics.clone().expect("the metrics address");
    let target = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    for i in 0..3 {
        let f = s.client.join(format!("f{i}.bin"));
        random_file(&f, 10_000 + i, &i.to_string());
        ok(&hub.troca(&s.client, &["put", f.to_str().unwrap()]));
    }
    fails(&hub.troca(&s.client, &["get", "missing.bin"]), 1);
    let got = hub.troca(&s.client, &["get", "f1.bin", "-o", "-"]);
    assert!(got.status.success() && got.stdout.len() == 10_001);
    let web = hub.web.clone().unwrap();
    let dav = Command::new("curl")
        .args(["-sS", "-T", "/etc/hostname", &format!("{web}dav/d.txt")])
        .status()
        .unwrap();
    assert!(dav.success());

    // The text itself first: OpenMetrics, ending as the format says.
    let text = Command::new("curl")
        .args(["-sS", &metrics])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains(r#"troca_requests_total{face="native",op="put",outcome="ok"} 3"#),
        "{text}"
    );

    // A tracker with a peer sharing two files, listed twice.
    let tracker = Daemon::start_with_lines(
        &[
            "tracker",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        1,
    );
    let tracker_metrics = tracker.1[0].strip_prefix("metrics http://").unwrap();
    let tracker_target = tracker_metrics.trim_end_matches("/metrics").to_owned();
    let shared = s.tmp.path().join("peer");
    std::fs::create_dir_all(&shared).unwrap();
    random_file(&shared.join("a.bin"), 5000, "a");
    random_file(&shared.join("b.bin"), 6000, "b");
    let (peer, peer_lines) = Daemon::start_with_lines(
        &[
            "peer".as_ref(),
            shared.as_os_str(),
            "--tracker".as_ref(),
            tracker.0.addr.as_ref(),
            "--metrics".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        2,
    );
    let peer_target = peer_lines
        .iter()
        .find_map(|l| l.strip_prefix("metrics http://"))
        .expect("the peer's metrics address")
        .trim_end_matches("/metrics")
        .to_owned();
    let list = || {
        Command::new(TROCA)
            .env("TROCA_TRACKER", &tracker.0.addr)
            .args(["--json", "swarm", "ls"])
            .output()
            .unwrap()
    };
    // The peer registers as it starts: wait until the tracker lists both files.
    let deadline = Instant::now() + Duration::from_secs(30);
    while json(&list()).as_array().map_or(0, Vec::len) < 2 {
        assert!(Instant::now() < deadline, "the peer's files never showed");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One file fetched from the peer through the swarm: one piece served.
    let fetched = s.tmp.path().join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();
    let got = Command::new(TROCA)
        .current_dir(&fetched)
        .env("TROCA_TRACKER", &tracker.0.addr)
        .env("XDG_DATA_HOME", s.tmp.path().join("swarm-data"))
        .args(["swarm", "get", "a.bin", "--no-share"])
        .output()
        .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(
        hash_file(&fetched.join("a.bin")),
        hash_file(&shared.join("a.bin"))
    );
    let p = Prometheus::scraping(&[&target, &tracker_target, &peer_target]);
    let puts = r#"troca_requests_total{face="native",op="put",outcome="ok"}"#;
    assert_eq!(p.value_when(puts, |v| v > 0.0), 3.0);
    let missing = r#"troca_requests_total{op="get",outcome="not_found"}"#;
    assert_eq!(p.value_when(missing, |v| v > 0.0), 1.0);
    let dav_puts = r#"troca_requests_total{face="dav",op="put",outcome="ok"}"#;
    assert_eq!(p.value_when(dav_puts, |v| v > 0.0), 1.0);
    let received = r#"troca_bytes_total{direction="in"}"#;
    let want = (10_000 + 10_001 + 10_002) as f64;
    assert!(p.value_when(received, |v| v >= want) >= want);
    let sent = r#"troca_bytes_total{direction="out"}"#;
    assert!(p.value_when(sent, |v| v >= 10_001.0) >= 10_001.0);
    let took = r#"troca_request_duration_seconds_count{face="native",op="put"}"#;
    assert_eq!(p.value_when(took, |v| v > 0.0), 3.0);
    // A gauge says how things are now: nothing is being transferred once the test is done.
    assert_eq!(p.value_when("troca_transfers", |_| true), 0.0);
    assert_eq!(p.value_when("troca_tracker_files", |v| v > 0.0), 2.0);
    assert_eq!(p.value_when("troca_tracker_peers", |v| v > 0.0), 1.0);
    let registered = r#"troca_tracker_datagrams_total{kind="register"}"#;
    assert!(p.value_when(registered, |v| v > 0.0) >= 1.0);
    let lists = r#"troca_tracker_datagrams_total{kind="list"}"#;
    let listed = p.value_when(lists, |v| v > 0.0);
    assert!(listed >= 1.0);
    let answers = p.value_when("troca_tracker_answers_total", |v| v >= listed);
    assert!(answers >= listed);
    assert_eq!(
        p.value_when("troca_peer_pieces_served_total", |v| v > 0.0),
        1.0
    );
    assert_eq!(
        p.value_when("troca_peer_bytes_served_total", |v| v > 0.0),
        5000.0
    );
    assert_eq!(p.value_when("troca_peer_bad_pieces_total", |_| true), 0.0);
    drop(peer);
}
