//! One template's site as the conductor steers it: boot the splitter and the minimum of
//! web VMs, put the web VMs that are up into the splitter's pool, size the group with
//! the policy, notice VMs that die or go silent, remove VMs by draining them, and tear
//! everything down without failing a request.
//!
//! Pure: [`Group::step`] takes the time and what was observed (the cloud's view and the
//! heartbeats) and returns the [`Action`]s for the service to carry out; the splitter's
//! metrics and acknowledgements and the cloud's answers come in through the intake
//! methods ([`Group::metrics`], [`Group::pool_ack`], [`Group::booted`],
//! [`Group::deleted`]). No I/O, no clock, no randomness: every rule is tested with plain
//! values, and all of one group's state is in [`Group`].
//!
//! A tick runs the stages in order, each in its own file: [`health`] (which VMs failed),
//! [`replace`] (the backoff and the splitter), [`sizing`] (the policy: web boots and
//! removals; what it is fed: [`inputs`] and `fleet.rs`), [`keeper`] (the pool; who is in it: `members.rs`), [`drain`] (deleting
//! drained VMs), [`lifecycle`] (ready, stopping, deleting, gone) and [`row`] (the time
//! series). The policy runs before the pool keeper so that a VM it removes drains in the
//! same tick.
//!
//! Tear-down order (no request may fail): the splitter is told to stop listening first
//! (Apache's graceful stop: requests in flight finish on the web VMs, which are still in
//! the pool), then, once it acknowledges or `drain_timeout` passes, every VM is deleted.

pub mod admit;
mod answers;
mod backoff;
pub mod drain;
mod fleet;
pub mod health;
pub mod inputs;
mod intake;
pub mod keeper;
pub mod lifecycle;
mod members;
mod observed;
mod operator;
pub mod replace;
pub mod row;
pub mod sizing;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chrono::{DateTime, Utc};

pub use admit::Refusal;
pub use backoff::Backoff;
pub use observed::{
    elapsed, within, Action, BootOutcome, BootRefusal, GroupSettings, HeartbeatInfo, Observed,
};
pub use operator::RemoveError;
pub use view::{GroupView, Phase, VmState};

use crate::{
    cloud::{Vm, VmId, VmStatus},
    payload::{Metrics, Role},
    policy::{Decision, FleetVm, LittlePolicy, Observation},
    pool::PoolMember,
    template::Template,
};

/// The AJP port of the web images (Tomcat's AJP connector).
pub const AJP_PORT: u16 = 8009;

/// Boots and deletes asked of the cloud and not yet answered.
#[derive(Debug, Clone, Default)]
struct InFlight {
    web_boots: usize,
    splitter_boots: usize,
    deletes: BTreeSet<VmId>,
}

/// The splitter's pool as last decided and sent.
#[derive(Debug, Clone)]
struct PoolState {
    /// Sorted by name.
    members: Vec<PoolMember>,
    generation: u64,
    listening: bool,
    last_publish: Option<DateTime<Utc>>,
    /// The splitter the pool was last sent for: a new one gets the pool at once.
    splitter: Option<String>,
    /// The newest generation the splitter applied.
    acked: u64,
    /// Generations sent and not yet applied, oldest first, with their active members
    /// (bounded by [`keeper::SENT_KEPT`]).
    sent: VecDeque<(u64, u32)>,
    /// Active members of the newest generation the splitter applied, when this conductor
    /// sent it: until the splitter applies a change, it routes to these.
    applied_serving: Option<u32>,
    /// The last generation an earlier owner of the group sent (from the database): the
    /// next one must be newer even when this conductor's clock is behind that owner's.
    floor: u64,
}

/// What the splitter's agent reported.
#[derive(Debug, Clone, Default)]
struct SplitterReports {
    /// In-flight requests per pool member, from the last metrics.
    busy: BTreeMap<String, u32>,
    /// Metrics not yet seen by the policy, oldest first (bounded).
    fresh: Vec<Metrics>,
    /// The last metrics, for `template show`.
    last: Option<Metrics>,
}

