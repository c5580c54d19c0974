//! A discrete-event model of a swarm: one seeder and `peers` downloaders, each with an upload
//! and a download rate and a latency, joining at once or over time, some leaving when done.
//! Every downloader runs the real [`Scheduler`] (the one `troca swarm get` runs) against the
//! bitfields and `Have`s of the peers it knows.
//!
//! The network: uploads are the bottleneck (as on most links, where a peer downloads several
//! times faster than it uploads). An uploader sends every piece asked of it at once, each at an
//! equal share of its upload rate (as TCP shares a link), the shares changing as transfers start
//! and end; one transfer never goes faster than the downloader's rate, and a downloader keeps
//! only a few pieces coming at once. (Sharing each downloader's rate too, by taking the smaller
//! of the two shares, would leave capacity unused that TCP would give to other flows: that
//! model is pessimistic where this one may be optimistic when downloads are the bottleneck.)
//! A downloader asks as `troca swarm get` does (`Sim::ask_one`): among partial holders,
//! one request at a peer and a few in all. A request takes half the round trip to arrive; a
//! piece, its bytes at its rate, plus half the round trip.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use troca_peer::scheduler::{Scheduler, SplitMix};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Downloaders (the seeder comes on top).
    pub peers: usize,
    pub pieces: usize,
    pub piece_bytes: f64,
    /// Bytes per second.
    pub seed_up: f64,
    pub up: f64,
    pub down: f64,
    /// Round-trip time, seconds.
    pub rtt: f64,
    /// Peers each one learns of (from the tracker), at random.
    pub neighbors: usize,
    /// Pieces a downloader has coming (asked) at once, in all, once it knows partial holders
    /// (troca: 4, one per peer).
    pub max_incoming: usize,
    /// Requests a downloader keeps at each peer while every peer it knows holds the whole file
    /// (troca: 3), so no link idles between pieces.
    pub pipeline: usize,
    /// Pieces an uploader sends at once, sharing its rate; the others wait their turn in
    /// arrival order (0: all at once).
    pub upload_slots: usize,
    /// Downloaders join at times spread evenly over this many seconds (0: all at once).
    pub join_over: f64,
    /// The share of downloaders that leave as soon as they are done (the rest stay and seed).
    pub leave: f64,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Each downloader's time from joining to holding the whole file (`None`: never finished).
    pub took: Vec<Option<f64>>,
    /// When the last one finished, from the start.
    pub last: f64,
    /// The fluid-model lower bound for a flash crowd: F × max(1/u_seed, 1/d, N/(u_seed + Σu)).
    pub bound: f64,
    pub events: u64,
    /// Pieces sent, copies included, and the share of them that were extra copies.
    pub sent: u64,
    pub copies: f64,
}

/// A piece on its way.
#[derive(Debug, Clone)]
struct Transfer {
    from: usize,
    to: usize,
    piece: u32,
    remaining: f64,
    /// Bytes per second now, since `since`.
    rate: f64,
    since: At,
    /// Bumped at each rate change: a finish event of an older version is stale.
    version: u64,
}

#[derive(Debug)]
struct Node {
    /// `None` for the seeder.
    sched: Option<Scheduler>,
    neighbors: Vec<usize>,
    joined: bool,
    left: bool,
    join_at: f64,
    done_at: Option<f64>,
    leaves_when_done: bool,
    /// Transfers this node is sending.
    sending: Vec<usize>,
    /// Requests this node has out at each neighbor, and in all.
    asked: HashMap<usize, usize>,
    asked_total: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Join(usize),
    /// A request from `to` for `piece` reaches `from`.
    Request {
        from: usize,
        to: usize,
        piece: u32,
    },
    /// Transfer `t` has sent its last byte (if still at `version`).
    Sent {
        t: usize,
        version: u64,
    },
    /// A piece from `from` has fully arrived at `to`.
    Arrived {
        from: usize,
        to: usize,
        piece: u32,
    },
}

/// Simulated time in nanoseconds (ordered, unlike floats).
type At = u64;

fn at(seconds: f64) -> At {
    (seconds * 1e9) as At
}

