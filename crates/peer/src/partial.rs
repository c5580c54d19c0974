//! Files being downloaded, shared while they download: each piece is served as soon as it has
//! been verified and written. The download adds a [`Partial`] when it knows the piece hashes
//! and marks each piece it stores; the peer's server answers `Pieces`, `GetPiece` and `Holding`
//! from it, and tells every downloader that asked (`Holding`) of each new piece (`Have`).

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use troca_proto::pieces::Layout;
use troca_proto::Hash;

/// How many new pieces a slow listener may fall behind by before it misses some (it then
/// asks for the bitfield again).
const NEWS: usize = 1024;

/// A file being downloaded here.
#[derive(Debug)]
pub struct Partial {
    pub id: Hash,
    pub name: String,
    pub layout: Layout,
    pub hashes: Arc<[Hash]>,
    /// The part file, for reading pieces that are held.
    pub file: File,
    held: Mutex<Vec<bool>>,
    news: broadcast::Sender<u32>,
}

impl Partial {
    pub fn new(
        id: Hash,
        name: String,
        layout: Layout,
        hashes: Arc<[Hash]>,
        file: File,
        held: Vec<bool>,
    ) -> Self {
        Self {
            id,
            name,
            layout,
            hashes,
            file,
            held: Mutex::new(held),
            news: broadcast::channel(NEWS).0,
        }
    }

    /// The pieces held now, and a receiver of the ones held from now on (nothing is missed in
    /// between: both are taken under one lock).
    pub fn subscribe(&self) -> (Vec<bool>, broadcast::Receiver<u32>) {
        let held = self.held.lock().expect("not poisoned");
        (held.clone(), self.news.subscribe())
    }

    pub fn holds(&self, index: u32) -> bool {
        self.held
            .lock()
            .expect("not poisoned")
            .get(index as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Piece `index` is verified and written: it may be served, and listeners hear of it.
    pub fn add(&self, index: u32) {
        let mut held = self.held.lock().expect("not poisoned");
        if let Some(h) = held.get_mut(index as usize) {
            if !*h {
                *h = true;
                let _ = self.news.send(index);
            }
        }
    }
}

/// The files this peer is downloading and shares meanwhile.
#[derive(Debug, Default)]
pub struct Partials(Mutex<HashMap<Hash, Arc<Partial>>>);

impl Partials {
    pub fn get(&self, id: &Hash) -> Option<Arc<Partial>> {
        self.0.lock().expect("not poisoned").get(id).cloned()
    }

    pub fn insert(&self, partial: Arc<Partial>) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(partial.id, partial);
    }

    pub fn remove(&self, id: &Hash) {
        self.0.lock().expect("not poisoned").remove(id);
    }

    /// The files being downloaded, as the tracker is told of them.
    pub fn infos(&self) -> Vec<troca_proto::tracker::FileInfo> {
        self.0
            .lock()
            .expect("not poisoned")
            .values()
            .map(|p| troca_proto::tracker::FileInfo {
                id: p.id,
                size: p.layout.len,
                name: p.name.clone(),
            })
            .collect()
    }
}
