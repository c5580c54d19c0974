//! File identity and pieces for the swarm (pure computation: no I/O).
//!
//! A file's id is the BLAKE3 hash of its contents. For transfer it is cut into pieces: aligned,
//! power-of-two ranges of at least 256 KiB (BitTorrent's usual size), doubled until a file has at
//! most [`MAX_PIECES`]. Each piece has a BLAKE3 *chaining value* (the hash of that subtree of the
//! BLAKE3 tree), so a peer can send the list of chaining values, the downloader checks that they
//! merge up to the file's id, and then checks every piece against its entry as it arrives. A
//! file of a single piece has no subtrees: its one "chaining value" is the file's hash itself.

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode,
};

use crate::Hash;

/// The smallest piece. Small pieces pass on sooner: a downloader can share a piece once it
/// holds all of it, so a crowd's first pieces spread, and its last ones arrive, in a quarter of
/// the time of 1 MiB pieces (`troca-swarm-sim`, 1,000 downloaders: 1.32× the fluid bound with
/// 1 MiB, 1.21× with 256 KiB, the slots and requests of today, no initial seeding; see
/// docs/PERFORMANCE.md).
pub const MIN_PIECE: u64 = 256 << 10;
/// Pieces double in size until a file has at most this many.
pub const MAX_PIECES: u64 = 4096;

/// How a file of `len` bytes is cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub len: u64,
    pub piece: u64,
}

/// Why a list of chaining values does not describe a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceError {
    #[error("expected {expected} piece hashes, got {got}")]
    WrongCount { expected: u64, got: usize },
    #[error("the piece hashes do not merge up to the file's id")]
    WrongRoot,
}

impl Layout {
    /// The standard layout for a file of `len` bytes.
    pub fn for_len(len: u64) -> Self {
        let mut piece = MIN_PIECE;
        while len.div_ceil(piece) > MAX_PIECES {
            piece *= 2;
        }
        Self { len, piece }
    }

    /// A layout with a given piece size (a power of two of at least 1024 bytes, BLAKE3's chunk).
    pub fn with_piece(len: u64, piece: u64) -> Self {
        assert!(
            piece.is_power_of_two() && piece >= 1024,
            "bad piece size {piece}"
        );
        Self { len, piece }
    }

    /// How many pieces (an empty file has one, empty).
    pub fn count(&self) -> u64 {
        self.len.div_ceil(self.piece).max(1)
    }

    /// Where piece `index` starts and how long it is.
    pub fn range(&self, index: u64) -> (u64, u64) {
        let start = index * self.piece;
        (start, self.piece.min(self.len.saturating_sub(start)))
    }

    /// The chaining value of piece `index`, whose bytes are `data`.
    pub fn piece_hash(&self, index: u64, data: &[u8]) -> Hash {
        let mut hasher = self.piece_hasher(index);
        hasher.update(data);
        self.finish_piece(&hasher)
    }

