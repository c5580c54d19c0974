//! `troca share`, `shares` and `unshare`: links that let anyone who has one download a file or
//! a folder from the hub's web face (or send files into a folder) until they expire, made and
//! revoked over the native protocol with a write or admin token.

use crate::args::Global;
use crate::client::{recover, with_default_port, Report};
use crate::output::{self, print_json};
use anyhow::Result;
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;
use troca_net::HubClient;
use troca_proto::json::rfc3339;
use troca_proto::msg::{Share, ShareEntry, Shared, UploadBounds, UploadUse};

#[derive(Serialize)]
struct ShareRow {
    id: u64,
    name: String,
    link: Option<String>,
    expires: String,
    upload: bool,
    max_downloads: u64,
}

/// The link to a share: on the web face's address as the hub gives it, `*` standing for the
/// host this client reached the hub by. `None` when the hub has no web face.
pub(crate) fn link(global: &Global, shared: &Shared) -> Option<String> {
    if shared.web.is_empty() {
        return None;
    }
    let host = link_host(global);
    let base = shared.web.replacen("://*", &format!("://{host}"), 1);
    Some(base + &troca_hub::service::share_path(&shared.secret, &shared.name))
}

/// The host of `--hub` as a URL writes it (an IPv6 address in brackets).
fn link_host(global: &Global) -> String {
    let address = troca_proto::key::ConnectString::parse(&global.hub)
        .map_or_else(|_| global.hub.clone(), |t| t.address);
    let address = with_default_port(&address, 13370);
    let host = troca_net::client::host_of(&address);
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// What the links `troca share` makes are to be.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Terms {
    /// How long each works (`None`: the hub's default).
    pub expires: Option<Duration>,
    /// An upload link's bounds; `None` for a read link.
    pub upload: Option<UploadBounds>,
    /// A read link's most downloads (0: no bound).
    pub max_downloads: u64,
    /// Also show each link as a QR code (on stderr), for a phone to scan.
    pub qr: bool,
    /// Asked in the shell: its notes name the shell's commands, not the command line's.
    pub shell: bool,
}

/// A command as the user types it: `troca unshare 3` on the command line, `unshare 3` in the
/// shell.
fn typed(shell: bool, command: &str) -> String {
    match shell {
        true => command.to_owned(),
        false => format!("troca {command}"),
    }
}

/// `text` as a QR code drawn with half blocks, two rows of modules a line, quiet zone included:
/// black on white on a terminal (whatever its colours), else dark blocks on the page's ground.
pub(crate) fn qr_text(text: &str, terminal: bool) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M).ok()?;
    let drawn = code.render::<Dense1x2>().quiet_zone(true).build();
    if !terminal {
        return Some(drawn + "\n");
    }
    // Black on white, each line reset so the terminal's own colours come back after it.
    Some(
        drawn
            .lines()
            .map(|l| format!("\x1b[38;5;16;48;5;231m{l}\x1b[0m\n"))
            .collect(),
    )
}

