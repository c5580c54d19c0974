//! Bad input gets a clear error, writes nothing, and never stops the hub serving others: bad
//! names (through the CLI and raw on the wire), links out of the share, malformed and oversized
//! frames, unknown operations, wrong versions.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use troca_net::{ClientError, HubClient};
use troca_proto::msg::{Get, Hello, Put, Remove};
use troca_proto::{decode_frame, encode_frame, ErrorCode, Message, MAGIC};

fn bad_names() -> Vec<String> {
    vec![
        "".into(),
        "/etc/passwd".into(),
        "../escape.txt".into(),
        "a/../../escape.txt".into(),
        "a/..".into(),
        "./a".into(),
        "a//b".into(),
        "dir/".into(),
        "a\\b".into(),
        "..\\escape.txt".into(),
        "line\nbreak".into(),
        "esc\x1b[31m".into(),
        "del\x7f".into(),
        "x".repeat(256),
        vec!["d".repeat(200); 21].join("/"),
        ".troca".into(),
        ".troca/uploads/x".into(),
    ]
}

#[test]
fn every_bad_name_is_refused_by_put_get_and_rm_and_nothing_is_written() {
    let s = Scratch::new();
    std::fs::write(s.tmp.path().join("escape.txt"), "outside").unwrap();
    let hub = Hub::start(&s.share, &[]);
    std::fs::write(s.client.join("f.txt"), "payload").unwrap();
    for name in bad_names() {
        let err = fails(&hub.troca(&s.client, &["put", "f.txt", "--as", &name]), 1);
        assert!(err.contains("invalid name"), "put {name:?}: {err}");
        let err = fails(&hub.troca(&s.client, &["get", &name, "-o", "out"]), 1);
        let expected = if name == "dir/" {
            "no folder named"
        } else {
            "invalid name"
        };
        assert!(err.contains(expected), "get {name:?}: {err}");
        // `dir/` names a folder where folders are meant (rm, mv, mkdir): not found here.
        let err = fails(&hub.troca(&s.client, &["rm", &name]), 1);
        let expected = if name == "dir/" {
            "no file named"
        } else {
            "invalid name"
        };
        assert!(err.contains(expected), "rm {name:?}: {err}");
    }
    assert!(
        files_under(&s.share).is_empty(),
        "{:?}",
        files_under(&s.share)
    );
    assert!(files_under(&s.share.join(".troca/uploads")).is_empty());
    assert!(!s.client.join("out").exists());
    assert_eq!(
        std::fs::read_to_string(s.tmp.path().join("escape.txt")).unwrap(),
        "outside"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_nul_or_control_characters_are_refused_on_the_wire() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a"), "a").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let mut client = HubClient::connect(&hub.addr, &hub.options()).await.unwrap();
    for name in ["a\0", "a\0/../../etc/passwd", "tab\there", "\u{85}next"] {
        let err = client.get(name, 0).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Hub {
                    code: ErrorCode::InvalidName,
                    ..
                }
            ),
            "{name:?}: {err:?}"
        );
        let err = client
            .put(Put {
                name: name.into(),
                size: 1,
                source_mtime_ns: 0,
                force: true,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Hub {
                    code: ErrorCode::InvalidName,
                    ..
                }
            ),
            "{name:?}: {err:?}"
        );
        let err = client.remove(name, false).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Hub {
                    code: ErrorCode::InvalidName,
                    ..
                }
            ),
            "{name:?}: {err:?}"
        );
    }
    // The same connection still works.
    assert_eq!(client.list("").await.unwrap().len(), 1);
    assert_eq!(files_under(&s.share), ["a"]);
}

#[test]
fn links_out_of_the_share_are_never_followed() {
    let s = Scratch::new();
    let outside = s.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), s.share.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(&outside, s.share.join("door")).unwrap();
    let hub = Hub::start(&s.share, &[]);

    let listed = json(&hub.troca(&s.client, &["--json", "ls"]));
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    fails(&hub.troca(&s.client, &["get", "leak.txt"]), 1);
    fails(&hub.troca(&s.client, &["get", "door/secret.txt"]), 1);
    fails(&hub.troca(&s.client, &["rm", "door/secret.txt"]), 1);
    std::fs::write(s.client.join("evil.txt"), "evil").unwrap();
    fails(
        &hub.troca(&s.client, &["put", "evil.txt", "--as", "door/evil.txt"]),
        1,
    );
    fails(
        &hub.troca(
            &s.client,
            &["put", "evil.txt", "--as", "door/secret.txt", "--force"],
        ),
        1,
    );

    assert_eq!(files_under(&outside), ["secret.txt"]);
    assert_eq!(
        std::fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "secret"
    );
    assert!(files_under(&s.client).iter().all(|f| f == "evil.txt"));
}

/// Opens a raw connection, optionally says hello, sends `bytes`, and returns the first message
/// the hub answers with and whether it then closed the connection.
fn raw_exchange(addr: &str, hello: bool, bytes: &[u8]) -> (Message, bool) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::new();
    let read_msg = |sock: &mut TcpStream, buf: &mut Vec<u8>| loop {
        if let Some((m, used)) = decode_frame(buf).unwrap() {
            buf.drain(..used);
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).unwrap();
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if hello {
        let mut out = Vec::new();
        encode_frame(
            &Hello {
                magic: MAGIC,
                version: troca_proto::PROTOCOL_VERSION,
                client: "raw".into(),
                token: None,
                owner_key: None,
            }
            .into(),
            &mut out,
        );
        sock.write_all(&out).unwrap();
        assert!(matches!(
            read_msg(&mut sock, &mut buf),
            Some(Message::Welcome(_))
        ));
    }
    sock.write_all(bytes).unwrap();
    let first = read_msg(&mut sock, &mut buf).expect("an answer");
    assert!(buf.is_empty(), "nothing follows the answer");
    (first, is_closed(&mut sock))
}

