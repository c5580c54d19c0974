//! Which piece to ask which peer for: the download's piece scheduler, with no sockets and no
//! clock, so tests and the simulator (`troca-swarm-sim`) drive the very code downloads run.
//!
//! - A peer is asked only for pieces it has said it holds (a full copy holds all; a partial
//!   holder says which in its bitfield, then one `Have` per new piece).
//! - **Rarest first** among the peers known: of the missing pieces a peer holds, the one the
//!   fewest known peers hold, at random among equals, so downloaders spread over different
//!   pieces and each soon has something the others lack.
//! - **Random first pieces**: until it holds [`RANDOM_FIRST`] pieces, a downloader picks at
//!   random among what the peer holds (rarity says little yet, and it needs something to trade
//!   quickly).
//! - **End game**: once every missing piece is asked of someone, a peer with nothing fresh to
//!   give doubles up on those it holds, the least-asked first (at most [`MAX_COPIES`] askers
//!   each), so the end does not wait on the slowest peer. Not before: a partial holder with
//!   nothing new is left alone rather than made to send a second copy of a piece on its way.
//! - A piece a peer sent corrupted is never asked of it again; a peer that leaves gives its
//!   pieces in flight back.
//! - **Deferred pieces**: a seeder spreading a new file sends each piece once before any twice
//!   and answers a request for one already out in the crowd `Deferred` (see
//!   [`crate::spread`]). Such a piece is not asked of that peer again while the download has
//!   anything else to do; only when nothing is in flight anywhere and nothing else may be
//!   asked are the deferrals forgotten, and the peer (which defers a piece once a connection)
//!   sends it. So a deferral never stalls a download, however the seeder counts.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// Pieces picked at random (not rarest first) before the downloader holds this many.
pub const RANDOM_FIRST: usize = 4;
/// In the end game a piece is asked of at most this many peers at once.
pub const MAX_COPIES: u8 = 3;

/// A peer as the scheduler knows it: an index the caller chooses.
pub type PeerId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceState {
    Missing,
    /// Asked of this many peers.
    Flight(u8),
    Done,
}

/// A set of piece indexes, 64 to a word, so a pick looks at the pieces a peer can give a word
/// at a time rather than one by one (a file has up to 4,096 pieces, and a crowd picks often).
#[derive(Debug, Clone, Default)]
struct Bits(Vec<u64>);

impl Bits {
    fn from_bools(b: &[bool]) -> Self {
        let mut words = vec![0u64; b.len().div_ceil(64)];
        for (i, _) in b.iter().enumerate().filter(|(_, &x)| x) {
            words[i / 64] |= 1 << (i % 64);
        }
        Self(words)
    }

    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        if on {
            self.0[i / 64] |= 1 << (i % 64);
        } else {
            self.0[i / 64] &= !(1 << (i % 64));
        }
    }

    fn any(&self) -> bool {
        self.0.iter().any(|&w| w != 0)
    }
}

/// What the scheduler knows of one peer.
#[derive(Debug, Default)]
struct Peer {
    /// Which pieces it holds (`None`: all of them, a full copy).
    has: Option<Bits>,
    /// Pieces asked of it and not answered yet.
    in_flight: HashSet<u32>,
    /// Pieces it sent corrupted.
    avoid: HashSet<u32>,
    /// Pieces it deferred (it sends them to others first).
    deferred: HashSet<u32>,
}

impl Peer {
    fn holds(&self, index: usize) -> bool {
        self.has.as_ref().is_none_or(|h| h.get(index))
    }

    /// Which of the pieces in word `k` of a set it holds.
    fn word(&self, k: usize) -> u64 {
        self.has.as_ref().map_or(u64::MAX, |h| h.0[k])
    }

    /// Whether `index` may not be asked of it now (it sent it corrupted, or deferred it).
    fn skips(&self, index: usize) -> bool {
        let i = index as u32;
        self.avoid.contains(&i) || self.deferred.contains(&i)
    }

    /// Whether any piece is to be skipped (else a pick may count a word at a time).
    fn skips_any(&self) -> bool {
        !self.avoid.is_empty() || !self.deferred.is_empty()
    }
}

/// The state of one download's pieces and of the peers it takes them from.
#[derive(Debug)]
pub struct Scheduler {
    state: Vec<PieceState>,
    /// The pieces in state `Missing` (asked of nobody, not done), kept beside `state`.
    unasked: Bits,
    /// How many known peers hold each piece.
    holders: Vec<u32>,
    peers: HashMap<PeerId, Peer>,
    missing: usize,
    done: usize,
    /// Deferrals remembered, over every peer.
    deferrals: usize,
    rng: SplitMix,
}

