//! The splitter as mod_jk's load balancer balances: by request count (`method=Request`,
//! the default; mod_jk's `jk_lb_worker.c`). Each member keeps a value, the request
//! goes to the member with the lowest, and the value grows by one. Draining, failed and
//! removed members take no new requests. A member that joins starts at the largest value
//! of the others, as mod_jk does for a worker that recovers, so it is not flooded.
//! Ties go to the member listed first (lowest VM number: the pool is sorted by name).
//!
//! Not modelled: lb factors (all 1), mod_jk's periodic halving of the values (it keeps
//! the order), retries of a failed request on another member.

use std::collections::BTreeSet;

/// The members taking requests, by VM number.
#[derive(Debug, Default, Clone)]
pub struct Splitter {
    /// lb value per VM number, `None` when the VM takes no requests.
    values: Vec<Option<u64>>,
    order: BTreeSet<(u64, u32)>,
}

impl Splitter {
    /// `vm` joins the pool as active.
    pub fn add(&mut self, vm: u32) {
        if self.is_routed(vm) {
            return;
        }
        let start = self.order.last().map_or(0, |&(v, _)| v);
        let i = vm as usize;
        if self.values.len() <= i {
            self.values.resize(i + 1, None);
        }
        self.values[i] = Some(start);
        self.order.insert((start, vm));
    }

    /// `vm` takes no new requests any more (draining, failed, removed).
    pub fn stop_routing(&mut self, vm: u32) {
        if let Some(v) = self.values.get_mut(vm as usize).and_then(Option::take) {
            self.order.remove(&(v, vm));
        }
    }

    pub fn is_routed(&self, vm: u32) -> bool {
        self.values.get(vm as usize).is_some_and(Option::is_some)
    }

    /// The member for the next request; `None` when no member is active (mod_jk
    /// answers 503).
    pub fn pick(&mut self) -> Option<u32> {
        let (v, vm) = self.order.pop_first()?;
        self.order.insert((v + 1, vm));
        self.values[vm as usize] = Some(v + 1);
        Some(vm)
    }

    /// Members taking requests.
    pub fn active(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_request_count_skipping_members_that_left() {
        let mut s = Splitter::default();
        s.add(0);
        s.add(1);
        s.add(2);
        let picks: Vec<u32> = (0..6).filter_map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        s.stop_routing(1);
        let picks: Vec<u32> = (0..4).filter_map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(s.active(), 2);
        assert!(!s.is_routed(1));
    }

    #[test]
    fn a_new_member_is_not_flooded() {
        let mut s = Splitter::default();
        s.add(0);
        for _ in 0..100 {
            s.pick();
        }
        s.add(1);
        let picks: Vec<u32> = (0..4).filter_map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 1, 0, 1], "shares from now on, no backlog of 100");
        s.stop_routing(0);
        s.stop_routing(1);
        assert_eq!(s.pick(), None);
    }
}
