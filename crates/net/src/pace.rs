//! Bandwidth limits: how fast bytes may move, for a hub's clients all together, for each
//! address, and for one client of its own transfers (`--max-rate`).
//!
//! A limit is a [`Bucket`] (a generic cell rate algorithm: pure arithmetic on instants handed
//! in, no clock of its own). A connection holds a [`Pace`]: one [`Gate`] for each direction,
//! each drawing on the buckets that apply to it (the total and its address's). A mover asks its
//! gate how much it may move at once ([`Gate::quantum`]), waits until the gate is open, moves
//! the bytes, and charges them; the charge says when the gate opens again. Charging after the
//! fact lets a read, whose size is only known once it is done, be paced like a write.
//!
//! Waits come before a move, outside any stall timer: a transfer slowed by the limit is never
//! taken for one the peer stopped taking.

use crate::limits::AddressKey;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How much a bucket lets through at once after a pause: this long at its rate. Long enough
/// that a timer firing a millisecond late costs nothing, short enough that a burst is brief.
pub const BURST: Duration = Duration::from_millis(50);

/// The most one move takes at once under a limit (a read, a write, a `sendfile` step).
const MAX_QUANTUM: u64 = 1 << 20;
/// The least: smaller moves would cost more system calls than a slow link is worth.
const MIN_QUANTUM: u64 = 1 << 10;

/// A rate limit: bytes per second, with a burst of [`BURST`] at that rate.
///
/// It keeps the instant at which everything charged so far would have gone out at the rate
/// (`due`); a mover may go on while that is at most [`BURST`] ahead of now.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    due: Instant,
}

impl Bucket {
    /// A bucket of `rate` bytes a second (at least 1), full at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self {
            rate: rate.max(1),
            due: now,
        }
    }

    /// How long `n` bytes take at the rate.
    fn time_of(&self, n: u64) -> Duration {
        let ns = u128::from(n) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Charges `n` bytes moved at `now`; returns when the next move may begin (`now` or
    /// earlier: at once).
    pub fn charge(&mut self, n: u64, now: Instant) -> Instant {
        self.due = self.due.max(now) + self.time_of(n);
        self.open_at()
    }

    /// When the next move may begin, as things stand.
    pub fn open_at(&self) -> Instant {
        self.due.checked_sub(BURST).unwrap_or(self.due)
    }

    /// The most one move should take at once: the burst, within 1 KiB and 1 MiB.
    pub fn quantum(&self) -> u64 {
        let burst = u128::from(self.rate) * BURST.as_nanos() / 1_000_000_000;
        u64::try_from(burst)
            .unwrap_or(u64::MAX)
            .clamp(MIN_QUANTUM, MAX_QUANTUM)
    }
}

/// A bucket shared by connections.
pub type SharedBucket = Arc<Mutex<Bucket>>;

fn shared(rate: u64) -> SharedBucket {
    Arc::new(Mutex::new(Bucket::new(rate, Instant::now())))
}

/// One direction of a connection under limits: the buckets it draws on, and when it may move
/// again.
#[derive(Debug, Default)]
pub struct Gate {
    buckets: Vec<SharedBucket>,
    open_at: Option<Instant>,
}

impl Gate {
    /// A gate drawing on `buckets` (none: no limit).
    pub fn new(buckets: Vec<SharedBucket>) -> Self {
        Self {
            buckets,
            open_at: None,
        }
    }

    /// Whether any limit applies.
    pub fn is_limited(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// The most one move may take at once (`usize::MAX` without a limit).
    pub fn quantum(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.lock().expect("bucket poisoned").quantum())
            .min()
            .map_or(usize::MAX, |q| usize::try_from(q).unwrap_or(usize::MAX))
    }

    /// Charges `n` bytes just moved.
    pub fn charge(&mut self, n: usize) {
        self.charge_at(n, Instant::now());
    }

    /// [`Gate::charge`] at `now`: the gate opens when the slowest of its buckets allows.
    fn charge_at(&mut self, n: usize, now: Instant) {
        if n == 0 || self.buckets.is_empty() {
            return;
        }
        let n = n as u64;
        let open = self
            .buckets
            .iter()
            .map(|b| b.lock().expect("bucket poisoned").charge(n, now))
            .max();
        self.open_at = open.filter(|&at| at > now);
    }

    /// When the gate opens, if it is closed now.
    fn closed_until(&mut self) -> Option<tokio::time::Instant> {
        let at = self.open_at?;
        if at <= Instant::now() {
            self.open_at = None;
            return None;
        }
        Some(tokio::time::Instant::from_std(at))
    }

    /// Whether a move must wait.
    pub fn is_closed(&self) -> bool {
        self.open_at.is_some_and(|at| at > Instant::now())
    }

    /// Waits until the gate is open.
    pub async fn ready(&mut self) {
        if let Some(at) = self.closed_until() {
            tokio::time::sleep_until(at).await;
            self.open_at = None;
        }
    }
}

/// The limits of one connection, one gate a direction.
#[derive(Debug, Default)]
pub struct Pace {
    /// Bytes this end sends.
    pub send: Gate,
    /// Bytes this end receives.
    pub receive: Gate,
}

impl Pace {
    /// Whether any limit applies, either way.
    pub fn is_limited(&self) -> bool {
        self.send.is_limited() || self.receive.is_limited()
    }
}

/// A limit for all together and one for each address (an IPv6 /64), each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limit {
    pub total: Option<u64>,
    pub per_address: Option<u64>,
}

