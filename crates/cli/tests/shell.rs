//! The interactive shell, driven through a real pseudo-terminal: help, the seeds' Portuguese
//! names, completion of a remote name, quoting, a failed command followed by a working one, a lost
//! connection made again, history across sessions, quit.

mod common;
use common::*;
use rexpect::session::{spawn_command, PtySession};
use std::process::Command;

fn shell(hub: &Hub, s: &Scratch) -> PtySession {
    let mut cmd = Command::new(TROCA);
    cmd.arg("shell")
        .current_dir(&s.client)
        .env("TROCA_HUB", &hub.addr)
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
    p.send_line("frobnicate").unwrap();
    p.exp_string("no command \"frobnicate\"").unwrap();
    p.send_line("get").unwrap();
    p.exp_string("usage: get NAME [PATH]").unwrap();

    // Quoted names with spaces.
    p.send_line("enviar \"my file.txt\" 'shared copy.txt'")
        .unwrap();
    p.exp_string("uploaded shared copy.txt").unwrap();
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
    assert_eq!(
        std::fs::read_to_string(s.share.join("shared copy.txt")).unwrap(),
        "spaced"
    );
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
