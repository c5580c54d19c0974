//! The access policy: anyone who can reach the hub may list, download and upload new names;
//! replacing or deleting a file needs the admin token or the token that uploaded it. A `read`
//! token may only read; an `upload` token (an upload link's) may only upload new names, and
//! reads nothing, not even what it uploaded. `--read-only` refuses every write and
//! `--require-token` every client without a valid token. Repeated wrong tokens from one address
//! are slowed down.

use crate::error::HubError;
use crate::hidden::Hidden;
use crate::records::{Grant, Owner, Role, Tokens};
use lru::LruCache;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use troca_net::limits::AddressKey;

/// What the hub keeps of an owner key: its BLAKE3 hash (the key itself is never stored).
pub fn owner_key_hash(key: &str) -> [u8; 32] {
    *blake3::hash(key.as_bytes()).as_bytes()
}

/// Who is asking, as established at the handshake.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The token as presented (kept in memory only), to re-check before each write: a token
    /// revoked while connected loses its rights at once.
    pub token: Option<String>,
    pub grant: Option<Grant>,
    /// Where the caller connects from (uploads are accounted per address).
    pub from: Option<IpAddr>,
    /// The BLAKE3 hash of the owner key the caller presented, if any.
    pub owner_key: Option<[u8; 32]>,
    /// The lock tokens the request presents (a WebDAV `If` header's); other faces hold none.
    pub lock_tokens: Vec<String>,
    /// The names the hub hides (`--hide`), which no caller reaches.
    pub hidden: Arc<Hidden>,
}

impl Caller {
    /// Who owns what this caller uploads: its token (an anonymous upload owns nothing by
    /// token) and its owner key.
    pub fn as_owner(&self) -> Owner {
        Owner {
            token_id: self.grant.as_ref().and_then(|g| g.token_id),
            key_hash: self.owner_key,
        }
    }

    /// Who holds the locks this caller takes: its token, or `anonymous`.
    pub fn principal(&self) -> String {
        match &self.grant {
            Some(Grant {
                token_id: Some(id), ..
            }) => format!("token {id}"),
            Some(Grant { role, .. }) => role.as_str().to_owned(),
            None => "anonymous".to_owned(),
        }
    }

    /// The folder this caller's token holds it to, if any (as the token was at the handshake:
    /// writes check it again, as they do the token).
    pub fn folder(&self) -> Option<&str> {
        self.grant.as_ref().and_then(|g| g.folder.as_deref())
    }

    /// Does this caller's token only upload (an upload link's)? Then it sees no name, and
    /// reads, moves and deletes none.
    pub fn uploads_only(&self) -> bool {
        matches!(
            self.grant,
            Some(Grant {
                role: Role::Upload,
                ..
            })
        )
    }

    /// May this caller see `name` (a file, or a folder ending in `/`)? Everything the hub
    /// does not hide, unless its token is held to a folder: then that folder and what is in
    /// it; nothing when its token only uploads.
    pub fn sees(&self, name: &str) -> bool {
        self.concerned(name) && !self.hidden.covers(name)
    }

    /// Does what happens to `name` concern this caller (`who`, the history)? As
    /// [`Caller::sees`], hidden names included: attempts at them are shown to those who
    /// would see the name were it not hidden.
    pub fn concerned(&self, name: &str) -> bool {
        !self.uploads_only() && self.folder().is_none_or(|f| within(f, name))
    }

    /// May this caller read `name`? Refused, without looking at the share, outside the folder
    /// its token is held to, and everywhere to a token that only uploads.
    pub fn must_reach(&self, name: &str) -> Result<(), HubError> {
        if self.uploads_only() {
            return Err(uploads_only());
        }
        self.must_place(name)
    }

    /// May this caller put a new file at `name` (as far as where it is goes)? Refused outside
    /// the folder its token is held to.
    pub fn must_place(&self, name: &str) -> Result<(), HubError> {
        self.hidden.must_not_cover(name)?;
        match self.folder() {
            Some(f) if !within(f, name) => Err(outside(f, name)),
            _ => Ok(()),
        }
    }

