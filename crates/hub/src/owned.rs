//! The names a caller may change as their uploader, for a face that shows only the actions
//! allowed (the page's Delete and Rename). A client may upload a great many files over time,
//! so they are read a page at a time ([`OWNED_PAGE`] records), never gathered whole, and each
//! is given only while its file is still the version its upload left, as
//! [`Hub::owner_now`] checks before a change: a file edited by hand shows no Delete that the
//! hub would then refuse.

use crate::error::HubError;
use crate::records::{Owner, Recorded};
use crate::service::{blocking, Hub};
use std::sync::Arc;

/// Owner records read for one page of [`Hub::owned`].
pub const OWNED_PAGE: usize = 1024;

// A name has at most two records (by token, by owner key): a full page holds more than one name.
const _: () = assert!(OWNED_PAGE > 2);

/// A page of the names a caller may change as their uploader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedPage {
    /// In byte order.
    pub names: Vec<String>,
    /// The name the next page starts after (`None`: this was the last).
    pub next: Option<String>,
}

/// Cuts a page of `rows` read with `limit` where the next page starts: after the last whole
/// name. A full page's last name may have its other record on the next page, so it waits
/// for that page. Returns the name the next page starts after (`None`: the last page).
fn cut(rows: &mut Vec<Recorded>, limit: usize) -> Option<String> {
    if rows.len() < limit {
        return None;
    }
    let last = rows.last()?.name.clone();
    rows.retain(|r| r.name != last);
    rows.last().map(|r| r.name.clone())
}

impl Hub {
    /// The names starting with `prefix` after `after` that `owner` uploaded and may still
    /// change: on a store that other programs may change, those whose file is still the
    /// version the upload left (or is gone; a listing shows no such name).
    pub async fn owned(
        self: &Arc<Self>,
        owner: Owner,
        prefix: &str,
        after: Option<String>,
    ) -> Result<OwnedPage, HubError> {
        let (hub, prefix) = (Arc::clone(self), prefix.to_owned());
        blocking(move || hub.owned_blocking(owner, &prefix, after.as_deref())).await
    }

    /// [`Hub::owned`] on a thread that may block.
    pub fn owned_blocking(
        &self,
        owner: Owner,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<OwnedPage, HubError> {
        let mut rows = self.owners().owned(prefix, owner, after, OWNED_PAGE)?;
        let next = cut(&mut rows, OWNED_PAGE);
        let names = self.still_owned(&rows)?;
        Ok(OwnedPage { names, next })
    }

    /// The names of `rows` (in name order, a name's records side by side) of which a record
    /// holds the file's version now. Blocking.
    fn still_owned(&self, rows: &[Recorded]) -> Result<Vec<String>, HubError> {
        let groups: Vec<&[Recorded]> = rows.chunk_by(|a, b| a.name == b.name).collect();
        if !self.store().changed_outside() {
            return Ok(groups.iter().map(|g| g[0].name.clone()).collect());
        }
        let versions = self.versions_now(groups.iter().map(|g| g[0].name.as_str()));
        let mut out = Vec::with_capacity(groups.len());
        for (group, now) in groups.into_iter().zip(versions) {
            let Some(now) = now.transpose()? else {
                continue;
            };
            if now.is_none()
                || group
                    .iter()
                    .any(|r| r.version.is_none_or(|v| Some(v) == now))
            {
                out.push(group[0].name.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;

    fn rows(names: &[&str]) -> Vec<Recorded> {
        let v = |i| {
            Some(Version {
                size: i,
                modified_ns: 1,
            })
        };
        (0..)
            .zip(names)
            .map(|(i, n)| Recorded {
                name: (*n).to_owned(),
                version: v(i),
            })
            .collect()
    }

    #[test]
    fn a_page_ends_after_its_last_whole_name() {
        // Not full: the last page, whole.
        let mut page = rows(&["a", "a", "b"]);
        assert_eq!(cut(&mut page, 4), None);
        assert_eq!(page.len(), 3);
        // Full, its last name perhaps cut in two: that name begins the next page.
        let mut page = rows(&["a", "a", "b", "c"]);
        assert_eq!(cut(&mut page, 4).as_deref(), Some("b"));
        assert_eq!(page, rows(&["a", "a", "b"]));
        let mut page = rows(&["a", "b", "c", "c"]);
        assert_eq!(cut(&mut page, 4).as_deref(), Some("b"));
        assert_eq!(page, rows(&["a", "b"]));
    }
}
