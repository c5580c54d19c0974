//! Finding a file on the swarm by what a person types: a full id, the start of one (as
//! `troca swarm ls` prints it), or a name.

use crate::download::Wanted;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use troca_proto::tracker::Listed;
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

/// Finds the file `what` names, with every peer that has it.
pub async fn find(
    tracker: &mut TrackerClient,
    what: &str,
) -> Result<(Wanted, Vec<SocketAddr>), LookupError> {
    let is_hex = what.len() >= MIN_ID_PREFIX && what.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex {
        let lower = what.to_ascii_lowercase();
        let found = if let Ok(id) = blake3::Hash::from_hex(&lower) {
            tracker.list("", Some(*id.as_bytes())).await?
        } else {
            let all = tracker.list("", None).await?;
            all.into_iter()
                .filter(|l| hex(l).starts_with(&lower))
                .collect()
        };
        if !found.is_empty() {
            return choose(what, found);
        }
    }
    let found: Vec<Listed> = tracker
        .list(what, None)
        .await?
        .into_iter()
        .filter(|l| l.file.name == what || l.file.name.ends_with(&format!("/{what}")))
        .collect();
    choose(what, found)
}

fn hex(l: &Listed) -> String {
    blake3::Hash::from_bytes(l.file.id).to_hex().to_string()
}

/// One file (one id) from the matches, or an error naming them all.
fn choose(what: &str, found: Vec<Listed>) -> Result<(Wanted, Vec<SocketAddr>), LookupError> {
    let mut by_id: BTreeMap<String, Listed> = BTreeMap::new();
    for l in found {
        match by_id.get_mut(&hex(&l)) {
            Some(seen) => seen.peers.extend(l.peers),
            None => {
                by_id.insert(hex(&l), l);
            }
        }
    }
    match by_id.len() {
        0 => Err(LookupError::NotFound(what.to_owned())),
        1 => {
            let (_, mut l) = by_id.pop_first().expect("one");
            l.peers.sort();
            l.peers.dedup();
            Ok((
                Wanted {
                    id: l.file.id,
                    size: l.file.size,
                    name: l.file.name,
                },
                l.peers,
            ))
        }
        _ => Err(LookupError::Ambiguous {
            what: what.to_owned(),
            choices: by_id
                .iter()
                .map(|(id, l)| format!("  {id}  {}  ({} bytes)", l.file.name, l.file.size))
                .collect::<Vec<_>>()
                .join("\n"),
        }),
    }
}
