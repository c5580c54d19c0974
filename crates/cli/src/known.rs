//! The hubs this user trusts, by key, as SSH keeps known hosts: `DATA/known_hubs`, one
//! `ADDRESS KEY` per line. A new hub is asked about on a terminal and refused elsewhere (unless
//! `--trust-new-hub`); a hub whose key changed is refused, naming both keys and this file.

use anyhow::{bail, Result};

/// A hub this user does not trust (yet, or any more); nothing was sent to it.
#[derive(Debug)]
pub struct Untrusted(pub String);

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use troca_proto::key::HubKey;

fn path() -> Option<PathBuf> {
    Some(crate::client::data_dir()?.join("known_hubs"))
}

/// The key remembered for the hub at `addr` (the last line for it, if several).
pub fn lookup(addr: &str) -> Option<HubKey> {
    let text = std::fs::read_to_string(path()?).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| l.split_once(' '))
        .filter(|(a, _)| *a == addr)
        .find_map(|(_, k)| k.trim().parse().ok())
}

/// Remembers `key` for the hub at `addr`.
pub fn remember(addr: &str, key: HubKey) -> Result<()> {
    let Some(path) = path() else {
        bail!("nowhere to remember the hub's key (no HOME or XDG_DATA_HOME)");
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    writeln!(f, "{addr} {key}")?;
    Ok(())
}

/// A hub never seen before showed `seen`: trust it if told to, or if the person at the
/// terminal says so; else refuse, saying how to pin it.
pub fn decide_new(addr: &str, seen: HubKey, trust_new: bool) -> Result<()> {
    if trust_new {
        return remember(addr, seen);
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if terminal {
        eprint!(
            "The hub at {addr} is new to you. Its key is\n  {seen}\n\
             Compare it with the key `troca serve` printed on the hub. Trust it? [y/N] "
        );
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if matches!(answer.trim(), "y" | "Y" | "yes" | "s" | "sim") {
            return remember(addr, seen);
        }
        return Err(Untrusted("not trusted; nothing was sent to the hub".into()).into());
    }
    Err(Untrusted(format!(
        "the hub at {addr} is new to you; its key is {seen}. If that is the key `troca serve` \
         printed, pin it with --hub-key {seen} (or TROCA_HUB_KEY, or --hub \
         'troca://{addr}/#{seen}'), or pass --trust-new-hub to remember it; nothing was sent"
    ))
    .into())
}

/// The hub at `addr` showed another key than the one remembered: a hard error.
pub fn changed(addr: &str, expected: HubKey, seen: HubKey) -> anyhow::Error {
    let file = path().map_or_else(|| "known_hubs".to_owned(), |p| p.display().to_string());
    Untrusted(format!(
        "the hub at {addr} shows key {seen}, but you trust {expected} for it. Someone may be \
         in between, or the hub was set up again. Nothing was sent. If the hub's key really \
         changed, remove its line from {file}"
    ))
    .into()
}
