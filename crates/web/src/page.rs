//! The browser page, embedded in the binary: one HTML file, one script, one style sheet, no
//! external resources. The Content-Security-Policy allows scripts and styles from this origin
//! only (no inline script can run, so a file name can never become code), and the script puts
//! every name on the page as text, never as HTML.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The policy for the page and its assets.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The top folder's listing (`/` and `/files/`).
pub(crate) async fn index(
    axum::extract::State(hub): axum::extract::State<std::sync::Arc<troca_hub::Hub>>,
    axum::Extension(v): axum::Extension<crate::Visitor>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<crate::folders::PageQuery>,
) -> Result<Response, crate::ApiError> {
    crate::folders::listing(&hub, &v, &headers, "", q.after.as_deref()).await
}

/// A page of HTML with the page's headers.
pub(crate) fn html(body: String) -> Response {
    let mut r = asset("", "text/html; charset=utf-8");
    *r.body_mut() = axum::body::Body::from(body);
    r
}

/// `template` with each `{{key}}` replaced by its value, in one pass (a value is never read
/// again, so a name that looks like a key stays as it is).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| {
            let key = &after[..end];
            values
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (end, *v))
        }) {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Text made safe inside HTML (element content and quoted attributes).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The URL path of a file or folder beneath the web face's `base` (`--path-prefix`): `/files/`
/// and each part percent-encoded.
pub(crate) fn href(base: &str, name: &str) -> String {
    format!("{base}/files/{}", href_path(name))
}

/// `name` with each part percent-encoded, its slashes kept.
pub(crate) fn href_path(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let parts: Vec<String> = name
        .split('/')
        .map(|p| utf8_percent_encode(p, NON_ALPHANUMERIC).to_string())
        .collect();
    parts.join("/")
}

/// The page for `folder` (`""` for the top, or `NAME/`) listing `rows`: complete without
/// JavaScript, every name escaped. With `more` (the last row's name), a link to the rows
/// after it, which the page's script hides (it lists everything itself).
pub(crate) fn folder_page(
    at: &crate::Visitor,
    folder: &str,
    rows: &[crate::folders::Row],
    more: Option<&str>,
    refused: Option<&str>,
) -> String {
    let base = &*at.base;
    let mut body = String::new();
    for r in rows {
        push_row(&mut body, base, r);
    }
    if rows.is_empty() {
        let text = escape(refused.unwrap_or("No files here yet."));
        body.push_str(&format!(
            "<tr class=\"empty\"><td colspan=\"4\">{text}</td></tr>"
        ));
    }
    let more = more.map_or(String::new(), |last| {
        let after = percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC);
        format!(
            "<p class=\"more\" id=\"more\"><a href=\"{}?after={after}\">More in this folder</a></p>",
            href(base, folder)
        )
    });
    let title = if folder.is_empty() {
        "home".to_owned()
    } else {
        folder.trim_end_matches('/').to_owned()
    };
    fill(
        INDEX,
        &[
            ("title", &escape(&title)),
            ("base", base),
            ("share", if at.shared { "1" } else { "" }),
            ("upload", ""),
            ("folder", &escape(folder)),
            ("crumbs", &crumbs(base, folder)),
            ("rows", &body),
            ("more", &more),
        ],
    )
}

/// The page of an upload link into `folder` (`NAME/`): the page's script sends files there;
/// nothing of what it holds is shown.
pub(crate) fn upload_page(at: &crate::Visitor, folder: &str) -> String {
    let name = escape(folder.trim_end_matches('/'));
    let text = "Nothing sent from this page yet. You cannot see what others sent.";
    fill(
        INDEX,
        &[
            ("title", &format!("Send files to {name}")),
            ("base", &at.base),
            ("share", if at.shared { "1" } else { "" }),
            ("upload", "1"),
            ("folder", &escape(folder)),
            ("crumbs", &format!("Send files to <strong>{name}/</strong>")),
            (
                "rows",
                &format!("<tr class=\"empty\"><td colspan=\"4\">{text}</td></tr>"),
            ),
            ("more", ""),
        ],
    )
}

/// The links to `folder` and each folder on the way, from the top.
fn crumbs(base: &str, folder: &str) -> String {
    let mut crumbs = format!("<a href=\"{base}/files/\">home</a>");
    let mut acc = String::new();
    for part in folder.split('/').filter(|p| !p.is_empty()) {
        acc.push_str(part);
        acc.push('/');
        crumbs.push_str(&format!(
            " / <a href=\"{}\">{}</a>",
            href(base, &acc),
            escape(part)
        ));
    }
    crumbs
}

/// One row of a folder's table, every name escaped. Its `data-` attributes are what the
/// page's script reads: the name, the bytes and files (a folder's, once counted), and whether
/// the visitor may rename or delete it.
fn push_row(body: &mut String, base: &str, r: &crate::folders::Row) {
    let when = troca_proto::json::rfc3339(r.modified_ns);
    let shown: String = when.chars().take(16).collect::<String>().replace('T', " ");
    let (class, label, size) = match (r.folder, r.files) {
        (false, _) => (
            "name",
            r.short.clone(),
            troca_proto::json::human_size(r.size),
        ),
        (true, _) if !r.counted => ("name folder", format!("{}/", r.short), "—".to_owned()),
        (true, 1) => ("name folder", format!("{}/", r.short), "1 file".to_owned()),
        (true, n) => ("name folder", format!("{}/", r.short), format!("{n} files")),
    };
    let counted = if r.counted {
        format!(" data-size=\"{}\" data-files=\"{}\"", r.size, r.files)
    } else {
        " title=\"Not counted: this page reads a bounded number of names beneath its folders\""
            .to_owned()
    };
    let mine = if r.mine { " data-mine=\"1\"" } else { "" };
    body.push_str(&format!(
        "<tr data-name=\"{name}\"{counted}{mine}><td class=\"{class}\"><a href=\"{href}\">{label}</a>\
         <span class=\"meta\">{size} · {shown} UTC</span></td>\
         <td class=\"num\">{size}</td><td class=\"when\"><time datetime=\"{when}\">{shown} UTC</time></td>\
         <td class=\"actions\"></td></tr>\n",
        name = escape(&r.name),
        href = href(base, &r.name),
        label = escape(&label),
        size = escape(&size),
    ));
}

pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "not_found", "message": "no such page"})),
    )
        .into_response()
}
