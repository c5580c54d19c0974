//! `dav-server`'s lock system over the hub's lock table, so a WebDAV lock holds on every face.

use super::fs::name_of;
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use troca_hub::locks::{Lock, LockRequest, Presented, Refusal};
use troca_hub::Hub;
use xmltree::Element;

#[derive(Debug, Clone)]
pub(crate) struct HubLocks {
    pub hub: Arc<Hub>,
}

/// The lock as `dav-server` shows it (lock discovery, the `Lock-Token` header).
fn to_dav(base: &str, l: Lock) -> DavLock {
    let prefix = format!("{base}{}", super::PREFIX);
    let mut encoded = prefix.clone();
    for part in l.name.split('/').filter(|p| !p.is_empty()) {
        encoded.push('/');
        encoded.extend(percent_encoding::utf8_percent_encode(
            part,
            percent_encoding::NON_ALPHANUMERIC,
        ));
    }
    if l.folder || l.name.is_empty() {
        encoded.push('/');
    }
    let mut path = DavPath::new(&encoded).unwrap_or_else(|_| DavPath::new("/").expect("root"));
    let _ = path.set_prefix(&prefix);
    let left = l.expires.saturating_duration_since(Instant::now());
    DavLock {
        token: l.token,
        path: Box::new(path),
        principal: l.principal,
        owner: l
            .owner_xml
            .and_then(|x| Element::parse(x.as_bytes()).ok())
            .map(|mut e| {
                e.prefix = Some("D".to_owned());
                Box::new(e)
            }),
        timeout_at: Some(SystemTime::now() + left),
        timeout: Some(l.timeout),
        shared: l.shared,
        deep: l.deep,
    }
}

/// The owner element as XML text. `dav-server` gives it the `D:` prefix without binding it,
/// so it is bound here (and the parsed element gets the prefix back in [`to_dav`]).
fn owner_text(owner: &Element) -> Option<String> {
    let mut e = owner.clone();
    let mut ns = e
        .namespaces
        .take()
        .unwrap_or_else(xmltree::Namespace::empty);
    ns.put("D", "DAV:");
    e.namespaces = Some(ns);
    let mut out = Vec::new();
    e.write(&mut out).ok()?;
    String::from_utf8(out).ok()
}

fn ready<'a, T: Send + 'a>(v: T) -> LsFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

/// A name `dav-server` gives, or `None` for a path the hub has no name for.
fn name(path: &DavPath) -> Option<String> {
    name_of(path).ok()
}

impl DavLockSystem for HubLocks {
    fn lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let Some(name) = name(path) else {
            return ready(Err(refused(path)));
        };
        let req = LockRequest {
            name: &name,
            principal,
            owner_xml: owner.and_then(owner_text),
            timeout,
            shared,
            deep,
            folder: path.is_collection(),
        };
        let result = match self.hub.locks().lock(req, Instant::now()) {
            Ok(l) => Ok(to_dav(&self.hub.config().web_prefix, l)),
            Err(Refusal::Conflict(l)) => Err(to_dav(&self.hub.config().web_prefix, *l)),
            Err(Refusal::Full(max)) => {
                tracing::warn!("the hub holds its maximum of {max} locks; a LOCK was refused");
                Err(refused(path))
            }
            Err(Refusal::TooMany(max)) => {
                tracing::warn!(
                    "{} holds its maximum of {max} locks; a LOCK was refused",
                    principal.unwrap_or("anonymous")
                );
                Err(refused(path))
            }
        };
        ready(result)
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let done = name(path).is_some_and(|n| self.hub.locks().unlock(&n, token, Instant::now()));
        ready(if done { Ok(()) } else { Err(()) })
    }

    fn refresh(
        &self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let lock = name(path)
            .and_then(|n| self.hub.locks().refresh(&n, token, timeout, Instant::now()))
            .map(|l| to_dav(&self.hub.config().web_prefix, l));
        ready(lock.ok_or(()))
    }

    fn check(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let Some(name) = name(path) else {
            return ready(Ok(()));
        };
        let presented = Presented {
            tokens: submitted_tokens,
            principal: if ignore_principal { None } else { principal },
        };
        let result = self
            .hub
            .locks()
            .check(&name, deep, presented, Instant::now())
            .map_err(|l| to_dav(&self.hub.config().web_prefix, *l));
        ready(result)
    }

    fn discover(&self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let locks = name(path)
            .map(|n| self.hub.locks().discover(&n, Instant::now()))
            .unwrap_or_default();
        ready(
            locks
                .into_iter()
                .map(|l| to_dav(&self.hub.config().web_prefix, l))
                .collect(),
        )
    }

    fn delete(&self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        if let Some(n) = name(path) {
            self.hub.locks().forget(&n, Instant::now());
        }
        ready(Ok(()))
    }
}

/// What a refused lock that no other lock explains looks like to `dav-server`: a lock on the
/// path itself (the client sees 423 Locked).
fn refused(path: &DavPath) -> DavLock {
    DavLock {
        token: String::new(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_survives_the_lock_table() {
        for xml in [
            r#"<D:owner xmlns:D="DAV:"><D:href>litmus test suite</D:href></D:owner>"#,
            r#"<owner xmlns='DAV:'>litmus test suite</owner>"#,
        ] {
            let mut e = Element::parse(xml.as_bytes()).unwrap();
            // As `dav-server` hands it over: the element of a parsed request.
            e.prefix = Some("D".into());
            let text = owner_text(&e).expect("written");
            let back = Element::parse(text.as_bytes()).expect("parsed again");
            assert_eq!(back.get_text(), e.get_text(), "{text}");
        }
    }
}
