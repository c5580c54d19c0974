//! The tracker binary and `troca swarm ls` against it.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use troca_proto::tracker::FileInfo;
use troca_tracker::client::TrackerClient;

struct Tracker(std::process::Child, String);

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tracker() -> Tracker {
    let mut child = Command::new(TROCA)
        .args(["tracker", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();
    Tracker(child, addr)
}

#[tokio::test]
async fn swarm_ls_shows_what_peers_registered() {
    let t = start_tracker();
    let mut peer = TrackerClient::new(t.1.parse().unwrap()).await.unwrap();
    let file = FileInfo {
        id: *blake3::hash(b"img").as_bytes(),
        size: 3,
        name: "cat.png".into(),
    };
    peer.register(9000, [7; 16], &[file]).await.unwrap();
    let out = Command::new(TROCA)
        .args(["--json", "swarm", "ls", "--tracker", &t.1])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(rows[0]["name"], "cat.png");
    assert_eq!(rows[0]["id"], blake3::hash(b"img").to_hex().as_str());
    assert_eq!(rows[0]["peers"][0], "127.0.0.1:9000");
    let out = Command::new(TROCA)
        .args(["swarm", "ls", "--tracker", &t.1, "dog"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "", "the filter leaves nothing");
}
