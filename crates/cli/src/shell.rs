//! `troca shell`: an interactive client. One connection kept open (made
//! again when lost), line editing, history across sessions, completion of commands, remote names
//! and local paths, shell-style quoting, and Portuguese command names. Each command
//! runs through the same code as the one-shot command of the same name.

use crate::args::Global;
use crate::client::{self, Link};
use crate::output::one_line;
use anyhow::{Context, Result};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Editor, Helper};
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use troca_proto::msg::History;

/// A command, its names (English first, then Portuguese), arguments and purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Ls,
    Put,
    Get,
    Rm,
    Mkdir,
    Mv,
    Cp,
    Find,
    Share,
    Request,
    Shares,
    Unshare,
    Who,
    History,
    Status,
    Time,
    Name,
    Help,
    Quit,
}

const COMMANDS: &[(Cmd, &[&str], &str, &str)] = &[
    (
        Cmd::Ls,
        &["ls", "listar"],
        "[PREFIX]",
        "list the hub's files",
    ),
    (
        Cmd::Put,
        &["put", "enviar"],
        "FILE|FOLDER... [--as NAME] [--to FOLDER] [--force] [--delete] [-n]",
        "upload files and folders (one as NAME; --force replaces; --delete deletes what a folder lacks; -n only says what would happen)",
    ),
    (
        Cmd::Get,
        &["get", "baixar"],
        "NAME|FOLDER/... [-o PATH] [--force] [--delete] [-n]",
        "download files and folders (into PATH; --force overwrites; --delete deletes what the hub lacks; -n only says what would happen)",
    ),
    (
        Cmd::Rm,
        &["rm", "deletar", "apagar"],
        "NAME... [-r]",
        "delete files (and folders, with everything in them, with -r)",
    ),
    (
        Cmd::Mkdir,
        &["mkdir", "criar"],
        "FOLDER...",
        "create folders on the hub",
    ),
    (
        Cmd::Mv,
        &["mv", "mover", "renomear"],
        "NAME... TO [--force]",
        "move or rename (into TO if it is a folder; --force replaces)",
    ),
    (
        Cmd::Cp,
        &["cp", "copiar"],
        "NAME... TO [--force]",
        "copy on the hub, folders whole (into TO if it is a folder; --force replaces)",
    ),
    (
        Cmd::Find,
        &["find", "procurar", "buscar"],
        "TEXT",
        "find files and folders whose names contain TEXT",
    ),
    (
        Cmd::Share,
        &["share", "compartilhar", "partilhar"],
        "NAME... [--expires DURATION] [--max-downloads N] [--qr]",
        "make links that let anyone download NAME (7d, 12h; needs a write token)",
    ),
    (
        Cmd::Request,
        &["request", "receber", "pedir"],
        "FOLDER... [--expires DURATION] [--qr]",
        "make links that let anyone send files into FOLDER, seeing nothing (needs a write token)",
    ),
    (Cmd::Shares, &["shares", "links"], "", "your share links"),
    (
        Cmd::Unshare,
        &["unshare", "revogar"],
        "ID...",
        "revoke share links",
    ),
    (
        Cmd::Who,
        &["who", "quem", "clientes"],
        "",
        "who is connected",
    ),
    (
        Cmd::History,
        &["history", "historico", "histórico"],
        "[N] [--before ID]",
        "the last N requests",
    ),
    (Cmd::Status, &["status", "estado"], "", "the hub's status"),
    (Cmd::Time, &["time", "hora"], "", "the hub's time"),
    (
        Cmd::Name,
        &["name", "nome", "register"],
        "NEW",
        "show yourself as NEW",
    ),
    (Cmd::Help, &["help", "ajuda"], "[COMMAND]", "this help"),
    (
        Cmd::Quit,
        &["quit", "exit", "sair"],
        "",
        "leave (or Ctrl-D)",
    ),
];

