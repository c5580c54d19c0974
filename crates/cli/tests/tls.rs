//! The native protocol is encrypted (TLS 1.3) and the hub is trusted by its key, as SSH trusts
//! hosts: pinned, or remembered after a first "yes"; never a secret in the clear, never a
//! request to a hub whose key is not the one trusted.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A TCP relay to `target` that keeps every byte it carries, both ways.
fn recording_proxy(target: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (target, seen2) = (target.to_owned(), Arc::clone(&seen));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let seen = Arc::clone(&seen2);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        seen.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
    (addr, seen)
}

/// A hub serving the certificate and key in `pki/hub.pem` and `pki/hub.key`.
fn hub_with_given_cert(share: &std::path::Path, pki: &std::path::Path) -> Hub {
    Hub::start(
        share,
        &[
            "--tls-cert",
            pki.join("hub.pem").to_str().unwrap(),
            "--tls-key",
            pki.join("hub.key").to_str().unwrap(),
        ],
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails naming the first of `secrets` that appears in the bytes a relay carried.
fn none_in_the_clear(wire: &[u8], secrets: &[&[u8]]) {
    for secret in secrets {
        assert!(
            !contains(wire, secret),
            "{:?} crossed in the clear",
            String::from_utf8_lossy(secret)
        );
    }
}

fn troca_via(
    hub: &Hub,
    addr: &str,
    cwd: &std::path::Path,
    token: &str,
    args: &[&str],
) -> std::process::Output {
    std::process::Command::new(TROCA)
        .current_dir(cwd)
        .env("TROCA_HUB", addr)
        .env("TROCA_HUB_KEY", hub.key.as_ref().unwrap())
        .env("XDG_DATA_HOME", hub.client_data())
        .env("TROCA_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn no_token_owner_key_or_file_name_crosses_the_wire_in_the_clear() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let (proxy, seen) = recording_proxy(&hub.addr);
    let token = hub.admin_token();
    std::fs::write(s.client.join("secret-plans.txt"), "the plans").unwrap();
    ok(&troca_via(
        &hub,
        &proxy,
        &s.client,
        &token,
        &["put", "secret-plans.txt"],
    ));
    ok(&troca_via(
        &hub,
        &proxy,
        &s.client,
        &token,
        &["rm", "secret-plans.txt"],
    ));
    let wire = seen.lock().unwrap().clone();
    assert!(wire.len() > 1000, "the proxy carried the session");
    let owner_keys = std::fs::read_dir(hub.client_data().join("troca/owner-keys")).unwrap();
    let owner_key =
        std::fs::read_to_string(owner_keys.into_iter().next().unwrap().unwrap().path()).unwrap();
    none_in_the_clear(
        &wire,
        &[
            token.as_bytes(),
            owner_key.trim().as_bytes(),
            b"secret-plans",
            b"the plans",
            b"TRCA",
        ],
    );
}

#[test]
fn a_pinned_key_connects_and_a_wrong_one_is_refused_before_any_request() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &[]);
    let key = hub.key.clone().unwrap();
    let fresh = s.tmp.path().join("fresh-client");
    let run = |args: &[&str]| {
        std::process::Command::new(TROCA)
            .current_dir(&s.client)
            .env("XDG_DATA_HOME", &fresh)
            .env_remove("TROCA_HUB")
            .env_remove("TROCA_HUB_KEY")
            .args(args)
            .output()
            .unwrap()
    };
    // Pinned by flag, by connect string: both connect; status shows the key it checked.
    let status = ok(&run(&["--hub", &hub.addr, "--hub-key", &key, "status"]));
    assert!(status.contains(&key), "{status}");
    ok(&run(&[
        "--hub",
        &format!("troca://{}/#{key}", hub.addr),
        "ls",
    ]));
    // A wrong key: refused, naming both keys; the hub saw no request.
    let wrong = troca_proto::key::HubKey([7; 32]).to_string();
    let before = json(&hub.troca(&s.client, &["--json", "history", "--limit", "1000"]));
    let err = fails(&run(&["--hub", &hub.addr, "--hub-key", &wrong, "ls"]), 1);
    assert!(err.contains(&wrong) && err.contains(&key), "{err}");
    let after = json(&hub.troca(&s.client, &["--json", "history", "--limit", "1000"]));
    let lists = |h: &serde_json::Value| {
        h.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["op"] == "list")
            .count()
    };
    assert_eq!(lists(&after), lists(&before), "a request reached the hub");
    // Not on a terminal and never seen: refused, saying how to pin it.
    let err = fails(&run(&["--hub", &hub.addr, "ls"]), 1);
    assert!(
        err.contains("is new to you") && err.contains(&key) && err.contains("--hub-key"),
        "{err}"
    );
    // --trust-new-hub remembers it; then it connects without being told.
    ok(&run(&["--hub", &hub.addr, "--trust-new-hub", "ls"]));
    ok(&run(&["--hub", &hub.addr, "ls"]));
    // The hub set up again (new state, new key) on the same address: a hard error naming both
    // keys and the file to edit.
    let addr = hub.addr.clone();
    drop(hub);
    std::fs::remove_dir_all(s.share.join(".troca")).unwrap();
    let again = Hub::start_on(&s.share, &addr, &[]);
    let new_key = again.key.clone().unwrap();
    assert_ne!(new_key, key);
    let err = fails(&run(&["--hub", &addr, "ls"]), 1);
    assert!(
        err.contains(&key) && err.contains(&new_key) && err.contains("known_hubs"),
        "{err}"
    );
}