    /// [`Caller::must_reach`] for a name to move or delete, which for a token held to a folder
    /// must be in it, never the folder itself.
    pub fn must_reach_inside(&self, name: &str) -> Result<(), HubError> {
        if self.uploads_only() {
            return Err(uploads_only());
        }
        self.hidden.must_not_cover(name)?;
        match self.folder() {
            Some(f) if !beneath(f, name) => Err(outside(f, name)),
            _ => Ok(()),
        }
    }

    /// Is `name` a folder on the way to the one this caller's token is held to (`""`, the
    /// share, included)?
    pub fn on_the_way(&self, name: &str) -> bool {
        let name = name.trim_end_matches('/');
        self.folder().is_some_and(|f| {
            name.is_empty()
                || f.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// What a listing of the names starting with `prefix` covers for this caller: `prefix`
    /// itself, or its token's folder where that lies under `prefix`; `None` when the two do
    /// not meet (the listing is empty).
    pub fn listing_prefix(&self, prefix: &str) -> Option<String> {
        if self.uploads_only() {
            return None;
        }
        let Some(f) = self.folder() else {
            return Some(prefix.to_owned());
        };
        let root = format!("{f}/");
        if prefix.starts_with(&root) {
            Some(prefix.to_owned())
        } else if root.starts_with(prefix) {
            Some(root)
        } else {
            None
        }
    }

    /// The grant as it stands now.
    fn current(&self, tokens: &dyn Tokens) -> Result<Option<Grant>, HubError> {
        match &self.token {
            None => Ok(None),
            Some(t) => match tokens.check(t)? {
                Some(g) => Ok(Some(g)),
                None => Err(HubError::Unauthorized(
                    "your token is no longer valid (revoked or expired?)".into(),
                )),
            },
        }
    }

    /// The grant (as it stands now) under which this caller may make share links: a write or
    /// admin token's. A share lets anyone who has its link read what it shares (or upload
    /// there), so a client without a token, or with a read or upload token, cannot hand out
    /// what it was given.
    pub fn sharer(&self, tokens: &dyn Tokens) -> Result<Grant, HubError> {
        match self.current(tokens)? {
            Some(g) if matches!(g.role, Role::Write | Role::Admin) => Ok(g),
            Some(g) => Err(HubError::Forbidden(format!(
                "a{} {} token cannot make share links; that needs a write or admin token",
                if g.role == Role::Upload { "n" } else { "" },
                g.role.as_str()
            ))),
            None => Err(HubError::Forbidden(
                "share links need a write or admin token".into(),
            )),
        }
    }

    /// Is this caller an admin of the whole share (by its token as it stands now)?
    pub fn must_be_admin(&self, tokens: &dyn Tokens, what: &str) -> Result<(), HubError> {
        match self.current(tokens)? {
            Some(Grant {
                role: Role::Admin,
                folder: None,
                ..
            }) => Ok(()),
            _ => Err(HubError::Forbidden(format!("{what} needs the admin token"))),
        }
    }

    /// What this caller may do under `prefix`, for a face that shows only the actions
    /// allowed (the page).
    pub fn rights(
        &self,
        tokens: &dyn Tokens,
        read_only: bool,
        prefix: &str,
    ) -> Result<Rights, HubError> {
        let grant = self.current(tokens)?;
        let role = grant.as_ref().map(|g| g.role);
        let reaches = grant
            .as_ref()
            .and_then(|g| g.folder.as_deref())
            .is_none_or(|f| within(f, prefix));
        let may_upload = role_uploads(read_only, role) && reaches;
        let admin = may_upload && role == Some(Role::Admin);
        let owner = (may_upload && !admin && role != Some(Role::Upload)).then(|| Owner {
            token_id: grant
                .filter(|g| g.role == Role::Write)
                .and_then(|g| g.token_id),
            key_hash: self.owner_key,
        });
        Ok(Rights {
            may_upload,
            admin,
            owner,
        })
    }

    /// May this caller upload a new name (or make a folder) at `name`?
    pub fn may_create(
        &self,
        tokens: &dyn Tokens,
        read_only: bool,
        name: &str,
    ) -> Result<(), HubError> {
        if read_only {
            return Err(HubError::Forbidden("this hub is read-only".into()));
        }
        self.hidden.must_not_cover(name)?;
        match self.current(tokens)? {
            Some(Grant {
                role: Role::Read, ..
            }) => Err(HubError::Forbidden(
                "a read token cannot upload; ask for a write token".into(),
            )),
            Some(Grant {
                folder: Some(f), ..
            }) if !within(&f, name) => Err(outside(&f, name)),
            _ => Ok(()),
        }
    }

    /// May this caller replace or delete `name`, uploaded by `owner`? A token held to a folder
    /// reaches what is in it, never the folder itself.
    pub fn may_change(
        &self,
        tokens: &dyn Tokens,
        read_only: bool,
        name: &str,
        owner: Owner,
        what: &str,
    ) -> Result<(), HubError> {
        if read_only {
            return Err(HubError::Forbidden("this hub is read-only".into()));
        }
        let own_key = self.owner_key.is_some() && self.owner_key == owner.key_hash;
        let grant = self.current(tokens)?;
        if let Some(f) = grant.as_ref().and_then(|g| g.folder.as_deref()) {
            if !beneath(f, name) {
                return Err(outside(f, name));
            }
        }
        match grant {
            Some(Grant {
                role: Role::Admin, ..
            }) => Ok(()),
            Some(Grant {
                role: Role::Write,
                token_id: Some(id),
                ..
            }) if owner.token_id == Some(id) || made_it(tokens, id, owner)? => Ok(()),
            // The same client that uploaded it, by its owner key (a read token reads only).
            Some(Grant {
                role: Role::Write, ..
            })
            | None
                if own_key =>
            {
                Ok(())
            }
            Some(_) => Err(HubError::Forbidden(format!(
                "{what} {name:?} needs the admin token or the token that uploaded it"
            ))),
            None => Err(HubError::Forbidden(format!(
                "{what} {name:?} needs a token: the admin token or the one that uploaded it"
            ))),
        }
    }
}

/// Did the token `id` make the share link that uploaded a file of `owner`'s? What comes in
/// through an upload link is its maker's to change.
fn made_it(tokens: &dyn Tokens, id: i64, owner: Owner) -> Result<bool, HubError> {
    match owner.token_id {
        Some(link) if link != id => Ok(tokens.maker(link)? == Some(id)),
        _ => Ok(false),
    }
}

/// The refusal of a read (or move, or delete) to a token that only uploads.
pub fn uploads_only() -> HubError {
    HubError::Forbidden(
        "this token (an upload link's) only uploads new files: it lists, reads, moves and \
         deletes nothing"
            .into(),
    )
}

/// Is `name` (a file, or a folder with or without its trailing `/`) `folder` or in it?
fn within(folder: &str, name: &str) -> bool {
    name.strip_prefix(folder)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Is `name` in `folder` (not `folder` itself)?
fn beneath(folder: &str, name: &str) -> bool {
    name.strip_prefix(folder)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty())
}

/// The refusal of a name outside the folder a token is held to.
fn outside(folder: &str, name: &str) -> HubError {
    HubError::Forbidden(format!(
        "{name:?} is outside {folder}/, the only folder this token reaches"
    ))
}

/// What a caller may do under a folder: upload, change everything (admin), or change the
/// files it uploaded: those `owner` uploaded (`Hub::owned` lists them).
#[derive(Debug, Clone, Default)]
pub struct Rights {
    pub may_upload: bool,
    pub admin: bool,
    /// Whose files the caller may change besides: `None` when there is no list to give (an
    /// admin changes all, a caller that cannot upload none).
    pub owner: Option<Owner>,
}

/// Whether a caller of `role` (`None`: without a token) may upload at all, somewhere, on a hub
/// that is `read_only` or not.
pub fn role_uploads(read_only: bool, role: Option<Role>) -> bool {
    !read_only && role != Some(Role::Read)
}

/// Slows down addresses that keep presenting wrong tokens: one guess at a time per address
/// (an IPv6 /64) once it has presented a wrong one, each wrong one answered later than the one
/// before. A right token does not
/// reset the count (else a read token would buy an attacker fresh guesses); failures are
/// forgotten after ten minutes without one, and at most [`AuthFailures::ADDRESSES`] addresses
/// are remembered (the least recently seen go first), so many addresses cannot fill memory.
#[derive(Debug)]
pub struct AuthFailures {
    recent: Mutex<LruCache<AddressKey, Guesses>>,
}

#[derive(Debug)]
struct Guesses {
    failures: u32,
    last: Instant,
    /// Held while a token from this address is checked (and its refusal delayed).
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Guesses {
    fn new() -> Self {
        Guesses {
            failures: 0,
            last: Instant::now(),
            turn: Arc::default(),
        }
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        let most = NonZeroUsize::new(Self::ADDRESSES).expect("a bound above zero");
        Self {
            recent: Mutex::new(LruCache::new(most)),
        }
    }
}

impl AuthFailures {
    /// Failures are forgotten after this long without another.
    const MEMORY: Duration = Duration::from_secs(600);
    /// Addresses remembered at most.
    pub const ADDRESSES: usize = 65_536;

    /// Whether this address presented a wrong token in the last ten minutes. Only such an
    /// address has its tokens checked one at a time: the checks of every other run side by
    /// side (a browser's, a WebDAV client's parallel requests), and a burst of guesses made
    /// before its first refusal is bounded by its connections (`--max-connections-per-ip`).
    pub fn guessing(&self, ip: IpAddr) -> bool {
        let mut recent = self.recent.lock().expect("auth failures poisoned");
        recent
            .get(&AddressKey::of(ip))
            .is_some_and(|g| g.failures > 0 && g.last.elapsed() < Self::MEMORY)
    }

    /// Waits for this address's turn to have a token checked; hold the guard until the answer
    /// (and its delay) is over.
    pub async fn turn(&self, ip: IpAddr) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut recent = self.recent.lock().expect("auth failures poisoned");
            let g = recent.get_or_insert_mut(AddressKey::of(ip), Guesses::new);
            Arc::clone(&g.turn)
        };
        turn.lock_owned().await
    }

    /// Records a failure and returns how long to wait before answering it: nothing for the first
    /// two, then doubling from 250 ms up to 8 s.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut recent = self.recent.lock().expect("auth failures poisoned");
        let now = Instant::now();
        let g = recent.get_or_insert_mut(AddressKey::of(ip), Guesses::new);
        if now.duration_since(g.last) >= Self::MEMORY {
            g.failures = 0;
        }
        g.failures += 1;
        g.last = now;
        match g.failures {
            0..=2 => Duration::ZERO,
            n => Duration::from_millis(250 << (n - 3).min(5)),
        }
    }

    /// Addresses remembered now.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.recent.lock().expect("auth failures poisoned").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::sqlite::{admin_token_path, SqliteTokens};
    use crate::records::{NewToken, TokenSpec};

    /// Wrong tokens from more addresses than are remembered: memory stays within the bound, and
    /// the address seen last still has its count.
    #[test]
    fn wrong_tokens_from_many_addresses_are_remembered_within_a_bound() {
        let f = AuthFailures::default();
        let many = AuthFailures::ADDRESSES + 1000;
        for i in 0..many as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            f.failed(ip);
        }
        assert_eq!(f.remembered(), AuthFailures::ADDRESSES);
        let last = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + many as u32 - 1));
        f.failed(last);
        assert_eq!(
            f.failed(last),
            Duration::from_millis(250),
            "its third failure"
        );
    }

    #[test]
    fn repeated_failures_wait_longer_and_longer() {
        let f = AuthFailures::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let waits: Vec<_> = (0..10).map(|_| f.failed(ip)).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[2], Duration::from_millis(250));
        assert_eq!(waits[3], Duration::from_millis(500));
        assert_eq!(waits[9], Duration::from_millis(8000));
        // Nothing resets it but time: not a right token, not another port or /64 neighbour.
        let neighbour: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(f.failed(neighbour), Duration::from_millis(8000));
        assert_eq!(f.failed("10.0.0.2".parse().unwrap()), Duration::ZERO);
    }

    #[tokio::test]
    async fn one_address_has_one_guess_in_flight() {
        let f = AuthFailures::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let held = f.turn(a).await;
        let waiting = tokio::time::timeout(Duration::from_millis(20), f.turn(same_64)).await;
        assert!(
            waiting.is_err(),
            "a second guess from the same /64 waits its turn"
        );
        let _other = f.turn(other).await;
        drop(held);
        let _next = f.turn(same_64).await;
    }

    #[test]
    fn reading_writing_and_deleting_follow_roles_and_owners() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let spec = |role, label| TokenSpec {
            role,
            label,
            expires_ns: None,
            folder: None,
            quota: Default::default(),
            made_by: None,
            max_downloads: 0,
        };
        let NewToken { id: wid, secret: w } = tokens.create(spec(Role::Write, "w"), 0).unwrap();
        let r = tokens.create(spec(Role::Read, "r"), 0).unwrap().secret;
        let admin = std::fs::read_to_string(admin_token_path(dir.path())).unwrap();
        let caller = |t: Option<&str>| Caller {
            token: t.map(str::to_owned),
            grant: t.and_then(|t| tokens.check(t).unwrap()),
            from: None,
            owner_key: None,
            lock_tokens: Vec::new(),
            hidden: Arc::default(),
        };
        let by = |id: i64| Owner {
            token_id: Some(id),
            key_hash: None,
        };
        let anon = caller(None);
        assert!(anon.may_create(&tokens, false, "f").is_ok());
        assert!(anon.may_create(&tokens, true, "f").is_err());
        assert!(anon
            .may_change(&tokens, false, "f", Owner::default(), "deleting")
            .is_err());
        assert!(caller(Some(&r)).may_create(&tokens, false, "f").is_err());
        let writer = caller(Some(&w));
        assert!(writer
            .may_change(&tokens, false, "f", by(wid), "deleting")
            .is_ok());
        assert!(writer
            .may_change(&tokens, false, "f", by(wid + 100), "deleting")
            .is_err());
        assert!(writer
            .may_change(&tokens, false, "f", Owner::default(), "deleting")
            .is_err());
        let admin = caller(Some(admin.trim()));
        assert!(admin
            .may_change(&tokens, false, "f", by(12345), "deleting")
            .is_ok());
        assert!(admin
            .may_change(&tokens, true, "f", Owner::default(), "deleting")
            .is_err());
        // An owner key is its uploader's own, and nobody else's.
        let keyed = Caller {
            owner_key: Some(owner_key_hash("k")),
            ..caller(None)
        };
        let uploaded = Owner {
            token_id: None,
            key_hash: Some(owner_key_hash("k")),
        };
        assert!(keyed
            .may_change(&tokens, false, "f", uploaded, "deleting")
            .is_ok());
        assert!(anon
            .may_change(&tokens, false, "f", uploaded, "deleting")
            .is_err());
        assert!(caller(Some(&r))
            .may_change(&tokens, false, "f", uploaded, "deleting")
            .is_err());
        tokens.revoke(wid).unwrap();
        assert!(matches!(
            writer.may_create(&tokens, false, "f"),
            Err(HubError::Unauthorized(_))
        ));
    }

    #[test]
    fn a_token_held_to_a_folder_reaches_only_what_is_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let spec = |role, folder| TokenSpec {
            role,
            label: "",
            expires_ns: None,
            folder: Some(folder),
            quota: Default::default(),
            made_by: None,
            max_downloads: 0,
        };
        let held = |role| {
            let secret = tokens.create(spec(role, "c/acme"), 0).unwrap().secret;
            Caller {
                grant: tokens.check(&secret).unwrap(),
                token: Some(secret),
                ..Caller::default()
            }
        };
        let (writer, admin) = (held(Role::Write), held(Role::Admin));
        assert_eq!(writer.folder(), Some("c/acme"));
        for name in ["c/acme", "c/acme/", "c/acme/a.txt", "c/acme/x/y"] {
            assert!(
                writer.sees(name) && writer.must_reach(name).is_ok(),
                "{name}"
            );
        }
        for name in [
            "",
            "c",
            "c/acme2",
            "c/acme2/a",
            "c/acm",
            "d/c/acme/a",
            "a.txt",
        ] {
            assert!(!writer.sees(name), "{name}");
            assert!(matches!(
                writer.must_reach(name),
                Err(HubError::Forbidden(_))
            ));
        }
        // Listings: what lies on the way leads into the folder; the rest lists nothing.
        let listed = |prefix| writer.listing_prefix(prefix);
        assert_eq!(listed("").as_deref(), Some("c/acme/"));
        assert_eq!(listed("c/").as_deref(), Some("c/acme/"));
        assert_eq!(listed("c/ac").as_deref(), Some("c/acme/"));
        assert_eq!(listed("c/acme/x/").as_deref(), Some("c/acme/x/"));
        assert_eq!(listed("c/b/"), None);
        assert_eq!(listed("c/acme2/"), None);
        assert!(writer.on_the_way("") && writer.on_the_way("c") && writer.on_the_way("c/"));
        assert!(!writer.on_the_way("c/acme") && !writer.on_the_way("d"));
        // Writing: within its folder by its role; the folder itself is never moved or deleted.
        assert!(writer.may_create(&tokens, false, "c/acme/new.txt").is_ok());
        assert!(writer.may_create(&tokens, false, "c/new.txt").is_err());
        let any = Owner::default();
        assert!(admin
            .may_change(&tokens, false, "c/acme/f", any, "deleting")
            .is_ok());
        assert!(admin
            .may_change(&tokens, false, "c/acme", any, "deleting")
            .is_err());
        assert!(admin
            .may_change(&tokens, false, "c/other", any, "deleting")
            .is_err());
        assert!(admin
            .must_be_admin(&tokens, "listing partial uploads")
            .is_err());
        // A client's own uploads outside the folder are out of its token's reach too.
        let keyed = Caller {
            owner_key: Some(owner_key_hash("k")),
            ..writer.clone()
        };
        let mine = Owner {
            token_id: None,
            key_hash: Some(owner_key_hash("k")),
        };
        assert!(keyed
            .may_change(&tokens, false, "c/acme/f", mine, "deleting")
            .is_ok());
        assert!(keyed
            .may_change(&tokens, false, "elsewhere", mine, "deleting")
            .is_err());
    }

    #[test]
    fn an_upload_token_places_new_names_in_its_folder_and_reaches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (tokens, _) = SqliteTokens::open(dir.path()).unwrap();
        let spec = |role, made_by| TokenSpec {
            role,
            label: "",
            expires_ns: None,
            folder: Some("inbox"),
            quota: Default::default(),
            made_by,
            max_downloads: 0,
        };
        let maker = tokens.create(spec(Role::Write, None), 0).unwrap();
        let other = tokens.create(spec(Role::Write, None), 0).unwrap();
        let link = tokens
            .create(spec(Role::Upload, Some(maker.id)), 0)
            .unwrap();
        let caller = |secret: &str| Caller {
            grant: tokens.check(secret).unwrap(),
            token: Some(secret.to_owned()),
            ..Caller::default()
        };
        let up = caller(&link.secret);
        assert!(up.uploads_only());
        assert!(up.may_create(&tokens, false, "inbox/new.txt").is_ok());
        assert!(up.may_create(&tokens, false, "elsewhere.txt").is_err());
        assert!(up.must_place("inbox/new.txt").is_ok());
        assert!(up.must_place("other/new.txt").is_err());
        for name in ["inbox", "inbox/", "inbox/a.txt"] {
            assert!(!up.sees(name), "{name}");
            assert!(up.must_reach(name).is_err(), "{name}");
        }
        assert!(up.must_reach_inside("inbox/a.txt").is_err());
        assert_eq!(up.listing_prefix(""), None);
        assert_eq!(up.listing_prefix("inbox/"), None);
        assert!(up.sharer(&tokens).is_err());
        let rights = up.rights(&tokens, false, "inbox/").unwrap();
        assert!(rights.may_upload && !rights.admin && rights.owner.is_none());
        // What it sent is its maker's to change, and nobody else's but an admin's.
        let sent = Owner {
            token_id: Some(link.id),
            key_hash: None,
        };
        let change = |c: &Caller| c.may_change(&tokens, false, "inbox/a.txt", sent, "deleting");
        assert!(change(&up).is_err());
        assert!(change(&caller(&maker.secret)).is_ok());
        assert!(change(&caller(&other.secret)).is_err());
        assert_eq!(tokens.maker(link.id).unwrap(), Some(maker.id));
        assert_eq!(tokens.maker(maker.id).unwrap(), None);
    }
}