/// Why a bitfield or a `Have` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a bitfield of {got} pieces for a file of {want}")]
    WrongLength { got: usize, want: usize },
    #[error("piece {0} does not exist")]
    NoSuchPiece(u32),
    #[error("peer {0} is not known")]
    UnknownPeer(PeerId),
}

impl Scheduler {
    /// A download of `held.len()` pieces, of which those `true` are already here. `seed`
    /// drives the random choices (tests give a fixed one).
    pub fn new(held: Vec<bool>, seed: u64) -> Self {
        let missing = held.iter().filter(|&&h| !h).count();
        let needed: Vec<bool> = held.iter().map(|&h| !h).collect();
        Self {
            unasked: Bits::from_bools(&needed),
            holders: vec![0; held.len()],
            done: held.len() - missing,
            state: held
                .into_iter()
                .map(|h| {
                    if h {
                        PieceState::Done
                    } else {
                        PieceState::Missing
                    }
                })
                .collect(),
            peers: HashMap::default(),
            missing,
            deferrals: 0,
            rng: SplitMix(seed),
        }
    }

    /// How many pieces the file has.
    pub fn count(&self) -> usize {
        self.state.len()
    }

    /// Pieces not done yet.
    pub fn missing(&self) -> usize {
        self.missing
    }

    pub fn is_done(&self, index: u32) -> bool {
        self.state.get(index as usize) == Some(&PieceState::Done)
    }

    /// Which pieces are done, as a bitfield for other peers.
    pub fn held(&self) -> Vec<bool> {
        self.state.iter().map(|s| *s == PieceState::Done).collect()
    }

    /// Adds a peer: `has` says which pieces it holds (`None`: a full copy).
    pub fn add_peer(&mut self, peer: PeerId, has: Option<Vec<bool>>) -> Result<(), Refusal> {
        if let Some(h) = &has {
            if h.len() != self.state.len() {
                return Err(Refusal::WrongLength {
                    got: h.len(),
                    want: self.state.len(),
                });
            }
        }
        self.remove_peer(peer);
        for (i, n) in self.holders.iter_mut().enumerate() {
            if has.as_ref().is_none_or(|h| h[i]) {
                *n += 1;
            }
        }
        self.peers.insert(
            peer,
            Peer {
                has: has.as_deref().map(Bits::from_bools),
                ..Peer::default()
            },
        );
        Ok(())
    }

    /// A peer says it now holds piece `index`.
    pub fn have(&mut self, peer: PeerId, index: u32) -> Result<(), Refusal> {
        let i = index as usize;
        if i >= self.state.len() {
            return Err(Refusal::NoSuchPiece(index));
        }
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(Refusal::UnknownPeer(peer))?;
        if let Some(has) = &mut p.has {
            if !has.get(i) {
                has.set(i, true);
                self.holders[i] += 1;
            }
        }
        Ok(())
    }

