//! What the hub remembers besides the files, behind three traits: the request [`History`], the
//! access [`Tokens`] and the files' [`Owners`]. The hub holds them as trait objects; today's
//! backend is one SQLite database in the state folder ([`sqlite`]), where the schema and the
//! connection settings live in one place.
//!
//! Like the store's, these methods block (a database); the service calls them on the blocking
//! pool, except [`History::append`], which never waits.

pub mod history;
pub mod memo;
pub mod postgres;
pub mod sqlite;

pub use history::{Entry, Page, PageQuery, Pending, MAX_SCAN};

use crate::error::HubError;
use crate::version::{Retimed, Version};
use std::sync::Arc;

/// Bytes and files: what an upload (or a batch of them) adds, what a token keeps, a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount {
    pub bytes: u64,
    pub files: u64,
}

impl Amount {
    /// Both amounts together (at most `u64::MAX` of each).
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            bytes: self.bytes.saturating_add(other.bytes),
            files: self.files.saturating_add(other.files),
        }
    }
}

pub use crate::pg::now_ns;

/// The request history.
pub trait History: Send + Sync + std::fmt::Debug {
    /// Whether entries are kept at all (a retention of 0 keeps none).
    fn enabled(&self) -> bool;
    /// Records one request; never waits (under overload an entry may be dropped, and counted).
    fn append(&self, entry: &Entry<'_>);
    /// Waits until everything appended so far is stored.
    fn flush(&self);
    /// One page of entries, newest first (see [`PageQuery`]).
    fn query(&self, query: &PageQuery) -> Result<Page, HubError>;
    /// Entries waiting to be written, and entries dropped so far.
    fn backlog(&self) -> Backlog {
        Backlog::default()
    }
    /// Who else is told of each finished request (the metrics, with `--metrics`).
    fn observer(&self) -> Option<&dyn Observer> {
        None
    }
}

/// Told of every finished request, with how it went and how long it took.
pub trait Observer: Send + Sync {
    fn request(
        &self,
        face: &'static str,
        op: &'static str,
        result: &Result<u64, String>,
        took: std::time::Duration,
    );
}

/// What a history has yet to write, and what it gave up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub queued: u64,
    pub dropped: u64,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
    Admin,
    /// Uploads new names into its folder and nothing else: it lists, reads, replaces and
    /// deletes nothing (an upload link's, which strangers hold).
    Upload,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
            Role::Upload => "upload",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            "upload" => Some(Role::Upload),
            _ => None,
        }
    }
}

/// Who a valid token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// The token's id in the records; `None` for the admin token file.
    pub token_id: Option<i64>,
    /// The folder the token is held to (`None`: the whole share).
    pub folder: Option<Arc<str>>,
    /// What its uploads may keep on the hub at once (0 bytes or files: no bound on that).
    pub quota: Amount,
    /// For a share link: how many downloads it allows in all (0: no bound). Each is counted
    /// with [`Tokens::count_download`] as it begins.
    pub max_downloads: u64,
    /// When it stops being valid by time (its own expiry, or its maker's), if ever.
    pub until_ns: Option<i64>,
}

impl Grant {
    /// The token's id and its quota, if it has one.
    pub fn quota(&self) -> Option<(i64, Amount)> {
        let id = self.token_id.filter(|_| self.quota != Amount::default())?;
        Some((id, self.quota))
    }
}

/// A token as `troca token list` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub role: Role,
    pub label: String,
    pub created_ns: i64,
    pub revoked: bool,
    /// When it stops being accepted, if ever.
    pub expires_ns: Option<i64>,
    /// The folder it is held to, if any.
    pub folder: Option<String>,
    /// What its uploads may keep on the hub at once (0: no bound).
    pub quota: Amount,
    /// What its uploads keep on the hub now, as the records know it.
    pub used: Amount,
    /// For a share link: the token that made it ([`SHARED_BY_ADMIN_FILE`] for the hub's admin
    /// token file); `None` for a token made on the hub's machine.
    pub made_by: Option<i64>,
    /// How many downloads it allows in all (0: no bound), and how many it has begun.
    pub downloads: Downloads,
}

/// A share link's downloads: how many it allows in all (0: no bound), and how many began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Downloads {
    pub most: u64,
    pub used: u64,
}

impl Downloads {
    /// Has it no download left?
    pub fn spent(&self) -> bool {
        self.most > 0 && self.used >= self.most
    }
}