fn lookup(word: &str) -> Option<Cmd> {
    let word = word.to_lowercase();
    COMMANDS
        .iter()
        .find(|(_, names, _, _)| names.contains(&word.as_str()))
        .map(|(cmd, ..)| *cmd)
}

fn help(topic: Option<&str>) -> String {
    let rows: Vec<_> = match topic.map(|t| (t, lookup(t))) {
        Some((_, Some(cmd))) => COMMANDS.iter().filter(|c| c.0 == cmd).collect(),
        Some((t, None)) => return format!("no command \"{t}\"; type help for the list"),
        None => COMMANDS.iter().collect(),
    };
    let mut out = String::new();
    for (_, names, args, what) in rows {
        let usage = format!("{} {args}", names[0]);
        out.push_str(&format!(
            "  {usage:<22} {what:<28} ({})\n",
            names[1..].join(", ")
        ));
    }
    out.push_str("  Names with spaces go in quotes: get \"my file.txt\"");
    out
}

/// Completes command names, remote names (from the hub's last listing) and local paths.
struct ShellHelper {
    remote: Rc<RefCell<Vec<String>>>,
    files: FilenameCompleter,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // The word being typed starts after the last space, or at an unclosed quote.
        let start = open_quote(before)
            .unwrap_or_else(|| before.rfind(char::is_whitespace).map_or(0, |i| i + 1));
        let word = before[start..].trim_start_matches(['"', '\'']);
        let earlier: Vec<&str> = before[..start].split_whitespace().collect();
        let pairs = |names: Vec<String>| {
            names
                .into_iter()
                .map(|n| Pair {
                    replacement: if n.contains(' ') {
                        shell_words::quote(&n).into_owned()
                    } else {
                        n.clone()
                    },
                    display: n,
                })
                .collect::<Vec<_>>()
        };
        let commands = || {
            pairs(
                COMMANDS
                    .iter()
                    .flat_map(|c| c.1.iter())
                    .filter(|n| n.starts_with(word))
                    .map(|n| (*n).to_owned())
                    .collect(),
            )
        };
        match (earlier.first().map(|w| lookup(w)), earlier.len()) {
            (None, 0) => Ok((start, commands())),
            (Some(Some(Cmd::Help)), 1) => Ok((start, commands())),
            (Some(Some(Cmd::Put)), n) if n >= 1 => self.files.complete_path(line, pos),
            (Some(Some(Cmd::Get)), _) if matches!(earlier.last(), Some(&"-o" | &"--output")) => {
                self.files.complete_path(line, pos)
            }
            (Some(Some(Cmd::Get | Cmd::Rm | Cmd::Mv | Cmd::Cp | Cmd::Share)), n)
            | (Some(Some(Cmd::Ls)), n @ 1)
                if n >= 1 =>
            {
                let remote = self.remote.borrow();
                Ok((start, pairs(next_level(&remote, word))))
            }
            _ => Ok((pos, Vec::new())),
        }
    }
}

/// Where an unclosed quote opens in `before`, if one does.
fn open_quote(before: &str) -> Option<usize> {
    let mut open: Option<(usize, char)> = None;
    for (i, c) in before.char_indices() {
        match open {
            Some((_, q)) if c == q => open = None,
            None if c == '"' || c == '\'' => open = Some((i, c)),
            _ => {}
        }
    }
    open.map(|(i, _)| i)
}

/// The remote names that start with `typed`, cut after the next `/`: completion stops at each
/// folder (`photos/`), as a shell's does, and lists each folder once.
fn next_level(remote: &[String], typed: &str) -> Vec<String> {
    let mut out: Vec<String> = remote
        .iter()
        .filter(|n| n.starts_with(typed))
        .map(|n| match n[typed.len()..].find('/') {
            Some(i) => n[..typed.len() + i + 1].to_owned(),
            None => n.clone(),
        })
        .collect();
    out.dedup();
    out
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

/// Where the shell keeps its history across sessions.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("troca").join("shell_history"))
}

