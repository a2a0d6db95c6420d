//! The local driver's loopback addresses: which addresses of `[local] address_pool` a VM
//! may get, which are held, and the lowest free one for the next VM. Pure bookkeeping; the
//! held set is rebuilt from the VM records when the driver starts.
//!
//! Never given out: the network's first address (its network address), its last (its
//! broadcast address), and 127.0.1.1, which Debian's `/etc/hosts` maps to the host name.

use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::conf::CidrV4;

/// Debian maps the machine's host name to this address in `/etc/hosts`.
const DEBIAN_HOSTNAME_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 1);

#[derive(Debug, Clone)]
pub(super) struct AddressPool {
    cidr: CidrV4,
    /// Addresses held by VMs; may include addresses outside the pool, held by VMs booted
    /// before `address_pool` was changed.
    held: BTreeSet<Ipv4Addr>,
}

impl AddressPool {
    pub(super) fn new(cidr: CidrV4) -> Self {
        AddressPool {
            cidr,
            held: BTreeSet::new(),
        }
    }

    pub(super) fn cidr(&self) -> CidrV4 {
        self.cidr
    }

    /// Whether the pool may give `addr` to a VM at all.
    pub(super) fn is_usable(&self, addr: Ipv4Addr) -> bool {
        self.cidr.contains(addr)
            && addr != self.cidr.network()
            && addr != self.cidr.last()
            && addr != DEBIAN_HOSTNAME_ADDRESS
    }

    /// How many addresses the pool can give out in all.
    pub(super) fn usable(&self) -> usize {
        // The prefix is 8..=30, so the size fits a u32 and is at least 4.
        let size = 1usize << (32 - u32::from(self.cidr.prefix()));
        let debian = usize::from(self.cidr.contains(DEBIAN_HOSTNAME_ADDRESS));
        size - 2 - debian
    }

    /// Holds and returns the lowest usable address no VM holds; `None` when there is none.
    pub(super) fn allocate(&mut self) -> Option<Ipv4Addr> {
        let addr = self
            .cidr
            .addresses()
            .find(|a| self.is_usable(*a) && !self.held.contains(a))?;
        self.held.insert(addr);
        Some(addr)
    }

    /// Marks `addr` held (a VM found at start-up); false when it already was.
    pub(super) fn hold(&mut self, addr: Ipv4Addr) -> bool {
        self.held.insert(addr)
    }

    /// Frees `addr` for the next VM.
    pub(super) fn release(&mut self, addr: Ipv4Addr) {
        self.held.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(text: &str) -> AddressPool {
        AddressPool::new(text.parse().unwrap())
    }

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 1, last)
    }

    #[test]
    fn skips_network_last_and_debian_hostname_address() {
        let mut p = pool("127.0.1.0/24");
        assert_eq!(p.usable(), 253);
        // .0 is the network, .1 Debian's host name: the first VM gets .2.
        assert_eq!(p.allocate(), Some(ip(2)));
        assert_eq!(p.allocate(), Some(ip(3)));
        for addr in [ip(0), ip(1), ip(255)] {
            assert!(!p.is_usable(addr), "{addr}");
        }
        let mut all = vec![ip(2), ip(3)];
        while let Some(addr) = p.allocate() {
            all.push(addr);
        }
        assert_eq!(all.len(), 253);
        assert_eq!(all.last(), Some(&ip(254)));
        assert!(!all.contains(&ip(255)) && !all.contains(&ip(1)));
    }

    #[test]
    fn pools_without_the_debian_address_lose_only_two() {
        let mut p = pool("127.0.9.0/28");
        assert_eq!(p.usable(), 14);
        assert_eq!(p.allocate(), Some(Ipv4Addr::new(127, 0, 9, 1)));
        assert!(!p.is_usable(Ipv4Addr::new(127, 0, 9, 15)));
        assert!(!p.is_usable(Ipv4Addr::new(127, 0, 9, 16)));
    }

    #[test]
    fn exhaustion_then_release_gives_the_freed_address_back() {
        let mut p = pool("127.0.9.4/30");
        assert_eq!(p.usable(), 2);
        let a = p.allocate().unwrap();
        let b = p.allocate().unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(127, 0, 9, 5), Ipv4Addr::new(127, 0, 9, 6))
        );
        assert_eq!(p.allocate(), None);
        p.release(a);
        assert_eq!(p.allocate(), Some(a));
        assert_eq!(p.allocate(), None);
    }

    #[test]
    fn held_addresses_from_records_are_skipped() {
        let mut p = pool("127.0.1.0/29");
        assert!(p.hold(ip(2)));
        assert!(!p.hold(ip(2)));
        // An address outside the pool (the pool was changed since) is held but harmless.
        assert!(p.hold(Ipv4Addr::new(127, 0, 2, 7)));
        assert_eq!(p.allocate(), Some(ip(3)));
        // The /30 around the Debian address has one usable address left.
        let mut tiny = pool("127.0.1.0/30");
        assert_eq!(tiny.usable(), 1);
        assert_eq!(tiny.allocate(), Some(ip(2)));
        assert_eq!(tiny.allocate(), None);
    }
}
