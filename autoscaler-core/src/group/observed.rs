//! What the group is told and what it asks for: the tick's observation of the cloud and
//! the heartbeats ([`Observed`]), the cloud's answers to what the group asked
//! ([`BootOutcome`]), the actions for the service to carry out ([`Action`]), and the
//! rules' parameters ([`GroupSettings`]).

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    cloud::{Vm, VmId},
    notification::Notification,
    payload::Role,
    policy::PolicyOpts,
    pool::PoolUpdate,
    timeseries::Row,
};

/// What the conductor knows of one VM from its heartbeats.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatInfo {
    pub last: DateTime<Utc>,
    /// Whether the VM's own server answered its agent.
    pub serving: Option<bool>,
    /// The site's URL, as the splitter's agent announces it.
    pub url: Option<String>,
    /// The address the VM's server listens on, as its agent announces it; used only when
    /// the cloud reports none (Nova's fake virt driver reports none).
    pub address: Option<IpAddr>,
}

/// What the service observed for [`Group::step`](super::Group::step) each tick.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The cloud's view of the group's VMs.
    pub vms: Vec<Vm>,
    /// By VM name (the agents' `vm_id`).
    pub heartbeats: BTreeMap<String, HeartbeatInfo>,
    /// Whether the conductor's own broker link is up: silence is only evidence of a dead
    /// VM when the conductor can hear at all.
    pub link_up: bool,
    /// Since when the conductor's link has been up, as the service saw it; a group
    /// created later must not wait its own grace period. `None`: from this group's view.
    pub link_up_since: Option<DateTime<Utc>>,
}

/// The cloud's answer to an [`Action::Boot`].
#[derive(Debug, Clone, PartialEq)]
pub struct BootOutcome {
    pub role: Role,
    /// The name the boot asked for.
    pub name: String,
    /// As the action said.
    pub replaces: Option<String>,
    pub result: Result<VmId, BootRefusal>,
}

/// Why the cloud refused a boot, for the operator and the backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct BootRefusal {
    pub error: String,
    /// Whether the same boot may succeed later without anyone changing anything.
    pub retryable: bool,
}

/// What the service must do. It carries every action out; it never second-guesses one.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Boot a VM of `role`; when it replaces a failed VM, that VM's name. The service
    /// reports the cloud's answer with [`Group::booted`](super::Group::booted).
    Boot {
        role: Role,
        replaces: Option<String>,
    },
    /// Delete a VM; the service reports the answer with
    /// [`Group::deleted`](super::Group::deleted).
    Delete(VmId),
    PublishPool(PoolUpdate),
    Notify(Notification),
    /// One row of the group's time series (one a tick).
    Record(Row),
    /// The group is gone: forget the template.
    Forget,
}

/// The rules' parameters, from `[conductor]`, `[agent]` and `[policy]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSettings {
    pub heartbeat_timeout: Duration,
    pub drain_timeout: Duration,
    pub boot_timeout: Duration,
    /// How long a web VM whose server answered before may not answer before it has
    /// failed (its server died under a live agent).
    pub not_serving_timeout: Duration,
    /// How recent the newest heartbeat of a group must be for the conductor to count as
    /// hearing its VMs (about two heartbeat intervals, within half the timeout).
    pub hearing_window: Duration,
    pub policy: PolicyOpts,
}

/// Time from `since` to `now`; zero when `since` is later.
pub fn elapsed(now: DateTime<Utc>, since: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

/// Whether `last` is within `timeout` of `now` (a heartbeat from the future is fresh).
pub fn within(now: DateTime<Utc>, last: DateTime<Utc>, timeout: Duration) -> bool {
    elapsed(now, last) <= timeout
}
