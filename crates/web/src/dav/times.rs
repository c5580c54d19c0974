//! A file's time set by a WebDAV client, so a tree copied up keeps its dates as on the other
//! faces: `X-OC-Mtime` on a `PUT` (ownCloud's header, sent by rclone's `owncloud`, `nextcloud`
//! and `rclone` vendors and many sync tools), and a `PROPPATCH` of `DAV:lastmodified` (rclone),
//! `DAV:getlastmodified` or Windows' `Win32LastModifiedTime`. `dav-server` refuses the first
//! two as protected and says yes to Windows' without doing anything; a `PROPPATCH` that sets
//! only times is therefore answered here, through [`Hub::set_modified`].

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use std::sync::Arc;
use troca_hub::access::Caller;
use troca_hub::{Hub, HubError};
use xmltree::{Element, XMLNode};

const DAV: &str = "DAV:";
const MS: &str = "urn:schemas-microsoft-com:";

/// The most a `PROPPATCH` body may hold (what `dav-server` itself reads).
const MAX_BODY: usize = 64 * 1024;

/// The time in `X-OC-Mtime`: Unix seconds, perhaps with a fraction. `Ok(None)` without the
/// header; `Err` for a value that is not a time after 1970.
pub(crate) fn oc_mtime(headers: &HeaderMap) -> Result<Option<i64>, ()> {
    let Some(v) = headers.get("x-oc-mtime") else {
        return Ok(None);
    };
    v.to_str().ok().and_then(seconds_ns).map(Some).ok_or(())
}

/// `1700000000` or `1700000000.25` as nanoseconds since 1970 (after it, within `i64`).
fn seconds_ns(s: &str) -> Option<i64> {
    let (whole, fraction) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: i64 = format!("{digits:0<9}").parse().ok()?;
    let ns = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    (ns > 0).then_some(ns)
}

/// An HTTP date (`Tue, 15 Nov 1994 08:12:31 GMT`) as nanoseconds since 1970.
fn http_date_ns(s: &str) -> Option<i64> {
    let t = jiff::fmt::rfc2822::parse(s.trim()).ok()?;
    let ns = i64::try_from(t.timestamp().as_nanosecond()).ok()?;
    (ns > 0).then_some(ns)
}

/// One property a `PROPPATCH` sets, as far as times go.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Asked {
    namespace: String,
    name: String,
    /// What it sets: a time, or nothing the hub keeps.
    effect: Effect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// The file's modification time, in nanoseconds.
    Modified(i64),
    /// A value that is not a time.
    Bad,
    /// A Windows property the hub keeps none of (creation and access times, attributes):
    /// said yes to, as Windows' client needs.
    Ignored,
}

/// The properties of a `PROPPATCH` body if it only sets times (and Windows' other file
/// properties); `None` for anything else, which `dav-server` handles.
fn times_only(body: &[u8]) -> Option<Vec<Asked>> {
    let root = Element::parse(body).ok()?;
    if !is(&root, DAV, "propertyupdate") {
        return None;
    }
    let mut asked = Vec::new();
    for set in elements(&root) {
        if !is(set, DAV, "set") {
            return None;
        }
        for prop in elements(set) {
            if !is(prop, DAV, "prop") {
                return None;
            }
            for p in elements(prop) {
                asked.push(time_prop(p)?);
            }
        }
    }
    (!asked.is_empty()).then_some(asked)
}

fn time_prop(p: &Element) -> Option<Asked> {
    let text = p.get_text().unwrap_or_default();
    let effect = match (p.namespace.as_deref()?, p.name.as_str()) {
        (DAV, "lastmodified") => seconds_ns(&text).map_or(Effect::Bad, Effect::Modified),
        (DAV, "getlastmodified") | (MS, "Win32LastModifiedTime") => {
            http_date_ns(&text).map_or(Effect::Bad, Effect::Modified)
        }
        (MS, "Win32CreationTime" | "Win32LastAccessTime" | "Win32FileAttributes") => {
            Effect::Ignored
        }
        _ => return None,
    };
    Some(Asked {
        namespace: p.namespace.clone()?,
        name: p.name.clone(),
        effect,
    })
}

fn is(e: &Element, namespace: &str, name: &str) -> bool {
    e.namespace.as_deref() == Some(namespace) && e.name == name
}

fn elements(e: &Element) -> impl Iterator<Item = &Element> {
    e.children.iter().filter_map(XMLNode::as_element)
}

/// What became of a `PROPPATCH` that came here.
pub(crate) enum Patched {
    /// Answered.
    Done(Response),
    /// Not only times: the request, whole again, for `dav-server`.
    NotOurs(Request),
}