/// The hub closes at once after a fatal error; an open connection just stays quiet.
fn is_closed(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    match sock.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected bytes after the answer"),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e) => panic!("{e}"),
    }
}

fn frame(msg: Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&msg, &mut out);
    out
}

#[test]
fn malformed_oversized_and_unknown_frames_get_an_error_and_others_are_served() {
    let s = Scratch::new();
    std::fs::write(s.share.join("keep.txt"), "keep").unwrap();
    let hub = Hub::start(&s.share, &["--plaintext"]);
    let code = |m: &Message| match m {
        Message::Error(e) => e.code,
        other => panic!("expected an Error, got {other:?}"),
    };

    // Another protocol entirely.
    let (m, closed) = raw_exchange(&hub.addr, false, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code(&m), ErrorCode::BadRequest);
    assert!(closed);
    // A frame declaring 1 GiB.
    let (m, closed) = raw_exchange(&hub.addr, true, &(1u32 << 30).to_be_bytes());
    assert_eq!(code(&m), ErrorCode::BadRequest);
    assert!(closed);
    // An unknown operation.
    let (m, closed) = raw_exchange(&hub.addr, true, &[0, 0, 0, 3, 0x42, 1, 2]);
    assert_eq!(code(&m), ErrorCode::BadRequest);
    if let Message::Error(e) = &m {
        assert!(
            e.message.contains("unknown message kind 0x42"),
            "{}",
            e.message
        );
    }
    assert!(closed);
    // A truncated payload inside a complete frame.
    let (m, _) = raw_exchange(&hub.addr, true, &[0, 0, 0, 2, 0x03, 0]);
    assert_eq!(code(&m), ErrorCode::BadRequest);
    // A message that only the hub may send.
    let (m, _) = raw_exchange(
        &hub.addr,
        true,
        &frame(troca_proto::msg::Removed { files: 0 }.into()),
    );
    assert_eq!(code(&m), ErrorCode::BadRequest);
    // A second Hello.
    let (m, _) = raw_exchange(
        &hub.addr,
        true,
        &frame(
            Hello {
                magic: MAGIC,
                version: 1,
                client: "x".into(),
                token: None,
                owner_key: None,
            }
            .into(),
        ),
    );
    assert_eq!(code(&m), ErrorCode::BadRequest);
    // A request before the hello.
    let (m, _) = raw_exchange(
        &hub.addr,
        false,
        &frame(
            Remove {
                name: "keep.txt".into(),
                recursive: false,
            }
            .into(),
        ),
    );
    assert_eq!(code(&m), ErrorCode::BadRequest);
    // A well-formed request on a fresh connection still works, and nothing was removed.
    let (m, closed) = raw_exchange(
        &hub.addr,
        true,
        &frame(
            Get {
                name: "nope".into(),
                offset: 0,
            }
            .into(),
        ),
    );
    assert_eq!(code(&m), ErrorCode::NotFound);
    assert!(!closed, "a refused request leaves the connection open");
    assert_eq!(files_under(&s.share), ["keep.txt"]);
    ok(&hub.troca(&s.client, &["get", "keep.txt"]));
}

#[test]
fn another_protocol_version_is_told_which_one_the_hub_speaks() {
    let s = Scratch::new();
    let hub = Hub::start(&s.share, &["--plaintext"]);
    let (m, closed) = raw_exchange(
        &hub.addr,
        false,
        &frame(
            Hello {
                magic: MAGIC,
                version: 99,
                client: "future".into(),
                token: None,
                owner_key: None,
            }
            .into(),
        ),
    );
    match m {
        Message::Error(e) => {
            assert_eq!(e.code, ErrorCode::UnsupportedVersion);
            let speaks = format!("version {}", troca_proto::PROTOCOL_VERSION);
            assert!(e.message.contains(&speaks), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(closed);
    let (m, _) = raw_exchange(
        &hub.addr,
        false,
        &frame(
            Hello {
                magic: *b"XXXX",
                version: 1,
                client: "x".into(),
                token: None,
                owner_key: None,
            }
            .into(),
        ),
    );
    assert!(matches!(m, Message::Error(e) if e.code == ErrorCode::UnsupportedVersion));
}

#[test]
fn a_folder_is_not_a_file() {
    let s = Scratch::new();
    std::fs::create_dir(s.share.join("dir")).unwrap();
    let hub = Hub::start(&s.share, &[]);
    // An empty folder comes down as an empty folder.
    ok(&hub.troca(&s.client, &["get", "dir"]));
    assert!(s.client.join("dir").is_dir());
    let admin = hub.admin_token();
    // A folder that holds files goes only with -r.
    std::fs::write(s.share.join("dir/inner.txt"), "x").unwrap();
    let err = fails(&hub.troca_with(&s.client, &admin, &["rm", "dir"]), 1);
    assert!(err.contains("not empty") && err.contains("rm -r"), "{err}");
    assert!(s.share.join("dir/inner.txt").exists());
    std::fs::write(s.client.join("f"), "f").unwrap();
    let err = fails(
        &hub.troca_with(&s.client, &admin, &["put", "f", "--as", "dir", "--force"]),
        1,
    );
    assert!(err.contains("folder"), "{err}");
    assert!(s.share.join("dir").is_dir());
}