    /// A peer left (or was dropped): its pieces in flight go back.
    pub fn remove_peer(&mut self, peer: PeerId) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.deferrals -= p.deferred.len();
        for (i, n) in self.holders.iter_mut().enumerate() {
            if p.holds(i) {
                *n -= 1;
            }
        }
        for index in p.in_flight {
            self.unflight(index);
        }
    }

    /// Whether `peer` holds any piece this download still needs.
    pub fn wants_from(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| {
            (0..self.state.len()).any(|i| {
                self.state[i] != PieceState::Done && p.holds(i) && !p.avoid.contains(&(i as u32))
            })
        })
    }

    /// Pieces asked of `peer` and not answered.
    pub fn in_flight(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.in_flight.len())
    }

    /// Whether any piece is asked of anyone.
    pub fn any_in_flight(&self) -> bool {
        self.state
            .iter()
            .any(|s| matches!(s, PieceState::Flight(_)))
    }

    /// The next piece to ask `peer` for, marked as asked; `None` if it holds nothing needed
    /// that may be asked of it now.
    pub fn pick(&mut self, peer: PeerId) -> Option<u32> {
        let picked = self.pick_now(peer);
        if picked.is_some() || self.deferrals == 0 || self.any_in_flight() {
            return picked;
        }
        // Nothing in flight anywhere, and nothing but deferred pieces left to ask: the
        // deferrals are forgotten (a peer defers a piece once a connection, so it sends them).
        for p in self.peers.values_mut() {
            p.deferred.clear();
        }
        self.deferrals = 0;
        self.pick_now(peer)
    }

    fn pick_now(&mut self, peer: PeerId) -> Option<u32> {
        let p = self.peers.get(&peer)?;
        let fresh = self.fresh_count(p);
        let chosen = if fresh == 0 {
            if self.unasked.any() {
                // Others hold pieces nobody was asked for yet: no copies before the end game.
                return None;
            }
            self.end_game(p)?
        } else if self.done < RANDOM_FIRST {
            let k = self.rng.below(fresh);
            self.fresh(p).nth(k)?
        } else {
            // The fewest holders, and how many pieces have that few, in one pass.
            let (rarest, equals) =
                self.fresh(p)
                    .fold((u32::MAX, 0), |(least, n), i| match self.holders[i] {
                        h if h < least => (h, 1),
                        h if h == least => (least, n + 1),
                        _ => (least, n),
                    });
            let k = self.rng.below(equals);
            self.fresh(p)
                .filter(|&i| self.holders[i] == rarest)
                .nth(k)?
        };
        self.state[chosen] = match self.state[chosen] {
            PieceState::Flight(n) => PieceState::Flight(n + 1),
            _ => PieceState::Flight(1),
        };
        self.unasked.set(chosen, false);
        let first_ask = self
            .peers
            .get_mut(&peer)
            .expect("looked up above")
            .in_flight
            .insert(chosen as u32);
        debug_assert!(first_ask, "asked twice");
        Some(chosen as u32)
    }

    /// The pieces asked of nobody that `p` holds and may be asked for, in order. (None of them
    /// is in `p`'s flight: a piece in flight is not `Missing`.)
    fn fresh<'a>(&'a self, p: &'a Peer) -> impl Iterator<Item = usize> + 'a {
        self.unasked
            .0
            .iter()
            .enumerate()
            .flat_map(move |(k, &w)| {
                let mut w = w & p.word(k);
                std::iter::from_fn(move || {
                    let bit = w.trailing_zeros() as usize;
                    w &= w.wrapping_sub(1);
                    (bit < 64).then_some(k * 64 + bit)
                })
            })
            .filter(move |&i| !p.skips_any() || !p.skips(i))
    }

    /// How many pieces `fresh` gives, a word at a time when no piece is to be skipped.
    fn fresh_count(&self, p: &Peer) -> usize {
        if p.skips_any() {
            return self.fresh(p).count();
        }
        let words = self.unasked.0.iter().enumerate();
        words
            .map(|(k, &w)| (w & p.word(k)).count_ones() as usize)
            .sum()
    }

    /// End game: the least-asked piece `p` holds that is in flight elsewhere.
    fn end_game(&self, p: &Peer) -> Option<usize> {
        let usable = |i: usize| p.holds(i) && !p.skips(i) && !p.in_flight.contains(&(i as u32));
        (0..self.state.len())
            .filter(|&i| usable(i))
            .filter_map(|i| match self.state[i] {
                PieceState::Flight(n) if n < MAX_COPIES => Some((n, i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
    }

    fn unflight(&mut self, index: u32) {
        let i = index as usize;
        if let PieceState::Flight(n) = self.state[i] {
            self.state[i] = if n > 1 {
                PieceState::Flight(n - 1)
            } else {
                self.unasked.set(i, true);
                PieceState::Missing
            };
        }
    }

    /// A request to `peer` for `index` ended without a good piece (the peer stalled, or the
    /// copy was dropped): the piece may be asked again.
    pub fn release(&mut self, peer: PeerId, index: u32) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.in_flight.remove(&index) {
                self.unflight(index);
            }
        }
    }

    /// `peer` deferred `index` (it sends it to others first): asked of others, and not of it
    /// again while anything else may be asked (see [`Scheduler::pick`]).
    pub fn defer(&mut self, peer: PeerId, index: u32) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.deferred.insert(index) {
                self.deferrals += 1;
            }
        }
        self.release(peer, index);
    }

    /// `peer` sent `index` corrupted: never asked of it again.
    pub fn corrupt(&mut self, peer: PeerId, index: u32) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.avoid.insert(index);
        }
        self.release(peer, index);
    }

    /// `peer`'s copy of `index` verified and is stored. Returns whether it was the first
    /// (another copy may have got there first in the end game).
    pub fn complete(&mut self, peer: PeerId, index: u32) -> bool {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.in_flight.remove(&index);
        }
        let i = index as usize;
        if self.state[i] == PieceState::Done {
            return false;
        }
        self.state[i] = PieceState::Done;
        self.unasked.set(i, false);
        self.missing -= 1;
        self.done += 1;
        true
    }
}

