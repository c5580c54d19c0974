//! Operations on names that WebDAV asks for and the other faces may use too: what a name holds
//! ([`Hub::stat`]), the dead properties kept in the records ([`Hub::props`],
//! [`Hub::patch_props`]; for a listing, many names at once: [`Hub::props_of`]), and a file's
//! time ([`Hub::set_modified`]).

use crate::access::Caller;
use crate::error::HubError;
use crate::records::{DeadProp, PropChange, MAX_PROP_BYTES};
use crate::service::{blocking, Hub};
use crate::store::{parse, Kind};
use std::sync::Arc;
use troca_proto::Hash;

/// What a name holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub folder: bool,
    pub size: u64,
    pub modified_ns: i64,
    /// A file's BLAKE3 hash, when the hub knows it.
    pub blake3: Option<Hash>,
}

/// The most bytes of dead properties [`Hub::props_of`] reads at once.
pub const PROPS_AHEAD_BYTES: usize = 4 << 20;

/// The dead properties of a batch of names, read at once ([`Hub::props_of`]).
#[derive(Debug, Default)]
pub struct PropsAhead {
    /// The names answered (without a folder's `/`): those not in `props` have none.
    covered: std::collections::HashSet<String>,
    /// Those that have some; `None`: left out to keep within [`PROPS_AHEAD_BYTES`].
    props: std::collections::HashMap<String, Option<Vec<DeadProp>>>,
}

impl PropsAhead {
    /// The dead properties of `name`, when this batch holds them (`None`: ask by name).
    pub fn get(&self, name: &str) -> Option<Vec<DeadProp>> {
        let name = name.trim_end_matches('/');
        match self.props.get(name) {
            Some(props) => props.clone(),
            None => self.covered.contains(name).then(Vec::new),
        }
    }
}

impl Hub {
    /// What `name` holds (`""`: the whole share, a folder). A folder's time is the hub's start
    /// (a store keeps no time for folders). Looked up on the caller's thread, as a download
    /// opens its file: one lookup costs less than a hop to the blocking pool.
    /// A caller whose token is held to a folder sees the folders on the way to it as empty
    /// but for the next one on the way, and nothing else outside it.
    pub async fn stat(self: &Arc<Self>, caller: &Caller, name: &str) -> Result<Stat, HubError> {
        let name = name.trim_end_matches('/');
        let folder = Stat {
            folder: true,
            size: 0,
            modified_ns: self.started_ns(),
            blake3: None,
        };
        if name.is_empty() || caller.on_the_way(name) {
            return Ok(folder);
        }
        caller.must_reach(name)?;
        let remote = parse(name)?;
        // One lookup: `open` says `NotAFile` for a folder and only for a folder.
        match self.open_reached(&remote) {
            Ok(file) => {
                let blake3 = self.known_hash(&remote, &file);
                Ok(Stat {
                    folder: false,
                    size: file.version.size,
                    modified_ns: file.version.modified_ns,
                    blake3,
                })
            }
            Err(HubError::NotAFile(_)) => Ok(folder),
            Err(e) => Err(e),
        }
    }

    /// Whether `name` is a link (on a store that has them) rather than what it reaches: what a
    /// delete or a move takes as itself, never walking into the folder it may lead to.
    pub fn is_link(&self, caller: &Caller, name: &str) -> Result<bool, HubError> {
        let name = name.trim_end_matches('/');
        if !self.store().has_links() || name.is_empty() || caller.on_the_way(name) {
            return Ok(false);
        }
        caller.must_reach(name)?;
        // One lookup of the last component, like a stat: no hop to the blocking pool.
        Ok(self.store().kind(&parse(name)?)? == Some(Kind::Other))
    }

    /// The dead properties of `name`.
    pub async fn props(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
    ) -> Result<Vec<DeadProp>, HubError> {
        // Nearly always none at all: then no hop to the blocking pool either.
        if !self.owners().may_have_props() || caller.on_the_way(name) {
            return Ok(Vec::new());
        }
        caller.must_reach(name)?;
        let (hub, name) = (Arc::clone(self), name.trim_end_matches('/').to_owned());
        blocking(move || hub.owners().props(&name)).await
    }

