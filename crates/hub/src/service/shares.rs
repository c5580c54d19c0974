//! Share links: a read token held to one file or folder, made by a client with a write or
//! admin token, lasting a bounded time, and working only while the token that made it does.
//! The link carries the token in its path (`/s/TOKEN/files/NAME`), so that anyone given it
//! reads what it shares with a browser, `curl` or `wget`, and nothing else.
//!
//! An upload link is the same with an `upload` token held to a folder: anyone given it sends
//! new files there (within the link's quota) and sees nothing, not even what others sent.
//! What comes in is its maker's to move and delete.

use super::{blocking, parse_folder, Hub};
use crate::access::Caller;
use crate::error::HubError;
use crate::records::{Amount, Role, TokenInfo, TokenSpec, SHARED_BY_ADMIN_FILE};
use crate::store::Kind;
use std::sync::Arc;
use std::time::Duration;
use troca_proto::msg::{ShareEntry, UploadBounds, UploadUse};

/// A share link just made: its token's id and secret (shown once), what it shares (a folder's
/// name ends in `/`), and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareMade {
    pub id: i64,
    pub secret: String,
    pub name: String,
    pub expires_ns: i64,
}

/// What a share link is asked to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareAsk {
    /// How long it lasts (`None`: the hub's default).
    pub time: Option<Duration>,
    /// An upload link's bounds; `None` for a read link.
    pub upload: Option<UploadBounds>,
    /// A read link's most downloads (0: no bound).
    pub max_downloads: u64,
}

impl ShareAsk {
    /// As the faces receive it: a life of `expires_s` seconds (0: the hub's default).
    pub fn new(expires_s: u64, upload: Option<UploadBounds>, max_downloads: u64) -> Self {
        Self {
            time: (expires_s > 0).then(|| Duration::from_secs(expires_s)),
            upload,
            max_downloads,
        }
    }
}

/// A share link's path beneath the web face's base: `/s/SECRET/files/NAME`, each part of the
/// name percent-encoded.
pub fn share_path(secret: &str, name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // RFC 3986's unreserved characters stay as they are, so `curl -O` and `wget` save
    // `report.pdf` under that name.
    const PART: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let parts: Vec<String> = name
        .split('/')
        .map(|p| utf8_percent_encode(p, PART).to_string())
        .collect();
    format!("/s/{secret}/files/{}", parts.join("/"))
}

/// `30 days`, `12 hours`, `90 seconds`: a share link's longest life in words.
fn lasting(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        86_400 => "1 day".into(),
        _ if s % 86_400 == 0 => format!("{} days", s / 86_400),
        3_600 => "1 hour".into(),
        _ if s % 3_600 == 0 => format!("{} hours", s / 3_600),
        _ => format!("{s} seconds"),
    }
}

/// What an upload link may bring in: what was asked for (0: the most), within the hub's
/// most (`--max-share-upload`, `--max-share-upload-files`; 0: no bound).
fn upload_quota(asked: UploadBounds, most: Amount) -> Result<Amount, HubError> {
    let pick = |asked: u64, most: u64| match (asked, most) {
        (0, m) => Some(m),
        (a, m) if m == 0 || a <= m => Some(a),
        _ => None,
    };
    let bytes = pick(asked.bytes, most.bytes).ok_or_else(|| {
        HubError::BadRequest(format!(
            "an upload link takes at most {} on this hub",
            troca_proto::json::human_size(most.bytes)
        ))
    })?;
    let files = pick(asked.files, most.files).ok_or_else(|| {
        HubError::BadRequest(format!(
            "an upload link takes at most {} files on this hub",
            most.files
        ))
    })?;
    Ok(Amount { bytes, files })
}