#[test]
fn a_new_hub_on_a_terminal_is_asked_about_and_remembered() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let key = hub.key.clone().unwrap();
    let data = s.tmp.path().join("pty-client");
    let mut cmd = std::process::Command::new(TROCA);
    cmd.current_dir(&s.client)
        .env("XDG_DATA_HOME", &data)
        .env("TROCA_HUB", &hub.addr)
        .args(["ls"]);
    let mut p = rexpect::session::spawn_command(cmd, Some(15_000)).unwrap();
    p.exp_string("is new to you").unwrap();
    p.exp_string(&key).unwrap();
    p.exp_string("Trust it? [y/N]").unwrap();
    p.send_line("y").unwrap();
    p.exp_string("a.txt").unwrap();
    p.exp_eof().unwrap();
    let known = std::fs::read_to_string(data.join("troca/known_hubs")).unwrap();
    assert!(known.contains(&format!("{} {key}", hub.addr)), "{known}");
}

#[test]
fn a_plaintext_hub_and_client_still_talk_and_mixing_them_fails_clearly() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &["--plaintext"]);
    assert!(hub.key.is_none());
    assert!(ok(&hub.troca(&s.client, &["ls"])).contains("a.txt"));
    // A TLS client against a plaintext hub: a clear error, not a hang.
    let out = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .env("TROCA_HUB", &hub.addr)
        .env("XDG_DATA_HOME", hub.client_data())
        .args(["--trust-new-hub", "ls"])
        .output()
        .unwrap();
    let err = fails(&out, 1);
    assert!(
        err.contains("answered without TLS") && err.contains("--plaintext"),
        "{err}"
    );
}