    /// A hasher to feed piece `index`'s bytes to in parts (for pieces read in chunks); finish it
    /// with [`Layout::finish_piece`].
    pub fn piece_hasher(&self, index: u64) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new();
        if self.count() > 1 {
            hasher.set_input_offset(self.range(index).0);
        }
        hasher
    }

    /// The chaining value of a piece fed whole to a [`Layout::piece_hasher`].
    pub fn finish_piece(&self, hasher: &blake3::Hasher) -> Hash {
        if self.count() == 1 {
            *hasher.finalize().as_bytes()
        } else {
            hasher.finalize_non_root()
        }
    }

    /// The file id that the pieces' chaining values merge up to.
    pub fn root(&self, pieces: &[Hash]) -> Result<Hash, PieceError> {
        if pieces.len() as u64 != self.count() {
            return Err(PieceError::WrongCount {
                expected: self.count(),
                got: pieces.len(),
            });
        }
        if pieces.len() == 1 {
            return Ok(pieces[0]);
        }
        Ok(self.merge(pieces, 0, self.len, true))
    }

    /// Checks that `pieces` describe the file `id`.
    pub fn verify(&self, id: &Hash, pieces: &[Hash]) -> Result<(), PieceError> {
        // blake3::Hash compares in constant time; it hardly matters here, but it costs nothing.
        if blake3::Hash::from_bytes(self.root(pieces)?) == blake3::Hash::from_bytes(*id) {
            Ok(())
        } else {
            Err(PieceError::WrongRoot)
        }
    }

    /// Merges the subtree of `len` bytes starting at piece `first`, as BLAKE3's tree does: the left
    /// subtree is the largest power of two of bytes below `len`, which is a whole number of
    /// pieces because pieces are aligned powers of two.
    fn merge(&self, pieces: &[Hash], first: usize, len: u64, root: bool) -> Hash {
        if len <= self.piece {
            return pieces[first];
        }
        let left_len = left_subtree_len(len);
        let left = self.merge(pieces, first, left_len, false);
        let right = self.merge(
            pieces,
            first + (left_len / self.piece) as usize,
            len - left_len,
            false,
        );
        if root {
            *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&left, &right, Mode::Hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new()
            .update(b"pieces")
            .finalize_xof()
            .fill(&mut v);
        v
    }

    fn pieces_of(layout: &Layout, bytes: &[u8]) -> Vec<Hash> {
        (0..layout.count())
            .map(|i| {
                let (start, len) = layout.range(i);
                layout.piece_hash(i, &bytes[start as usize..(start + len) as usize])
            })
            .collect()
    }

    #[test]
    fn pieces_merge_to_the_files_blake3_hash_at_every_edge() {
        let p = MIN_PIECE;
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            p - 1,
            p,
            p + 1,
            3 * p,
            3 * p + 1,
            5 * p + 1,
        ] {
            let bytes = data(len as usize);
            let layout = Layout::for_len(len);
            let pieces = pieces_of(&layout, &bytes);
            assert_eq!(
                layout.root(&pieces).unwrap(),
                *blake3::hash(&bytes).as_bytes(),
                "len {len}"
            );
            layout
                .verify(blake3::hash(&bytes).as_bytes(), &pieces)
                .unwrap();
        }
    }

    #[test]
    fn a_bad_piece_or_list_is_caught() {
        let bytes = data(3 * 1024 * 4 + 7);
        let layout = Layout::with_piece(bytes.len() as u64, 4096);
        let mut pieces = pieces_of(&layout, &bytes);
        let id = *blake3::hash(&bytes).as_bytes();
        pieces[1][0] ^= 1;
        assert_eq!(layout.verify(&id, &pieces), Err(PieceError::WrongRoot));
        pieces.pop();
        assert!(matches!(
            layout.verify(&id, &pieces),
            Err(PieceError::WrongCount { .. })
        ));
        // A corrupted piece's own hash no longer matches its entry.
        let good = pieces_of(&layout, &bytes);
        let mut bad = bytes[4096..8192].to_vec();
        bad[10] ^= 0xff;
        assert_ne!(layout.piece_hash(1, &bad), good[1]);
    }

    #[test]
    fn big_files_have_at_most_max_pieces_of_a_power_of_two() {
        for len in [
            0,
            1,
            MIN_PIECE * MAX_PIECES,
            MIN_PIECE * MAX_PIECES + 1,
            1 << 40,
        ] {
            let l = Layout::for_len(len);
            assert!(l.count() <= MAX_PIECES, "{len}: {}", l.count());
            assert!(l.piece.is_power_of_two() && l.piece >= MIN_PIECE);
        }
        assert_eq!(Layout::for_len(1 << 40).piece, 1 << 28);
    }

    proptest! {
        #[test]
        fn any_length_and_piece_size_merges_to_the_hash(len in 0usize..70_000, shift in 10u32..14) {
            let bytes = data(len);
            let layout = Layout::with_piece(len as u64, 1 << shift);
            let pieces = pieces_of(&layout, &bytes);
            prop_assert_eq!(layout.root(&pieces).unwrap(), *blake3::hash(&bytes).as_bytes());
        }
    }
}