/// An upload link's `bounds` within what its maker's quota `own` leaves after `taken` (what
/// the maker's files keep and its working upload links may take): a token cannot hand out
/// more room than it has. A bound asked for past that is refused; one left to the hub's most
/// is cut to it.
fn within_makers_quota(
    bounds: Amount,
    asked: UploadBounds,
    own: Amount,
    taken: Amount,
) -> Result<Amount, HubError> {
    let fit = |bound: u64, asked: u64, own: u64, taken: u64, text: &dyn Fn(u64) -> String| {
        if own == 0 {
            return Ok(bound);
        }
        let left = own.saturating_sub(taken);
        let cut = if bound == 0 { left } else { bound.min(left) };
        if (asked != 0 && asked > left) || cut == 0 {
            return Err(HubError::TokenQuota(format!(
                "this token may keep {}, and its files and upload links take {}: an upload \
                 link it makes may take at most {}",
                text(own),
                text(taken),
                text(left)
            )));
        }
        Ok(cut)
    };
    let size = |n: u64| troca_proto::json::human_size(n);
    let files = |n: u64| format!("{n} file{}", if n == 1 { "" } else { "s" });
    Ok(Amount {
        bytes: fit(bounds.bytes, asked.bytes, own.bytes, taken.bytes, &size)?,
        files: fit(bounds.files, asked.files, own.files, taken.files, &files)?,
    })
}

impl Hub {
    /// Makes a share link for `name` as `ask`ed, for a caller with a write or admin token
    /// that reaches `name`: a read link (for so many downloads, if asked), or an upload link
    /// into folder `name` within its bounds. Refused past `--max-share-time` or
    /// `--max-share-upload`, or when the caller's token already has `--max-shares-per-token`
    /// links working.
    pub async fn share(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        ask: ShareAsk,
    ) -> Result<ShareMade, HubError> {
        let remote = parse_folder(name)?;
        let limits = self.config.shares;
        let ShareAsk {
            time,
            upload,
            max_downloads,
        } = ask;
        if upload.is_some() && max_downloads > 0 {
            return Err(HubError::BadRequest(
                "an upload link counts no downloads: a bound on downloads is for links that read"
                    .into(),
            ));
        }
        let time = time.unwrap_or(limits.default_time);
        if time > limits.max_time {
            return Err(HubError::BadRequest(format!(
                "a share link lasts at most {} on this hub",
                lasting(limits.max_time)
            )));
        }
        let quota = match upload {
            Some(asked) => Some(upload_quota(asked, limits.upload)?),
            None => None,
        };
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            let grant = caller.sharer(hub.tokens())?;
            caller.must_reach(remote.as_str())?;
            let name = match (hub.store.kind(&remote)?, quota) {
                (None, _) => return Err(HubError::NotFound(remote.to_string())),
                (Some(Kind::Folder), _) => format!("{remote}/"),
                (Some(_), None) => remote.to_string(),
                (Some(_), Some(_)) => {
                    return Err(HubError::BadRequest(format!(
                        "{remote} is a file; an upload link goes to a folder"
                    )))
                }
            };
            if quota.is_some() {
                caller.may_create(hub.tokens(), hub.config.read_only, remote.as_str())?;
            }
            let made_by = grant.token_id.unwrap_or(SHARED_BY_ADMIN_FILE);
            let now = crate::records::now_ns();
            // One read of the tokens: the maker's links, and what the maker's files keep.
            let all = hub.tokens().list()?;
            let kept = grant
                .token_id
                .and_then(|id| all.iter().find(|t| t.id == id))
                .map(|t| t.used)
                .unwrap_or_default();
            let mut links = links_made(all, Some(made_by));
            links.retain(|t| t.state(now) == "active");
            let working = links.len();
            if working >= limits.per_token {
                return Err(HubError::TooLarge(format!(
                    "this token has {working} share links working, the most this hub allows; \
                     revoke some first (troca unshare ID)"
                )));
            }
            let quota = match (quota, upload, grant.quota()) {
                (Some(bounds), Some(asked), Some((_, own))) => {
                    let taken = links
                        .iter()
                        .filter(|t| t.role == Role::Upload)
                        .fold(kept, |sum, t| sum.plus(t.quota));
                    Some(within_makers_quota(bounds, asked, own, taken)?)
                }
                (quota, ..) => quota,
            };
            let expires_ns = now.saturating_add(i64::try_from(time.as_nanos()).unwrap_or(i64::MAX));
            let label = format!("share of {name}");
            let new = hub.tokens().create(
                TokenSpec {
                    role: if quota.is_some() {
                        Role::Upload
                    } else {
                        Role::Read
                    },
                    label: &label,
                    expires_ns: Some(expires_ns),
                    folder: Some(remote.as_str()),
                    quota: quota.unwrap_or_default(),
                    made_by: Some(made_by),
                    max_downloads,
                },
                now,
            )?;
            Ok(ShareMade {
                id: new.id,
                secret: new.secret,
                name,
                expires_ns,
            })
        })
        .await
    }

    /// The share links `caller` made, newest first; every one for an admin of the whole share.
    pub async fn shares(self: &Arc<Self>, caller: &Caller) -> Result<Vec<ShareEntry>, HubError> {
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            let now = crate::records::now_ns();
            let mut shares: Vec<ShareEntry> = hub
                .visible_shares(&caller)?
                .into_iter()
                .map(|t| share_entry(&t, now))
                .collect();
            shares.reverse();
            Ok(shares)
        })
        .await
    }

    /// Revokes share link `id`, if `caller` made it (an admin of the whole share: any).
    pub async fn unshare(self: &Arc<Self>, caller: &Caller, id: i64) -> Result<(), HubError> {
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            if !hub.visible_shares(&caller)?.iter().any(|t| t.id == id) {
                return Err(HubError::NotFound(format!("share link {id}")));
            }
            hub.tokens().revoke(id)?;
            Ok(())
        })
        .await
    }

    /// The share links `caller` may list and revoke, oldest first: its own, or every one for
    /// an admin of the whole share.
    fn visible_shares(&self, caller: &Caller) -> Result<Vec<TokenInfo>, HubError> {
        let grant = caller.sharer(self.tokens())?;
        let everyone = grant.role == Role::Admin && grant.folder.is_none();
        let mine = grant.token_id.unwrap_or(SHARED_BY_ADMIN_FILE);
        self.shares_of((!everyone).then_some(mine))
    }

    /// The share links made by `maker` (`None`: by anyone), oldest first.
    fn shares_of(&self, maker: Option<i64>) -> Result<Vec<TokenInfo>, HubError> {
        Ok(links_made(self.tokens().list()?, maker))
    }
}