/// Answers a `PROPPATCH` of `name` that only sets times; hands back any other.
pub(crate) async fn patch(hub: &Arc<Hub>, name: &str, req: Request, who: &Caller) -> Patched {
    let (parts, body) = req.into_parts();
    let stall = hub.config().stall_timeout;
    let limited = http_body_util::Limited::new(crate::files::Patient::new(body, stall), MAX_BODY);
    let bytes = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Patched::Done(plain(StatusCode::PAYLOAD_TOO_LARGE, "a body over 64 KiB"));
        }
        Err(_) => return Patched::Done(plain(StatusCode::BAD_REQUEST, "the body broke off")),
    };
    let Some(asked) = times_only(&bytes) else {
        return Patched::NotOurs(Request::from_parts(parts, Body::from(bytes)));
    };
    let href = parts.uri.path();
    if asked.iter().any(|a| a.effect == Effect::Bad) {
        // Nothing is changed when one value is wrong (RFC 4918 §9.2).
        return Patched::Done(multistatus(href, &asked, |a| match a.effect {
            Effect::Bad => StatusCode::CONFLICT,
            _ => StatusCode::FAILED_DEPENDENCY,
        }));
    }
    let time = asked.iter().rev().find_map(|a| match a.effect {
        Effect::Modified(ns) => Some(ns),
        _ => None,
    });
    let Some(ns) = time else {
        return Patched::Done(multistatus(href, &asked, |_| StatusCode::OK));
    };
    match hub.set_modified(name, ns, who).await {
        Ok(_) => Patched::Done(multistatus(href, &asked, |_| StatusCode::OK)),
        // A folder keeps no time: Windows sets one on every folder it makes, and is told yes
        // as `dav-server` would; a client asking for the DAV property is told no.
        Err(HubError::NotAFile(_)) => Patched::Done(multistatus(href, &asked, |a| {
            match (a.namespace.as_str(), a.effect) {
                (MS, _) => StatusCode::OK,
                (_, Effect::Modified(_)) => StatusCode::FORBIDDEN,
                _ => StatusCode::FAILED_DEPENDENCY,
            }
        })),
        Err(HubError::Locked(_)) => Patched::Done(plain(StatusCode::LOCKED, "locked")),
        Err(e) => Patched::Done(ApiError::Hub(e).into_response()),
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    (status, format!("{text}\n")).into_response()
}

/// A 207 answer naming each property with its status.
fn multistatus(href: &str, asked: &[Asked], status: impl Fn(&Asked) -> StatusCode) -> Response {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">\
         <D:response><D:href>",
    );
    xml.push_str(&escape(href));
    xml.push_str("</D:href>");
    for a in asked {
        let code = status(a);
        xml.push_str(&format!(
            "<D:propstat><D:prop><{name} xmlns=\"{ns}\"/></D:prop>\
             <D:status>HTTP/1.1 {code}</D:status></D:propstat>",
            name = a.name,
            ns = escape(&a.namespace),
        ));
    }
    xml.push_str("</D:response></D:multistatus>\n");
    let mut r = (StatusCode::MULTI_STATUS, xml).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oc_mtime_is_unix_seconds_perhaps_with_a_fraction() {
        assert_eq!(seconds_ns("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            seconds_ns(" 1700000000.25 "),
            Some(1_700_000_000_250_000_000)
        );
        assert_eq!(seconds_ns("1.1234567891"), Some(1_123_456_789));
        for bad in [
            "",
            "-5",
            "0",
            "12a",
            "1e9",
            ".5",
            "1.-2",
            "99999999999999999999",
        ] {
            assert_eq!(seconds_ns(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_are_read() {
        let ns = http_date_ns("Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(ns, Some(1_700_000_000_000_000_000));
        assert_eq!(http_date_ns("yesterday"), None);
    }

    const RCLONE: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:">
 <D:set>
  <D:prop>
   <lastmodified xmlns="DAV:">1700000000</lastmodified>
  </D:prop>
 </D:set>
</D:propertyupdate>"#;

    const WINDOWS: &str = r#"<?xml version="1.0" encoding="utf-8" ?>
<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>
<Z:Win32CreationTime>Mon, 13 Nov 2023 10:00:00 GMT</Z:Win32CreationTime>
<Z:Win32LastAccessTime>Tue, 14 Nov 2023 22:13:20 GMT</Z:Win32LastAccessTime>
<Z:Win32LastModifiedTime>Tue, 14 Nov 2023 22:13:20 GMT</Z:Win32LastModifiedTime>
<Z:Win32FileAttributes>00000020</Z:Win32FileAttributes>
</D:prop></D:set></D:propertyupdate>"#;

    #[test]
    fn a_patch_of_times_only_is_read_and_any_other_is_not() {
        let asked = times_only(RCLONE.as_bytes()).expect("rclone's");
        assert_eq!(
            asked,
            vec![Asked {
                namespace: DAV.into(),
                name: "lastmodified".into(),
                effect: Effect::Modified(1_700_000_000_000_000_000),
            }]
        );
        let asked = times_only(WINDOWS.as_bytes()).expect("Windows'");
        let effects: Vec<Effect> = asked.iter().map(|a| a.effect).collect();
        let t = Effect::Modified(1_700_000_000_000_000_000);
        let i = Effect::Ignored;
        assert_eq!(effects, vec![i, i, t, i]);
        let dead = RCLONE.replace("<lastmodified xmlns=\"DAV:\">", "<x:k xmlns:x=\"urn:x\">");
        let dead = dead.replace("</lastmodified>", "</x:k>");
        assert_eq!(times_only(dead.as_bytes()), None);
        let removal = RCLONE.replace("D:set>", "D:remove>");
        assert_eq!(times_only(removal.as_bytes()), None);
        let bad = RCLONE.replace("1700000000", "soon");
        let asked = times_only(bad.as_bytes()).expect("read");
        assert_eq!(asked[0].effect, Effect::Bad);
        assert_eq!(times_only(b"<not xml"), None);
    }
}