impl TokenInfo {
    /// `active`, `revoked`, `expired` or `used up` (no download left), at `now_ns`.
    pub fn state(&self, now_ns: i64) -> &'static str {
        match self.expires_ns {
            _ if self.revoked => "revoked",
            Some(at) if at <= now_ns => "expired",
            _ if self.downloads.spent() => "used up",
            _ => "active",
        }
    }
}

/// A token to make.
#[derive(Debug, Clone, Copy)]
pub struct TokenSpec<'a> {
    pub role: Role,
    /// A note for `token list`.
    pub label: &'a str,
    /// When it stops being accepted, if ever.
    pub expires_ns: Option<i64>,
    /// The folder it is held to (a valid name, without a trailing `/`), if any.
    pub folder: Option<&'a str>,
    /// What its uploads may keep on the hub at once (0: no bound).
    pub quota: Amount,
    /// For a share link, the token that made it (see [`TokenInfo::made_by`]). A share is
    /// accepted only while the token that made it is.
    pub made_by: Option<i64>,
    /// How many downloads it allows in all (0: no bound); once they are spent it is refused
    /// as an expired one is.
    pub max_downloads: u64,
}

/// What [`TokenInfo::made_by`] holds for a share link made with the hub's admin token file,
/// which has no id.
pub const SHARED_BY_ADMIN_FILE: i64 = 0;

/// A token just made: its id, and the secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub id: i64,
    pub secret: String,
}

/// Access tokens: stored as hashes, checked in constant time.
pub trait Tokens: Send + Sync + std::fmt::Debug {
    /// What `token` grants (`None`: not a valid token, revoked, or expired).
    fn check(&self, token: &str) -> Result<Option<Grant>, HubError>;
    /// The admin grant if `token` is the hub's own admin token (its file's): a comparison of
    /// hashes in constant time, without the records, so it need not leave the caller's thread.
    fn admin(&self, _token: &str) -> Option<Grant> {
        None
    }
    /// What `token` grants, if a check of it is remembered and nothing has changed since
    /// (`memo.rs`): without the records, so it need not leave the caller's thread.
    fn remembered(&self, _token: &str) -> Option<Grant> {
        None
    }
    /// Makes a token.
    fn create(&self, spec: TokenSpec<'_>, now_ns: i64) -> Result<NewToken, HubError>;
    /// Every token made, oldest first.
    fn list(&self) -> Result<Vec<TokenInfo>, HubError>;
    /// Revokes token `id`; `false` if there is none.
    fn revoke(&self, id: i64) -> Result<bool, HubError>;
    /// Gives token `id` a new quota (0: no bound on that); `false` if there is none.
    fn set_quota(&self, id: i64, quota: Amount) -> Result<bool, HubError>;
    /// The token that made share link `id` (`None`: `id` is no share link, or no token).
    fn maker(&self, id: i64) -> Result<Option<i64>, HubError>;
    /// What share link `token` grants for `fetch` once its downloads are spent: a grant only
    /// if the link is valid otherwise and `fetch` continues a download it counted (the same
    /// name, from the same address).
    fn check_resume(&self, token: &str, fetch: &LinkFetch<'_>) -> Result<Option<Grant>, HubError>;
    /// Forgets the links (tokens made by `troca share`) that expired before `before_ns`, with
    /// what they counted; an upload link only once no file names it as its owner. How many.
    fn forget_links(&self, before_ns: i64) -> Result<u64, HubError>;
    /// Counts a download begun with token `id`, if its downloads are bounded: `false` when
    /// none is left (the count and the check in one step, so hubs sharing the records never
    /// let more through between them). A fetch that continues a download counted already
    /// (the same name, from the same address) is not counted again.
    fn count_download(&self, id: i64, fetch: &LinkFetch<'_>) -> Result<bool, HubError>;
}

/// A download through a share link whose downloads are bounded, as its count needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFetch<'a> {
    /// The file's name (a folder's, with its `/`, for its zip).
    pub name: &'a str,
    /// Where it is asked from (an address as text).
    pub address: &'a str,
    /// It starts past the file's first byte: a download that was cut, going on.
    pub resumed: bool,
}

/// Who uploaded a file: the token it came with, and the uploader's owner key (its BLAKE3 hash).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owner {
    pub token_id: Option<i64>,
    pub key_hash: Option<[u8; 32]>,
}

/// A file's owner, as a batch records it, with the version the upload left: its size is what
/// the file counts against its token's quota, and on a store other programs may change (a
/// folder on this machine) the owner keeps its rights only while the file is that version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub name: String,
    pub owner: Owner,
    pub version: Version,
}

