//! `troca token create|list|revoke`: manages a hub's tokens directly in its state folder, on the
//! hub's machine. A running hub sees the changes at its next check.

use crate::args::{Global, QuotaArgs, TokenCommand, TokenPlace};
use crate::output::{self, print_json};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use troca_hub::records::postgres::PgTokens;
use troca_hub::records::sqlite::SqliteTokens;
use troca_hub::records::{Amount, NewToken, Role, TokenInfo, TokenSpec, Tokens};

/// The default share's state folder, as `troca serve` with no arguments uses.
fn state_dir(state: Option<PathBuf>) -> PathBuf {
    state.unwrap_or_else(|| PathBuf::from("./troca-files").join(troca_proto::name::STATE_DIR_NAME))
}

fn open(place: TokenPlace) -> Result<Box<dyn Tokens>> {
    if let Some(address) = place.database.address() {
        let db = RUNTIME
            .block_on(troca_hub::pg::Db::open(&address))
            .context("cannot open the group's database")?;
        // This command never checks tokens, so no admin token is needed: a hash nobody has.
        let nobody = blake3::hash(b"no admin token here");
        return Ok(Box::new(PgTokens::new(db, nobody)));
    }
    let dir = state_dir(place.state);
    if !dir.is_dir() {
        bail!(
            "{} is not a hub's state folder (run \"troca serve\" once, or pass --state PATH)",
            dir.display()
        );
    }
    let (tokens, _) =
        SqliteTokens::open(&dir).with_context(|| format!("cannot open {}", dir.display()))?;
    Ok(Box::new(tokens))
}

/// The database is reached from blocking code; this runtime runs its connections.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
});

pub fn main(global: &Global, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            role,
            label,
            expires,
            folder,
            quota,
            place,
        } => {
            let role = Role::parse(&role).expect("clap checked the role");
            let quota = Amount {
                bytes: quota.quota.unwrap_or(0),
                files: quota.quota_files.unwrap_or(0),
            };
            if role == Role::Read && quota != Amount::default() {
                bail!("a read token uploads nothing: a quota is for write and admin tokens");
            }

            let now = now_ns();
            let expires_ns = expires.map(|d| now.saturating_add(d.as_nanos() as i64));
            let spec = TokenSpec {
                role,
                label: &label,
                expires_ns,
                folder: folder.as_deref(),
                quota,
                made_by: None,
                max_downloads: 0,
            };
            let NewToken { id, secret } =
                in_runtime(|| open(place)?.create(spec, now).map_err(Into::into))?;
            // The secret, and only it, on stdout; everything else on stderr.
            println!("{secret}");
            if !global.quiet {
                let until = match expires_ns {
                    Some(at) => format!(", accepted until {}", output::local_time(at)),
                    None => String::new(),
                };
                let reach = match &folder {
                    Some(f) => format!(" for {}/", output::safe(f)),
                    None => String::new(),
                };
                eprintln!(
                    "troca: created {} token {id}{reach}{until}; it is shown only now, so keep \
                     it safe",
                    role.as_str()
                );
            }
        }
        TokenCommand::List { place } => {
            let tokens = in_runtime(|| open(place)?.list().map_err(Into::into))?;
            list(global, &tokens, now_ns())?;
        }
        TokenCommand::Quota { id, quota, place } => set_quota(global, id, quota, place)?,
        TokenCommand::Revoke { id, place } => {
            if !in_runtime(|| open(place)?.revoke(id).map_err(Into::into))? {
                bail!("there is no token {id}");
            }
            if !global.quiet {
                eprintln!("troca: revoked token {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `token quota`: a new bound for bytes, files or both; the other as it was.
fn set_quota(global: &Global, id: i64, asked: QuotaArgs, place: TokenPlace) -> Result<()> {
    let (bytes, files) = (asked.quota, asked.quota_files);
    if bytes.is_none() && files.is_none() {
        bail!("say the new quota: --quota SIZE, --quota-files N, or both (0: no bound)");
    }
    let records = in_runtime(|| open(place))?;
    let tokens = in_runtime(|| records.list().map_err(Into::into))?;
    let Some(old) = tokens.iter().find(|t| t.id == id) else {
        bail!("there is no token {id}");
    };
    if old.role == Role::Read {
        bail!("token {id} is a read token, which uploads nothing: a quota is for write and admin tokens");
    }
    let quota = Amount {
        bytes: bytes.unwrap_or(old.quota.bytes),
        files: files.unwrap_or(old.quota.files),
    };
    if !in_runtime(|| records.set_quota(id, quota).map_err(Into::into))? {
        bail!("there is no token {id}");
    }
    if !global.quiet {
        let new = TokenInfo {
            quota,
            ..old.clone()
        };
        eprintln!("troca: token {id} keeps {}", stored(&new));
    }
    Ok(())
}

/// `token list`: a table, or JSON rows.
fn list(global: &Global, tokens: &[TokenInfo], now: i64) -> Result<()> {
    if global.json {
        let rows: Vec<_> = tokens
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.id,
                    "role": t.role.as_str(),
                    "label": t.label,
                    "created": troca_proto::json::rfc3339(t.created_ns),
                    "expires": t.expires_ns.map(troca_proto::json::rfc3339),
                    "state": t.state(now),
                    "revoked": t.revoked,
                    "folder": t.folder,
                    "quota": (t.quota != Amount::default())
                        .then(|| serde_json::json!({"bytes": t.quota.bytes, "files": t.quota.files})),
                    "used": {"bytes": t.used.bytes, "files": t.used.files},
                    // A share link's maker: a token's id, or 0 for the admin token file.
                    "shared_by": t.made_by,
                })
            })
            .collect();
        return print_json(&rows);
    }
    println!(
        "{:>4}  {:<6} {:<16} {:<16} {:<8} {:<16} {:<24} LABEL",
        "ID", "ROLE", "CREATED", "EXPIRES", "STATE", "FOLDER", "STORED"
    );
    for t in tokens {
        let expires = t
            .expires_ns
            .map_or_else(|| "never".into(), output::local_time);
        let folder = t
            .folder
            .as_deref()
            .map_or_else(|| "(all)".into(), |f| format!("{}/", output::safe(f)));
        let label = match t.made_by {
            Some(troca_hub::records::SHARED_BY_ADMIN_FILE) => {
                format!("{} (by the admin token)", t.label)
            }
            Some(by) => format!("{} (by token {by})", t.label),
            None => t.label.clone(),
        };
        println!(
            "{:>4}  {:<6} {:<16} {:<16} {:<8} {:<16} {:<24} {}",
            t.id,
            t.role.as_str(),
            output::local_time(t.created_ns),
            expires,
            t.state(now),
            folder,
            stored(t),
            output::safe(&label)
        );
    }
    Ok(())
}

/// What a token's uploads keep on the hub, against its quota if it has one: `1.2 GiB of 10 GiB`.
fn stored(t: &TokenInfo) -> String {
    use troca_proto::json::human_size;
    let bytes = match t.quota.bytes {
        0 => human_size(t.used.bytes),
        q => format!("{} of {}", human_size(t.used.bytes), human_size(q)),
    };
    match t.quota.files {
        0 => bytes,
        q => format!("{bytes}, {} of {q} files", t.used.files),
    }
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Runs `f` inside the runtime (the database's calls block in place on it).
fn in_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    RUNTIME.block_on(async { tokio::task::block_in_place(f) })
}