/// The conductor's state for one template: everything it keeps about the group.
#[derive(Debug, Clone)]
pub struct Group {
    pub template: Template,
    pub phase: Phase,
    settings: GroupSettings,
    /// Decides the number of web VMs.
    policy: LittlePolicy,
    last_decision: Option<Decision>,
    /// Since when the conductor's broker link has been up without a break (as this group
    /// saw it). Until `heartbeat_timeout` has passed since then, heartbeats may simply
    /// not have arrived yet (conductor restart, broker outage): silence proves nothing and
    /// the pool is left as it is.
    link_up_since: Option<DateTime<Utc>>,
    /// Whether the cloud already listed VMs of the group when this conductor first stepped
    /// it (`None` before that): a group taken over from another conductor, or adopted
    /// after a restart, whose agents were heard by the previous owner only.
    adopted: Option<bool>,
    /// VMs already reported failed (each is reported once).
    reported: BTreeSet<VmId>,
    /// Web VMs whose agent says their server does not answer, and since when.
    unserving_since: BTreeMap<String, DateTime<Utc>>,
    /// Web VMs whose agent has said their server answers (since this conductor started):
    /// when such a server stops answering, it died (issue 16, item 1).
    served: BTreeSet<String>,
    /// Failed VMs not yet replaced, by role and name, oldest first.
    replacing: Vec<(Role, String)>,
    backoff: Backoff,
    in_flight: InFlight,
    pool: PoolState,
    /// Web VMs being removed, by name: drained, then deleted. The value is the pool
    /// generation that first carried the VM as draining, and when, once sent.
    removals: BTreeMap<String, Option<(u64, DateTime<Utc>)>>,
    /// When Stopping began, to bound the wait.
    stopping_since: Option<DateTime<Utc>>,
    reports: SplitterReports,
    /// The last observation and its time, for views between ticks.
    last_seen: Observed,
    last_now: Option<DateTime<Utc>>,
}

/// One tick's working set, shared by the stages in order.
struct Tick<'a> {
    now: DateTime<Utc>,
    obs: &'a Observed,
    /// Past the grace period after the link came up.
    settled: bool,
    /// Some VM of the group was heard within the hearing window.
    anyone_heard: bool,
    /// VMs found failed this tick.
    failed: BTreeSet<VmId>,
    /// The web VMs as the policy counts them (after health).
    fleet: Vec<FleetVm>,
    /// The splitter's metrics since the last tick.
    observations: Vec<Observation>,
    decision: Option<Decision>,
    /// Web boots asked for this tick.
    web_boots: u32,
    actions: Vec<Action>,
}

impl Tick<'_> {
    /// The group's VMs of `role` that are up or coming up: not failed, not being deleted.
    fn live(&self, role: Role, in_flight: &InFlight) -> Vec<&Vm> {
        self.obs
            .vms
            .iter()
            .filter(|vm| vm.role() == Some(role))
            .filter(|vm| matches!(vm.status, VmStatus::Build | VmStatus::Active))
            .filter(|vm| !in_flight.deletes.contains(&vm.id) && !self.failed.contains(&vm.id))
            .collect()
    }
}

impl Group {
    pub fn new(template: Template, destroying: bool, settings: GroupSettings) -> Group {
        let policy = LittlePolicy::new(sizing::policy_settings(
            template.min_vms(),
            template.max_vms(),
            template.target_response_time().as_secs_f64(),
            &settings,
        ));
        Group {
            template,
            phase: if destroying {
                Phase::Stopping
            } else {
                Phase::Starting
            },
            settings,
            policy,
            last_decision: None,
            link_up_since: None,
            adopted: None,
            reported: BTreeSet::new(),
            unserving_since: BTreeMap::new(),
            served: BTreeSet::new(),
            replacing: Vec::new(),
            backoff: Backoff::default(),
            in_flight: InFlight::default(),
            pool: PoolState {
                members: Vec::new(),
                generation: 0,
                listening: true,
                last_publish: None,
                splitter: None,
                acked: 0,
                sent: VecDeque::new(),
                applied_serving: None,
                floor: 0,
            },
            removals: BTreeMap::new(),
            stopping_since: None,
            reports: SplitterReports::default(),
            last_seen: Observed::default(),
            last_now: None,
        }
    }