/// An owner record as kept: a name, and the version of the file its upload left (`None`: a
/// record made before versions were kept, trusted by its name until a sweep stamps it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub version: Option<Version>,
}

/// A dead property of a name (WebDAV's PROPPATCH): stored, never interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadProp {
    /// `{namespace}name`, the property's identity.
    pub key: String,
    /// The property element as the client sent it, as XML text.
    pub xml: String,
}

/// The dead properties of one name of many asked for at once ([`Owners::props_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedProps {
    pub name: String,
    /// `None`: the name has some, left out to keep the answer within its bytes (ask for them
    /// by name).
    pub props: Option<Vec<DeadProp>>,
}

/// One change of a PROPPATCH; a PROPPATCH's changes apply in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropChange {
    Set(DeadProp),
    /// The key of the property to remove.
    Remove(String),
}

/// The most dead properties one name may have, and the largest one (its XML text).
pub const MAX_PROPS_PER_NAME: usize = 64;
pub const MAX_PROP_BYTES: usize = 16 * 1024;

/// The refusal of a property past [`MAX_PROPS_PER_NAME`].
pub(crate) fn too_many_props() -> HubError {
    HubError::TooLarge(format!(
        "a name may have at most {MAX_PROPS_PER_NAME} properties"
    ))
}

/// Who owns which file (the right to replace or delete it), and the dead properties of names:
/// the records that follow a name when it moves and go when it goes.
pub trait Owners: Send + Sync + std::fmt::Debug {
    /// The owner of `name` (`Owner::default()`: nobody). With `now`, the version the file is
    /// now, only an owner whose upload left that version: a file replaced or changed by other
    /// means than the hub belongs to nobody.
    fn owner(&self, name: &str, now: Option<Version>) -> Result<Owner, HubError>;
    /// Sets (or, with `Owner::default()`, clears) the owner of `name`, a file its upload left
    /// at `version`.
    fn set_owner(&self, name: &str, owner: Owner, version: Version) -> Result<(), HubError>;
    /// The hub gave `name` a new time: its owner records follow the file to its new version
    /// (only those that were of the version before).
    fn retime(&self, name: &str, retimed: Retimed) -> Result<(), HubError>;
    /// Owner records in name order after `after`, at most `limit`: of token `token`, or all
    /// (by token and by owner key) with `None`.
    fn recorded(
        &self,
        token: Option<i64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError>;
    /// Forgets owner records whose file is gone or changed, each only if it still holds the
    /// version it was read with (an upload recorded meanwhile stays).
    fn forget_stale(&self, stale: &[Recorded]) -> Result<(), HubError>;
    /// Gives records made before versions were kept the version their file has now.
    fn stamp(&self, found: &[Recorded]) -> Result<(), HubError>;
    /// What token `id`'s uploads keep on the hub: the files it owns and their sizes as
    /// recorded when each was stored.
    fn usage(&self, id: i64) -> Result<Amount, HubError>;
    /// Sets the owners of many files at once.
    fn set_owners(&self, owners: &[Owned]) -> Result<(), HubError>;
    /// Moves the owners of `from` and everything beneath it to `to`.
    fn move_owners(&self, from: &str, to: &str) -> Result<(), HubError>;
    /// Forgets the owners and properties of `name` and everything beneath it.
    fn forget_owners_beneath(&self, name: &str) -> Result<(), HubError>;
    /// False only when no name has a dead property, so [`Owners::props`] of any name is
    /// empty and may be skipped; a backend that cannot tell cheaply says true.
    fn may_have_props(&self) -> bool {
        true
    }
    /// The dead properties of `name`.
    fn props(&self, name: &str) -> Result<Vec<DeadProp>, HubError>;
    /// The dead properties of each of `names` that has any, in the order of `names`: whole
    /// while their keys and XML add up to at most `bytes`, past that marked as left out.
    fn props_of(&self, names: &[String], bytes: usize) -> Result<Vec<NamedProps>, HubError> {
        let mut out = Vec::new();
        let mut used = 0;
        for name in names {
            let props = self.props(name)?;
            if props.is_empty() {
                continue;
            }
            used += props
                .iter()
                .map(|p| p.key.len() + p.xml.len())
                .sum::<usize>();
            let props = (used <= bytes).then_some(props);
            out.push(NamedProps {
                name: name.clone(),
                props,
            });
        }
        Ok(out)
    }
    /// Applies `changes` to `name` in order, all or nothing; refused with `TooLarge` past
    /// [`MAX_PROPS_PER_NAME`] properties.
    fn patch_props(&self, name: &str, changes: &[PropChange]) -> Result<(), HubError>;
    /// Copies the dead properties of `from` and everything beneath it to `to`.
    fn copy_props(&self, from: &str, to: &str) -> Result<(), HubError>;
    /// The records of the names starting with `prefix` that `owner` uploaded (by token and by
    /// owner key), in name order after `after`, at most `limit`: a name recorded both ways
    /// comes twice.
    fn owned(
        &self,
        prefix: &str,
        owner: Owner,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Recorded>, HubError>;
}

/// The first name past every name that starts with `prefix` in byte order (`None`: no such
/// name, for `""` or a prefix of only U+10FFFF): the upper end of an index's range. UTF-8
/// keeps the order of code points, so it is `prefix` with its last character raised by one.
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=0x10FFFF).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;
    use proptest::prelude::*;

