//! Connections per address, shared by every face of a server: one host (or one IPv6 /64, what a
//! single subscriber usually gets) cannot take the connection slots everyone else needs. And
//! turns for costly work a short request can ask for (a search of the whole share): one at a
//! time per address, a few in all, so no address keeps the machine busy with them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key addresses are counted under: the address itself for IPv4, its /64 for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey(u128);

impl AddressKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                None => Self((u128::from(v6) >> 64) << 64 | 1 << 32),
            },
        }
    }
}

/// How many connections each address holds open, with a cap.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    open: Mutex<HashMap<AddressKey, usize>>,
}

/// One connection counted against its address until dropped.
#[derive(Debug)]
pub struct AddressSlot {
    table: Arc<PerAddress>,
    key: AddressKey,
}

impl PerAddress {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::default(),
        })
    }

    /// Counts a new connection from `ip`, or `None` if that address is at its cap.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = AddressKey::of(ip);
        let mut open = self.open.lock().expect("address table poisoned");
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: Arc::clone(self),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("address table poisoned");
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Turns at a costly operation: one address runs one at a time, and at most `total` run at
/// once; the rest wait in line.
#[derive(Debug)]
pub struct Turns {
    total: Arc<tokio::sync::Semaphore>,
    /// Each address with someone running or waiting: its lock, and how many hold or wait for
    /// it (the entry goes when that falls to zero).
    own: Arc<Mutex<HashMap<AddressKey, Line>>>,
}

#[derive(Debug, Default)]
struct Line {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// A turn, held until dropped (owned, so it may go with work handed to another thread).
#[derive(Debug)]
pub struct Turn {
    // Dropped in this order: the address's lock before its place in line is given up.
    _total: tokio::sync::OwnedSemaphorePermit,
    _own: Option<tokio::sync::OwnedMutexGuard<()>>,
    _place: Option<InLine>,
}

/// A place in an address's line: counted from the start of the wait, so a wait given up
/// (its request dropped) leaves nothing behind either.
#[derive(Debug)]
struct InLine {
    own: Arc<Mutex<HashMap<AddressKey, Line>>>,
    key: AddressKey,
}

impl Turns {
    pub fn new(total: usize) -> Self {
        Self {
            total: Arc::new(tokio::sync::Semaphore::new(total.max(1))),
            own: Arc::default(),
        }
    }

    /// Waits for a turn of `from`'s (an unknown address waits for the total only).
    pub async fn take(&self, from: Option<IpAddr>) -> Turn {
        let (place, own) = match from.map(AddressKey::of) {
            Some(key) => {
                let lock = {
                    let mut own = self.own.lock().expect("turns poisoned");
                    let line = own.entry(key).or_default();
                    line.users += 1;
                    Arc::clone(&line.lock)
                };
                let place = InLine {
                    own: Arc::clone(&self.own),
                    key,
                };
                (Some(place), Some(lock.lock_owned().await))
            }
            None => (None, None),
        };
        let total = Arc::clone(&self.total)
            .acquire_owned()
            .await
            .expect("never closed");
        Turn {
            _total: total,
            _own: own,
            _place: place,
        }
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        let mut own = self.own.lock().expect("turns poisoned");
        if let Some(line) = own.get_mut(&self.key) {
            line.users -= 1;
            if line.users == 0 {
                own.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_takes_one_turn_at_a_time_within_the_total() {
        let turns = Turns::new(2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let first = turns.take(Some(a)).await;
        let wait = std::time::Duration::from_millis(20);
        assert!(
            tokio::time::timeout(wait, turns.take(Some(a)))
                .await
                .is_err(),
            "a second turn of one address waits"
        );
        let other = turns.take(Some(b)).await;
        assert!(
            tokio::time::timeout(wait, turns.take(Some(c)))
                .await
                .is_err(),
            "past the total, a third address waits"
        );
        drop(first);
        let again = turns.take(Some(a)).await;
        drop((again, other));
        assert!(turns.own.lock().unwrap().is_empty(), "no address is kept");
    }

    #[test]
    fn an_address_is_capped_and_its_slots_come_back() {
        let t = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (s1, _s2) = (t.take(a).unwrap(), t.take(a).unwrap());
        assert!(t.take(a).is_none());
        assert!(t.take(b).is_some(), "another address is not affected");
        drop(s1);
        assert!(t.take(a).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = PerAddress::new(1);
        let _x = t.take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(t.take("2001:db8:1:2::ffff".parse().unwrap()).is_none());
        assert!(t.take("2001:db8:1:3::1".parse().unwrap()).is_some());
        let _v4 = t.take("192.0.2.1".parse().unwrap()).unwrap();
        assert!(t.take("::ffff:192.0.2.1".parse().unwrap()).is_none());
    }
}