/// A server's bandwidth limits, both directions, as seen from the server: what it sends (its
/// clients' downloads) and what it receives (their uploads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub send: Limit,
    pub receive: Limit,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// A server's buckets: the totals, and one pair per address that has a connection open.
#[derive(Debug)]
pub struct Pacer {
    limits: Limits,
    send_total: Option<SharedBucket>,
    receive_total: Option<SharedBucket>,
    addresses: Mutex<Addresses>,
}

/// The buckets of each address, kept while a connection of the address holds them.
#[derive(Debug, Default)]
struct Addresses {
    pairs: HashMap<AddressKey, AddressBuckets>,
    /// How many entries there were after the last sweep: the next sweep waits for twice that.
    swept: usize,
}

#[derive(Debug, Clone)]
struct AddressBuckets {
    send: Option<SharedBucket>,
    receive: Option<SharedBucket>,
}

impl AddressBuckets {
    fn in_use(&self) -> bool {
        [&self.send, &self.receive]
            .into_iter()
            .flatten()
            .any(|b| Arc::strong_count(b) > 1)
    }
}

impl Pacer {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            send_total: limits.send.total.map(shared),
            receive_total: limits.receive.total.map(shared),
            addresses: Mutex::default(),
        }
    }

    /// A client's limits: `rate` bytes a second each way, shared by all its connections.
    pub fn each_way(rate: u64) -> Self {
        let limit = Limit {
            total: Some(rate),
            per_address: None,
        };
        Self::new(Limits {
            send: limit,
            receive: limit,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The pace of a connection under the totals only (a client's).
    pub fn shared_pace(&self) -> Option<Pace> {
        let gate = |total: &Option<SharedBucket>| Gate::new(total.iter().cloned().collect());
        Some(Pace {
            send: gate(&self.send_total),
            receive: gate(&self.receive_total),
        })
        .filter(Pace::is_limited)
    }

    /// The pace of a new connection from `ip` (`None`: no limit at all, nothing to do).
    pub fn pace(&self, ip: IpAddr) -> Option<Pace> {
        if self.limits.is_none() {
            return None;
        }
        let own = self.address_buckets(ip);
        let gate = |total: &Option<SharedBucket>, own: Option<SharedBucket>| {
            Gate::new(total.iter().cloned().chain(own).collect())
        };
        Some(Pace {
            send: gate(&self.send_total, own.send),
            receive: gate(&self.receive_total, own.receive),
        })
    }

    fn address_buckets(&self, ip: IpAddr) -> AddressBuckets {
        let per = (
            self.limits.send.per_address,
            self.limits.receive.per_address,
        );
        if per == (None, None) {
            return AddressBuckets {
                send: None,
                receive: None,
            };
        }
        let mut table = self.addresses.lock().expect("address buckets poisoned");
        // Forget the addresses no connection holds any more, now and then: the table stays
        // within twice the addresses connected.
        if table.pairs.len() >= 64.max(2 * table.swept) {
            table.pairs.retain(|_, b| b.in_use());
            table.swept = table.pairs.len();
        }
        table
            .pairs
            .entry(AddressKey::of(ip))
            .or_insert_with(|| AddressBuckets {
                send: per.0.map(shared),
                receive: per.1.map(shared),
            })
            .clone()
    }

    /// How many addresses have buckets held by a connection.
    #[cfg(test)]
    fn addresses_held(&self) -> usize {
        let table = self.addresses.lock().expect("address buckets poisoned");
        table.pairs.values().filter(|b| b.in_use()).count()
    }
}

/// A connection's pace that its server changes between requests: a reverse proxy's connection
/// carries the requests of many clients, each under its own address's limits.
#[derive(Debug, Default)]
pub struct PaceSwitch {
    /// How many times the pace was set: a stream takes the new one when this moves.
    sets: AtomicU64,
    next: Mutex<Option<Pace>>,
}

impl PaceSwitch {
    /// The pace from the stream's next read or write on.
    pub fn set(&self, pace: Option<Pace>) {
        *self.next.lock().expect("pace switch poisoned") = pace;
        self.sets.fetch_add(1, Ordering::Release);
    }
}

/// A stream under a [`Pace`], for servers that hand the stream to someone else (the HTTP
/// face's hyper): each read and write waits for its gate, moves at most a quantum, and is
/// charged. Without a pace it passes everything through.
#[derive(Debug)]
pub struct Paced<S> {
    inner: S,
    pace: Option<Box<Pace>>,
    /// Where a new pace comes from, and how many times it was set when last taken.
    switch: Option<(Arc<PaceSwitch>, u64)>,
    read_wait: Option<Pin<Box<tokio::time::Sleep>>>,
    write_wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Paced<S> {
    pub fn new(inner: S, pace: Option<Pace>) -> Self {
        Self {
            inner,
            pace: pace.filter(Pace::is_limited).map(Box::new),
            switch: None,
            read_wait: None,
            write_wait: None,
        }
    }

    /// A stream whose pace `switch` sets (none until it does).
    pub fn switched(inner: S, switch: Arc<PaceSwitch>) -> Self {
        let mut paced = Self::new(inner, None);
        paced.switch = Some((switch, 0));
        paced
    }

    /// Takes the switch's pace if it was set since last taken.
    fn refresh(&mut self) {
        let Some((switch, seen)) = &mut self.switch else {
            return;
        };
        let sets = switch.sets.load(Ordering::Acquire);
        if sets != *seen {
            *seen = sets;
            let pace = switch.next.lock().expect("pace switch poisoned").take();
            self.pace = pace.filter(Pace::is_limited).map(Box::new);
            (self.read_wait, self.write_wait) = (None, None);
        }
    }
}

/// Waits out `wait` if the gate is closed (arming it from `gate` first).
fn poll_gate(
    gate: &mut Gate,
    wait: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if wait.is_none() {
        if let Some(at) = gate.closed_until() {
            *wait = Some(Box::pin(tokio::time::sleep_until(at)));
        }
    }
    if let Some(sleep) = wait {
        ready!(sleep.as_mut().poll(cx));
        *wait = None;
    }
    Poll::Ready(())
}

impl<S: AsyncRead + Unpin> AsyncRead for Paced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.refresh();
        let Some(pace) = this.pace.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if !pace.receive.is_limited() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        ready!(poll_gate(&mut pace.receive, &mut this.read_wait, cx));
        let room = buf.remaining().min(pace.receive.quantum());
        let mut part = buf.take(room);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        // SAFETY: `part` is a view of `buf`'s unfilled memory; the inner read initialised and
        // filled its first `n` bytes.
        unsafe { buf.assume_init(n) };
        buf.advance(n);
        pace.receive.charge(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Paced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.refresh();
        let Some(pace) = this.pace.as_deref_mut().filter(|p| p.send.is_limited()) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        ready!(poll_gate(&mut pace.send, &mut this.write_wait, cx));
        let room = buf.len().min(pace.send.quantum());
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..room]))?;
        pace.send.charge(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.as_mut().get_mut().refresh();
        if self.pace.as_ref().is_some_and(|p| p.send.is_limited()) {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        // A switched stream may be limited later; its vectored writes then send one slice.
        self.pace.as_ref().is_none_or(|p| !p.send.is_limited()) && self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_goes_at_once_and_the_rest_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1_000_000, t0);
        // 50 ms at 1 MB/s: 50 KB go without a wait.
        assert_eq!(b.charge(50_000, t0), t0);
        // The next 10 KB are due 10 ms later.
        assert_eq!(b.charge(10_000, t0), at(t0, 10));
        // After a long pause the burst is back, no more.
        let later = at(t0, 10_000);
        assert_eq!(b.charge(50_000, later), later);
        assert_eq!(b.charge(1_000, later), at(later, 1));
    }

    #[test]
    fn the_quantum_is_the_burst_within_bounds() {
        let t0 = Instant::now();
        assert_eq!(Bucket::new(1_000_000, t0).quantum(), 50_000);
        assert_eq!(Bucket::new(1_000, t0).quantum(), MIN_QUANTUM);
        assert_eq!(Bucket::new(10_000_000_000, t0).quantum(), MAX_QUANTUM);
    }

    #[tokio::test]
    async fn a_switched_stream_moves_under_the_pace_last_set() {
        use tokio::io::AsyncWriteExt;
        let pacer = Pacer::new(Limits {
            send: Limit {
                total: None,
                per_address: Some(1_000),
            },
            receive: Limit::default(),
        });
        let switch = Arc::new(PaceSwitch::default());
        let (near, _far) = tokio::io::duplex(1 << 20);
        let mut paced = Paced::switched(near, Arc::clone(&switch));
        let data = vec![7u8; 100_000];
        // No pace set yet: a write takes all it is given.
        assert_eq!(paced.write(&data).await.unwrap(), data.len());
        // At 1 KB/s a write takes one quantum.
        switch.set(pacer.pace("192.0.2.1".parse().unwrap()));
        assert_eq!(paced.write(&data).await.unwrap(), MIN_QUANTUM as usize);
        // Another request, without a limit: all again, at once.
        switch.set(None);
        assert_eq!(paced.write(&data).await.unwrap(), data.len());
    }

    #[test]
    fn a_gate_waits_for_the_slowest_of_its_buckets() {
        let t0 = Instant::now();
        let fast = Arc::new(Mutex::new(Bucket::new(10_000_000, t0)));
        let slow = Arc::new(Mutex::new(Bucket::new(100_000, t0)));
        let mut gate = Gate::new(vec![fast, slow]);
        assert_eq!(gate.quantum(), 5_000);
        gate.charge_at(105_000, t0);
        // 105 KB at 100 KB/s, less the 50 ms burst (the fast bucket alone: 10.5 ms, at once).
        assert_eq!(gate.open_at, Some(at(t0, 1_000)));
    }

    #[test]
    fn addresses_share_a_bucket_and_are_forgotten_once_gone() {
        let pacer = Pacer::new(Limits {
            send: Limit {
                total: None,
                per_address: Some(1_000),
            },
            receive: Limit::default(),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (one, two) = (pacer.pace(a).unwrap(), pacer.pace(a).unwrap());
        assert!(Arc::ptr_eq(&one.send.buckets[0], &two.send.buckets[0]));
        assert!(!one.receive.is_limited());
        drop((one, two));
        assert_eq!(pacer.addresses_held(), 0);
        for i in 0..200u32 {
            drop(pacer.pace(IpAddr::from(i.to_be_bytes())));
        }
        let table = pacer.addresses.lock().unwrap();
        assert!(
            table.pairs.len() <= 64,
            "{} addresses kept",
            table.pairs.len()
        );
    }

    #[test]
    fn no_limits_no_pace() {
        assert!(Pacer::new(Limits::default())
            .pace("10.0.0.1".parse().unwrap())
            .is_none());
    }

    proptest! {
        /// Movers that wait as told never move more in any stretch of time than the rate allows,
        /// plus one burst and one move: whatever the sizes and pauses.
        #[test]
        fn movers_that_wait_as_told_stay_within_the_rate(
            rate in 1_000u64..100_000_000,
            movers in 1usize..4,
            moves in prop::collection::vec((0u64..4, 0u64..200, 0usize..3), 1..300),
        ) {
            let t0 = Instant::now();
            let mut bucket = Bucket::new(rate, t0);
            let quantum = bucket.quantum();
            // Movers sharing the bucket, each with its own next allowed start.
            let mut next = vec![t0; movers];
            let mut log: Vec<(Instant, u64)> = Vec::new();
            for (size, pause_ms, who) in moves {
                let who = who % movers;
                let n = quantum * size / 3 + 1;
                let start = next[who].max(log.last().map_or(t0, |l| l.0))
                    + Duration::from_millis(pause_ms);
                next[who] = bucket.charge(n, start).max(start);
                log.push((start, n));
            }
            let burst = rate * BURST.as_millis() as u64 / 1000;
            // Each mover may make one move on a start computed before the others' last charges.
            let slack = burst + movers as u64 * (quantum + 1) + 2;
            for (i, &(from, _)) in log.iter().enumerate() {
                let mut moved = 0;
                for &(when, n) in &log[i..] {
                    moved += n;
                    let span = (when - from).as_nanos();
                    let allowed = u128::from(rate) * span / 1_000_000_000
                        + u128::from(slack);
                    prop_assert!(u128::from(moved) <= allowed,
                        "{moved} bytes in {span} ns at {rate} B/s");
                }
            }
        }
    }
}
