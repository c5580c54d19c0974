//! A discrete-event model of a swarm: one seeder and `peers` downloaders, each with an upload
//! and a download rate and a latency, joining at once or over time, some leaving when done.
//! Every downloader runs the real [`Scheduler`] (the one `troca swarm get` runs) against the
//! bitfields and `Have`s of the peers it knows.
//!
//! The network, as TCP shares links: the pieces coming to a downloader share its download
//! rate equally, each getting at most that share, and what those leave of an uploader's rate
//! goes equally to its other pieces (water-filling at each uploader), the shares changing as
//! transfers start and end. An uploader sends at most `upload_slots` pieces at once; past them
//! a request is answered busy and the downloader asks others until the uploader says a slot is
//! free (`busy`, as troca's peers do), or the request waits its turn. A downloader asks as
//! `troca swarm get` does (`Sim::ask_one`): among partial holders, one request at a peer and a
//! few in all. A request takes half the round trip to arrive; a piece, its bytes at its rate,
//! plus half the round trip; a busy answer and a `SlotFree`, half the round trip each.
//!
//! An earlier model let every piece go at its uploader's share, capped only by the download
//! rate of one piece: it gave 1.15× the bound for 10 downloaders where 8 real ones in network
//! namespaces took 1.26×; sharing each download rate, as here, gives 1.27×.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use troca_peer::scheduler::{Scheduler, SplitMix};
use troca_peer::spread::Spread;

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
    /// Initial seeding, as troca's seeders do (`troca_peer::spread`): the seeder answers
    /// `Deferred` a request for a piece it gave a downloader still here while another piece
    /// has gone to none, if it is sending something, once per downloader and piece; the
    /// downloader asks for something else at once.
    pub super_seed: bool,
    /// Past the upload slots, a request is answered busy instead of waiting (as troca's peers
    /// do): the downloader asks others, and asks this uploader again once it says a slot is
    /// free (`SlotFree`).
    pub busy: bool,
    /// Print, every simulated second, how busy the links are (on stderr).
    pub trace: bool,
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
    /// The seeder's pieces sent beyond one of each, as a share of the file.
    pub seed_copies: f64,
    /// When the seeder had sent every piece at least once.
    pub seed_all_out: f64,
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
    /// In one of its uploader's slots (moving bytes), not waiting.
    active: bool,
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
    /// Transfers this node is sending (the first `upload_slots` of them move bytes).
    sending: Vec<usize>,
    /// Transfers coming to this node that move bytes now: they share its download rate.
    incoming: Vec<usize>,
    /// Requests this node has out at each neighbor, and in all.
    asked: HashMap<usize, usize>,
    asked_total: usize,
    /// Uploaders that refused this node as busy and have not said a slot is free since.
    busy: HashSet<usize>,
    /// Downloaders this node refused as busy, told when a slot frees.
    refused: Vec<usize>,
    /// Pieces the seeder gave this node.
    from_seed: Vec<u32>,
    /// Pieces the seeder deferred for this node (each is deferred once).
    deferred: HashSet<u32>,
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
    /// Transfer `t` has sent its last byte.
    Sent(usize),
    /// A piece from `from` has fully arrived at `to`.
    Arrived {
        from: usize,
        to: usize,
        piece: u32,
    },
    /// `from` answered `to`'s request for `piece`: busy.
    Busy {
        from: usize,
        to: usize,
        piece: u32,
    },
    /// `from` answered `to`'s request for `piece`: deferred (initial seeding).
    Deferred {
        from: usize,
        to: usize,
        piece: u32,
    },
    /// `from` tells `to`, whom it refused, that a slot is free.
    Free {
        from: usize,
        to: usize,
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
    /// When each transfer moving bytes sends its last one, apart from `queue`: a rate
    /// changes many times per piece, and moving its one entry keeps the queues small.
    finishes: Finishes,
    now: At,
    order: u64,
    transfers: Vec<Option<Transfer>>,
    free: Vec<usize>,
    sent: u64,
    seed_sent: u64,
    /// How far the seeder's pieces went (troca's own count, for initial seeding).
    spread: Spread,
    seed_pieces: HashSet<u32>,
    seed_all_out: At,
}

