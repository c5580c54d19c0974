//! `troca json`: JSON requests, one per line on stdin, each answered by one JSON line
//! on stdout, in order. Nothing else is ever written to stdout. A malformed line or an unknown
//! operation gets an error answer and the next line is read. The work is done by the same code as
//! the one-shot commands.

use crate::args::Global;
use crate::client::{put_one, Fetched, GetRow, Link};
use crate::retry::Retries;
use anyhow::Result;
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use troca_net::ClientError;
use troca_proto::json as rows;
use troca_proto::ErrorCode;

/// The operations, as `unknown_operation` answers list them.
const OPERATIONS: &str =
    "list, find, upload, download, remove, make_folder, move, copy, share, list_shares, unshare, \
     history, register, list_clients, status, time, q (or quit)";

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
            Some(client) => code_of(client),
            None if e.downcast_ref::<crate::known::Untrusted>().is_some() => "untrusted_hub",
            None => "internal",
        };
        let hint = match crate::output::hub_code(&e) {
            Some(ErrorCode::AlreadyExists) => "; set \"force\": true to replace it",
            Some(ErrorCode::Unauthorized | ErrorCode::Forbidden | ErrorCode::Quota) => {
                "; start troca json with --token-file PATH or TROCA_TOKEN to use a token"
            }
            _ => "",
        };
        Failure::new(code, format!("{}{hint}", crate::output::one_line(&e)))
    }
}

/// The JSON mode's code for a client error.
fn code_of(e: &ClientError) -> &'static str {
    match e {
        ClientError::Hub { code, .. } => code.as_str(),
        ClientError::Connect { .. } | ClientError::Io(_) => "connection",
        ClientError::Local { .. } => "local",
        ClientError::Integrity { .. } => "integrity",
        ClientError::Protocol(_) => "protocol",
        ClientError::UnknownHubKey { .. } | ClientError::HubKeyMismatch { .. } => "untrusted_hub",
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
    let Value::Object(fields) = request else {
        let f = Failure::new(
            "bad_request",
            "a request is a JSON object with an \"operation\"",
        );
        return (failure(id, f), false);
    };
    let result = match parse(fields) {
        Ok(request) => {
            let quit = matches!(request, Request::Q);
            let result = perform(link, request).await;
            if let Err(f) = &result {
                // A lost connection is made again for the next request.
                if matches!(f.code, "connection" | "protocol" | "integrity") {
                    link.reset();
                }
            }
            (result, quit)
        }
        Err(f) => (Err(f), false),
    };
    let (result, quit) = result;
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

/// One request, by its `"operation"`; fields a request does not use are ignored.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case")]
enum Request {
    #[serde(alias = "quit")]
    Q,
    List {
        #[serde(default)]
        prefix: String,
    },
    Find {
        text: String,
    },
    Upload {
        file_path: PathBuf,
        name: Option<String>,
        /// The hub folder to upload into (the file keeps its name).
        to: Option<String>,
        #[serde(default)]
        force: bool,
        /// For a folder: make its place on the hub the same as it (as `put --delete`).
        #[serde(default)]
        delete: bool,
    },
    Download {
        file_name: String,
        save_to: Option<PathBuf>,
        #[serde(default)]
        force: bool,
        /// For a folder: make its copy here the same as it (as `get --delete`).
        #[serde(default)]
        delete: bool,
    },
    Remove {
        file_name: String,
        #[serde(default)]
        recursive: bool,
    },
    MakeFolder {
        name: String,
    },
    Move {
        from: String,
        to: String,
        #[serde(default)]
        force: bool,
    },
    Copy {
        from: String,
        to: String,
        #[serde(default)]
        force: bool,
    },
    Share(rows::ShareQuery),
    ListShares,
    Unshare {
        id: u64,
    },
    History(rows::HistoryQuery),
    Register {
        name: String,
    },
    ListClients,
    Status,
    Time,
}

/// The request a JSON object asks for, or why it is not one: the operation is checked first
/// (missing or unknown), then its fields (missing, or of the wrong type).
fn parse(fields: Map<String, Value>) -> Result<Request, Failure> {
    let op = match fields.get("operation") {
        None => {
            return Err(Failure::new(
                "missing_field",
                format!("a request needs an \"operation\": one of {OPERATIONS}"),
            ))
        }
        Some(Value::String(op)) => op.clone(),
        Some(_) => {
            return Err(Failure::new(
                "bad_request",
                "\"operation\" must be a string",
            ))
        }
    };
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        let text = e.to_string();
        if text.starts_with("unknown variant") {
            Failure::new(
                "unknown_operation",
                format!("unknown operation \"{op}\"; known: {OPERATIONS}"),
            )
        } else if let Some(rest) = text.strip_prefix("missing field ") {
            Failure::new("missing_field", format!("{op} needs {rest}"))
        } else {
            Failure::new("bad_request", format!("{op}: {text}"))
        }
    })
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => Map::from_iter([("result".to_owned(), other)]),
    }
}

