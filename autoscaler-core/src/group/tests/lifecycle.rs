//! The lifecycle: tear-down in order, and forgetting the template.

use super::*;

#[test]
fn destroy_stops_the_splitter_first_then_deletes_everything_then_forgets() {
    let mut site = Site::settled(1)
        .splitter("s", VmStatus::Active)
        .web("w1", VmStatus::Active);
    site.heard_all(1.0);
    site.tick_at(1.0, None);
    site.g.destroy();
    let actions = site.tick_at(2.0, None);
    let stop = &pools(&actions)[0];
    assert!(!stop.listening);
    assert!(
        deleted(&actions).is_empty(),
        "nothing deleted before the splitter stopped"
    );
    assert_eq!(site.g.phase, Phase::Stopping);

    site.ack(stop.generation);
    site.heard_all(2.5);
    let actions = site.tick_at(3.0, None);
    assert_eq!(site.g.phase, Phase::Deleting);
    assert_eq!(deleted(&actions), ["id-s", "id-w1"]);
    assert!(
        boots(&actions).is_empty(),
        "no replacement while tearing down"
    );
    // Deletes in flight are not asked again.
    assert!(deleted(&site.tick_at(4.0, None)).is_empty());
    site.gone("s");
    site.gone("w1");
    let done = site.tick_at(5.0, None);
    assert_eq!(done, vec![Action::Forget]);
    assert_eq!(site.g.phase, Phase::Gone);
}

#[test]
fn a_splitter_that_never_acknowledges_the_stop_is_deleted_after_drain_timeout() {
    let mut site = Site::settled(0).splitter("s", VmStatus::Active);
    site.tick_at(0.0, None);
    site.g.destroy();
    site.tick_at(1.0, None);
    site.tick_at(20.0, None);
    assert_eq!(site.g.phase, Phase::Stopping);
    let actions = site.tick_at(31.5, None);
    assert_eq!(site.g.phase, Phase::Deleting);
    assert_eq!(deleted(&actions), ["id-s"]);
}

#[test]
fn a_removal_is_refused_for_the_splitter_an_unknown_vm_and_while_destroying() {
    let mut site = Site::ready(1, &["w1"]);
    let now = at(site.now);
    assert!(matches!(
        site.g.remove_vm("s", now),
        Err(RemoveError::Splitter { .. })
    ));
    assert!(matches!(
        site.g.remove_vm("nope", now),
        Err(RemoveError::NotFound { .. })
    ));
    site.g.destroy();
    assert!(matches!(
        site.g.remove_vm("w1", now),
        Err(RemoveError::Destroying { .. })
    ));
}
