//! Which conductor should own which group: rendezvous (highest random weight) hashing over
//! the live conductors. Pure.
//!
//! Every conductor computes the same answer from the same inputs (the live hosts from the
//! service records, the group names), with no coordination: each group goes to the host
//! with the highest `weight(host, group)`. When a conductor joins, only the groups it now
//! wins move (to it); when one leaves, only its groups move, spread over the others. The
//! leases still decide who *does* own a group: this only says who should try to.
//!
//! The weight must be the same in every process and every build, so it is FNV-1a (64-bit)
//! over `host`, a 0 byte and `group`, finished with SplitMix64's mixer so that names
//! differing in one character get unrelated weights. Not `std`'s hasher, whose output may
//! change between Rust releases.

use std::collections::BTreeMap;

/// FNV-1a's 64-bit offset basis and prime (Fowler, Noll, Vo; IETF draft-eastlake-fnv).
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The weight of `host` for `group`.
pub fn weight(host: &str, group: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for byte in host.bytes().chain([0]).chain(group.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // SplitMix64's finalizer (Steele, Lea, Flood 2014).
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The host that should own `group`, or `None` when no host is live. Ties (astronomically
/// rare) go to the smaller host name, so the answer never depends on the order of `hosts`.
pub fn owner<'h>(group: &str, hosts: &'h [String]) -> Option<&'h str> {
    hosts
        .iter()
        .map(|h| (weight(h, group), std::cmp::Reverse(h.as_str())))
        .max()
        .map(|(_, std::cmp::Reverse(h))| h)
}

/// Every group's host, as host → groups (by name); hosts with no group are listed empty.
pub fn spread(groups: &[String], hosts: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut plan: BTreeMap<String, Vec<String>> =
        hosts.iter().map(|h| (h.clone(), Vec::new())).collect();
    for group in groups {
        if let Some(host) = owner(group, hosts) {
            plan.entry(host.to_owned()).or_default().push(group.clone());
        }
    }
    for owned in plan.values_mut() {
        owned.sort();
    }
    plan
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn the_weight_is_fixed_across_builds() {
        // Pinned: changing the weight moves groups between conductors of different
        // versions during an upgrade, so it must never change by accident.
        // The value was computed independently (a Python transcription of FNV-1a + SplitMix64).
        assert_eq!(weight("conductor-1", "shop"), 0x6ba9_fcc6_c012_6dfa);
        assert_ne!(weight("a", "bc"), weight("ab", "c"));
    }

    #[test]
    fn no_host_no_owner() {
        assert_eq!(owner("shop", &[]), None);
        assert!(spread(&names("g", 3), &[]).is_empty());
    }

    #[test]
    fn a_thousand_sites_split_evenly_over_two_conductors() {
        // The scale goal: 1,000 sites on two conductors.
        let plan = spread(&names("site-", 1000), &names("conductor-", 2));
        let counts: Vec<usize> = plan.values().map(Vec::len).collect();
        assert_eq!(counts.iter().sum::<usize>(), 1000);
        for n in counts {
            assert!(
                (450..=550).contains(&n),
                "{n} of 1000 on one of two conductors"
            );
        }
    }

    proptest! {
        #[test]
        fn every_group_has_exactly_one_live_owner(
            hosts in prop::collection::btree_set("[a-z]{1,8}", 1..6),
            groups in prop::collection::btree_set("[a-z0-9-]{1,12}", 0..40),
        ) {
            let hosts: Vec<String> = hosts.into_iter().collect();
            let groups: Vec<String> = groups.into_iter().collect();
            let plan = spread(&groups, &hosts);
            let mut all: Vec<String> = plan.values().flatten().cloned().collect();
            all.sort();
            prop_assert_eq!(&all, &groups);
            prop_assert!(plan.keys().all(|h| hosts.contains(h)));
        }

        #[test]
        fn the_order_of_hosts_does_not_matter(
            hosts in prop::collection::vec("[a-z]{1,8}", 1..6),
            group in "[a-z0-9-]{1,12}",
        ) {
            let mut reversed = hosts.clone();
            reversed.reverse();
            prop_assert_eq!(owner(&group, &hosts), owner(&group, &reversed));
        }

        #[test]
        fn a_leaving_host_moves_only_its_own_groups(
            hosts in prop::collection::btree_set("[a-z]{1,8}", 2..6),
            groups in prop::collection::btree_set("[a-z0-9-]{1,12}", 1..40),
            leaving in any::<prop::sample::Index>(),
        ) {
            let hosts: Vec<String> = hosts.into_iter().collect();
            let gone = leaving.get(&hosts).clone();
            let rest: Vec<String> = hosts.iter().filter(|h| **h != gone).cloned().collect();
            for group in &groups {
                let before = owner(group, &hosts).unwrap();
                let after = owner(group, &rest).unwrap();
                if before != gone {
                    prop_assert_eq!(before, after, "group {} moved", group);
                }
            }
        }

        #[test]
        fn a_joining_host_only_takes_groups(
            hosts in prop::collection::btree_set("[a-z]{1,8}", 1..6),
            groups in prop::collection::btree_set("[a-z0-9-]{1,12}", 1..40),
            newcomer in "[A-Z]{1,8}",
        ) {
            let hosts: Vec<String> = hosts.into_iter().collect();
            let mut more = hosts.clone();
            more.push(newcomer.clone());
            for group in &groups {
                let before = owner(group, &hosts).unwrap();
                let after = owner(group, &more).unwrap();
                prop_assert!(after == before || after == newcomer);
            }
        }
    }
}