async fn perform(link: &mut Link<'_>, request: Request) -> Result<Map<String, Value>, Failure> {
    let body = match request {
        Request::Q => json!({ "bye": true }),
        Request::List { prefix } => {
            let entries = link.client().await?.list(&prefix).await?;
            json!({ "files": rows::files(&entries) })
        }
        Request::Upload {
            file_path,
            name,
            to,
            force,
            delete,
        } => {
            let how = crate::client::Placing { force, delete };
            upload(link, file_path, name, to, how).await?
        }
        Request::Download {
            file_name,
            save_to,
            force,
            delete,
        } => {
            let how = crate::client::Placing { force, delete };
            download(link, &file_name, save_to, how).await?
        }
        Request::Remove {
            file_name,
            recursive,
        } => {
            let files = link.client().await?.remove(&file_name, recursive).await?;
            json!({ "removed": file_name, "files": files })
        }
        Request::MakeFolder { name } => {
            let created = link.client().await?.make_folder(&name).await?;
            json!({ "folder": name, "created": created })
        }
        Request::Move { from, to, force } => {
            let name = link.client().await?.rename(&from, &to, force).await?;
            json!({ "from": from, "name": name })
        }
        Request::Copy { from, to, force } => {
            let c = link.client().await?.copy(&from, &to, force, |_| {}).await?;
            json!({ "from": from, "name": c.name, "files": c.files, "bytes": c.bytes })
        }
        Request::Find { text } => {
            let found = link.client().await?.find(&text).await?;
            json!({ "files": rows::files(&found.entries), "cut": found.cut })
        }
        Request::Share(asked) => {
            let ask = troca_proto::msg::Share {
                name: asked.name.clone(),
                expires_s: asked.expires_s.unwrap_or(0),
                upload: asked.bounds(),
                max_downloads: asked.max_downloads,
            };
            let shared = link.client().await?.share(ask).await?;
            json!({
                "id": shared.id,
                "name": shared.name,
                "link": crate::share::link(link.global, &shared),
                "expires": troca_proto::json::rfc3339(shared.expires_ns),
                "upload": asked.upload,
                "max_downloads": asked.max_downloads,
            })
        }
        Request::ListShares => {
            let shares = link.client().await?.shares().await?;
            json!({ "shares": crate::share::rows(shares) })
        }
        Request::Unshare { id } => {
            link.client().await?.unshare(id).await?;
            json!({ "unshared": id })
        }
        Request::History(query) => {
            let page = link.client().await?.history(query.into()).await?;
            json!({ "history": rows::history(page.entries), "next_before": page.next })
        }
        Request::Register { name } => {
            link.client().await?.register(&name).await?;
            json!({ "name": name })
        }
        Request::ListClients => {
            json!({ "clients": rows::clients(link.client().await?.who().await?) })
        }
        Request::Status => {
            json!({ "status": rows::status(&link.client().await?.status().await?) })
        }
        Request::Time => rows::time(&link.client().await?.status().await?),
    };
    Ok(object(body))
}

/// A folder's answer, sent or fetched: its files, and what could not be done (the rest still
/// go).
struct Folder<Row> {
    files: Vec<Row>,
    failed: Vec<Value>,
    /// Folders holding no file, made on the hub (an upload's).
    created: Vec<String>,
    /// Names deleted (`"delete": true`), a folder's ending in `/`: on the hub for an upload,
    /// here for a download.
    deleted: Vec<String>,
    note: Option<String>,
}

impl<Row> Folder<Row> {
    fn new() -> Self {
        Self {
            files: Vec::new(),
            failed: Vec::new(),
            created: Vec::new(),
            deleted: Vec::new(),
            note: None,
        }
    }

    fn deleted(&mut self, name: impl std::fmt::Display, folder: bool) {
        let slash = if folder { "/" } else { "" };
        self.deleted.push(format!("{name}{slash}"));
    }
}

impl<Row> crate::client::Notes for Folder<Row> {
    fn not_done(&mut self, what: &str, e: &ClientError) {
        let mut failure = refusal(None, e);
        failure["what"] = what.into();
        self.failed.push(failure);
    }
    fn failed(&self) -> bool {
        !self.failed.is_empty()
    }
    fn note(&mut self, text: &str) {
        self.note = Some(text.to_owned());
    }
}