struct Sim {
    setup: Setup,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(At, u64, Event)>>,
    now: At,
    order: u64,
    transfers: Vec<Option<Transfer>>,
    free: Vec<usize>,
    sent: u64,
}

/// Runs the model to the end.
pub fn run(setup: &Setup) -> Outcome {
    let mut sim = Sim::new(setup.clone());
    let mut events = 0;
    while let Some(Reverse((when, _, event))) = sim.queue.pop() {
        sim.now = when;
        events += 1;
        match event {
            Event::Join(n) => sim.join(n),
            Event::Request { from, to, piece } => sim.request(from, to, piece),
            Event::Sent { t, version } => sim.sent(t, version),
            Event::Arrived { from, to, piece } => sim.arrived(from, to, piece),
        }
    }
    let took: Vec<Option<f64>> = sim.nodes[1..]
        .iter()
        .map(|n| n.done_at.map(|d| d - n.join_at))
        .collect();
    let last = sim.nodes[1..]
        .iter()
        .filter_map(|n| n.done_at)
        .fold(0.0, f64::max);
    let needed = (setup.peers * setup.pieces) as f64;
    Outcome {
        took,
        last,
        bound: bound(setup),
        events,
        sent: sim.sent,
        copies: (sim.sent as f64 - needed).max(0.0) / needed,
    }
}

/// The fluid bound of a flash crowd of `setup`.
pub fn bound(s: &Setup) -> f64 {
    let f = s.pieces as f64 * s.piece_bytes;
    let n = s.peers as f64;
    let all_up = s.seed_up + n * s.up;
    f * (1.0 / s.seed_up).max(1.0 / s.down).max(n / all_up)
}

impl Sim {
    fn new(setup: Setup) -> Self {
        let mut rng = SplitMix(setup.seed);
        let total = setup.peers + 1;
        let mut neighbors: Vec<HashSet<usize>> = vec![HashSet::new(); total];
        for n in 1..total {
            // `neighbors` distinct others at random (all of them in a small swarm).
            let want = setup.neighbors.min(total - 1);
            let mut picked = HashSet::new();
            while picked.len() < want {
                let other = rng.below(total);
                if other != n {
                    picked.insert(other);
                }
            }
            for other in picked {
                neighbors[n].insert(other);
                neighbors[other].insert(n);
            }
        }
        let nodes = neighbors
            .into_iter()
            .enumerate()
            .map(|(i, set)| {
                let mut nb: Vec<usize> = set.into_iter().collect();
                nb.sort_unstable();
                let join_at = if i == 0 || setup.peers < 2 {
                    0.0
                } else {
                    setup.join_over * (i - 1) as f64 / (setup.peers - 1) as f64
                };
                Node {
                    sched: (i > 0)
                        .then(|| Scheduler::new(vec![false; setup.pieces], setup.seed ^ i as u64)),
                    neighbors: nb,
                    joined: false,
                    left: false,
                    join_at,
                    done_at: None,
                    leaves_when_done: i > 0 && rng.below(1_000_000) < (setup.leave * 1e6) as usize,
                    sending: Vec::new(),
                    asked: HashMap::new(),
                    asked_total: 0,
                }
            })
            .collect();
        let mut sim = Sim {
            setup,
            nodes,
            queue: BinaryHeap::new(),
            now: 0,
            order: 0,
            transfers: Vec::new(),
            free: Vec::new(),
            sent: 0,
        };
        for i in 0..total {
            let when = at(sim.nodes[i].join_at);
            sim.push(when, Event::Join(i));
        }
        sim
    }

    fn push(&mut self, when: At, event: Event) {
        self.order += 1;
        self.queue.push(Reverse((when, self.order, event)));
    }

    /// What `n` holds, as a bitfield (`None`: everything).
    fn held(&self, n: usize) -> Option<Vec<bool>> {
        self.nodes[n].sched.as_ref().map(Scheduler::held)
    }

