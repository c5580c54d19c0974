//! Finding a file on the swarm by what a person types: a full id, the start of one (as
//! `troca swarm ls` prints it), or a name.

use crate::download::Wanted;
use std::collections::BTreeMap;
use troca_proto::tracker::{Listed, PeerAddr};
use troca_proto::Hash;
use troca_tracker::client::{TrackerClient, TrackerError};

/// Why a file could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no file on the swarm matches {0:?}")]
    NotFound(String),
    #[error("{what:?} matches several different files; give one of their ids:\n{choices}")]
    Ambiguous { what: String, choices: String },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
}

/// The shortest id prefix accepted (what `troca swarm ls` shows is 16).
pub const MIN_ID_PREFIX: usize = 8;

/// A file found on the swarm: its id and name, and the sizes its holders claim, each with the
/// peers that claim it, most claimed first. Only the true size verifies against the id (the id
/// commits to the contents); the others are a liar's, tried only if the first fails.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: Hash,
    pub name: String,
    pub claims: Vec<Claim>,
}

/// One size claimed for a file, and the peers that claim it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub size: u64,
    pub peers: Vec<PeerAddr>,
}

impl Found {
    /// The download of the most claimed size.
    pub fn wanted(&self) -> Wanted {
        self.wanted_as(&self.claims[0])
    }

    pub fn wanted_as(&self, claim: &Claim) -> Wanted {
        Wanted {
            id: self.id,
            size: claim.size,
            name: self.name.clone(),
        }
    }
}

/// Finds the file `what` names, with every peer that has it.
pub async fn find(tracker: &mut TrackerClient, what: &str) -> Result<Found, LookupError> {
    let is_hex = what.len() >= MIN_ID_PREFIX && what.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let lower = what.to_ascii_lowercase();
        let found = if let Ok(id) = blake3::Hash::from_hex(&lower) {
            tracker.list("", Some(*id.as_bytes())).await?
        } else {
            let all = tracker.list("", None).await?;
            all.into_iter()
                .filter(|l| id_hex(l).starts_with(&lower))
                .collect()
        };
        if !found.is_empty() {
            return choose(what, found);
        }
    }
    let found = tracker.list_named(what).await?;
    choose(what, found)
}

fn id_hex(l: &Listed) -> String {
    troca_proto::hex(&l.file.id)
}

/// One file (one id) from the matches, or an error naming them all.
fn choose(what: &str, found: Vec<Listed>) -> Result<Found, LookupError> {
    let mut by_id: BTreeMap<String, Vec<Listed>> = BTreeMap::new();
    for l in found {
        by_id.entry(id_hex(&l)).or_default().push(l);
    }
    match by_id.len() {
        0 => Err(LookupError::NotFound(what.to_owned())),
        1 => {
            let (_, listed) = by_id.pop_first().expect("one");
            Ok(claims(listed))
        }
        _ => Err(LookupError::Ambiguous {
            what: what.to_owned(),
            choices: by_id
                .iter()
                .map(|(id, l)| format!("  {id}  {}  ({} bytes)", l[0].file.name, l[0].file.size))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}

/// The claims of one id, merged by size, most peers first; the name is the one the most
/// claimed size's holders give.
fn claims(listed: Vec<Listed>) -> Found {
    let mut by_size: BTreeMap<u64, (String, Vec<PeerAddr>)> = BTreeMap::new();
    let id = listed[0].file.id;
    for l in listed {
        let entry = by_size
            .entry(l.file.size)
            .or_insert_with(|| (l.file.name, Vec::new()));
        entry.1.extend(l.peers);
    }
    let mut claims: Vec<(String, Claim)> = by_size
        .into_iter()
        .map(|(size, (name, mut peers))| {
            peers.sort();
            peers.dedup();
            (name, Claim { size, peers })
        })
        .collect();
    claims.sort_by_key(|c| std::cmp::Reverse(c.1.peers.len()));
    Found {
        id,
        name: claims[0].0.clone(),
        claims: claims.into_iter().map(|(_, c)| c).collect(),
    }
}