impl crate::client::UploadSink for Folder<crate::client::PutRow> {
    fn sent(&mut self, row: crate::client::PutRow) {
        self.files.push(row);
    }
    fn refused(&mut self, file: &std::path::Path, e: &ClientError) {
        self.failed.push(refusal(Some(file), e));
    }
    fn stopped(&mut self, e: &ClientError) {
        self.failed.push(refusal(None, e));
    }
    fn made(&mut self, folder: &str, made: bool) {
        if made {
            self.created.push(folder.to_owned());
        }
    }
    fn deleted(&mut self, name: &str, folder: bool) {
        Folder::deleted(self, name, folder);
    }
}

impl crate::client::DownloadSink for Folder<GetRow> {
    fn got(&mut self, row: GetRow) {
        self.files.push(row);
    }
    fn rows(&self) -> &[GetRow] {
        &self.files
    }
    fn refused(&mut self, name: &str, e: &ClientError) {
        let mut failure = refusal(None, e);
        failure["name"] = name.into();
        self.failed.push(failure);
    }
    fn deleted(&mut self, path: &std::path::Path, folder: bool) {
        Folder::deleted(self, path.display(), folder);
    }
    fn not_deleted(&mut self, path: &std::path::Path, e: std::io::Error) {
        self.failed
            .push(refusal(Some(path), &ClientError::local(path, e)));
    }
}

/// One entry of `failed`: the file (none when the connection broke mid-batch), and why.
fn refusal(file: Option<&std::path::Path>, e: &ClientError) -> Value {
    json!({
        "path": file.map(|f| f.display().to_string()),
        "error": { "code": code_of(e), "message": e.to_string() },
    })
}

/// Uploads a file (as `name`, or into the hub folder `to`), or a folder's every file.
async fn upload(
    link: &mut Link<'_>,
    path: PathBuf,
    name: Option<String>,
    to: Option<String>,
    how: crate::client::Placing,
) -> Result<Value, Failure> {
    let force = how.replaces();
    if path.is_dir() {
        let naming = crate::client::Naming { as_name: None, to };
        let plan = crate::client::upload_plan(&[path], &naming)
            .map_err(|e| Failure::new("local", format!("{e:#}")))?;
        let mut answer = Folder::new();
        let global = link.global;
        let client = link.client().await?;
        let folders = &plan.folders;
        let after = crate::client::AfterSending::new(
            &plan.files,
            &plan.skipped,
            folders,
            &plan.dirs,
            how.delete,
        );
        crate::client::send_plan(
            global,
            client,
            plan.files.clone(),
            folders,
            how,
            true,
            &mut answer,
        )
        .await?;
        after.run(global, client, &mut answer).await?;
        let skipped: Vec<Value> = plan
            .skipped
            .iter()
            .map(|s| json!({ "path": s.path.display().to_string(), "reason": s.why.code(), "message": s.why.to_string() }))
            .collect();
        let Folder {
            files,
            failed,
            created,
            deleted,
            note,
        } = answer;
        return Ok(json!({
            "files": files, "skipped": skipped, "failed": failed,
            "created": created, "deleted": deleted, "note": note,
        }));
    }
    let name = name.or_else(|| {
        let to = to?;
        let file = path.file_name()?.to_str()?;
        Some(format!("{}/{file}", to.trim_end_matches('/')))
    });
    let (global, client) = (link.global, link.client().await?);
    let what = format!(
        "upload of {}",
        crate::output::safe(&path.display().to_string())
    );
    let row = Retries::new(global)
        .run(client, &what, async |c| {
            put_one(c, &path, name.as_deref(), force, true).await
        })
        .await?;
    Ok(json!({ "file": row }))
}

/// Downloads a file (answered as `file`), or a folder's every file (as `files`, with what
/// failed; the rest still come).
async fn download(
    link: &mut Link<'_>,
    name: &str,
    save_to: Option<PathBuf>,
    how: crate::client::Placing,
) -> Result<Value, Failure> {
    let (global, client) = (link.global, link.client().await?);
    let mut answer = Folder::<GetRow>::new();
    let out = save_to.as_deref();
    let fetched = crate::client::get_name(global, client, name, out, how, true, &mut answer);
    if fetched.await? == Fetched::File {
        return Ok(json!({ "file": answer.files.pop() }));
    }
    if how.delete {
        let root = save_to.unwrap_or_else(|| PathBuf::from("."));
        crate::client::delete_here(global, client, name, &root, &mut answer).await?;
    }
    let Folder {
        files,
        failed,
        deleted,
        note,
        ..
    } = answer;
    Ok(json!({ "files": files, "failed": failed, "deleted": deleted, "note": note }))
}
