//! Owner records of files that went or changed by other means than the hub. A shared folder on
//! this machine is also a folder its users edit: a file uploaded with a token and deleted by
//! hand would go on counting against that token's quota, and its record would give the
//! uploader rights over whatever file later takes its name. Rights already hold only for the
//! version a file's upload left ([`Hub::owner_now`]); the sweep here forgets the records of
//! files gone or changed: all of them at start and every [`SWEEP_EVERY`], and a page of a
//! token's own ([`PAGE`] records, the next page each time) when its quota would refuse an
//! upload, so a file deleted by hand stops counting at once, and a client that keeps hitting
//! its quota makes the hub look at no more files per request than a page of a listing does.
//! An object store needs none: its names all change through hubs.

use crate::error::HubError;
use crate::records::Recorded;
use crate::service::Hub;
use crate::version::Version;
use std::time::Duration;
use troca_proto::RemoteName;

/// How often every owner record is looked at again.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Records read and looked at in one go, and at most for one refused upload.
pub const PAGE: usize = 1024;

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Records forgotten: their file is gone, or is not the version the upload left.
    pub forgotten: u64,
    /// Records from before versions were kept, given the version their file has now.
    pub stamped: u64,
}

impl Hub {
    /// Forgets the owner records (of token `token`, or all) whose file is gone or changed
    /// outside the hub, and stamps those from before versions were kept. Blocking.
    pub(crate) fn sweep_owners(&self, token: Option<i64>) -> Result<Swept, HubError> {
        let mut swept = Swept::default();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = self.sweep_page(token, after.as_deref())?;
            swept.forgotten += page.forgotten;
            swept.stamped += page.stamped;
            match next {
                Some(next) => after = Some(next),
                None => return Ok(swept),
            }
        }
    }

    /// Sweeps one page of owner records, those after name `after`; and the name to go on
    /// after, if the page was full. A record is forgotten only if it still holds what the
    /// sweep read, so an upload recorded meanwhile keeps its owner; a file the hub retimes
    /// between the sweep's look and the record's update may lose its owner (never gain
    /// another): rare, and on the safe side. Blocking.
    fn sweep_page(
        &self,
        token: Option<i64>,
        after: Option<&str>,
    ) -> Result<(Swept, Option<String>), HubError> {
        let mut swept = Swept::default();
        if !self.store().changed_outside() {
            return Ok((swept, None));
        }
        let page = self.owners().recorded(token, after, PAGE)?;
        let next = (page.len() == PAGE)
            .then(|| page.last().map(|r| r.name.clone()))
            .flatten();
        let (mut stale, mut found) = (Vec::new(), Vec::new());
        let versions = self.versions_now(page.iter().map(|r| r.name.as_str()));
        for (r, now) in page.into_iter().zip(versions) {
            let now = match now {
                Some(Ok(now)) => now,
                // Unreadable for now (a folder's mode, say): looked at next time.
                Some(Err(_)) => continue,
                None => None,
            };
            match (now, r.version) {
                (None, _) => stale.push(r),
                (Some(now), Some(left)) if now != left => stale.push(r),
                (Some(now), None) => found.push(Recorded {
                    name: r.name,
                    version: Some(now),
                }),
                (Some(_), Some(_)) => {}
            }
        }
        swept.forgotten = stale.len() as u64;
        swept.stamped = found.len() as u64;
        self.owners().forget_stale(&stale)?;
        self.owners().stamp(&found)?;
        Ok((swept, next))
    }

    /// The version of the file at each of `names` now (`Ok(None)`: none there), one look at
    /// each folder for the names in it; `None` for a name no file may have. Blocking.
    pub(crate) fn versions_now<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Vec<Option<Result<Option<Version>, HubError>>> {
        let names: Vec<Option<RemoteName>> = names.map(|n| RemoteName::parse(n).ok()).collect();
        let valid: Vec<RemoteName> = names.iter().flatten().cloned().collect();
        let mut seen = self.store().seen_each(&valid).into_iter();
        names
            .iter()
            .map(|n| {
                let seen = n.as_ref().and_then(|_| seen.next())?;
                Some(seen.map(|s| s.version))
            })
            .collect()
    }

    /// Sweeps the next page of token `id`'s records before its quota refuses an upload;
    /// whether anything was forgotten (then the quota is worth counting again). Blocking.
    pub(crate) fn resweep_token(&self, id: i64) -> bool {
        if !self.store().changed_outside() {
            return false;
        }
        let after = self.token_sweeps().cursor(id);
        let swept = match self.sweep_page(Some(id), after.as_deref()) {
            Ok((swept, next)) => {
                self.token_sweeps().go_on(id, next);
                swept
            }
            Err(e) => {
                tracing::warn!(error = %e, token = id, "cannot sweep a token's owner records");
                return false;
            }
        };
        if swept.forgotten > 0 {
            tracing::info!(
                token = id,
                forgotten = swept.forgotten,
                "a token's files gone or changed outside the hub no longer count"
            );
        }
        swept.forgotten > 0
    }
}