    pub fn name(&self) -> &str {
        self.template.name()
    }

    /// One pass of the rules: the stages in order.
    pub fn step(&mut self, now: DateTime<Utc>, obs: Observed) -> Vec<Action> {
        let mut tick = self.begin(now, &obs);
        health::run(self, &mut tick);
        replace::run(self, &mut tick);
        sizing::run(self, &mut tick);
        keeper::run(self, &mut tick);
        drain::run(self, &mut tick);
        lifecycle::run(self, &mut tick);
        row::run(self, &mut tick);
        let actions = tick.actions;
        self.last_seen = obs;
        self.last_now = Some(now);
        actions
    }

    /// The tick's working set: the link's grace period, and the splitter's metrics since
    /// the last tick.
    fn begin<'a>(&mut self, now: DateTime<Utc>, obs: &'a Observed) -> Tick<'a> {
        self.link_up_since = if obs.link_up {
            obs.link_up_since.or(self.link_up_since).or(Some(now))
        } else {
            None
        };
        self.adopted.get_or_insert(!obs.vms.is_empty());
        let settled = self
            .link_up_since
            .is_some_and(|t| elapsed(now, t) >= self.settings.heartbeat_timeout);
        let anyone_heard = obs
            .heartbeats
            .values()
            .any(|hb| within(now, hb.last, self.settings.hearing_window));
        let fresh = std::mem::take(&mut self.reports.fresh);
        let observations = sizing::observations(&fresh, self.serving());
        Tick {
            now,
            obs,
            settled,
            anyone_heard,
            failed: BTreeSet::new(),
            fleet: Vec::new(),
            observations,
            decision: None,
            web_boots: 0,
            actions: Vec::new(),
        }
    }

    /// Members the splitter sends new requests to: those of the newest pool it applied
    /// (a pool sent is not routed to until the splitter has carried it out, and a join
    /// counted early makes the members that serve look slow: issue 16), else, with no
    /// acknowledgement of a pool this conductor sent (a restart, a takeover), the pool
    /// as decided.
    fn serving(&self) -> u32 {
        let pool = &self.pool;
        match pool.applied_serving {
            Some(applied) if pool.acked < pool.generation => applied,
            _ => active_members(&pool.members),
        }
    }

    fn heartbeat_fresh(&self, vm: &Vm, obs: &Observed, now: DateTime<Utc>) -> bool {
        obs.heartbeats
            .get(&vm.name)
            .is_some_and(|hb| within(now, hb.last, self.settings.heartbeat_timeout))
    }
}

/// Members in the active state (not draining): those the splitter sends new requests to.
fn active_members(members: &[PoolMember]) -> u32 {
    members
        .iter()
        .filter(|m| m.state == crate::pool::MemberState::Active)
        .count() as u32
}

/// Where the VM's server listens: the cloud's address for it, else the one its agent
/// announces (a cloud that reports none, such as Nova's fake virt driver). The cloud wins:
/// it is the source of truth, and an agent cannot move a VM the cloud places.
fn address_of(vm: &Vm, obs: &Observed) -> Option<std::net::IpAddr> {
    vm.address
        .or_else(|| obs.heartbeats.get(&vm.name).and_then(|hb| hb.address))
}

/// The site's address, as the splitter's agent announced it.
fn url(obs: &Observed) -> Option<String> {
    obs.vms
        .iter()
        .filter(|vm| vm.role() == Some(Role::Splitter))
        .find_map(|vm| obs.heartbeats.get(&vm.name).and_then(|h| h.url.clone()))
}
