//! The splitter as mod_jk's load balancer balances: by request count (`method=Request`,
//! the default; mod_jk's `jk_lb_worker.c`). Each member keeps a value, the request
//! goes to the member with the lowest, and the value grows by one. Draining, failed and
//! removed members take no new requests. A member that joins starts at the largest value
//! of the others, as mod_jk does for a worker that recovers, so it is not flooded.
//! Ties go to the member listed first (lowest VM number: the pool is sorted by name).
//!
//! Not modelled: lb factors (all 1), mod_jk's periodic halving of the values (it keeps
//! the order), retries of a failed request on another member.

use std::{cmp::Reverse, collections::BinaryHeap};

/// The members taking requests, by VM number.
///
/// A min-heap of (value, VM, join) with lazy deletion: a member that leaves is only
/// marked, and its entry is dropped when it comes up. Picks come out in the order of
/// (value, VM number), as a sorted set would give them, at a heap's cost (the simulator
/// routes every request through here).
#[derive(Debug, Default, Clone)]
pub struct Splitter {
    /// Per VM number: its value and join count while it takes requests.
    members: Vec<Option<(u64, u32)>>,
    joins: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    active: usize,
}

impl Splitter {
    /// `vm` joins the pool as active.
    pub fn add(&mut self, vm: u32) {
        if self.is_routed(vm) {
            return;
        }
        let start = self
            .members
            .iter()
            .flatten()
            .map(|m| m.0)
            .max()
            .unwrap_or(0);
        let i = vm as usize;
        if self.members.len() <= i {
            self.members.resize(i + 1, None);
            self.joins.resize(i + 1, 0);
        }
        self.joins[i] += 1;
        let join = self.joins[i];
        self.members[i] = Some((start, join));
        self.heap.push(Reverse((start, vm, join)));
        self.active += 1;
    }

    /// `vm` takes no new requests any more (draining, failed, removed).
    pub fn stop_routing(&mut self, vm: u32) {
        if self
            .members
            .get_mut(vm as usize)
            .and_then(Option::take)
            .is_some()
        {
            self.active -= 1;
        }
    }

    pub fn is_routed(&self, vm: u32) -> bool {
        self.members.get(vm as usize).is_some_and(Option::is_some)
    }

    /// The member for the next request; `None` when no member is active (mod_jk
    /// answers 503).
    pub fn pick(&mut self) -> Option<u32> {
        while let Some(Reverse((value, vm, join))) = self.heap.pop() {
            if self.members[vm as usize] != Some((value, join)) {
                continue; // left since
            }
            self.members[vm as usize] = Some((value + 1, join));
            self.heap.push(Reverse((value + 1, vm, join)));
            return Some(vm);
        }
        None
    }

    /// Members taking requests.
    pub fn active(&self) -> usize {
        self.active
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
    fn a_member_that_leaves_and_joins_again_is_counted_once() {
        let mut s = Splitter::default();
        s.add(0);
        s.add(1);
        s.stop_routing(0);
        s.add(0);
        assert_eq!(s.active(), 2);
        let picks: Vec<u32> = (0..4).filter_map(|_| s.pick()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
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
