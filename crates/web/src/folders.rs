//! Folders on the web: the server-rendered listing of each folder (`GET /files/FOLDER/`, also
//! `/`), a folder as a `.zip` streamed in constant memory (`?zip`), and the JSON operations
//! `POST /api/folders` (create), `POST /api/move` (move or rename), `POST /api/copy` (copy on
//! the hub), `GET /api/find` (search
//! every folder) and `GET /api/me` (what the visitor may do). Every one goes through the hub's
//! service.

use crate::api::{caller, recorded};
use crate::error::ApiError;
use crate::page;
use crate::zipstream::{DosTime, Spill, ZipStream};
use crate::Visitor;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use std::io::{self, Write};
use std::sync::Arc;
use troca_hub::access::{Caller, Rights};
use troca_hub::service::Source;
use troca_hub::{Hub, HubError, Listing};
use troca_proto::json;
use troca_proto::msg::Entry;

/// Bytes gathered before a chunk of a zip goes out.
const ZIP_CHUNK: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
pub(crate) struct NewFolder {
    name: String,
}

pub(crate) async fn make_folder(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Json(body): Json<NewFolder>,
) -> Result<Response, ApiError> {
    let hub = &hub;
    let name = body.name;
    recorded(
        hub,
        &v,
        &headers,
        "mkdir",
        name.clone(),
        |caller| async move {
            let created = hub.make_folder(&name, &caller).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let answer = Json(serde_json::json!({ "name": name, "created": created }));
            Ok(((status, answer).into_response(), 0))
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct MoveRequest {
    from: String,
    to: String,
    #[serde(default)]
    force: bool,
}

pub(crate) async fn rename(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Json(m): Json<MoveRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hub = &hub;
    let target = format!("{} -> {}", m.from, m.to);
    recorded(hub, &v, &headers, "mv", target, |caller| async move {
        let name = hub.rename(&m.from, &m.to, m.force, &caller).await?;
        Ok((Json(serde_json::json!({ "from": m.from, "name": name })), 0))
    })
    .await
}

pub(crate) async fn copy(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Json(m): Json<MoveRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let hub = &hub;
    let target = format!("{} -> {}", m.from, m.to);
    recorded(hub, &v, &headers, "cp", target, |caller| async move {
        let progress = Default::default();
        let done = hub
            .copy(&m.from, &m.to, m.force, &caller, &progress)
            .await?;
        let answer = serde_json::json!({
            "from": m.from,
            "name": done.name,
            "files": done.files,
            "bytes": done.bytes,
        });
        Ok((Json(answer), 0))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(crate) struct FindQuery {
    #[serde(default)]
    q: String,
}

pub(crate) async fn find(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Query(q): Query<FindQuery>,
) -> Result<Response, ApiError> {
    let hub = &hub;
    recorded(
        hub,
        &v,
        &headers,
        "find",
        q.q.clone(),
        |caller| async move {
            let found = hub.find(&q.q, &caller).await?;
            let mine = found_mine(hub, &caller, &found.entries).await?;
            let rows = json::files(&found.entries).into_iter().zip(mine);
            let rows: Vec<FoundRow> = rows.map(|(row, mine)| FoundRow { row, mine }).collect();
            let mut response = Json(rows).into_response();
            if found.cut {
                let h = response.headers_mut();
                h.insert(SEARCH_CUT, HeaderValue::from_static("1"));
            }
            Ok((response, 0))
        },
    )
    .await
}

/// A search's match, and whether the visitor may rename or delete it.
#[derive(Debug, serde::Serialize)]
struct FoundRow {
    #[serde(flatten)]
    row: json::FileRow,
    mine: bool,
}

/// Which of a search's matches (in byte order) the visitor may rename or delete: every one for
/// an admin; for a client, the files it uploaded (read beside the matches, in name order,
/// within `--count-names`). A folder only for an admin: a search does not read what it holds.
async fn found_mine(
    hub: &Arc<Hub>,
    caller: &Caller,
    found: &[Entry],
) -> Result<Vec<bool>, HubError> {
    let reach = caller.folder().map(|f| format!("{f}/")).unwrap_or_default();
    let rights = hub.rights(caller, &reach).await?;
    let reached: Vec<bool> = found
        .iter()
        .map(|e| caller.must_reach_inside(&e.name).is_ok())
        .collect();
    if rights.admin || rights.owner.is_none() {
        return Ok(reached.into_iter().map(|r| r && rights.admin).collect());
    }
    let files: Vec<Option<String>> = found
        .iter()
        .map(|e| (!e.name.ends_with('/')).then(|| e.name.clone()))
        .collect();
    let hub = Arc::clone(hub);
    let owned = troca_net::blocking(
        move || {
            let seen = Seen {
                folder: &reach,
                after: None,
            };
            let budget = hub.config().count_names;
            let mut mine = Mine::new(hub.as_ref(), rights.owner, seen, budget);
            let held = |name: &Option<String>| name.as_deref().map_or(Ok(false), |n| mine.holds(n));
            files
                .iter()
                .map(held)
                .collect::<Result<Vec<bool>, HubError>>()
        },
        |e| HubError::Internal(format!("a task failed: {e}")),
    )
    .await?;
    Ok(owned
        .into_iter()
        .zip(reached)
        .map(|(o, r)| o && r)
        .collect())
}

/// Set on a search's answer that may have left names out: it holds the most a search answers,
/// or the hub stopped at the most names it lets a search look at.
const SEARCH_CUT: &str = "x-troca-cut";

#[derive(Debug, Deserialize)]
pub(crate) struct ResumeQuery {
    name: String,
    size: u64,
    /// The file's modification time, in milliseconds since the epoch (`File.lastModified`).
    modified: i64,
}

/// Where an upload of this very file (name, size, time) would resume: `{"offset": N}`, the
/// bytes an interrupted upload of it left on the hub (0 if none). Not recorded: a page asks
/// before each try.
pub(crate) async fn resume(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Query(q): Query<ResumeQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = caller(&hub, &v, &headers).await?;
    let modified_ns = q.modified.max(0).saturating_mul(1_000_000);
    let offset = hub.resumable(&q.name, q.size, modified_ns, &caller).await?;
    Ok(Json(serde_json::json!({ "offset": offset })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct MeQuery {
    #[serde(default)]
    prefix: String,
    /// `0` leaves the names out (a folder's page marks its own rows).
    owned: Option<String>,
}

/// What the visitor may do: its role, whether it may upload, and which names under `prefix`
/// it may change (all of them for an admin; none listed with `owned=0`). Those names are sent
/// a page at a time as they are read: a client may have uploaded any number of them.
pub(crate) async fn me(
    State(hub): State<Arc<Hub>>,
    Extension(v): Extension<Visitor>,
    headers: HeaderMap,
    Query(q): Query<MeQuery>,
) -> Result<Response, ApiError> {
    let caller = caller(&hub, &v, &headers).await?;
    let rights = hub.rights(&caller, &q.prefix).await?;
    let mut me = troca_proto::json::standing(&hub.standing(&caller).await?);
    // Under `prefix`: a token held to another folder may upload elsewhere, not here.
    me["may_upload"] = rights.may_upload.into();
    me["may_change_all"] = rights.admin.into();
    let listed = q.owned.as_deref() != Some("0");
    let Some(owner) = rights.owner.filter(|_| listed) else {
        me["owned"] = serde_json::json!([]);
        return Ok(Json(me).into_response());
    };
    // The first page before answering, so that a failure is still a status code.
    let first = hub.owned(owner, &q.prefix, None).await?;
    let mut head = serde_json::to_vec(&me).map_err(|e| HubError::Internal(e.to_string()))?;
    head.pop(); // its `}`: the names come last.
    head.extend_from_slice(b",\"owned\":[");
    let pages = OwnedPages {
        hub,
        owner,
        prefix: q.prefix,
        page: Some(first),
        started: false,
    };
    let body = futures_util::stream::once(async { Ok(Bytes::from(head)) })
        .chain(futures_util::stream::unfold(Some(pages), OwnedPages::next));
    let json = HeaderValue::from_static("application/json");
    Ok(([(header::CONTENT_TYPE, json)], Body::from_stream(body)).into_response())
}

/// The rest of `/api/me`'s names, a page at a time. A page that cannot be read cuts the body
/// short (the JSON never closes), so a client cannot take part of the list for all of it.
struct OwnedPages {
    hub: Arc<Hub>,
    owner: troca_hub::records::Owner,
    prefix: String,
    /// The page read, to send next.
    page: Option<troca_hub::owned::OwnedPage>,
    started: bool,
}

impl OwnedPages {
    async fn next(state: Option<Self>) -> Option<(io::Result<Bytes>, Option<Self>)> {
        let mut st = state?;
        let page = st.page.take()?;
        let mut out = Vec::with_capacity(page.names.len() * 64 + 2);
        for name in &page.names {
            if std::mem::replace(&mut st.started, true) {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, name).ok()?;
        }
        let Some(after) = page.next else {
            out.extend_from_slice(b"]}");
            return Some((Ok(Bytes::from(out)), None));
        };
        match st.hub.owned(st.owner, &st.prefix, Some(after)).await {
            Ok(next) => st.page = Some(next),
            Err(e) => return Some((Err(io::Error::other(e.to_string())), None)),
        }
        Some((Ok(Bytes::from(out)), Some(st)))
    }
}

/// One line of a folder's listing: a sub-folder (with what it holds, once counted) or a file.
#[derive(Debug)]
pub(crate) struct Row {
    /// The last part of the name (a folder's without its `/`).
    pub short: String,
    /// The whole name (a folder's ending in `/`).
    pub name: String,
    pub folder: bool,
    /// A file's bytes; a counted folder's, those of every file beneath it.
    pub size: u64,
    /// The files beneath a counted folder (1 for a file).
    pub files: u64,
    /// Whether `size` and `files` are known: always for a file; for a folder, once its page
    /// read everything beneath it within the page's budget ([`fill_in`]).
    pub counted: bool,
    pub modified_ns: i64,
    /// A file's hash, when the hub knows it.
    pub blake3: Option<troca_proto::Hash>,
    /// Whether the visitor may rename or delete it, as far as its page knows (the hub checks
    /// again when asked).
    pub mine: bool,
}

impl Row {
    /// The row of `e`, an entry directly in a folder, whose own name is `short`.
    fn of(short: &str, e: Entry) -> Self {
        let folder = e.name.ends_with('/');
        Row {
            short: short.to_owned(),
            folder,
            size: if folder { 0 } else { e.size },
            files: u64::from(!folder),
            counted: !folder,
            modified_ns: e.modified_ns,
            blake3: e.blake3,
            mine: false,
            name: e.name,
        }
    }
}

/// What a folder holds directly, one row at a time in byte order of the names (a folder's with
/// its `/`), each sub-folder as itself: what a WebDAV `PROPFIND` of depth 1 and a folder's page
/// list, at the cost of the folder's own entries, whatever the folders in it hold.
pub(crate) enum FolderRows {
    Direct(ChildWalk),
    /// A folder on the way to the one the caller's token is held to shows only the way there,
    /// the sub-folder `way`, once the token's folder holds anything.
    OnTheWay {
        way: Option<String>,
        listing: Listing,
    },
}

impl FolderRows {
    /// The rows of `folder` (`""` or `NAME/`) that `caller` sees, after row `after`.
    pub(crate) fn new(hub: &Arc<Hub>, caller: &Caller, folder: &str, after: Option<&str>) -> Self {
        if caller.sees(folder) {
            return FolderRows::Direct(ChildWalk::new(hub, caller, folder, after));
        }
        // The token's folder, where it lies beneath `folder`: the way is its next part.
        let way = caller.listing_prefix(folder).and_then(|root| {
            let part = root.strip_prefix(folder)?.split('/').next()?;
            let way = format!("{folder}{part}/");
            let shown = after.is_none_or(|a| a < way.as_str());
            (!part.is_empty() && shown).then_some(way)
        });
        FolderRows::OnTheWay {
            way,
            listing: hub.list(caller, folder),
        }
    }

    /// The next row (`None` once there are no more).
    pub(crate) async fn next(&mut self) -> Result<Option<Row>, HubError> {
        match self {
            FolderRows::Direct(w) => w.next().await,
            FolderRows::OnTheWay { way, listing } => {
                let Some(name) = way.take() else {
                    return Ok(None);
                };
                // One page says whether there is anything: what the token's folder holds
                // is not read further.
                let held = listing.next_page().await?.is_some_and(|p| !p.is_empty());
                let short = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
                let folder = Entry {
                    name: name.clone(),
                    size: 0,
                    modified_ns: 0,
                    blake3: None,
                };
                Ok(held.then(|| Row::of(short, folder)))
            }
        }
    }
}

/// The rows of what a folder holds directly, each sub-folder as itself (what is beneath it is
/// never read).
pub(crate) struct ChildWalk {
    folder: String,
    listing: Listing,
    page: std::vec::IntoIter<Entry>,
}

impl ChildWalk {
    /// The rows of `folder` (`""` or `NAME/`), which `caller` sees whole, after row `after`.
    fn new(hub: &Arc<Hub>, caller: &Caller, folder: &str, after: Option<&str>) -> Self {
        Self {
            folder: folder.to_owned(),
            listing: hub.list_children(caller, folder, after.map(str::to_owned)),
            page: Vec::new().into_iter(),
        }
    }

    /// The next row (`None` once there are no more).
    async fn next(&mut self) -> Result<Option<Row>, HubError> {
        loop {
            if let Some(e) = self.page.next() {
                // Only names in the folder (never the folder itself, which a client would
                // take for a child of itself).
                let own = e.name.strip_prefix(&self.folder).unwrap_or_default();
                let own = own.trim_end_matches('/');
                if own.is_empty() || own.contains('/') {
                    continue;
                }
                let own = own.to_owned();
                return Ok(Some(Row::of(&own, e)));
            }
            match self.listing.next_page().await? {
                Some(page) => self.page = page.into_iter(),
                None => return Ok(None),
            }
        }
    }
}

/// The most rows on one page of a folder's listing; a link leads to the next.
pub(crate) const PAGE_ROWS: usize = 5_000;

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    pub(crate) after: Option<String>,
}

/// A folder's listing as a page that works without JavaScript (plain links, which `wget -r`
/// and rclone's http remote follow); the page's script enhances it. At most [`PAGE_ROWS`]
/// rows a page (folders first), with a link to the next.
pub(crate) async fn listing(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    folder: &str,
    after: Option<&str>,
) -> Result<Response, ApiError> {
    let folder = folder.to_owned();
    // The page a hub that asks for a token first sends: the same folder, empty, for its
    // script to fill once it has one.
    let asked = folder.clone();
    let answer = recorded(
        hub,
        v,
        headers,
        "list",
        folder.clone(),
        |caller| async move {
            if caller.uploads_only() {
                return Ok((upload_page(v, &caller, &folder), 0));
            }
            let turn = hub.walk_turn(caller.from).await;
            let page = folder_rows(hub, &caller, &folder, after).await?;
            drop(turn);
            let html = page::folder_page(v, &folder, &page.rows, page.more.as_deref(), None);
            let mut response = page::html(html);
            if crate::client_cookie(headers).is_none() {
                let cookie = format!(
                    "{}={}; Path={}/; SameSite=Strict; HttpOnly",
                    crate::CLIENT_COOKIE,
                    crate::new_client_cookie(),
                    v.base
                );
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
            }
            Ok((response, 0))
        },
    )
    .await;
    match answer {
        // The page still loads, empty, so its script can ask for a token.
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            let why = Some("This hub asks for a token.");
            let html = page::folder_page(v, &asked, &[], None, why);
            let mut r = page::html(html);
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"troca\""),
            );
            Ok(r)
        }
        other => other,
    }
}

/// The page of an upload link: its folder's name and a place to drop files, and nothing of
/// what the folder holds. Any other folder sends the visitor on to the link's.
fn upload_page(v: &Visitor, caller: &Caller, folder: &str) -> Response {
    let own = caller.folder().map(|f| format!("{f}/")).unwrap_or_default();
    if own != folder {
        let to = page::href(&v.base, &own);
        return (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
    }
    page::html(page::upload_page(v, &own))
}

/// One page of a folder's rows.
struct RowPage {
    /// Folders first, each kind in byte order.
    rows: Vec<Row>,
    /// The last row's name, when more rows follow it.
    more: Option<String>,
}

/// The page of folder `folder`'s rows after `after`, filled in ([`fill_in`]).
async fn folder_rows(
    hub: &Arc<Hub>,
    caller: &Caller,
    folder: &str,
    after: Option<&str>,
) -> Result<RowPage, HubError> {
    let mut walk = FolderRows::new(hub, caller, folder, after);
    let mut rows = Vec::new();
    while rows.len() < PAGE_ROWS {
        match walk.next().await? {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    let more = match rows.last() {
        Some(last) if walk.next().await?.is_some() => Some(last.name.clone()),
        _ => None,
    };
    let first = after.is_none() && !folder.is_empty();
    if rows.is_empty() && first && !hub.stat(caller, folder).await?.folder {
        return Err(HubError::NotFound(folder.to_owned()));
    }
    let rights = hub.rights(caller, folder).await?;
    let (hub, caller) = (Arc::clone(hub), caller.clone());
    let (folder, after) = (folder.to_owned(), after.map(str::to_owned));
    let mut rows = troca_net::blocking(
        move || {
            let seen = Seen {
                folder: &folder,
                after: after.as_deref(),
            };
            fill_in(&hub, &caller, &rights, seen, &mut rows)?;
            Ok(rows)
        },
        |e| HubError::Internal(format!("a task failed: {e}")),
    )
    .await?;
    rows.sort_by_key(|r| !r.folder);
    Ok(RowPage { rows, more })
}

/// Where a page of rows lies: in `folder`, after row `after`.
#[derive(Debug, Clone, Copy)]
struct Seen<'a> {
    folder: &'a str,
    after: Option<&'a str>,
}

/// What a folder's page adds to its rows (in byte order of their names): the files and bytes
/// beneath each sub-folder, from one listing of what is beneath the folder from its first row
/// on, read until `--count-names` names (the sub-folders it did not reach stay uncounted); and
/// which rows the visitor may rename or delete: everything for an admin; for a client, what it
/// uploaded and the folders in which every file is its own, as the hub checks them. Blocking.
fn fill_in(
    hub: &Arc<Hub>,
    caller: &Caller,
    rights: &Rights,
    seen: Seen<'_>,
    rows: &mut [Row],
) -> Result<(), HubError> {
    let Some(first) = rows.first().map(|r| r.name.clone()) else {
        return Ok(());
    };
    let budget = hub.config().count_names;
    let owner = if rights.admin { None } else { rights.owner };
    let mine = Mine::new(hub.as_ref(), owner, seen, budget);
    let mut tally = Tally::new(caller, rights, rows, budget, mine);
    // What is beneath the first row comes right after its name.
    let mut listing = hub.list_after(caller, seen.folder, Some(first));
    'read: while let Some(page) = listing.next_page_blocking()? {
        for e in page {
            if !tally.add(e)? {
                break 'read;
            }
        }
    }
    tally.finish()
}

/// A page's rows filled in from a listing of what is beneath them, both in byte order.
struct Tally<'a, 'r> {
    caller: &'a Caller,
    rights: &'a Rights,
    rows: &'r mut [Row],
    /// The row the listing has reached.
    at: usize,
    /// Of the files counted in folder row `at`, those the visitor uploaded.
    owned: u64,
    /// Names that may still be read.
    left: u64,
    /// Whether the names ran out before the listing reached the end of the rows.
    stopped: bool,
    mine: Mine<'a>,
}

impl<'a, 'r> Tally<'a, 'r> {
    fn new(
        caller: &'a Caller,
        rights: &'a Rights,
        rows: &'r mut [Row],
        budget: u64,
        mine: Mine<'a>,
    ) -> Self {
        Tally {
            caller,
            rights,
            rows,
            at: 0,
            owned: 0,
            left: budget,
            stopped: false,
            mine,
        }
    }

    /// Adds entry `e`; `false` once no more are wanted.
    fn add(&mut self, e: Entry) -> Result<bool, HubError> {
        // The rows before it, which it is not beneath, are complete.
        while let Some(row) = self.rows.get(self.at) {
            let beneath = row.folder && e.name.starts_with(&row.name);
            if beneath || row.name.as_str() >= e.name.as_str() {
                break;
            }
            self.close()?;
        }
        if self.at == self.rows.len() {
            return Ok(false);
        }
        if self.left == 0 {
            self.stopped = true;
            return Ok(false);
        }
        self.left -= 1;
        let row = &mut self.rows[self.at];
        // Only what is beneath a folder row counts (a name made since the rows were read may
        // fall between them).
        if !row.folder || e.name == row.name || !e.name.starts_with(&row.name) {
            return Ok(true);
        }
        row.modified_ns = row.modified_ns.max(e.modified_ns);
        // An empty folder beneath is listed as itself: no file.
        if !e.name.ends_with('/') {
            row.files += 1;
            row.size += e.size;
            self.owned += u64::from(self.mine.holds(&e.name)?);
        }
        Ok(true)
    }

    /// Row `at` is complete (all beneath a folder counted): marks it, and goes to the next.
    fn close(&mut self) -> Result<(), HubError> {
        let row = &mut self.rows[self.at];
        let reached = self.caller.must_reach_inside(&row.name).is_ok();
        let (admin, may_upload) = (self.rights.admin, self.rights.may_upload);
        if row.folder {
            row.counted = true;
            let all_owned = may_upload && std::mem::take(&mut self.owned) == row.files;
            row.mine = reached && (admin || all_owned);
        } else {
            row.mine = reached && (admin || self.mine.holds(&row.name)?);
        }
        self.at += 1;
        Ok(())
    }

    /// The listing is over: the rows left are complete, unless the names ran out, which
    /// leaves the folders among them uncounted.
    fn finish(mut self) -> Result<(), HubError> {
        while self.at < self.rows.len() {
            if self.stopped && self.rows[self.at].folder {
                let row = &mut self.rows[self.at];
                (row.files, row.size, row.mine) = (0, 0, false);
                self.at += 1;
            } else {
                self.close()?;
            }
        }
        Ok(())
    }
}

/// The names the visitor uploaded beneath a page's folder ([`Hub::owned`]), read in byte order
/// as the page asks about its names (which come in byte order too), within a budget.
struct Mine<'a> {
    hub: &'a dyn OwnedSource,
    /// `None`: no names to read (an admin changes all, a visitor who cannot upload none).
    owner: Option<troca_hub::records::Owner>,
    prefix: &'a str,
    /// The name the next page starts after.
    after: Option<String>,
    page: std::iter::Peekable<std::vec::IntoIter<String>>,
    /// Whether no more pages are to be read (the last was, or the budget is spent).
    done: bool,
    /// Records that may still be read.
    left: u64,
}

/// Where the names a visitor uploaded are read from: the hub's records.
trait OwnedSource {
    fn owned_page(
        &self,
        owner: troca_hub::records::Owner,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<troca_hub::owned::OwnedPage, HubError>;
}

impl OwnedSource for Hub {
    fn owned_page(
        &self,
        owner: troca_hub::records::Owner,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<troca_hub::owned::OwnedPage, HubError> {
        self.owned_blocking(owner, prefix, after)
    }
}

impl<'a> Mine<'a> {
    /// The names `owner` uploaded in the page's folder from its rows on (`None`: none to read).
    fn new(
        hub: &'a dyn OwnedSource,
        owner: Option<troca_hub::records::Owner>,
        seen: Seen<'a>,
        budget: u64,
    ) -> Self {
        Mine {
            hub,
            owner,
            prefix: seen.folder,
            after: seen.after.map(str::to_owned),
            page: Vec::new().into_iter().peekable(),
            done: false,
            left: budget,
        }
    }

    /// Whether `name` is the visitor's; every name asked about comes after the one before.
    fn holds(&mut self, name: &str) -> Result<bool, HubError> {
        loop {
            while self.page.next_if(|n| n.as_str() < name).is_some() {}
            if let Some(n) = self.page.peek() {
                return Ok(n == name);
            }
            if self.done || self.owner.is_none() {
                return Ok(false);
            }
            self.read()?;
        }
    }

    fn read(&mut self) -> Result<(), HubError> {
        let Some(owner) = self.owner else {
            return Ok(());
        };
        let page = self
            .hub
            .owned_page(owner, self.prefix, self.after.as_deref())?;
        self.left = self
            .left
            .saturating_sub(troca_hub::owned::OWNED_PAGE as u64);
        self.done = page.next.is_none() || self.left == 0;
        self.after = page.next;
        self.page = page.names.into_iter().peekable();
        Ok(())
    }
}

/// `folder` (`NAME/`) and everything in it as a `.zip` (stored, zip64 where needed), written
/// on the blocking pool into a small channel: constant memory whatever the folder's size.
pub(crate) async fn zip(
    hub: &Arc<Hub>,
    v: &Visitor,
    headers: &HeaderMap,
    folder: &str,
) -> Result<Response, ApiError> {
    let record = crate::api::pending(v, "zip", folder.to_owned());
    let listed = async {
        let caller = caller(hub, v, headers).await?;
        // The writer holds a blocking thread until its reader has taken the whole zip, and a
        // listing begun holds one for its next page: neither before the turn.
        let turn = hub.zip_turn(caller.from).await;
        let mut listing = hub.list(&caller, folder);
        let first = match listing.next_page().await? {
            Some(first) if !first.is_empty() => first,
            _ => return Err(ApiError::from(HubError::NotFound(folder.to_owned()))),
        };
        // A share link that allows only so many downloads counts a zip as one.
        let counted = hub.count_download(&caller, folder, false).await;
        counted.map_err(|e| crate::files::linked(v, e))?;
        Ok((first, listing, caller, turn))
    }
    .await;
    let (first, rest, caller, turn) = match listed {
        Ok(e) => e,
        Err(e) => {
            record.finish(hub.history_log(), Err(e.record_text()));
            return Err(e);
        }
    };
    let base = folder.trim_end_matches('/');
    let base = base.rsplit('/').next().unwrap_or(base).to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let (hub2, folder2, session) = (Arc::clone(hub), folder.to_owned(), Arc::clone(&v.session));
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: BytesMut::with_capacity(ZIP_CHUNK),
            sent: 0,
        };
        let listed = Listed {
            folder: &folder2,
            first,
            rest,
        };
        match write_zip(&hub2, &caller, listed, out) {
            Ok(sent) => {
                session.sent(sent);
                record.finish(hub2.history_log(), Ok(sent));
            }
            Err(e) => {
                let code = match e.kind() {
                    io::ErrorKind::StorageFull => "no_space",
                    _ => "internal",
                };
                record.finish(hub2.history_log(), Err(format!("{code}: {e}")));
                // The client sees a cut-off body rather than a zip that looks whole.
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let stream = ZipBody(rx);
    let disposition = crate::files::disposition(&format!("{base}.zip"), true);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/zip"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The zip's bytes as they come from the writing thread.
#[derive(Debug)]
struct ZipBody(tokio::sync::mpsc::Receiver<io::Result<Bytes>>);

impl futures_core::Stream for ZipBody {
    type Item = io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// A folder to zip: its name, the first page of its listing and the rest.
struct Listed<'a> {
    folder: &'a str,
    first: Vec<Entry>,
    rest: Listing,
}

/// Writes the zip of a folder, its files read as `caller`; returns the bytes sent. Blocking.
fn write_zip(
    hub: &Arc<Hub>,
    caller: &Caller,
    listed: Listed<'_>,
    out: ChannelWriter,
) -> io::Result<u64> {
    let Listed {
        folder,
        first,
        mut rest,
    } = listed;
    let hub_room = Arc::clone(hub);
    let spill = Spill {
        dir: hub.config().state_dir.clone(),
        room: Box::new(move || hub_room.scratch_room()),
    };
    let mut zip = ZipStream::new(out, spill);
    // Names inside the zip start with the folder's own name, as `zip -r photos` makes them.
    let parent_len = folder.trim_end_matches('/').rfind('/').map_or(0, |i| i + 1);
    let mut buf = vec![0u8; ZIP_CHUNK];
    let tz = jiff::tz::TimeZone::system();
    let mut page = Some(first);
    while let Some(entries) = page {
        for e in &entries {
            let inner = &e.name[parent_len..];
            add_to_zip(hub, caller, &mut zip, Named { inner, e, tz: &tz }, &mut buf)?;
        }
        page = rest.next_page_blocking().map_err(io::Error::other)?;
    }
    let mut out = zip.finish(&mut buf)?;
    out.flush()?;
    Ok(out.sent)
}

/// An entry of the listing and the name it takes in the zip.
struct Named<'a> {
    inner: &'a str,
    e: &'a Entry,
    tz: &'a jiff::tz::TimeZone,
}

/// Adds an entry to the zip: a folder, or a file read through the hub (one deleted since it
/// was listed is left out; one that cannot be read stops the zip).
fn add_to_zip(
    hub: &Hub,
    caller: &Caller,
    zip: &mut ZipStream<ChannelWriter>,
    named: Named<'_>,
    buf: &mut [u8],
) -> io::Result<()> {
    let Named { inner, e, tz } = named;
    let modified = DosTime::from_ns(e.modified_ns, tz);
    if e.name.ends_with('/') {
        return zip.add_folder(inner, modified);
    }
    let download = match hub.download(caller, &e.name, 0) {
        Ok(d) => d,
        Err(HubError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(io::Error::other(e)),
    };
    zip.start_file(inner, modified, download.size())?;
    match &download.source {
        Source::Memory(data) => zip.write_all(data)?,
        Source::Stored(file) => {
            let mut pos = 0;
            while pos < download.size() {
                let want = buf.len().min((download.size() - pos) as usize);
                let n = file.read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    break;
                }
                zip.write_all(&buf[..n])?;
                pos += n as u64;
            }
        }
    }
    Ok(())
}

/// A `Write` that hands full chunks to an HTTP body through a bounded channel, waiting when the
/// client reads slowly, failing once it is gone.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    sent: u64,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        self.buf.reserve(ZIP_CHUNK);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = ZIP_CHUNK - self.buf.len().min(ZIP_CHUNK);
        let n = data.len().min(room.max(1));
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= ZIP_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troca_hub::owned::OwnedPage;
    use troca_hub::records::Owner;

    /// The visitor's names, given two a page.
    struct Owned(Vec<&'static str>);

    impl OwnedSource for Owned {
        fn owned_page(
            &self,
            _: Owner,
            _: &str,
            after: Option<&str>,
        ) -> Result<OwnedPage, HubError> {
            let rest: Vec<String> = self
                .0
                .iter()
                .filter(|n| after.is_none_or(|a| **n > a))
                .map(|n| n.to_string())
                .collect();
            let names: Vec<String> = rest.iter().take(2).cloned().collect();
            let next = (rest.len() > 2).then(|| names[1].clone());
            Ok(OwnedPage { names, next })
        }
    }

    fn row(name: &str) -> Row {
        let short = name.trim_end_matches('/').rsplit('/').next().unwrap();
        let e = Entry {
            name: name.into(),
            size: 1,
            modified_ns: 0,
            blake3: None,
        };
        Row::of(short, e)
    }

    fn entry(name: &str, size: u64) -> Entry {
        Entry {
            name: name.into(),
            size,
            modified_ns: 0,
            blake3: None,
        }
    }

    /// The rows of `names` filled in from `beneath` (after the first row, as the page reads
    /// it) within `budget`, for a client who uploaded `owned`: (name, files, bytes, mine), a
    /// folder's files `None` when not counted.
    fn filled(
        names: &[&str],
        beneath: &[Entry],
        budget: u64,
        owned: Vec<&'static str>,
    ) -> Vec<(String, Option<u64>, u64, bool)> {
        let mut rows: Vec<Row> = names.iter().map(|n| row(n)).collect();
        let rights = Rights {
            may_upload: true,
            admin: false,
            owner: Some(Owner::default()),
        };
        let caller = Caller::default();
        let source = Owned(owned);
        let seen = Seen {
            folder: "",
            after: None,
        };
        let mine = Mine::new(&source, rights.owner, seen, u64::MAX);
        let mut tally = Tally::new(&caller, &rights, &mut rows, budget, mine);
        for e in beneath {
            if !tally.add(e.clone()).unwrap() {
                break;
            }
        }
        tally.finish().unwrap();
        rows.into_iter()
            .map(|r| (r.name, r.counted.then_some(r.files), r.size, r.mine))
            .collect()
    }

    #[test]
    fn a_page_counts_each_folder_and_marks_what_its_visitor_uploaded() {
        let names = ["a/", "b.txt", "c/", "e/", "f.txt"];
        let beneath = [
            entry("a/x", 2),
            entry("a/y/", 0), // an empty folder: no file
            entry("a/y2/z", 3),
            entry("b.txt", 5),
            entry("c/1", 1),
            entry("d.txt", 9), // made since the rows were read: in no row
            entry("f.txt", 4),
        ];
        let own = vec!["a/x", "a/y2/z", "b.txt", "c/0-gone", "f.txt"];
        let got = filled(&names, &beneath, u64::MAX, own);
        let want = [
            ("a/", Some(2), 5, true),
            ("b.txt", Some(1), 1, true),
            ("c/", Some(1), 1, false),
            // Empty: whoever may upload may change it.
            ("e/", Some(0), 0, true),
            ("f.txt", Some(1), 1, true),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, f, s, m)| (n.to_string(), *f, *s, *m))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn past_its_bound_a_page_leaves_the_folders_uncounted_and_still_marks_files() {
        let names = ["a/", "b/", "c.txt", "d/"];
        let beneath = [
            entry("a/1", 1),
            entry("a/2", 1),
            entry("b/1", 1),
            entry("b/2", 1),
            entry("c.txt", 1),
        ];
        // Three names: a/ is counted, b/ is not, nor d/ which the listing never reached.
        let got = filled(&names, &beneath, 3, vec!["a/1", "a/2", "c.txt"]);
        let want = [
            ("a/", Some(2), 2, true),
            ("b/", None, 0, false),
            ("c.txt", Some(1), 1, true),
            ("d/", None, 0, false),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, f, s, m)| (n.to_string(), *f, *s, *m))
            .collect();
        assert_eq!(got, want);
        // Exactly enough: every folder counted.
        let got = filled(&names, &beneath, 5, vec![]);
        assert!(got.iter().all(|r| r.1.is_some()), "{got:?}");
    }
}
