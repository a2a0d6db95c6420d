//! The rule for one VM: [`judge`] says whether, and why, it has failed, from the facts
//! the health stage gathered ([`VmFacts`]) and whether silence is evidence now
//! ([`Hearing`]). The simulator applies it to its own VMs.
//!
//! A web VM whose server stops answering its agent is failed after `not_serving_timeout`
//! if it answered before (its server died under a live agent: issue 16, item 1), and
//! only past `boot_timeout` if it never did (it is still booting).

use std::time::Duration;

use super::super::GroupSettings;
use crate::{cloud::VmStatus, notification::Cause};

/// What [`judge`] looks at for one VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VmFacts {
    pub status: VmStatus,
    /// Since the VM was created.
    pub age: Duration,
    /// Whether the conductor ever heard it (since it started).
    pub heard_before: bool,
    /// Heard within `heartbeat_timeout`.
    pub fresh: bool,
    /// How long its agent has said its server does not answer.
    pub unserving_for: Option<Duration>,
    /// Whether its agent ever said its server answers (since the conductor started).
    pub served_before: bool,
}

/// Whether the conductor can judge silence now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hearing {
    /// Past the grace period after the broker link came up.
    pub settled: bool,
    /// Some VM of the group heard within the hearing window.
    pub anyone_heard: bool,
}

/// Why `vm` has failed, or `None` when it has not.
pub fn judge(vm: &VmFacts, hearing: Hearing, settings: &GroupSettings) -> Option<Cause> {
    let Hearing {
        settled,
        anyone_heard,
    } = hearing;
    let past_boot = settled && vm.age >= settings.boot_timeout;
    if matches!(vm.status, VmStatus::Error | VmStatus::Shutoff) {
        Some(Cause::Status)
    } else if vm.status == VmStatus::Active
        && settled
        && anyone_heard
        && vm.heard_before
        && !vm.fresh
    {
        // Only a VM that has spoken before is silent (a VM booting is not).
        Some(Cause::HeartbeatLost)
    } else if past_boot && (vm.status == VmStatus::Build || (!vm.heard_before && anyone_heard)) {
        // Never heard since this conductor started: only evidence while others are
        // heard (after a broker restart, agents may take a while to return).
        Some(Cause::BootTimeout)
    } else if vm.unserving_for.is_some_and(|t| {
        if vm.served_before {
            // A positive report from a live agent: no grace period needed.
            t >= settings.not_serving_timeout
        } else {
            past_boot && t > settings.heartbeat_timeout
        }
    }) {
        Some(Cause::NotServing)
    } else {
        None
    }
}