    /// The dead properties of each of `names`, as [`Hub::props`] gives them, read at once
    /// (two queries on PostgreSQL, where a query per name is what a listing of many would
    /// cost), within [`PROPS_AHEAD_BYTES`]. Names the caller may not reach are left to be asked
    /// for by name, which refuses them.
    pub async fn props_of(
        self: &Arc<Self>,
        caller: &Caller,
        names: &[String],
    ) -> Result<PropsAhead, HubError> {
        let mut ahead = PropsAhead::default();
        let bare = |n: &&String| n.trim_end_matches('/').to_owned();
        // A folder on the way to a token's folder has none, as `props` says.
        let (way, rest): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|n| caller.on_the_way(n));
        ahead.covered = way.iter().map(bare).collect();
        let reached = rest.into_iter().filter(|n| caller.must_reach(n).is_ok());
        let asked: Vec<String> = reached.map(|n| bare(&n)).collect();
        if self.owners().may_have_props() && !asked.is_empty() {
            let (hub, asked) = (Arc::clone(self), asked.clone());
            let found = blocking(move || hub.owners().props_of(&asked, PROPS_AHEAD_BYTES)).await?;
            ahead.props = found.into_iter().map(|f| (f.name, f.props)).collect();
        }
        ahead.covered.extend(asked);
        Ok(ahead)
    }

    /// Sets and removes dead properties of `name` in the order given, all or nothing: by
    /// whoever may change it (a folder: whoever may upload), not while someone else holds a
    /// lock on it, each at most [`MAX_PROP_BYTES`] of XML.
    pub async fn patch_props(
        self: &Arc<Self>,
        name: &str,
        changes: Vec<PropChange>,
        caller: &Caller,
    ) -> Result<(), HubError> {
        let too_large = changes.iter().find_map(|c| match c {
            PropChange::Set(p) if p.xml.len() + p.key.len() > MAX_PROP_BYTES => Some(p),
            _ => None,
        });
        if let Some(p) = too_large {
            return Err(HubError::TooLarge(format!(
                "property {} is larger than {MAX_PROP_BYTES} bytes",
                p.key
            )));
        }
        let name = name.trim_end_matches('/').to_owned();
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || match hub.may_change(&caller, &name)? {
            Some(Kind::File | Kind::Folder) => hub.owners().patch_props(&name, &changes),
            _ => Err(HubError::NotFound(name)),
        })
        .await
    }

    /// Gives file `name` the modification time `modified_ns` (a WebDAV client keeping its
    /// source's time): by whoever may change it, not while someone else holds a lock on it.
    /// A folder keeps no time: `NotAFile`. What was known of the file's hash stays known.
    pub async fn set_modified(
        self: &Arc<Self>,
        name: &str,
        modified_ns: i64,
        caller: &Caller,
    ) -> Result<Stat, HubError> {
        if modified_ns <= 0 {
            return Err(HubError::BadRequest("a time before 1970".into()));
        }
        let remote = parse(name.trim_end_matches('/'))?;
        caller.must_reach(remote.as_str())?;
        let (hub, caller) = (Arc::clone(self), caller.clone());
        blocking(move || {
            match hub.may_change(&caller, remote.as_str())? {
                Some(Kind::File) => {}
                Some(_) => return Err(HubError::NotAFile(remote.to_string())),
                None => return Err(HubError::NotFound(remote.to_string())),
            }
            let retimed = hub.store().set_modified(&remote, modified_ns)?;
            hub.cache().invalidate(remote.as_str());
            hub.owners().retime(remote.as_str(), retimed)?;
            // Read from the very file retimed: its hash, if known, is the same.
            let known = hub.hashes().get(remote.as_str(), retimed.before);
            if let Some(hash) = known {
                hub.hashes().insert(remote.as_str(), retimed.after, hash);
            }
            let version = retimed.after;
            Ok(Stat {
                folder: false,
                size: version.size,
                modified_ns: version.modified_ns,
                blake3: known,
            })
        })
        .await
    }

    /// May `caller` change what `name` holds (its properties, its time)? The rights of
    /// uploading there, no one else's lock on it, and for a file the right to replace it. Says
    /// what it holds (the whole share, `""`, is a folder). Blocking.
    fn may_change(&self, caller: &Caller, name: &str) -> Result<Option<Kind>, HubError> {
        caller.may_create(self.tokens(), self.config().read_only, name)?;
        self.check_lock(caller, name, false)?;
        if name.is_empty() {
            return Ok(Some(Kind::Folder));
        }
        let remote = parse(name)?;
        let kind = self.store().kind(&remote)?;
        if kind == Some(Kind::File) {
            self.check_change(caller, &remote, "changing")?;
        }
        Ok(kind)
    }
}