    fn join(&mut self, n: usize) {
        self.nodes[n].joined = true;
        let neighbors = self.nodes[n].neighbors.clone();
        for &x in &neighbors {
            if !self.nodes[x].joined || self.nodes[x].left {
                continue;
            }
            // Each learns what the other holds (a bitfield each way).
            let theirs = self.held(x);
            if let Some(s) = self.nodes[n].sched.as_mut() {
                s.add_peer(x, theirs).expect("same piece count");
            }
            let mine = self.held(n);
            if let Some(s) = self.nodes[x].sched.as_mut() {
                s.add_peer(n, mine).expect("same piece count");
            }
        }
        self.ask(n);
    }

    /// `n` asks its neighbors for pieces, while it may have more requests out.
    fn ask(&mut self, n: usize) {
        if self.nodes[n].sched.is_none() || self.nodes[n].done_at.is_some() {
            return;
        }
        let neighbors = self.nodes[n].neighbors.clone();
        let start = (self.now as usize).wrapping_add(n) % neighbors.len().max(1);
        for k in 0..neighbors.len() {
            let x = neighbors[(start + k) % neighbors.len()];
            self.ask_one(n, x);
        }
    }

    /// `n` asks `x` for pieces it holds and `n` needs, up to the pipeline.
    fn ask_one(&mut self, n: usize, x: usize) {
        // As `troca swarm get` does (see `CROWD_IN_FLIGHT`): among partial holders, one request
        // at a peer and `max_incoming` in all; `pipeline` at each peer when every peer known
        // holds the whole file (here: only the seeder is known).
        let crowd = self.nodes[n].neighbors.iter().any(|&y| y != 0);
        let (per_peer, cap) = if crowd {
            (1, self.setup.max_incoming)
        } else {
            (self.setup.pipeline, usize::MAX)
        };
        loop {
            let node = &mut self.nodes[n];
            let here = node.asked.get(&x).copied().unwrap_or(0);
            if node.asked_total >= cap || here >= per_peer || node.done_at.is_some() || !node.joined
            {
                return;
            }
            let Some(piece) = node.sched.as_mut().and_then(|s| s.pick(x)) else {
                return;
            };
            node.asked.insert(x, here + 1);
            node.asked_total += 1;
            let when = self.now + at(self.setup.rtt / 2.0);
            self.push(
                when,
                Event::Request {
                    from: x,
                    to: n,
                    piece,
                },
            );
        }
    }

    /// A request of `n` at `x` was answered or given up.
    fn unask(&mut self, n: usize, x: usize) {
        let node = &mut self.nodes[n];
        if let Some(k) = node.asked.get_mut(&x) {
            *k -= 1;
            node.asked_total -= 1;
            if *k == 0 {
                node.asked.remove(&x);
            }
        }
    }

