//! Replacements and the one backoff on boots.

use super::*;

/// Issue 13: a boot the cloud refuses while a failed VM waits for its replacement. The
/// shell used to drop boots while its own backoff held, after the group had already
/// taken the failed VM off its list: `autoscaler.vm.replaced` was never sent for it, and
/// that tick's row counted a boot nobody asked for. Now the group holds the boots itself
/// (one backoff, fed by the cloud's refusals), the refused boot's failed VM waits for the
/// next boot, and rows count only boots asked for.
#[test]
fn issue_13_a_refused_boot_keeps_its_replacement_and_rows_count_only_boots_asked_for() {
    let mut site = Site::ready(1, &["w1"]);
    site.tick(Some(LOW));
    site.set_status("w1", VmStatus::Shutoff);
    let actions = site.tick(Some(LOW));
    assert_eq!(deleted(&actions), ["id-w1"]);
    assert_eq!(web_boots(&actions), [Some("w1".to_owned())]);
    assert_eq!(record(&actions).vms_booting, 1);
    site.gone("w1");

    // The cloud refuses it: the operator is told, and boots wait 2 s.
    let refusal = site.refused(Role::Web, "shop-web-2");
    let failed = &notified(&refusal, "autoscaler.vm.boot_failed")[0];
    assert_eq!(
        (&failed["vm_name"], &failed["error"], &failed["retryable"]),
        (
            &serde_json::json!("shop-web-2"),
            &serde_json::json!("over quota"),
            &serde_json::json!(true)
        )
    );
    let t_refused = site.now;
    let mut held = Vec::new();
    while site.web_boots().len() < 2 {
        let actions = site.tick(Some(LOW));
        if web_boots(&actions).is_empty() {
            held.push(record(&actions).vms_booting);
        }
        assert!(site.now < t_refused + 10.0, "no boot after the hold");
    }
    assert!(!held.is_empty(), "the refusal holds boots back");
    assert!(held.iter().all(|b| *b == 0), "nothing is booting: {held:?}");
    let (t_retry, replaces) = site.web_boots()[1].clone();
    assert!(t_retry >= t_refused + 2.0, "{t_retry} after {t_refused}");
    assert_eq!(replaces.as_deref(), Some("w1"), "the retry still names w1");

    // Accepted: the operator learns that w1 was replaced, by which VM.
    site.booted(web("w2", VmStatus::Build, "127.0.1.11", site.now));
    let replaced = site.ticks_notifying("autoscaler.vm.replaced");
    assert_eq!(replaced, [t_retry]);
    let (_, actions) = site.log.last().unwrap();
    let payload = &notified(actions, "autoscaler.vm.replaced")[0];
    assert_eq!(
        (
            &payload["failed_vm_name"],
            &payload["vm_name"],
            &payload["vm_id"]
        ),
        (
            &serde_json::json!("w1"),
            &serde_json::json!("w2"),
            &serde_json::json!("id-w2")
        )
    );
}

/// VMs that die before they are ever heard (a broken image) and boots the cloud refuses
/// feed the same backoff: 2, 4, 8 ... s between boots, until a VM booted after the last
/// failure is heard.
#[test]
fn boots_that_keep_failing_are_held_back_longer_until_a_vm_is_heard() {
    let mut site = Site::settled(1).splitter("s", VmStatus::Active);
    site.agents_heard = true;
    site.auto_ack = true;
    let mut boots_at = Vec::new();
    for n in 0..4 {
        // Wait for the boot, have it refused.
        loop {
            let actions = site.tick(None);
            if !web_boots(&actions).is_empty() {
                boots_at.push(site.now);
                break;
            }
            assert!(site.now < 100.0);
        }
        site.refused(Role::Web, &format!("w{n}"));
    }
    let gaps: Vec<f64> = boots_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [2.0, 4.0, 8.0], "{boots_at:?}");
    // The fifth is accepted and its VM is heard: the backoff is over.
    while web_boots(&site.tick(None)).is_empty() {}
    site.booted(web("w9", VmStatus::Active, "127.0.1.19", site.now));
    site.tick(None);
    assert!(site.g.backoff.allows(at(site.now)));
    assert_eq!(site.g.backoff.last_failure(), None);
}