/// The share links among `tokens` made by `maker` (`None`: by anyone), in their order.
fn links_made(mut tokens: Vec<TokenInfo>, maker: Option<i64>) -> Vec<TokenInfo> {
    tokens.retain(|t| t.made_by.is_some() && maker.is_none_or(|m| t.made_by == Some(m)));
    tokens
}

/// A share link as listed: its folder's name ends in `/` when it names one (as made).
fn share_entry(t: &TokenInfo, now: i64) -> ShareEntry {
    let name = t
        .label
        .strip_prefix("share of ")
        .map(str::to_owned)
        .or_else(|| t.folder.clone())
        .unwrap_or_default();
    ShareEntry {
        id: u64::try_from(t.id).unwrap_or(0),
        name,
        created_ns: t.created_ns,
        expires_ns: t.expires_ns.unwrap_or(i64::MAX),
        state: t.state(now).to_owned(),
        made_by: match t.made_by {
            Some(SHARED_BY_ADMIN_FILE) | None => "admin".to_owned(),
            Some(id) => format!("token {id}"),
        },
        upload: (t.role == Role::Upload).then_some(UploadUse {
            bytes: t.quota.bytes,
            files: t.quota.files,
            used_bytes: t.used.bytes,
            used_files: t.used.files,
        }),
        max_downloads: t.downloads.most,
        downloads: t.downloads.used,
    }
}
