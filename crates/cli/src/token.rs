//! `troca token create|list|revoke`: manages a hub's tokens directly in its state folder, on the
//! hub's machine. A running hub sees the changes at its next check.

use crate::args::{Global, TokenCommand, TokenPlace};
use crate::output::{self, print_json};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use troca_hub::records::postgres::PgTokens;
use troca_hub::records::sqlite::SqliteTokens;
use troca_hub::records::{NewToken, Role, Tokens};

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
        TokenCommand::Create { role, label, place } => {
            let role = Role::parse(&role).expect("clap checked the role");
            let now = jiff::Timestamp::now().as_nanosecond() as i64;
            let NewToken { id, secret } =
                in_runtime(|| open(place)?.create(role, &label, now).map_err(Into::into))?;
            // The secret, and only it, on stdout; everything else on stderr.
            println!("{secret}");
            if !global.quiet {
                eprintln!(
                    "troca: created {} token {id}; it is shown only now, so keep it safe",
                    role.as_str()
                );
            }
        }
        TokenCommand::List { place } => {
            let tokens = in_runtime(|| open(place)?.list().map_err(Into::into))?;
            if global.json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id,
                            "role": t.role.as_str(),
                            "label": t.label,
                            "created": troca_proto::json::rfc3339(t.created_ns),
                            "revoked": t.revoked,
                        })
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                println!(
                    "{:>4}  {:<6} {:<16} {:<8} LABEL",
                    "ID", "ROLE", "CREATED", "STATE"
                );
                for t in tokens {
                    println!(
                        "{:>4}  {:<6} {:<16} {:<8} {}",
                        t.id,
                        t.role.as_str(),
                        output::local_time(t.created_ns),
                        if t.revoked { "revoked" } else { "active" },
                        t.label
                    );
                }
            }
        }
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

/// Runs `f` inside the runtime (the database's calls block in place on it).
fn in_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    RUNTIME.block_on(async { tokio::task::block_in_place(f) })
}
