//! `troca json`: seed 000's JSON requests, one per line on stdin, each answered by one JSON line
//! on stdout, in order. Nothing else is ever written to stdout. A malformed line or an unknown
//! operation gets an error answer and the next line is read. The work is done by the same code as
//! the one-shot commands.

use crate::args::Global;
use crate::client::{get_one, put_one, Link};
use anyhow::Result;
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use troca_net::ClientError;
use troca_proto::json as rows;
use troca_proto::msg::History;
use troca_proto::ErrorCode;

/// The operations, as `unknown_operation` answers list them.
const OPERATIONS: &str =
    "list, find, upload, download, remove, make_folder, move, history, register, list_clients, \
     status, time, q";

pub fn main(global: &Global) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(global))
}

async fn run(global: &Global) -> Result<ExitCode> {
    let mut link = Link::new(global);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let (answer, quit) = answer(&mut link, &line).await;
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
        if quit {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A failed request: a stable code and a message for people.
struct Failure {
    code: &'static str,
    message: String,
}

impl Failure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        let code = match e.downcast_ref::<ClientError>() {
            Some(ClientError::Hub { code, .. }) => code.as_str(),
            Some(ClientError::Connect { .. }) | Some(ClientError::Io(_)) => "connection",
            Some(ClientError::Local { .. }) => "local",
            Some(ClientError::Integrity { .. }) => "integrity",
            Some(ClientError::Protocol(_)) => "protocol",
            Some(ClientError::UnknownHubKey { .. } | ClientError::HubKeyMismatch { .. }) => {
                "untrusted_hub"
            }
            None if e.downcast_ref::<crate::known::Untrusted>().is_some() => "untrusted_hub",
            None => "internal",
        };
        let hint = match crate::output::hub_code(&e) {
            Some(ErrorCode::AlreadyExists) => "; set \"force\": true to replace it",
            Some(ErrorCode::Unauthorized | ErrorCode::Forbidden) => {
                "; start troca json with --token-file PATH or TROCA_TOKEN to use a token"
            }
            _ => "",
        };
        Failure::new(code, format!("{}{hint}", crate::output::one_line(&e)))
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// Answers one line; the flag says whether to stop.
async fn answer(link: &mut Link<'_>, line: &str) -> (Value, bool) {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            let f = Failure::new("bad_json", format!("the line is not valid JSON: {e}"));
            return (failure(None, f), false);
        }
    };
    let id = request.get("id").cloned();
    let Some(fields) = request.as_object() else {
        let f = Failure::new(
            "bad_request",
            "a request is a JSON object with an \"operation\"",
        );
        return (failure(id, f), false);
    };
    let op = fields
        .get("operation")
        .and_then(Value::as_str)
        .unwrap_or("");
    let quit = matches!(op, "q" | "quit");
    let result = perform(link, op, fields).await;
    if let Err(f) = &result {
        // A lost connection is made again for the next request.
        if matches!(f.code, "connection" | "protocol" | "integrity") {
            link.reset();
        }
    }
    let answer = match result {
        Ok(mut body) => {
            let mut out = Map::new();
            out.insert("ok".into(), Value::Bool(true));
            if let Some(id) = id {
                out.insert("id".into(), id);
            }
            out.append(&mut body);
            Value::Object(out)
        }
        Err(f) => failure(id, f),
    };
    (answer, quit)
}

fn failure(id: Option<Value>, f: Failure) -> Value {
    let mut out = json!({ "ok": false, "error": { "code": f.code, "message": f.message } });
    if let Some(id) = id {
        out["id"] = id;
    }
    out
}

fn field<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, Failure> {
    match fields.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Failure::new(
            "bad_request",
            format!("\"{name}\" must be a string"),
        )),
        None => Err(Failure::new(
            "missing_field",
            format!("this operation needs \"{name}\""),
        )),
    }
}

fn flag(fields: &Map<String, Value>, name: &str) -> bool {
    fields.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn optional<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => Map::from_iter([("result".to_owned(), other)]),
    }
}

