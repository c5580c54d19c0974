//! Initial seeding: a peer that holds a file no one else has yet sends each piece once before
//! any twice, so its upload (the crowd's only source of those pieces) carries no copies.
//!
//! The downloaders choose what to ask for, rarest first among the peers *they* know; two that
//! do not know each other may ask the seeder for the same piece while another piece has left
//! it for no one. So the seeder counts, for each piece, the sharing downloaders still connected
//! that it gave the piece to. A sharing downloader's request for a piece some of them hold,
//! while another piece has gone to none, is answered `Deferred` if a slot is sending (so the
//! link stays busy): the downloader asks others for it and asks the seeder for something else
//! at once. A piece is deferred once per connection, so a downloader with nothing else left to
//! ask (the scheduler asks again only then) is served, and no deferral can stall a download,
//! whatever several seeders' counts say. Once every piece has gone out, the seeder answers
//! every request, for good: it is then one holder among many. (BitTorrent's super-seeding,
//! BEP 16, hides pieces in the bitfield for the same end; troca's seeder shows them all and
//! defers the request instead, so a lone downloader never waits.)
//!
//! No sockets and no clock: the peer's server and `troca-swarm-sim` run this same code.

/// What a seeder knows of how far one file's pieces have gone.
#[derive(Debug, Clone)]
pub struct Spread {
    /// For each piece, the sharing downloaders still connected it was given to (allocated at
    /// the first, so a folder of files nobody fetches costs nothing).
    given: Vec<u32>,
    count: usize,
    /// Pieces given to none of them.
    never: usize,
    /// Every piece went out once (`never` reached 0): no request waits any more, whatever
    /// `never` is later.
    done: bool,
}

impl Spread {
    /// A file of `count` pieces, none given yet.
    pub fn new(count: usize) -> Self {
        Self {
            given: Vec::new(),
            count,
            never: count,
            done: count == 0,
        }
    }

    /// Whether a request for `index` should wait: a sharing downloader has it from here, and
    /// some piece has gone to none of them yet.
    pub fn defers(&self, index: u32) -> bool {
        !self.done && self.given.get(index as usize).is_some_and(|&n| n > 0)
    }

    /// `index` goes to a sharing downloader.
    pub fn give(&mut self, index: u32) {
        if self.given.is_empty() {
            self.given = vec![0; self.count];
        }
        let Some(n) = self.given.get_mut(index as usize) else {
            return;
        };
        *n += 1;
        if *n == 1 {
            self.never -= 1;
            if self.never == 0 {
                self.done = true;
            }
        }
    }

    /// A downloader given `index` left (its connection closed).
    pub fn take_back(&mut self, index: u32) {
        let Some(n) = self.given.get_mut(index as usize) else {
            return;
        };
        if *n > 0 {
            *n -= 1;
            if *n == 0 {
                self.never += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_piece_out_waits_while_another_has_gone_to_no_one() {
        let mut s = Spread::new(3);
        assert!(!s.defers(0), "nothing given yet");
        s.give(0);
        assert!(s.defers(0), "0 is out, 1 and 2 are not");
        assert!(!s.defers(1));
        s.take_back(0);
        assert!(!s.defers(0), "the one holding 0 left");
        s.give(0);
        s.give(1);
        s.give(2);
        assert!(!s.defers(0), "every piece went out once");
        s.take_back(2);
        assert!(
            !s.defers(0),
            "for good: the seeder is one holder among many now"
        );
        assert!(!s.defers(99), "no such piece");
    }

    proptest! {
        /// Whatever is given and taken back, a request waits only for a piece out with a
        /// connected sharer while some other piece is with none, and never once all went out.
        #[test]
        fn defers_only_what_the_counts_say(
            count in 1usize..20,
            steps in proptest::collection::vec((any::<bool>(), 0u32..24), 0..200),
        ) {
            let mut s = Spread::new(count);
            let mut given = vec![0u32; count];
            let mut all_out = false;
            for (give, index) in steps {
                let i = index as usize;
                if give {
                    s.give(index);
                    if i < count { given[i] += 1; }
                } else if i < count && given[i] > 0 {
                    s.take_back(index);
                    given[i] -= 1;
                }
                all_out |= given.iter().all(|&n| n > 0);
                for p in 0..count {
                    let expect = !all_out && given[p] > 0 && given.contains(&0);
                    prop_assert_eq!(s.defers(p as u32), expect);
                }
            }
        }
    }
}