/// Runs the model to the end.
pub fn run(setup: &Setup) -> Outcome {
    let mut sim = Sim::new(setup.clone());
    let mut events = 0;
    let mut next_trace = 0;
    while let Some((when, event)) = sim.next() {
        sim.now = when;
        events += 1;
        if setup.trace && when >= next_trace {
            next_trace += 1_000_000_000;
            sim.trace();
        }
        match event {
            Event::Join(n) => sim.join(n),
            Event::Request { from, to, piece } => sim.request(from, to, piece),
            Event::Sent(t) => sim.sent(t),
            Event::Arrived { from, to, piece } => sim.arrived(from, to, piece),
            Event::Busy { from, to, piece } => sim.busy(from, to, piece),
            Event::Deferred { from, to, piece } => sim.deferred(from, to, piece),
            Event::Free { from, to } => sim.free(from, to),
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
        seed_copies: (sim.seed_sent as f64 - setup.pieces as f64).max(0.0) / setup.pieces as f64,
        seed_all_out: sim.seed_all_out as f64 / 1e9,
    }
}

/// The fluid bound of a flash crowd of `setup`.
pub fn bound(s: &Setup) -> f64 {
    let f = s.pieces as f64 * s.piece_bytes;
    let n = s.peers as f64;
    let all_up = s.seed_up + n * s.up;
    f * (1.0 / s.seed_up).max(1.0 / s.down).max(n / all_up)
}

/// Each node's neighbours: every downloader picks `neighbors` distinct others at random (all
/// of them in a small swarm), and is a neighbour of those it picked.
fn random_neighbors(setup: &Setup, rng: &mut SplitMix) -> Vec<HashSet<usize>> {
    let total = setup.peers + 1;
    let mut neighbors: Vec<HashSet<usize>> = vec![HashSet::default(); total];
    for n in 1..total {
        let want = setup.neighbors.min(total - 1);
        let mut picked = HashSet::default();
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
    neighbors
}

impl Node {
    /// Node `i` (0: the seeder) with neighbours `set`, before it joins.
    fn new(setup: &Setup, i: usize, set: HashSet<usize>, rng: &mut SplitMix) -> Self {
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
            incoming: Vec::new(),
            asked: HashMap::default(),
            asked_total: 0,
            busy: HashSet::default(),
            refused: Vec::new(),
            from_seed: Vec::new(),
            deferred: HashSet::default(),
        }
    }
}

impl Sim {
    fn new(setup: Setup) -> Self {
        let mut rng = SplitMix(setup.seed);
        let neighbors = random_neighbors(&setup, &mut rng);
        let nodes = neighbors
            .into_iter()
            .enumerate()
            .map(|(i, set)| Node::new(&setup, i, set, &mut rng))
            .collect();
        let pieces = setup.pieces;
        let mut sim = Sim {
            setup,
            nodes,
            queue: BinaryHeap::new(),
            finishes: Finishes::default(),
            now: 0,
            order: 0,
            transfers: Vec::new(),
            free: Vec::new(),
            sent: 0,
            seed_sent: 0,
            spread: Spread::new(pieces),
            seed_pieces: HashSet::default(),
            seed_all_out: 0,
        };
        for i in 0..sim.nodes.len() {
            let when = at(sim.nodes[i].join_at);
            sim.push(when, Event::Join(i));
        }
        sim
    }

    /// The next event, of both queues: the earliest, and of equals the first queued.
    fn next(&mut self) -> Option<(At, Event)> {
        let event = self.queue.peek().map(|Reverse((w, o, _))| (*w, *o));
        match (event, self.finishes.peek()) {
            (Some(e), Some(f)) if f < e => self.finishes.pop().map(|(w, t)| (w, Event::Sent(t))),
            (None, Some(_)) => self.finishes.pop().map(|(w, t)| (w, Event::Sent(t))),
            _ => self.queue.pop().map(|Reverse((w, _, e))| (w, e)),
        }
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
        if self.nodes[n].busy.contains(&x) {
            return;
        }
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
        let slots = self.setup.upload_slots;
        // As troca's full copies do: a piece that went to a downloader still here is deferred
        // (once for each downloader) while some piece has gone to none, if a slot is sending.
        let defer = from == 0
            && self.setup.super_seed
            && !self.nodes[0].sending.is_empty()
            && self.spread.defers(piece)
            && self.nodes[to].deferred.insert(piece);
        if defer {
            let when = self.now + at(self.setup.rtt / 2.0);
            self.push(when, Event::Deferred { from, to, piece });
            return;
        }
        if self.setup.busy && slots > 0 && self.nodes[from].sending.len() >= slots {
            if !self.nodes[from].refused.contains(&to) {
                self.nodes[from].refused.push(to);
            }
            let when = self.now + at(self.setup.rtt / 2.0);
            self.push(when, Event::Busy { from, to, piece });
            return;
        }
        if from == 0 {
            self.spread.give(piece);
            self.nodes[to].from_seed.push(piece);
        }
        let t = Transfer {
            from,
            to,
            piece,
            remaining: self.setup.piece_bytes,
            rate: 0.0,
            since: self.now,
            active: false,
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

    /// `from`'s uploads changed (one started or ended). The first `upload_slots` of them send
    /// (the rest wait, moving no bytes); a downloader's rate is shared by the pieces coming to
    /// it; so the rates change at `from` and at every uploader sending to a downloader whose
    /// count of pieces coming changed.
    fn reshare(&mut self, from: usize) {
        let slots = match self.setup.upload_slots {
            0 => usize::MAX,
            n => n,
        };
        let mut changed = vec![from];
        let sending = self.nodes[from].sending.clone();
        for (place, i) in sending.into_iter().enumerate() {
            let t = self.transfers[i].as_mut().expect("sending");
            let active = place < slots;
            if t.active != active {
                t.active = active;
                let to = t.to;
                if active {
                    self.nodes[to].incoming.push(i);
                } else {
                    self.nodes[to].incoming.retain(|&k| k != i);
                }
                changed.extend(self.uploaders_to(to));
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for x in changed {
            self.rerate(x);
        }
    }

    /// The uploaders sending to `to` now.
    fn uploaders_to(&self, to: usize) -> Vec<usize> {
        self.nodes[to]
            .incoming
            .iter()
            .filter_map(|&i| self.transfers[i].as_ref().map(|t| t.from))
            .collect()
    }

    /// Sets the rates of `from`'s sending uploads as TCP would share its link: each piece gets
    /// at most its downloader's equal share of its download rate, and what those leave of
    /// `from`'s upload rate is split equally among the others (water-filling). Each upload
    /// counts what it moved at its old rate and gets a new finish.
    fn rerate(&mut self, from: usize) {
        let up = if from == 0 {
            self.setup.seed_up
        } else {
            self.setup.up
        };
        let mut caps: Vec<(f64, usize)> = self.nodes[from]
            .sending
            .iter()
            .filter_map(|&i| {
                let t = self.transfers[i].as_ref()?;
                let coming = self.nodes[t.to].incoming.len().max(1) as f64;
                t.active.then_some((self.setup.down / coming, i))
            })
            .collect();
        caps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut left = up;
        let mut rates: HashMap<usize, f64> = HashMap::default();
        let n = caps.len();
        for (k, (cap, i)) in caps.into_iter().enumerate() {
            let share = left / (n - k) as f64;
            let rate = cap.min(share);
            left -= rate;
            rates.insert(i, rate);
        }
        let now = self.now;
        for i in self.nodes[from].sending.clone() {
            let rate = rates.get(&i).copied().unwrap_or(0.0);
            let t = self.transfers[i].as_mut().expect("sending");
            t.remaining = (t.remaining - t.rate * (now - t.since) as f64 / 1e9).max(0.0);
            t.since = now;
            if t.rate == rate && rate > 0.0 {
                continue;
            }
            t.rate = rate;
            if rate > 0.0 {
                let when = now + at(t.remaining / rate);
                self.order += 1;
                self.finishes.set(i, when, self.order);
            } else {
                self.finishes.remove(i);
            }
        }
    }

    fn sent(&mut self, index: usize) {
        let t = self.transfers[index]
            .take()
            .expect("a finish is queued only for a transfer");
        self.free.push(index);
        self.sent += 1;
        if t.from == 0 {
            self.seed_sent += 1;
            if self.seed_pieces.insert(t.piece) {
                self.seed_all_out = self.now;
            }
        }
        self.nodes[t.from].sending.retain(|&i| i != index);
        self.nodes[t.to].incoming.retain(|&i| i != index);
        let others = self.uploaders_to(t.to);
        self.reshare(t.from);
        for x in others {
            self.rerate(x);
        }
        // A slot is free: those refused hear of it (the first to ask gets it).
        let refused = std::mem::take(&mut self.nodes[t.from].refused);
        let when = self.now + at(self.setup.rtt / 2.0);
        for to in refused {
            self.push(when, Event::Free { from: t.from, to });
        }
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

    /// `from` was busy: the piece goes back to `to`'s schedule, and `to` asks others.
    fn busy(&mut self, from: usize, to: usize, piece: u32) {
        self.nodes[to].busy.insert(from);
        self.give_back(from, to, piece);
    }

    /// `from` deferred `piece`: `to` asks others for it, and `from` for something else.
    fn deferred(&mut self, from: usize, to: usize, piece: u32) {
        self.unask(to, from);
        if let Some(s) = self.nodes[to].sched.as_mut() {
            s.defer(from, piece);
        }
        self.ask(to);
    }

    /// `from` has a slot free for `to` again.
    fn free(&mut self, from: usize, to: usize) {
        self.nodes[to].busy.remove(&from);
        self.ask_one(to, from);
    }

    /// How busy the links are now, on stderr.
    fn trace(&self) {
        let flows: Vec<&Transfer> = self.transfers.iter().flatten().collect();
        let rate: f64 = flows.iter().map(|t| t.rate).sum();
        let capacity = self.setup.seed_up + self.setup.peers as f64 * self.setup.up;
        let idle = self.nodes.iter().filter(|n| n.sending.is_empty()).count();
        let done: usize = self
            .nodes
            .iter()
            .filter_map(|n| n.sched.as_ref())
            .map(|s| s.count() - s.missing())
            .sum();
        eprintln!(
            "t={:>4}s uploads {:>3.0}% busy, {} sending, {} idle uploaders, {done} pieces held",
            self.now / 1_000_000_000,
            100.0 * rate / capacity,
            flows.iter().filter(|t| t.active).count(),
            idle,
        );
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
        for piece in std::mem::take(&mut self.nodes[n].from_seed) {
            self.spread.take_back(piece);
        }
        let neighbors = self.nodes[n].neighbors.clone();
        for y in neighbors {
            if let Some(s) = self.nodes[y].sched.as_mut() {
                s.remove_peer(n);
            }
        }
    }
}

/// A min-heap of transfers by finish time, with each transfer's place in it, so a new rate
/// moves the transfer's one entry instead of leaving a stale one behind.
#[derive(Debug, Default)]
struct Finishes {
    /// (when, order of queuing, transfer).
    heap: Vec<(At, u64, usize)>,
    /// Each transfer's index in `heap`, or `usize::MAX`.
    place: Vec<usize>,
}

impl Finishes {
    fn peek(&self) -> Option<(At, u64)> {
        self.heap.first().map(|&(w, o, _)| (w, o))
    }

    fn set(&mut self, t: usize, when: At, order: u64) {
        if self.place.len() <= t {
            self.place.resize(t + 1, usize::MAX);
        }
        let i = match self.place[t] {
            usize::MAX => {
                self.heap.push((when, order, t));
                self.heap.len() - 1
            }
            i => {
                self.heap[i] = (when, order, t);
                i
            }
        };
        self.place[t] = i;
        let i = self.up(i);
        self.down(i);
    }

    fn remove(&mut self, t: usize) {
        let Some(&i) = self.place.get(t).filter(|&&i| i != usize::MAX) else {
            return;
        };
        self.place[t] = usize::MAX;
        let last = self.heap.pop().expect("an entry is placed");
        if i < self.heap.len() {
            self.heap[i] = last;
            self.place[last.2] = i;
            let i = self.up(i);
            self.down(i);
        }
    }

    fn pop(&mut self) -> Option<(At, usize)> {
        let &(when, _, t) = self.heap.first()?;
        self.remove(t);
        Some((when, t))
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a].2] = a;
        self.place[self.heap[b].2] = b;
    }

    fn up(&mut self, mut i: usize) -> usize {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent] <= self.heap[i] {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
        i
    }

    fn down(&mut self, mut i: usize) {
        loop {
            let mut least = i;
            for child in [2 * i + 1, 2 * i + 2] {
                if child < self.heap.len() && self.heap[child] < self.heap[least] {
                    least = child;
                }
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
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
            super_seed: false,
            busy: false,
            trace: false,
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

    #[test]
    fn initial_seeding_spares_the_seeder_copies_and_everyone_finishes() {
        let with_slots = |super_seed| Setup {
            upload_slots: 4,
            busy: true,
            super_seed,
            pieces: 128,
            ..crowd(60)
        };
        let (off, on) = (run(&with_slots(false)), run(&with_slots(true)));
        assert!(on.took.iter().all(Option::is_some), "{:?}", on.took);
        assert!(
            on.seed_copies < off.seed_copies,
            "the seeder sent {} extra with it, {} without",
            on.seed_copies,
            off.seed_copies
        );
        assert!(on.seed_all_out < off.seed_all_out);
    }
}
