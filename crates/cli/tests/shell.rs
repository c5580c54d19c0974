//! The interactive shell, driven through a real pseudo-terminal: help, the Portuguese command
//! names, completion of a remote name, quoting, a failed command followed by a working one, a lost
//! connection made again, history across sessions, quit.

mod common;
use common::*;
use rexpect::session::{spawn_command, PtySession};
use std::process::Command;

fn shell(hub: &Hub, s: &Scratch) -> PtySession {
    // Its data folder is HOME's: that is where it finds the hub's key.
    hub.trust_in(&s.tmp.path().join(".local/share"));
    let mut cmd = Command::new(TROCA);
    cmd.arg("shell")
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("TROCA_NAME", "tester")
        .env("HOME", s.tmp.path())
        .env_remove("XDG_DATA_HOME")
        .env_remove("TROCA_TOKEN");
    spawn_command(cmd, Some(15_000)).expect("start troca shell")
}

#[test]
fn the_shell_helps_completes_recovers_from_errors_and_quits() {
    let s = Scratch::new();
    std::fs::write(s.share.join("notes-2026.txt"), "the notes").unwrap();
    std::fs::write(s.share.join("other.bin"), "other").unwrap();
    std::fs::write(s.client.join("my file.txt"), "spaced").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let mut p = shell(&hub, &s);
    p.exp_string("connected to").unwrap();
    p.exp_string("troca> ").unwrap();

    p.send_line("ajuda").unwrap();
    p.exp_string("baixar").unwrap();
    p.exp_string("troca> ").unwrap();

    // Tab completes a remote name from the hub's listing.
    p.send("baixar no").unwrap();
    p.send("\t").unwrap();
    p.flush().unwrap();
    p.exp_string("notes-2026.txt").unwrap();
    p.send_line("").unwrap();
    p.exp_string("downloaded notes-2026.txt").unwrap();
    p.exp_string("troca> ").unwrap();

    // A failed command says why, and the next one works.
    p.send_line("get missing.txt").unwrap();
    p.exp_string("no file named \"missing.txt\"").unwrap();
    p.send_line("listar").unwrap();
    p.exp_string("other.bin").unwrap();
    p.send_line("copiar other.bin 'copy of other.bin'").unwrap();
    p.exp_string("copied other.bin to copy of other.bin (1 file, 5 B)")
        .unwrap();
    p.send_line("frobnicate").unwrap();
    p.exp_string("no command \"frobnicate\"").unwrap();
    p.send_line("get").unwrap();
    p.exp_string("usage: get NAME|FOLDER/... [-o PATH] [--force]")
        .unwrap();
    p.send_line("historico abc").unwrap();
    p.exp_string("history takes a number of entries").unwrap();
    // A usage error keeps the connection: no "connects again".
    p.exp_string("troca> ").unwrap();
    p.send_line("hora").unwrap();
    p.exp_regex(r"\d{4}-\d{2}-\d{2}T").unwrap();
    // The history says how to see older entries in the shell's own words, and that works.
    p.send_line("historico 1").unwrap();
    let (_, said) = p
        .exp_regex(r"older entries: history 1 --before \d+")
        .unwrap();
    let first: u64 = said.rsplit(' ').next().unwrap().parse().unwrap();
    p.send_line(&format!("historico 1 --before {first}"))
        .unwrap();
    let (_, said) = p
        .exp_regex(r"older entries: history 1 --before \d+")
        .unwrap();
    let next: u64 = said.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(next < first, "{next} after {first}");
    p.send_line("quem").unwrap();
    p.exp_string("RECEIVED").unwrap();

    // As on the command line: several names, and --force (which is not a file name).
    p.send_line("baixar notes-2026.txt other.bin --force")
        .unwrap();
    p.exp_string("downloaded other.bin").unwrap();
    p.exp_string("troca> ").unwrap();
    // Wildcards, as on the command line, quoted or not.
    p.send_line("baixar 'o*.bin' -o picked/").unwrap();
    p.exp_string("downloaded other.bin").unwrap();
    p.exp_string("troca> ").unwrap();

    // Quoted names with spaces.
    p.send_line("enviar \"my file.txt\" --as 'shared copy.txt'")
        .unwrap();
    p.exp_string("uploaded shared copy.txt").unwrap();
    // Folders, in Portuguese: create, move, find, delete with everything in it.
    p.send_line("criar fotos/2026").unwrap();
    p.exp_string("created fotos/2026").unwrap();
    p.send_line("mover 'shared copy.txt' fotos/2026/").unwrap();
    p.exp_string("moved shared copy.txt to fotos/2026/shared copy.txt")
        .unwrap();
    p.send_line("procurar COPY").unwrap();
    p.exp_string("fotos/2026/shared copy.txt").unwrap();
    p.send_line("apagar fotos").unwrap();
    p.exp_string("use rm -r").unwrap();
    p.send_line("renomear fotos imagens").unwrap();
    p.exp_string("moved fotos to imagens").unwrap();
    // A folder mirrored here: what the hub lacks goes.
    std::fs::create_dir_all(s.client.join("espelho/imagens")).unwrap();
    std::fs::write(s.client.join("espelho/imagens/extra.txt"), "x").unwrap();
    p.send_line("baixar imagens -o espelho --delete -n")
        .unwrap();
    p.exp_string("delete espelho/imagens/extra.txt").unwrap();
    p.exp_string("troca> ").unwrap();
    assert!(
        s.client.join("espelho/imagens/extra.txt").is_file(),
        "a dry run"
    );
    p.send_line("baixar imagens -o espelho --delete").unwrap();
    p.exp_string("deleted espelho/imagens/extra.txt").unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("nome ana").unwrap();
    p.exp_string("you are now ana").unwrap();
    p.send_line("clientes").unwrap();
    p.exp_string("ana").unwrap();
    p.send_line("hora").unwrap();
    p.exp_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}").unwrap();
    p.send_line("sair").unwrap();
    p.exp_eof().unwrap();

    assert_eq!(
        std::fs::read_to_string(s.client.join("notes-2026.txt")).unwrap(),
        "the notes"
    );
    assert_eq!(files_under(&s.client.join("picked")), ["other.bin"]);
    assert_eq!(
        files_under(&s.client.join("espelho")),
        ["imagens/2026/shared copy.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(s.share.join("imagens/2026/shared copy.txt")).unwrap(),
        "spaced"
    );
    // The requests before and after the usage errors came over one connection.
    let rows = json(&hub.troca(&s.client, &["--json", "history", "--limit", "100"]));
    let address_of = |target: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == target)
            .map(|r| r["address"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no request for {target}: {rows}"))
    };
    assert_eq!(address_of("missing.txt"), address_of("other.bin"));
    let history = std::fs::read_to_string(s.tmp.path().join(".local/share/troca/shell_history"))
        .expect("history kept across sessions");
    assert!(history.contains("listar"), "{history}");
}