    #[test]
    fn a_prefixs_end_is_past_its_names_and_before_the_rest() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("d/"), Some("d0".into()));
        assert_eq!(prefix_end("a\u{D7FF}"), Some("a\u{E000}".into()));
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".into()));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    proptest! {
        #[test]
        fn names_with_the_prefix_sort_before_its_end_and_no_other_between(
            prefix in "\\PC{0,4}", rest in "\\PC{0,4}", other in "\\PC{0,6}",
        ) {
            let end = prefix_end(&prefix);
            let within = |name: &str| {
                name.as_bytes() >= prefix.as_bytes()
                    && end.as_ref().is_none_or(|e| name.as_bytes() < e.as_bytes())
            };
            prop_assert!(within(&format!("{prefix}{rest}")), "{:?}", end);
            prop_assert_eq!(within(&other), other.starts_with(&prefix), "{:?}", end);
        }
    }
}

/// Checks every backend of the records passes alike.
#[cfg(test)]
pub(crate) mod checks {
    use super::*;

    /// Links that expired before the time given are forgotten, with what they counted: a
    /// read link at once, an upload link once no file it brought is left. Tokens that are not
    /// links, and links still within the time, stay.
    pub(crate) fn forgets_the_links_that_ended<R: Tokens + Owners>(records: &R) {
        let spec = |role, expires_ns, made_by| TokenSpec {
            role,
            label: "share of a.txt",
            expires_ns: Some(expires_ns),
            folder: Some("a.txt"),
            quota: Amount::default(),
            made_by,
            max_downloads: 1,
        };
        let upload_spec = |folder| TokenSpec {
            max_downloads: 0,
            folder: Some(folder),
            ..spec(Role::Upload, 1_000, Some(SHARED_BY_ADMIN_FILE))
        };
        let made = |spec| records.create(spec, 0).unwrap().id;
        let old = made(spec(Role::Read, 1_000, Some(SHARED_BY_ADMIN_FILE)));
        let empty_upload = made(upload_spec("inbox"));
        let upload = made(upload_spec("drop"));
        let token = made(spec(Role::Read, 1_000, None));
        let recent = made(spec(Role::Read, 3_000, Some(SHARED_BY_ADMIN_FILE)));
        let fetch = LinkFetch {
            name: "a.txt",
            address: "192.0.2.1",
            resumed: false,
        };
        assert!(records.count_download(old, &fetch).unwrap());
        let brought = Owner {
            token_id: Some(upload),
            key_hash: None,
        };
        let version = Version {
            size: 3,
            modified_ns: 1,
        };
        records.set_owner("drop/b.txt", brought, version).unwrap();

        let ids = || -> Vec<i64> { records.list().unwrap().iter().map(|t| t.id).collect() };
        assert_eq!(records.forget_links(2_000).unwrap(), 2);
        for gone in [old, empty_upload] {
            assert!(!ids().contains(&gone), "{gone} in {:?}", ids());
        }
        for kept in [upload, token, recent] {
            assert!(ids().contains(&kept), "{kept} not in {:?}", ids());
        }
        assert_eq!(records.forget_links(2_000).unwrap(), 0, "once");

        records
            .set_owner("drop/b.txt", Owner::default(), version)
            .unwrap();
        assert_eq!(records.forget_links(2_000).unwrap(), 1, "its file gone");
        assert!(!ids().contains(&upload));
    }
}