#[test]
fn a_web_token_and_owner_key_do_not_cross_the_wire_in_the_clear_either() {
    if !needs("curl", "an HTTPS client to send the token") {
        return;
    }
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--https"]);
    let web = hub.web.clone().unwrap();
    let port = web
        .trim_start_matches("https://127.0.0.1:")
        .trim_end_matches('/');
    let (proxy, seen) = recording_proxy(&format!("127.0.0.1:{port}"));
    let token = hub.admin_token();
    let key: troca_proto::key::HubKey = hub.key.as_ref().unwrap().parse().unwrap();
    let body = s.client.join("body.txt");
    std::fs::write(&body, "web contents").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-f", "-k", "--pinnedpubkey", &key.curl_pin()])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "X-Troca-Owner: my-owner-key-0123456789"])
        .arg("-T")
        .arg(&body)
        .arg(format!("https://{proxy}/files/web-secret.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.share.join("web-secret.txt").exists());
    let wire = seen.lock().unwrap().clone();
    assert!(!wire.is_empty());
    none_in_the_clear(
        &wire,
        &[
            token.as_bytes(),
            b"my-owner-key-0123456789",
            b"web-secret",
            b"Bearer",
        ],
    );
}

/// A hub with a certificate from an authority the client trusts (here a throwaway CA, given as
/// the system's through SSL_CERT_FILE) is accepted without pinning; without that authority it is
/// a new hub like any other.
#[test]
fn a_ca_issued_certificate_is_accepted_through_the_trust_roots() {
    let s = Scratch::new();
    let pki = s.tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "throwaway test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    std::fs::write(pki.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(pki.join("hub.pem"), leaf.pem()).unwrap();
    std::fs::write(pki.join("hub.key"), leaf_key.serialize_pem()).unwrap();
    let hub = hub_with_given_cert(&s.share, &pki);
    let port = hub.addr.rsplit_once(':').unwrap().1.to_owned();
    let run = |ca: bool| {
        let mut cmd = std::process::Command::new(TROCA);
        cmd.current_dir(&s.client)
            .env("XDG_DATA_HOME", s.tmp.path().join("fresh"))
            .env("TROCA_HUB", format!("localhost:{port}"))
            .env_remove("TROCA_HUB_KEY")
            .args(["status"]);
        if ca {
            cmd.env("SSL_CERT_FILE", pki.join("ca.pem"));
        } else {
            cmd.env("SSL_CERT_FILE", pki.join("none.pem"))
                .env("SSL_CERT_DIR", pki.join("none"));
        }
        cmd.output().unwrap()
    };
    let status = ok(&run(true));
    assert!(status.contains(hub.key.as_ref().unwrap()), "{status}");
    let err = fails(&run(false), 1);
    assert!(err.contains("is new to you"), "{err}");
}

/// A renewed certificate is read again on SIGHUP: new connections see the new key, without a
/// restart.
#[test]
fn a_given_certificate_is_reloaded_on_sighup() {
    let s = Scratch::new();
    let pki = s.tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let issue = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(pki.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(pki.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    issue("first");
    std::fs::copy(pki.join("first.pem"), pki.join("hub.pem")).unwrap();
    std::fs::copy(pki.join("first.key"), pki.join("hub.key")).unwrap();
    let hub = hub_with_given_cert(&s.share, &pki);
    let first = hub.key.clone().unwrap();
    let ls_with = |key: &str| {
        std::process::Command::new(TROCA)
            .current_dir(&s.client)
            .env("XDG_DATA_HOME", s.tmp.path().join("fresh"))
            .env("TROCA_HUB", &hub.addr)
            .env("TROCA_HUB_KEY", key)
            .args(["status"])
            .output()
            .unwrap()
    };
    ok(&ls_with(&first));
    // Renew: a new key in the same files, then SIGHUP.
    issue("second");
    std::fs::copy(pki.join("second.pem"), pki.join("hub.pem")).unwrap();
    std::fs::copy(pki.join("second.key"), pki.join("hub.key")).unwrap();
    let second = {
        use rustls::pki_types::pem::PemObject;
        let cert =
            rustls::pki_types::CertificateDer::from_pem_file(pki.join("second.pem")).unwrap();
        troca_net::tls::fingerprint_of(&cert).unwrap().to_string()
    };
    assert_ne!(first, second);
    hub.daemon.signal_hup();
    let started = std::time::Instant::now();
    while !ls_with(&second).status.success() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let err = fails(&ls_with(&first), 1);
    assert!(err.contains(&first) && err.contains(&second), "{err}");
}

/// A peer that registered `files` with `tracker` from this machine, serving at `port` with
/// `key`: what a real peer would register, put there by the test.
fn register_at(tracker: &str, port: u16, key: troca_proto::key::HubKey, files: Vec<FileInfo>) {
    runtime().block_on(async {
        let mut c = TrackerClient::new(tracker.parse().unwrap()).await.unwrap();
        c.register(port, [9; 16], Some(key), &files).await.unwrap();
        // The registration lives as long as the tracker's lifetime; the client may go.
    });
}

use troca_proto::tracker::FileInfo;
use troca_tracker::client::TrackerClient;

/// The swarm file `path` is, as a peer registers it.
fn swarm_file(path: &std::path::Path, name: &str) -> FileInfo {
    let mut f = std::fs::File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let (id, _) = troca_peer::library::hash_pieces(&mut f, size).unwrap();
    FileInfo {
        id,
        size,
        name: name.into(),
    }
}

/// A peer serving TLS, with the key it prints (and registers).
fn tls_peer(dir: &std::path::Path, tracker: &Daemon) -> (Daemon, troca_proto::key::HubKey) {
    let (peer, lines) = Daemon::start_with_lines(
        &[
            "peer".as_ref(),
            dir.as_os_str(),
            "--tracker".as_ref(),
            tracker.addr.as_ref(),
        ],
        1,
    );
    let key = lines[0]
        .strip_prefix("key ")
        .expect("a key line")
        .parse()
        .unwrap();
    (peer, key)
}

/// Pieces travel between peers encrypted: a relay between a downloader and a peer sees
/// neither the file's bytes nor its name.
#[test]
fn pieces_between_peers_do_not_cross_the_wire_in_the_clear() {
    let s = Scratch::new();
    let secret: Vec<u8> = b"the plans, "
        .iter()
        .copied()
        .cycle()
        .take(3 << 20)
        .collect();
    std::fs::write(s.share.join("secret-plans.bin"), &secret).unwrap();
    let (tracker, listing) = (
        Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]),
        Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]),
    );
    let (_peer, key) = tls_peer(&s.share, &tracker);
    // The downloader asks a tracker where the peer is listed only behind the relay.
    let (relay, seen) = recording_proxy(&_peer.addr);
    let port = relay.rsplit_once(':').unwrap().1.parse().unwrap();
    let file = swarm_file(&s.share.join("secret-plans.bin"), "secret-plans.bin");
    register_at(&listing.addr, port, key, vec![file]);
    let out = std::process::Command::new(TROCA)
        .current_dir(&s.client)
        .args([
            "swarm",
            "get",
            "secret-plans.bin",
            "--tracker",
            &listing.addr,
        ])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        std::fs::read(s.client.join("secret-plans.bin")).unwrap(),
        secret
    );
    let wire = seen.lock().unwrap().clone();
    assert!(wire.len() > 3 << 20, "the relay carried the pieces");
    none_in_the_clear(&wire, &[b"the plans, the plans", b"secret-plans", b"TRCA"]);
}

