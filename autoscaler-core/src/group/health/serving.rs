//! What the agents said about their servers, as health needs it: since when a web VM's
//! server has not answered (`unserving_since`), and whether it ever answered since this
//! conductor started (`served`): a server that answered and stopped has died (issue 16,
//! item 1), one that never answered is still booting.

use chrono::{DateTime, Utc};

use super::super::{Group, Observed};

/// Takes in this tick's heartbeats.
pub(super) fn note(group: &mut Group, now: DateTime<Utc>, obs: &Observed) {
    group
        .unserving_since
        .retain(|name, _| obs.heartbeats.get(name).and_then(|h| h.serving) == Some(false));
    for (name, hb) in &obs.heartbeats {
        if hb.serving == Some(false) {
            group.unserving_since.entry(name.clone()).or_insert(now);
        }
    }
    // Bounded by the cloud's VMs of the group, not by what agents say.
    group
        .served
        .retain(|name| obs.vms.iter().any(|vm| &vm.name == name));
    for vm in &obs.vms {
        if obs.heartbeats.get(&vm.name).and_then(|h| h.serving) == Some(true) {
            group.served.insert(vm.name.clone());
        }
    }
}