pub fn main(global: &Global) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let remote = Rc::new(RefCell::new(Vec::new()));
    let mut editor = line_editor(&remote)?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }

    let mut link = Link::new(global);
    greet(&runtime, &mut link, global);
    refresh(&runtime, &mut link, &remote);

    // Caught from the start, so a Ctrl-C during a command never kills the shell.
    let mut interrupts = runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        })
        .context("cannot handle Ctrl-C")?;
    loop {
        let line = match editor.readline("troca> ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("cannot read a command"),
        };
        if line.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        let Some((cmd, words)) = parse_line(&line) else {
            continue;
        };
        match cmd {
            Cmd::Quit => break,
            Cmd::Help => println!("{}", help(words.get(1).map(String::as_str))),
            _ => {
                let outcome = runtime.block_on(async {
                    tokio::select! {
                        r = run(&mut link, cmd, &words[1..]) => Some(r),
                        _ = interrupts.recv() => None,
                    }
                });
                report(outcome, &mut link, global);
                if matches!(
                    cmd,
                    Cmd::Ls | Cmd::Put | Cmd::Get | Cmd::Rm | Cmd::Mkdir | Cmd::Mv | Cmd::Cp
                ) {
                    refresh(&runtime, &mut link, &remote);
                }
            }
        }
    }
    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects at the start and says to what; a hub that cannot be reached yet is tried again at
/// the next command.
fn greet(runtime: &tokio::runtime::Runtime, link: &mut Link, global: &Global) {
    match runtime.block_on(link.client()) {
        Ok(c) => {
            let server = c.welcome().server.clone();
            println!(
                "connected to {} ({server}); type help, or quit to leave",
                global.hub
            );
        }
        Err(e) => eprintln!(
            "troca: {}; will try again at the next command",
            one_line(&e)
        ),
    }
}

/// The line editor, completing commands, local paths and the hub's names from `remote`.
fn line_editor(remote: &Rc<RefCell<Vec<String>>>) -> Result<Editor<ShellHelper, DefaultHistory>> {
    // Tab lists the candidates (as bash does) rather than cycling through them.
    let config = rustyline::Config::builder()
        .completion_type(rustyline::CompletionType::List)
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> =
        Editor::with_config(config).context("cannot start the line editor")?;
    editor.set_helper(Some(ShellHelper {
        remote: Rc::clone(remote),
        files: FilenameCompleter::new(),
    }));
    Ok(editor)
}

/// The command a line names and its words, or `None` (said why) if it names none.
fn parse_line(line: &str) -> Option<(Cmd, Vec<String>)> {
    let words = match shell_words::split(line) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("troca: {e} (close the quote)");
            return None;
        }
    };
    let Some(cmd) = lookup(&words[0]) else {
        eprintln!("troca: no command \"{}\"; type help for the list", words[0]);
        return None;
    };
    Some((cmd, words))
}

/// Says how a command went. Ctrl-C (`None`) stops the command, not the shell: the prompt comes
/// back. A transfer cut short leaves the connection in an unknown state, so the next command
/// connects again.
fn report(outcome: Option<Result<()>>, link: &mut Link<'_>, global: &Global) {
    match outcome {
        None => {
            eprintln!("troca: cancelled");
            link.reset();
        }
        Some(Err(e)) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("troca: {}", one_line(&e));
        }
        Some(Err(e)) => {
            eprintln!("troca: {}", crate::output::explain(&e, global.has_token()));
            if link.after_error(&e) {
                eprintln!("troca: the connection is gone; the next command connects again");
            }
        }
        Some(Ok(())) => {}
    }
}

/// Reloads the remote names that completion offers.
fn refresh(
    runtime: &tokio::runtime::Runtime,
    link: &mut Link<'_>,
    remote: &Rc<RefCell<Vec<String>>>,
) {
    let names = runtime.block_on(async {
        let c = link.client().await.ok()?;
        c.list("").await.ok()
    });
    if let Some(entries) = names {
        *remote.borrow_mut() = entries.into_iter().map(|e| e.name).collect();
    }
}