/// A downloader checks a peer's key against the one the tracker lists: a server at that
/// address with another key (someone on the path, or a stale entry) is dropped before a
/// request, and a peer registered without TLS is used only when asked for.
#[test]
fn a_peer_showing_another_key_is_dropped_and_plaintext_peers_need_consent() {
    let s = Scratch::new();
    std::fs::write(s.share.join("notes.txt"), b"notes").unwrap();
    let (tracker, listing) = (
        Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]),
        Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]),
    );
    let (peer, key) = tls_peer(&s.share, &tracker);
    let port = peer.addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let file = swarm_file(&s.share.join("notes.txt"), "notes.txt");
    let wrong = troca_proto::key::HubKey([7; 32]);
    assert_ne!(wrong, key);
    register_at(&listing.addr, port, wrong, vec![file]);
    let get = |tracker: &str, extra: &[&str]| {
        std::process::Command::new(TROCA)
            .current_dir(&s.client)
            .args(["swarm", "get", "notes.txt", "--tracker", tracker])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = get(&listing.addr, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("shows key {key}")) && err.contains(&wrong.to_string()),
        "{err}"
    );
    assert!(!s.client.join("notes.txt").exists());
    // The real listing works.
    ok(&get(&tracker.addr, &[]));
    assert_eq!(std::fs::read(s.client.join("notes.txt")).unwrap(), b"notes");

    // A plaintext peer is skipped unless the downloader says --plaintext too.
    let plain_share = s.tmp.path().join("plain");
    std::fs::create_dir(&plain_share).unwrap();
    std::fs::write(plain_share.join("open.txt"), b"open").unwrap();
    let lone = Daemon::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let (_plain, lines) = Daemon::start_with_lines(
        &[
            "peer".as_ref(),
            plain_share.as_os_str(),
            "--tracker".as_ref(),
            lone.addr.as_ref(),
            "--plaintext".as_ref(),
        ],
        1,
    );
    assert_eq!(lines[0], "plaintext (no TLS)");
    wait_listed(&lone.addr, "open.txt");
    let out = get_named(&s.client, &lone.addr, "open.txt", &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && err.contains("without TLS"),
        "{err}"
    );
    ok(&get_named(
        &s.client,
        &lone.addr,
        "open.txt",
        &["--plaintext"],
    ));
    assert_eq!(std::fs::read(s.client.join("open.txt")).unwrap(), b"open");
}

fn get_named(
    cwd: &std::path::Path,
    tracker: &str,
    name: &str,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new(TROCA)
        .current_dir(cwd)
        .args(["swarm", "get", name, "--tracker", tracker])
        .args(extra)
        .output()
        .unwrap()
}

/// Waits until the tracker lists `name` (a peer registers just after it starts listening).
fn wait_listed(tracker: &str, name: &str) {
    runtime().block_on(async {
        let mut c = TrackerClient::new(tracker.parse().unwrap()).await.unwrap();
        while c.list(name, None).await.unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
}