/// SplitMix64: a small, fast generator for choices that need spreading, not secrecy.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(s: &str) -> Vec<bool> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn a_peer_is_asked_only_for_pieces_it_holds() {
        let mut s = Scheduler::new(vec![false; 4], 1);
        s.add_peer(0, Some(bits("0100"))).unwrap();
        assert_eq!(s.pick(0), Some(1));
        assert_eq!(s.pick(0), None, "piece 1 is its only one, and it is asked");
        s.have(0, 3).unwrap();
        assert_eq!(s.pick(0), Some(3));
        assert!(s.have(0, 9).is_err(), "no such piece");
        assert!(
            s.add_peer(1, Some(bits("01"))).is_err(),
            "a bitfield of the wrong length"
        );
    }

    #[test]
    fn the_rarest_piece_goes_first_once_a_few_are_held() {
        // Four pieces already here: past the random start.
        let mut held = vec![true; RANDOM_FIRST];
        held.extend([false; 3]);
        let mut s = Scheduler::new(held, 7);
        let n = RANDOM_FIRST;
        s.add_peer(0, None).unwrap(); // holds all
        let mut b = vec![false; n + 3];
        b[n] = true;
        b[n + 1] = true;
        s.add_peer(1, Some(b)).unwrap();
        // Piece n+2 is held by one peer only: the seeder is asked for it first.
        assert_eq!(s.pick(0), Some((n + 2) as u32));
    }

    #[test]
    fn the_end_game_doubles_up_and_a_leaving_peer_gives_its_pieces_back() {
        let mut s = Scheduler::new(vec![false; 2], 3);
        s.add_peer(0, None).unwrap();
        s.add_peer(1, None).unwrap();
        let a = s.pick(0).unwrap();
        let b = s.pick(0).unwrap();
        assert_ne!(a, b);
        // Peer 1 finds nothing fresh: it doubles up.
        let c = s.pick(1).unwrap();
        assert!(c == a || c == b);
        let d = s.pick(1).unwrap();
        assert_ne!(c, d);
        assert_eq!(s.pick(1), None, "never the same piece twice from one peer");
        s.remove_peer(0);
        assert!(s.any_in_flight(), "peer 1 still has both");
        assert!(s.complete(1, a));
        assert!(!s.complete(1, a), "a second copy is not news");
        assert_eq!(s.missing(), 1);
    }

    #[test]
    fn no_copies_before_every_missing_piece_is_asked() {
        let mut s = Scheduler::new(vec![false; 2], 5);
        s.add_peer(0, Some(bits("10"))).unwrap();
        s.add_peer(1, None).unwrap();
        assert_eq!(s.pick(0), Some(0));
        // Piece 1 is asked of nobody yet: peer 1 gets it, not a second copy of piece 0.
        assert_eq!(s.pick(1), Some(1));
        // Now every missing piece is asked: peer 1 may double up on piece 0.
        assert_eq!(s.pick(1), Some(0));
        // A peer holding only piece 0, asked of another already, while piece 1 is unasked:
        // it gets nothing rather than a copy.
        let mut s = Scheduler::new(vec![false; 2], 5);
        s.add_peer(0, Some(bits("10"))).unwrap();
        s.add_peer(1, Some(bits("11"))).unwrap();
        assert_eq!(s.pick(0), Some(0));
        s.remove_peer(1);
        s.add_peer(2, Some(bits("10"))).unwrap();
        assert_eq!(
            s.pick(2),
            None,
            "piece 1 is still unasked: no second copy of 0 yet"
        );
    }

    #[test]
    fn a_deferred_piece_waits_until_nothing_else_may_be_asked() {
        let mut s = Scheduler::new(vec![false; 2], 9);
        s.add_peer(0, None).unwrap();
        let a = s.pick(0).unwrap();
        s.defer(0, a);
        let b = s.pick(0).unwrap();
        assert_ne!(a, b, "the seeder is asked for something else at once");
        assert_eq!(s.pick(0), None, "{a} is deferred there while {b} is coming");
        // Another peer that holds it is asked for it.
        s.add_peer(1, Some(vec![a == 0, a == 1])).unwrap();
        assert_eq!(s.pick(1), Some(a));
        s.release(1, a);
        assert!(s.complete(0, b));
        // Nothing in flight, nothing else to ask: the deferral is forgotten.
        assert_eq!(s.pick(0), Some(a));
        assert!(s.complete(0, a));
        assert_eq!(s.missing(), 0);
    }

    #[test]
    fn a_corrupted_piece_is_asked_of_others() {
        let mut s = Scheduler::new(vec![false; 1], 3);
        s.add_peer(0, None).unwrap();
        s.add_peer(1, None).unwrap();
        assert_eq!(s.pick(0), Some(0));
        s.corrupt(0, 0);
        assert_eq!(s.pick(0), None);
        assert!(!s.wants_from(0));
        assert_eq!(s.pick(1), Some(0));
    }

    proptest! {
        /// Whatever happens, no peer is asked for a piece it lacks or twice for one piece, no
        /// piece has more than MAX_COPIES askers, and completing what is picked finishes.
        #[test]
        fn random_swarms_keep_the_rules(
            seed in any::<u64>(),
            count in 1usize..40,
            peers in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 40), 1..6),
            steps in proptest::collection::vec((0usize..6, 0u8..6, 0u32..40), 0..300),
        ) {
            let mut s = Scheduler::new(vec![false; count], seed);
            let mut has: Vec<Vec<bool>> = Vec::new();
            for (id, p) in peers.iter().enumerate() {
                let mut h = p[..count].to_vec();
                // Peer 0 is a full copy, so the download can always finish.
                if id == 0 { h = vec![true; count]; }
                s.add_peer(id, Some(h.clone())).unwrap();
                has.push(h);
            }
            let mut asked: Vec<HashSet<u32>> = vec![HashSet::default(); has.len()];
            let mut deferred: Vec<HashSet<u32>> = vec![HashSet::default(); has.len()];
            for (peer, action, index) in steps {
                let peer = peer % has.len();
                match action {
                    0 => {
                        // Deferrals may be forgotten only by a pick with nothing in flight (a
                        // request for a piece done already, an end game's copy, is not).
                        if asked.iter().flatten().all(|&i| s.is_done(i)) {
                            deferred.iter_mut().for_each(|d| d.clear());
                        }
                        if let Some(i) = s.pick(peer) {
                            prop_assert!(has[peer][i as usize], "asked for a piece it lacks");
                            prop_assert!(!deferred[peer].contains(&i), "deferred {i} asked while others were in flight");
                            prop_assert!(asked[peer].insert(i), "asked twice");
                        }
                    },
                    1 => if let Some(&i) = asked[peer].iter().next() {
                        asked[peer].remove(&i);
                        deferred[peer].insert(i);
                        s.defer(peer, i);
                    },
                    2 => if let Some(&i) = asked[peer].iter().next() {
                        asked[peer].remove(&i);
                        s.complete(peer, i);
                    },
                    3 => if let Some(&i) = asked[peer].iter().next() {
                        asked[peer].remove(&i);
                        s.release(peer, i);
                    },
                    _ => {
                        let i = index % count as u32;
                        s.have(peer, i).unwrap();
                        has[peer][i as usize] = true;
                    }
                }
                for i in 0..count {
                    let askers = asked.iter().filter(|a| a.contains(&(i as u32))).count();
                    prop_assert!(askers <= MAX_COPIES as usize);
                    prop_assert_eq!(s.unasked.get(i), s.state[i] == PieceState::Missing);
                }
            }
            // Drain: peer 0 finishes everything.
            for (p, a) in asked.iter_mut().enumerate() { for i in a.drain() { s.release(p, i); } }
            for p in 1..has.len() { s.remove_peer(p); }
            let mut rounds = 0;
            while s.missing() > 0 {
                let i = s.pick(0).expect("the full copy has every missing piece");
                s.complete(0, i);
                rounds += 1;
                prop_assert!(rounds <= count);
            }
        }
    }

    proptest! {
        /// Past the random start, a pick is always among the rarest of the pieces the peer can
        /// give: no fresh piece it holds is held by fewer known peers.
        #[test]
        fn past_the_start_the_rarest_piece_is_picked(
            seed in any::<u64>(),
            holders in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 24), 1..8),
        ) {
            let count = 24;
            let mut held = vec![false; count];
            held[..RANDOM_FIRST].iter_mut().for_each(|h| *h = true);
            let mut s = Scheduler::new(held, seed);
            s.add_peer(0, None).unwrap();
            for (i, h) in holders.iter().enumerate() {
                s.add_peer(i + 1, Some(h.clone())).unwrap();
            }
            while let Some(p) = s.pick(0) {
                if s.state.iter().all(|st| *st != PieceState::Missing) {
                    break; // The end game: no fresh piece left.
                }
                let fresh_min = (0..count)
                    .filter(|&i| s.state[i] == PieceState::Missing)
                    .map(|i| s.holders[i])
                    .min();
                if let Some(m) = fresh_min {
                    prop_assert!(s.holders[p as usize] <= m, "picked {p} held by {} > {m}", s.holders[p as usize]);
                }
                s.complete(0, p);
            }
        }
    }
}