    fn request(&mut self, from: usize, to: usize, piece: u32) {
        if self.nodes[from].left {
            self.give_back(from, to, piece);
            return;
        }
        let t = Transfer {
            from,
            to,
            piece,
            remaining: self.setup.piece_bytes,
            rate: 0.0,
            since: self.now,
            version: 0,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.transfers[i] = Some(t);
                i
            }
            None => {
                self.transfers.push(Some(t));
                self.transfers.len() - 1
            }
        };
        self.nodes[from].sending.push(index);
        self.reshare(from);
    }

    /// A request that will not be answered: the piece goes back to `to`'s schedule.
    fn give_back(&mut self, from: usize, to: usize, piece: u32) {
        self.unask(to, from);
        if let Some(s) = self.nodes[to].sched.as_mut() {
            s.release(from, piece);
        }
        self.ask(to);
    }

    /// The shares of `from`'s uploads changed: each transfer it sends counts what it moved at
    /// its old rate, takes its new rate, and gets a new finish. Past the upload slots, a
    /// transfer waits (no bytes move) until one ahead of it ends.
    fn reshare(&mut self, from: usize) {
        let touched: Vec<usize> = self.nodes[from].sending.clone();
        let slots = match self.setup.upload_slots {
            0 => usize::MAX,
            n => n,
        };
        let up = if from == 0 {
            self.setup.seed_up
        } else {
            self.setup.up
        };
        let active = touched.len().min(slots);
        for (place, i) in touched.into_iter().enumerate() {
            if self.transfers[i].is_none() {
                continue;
            }
            let rate = if place < slots {
                (up / active as f64).min(self.setup.down)
            } else {
                0.0
            };
            let now = self.now;
            let t = self.transfers[i].as_mut().expect("checked");
            t.remaining = (t.remaining - t.rate * (now - t.since) as f64 / 1e9).max(0.0);
            t.since = now;
            t.rate = rate;
            // Unique across all transfers: a slot is reused, and a stale finish of its former
            // transfer must not end the new one.
            self.order += 1;
            t.version = self.order;
            if rate > 0.0 {
                let when = now + at(t.remaining / rate);
                let version = t.version;
                self.push(when, Event::Sent { t: i, version });
            }
        }
    }

    fn sent(&mut self, index: usize, version: u64) {
        let Some(t) = self.transfers[index].as_ref() else {
            return;
        };
        if t.version != version {
            return;
        }
        let t = self.transfers[index].take().expect("checked");
        self.free.push(index);
        self.sent += 1;
        self.nodes[t.from].sending.retain(|&i| i != index);
        self.reshare(t.from);
        let when = self.now + at(self.setup.rtt / 2.0);
        self.push(
            when,
            Event::Arrived {
                from: t.from,
                to: t.to,
                piece: t.piece,
            },
        );
    }

    fn arrived(&mut self, from: usize, to: usize, piece: u32) {
        self.unask(to, from);
        let fresh = self.nodes[to]
            .sched
            .as_mut()
            .is_some_and(|s| s.complete(from, piece));
        if fresh {
            self.tell_neighbors(to, piece);
            let done = self.nodes[to]
                .sched
                .as_ref()
                .is_some_and(|s| s.missing() == 0);
            if done {
                self.nodes[to].done_at = Some(self.now as f64 / 1e9);
                if self.nodes[to].leaves_when_done {
                    self.leave(to);
                }
                return;
            }
        }
        self.ask(to);
    }

    /// `n` has `piece` now: each neighbor hears of it, and may ask for it.
    fn tell_neighbors(&mut self, n: usize, piece: u32) {
        let neighbors = self.nodes[n].neighbors.clone();
        for y in neighbors {
            if !self.nodes[y].joined || self.nodes[y].left {
                continue;
            }
            if let Some(s) = self.nodes[y].sched.as_mut() {
                s.have(n, piece).expect("a known peer and piece");
            }
            self.ask_one(y, n);
        }
    }

    /// `n` leaves: it sends what it started, answers no more, and its neighbors forget it.
    fn leave(&mut self, n: usize) {
        self.nodes[n].left = true;
        let neighbors = self.nodes[n].neighbors.clone();
        for y in neighbors {
            if let Some(s) = self.nodes[y].sched.as_mut() {
                s.remove_peer(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd(peers: usize) -> Setup {
        Setup {
            peers,
            pieces: 32,
            piece_bytes: 1e6,
            seed_up: 1e7,
            up: 1e7,
            down: 1e7,
            rtt: 0.01,
            neighbors: 8,
            max_incoming: 8,
            pipeline: 3,
            upload_slots: 0,
            join_over: 0.0,
            leave: 0.0,
            seed: 1,
        }
    }

    #[test]
    fn every_downloader_finishes_and_none_beats_the_bound() {
        let s = crowd(50);
        let o = run(&s);
        assert!(o.took.iter().all(Option::is_some), "all finish");
        assert!(o.last >= o.bound, "{} < {}", o.last, o.bound);
        // A crowd sharing its pieces is far faster than one seeder serving everyone alone
        // (50 × the file at the seeder's rate).
        let alone = 50.0 * 32.0 * 1e6 / 1e7;
        assert!(o.last < alone / 4.0, "{} vs {alone}", o.last);
    }

    #[test]
    fn leavers_and_late_joiners_still_let_everyone_finish() {
        let s = Setup {
            join_over: 5.0,
            leave: 0.5,
            ..crowd(40)
        };
        let o = run(&s);
        assert!(o.took.iter().all(Option::is_some), "{:?}", o.took);
    }
}