async fn perform(
    link: &mut Link<'_>,
    op: &str,
    fields: &Map<String, Value>,
) -> Result<Map<String, Value>, Failure> {
    let force = fields
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let body = match op {
        "" => {
            return Err(Failure::new(
                "missing_field",
                format!("a request needs an \"operation\": one of {OPERATIONS}"),
            ))
        }
        "q" | "quit" => json!({ "bye": true }),
        "list" => {
            let prefix = optional(fields, "prefix").unwrap_or("");
            let entries = link.client().await?.list(prefix).await?;
            json!({ "files": rows::files(&entries) })
        }
        "upload" if Path::new(field(fields, "file_path")?).is_dir() => {
            // A folder: every file in it, under the hub folder `to` (default: the top).
            let path = PathBuf::from(field(fields, "file_path")?);
            let naming = crate::client::Naming {
                as_name: None,
                to: optional(fields, "to").map(str::to_owned),
            };
            let plan = crate::client::upload_plan(&[path], &naming)
                .map_err(|e| Failure::new("local", format!("{e:#}")))?;
            let mut rows = Vec::new();
            for (file, name) in &plan {
                rows.push(put_one(link.client().await?, file, Some(name), force, true).await?);
            }
            json!({ "files": rows })
        }
        "upload" => {
            let path = field(fields, "file_path")?;
            let name = optional(fields, "name").map(str::to_owned).or_else(|| {
                let to = optional(fields, "to")?.trim_end_matches('/');
                let file = Path::new(path).file_name()?.to_str()?;
                Some(format!("{to}/{file}"))
            });
            let row = put_one(
                link.client().await?,
                Path::new(path),
                name.as_deref(),
                force,
                true,
            )
            .await?;
            json!({ "file": row })
        }
        "download" => {
            let name = field(fields, "file_name")?;
            let save_to = optional(fields, "save_to").map(Path::new);
            let row = get_one(link.client().await?, name, save_to, force, true).await?;
            json!({ "file": row })
        }
        "remove" => {
            let name = field(fields, "file_name")?;
            let recursive = flag(fields, "recursive");
            let files = link.client().await?.remove(name, recursive).await?;
            json!({ "removed": name, "files": files })
        }
        "make_folder" => {
            let name = field(fields, "name")?;
            let created = link.client().await?.make_folder(name).await?;
            json!({ "folder": name, "created": created })
        }
        "move" => {
            let (from, to) = (field(fields, "from")?, field(fields, "to")?);
            let name = link.client().await?.rename(from, to, force).await?;
            json!({ "from": from, "name": name })
        }
        "find" => {
            let text = field(fields, "text")?;
            let entries = link.client().await?.find(text).await?;
            json!({ "files": rows::files(&entries) })
        }
        "history" => {
            let limit = fields.get("limit").and_then(Value::as_u64).unwrap_or(50);
            let limit = u32::try_from(limit).unwrap_or(u32::MAX);
            let query = History {
                limit,
                client: optional(fields, "client").map(str::to_owned),
                op: optional(fields, "op").map(str::to_owned),
                before: fields.get("before").and_then(Value::as_u64).unwrap_or(0),
            };
            let page = link.client().await?.history(query).await?;
            json!({ "history": rows::history(page.entries), "next_before": page.next })
        }
        "register" => {
            let name = field(fields, "name")?;
            link.client().await?.register(name).await?;
            json!({ "name": name })
        }
        "list_clients" => json!({ "clients": rows::clients(link.client().await?.who().await?) }),
        "status" => {
            json!({ "status": rows::status(&link.client().await?.status().await?) })
        }
        "time" => rows::time(&link.client().await?.status().await?),
        other => {
            return Err(Failure::new(
                "unknown_operation",
                format!("unknown operation \"{other}\"; known: {OPERATIONS}"),
            ))
        }
    };
    Ok(object(body))
}