/// `troca share NAME...`: one link per name on stdout, what each shares (or takes, for an
/// upload link) and until when on stderr.
pub(crate) async fn share(
    global: &Global,
    client: &mut HubClient,
    names: &[String],
    terms: Terms,
) -> Result<ExitCode> {
    let mut report = Report::new(global);
    let Terms {
        expires,
        upload,
        max_downloads,
        qr,
        shell,
    } = terms;
    let secs = expires.map_or(0, |d| d.as_secs().max(1));
    let done = match (upload, max_downloads) {
        (Some(_), _) => "takes new files".to_owned(),
        (None, 0) => "shared".to_owned(),
        (None, 1) => "shared for one download".to_owned(),
        (None, n) => format!("shared for {n} downloads"),
    };
    for name in names {
        let ask = Share {
            name: name.clone(),
            expires_s: secs,
            upload,
            max_downloads,
        };
        match client.share(ask).await {
            Ok(shared) => {
                let link = link(global, &shared);
                let until = output::local_time(shared.expires_ns);
                if !global.json {
                    match &link {
                        Some(l) => println!("{l}"),
                        None => eprintln!(
                            "troca: the hub has no web face (--no-http): link {} has no address; \
                             its token is accepted by a web face on the same records",
                            shared.id
                        ),
                    }
                    if let (true, Some(l)) = (qr, &link) {
                        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
                        match qr_text(l, terminal) {
                            Some(code) => eprint!("{code}"),
                            None => eprintln!("troca: the link is too long for a QR code"),
                        }
                    }
                    if !global.quiet {
                        eprintln!(
                            "troca: {} {done} until {until} (link {}; `{}` revokes it)",
                            output::safe(&shared.name),
                            shared.id,
                            typed(shell, &format!("unshare {}", shared.id))
                        );
                    }
                }
                report.rows.push(ShareRow {
                    id: shared.id,
                    name: shared.name,
                    link,
                    expires: rfc3339(shared.expires_ns),
                    upload: upload.is_some(),
                    max_downloads,
                });
            }
            Err(e) => {
                report.refused(format_args!("cannot share {}", output::safe(name)), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}

#[derive(Serialize)]
pub(crate) struct ListedShare {
    id: u64,
    name: String,
    state: String,
    created: String,
    expires: String,
    made_by: String,
    /// An upload link's bounds and what came in through it; `null` for a read link.
    upload: Option<ListedUpload>,
    /// A read link's most downloads (0: no bound), and how many began.
    max_downloads: u64,
    downloads: u64,
}

#[derive(Serialize)]
pub(crate) struct ListedUpload {
    max_bytes: u64,
    max_files: u64,
    bytes: u64,
    files: u64,
}

impl From<UploadUse> for ListedUpload {
    fn from(u: UploadUse) -> Self {
        Self {
            max_bytes: u.bytes,
            max_files: u.files,
            bytes: u.used_bytes,
            files: u.used_files,
        }
    }
}

/// Share links as JSON rows.
pub(crate) fn rows(shares: Vec<ShareEntry>) -> Vec<ListedShare> {
    shares
        .into_iter()
        .map(|s| ListedShare {
            id: s.id,
            name: s.name,
            state: s.state,
            created: rfc3339(s.created_ns),
            expires: rfc3339(s.expires_ns),
            made_by: s.made_by,
            upload: s.upload.map(ListedUpload::from),
            max_downloads: s.max_downloads,
            downloads: s.downloads,
        })
        .collect()
}

/// `troca shares`: the links this client's token made, newest first.
pub(crate) async fn shares(
    global: &Global,
    client: &mut HubClient,
    shell: bool,
) -> Result<ExitCode> {
    let shares = client.shares().await?;
    if global.json {
        print_json(&rows(shares))?;
        return Ok(ExitCode::SUCCESS);
    }
    if shares.is_empty() {
        let make = typed(shell, "share NAME");
        eprintln!("troca: no share links ({make} makes one)");
    }
    for s in shares {
        let what = match s.upload {
            None if s.max_downloads > 0 => format!(
                "{} ({} of {} downloads)",
                output::safe(&s.name),
                s.downloads,
                s.max_downloads
            ),
            None => output::safe(&s.name).to_string(),
            Some(u) => format!(
                "upload to {} ({} file{}, {} so far)",
                output::safe(&s.name),
                u.used_files,
                if u.used_files == 1 { "" } else { "s" },
                troca_proto::json::human_size(u.used_bytes)
            ),
        };
        println!(
            "{:>6}  {:<8} {:<16}  {:<9}  {what}",
            s.id,
            s.state,
            output::local_time(s.expires_ns),
            s.made_by,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct Revoked {
    id: u64,
}

/// `troca unshare ID...`.
pub(crate) async fn unshare(
    global: &Global,
    client: &mut HubClient,
    ids: &[u64],
) -> Result<ExitCode> {
    let mut report = Report::new(global);
    for &id in ids {
        match client.unshare(id).await {
            Ok(()) => {
                if !global.json && !global.quiet {
                    eprintln!("troca: share link {id} revoked");
                }
                report.rows.push(Revoked { id });
            }
            Err(e) => {
                report.refused(format_args!("cannot revoke share link {id}"), &e);
                recover(global, client, &e).await?;
            }
        }
    }
    report.finish(global)
}
