//! Connections per address, shared by every face of a server: one host (or one IPv6 /64, what a
//! single subscriber usually gets) cannot take the connection slots everyone else needs.

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

#[cfg(test)]
mod tests {
    use super::*;

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