#[test]
fn a_lost_connection_is_reported_and_made_again() {
    let s = Scratch::new();
    std::fs::write(s.share.join("a.txt"), "a").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let addr = hub.addr.clone();
    let mut p = shell(&hub, &s);
    p.exp_string("troca> ").unwrap();
    drop(hub);
    p.send_line("ls").unwrap();
    p.exp_string("the next command connects again").unwrap();
    p.exp_string("troca> ").unwrap();
    let _hub = Hub::start_on(&s.share, &addr, &[]);
    p.send_line("ls").unwrap();
    p.exp_string("a.txt").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
}

/// A hub that answers a handshake, then sends a download's header and one byte a second.
fn trickling_hub() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                let mut frames = 0;
                loop {
                    while let Ok(Some((msg, used))) = troca_proto::decode_frame(&got) {
                        got.drain(..used);
                        frames += 1;
                        let mut out = Vec::new();
                        let reply: troca_proto::Message = match msg {
                            troca_proto::Message::Hello(_) => troca_proto::msg::Welcome {
                                version: troca_proto::PROTOCOL_VERSION,
                                server: "slow".into(),
                                max_frame: troca_proto::MAX_FRAME_LEN as u32,
                            }
                            .into(),
                            troca_proto::Message::Get(_) => troca_proto::msg::FileHeader {
                                size: 1 << 30,
                                offset: 0,
                                modified_ns: 0,
                            }
                            .into(),
                            _ => troca_proto::msg::Entries {
                                entries: Vec::new(),
                                last: true,
                                cut: false,
                            }
                            .into(),
                        };
                        troca_proto::encode_frame(&reply, &mut out);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                        if matches!(reply, troca_proto::Message::FileHeader(_)) {
                            while s.write_all(b"x").is_ok() {
                                std::thread::sleep(std::time::Duration::from_millis(200));
                            }
                            return;
                        }
                    }
                    let _ = frames;
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn ctrl_c_stops_a_transfer_and_returns_to_the_prompt() {
    let s = Scratch::new();
    let addr = trickling_hub();
    let mut cmd = std::process::Command::new(TROCA);
    // The trickling hub below speaks the protocol in plaintext.
    cmd.current_dir(&s.client)
        .env("TROCA_HUB", &addr)
        .env("TROCA_PLAINTEXT", "1")
        .env("HOME", s.tmp.path())
        .env("TERM", "dumb")
        .arg("shell");
    let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("get big.bin").unwrap();
    // Wait until the transfer has begun: its partial file appears.
    let part = s.client.join("big.bin.part");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !part.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never began"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    p.send_control('c').unwrap();
    p.exp_string("cancelled").unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("sair").unwrap();
    p.exp_eof().unwrap();
    assert!(
        !s.client.join("big.bin").exists(),
        "nothing under the real name"
    );
    assert!(part.exists(), "the partial download is kept for resume");
    let history = std::fs::read_to_string(s.tmp.path().join(".local/share/troca/shell_history"))
        .expect("history saved");
    assert!(history.contains("get big.bin"), "{history}");
}

/// Share links from the shell, by their Portuguese names: made, listed, revoked; a slip in
/// an id is a usage error that keeps the connection.
#[test]
fn the_shell_makes_lists_and_revokes_share_links() {
    let s = Scratch::new();
    std::fs::write(s.share.join("other.bin"), "other").unwrap();
    let hub = Hub::start(&s.share, &[]);
    let token = make_token(&hub, "write", &[]);
    hub.trust_in(&s.tmp.path().join(".local/share"));
    let mut cmd = Command::new(TROCA);
    cmd.arg("shell")
        .current_dir(&s.client)
        .envs(hub.client_env())
        .env("HOME", s.tmp.path())
        .env_remove("XDG_DATA_HOME")
        .env("TROCA_TOKEN", &token);
    let mut p = spawn_command(cmd, Some(15_000)).expect("start troca shell");
    p.exp_string("troca> ").unwrap();
    p.send_line("compartilhar other.bin --expires 1d").unwrap();
    p.exp_string("/s/troca_").unwrap();
    p.exp_string("other.bin shared until").unwrap();
    // The note names the shell's own command.
    p.exp_string("(link 2; `unshare 2` revokes it)").unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("links").unwrap();
    p.exp_string("active").unwrap();
    p.exp_string("other.bin").unwrap();
    p.exp_string("troca> ").unwrap();
    // A link for so many downloads, as on the command line.
    p.send_line("share other.bin --max-downloads 3").unwrap();
    p.exp_string("other.bin shared for 3 downloads until")
        .unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("links").unwrap();
    p.exp_string("other.bin (0 of 3 downloads)").unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("revogar x").unwrap();
    p.exp_string("unshare takes the links' numbers").unwrap();
    p.exp_string("troca> ").unwrap();
    // The write token is token 1; its link, token 2.
    p.send_line("revogar 2").unwrap();
    p.exp_string("share link 2 revoked").unwrap();
    p.exp_string("troca> ").unwrap();
    p.send_line("sair").unwrap();
    p.exp_eof().unwrap();
}