/// A command used the wrong way: the shell says how to use it and keeps the connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Usage(String);

/// The usage line of `cmd`.
fn usage(cmd: Cmd) -> Usage {
    let (_, names, usage, _) = COMMANDS
        .iter()
        .find(|c| c.0 == cmd)
        .expect("every command is listed");
    Usage(format!("usage: {} {usage}", names[0]))
}

/// Checks the number of arguments, so a slip gets the command's usage.
fn args(cmd: Cmd, words: &[String], min: usize, max: usize) -> Result<&[String]> {
    if words.len() < min || words.len() > max {
        return Err(usage(cmd).into());
    }
    Ok(words)
}

/// A command's words split into its operands and its options, as on the command line:
/// `--force` (or `-f`), and one option with a value (`--as NAME` for put, `-o PATH` for get).
/// `--` ends the options, for names that start with `-`.
#[derive(Debug, Default, PartialEq)]
struct Words {
    operands: Vec<String>,
    force: bool,
    recursive: bool,
    /// `--delete`, for `put` and `get`.
    delete: bool,
    /// `--dry-run` (`-n`), for `put` and `get`.
    dry_run: bool,
    /// `--qr`, for `share` and `request`.
    qr: bool,
    /// Options with a value, by the flag's first spelling in `value_flags`.
    values: Vec<(&'static str, String)>,
}

impl Words {
    fn value(&self, flag: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(f, _)| *f == flag)
            .map(|(_, v)| v.clone())
    }
}

/// `value_flags`: each option that takes a value, as (its name, its spellings).
fn split_options(
    cmd: Cmd,
    words: &[String],
    value_flags: &[(&'static str, &[&str])],
) -> Result<Words> {
    let mut out = Words::default();
    let mut it = words.iter();
    let mut options_done = false;
    while let Some(w) = it.next() {
        match w.as_str() {
            _ if options_done || !w.starts_with('-') || w == "-" => out.operands.push(w.clone()),
            "--" => options_done = true,
            "--force" | "-f" => out.force = true,
            "--recursive" | "-r" | "-R"
                if matches!(cmd, Cmd::Rm | Cmd::Put | Cmd::Get | Cmd::Cp) =>
            {
                out.recursive = true
            }
            "--qr" if matches!(cmd, Cmd::Share | Cmd::Request) => out.qr = true,
            "--delete" if matches!(cmd, Cmd::Put | Cmd::Get) => out.delete = true,
            "--dry-run" | "-n" if matches!(cmd, Cmd::Put | Cmd::Get) => out.dry_run = true,
            flag => match value_flags
                .iter()
                .find(|(_, spellings)| spellings.contains(&flag))
            {
                Some((name, _)) => match it.next() {
                    Some(v) => out.values.push((name, v.clone())),
                    None => return Err(usage(cmd).into()),
                },
                None => return Err(usage(cmd).into()),
            },
        }
    }
    if out.operands.is_empty() {
        return Err(usage(cmd).into());
    }
    Ok(out)
}

/// The options `share` and `request` take (an upload link counts no downloads).
fn share_options(cmd: Cmd) -> &'static [(&'static str, &'static [&'static str])] {
    match cmd {
        Cmd::Request => &[("expires", &["--expires"])],
        _ => &[
            ("expires", &["--expires"]),
            ("downloads", &["--max-downloads"]),
        ],
    }
}

