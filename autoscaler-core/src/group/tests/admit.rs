//! Admission (issue 17): who may speak for the group.

use super::*;
use crate::group::Refusal;

fn ack(vm: &str, generation: u64) -> PoolAck {
    PoolAck {
        group: "shop".into(),
        vm_id: vm.into(),
        generation,
        outcome: PoolOutcome::Applied,
    }
}

#[test]
fn only_listed_vms_speak_in_the_role_the_cloud_gave_them() {
    let site = Site::ready(1, &["w1"]);
    assert_eq!(site.g.admits("w1", Role::Web), Ok(()));
    assert_eq!(site.g.admits("s", Role::Splitter), Ok(()));
    for (vm, role) in [
        ("w1", Role::Splitter),
        ("s", Role::Web),
        ("made-up", Role::Web),
    ] {
        assert_eq!(
            site.g.admits(vm, role),
            Err(Refusal::NotListed {
                vm: vm.into(),
                role
            })
        );
    }
    assert!(site.g.lists("w1") && !site.g.lists("made-up"));
}

#[test]
fn metrics_and_acks_only_from_the_splitter() {
    let site = Site::ready(1, &["w1"]);
    assert_eq!(site.g.admits_splitter("s"), Ok(()));
    assert_eq!(
        site.g.admits_splitter("w1"),
        Err(Refusal::NotSplitter { vm: "w1".into() })
    );
    assert_eq!(
        site.g.admits_ack(&ack("w1", 1)),
        Err(Refusal::NotSplitter { vm: "w1".into() })
    );
}

/// Issue 17: an acknowledgement of 2^64-1 would mark every later pool applied.
#[test]
fn an_ack_of_a_generation_never_sent_is_refused() {
    let site = Site::ready(1, &["w1"]);
    let sent = site.pool().generation;
    assert_eq!(site.g.admits_ack(&ack("s", sent)), Ok(()));
    assert_eq!(
        site.g.admits_ack(&ack("s", u64::MAX)),
        Err(Refusal::FutureGeneration {
            claimed: u64::MAX,
            sent
        })
    );
}
