//! The one-shot client commands: `ls`, `put`, `get`, `rm`. Each connects once, does its work
//! through `troca-net` (the same code the other faces use) and reports for people or as JSON.

use crate::args::{Command, Global};
use crate::output::{self, hex, print_json};
use crate::progress::Bar;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use troca_net::durable::free_local_path;
use troca_net::transfer::{download_to_path, download_to_writer, upload_path};
use troca_net::{ClientError, ClientOptions, HubClient};

pub fn main(global: &Global, command: Command) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(global, command))
}

async fn run(global: &Global, command: Command) -> Result<ExitCode> {
    // Check what can be checked before connecting, so usage errors don't depend on the hub.
    if let Command::Put {
        files,
        as_name: Some(_),
        ..
    } = &command
    {
        if files.len() > 1 {
            return usage("--as takes a single FILE");
        }
    }
    if let Command::Get {
        names,
        output: Some(o),
        ..
    } = &command
    {
        if names.len() > 1 && o == Path::new("-") {
            return usage("-o - takes a single NAME");
        }
        if names.len() > 1 && !o.is_dir() {
            return usage("with several NAMEs, -o must be an existing folder");
        }
    }
    let mut client = connect(global).await?;
    match command {
        Command::Ls { prefix } => ls(global, &mut client, prefix.as_deref().unwrap_or("")).await,
        Command::Put {
            files,
            as_name,
            force,
        } => put(global, &mut client, &files, as_name, force).await,
        Command::Get {
            names,
            output,
            force,
        } => get(global, &mut client, &names, output, force).await,
        Command::Rm { names } => rm(global, &mut client, &names).await,
        Command::Serve(_) => unreachable!("serve is not a client command"),
    }
}

fn usage(msg: &str) -> Result<ExitCode> {
    eprintln!("troca: {msg}");
    Ok(ExitCode::from(2))
}

async fn connect(global: &Global) -> Result<HubClient> {
    let token = match &global.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("TROCA_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    let options = ClientOptions {
        name: global.name.clone().unwrap_or_else(default_name),
        token,
    };
    Ok(HubClient::connect(&global.hub, &options).await?)
}

/// `user@host`, as the seeds' clients introduced themselves.
fn default_name() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    };
    format!("{user}@{host}")
}

/// What a command did to each of its arguments: rows for `--json`, and whether any failed.
struct Report<T> {
    rows: Vec<T>,
    failed: bool,
}

impl<T: Serialize> Report<T> {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            failed: false,
        }
    }

    /// Says what failed on stderr and remembers it for the exit status.
    fn fail(&mut self, what: impl std::fmt::Display) {
        eprintln!("troca: {what}");
        self.failed = true;
    }

    fn finish(self, global: &Global) -> Result<ExitCode> {
        if global.json {
            print_json(&self.rows)?;
        }
        Ok(if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// After a failed transfer: a refusal leaves the connection in step, anything else (a broken
/// stream, a local write error mid-download) may not, so start a fresh one.
async fn recover(global: &Global, client: &mut HubClient, err: &ClientError) -> Result<()> {
    if !matches!(err, ClientError::Hub { .. }) {
        *client = connect(global).await?;
    }
    Ok(())
}

#[derive(Serialize)]
struct LsRow {
    name: String,
    size: u64,
    modified: String,
    blake3: Option<String>,
}

async fn ls(global: &Global, client: &mut HubClient, prefix: &str) -> Result<ExitCode> {
    let entries = client.list(prefix).await?;
    if global.json {
        let rows: Vec<LsRow> = entries
            .iter()
            .map(|e| LsRow {
                name: e.name.clone(),
                size: e.size,
                modified: output::rfc3339(e.modified_ns),
                blake3: e.blake3.as_ref().map(hex),
            })
            .collect();
        print_json(&rows)?;
    } else {
        for e in &entries {
            println!(
                "{:>10}  {}  {}",
                output::size(e.size),
                output::local_time(e.modified_ns),
                e.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct PutRow {
    name: String,
    size: u64,
    blake3: String,
}

async fn put(
    global: &Global,
    client: &mut HubClient,
    files: &[PathBuf],
    as_name: Option<String>,
    force: bool,
) -> Result<ExitCode> {
    let mut report = Report::new();
    for file in files {
        let name = match &as_name {
            Some(n) => n.clone(),
            None => match file.file_name().and_then(|n| n.to_str()) {
                Some(n) => n.to_owned(),
                None => {
                    report.fail(format_args!("{}: not a file name", file.display()));
                    continue;
                }
            },
        };
        let bar = Bar::new(&name, global.quiet);
        match upload_path(client, file, &name, force, &bar).await {
            Ok(sent) => {
                if !global.json && !global.quiet {
                    eprintln!("uploaded {} ({})", sent.name, output::size(sent.size));
                }
                report.rows.push(PutRow {
                    name: sent.name,
                    size: sent.size,
                    blake3: hex(&sent.blake3),
                });
            }
            Err(e) => {
                report.fail(format_args!("cannot upload {}: {e}", file.display()));
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

#[derive(Serialize)]
struct GetRow {
    name: String,
    path: String,
    size: u64,
    blake3: String,
}

async fn get(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    output_path: Option<PathBuf>,
    force: bool,
) -> Result<ExitCode> {
    if output_path.as_deref() == Some(Path::new("-")) {
        let bar = Bar::new(&names[0], global.quiet);
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        download_to_writer(client, &names[0], &mut out, &bar).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = Report::new();
    for name in names {
        let base = Path::new(name.rsplit('/').next().unwrap_or(name));
        let wanted = match &output_path {
            Some(o) if o.is_dir() => o.join(base),
            Some(o) => o.clone(),
            None => base.to_path_buf(),
        };
        let target = if force {
            wanted.clone()
        } else {
            free_local_path(&wanted)
        };
        if target != wanted && !global.quiet {
            eprintln!(
                "troca: {} exists; saving {name} as {}",
                wanted.display(),
                target.display()
            );
        }
        let bar = Bar::new(name, global.quiet);
        match download_to_path(client, name, &target, force, &bar).await {
            Ok(f) => {
                if !global.json && !global.quiet {
                    eprintln!(
                        "downloaded {name} to {} ({})",
                        f.path.display(),
                        output::size(f.size)
                    );
                }
                report.rows.push(GetRow {
                    name: name.clone(),
                    path: f.path.display().to_string(),
                    size: f.size,
                    blake3: hex(&f.blake3),
                });
            }
            Err(e) => {
                report.fail(format_args!("cannot download {name}: {e}"));
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

#[derive(Serialize)]
struct RmRow {
    name: String,
}

async fn rm(global: &Global, client: &mut HubClient, names: &[String]) -> Result<ExitCode> {
    let mut report = Report::new();
    for name in names {
        match client.remove(name).await {
            Ok(()) => {
                if !global.json && !global.quiet {
                    eprintln!("removed {name}");
                }
                report.rows.push(RmRow { name: name.clone() });
            }
            Err(e) => {
                report.fail(format_args!("cannot remove {name}: {e}"));
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}