/// `history [N] [--before ID]`: the last N entries (20), older than entry ID if given.
fn history_query(cmd: Cmd, words: &[String]) -> Result<History> {
    fn number<T: std::str::FromStr>(what: &str, w: &str) -> Result<T, Usage> {
        w.parse()
            .map_err(|_| Usage(format!("history takes {what}, not {w:?}")))
    }
    let mut query = History {
        limit: 20,
        client: None,
        op: None,
        before: 0,
    };
    let mut it = words.iter();
    let mut counted = false;
    while let Some(w) = it.next() {
        match w.as_str() {
            "--before" => {
                let id = it.next().ok_or_else(|| usage(cmd))?;
                query.before = number("an entry's id after --before", id)?;
            }
            _ if !counted => {
                query.limit = number("a number of entries", w)?;
                counted = true;
            }
            _ => return Err(usage(cmd).into()),
        }
    }
    Ok(query)
}

async fn run(link: &mut Link<'_>, cmd: Cmd, words: &[String]) -> Result<()> {
    let global = link.global;
    match cmd {
        Cmd::Ls => {
            let w = args(cmd, words, 0, 1)?;
            let prefix = w.first().map_or("", String::as_str);
            client::ls(global, link.client().await?, prefix).await?;
        }
        Cmd::Put => put(link, cmd, words).await?,
        Cmd::Get => {
            let w = split_options(cmd, words, &[("output", &["-o", "--output"])])?;
            let out = w.value("output").map(PathBuf::from);
            let c = link.client().await?;
            let names = crate::glob::expand(c, &w.operands).await?;
            let how = client::Placing {
                force: w.force,
                delete: w.delete,
            };
            match w.dry_run {
                true => crate::dry::get(global, c, &names, out, how).await?,
                false => client::get(global, c, &names, out, how).await?,
            };
        }
        Cmd::Rm => {
            let w = split_options(cmd, words, &[])?;
            let c = link.client().await?;
            let names = crate::glob::expand(c, &w.operands).await?;
            client::rm(global, c, &names, w.recursive).await?;
        }
        Cmd::Mkdir => {
            let w = args(cmd, words, 1, usize::MAX)?;
            client::mkdir(global, link.client().await?, w).await?;
        }
        Cmd::Mv => {
            let w = split_options(cmd, words, &[])?;
            if w.operands.len() < 2 {
                return Err(usage(cmd).into());
            }
            let c = link.client().await?;
            let names = client::expand_sources(c, &w.operands).await?;
            client::mv(global, c, &names, w.force).await?;
        }
        Cmd::Cp => {
            let w = split_options(cmd, words, &[])?;
            if w.operands.len() < 2 {
                return Err(usage(cmd).into());
            }
            let c = link.client().await?;
            let names = client::expand_sources(c, &w.operands).await?;
            client::cp(global, c, &names, w.force).await?;
        }
        Cmd::Find => {
            let w = args(cmd, words, 1, 1)?;
            client::find(global, link.client().await?, &w[0]).await?;
        }
        Cmd::Share | Cmd::Request => {
            let w = split_options(cmd, words, share_options(cmd))?;
            if w.operands.is_empty() {
                return Err(usage(cmd).into());
            }
            let expires = match w.value("expires") {
                Some(e) => Some(crate::args::parse_lifetime(&e).map_err(Usage)?),
                None => None,
            };
            let max_downloads = match w.value("downloads") {
                Some(n) => match n.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(Usage(format!("{n}: a number of downloads, 1 or more")).into()),
                },
                None => 0,
            };
            let terms = crate::share::Terms {
                expires,
                upload: (cmd == Cmd::Request).then(troca_proto::msg::UploadBounds::default),
                max_downloads,
                qr: w.qr,
                shell: true,
            };
            let c = link.client().await?;
            let names = match client::upload_link(&terms) {
                true => w.operands.clone(),
                false => crate::glob::expand(c, &w.operands).await?,
            };
            crate::share::share(global, c, &names, terms).await?;
        }
        Cmd::Shares => {
            args(cmd, words, 0, 0)?;
            crate::share::shares(global, link.client().await?, true).await?;
        }
        Cmd::Unshare => {
            let w = args(cmd, words, 1, usize::MAX)?;
            let ids = w
                .iter()
                .map(|id| id.parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Usage("unshare takes the links' numbers (see: shares)".into()))?;
            crate::share::unshare(global, link.client().await?, &ids).await?;
        }
        Cmd::Who => {
            args(cmd, words, 0, 0)?;
            client::who(global, link.client().await?).await?;
        }
        Cmd::History => {
            let query = history_query(cmd, words)?;
            let face = client::HistoryFace::Shell;
            client::history(global, link.client().await?, query, face).await?;
        }
        Cmd::Status => {
            args(cmd, words, 0, 0)?;
            client::status(global, link.client().await?).await?;
        }
        Cmd::Time => {
            args(cmd, words, 0, 0)?;
            client::time(global, link.client().await?).await?;
        }
        Cmd::Name => {
            let w = args(cmd, words, 1, 1)?;
            link.client().await?.register(&w[0]).await?;
            link.rename(&w[0]);
            println!("you are now {}", w[0]);
        }
        Cmd::Help | Cmd::Quit => unreachable!("handled by the loop"),
    }
    Ok(())
}

/// `put FILE... [--as NAME] [--to FOLDER/] [--force] [--delete] [--dry-run]`.
async fn put(link: &mut Link<'_>, cmd: Cmd, words: &[String]) -> Result<()> {
    let w = split_options(cmd, words, &[("as", &["--as"]), ("to", &["--to"])])?;
    if w.value("as").is_some() && w.operands.len() > 1 {
        return Err(Usage("--as names one file; give one FILE with it".into()).into());
    }
    let files: Vec<PathBuf> = w.operands.iter().map(PathBuf::from).collect();
    let naming = client::Naming {
        as_name: w.value("as"),
        to: w.value("to"),
    };
    let global = link.global;
    let how = client::Placing {
        force: w.force,
        delete: w.delete,
    };
    let c = link.client().await?;
    match w.dry_run {
        true => crate::dry::put(global, c, &files, naming, how).await?,
        false => client::put(global, c, &files, &naming, how).await?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_stops_at_folders_and_finds_an_open_quote() {
        let remote: Vec<String> = [
            "a.txt",
            "photos/2024/x.jpg",
            "photos/2024/y.jpg",
            "photos/z.jpg",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(next_level(&remote, ""), ["a.txt", "photos/"]);
        assert_eq!(
            next_level(&remote, "photos/"),
            ["photos/2024/", "photos/z.jpg"]
        );
        assert_eq!(next_level(&remote, "photos/2024/x"), ["photos/2024/x.jpg"]);
        assert_eq!(open_quote("get \"my fi"), Some(4));
        assert_eq!(open_quote("get \"my file.txt\" "), None);
        assert_eq!(open_quote("get 'a b"), Some(4));
    }

    #[test]
    fn every_portuguese_name_finds_its_command() {
        for (word, cmd) in [
            ("listar", Cmd::Ls),
            ("enviar", Cmd::Put),
            ("baixar", Cmd::Get),
            ("deletar", Cmd::Rm),
            ("apagar", Cmd::Rm),
            ("criar", Cmd::Mkdir),
            ("mover", Cmd::Mv),
            ("renomear", Cmd::Mv),
            ("copiar", Cmd::Cp),
            ("procurar", Cmd::Find),
            ("compartilhar", Cmd::Share),
            ("partilhar", Cmd::Share),
            ("revogar", Cmd::Unshare),
            ("receber", Cmd::Request),
            ("pedir", Cmd::Request),
            ("clientes", Cmd::Who),
            ("quem", Cmd::Who),
            ("historico", Cmd::History),
            ("hora", Cmd::Time),
            ("ajuda", Cmd::Help),
            ("sair", Cmd::Quit),
            ("LS", Cmd::Ls),
        ] {
            assert_eq!(lookup(word), Some(cmd), "{word}");
        }
        assert_eq!(lookup("frobnicate"), None);
        assert!(help(None).contains("baixar"));
        assert!(help(Some("get")).contains("NAME|FOLDER/... [-o PATH]"));
    }
}
