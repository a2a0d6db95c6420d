//! One template's site as the conductor steers it: boot the splitter and the minimum of
//! web VMs, put the web VMs that are up into the splitter's pool, notice VMs that die or
//! go silent, and tear everything down without failing a request.
//!
//! Pure: [`Group::step`] takes the time and what was observed (the cloud's view, the
//! heartbeats, the splitter's busy counts and acknowledgements) and returns the
//! [`Action`]s for the service to carry out. No I/O, no clock, no randomness, so every
//! rule here is tested with plain values.
//!
//! Tear-down order (no request may fail): the splitter is told to stop listening first
//! (Apache's graceful stop: requests in flight finish on the web VMs, which are still in
//! the pool), then, once it acknowledges or `drain_timeout` passes, every VM is deleted.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{handler::Event, timeseries::Row};
use crate::{
    conf::PolicyOpts,
    driver::{Vm, VmId, VmStatus, META_ROLE},
    messaging::{member_name, MemberState, Metrics, PoolMember, PoolUpdate, Priority, Role},
    policy::{
        Decision, FleetVm, Inputs, LittlePolicy, Observation, PolicySettings, ScalingPolicy,
        Verdict, VmPhase,
    },
    template::Template,
};

/// The AJP port of the web images (Tomcat's AJP connector).
pub const AJP_PORT: u16 = 8009;
/// The pool is sent again this often even when nothing changed, so a restarted splitter
/// agent (which forgot its generation) or a lost message is repaired.
const POOL_RESEND_SECONDS: i64 = 5;
/// Longest hold on boots after VMs failed before they were ever heard.
const BOOT_HOLD_MAX_SECONDS: i64 = 60;
/// A pool not yet acknowledged is sent again after this long.
const POOL_RETRY_SECONDS: i64 = 2;

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// VMs booting; the site does not answer yet.
    Starting,
    /// The splitter runs this group's pool with at least one web VM.
    Ready,
    /// Destroy asked: the splitter stops accepting connections, requests in flight finish.
    Stopping,
    /// Every VM is being deleted.
    Deleting,
    /// Nothing left; the template is forgotten.
    Gone,
}

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
    pub address: Option<std::net::IpAddr>,
}

/// Everything [`Group::step`] looks at, gathered by the service each tick.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The cloud's view of the group's VMs.
    pub vms: Vec<Vm>,
    /// By VM name (the agents' `vm_id`).
    pub heartbeats: BTreeMap<String, HeartbeatInfo>,
    /// In-flight requests per pool member, from the splitter's last metrics.
    pub busy: BTreeMap<String, u32>,
    /// The newest pool generation the splitter applied.
    pub acked_generation: u64,
    /// Whether the conductor's own broker link is up: silence is only evidence of a dead
    /// VM when the conductor can hear at all.
    pub link_up: bool,
    /// Since when the conductor's link has been up, as the service saw it; a group
    /// created later must not wait its own grace period. `None`: from this group's view.
    pub link_up_since: Option<DateTime<Utc>>,
    /// The splitter's per-second metrics that arrived since the previous tick.
    pub metrics: Vec<Metrics>,
    /// Boots asked for and not yet answered by the cloud, by role.
    pub pending_web_boots: usize,
    pub pending_splitter_boots: usize,
    /// Deletes asked for and not yet finished.
    pub pending_deletes: BTreeSet<VmId>,
}

/// What the service must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Boot a VM of `role`; when it replaces a failed VM, that VM's name (for the
    /// `autoscaler.vm.replaced` notification once the boot is accepted).
    Boot {
        role: Role,
        replaces: Option<String>,
    },
    Delete(VmId),
    PublishPool(PoolUpdate),
    Notify(Event),
    /// One row of the group's time series (one a tick).
    Record(Row),
    /// The group is gone: forget the template.
    Forget,
}

/// Rules' parameters from `[conductor]` and `[policy]`.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    pub heartbeat_timeout: std::time::Duration,
    pub drain_timeout: std::time::Duration,
    pub boot_timeout: std::time::Duration,
    /// How recent the newest heartbeat of a group must be for the conductor to count as
    /// hearing its VMs (about two heartbeat intervals, within half the timeout).
    pub hearing_window: std::time::Duration,
    pub policy: PolicyOpts,
}

impl GroupSettings {
    /// The settings of `[conductor]`, `[agent]` and `[policy]`.
    pub fn from_config(config: &crate::conf::Config) -> GroupSettings {
        let timeout = config.conductor.heartbeat_timeout;
        GroupSettings {
            heartbeat_timeout: timeout,
            drain_timeout: config.conductor.drain_timeout,
            boot_timeout: config.conductor.boot_timeout,
            hearing_window: (config.agent.heartbeat_interval * 2).min(timeout / 2),
            policy: config.policy,
        }
    }
}

/// The policy's knobs for `template` under `settings`.
fn policy_settings(template: &Template, settings: &GroupSettings) -> PolicySettings {
    PolicySettings {
        min_vms: template.min_vms(),
        max_vms: template.max_vms(),
        target_response_time: template.target_response_time().as_secs_f64(),
        target_margin: f64::from(settings.policy.target_margin_percent) / 100.0,
        stabilization: settings.policy.stabilization,
        scale_in_delay: settings.policy.scale_in_delay,
        scale_in_cooldown: settings.policy.scale_in_cooldown,
        boot_timeout: settings.boot_timeout,
    }
}

/// One VM as `template show` and `vm list` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmState {
    pub id: String,
    pub name: String,
    pub role: Option<Role>,
    pub status: VmStatus,
    pub address: Option<String>,
    /// Seconds since its last heartbeat, if it ever sent one.
    pub heartbeat_age: Option<f64>,
    pub in_pool: bool,
    pub busy: Option<u32>,
}

/// A group as `template show` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupView {
    pub phase: Phase,
    pub url: Option<String>,
    pub pool_generation: u64,
    pub acked_generation: u64,
    pub vms: Vec<VmState>,
}

/// The conductor's state for one template.
#[derive(Debug, Clone)]
pub struct Group {
    pub template: Template,
    pub phase: Phase,
    settings: GroupSettings,
    /// The pool last decided, sorted by name, and its generation.
    pool: Vec<PoolMember>,
    generation: u64,
    listening: bool,
    last_publish: Option<DateTime<Utc>>,
    /// When Stopping began, to bound the wait.
    stopping_since: Option<DateTime<Utc>>,
    /// VMs already reported lost or failed (each is reported once).
    reported: BTreeSet<VmId>,
    /// Web VMs the operator asked to remove, by name: drained, then deleted. The value is
    /// the pool generation that first carried the VM as draining, once sent.
    removals: BTreeMap<String, Option<(u64, DateTime<Utc>)>>,
    /// Since when the conductor's broker link has been up without a break (as this group
    /// saw it). Until `heartbeat_timeout` has passed since then, heartbeats may simply
    /// not have arrived yet (conductor restart, broker outage): silence proves nothing and
    /// the pool is left as it is.
    link_up_since: Option<DateTime<Utc>>,
    /// The last observation, for views between ticks.
    last_seen: Observed,
    last_now: Option<DateTime<Utc>>,
    /// Decides the number of web VMs.
    policy: LittlePolicy,
    last_decision: Option<Decision>,
    /// Failed VMs not yet replaced, by role and name, oldest first.
    replacing: Vec<(Role, String)>,
    /// Web VMs whose agent says their server does not answer, and since when.
    unserving_since: BTreeMap<String, DateTime<Utc>>,
    /// The splitter the pool was last sent for: a new one gets the pool at once.
    pool_splitter: Option<String>,
    /// VMs that failed in a row before they were ever heard (a broken image, a cloud
    /// that cannot run it), the last such failure, and until when boots are held back:
    /// 2, 4, 8 ... 60 s, rather than a boot and a failure every tick.
    boot_failures: u32,
    last_boot_failure: Option<DateTime<Utc>>,
    boots_held_until: Option<DateTime<Utc>>,
}

/// Where the VM's server listens: the cloud's address for it, else the one its agent
/// announces (a cloud that reports none, such as Nova's fake virt driver). The cloud wins:
/// it is the source of truth, and an agent cannot move a VM the cloud places.
fn address_of(vm: &Vm, obs: &Observed) -> Option<std::net::IpAddr> {
    vm.address
        .or_else(|| obs.heartbeats.get(&vm.name).and_then(|hb| hb.address))
}

fn role_of(vm: &Vm) -> Option<Role> {
    vm.metadata.get(META_ROLE).and_then(|r| r.parse().ok())
}

fn event(event_type: &'static str, priority: Priority, payload: serde_json::Value) -> Action {
    Action::Notify(Event {
        event_type,
        priority,
        payload,
    })
}

impl Group {
    pub fn new(template: Template, destroying: bool, settings: GroupSettings) -> Group {
        let policy = LittlePolicy::new(policy_settings(&template, &settings));
        Group {
            template,
            phase: if destroying {
                Phase::Stopping
            } else {
                Phase::Starting
            },
            settings,
            pool: Vec::new(),
            generation: 0,
            listening: true,
            last_publish: None,
            stopping_since: None,
            reported: BTreeSet::new(),
            removals: BTreeMap::new(),
            link_up_since: None,
            last_seen: Observed::default(),
            last_now: None,
            policy,
            last_decision: None,
            replacing: Vec::new(),
            unserving_since: BTreeMap::new(),
            pool_splitter: None,
            boot_failures: 0,
            last_boot_failure: None,
            boots_held_until: None,
        }
    }

    pub fn name(&self) -> &str {
        self.template.name()
    }

    /// Starts the tear-down (idempotent).
    pub fn destroy(&mut self) {
        if matches!(self.phase, Phase::Starting | Phase::Ready) {
            self.phase = Phase::Stopping;
        }
    }

    /// Asks for web VM `name` to be removed: drained (no new requests; those in flight
    /// finish), then deleted; the policy boots a replacement meanwhile (the size does not change).
    pub fn remove_vm(&mut self, name: &str) -> Result<VmState, String> {
        let now = self.last_now.unwrap_or_else(Utc::now);
        let view = self.view(now);
        let vm = view
            .vms
            .into_iter()
            .find(|vm| vm.name == name)
            .ok_or_else(|| format!("no VM named {name:?} in template {:?}", self.name()))?;
        if vm.role != Some(Role::Web) {
            return Err(format!(
                "{name:?} is the splitter; it goes with the template: autoscaler-manage template destroy {}",
                self.name()
            ));
        }
        if !matches!(self.phase, Phase::Starting | Phase::Ready) {
            return Err(format!("template {:?} is being destroyed", self.name()));
        }
        self.removals.entry(name.to_owned()).or_insert(None);
        Ok(vm)
    }

    /// A generation newer than any before, also across conductor restarts (the splitter
    /// ignores older generations and the conductor keeps none on disk): milliseconds of
    /// the wall clock, or one more than the last when the clock has not moved.
    fn next_generation(&self, now: DateTime<Utc>) -> u64 {
        let clock = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        clock.max(self.generation + 1)
    }

    fn heartbeat_fresh(&self, vm: &Vm, obs: &Observed, now: DateTime<Utc>) -> bool {
        obs.heartbeats.get(&vm.name).is_some_and(|hb| {
            (now - hb.last).to_std().unwrap_or_default() <= self.settings.heartbeat_timeout
        })
    }

    /// One pass of the rules.
    pub fn step(&mut self, now: DateTime<Utc>, obs: Observed) -> Vec<Action> {
        let mut actions = Vec::new();
        let live = |vm: &&Vm| {
            matches!(vm.status, VmStatus::Build | VmStatus::Active)
                && !obs.pending_deletes.contains(&vm.id)
        };

        self.link_up_since = if obs.link_up {
            obs.link_up_since.or(self.link_up_since).or(Some(now))
        } else {
            None
        };
        let settled = self.link_up_since.is_some_and(|t| {
            (now - t).to_std().unwrap_or_default() >= self.settings.heartbeat_timeout
        });

        // Web VMs whose server does not answer their agent, and since when.
        self.unserving_since
            .retain(|name, _| obs.heartbeats.get(name).and_then(|h| h.serving) == Some(false));
        for (name, hb) in &obs.heartbeats {
            if hb.serving == Some(false) {
                self.unserving_since.entry(name.clone()).or_insert(now);
            }
        }

        // Failed: VMs the cloud reports dead; ACTIVE VMs gone silent; VMs not up and
        // heartbeating within boot_timeout; VMs whose server has not answered for
        // heartbeat_timeout once past boot_timeout. Each is reported once, leaves the
        // pool, is deleted, and the policy's size has it replaced.
        //
        // Silence is evidence only while the conductor hears others *now*: when it goes
        // deaf (a broker cut it has not noticed yet), every VM falls silent together, but
        // their last heartbeats differ by up to an interval, so "others heard within
        // heartbeat_timeout" would fail the stalest while the others are still fresh.
        let anyone_heard = obs
            .heartbeats
            .values()
            .any(|hb| (now - hb.last).to_std().unwrap_or_default() <= self.settings.hearing_window);
        let mut failed = BTreeSet::new();
        for vm in &obs.vms {
            if obs.pending_deletes.contains(&vm.id) {
                continue;
            }
            let age = (now - vm.created_at).to_std().unwrap_or_default();
            let heard_before = obs.heartbeats.contains_key(&vm.name);
            let cause = if matches!(vm.status, VmStatus::Error | VmStatus::Shutoff) {
                Some("status")
            } else if vm.status == VmStatus::Active
                && settled
                && anyone_heard
                && heard_before
                && !self.heartbeat_fresh(vm, &obs, now)
            {
                // Silence counts only when the conductor hears others, and only for a VM
                // that has spoken before (a VM booting is not silent).
                Some("heartbeat_lost")
            } else if settled
                && age >= self.settings.boot_timeout
                && (vm.status == VmStatus::Build || (!heard_before && anyone_heard))
            {
                // Never heard since this conductor started: only evidence while others
                // are heard (after a broker restart, agents may take a while to return).
                Some("boot_timeout")
            } else if settled
                && age >= self.settings.boot_timeout
                && self.unserving_since.get(&vm.name).is_some_and(|t| {
                    (now - *t).to_std().unwrap_or_default() > self.settings.heartbeat_timeout
                })
            {
                Some("not_serving")
            } else {
                None
            };
            let Some(cause) = cause else { continue };
            failed.insert(vm.id.clone());
            if self.reported.insert(vm.id.clone()) {
                if !heard_before {
                    self.boot_failures = self.boot_failures.saturating_add(1);
                    self.last_boot_failure = Some(now);
                    let wait = (1i64 << self.boot_failures.min(6)).min(BOOT_HOLD_MAX_SECONDS);
                    self.boots_held_until = Some(now + chrono::Duration::seconds(wait));
                }
                let priority = if cause == "status" {
                    Priority::Error
                } else {
                    Priority::Warn
                };
                actions.push(event(
                    "autoscaler.vm.failed",
                    priority,
                    serde_json::json!({
                        "template": self.name(), "vm_id": vm.id.0, "vm_name": vm.name,
                        "role": role_of(vm).map(Role::as_str),
                        "status": vm.status.as_str(), "cause": cause, "fault": vm.fault,
                    }),
                ));
                if let Some(role) = role_of(vm) {
                    if matches!(self.phase, Phase::Starting | Phase::Ready)
                        && !self.removals.contains_key(&vm.name)
                    {
                        self.replacing.push((role, vm.name.clone()));
                    }
                }
            }
            if !matches!(self.phase, Phase::Deleting | Phase::Gone) {
                actions.push(Action::Delete(vm.id.clone()));
            }
        }

        let webs: Vec<&Vm> = obs
            .vms
            .iter()
            .filter(|vm| role_of(vm) == Some(Role::Web))
            .filter(live)
            .filter(|vm| !failed.contains(&vm.id))
            .collect();
        let fleet = self.fleet(now, &webs, &obs);
        let observations = self.observations(&obs);
        let mut decision = None;

        match self.phase {
            Phase::Starting | Phase::Ready => {
                let splitters: Vec<&Vm> = obs
                    .vms
                    .iter()
                    .filter(|vm| role_of(vm) == Some(Role::Splitter))
                    .filter(live)
                    .filter(|vm| !failed.contains(&vm.id))
                    .collect();
                // A VM booted after the last failed boot and now heard: the image works.
                if self.last_boot_failure.is_some_and(|t| {
                    obs.vms
                        .iter()
                        .any(|vm| vm.created_at > t && self.heartbeat_fresh(vm, &obs, now))
                }) {
                    self.boot_failures = 0;
                    self.last_boot_failure = None;
                    self.boots_held_until = None;
                }
                let may_boot = self.boots_held_until.is_none_or(|t| now >= t);
                if !splitters.is_empty() {
                    self.replacing.retain(|(role, _)| *role != Role::Splitter);
                }
                if splitters.is_empty() && obs.pending_splitter_boots == 0 && may_boot {
                    let replaces = self.take_replaced(Role::Splitter);
                    actions.push(Action::Boot {
                        role: Role::Splitter,
                        replaces,
                    });
                }

                // The size is the policy's. Until the conductor has heard its VMs (after
                // a restart or a broker outage) it cannot tell a booting VM from a working
                // one: it holds, rather than boot duplicates.
                let mut adding = 0;
                if settled {
                    let d = self.policy.decide(
                        now,
                        Inputs {
                            observations: &observations,
                            fleet: &fleet,
                        },
                    );
                    adding = if may_boot { d.add } else { 0 };
                    if d.add == 0 {
                        // The size is met: failed VMs were already made up for (the policy
                        // stops counting a VM before health declares it failed).
                        self.replacing.retain(|(role, _)| *role != Role::Web);
                    }
                    for _ in 0..adding {
                        let replaces = self.take_replaced(Role::Web);
                        actions.push(Action::Boot {
                            role: Role::Web,
                            replaces,
                        });
                    }
                    // Boots not yet answered by the cloud cannot be cancelled: only VMs that
                    // exist are removed (the rest next tick, once they exist).
                    let removing: Vec<String> = d
                        .remove
                        .iter()
                        .filter(|name| webs.iter().any(|vm| &vm.name == *name))
                        .cloned()
                        .collect();
                    for name in &removing {
                        self.removals.entry(name.clone()).or_insert(None);
                    }
                    if d.verdict != Verdict::Hold {
                        let from = self.last_decision.as_ref().map(|l| l.desired);
                        let event_type = if d.verdict == Verdict::ScaleOut {
                            "autoscaler.scale.up"
                        } else {
                            "autoscaler.scale.down"
                        };
                        actions.push(event(
                            event_type,
                            Priority::Info,
                            serde_json::json!({
                                "template": self.name(), "from": from, "to": d.desired,
                                "add": adding, "remove": removing, "metric": d.metric,
                                "reason": d.reason,
                            }),
                        ));
                    }
                    decision = Some(d);
                }
                let staying = fleet
                    .iter()
                    .filter(|vm| vm.phase != VmPhase::Draining)
                    .count();

                // The pool: web VMs that are up, heard from, and whose server answers.
                let mut desired: Vec<PoolMember> = webs
                    .iter()
                    .filter(|vm| self.joinable(vm, &obs, now))
                    .filter_map(|vm| {
                        Some(PoolMember {
                            name: member_name(&vm.name),
                            host: address_of(vm, &obs)?.to_string(),
                            port: AJP_PORT,
                            state: MemberState::Active,
                        })
                    })
                    .collect();
                desired.sort_by(|a, b| a.name.cmp(&b.name));
                if !settled || !anyone_heard {
                    // Heartbeats may not have arrived yet (a conductor restart or
                    // reconnect), or the conductor hears nobody (deaf before its link
                    // notices): keep the members the splitter has rather than empty its
                    // pool; only VMs the cloud shows dead or gone leave.
                    desired = self
                        .pool
                        .iter()
                        .filter(|m| webs.iter().any(|vm| member_name(&vm.name) == m.name))
                        .cloned()
                        .collect();
                }
                // Make before break: a VM being removed drains only once another member
                // takes requests, or when no replacement is on its way.
                let leaving: BTreeSet<String> =
                    self.removals.keys().map(|n| member_name(n)).collect();
                let others_active = desired
                    .iter()
                    .filter(|m| !leaving.contains(&m.name))
                    .count();
                let staying_outside_pool = staying.saturating_sub(others_active);
                let replacement_coming =
                    staying_outside_pool > 0 || obs.pending_web_boots > 0 || adding > 0;
                if others_active > 0 || !replacement_coming {
                    for member in desired.iter_mut().filter(|m| leaving.contains(&m.name)) {
                        member.state = MemberState::Draining;
                    }
                }
                // A conductor that has not yet heard its VMs does not know the pool: it
                // sends none rather than an empty one.
                if settled || self.generation > 0 {
                    let splitter = splitters
                        .iter()
                        .find(|vm| self.heartbeat_fresh(vm, &obs, now))
                        .map(|vm| vm.name.clone());
                    self.publish_if_due(now, desired, true, splitter, &obs, &mut actions);
                    self.finish_removals(now, &webs, &obs, &mut actions);
                }

                let splitter_up = splitters
                    .iter()
                    .any(|vm| vm.status == VmStatus::Active && self.heartbeat_fresh(vm, &obs, now));
                let site_ready = splitter_up
                    && obs.acked_generation >= self.generation
                    && (self.template.min_vms() == 0 || !self.pool.is_empty());
                if self.phase == Phase::Starting && site_ready {
                    self.phase = Phase::Ready;
                    actions.push(event(
                        "autoscaler.template.ready",
                        Priority::Info,
                        serde_json::json!({
                            "template": self.name(), "url": self.url(&obs),
                            "web_vms": self.pool.len(),
                        }),
                    ));
                }
            }
            Phase::Stopping => {
                let since = *self.stopping_since.get_or_insert(now);
                let pool = self.pool.clone();
                let splitter = self.pool_splitter.clone();
                self.publish_if_due(now, pool, false, splitter, &obs, &mut actions);
                let splitter_live = obs.vms.iter().any(|vm| {
                    role_of(vm) == Some(Role::Splitter) && live(&vm) && !failed.contains(&vm.id)
                });
                let stopped = obs.acked_generation >= self.generation;
                let waited =
                    (now - since).to_std().unwrap_or_default() >= self.settings.drain_timeout;
                if stopped || !splitter_live || waited {
                    self.phase = Phase::Deleting;
                }
            }
            Phase::Deleting | Phase::Gone => {}
        }

        if self.phase == Phase::Deleting {
            for vm in &obs.vms {
                if !obs.pending_deletes.contains(&vm.id) && !failed.contains(&vm.id) {
                    actions.push(Action::Delete(vm.id.clone()));
                }
            }
            if obs.vms.is_empty() && obs.pending_web_boots + obs.pending_splitter_boots == 0 {
                self.phase = Phase::Gone;
                actions.push(Action::Forget);
            }
        }
        if self.phase != Phase::Gone {
            // The row shows the tick's outcome: boots asked for now are booting.
            let boots = actions
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        Action::Boot {
                            role: Role::Web,
                            ..
                        }
                    )
                })
                .count() as u32;
            let row = self.row(now, &observations, &fleet, boots, decision.as_ref());
            actions.push(Action::Record(row));
        }
        if decision.is_some() {
            self.last_decision = decision;
        }
        self.last_seen = obs;
        self.last_now = Some(now);
        actions
    }

    /// Whether web VM `vm` may take requests: up, heard from, and its server answers.
    fn joinable(&self, vm: &Vm, obs: &Observed, now: DateTime<Utc>) -> bool {
        vm.status == VmStatus::Active
            && self.heartbeat_fresh(vm, obs, now)
            && obs.heartbeats.get(&vm.name).and_then(|h| h.serving) != Some(false)
    }

    /// The web VMs as the policy counts them: draining when being removed, active when
    /// they take (or may now take) requests, else booting; boots not yet answered by the
    /// cloud are booting too.
    fn fleet(&self, now: DateTime<Utc>, webs: &[&Vm], obs: &Observed) -> Vec<FleetVm> {
        let mut fleet: Vec<FleetVm> = webs
            .iter()
            .map(|vm| {
                let member = member_name(&vm.name);
                let phase = if self.removals.contains_key(&vm.name) {
                    VmPhase::Draining
                } else if self.joinable(vm, obs, now)
                    || self
                        .pool
                        .iter()
                        .any(|m| m.name == member && m.state == MemberState::Active)
                {
                    VmPhase::Active
                } else {
                    VmPhase::Booting
                };
                FleetVm {
                    name: vm.name.clone(),
                    phase,
                    created_at: vm.created_at,
                    busy: obs.busy.get(&member).copied(),
                }
            })
            .collect();
        fleet.extend((0..obs.pending_web_boots).map(|i| FleetVm {
            name: format!("(boot {i} requested)"),
            phase: VmPhase::Booting,
            created_at: now,
            busy: None,
        }));
        fleet
    }

    /// The splitter's metrics since the last tick, as the policy reads them.
    fn observations(&self, obs: &Observed) -> Vec<Observation> {
        let serving = self
            .pool
            .iter()
            .filter(|m| m.state == MemberState::Active)
            .count() as u32;
        let mut observations: Vec<Observation> = obs
            .metrics
            .iter()
            .filter(|m| m.interval.is_finite() && m.interval >= 0.0 && m.interval < 3600.0)
            .map(|m| Observation {
                end: m.start + chrono::Duration::milliseconds((m.interval * 1000.0) as i64),
                interval: m.interval,
                requests: m.site.requests,
                mean: m.site.mean,
                p95: m.site.p95,
                serving,
            })
            .collect();
        observations.sort_by_key(|o| o.end);
        observations
    }

    /// The oldest failed VM of `role` still waiting for its replacement.
    fn take_replaced(&mut self, role: Role) -> Option<String> {
        let i = self.replacing.iter().position(|(r, _)| *r == role)?;
        Some(self.replacing.remove(i).1)
    }

    /// This tick's row of the time series.
    fn row(
        &self,
        now: DateTime<Utc>,
        observations: &[Observation],
        fleet: &[FleetVm],
        boots: u32,
        decision: Option<&Decision>,
    ) -> Row {
        let requests: u64 = observations.iter().map(|o| o.requests).sum();
        let interval: f64 = observations.iter().map(|o| o.interval).sum();
        let busy_time: f64 = observations
            .iter()
            .map(|o| o.requests as f64 * o.mean)
            .sum();
        let mean = (requests > 0).then(|| busy_time / requests as f64);
        let p95 = (requests > 0).then(|| observations.iter().map(|o| o.p95).fold(0.0, f64::max));
        let count = |phase| fleet.iter().filter(|vm| vm.phase == phase).count() as u32;
        let (verdict, reason) = match (self.phase, decision) {
            (Phase::Starting | Phase::Ready, Some(d)) => (d.verdict.as_str(), d.reason.clone()),
            (Phase::Starting | Phase::Ready, None) => (
                "hold",
                "waiting for the VMs' heartbeats (grace period after the broker link came up)"
                    .to_owned(),
            ),
            (Phase::Stopping, _) => ("destroy", "the splitter stops taking requests".to_owned()),
            (Phase::Deleting | Phase::Gone, _) => ("destroy", "deleting every VM".to_owned()),
        };
        Row {
            time: now,
            group: self.name().to_owned(),
            requests,
            rate: if interval > 0.0 {
                requests as f64 / interval
            } else {
                0.0
            },
            mean_response_time: mean,
            p95_response_time: p95,
            in_flight: (interval > 0.0).then(|| busy_time / interval),
            vms_booting: count(VmPhase::Booting) + boots,
            vms_active: count(VmPhase::Active),
            vms_draining: count(VmPhase::Draining),
            desired: decision
                .map(|d| d.desired)
                .or(self.policy.desired())
                .unwrap_or_else(|| count(VmPhase::Booting) + count(VmPhase::Active)),
            target_response_time: self.template.target_response_time().as_secs_f64(),
            metric: decision.and_then(|d| d.metric),
            decision: verdict.to_owned(),
            reason,
        }
    }

    /// Deletes the web VMs being removed once drained: the splitter has applied a pool
    /// where they drain and reports no request in flight on them, or `drain_timeout`
    /// has passed. A VM not in the pool (never joined, or silent) is deleted at once.
    fn finish_removals(
        &mut self,
        now: DateTime<Utc>,
        webs: &[&Vm],
        obs: &Observed,
        actions: &mut Vec<Action>,
    ) {
        let in_pool: BTreeSet<String> = self.pool.iter().map(|m| m.name.clone()).collect();
        let generation = self.generation;
        let mut done = Vec::new();
        for (name, drain) in self.removals.iter_mut() {
            let Some(vm) = webs.iter().find(|vm| &vm.name == name) else {
                done.push(name.clone()); // already gone
                continue;
            };
            let member = member_name(name);
            let draining = self
                .pool
                .iter()
                .any(|m| m.name == member && m.state == MemberState::Draining);
            if in_pool.contains(&member) && !draining {
                continue; // Still serving until its replacement does.
            }
            let drained = if in_pool.contains(&member) {
                let (since_generation, since) = *drain.get_or_insert((generation, now));
                let applied = obs.acked_generation >= since_generation;
                let idle = obs.busy.get(&member) == Some(&0);
                let waited =
                    (now - since).to_std().unwrap_or_default() >= self.settings.drain_timeout;
                (applied && idle) || waited
            } else {
                true
            };
            if drained {
                actions.push(Action::Delete(vm.id.clone()));
                done.push(name.clone());
            }
        }
        for name in done {
            self.removals.remove(&name);
        }
    }

    /// Publishes the pool when it changed, when the splitter has not acknowledged it yet
    /// (every few seconds), or as the periodic repair.
    fn publish_if_due(
        &mut self,
        now: DateTime<Utc>,
        desired: Vec<PoolMember>,
        listening: bool,
        splitter: Option<String>,
        obs: &Observed,
        actions: &mut Vec<Action>,
    ) {
        let changed = desired != self.pool || listening != self.listening || self.generation == 0;
        // A splitter heard for the first time (a replacement, or its agent restarted
        // under a new name) gets the pool now, not at the next periodic resend.
        let new_splitter = splitter.is_some() && splitter != self.pool_splitter;
        if splitter.is_some() {
            self.pool_splitter = splitter;
        }
        if changed {
            self.generation = self.next_generation(now);
            self.pool = desired;
            self.listening = listening;
        }
        let since_last = self.last_publish.map(|t| (now - t).num_seconds());
        let unacked = obs.acked_generation < self.generation;
        let due = changed
            || new_splitter
            || since_last.is_none_or(|s| s >= POOL_RESEND_SECONDS)
            || (unacked && since_last.is_none_or(|s| s >= POOL_RETRY_SECONDS));
        if due {
            self.last_publish = Some(now);
            actions.push(Action::PublishPool(PoolUpdate {
                group: self.name().to_owned(),
                generation: self.generation,
                members: self.pool.clone(),
                listening: self.listening,
            }));
        }
    }

    /// The site's address, as the splitter's agent announced it.
    fn url(&self, obs: &Observed) -> Option<String> {
        obs.vms
            .iter()
            .filter(|vm| role_of(vm) == Some(Role::Splitter))
            .find_map(|vm| obs.heartbeats.get(&vm.name).and_then(|h| h.url.clone()))
    }

    /// The name of VM `id`, as the cloud last showed it.
    pub fn vm_name(&self, id: &VmId) -> Option<&str> {
        self.last_seen
            .vms
            .iter()
            .find(|vm| &vm.id == id)
            .map(|vm| vm.name.as_str())
    }

    /// The group as `template show` reports it, from the last observation.
    pub fn view(&self, now: DateTime<Utc>) -> GroupView {
        let obs = &self.last_seen;
        let in_pool: BTreeSet<&str> = self.pool.iter().map(|m| m.name.as_str()).collect();
        let vms = obs
            .vms
            .iter()
            .map(|vm| {
                let member = member_name(&vm.name);
                VmState {
                    id: vm.id.0.clone(),
                    name: vm.name.clone(),
                    role: role_of(vm),
                    status: vm.status,
                    address: address_of(vm, obs).map(|a| a.to_string()),
                    heartbeat_age: obs
                        .heartbeats
                        .get(&vm.name)
                        .map(|h| (now - h.last).num_milliseconds().max(0) as f64 / 1000.0),
                    in_pool: in_pool.contains(member.as_str()),
                    busy: obs.busy.get(&member).copied(),
                }
            })
            .collect();
        GroupView {
            phase: self.phase,
            url: self.url(obs),
            pool_generation: self.generation,
            acked_generation: obs.acked_generation,
            vms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{META_GROUP, META_TEMPLATE};
    use std::time::Duration;

    const T0: i64 = 1_800_000_000;

    fn at(seconds: f64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(T0 * 1000 + (seconds * 1000.0) as i64).unwrap()
    }

    fn template(min: u32) -> Template {
        let text = format!("name = shop\nimage = tomcat-web\nmin_vms = {min}\nmax_vms = 4\ntarget_response_time = 0.2\n");
        Template::parse("shop.template", &text, 20).unwrap()
    }

    fn group(min: u32) -> Group {
        Group::new(
            template(min),
            false,
            GroupSettings {
                heartbeat_timeout: Duration::from_secs(3),
                drain_timeout: Duration::from_secs(30),
                ..GroupSettings::from_config(&crate::conf::Config::default())
            },
        )
    }

    /// A group whose conductor has been up (link included) for long: past the grace
    /// period in which silence proves nothing.
    fn settled(min: u32) -> Group {
        let mut g = group(min);
        g.step(
            at(-100.0),
            Observed {
                link_up: true,
                ..Default::default()
            },
        );
        g
    }

    fn vm(name: &str, role: Role, status: VmStatus, addr: &str) -> Vm {
        let metadata = [
            (META_GROUP.to_owned(), "shop".to_owned()),
            (META_ROLE.to_owned(), role.as_str().to_owned()),
            (META_TEMPLATE.to_owned(), "shop".to_owned()),
        ]
        .into_iter()
        .collect();
        Vm {
            id: VmId(format!("id-{name}")),
            name: name.into(),
            image: "img".into(),
            status,
            address: addr.parse().ok(),
            metadata,
            created_at: at(0.0),
            fault: None,
        }
    }

    fn heard(obs: &mut Observed, name: &str, when: f64, url: Option<&str>) {
        obs.heartbeats.insert(
            name.into(),
            HeartbeatInfo {
                last: at(when),
                serving: Some(true),
                url: url.map(str::to_owned),
                address: None,
            },
        );
    }

    fn boots(actions: &[Action]) -> Vec<Role> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Boot { role, .. } => Some(*role),
                _ => None,
            })
            .collect()
    }

    fn pools(actions: &[Action]) -> Vec<PoolUpdate> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::PublishPool(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn boots_the_splitter_and_the_minimum_once() {
        let mut g = settled(2);
        let actions = g.step(
            at(0.0),
            Observed {
                link_up: true,
                ..Default::default()
            },
        );
        assert_eq!(boots(&actions), [Role::Splitter, Role::Web, Role::Web]);
        // Boots in flight count: nothing more is asked for.
        let obs = Observed {
            link_up: true,
            pending_web_boots: 2,
            pending_splitter_boots: 1,
            ..Default::default()
        };
        assert!(boots(&g.step(at(1.0), obs)).is_empty());
        // Booting VMs count too.
        let obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Build, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Build, "127.0.1.3"),
                vm("w2", Role::Web, VmStatus::Build, "127.0.1.4"),
            ],
            ..Default::default()
        };
        assert!(boots(&g.step(at(2.0), obs)).is_empty());
    }

    /// Regression (issue 4, broker cut): the conductor goes deaf before its link notices;
    /// the VMs' last heartbeats are spread over an interval, so the stalest crosses
    /// heartbeat_timeout while the others are still "fresh". Nothing may fail.
    #[test]
    fn a_deaf_conductor_does_not_fail_the_vm_heard_least_recently() {
        let mut g = settled(2);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
                vm("w2", Role::Web, VmStatus::Active, "127.0.1.4"),
            ],
            ..Default::default()
        };
        heard(&mut obs, "s", 10.0, None);
        heard(&mut obs, "w1", 10.4, None);
        heard(&mut obs, "w2", 10.9, None);
        for t in [11.0, 12.0, 13.0, 13.2, 13.5, 13.8, 14.0, 15.0, 20.0] {
            let actions = g.step(at(t), obs.clone());
            assert!(
                !actions.iter().any(|a| matches!(a, Action::Delete(_))),
                "at {t}: {actions:?}"
            );
            // Nor does the splitter lose its members (an empty pool is a 503 for all).
            for pool in pools(&actions) {
                assert_eq!(pool.members.len(), 2, "at {t}: {pool:?}");
            }
        }
        // Hearing again, while one VM stays silent: that one has failed.
        heard(&mut obs, "s", 21.0, None);
        heard(&mut obs, "w2", 21.0, None);
        let actions = g.step(at(21.1), obs);
        assert!(actions.contains(&Action::Delete(VmId("id-w1".into()))));
    }

    #[test]
    fn a_failed_splitter_is_replaced_and_its_successor_gets_the_pool_at_once() {
        let mut g = settled(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s1", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
            ],
            ..Default::default()
        };
        heard(&mut obs, "s1", 0.0, Some("http://127.0.1.2:8000/"));
        heard(&mut obs, "w1", 0.0, None);
        let first = pools(&g.step(at(0.0), obs.clone()));
        assert_eq!(first.len(), 1);
        obs.acked_generation = first[0].generation;
        g.step(at(1.0), obs.clone());

        // The splitter's VM dies: it is deleted and a splitter boot names it.
        obs.vms[0].status = VmStatus::Shutoff;
        let actions = g.step(at(2.0), obs.clone());
        assert!(actions.contains(&Action::Delete(VmId("id-s1".into()))));
        assert!(actions.contains(&Action::Boot {
            role: Role::Splitter,
            replaces: Some("s1".into()),
        }));

        // Its successor is heard at 3.5 s: the current pool goes to it on that tick, not
        // at the next periodic resend.
        obs.vms.remove(0);
        obs.vms
            .push(vm("s2", Role::Splitter, VmStatus::Active, "127.0.1.4"));
        obs.pending_splitter_boots = 0;
        heard(&mut obs, "s2", 3.5, Some("http://127.0.1.4:8000/"));
        heard(&mut obs, "w1", 3.5, None);
        let sent = pools(&g.step(at(3.6), obs.clone()));
        assert_eq!(sent.len(), 1, "the pool at once for the new splitter");
        assert_eq!(sent[0].members.len(), 1);
        assert_eq!(sent[0].members[0].name, member_name("w1"));
        assert!(pools(&g.step(at(4.6), obs)).is_empty(), "and once only");
    }

    #[test]
    fn web_vms_join_the_pool_when_active_and_heard_and_the_site_becomes_ready() {
        let mut g = settled(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("shop-web-1", Role::Web, VmStatus::Active, "127.0.1.3"),
            ],
            ..Default::default()
        };
        heard(&mut obs, "s", 9.5, Some("http://127.0.1.2:8000/webserver/"));
        let first = g.step(at(10.0), obs.clone());
        assert_eq!(
            pools(&first)[0].members,
            vec![],
            "not heard from yet: not in the pool"
        );
        assert_eq!(g.phase, Phase::Starting);

        heard(&mut obs, "shop-web-1", 10.5, None);
        let second = g.step(at(11.0), obs.clone());
        let pool = &pools(&second)[0];
        assert_eq!(pool.members.len(), 1);
        assert_eq!(pool.members[0].name, "shop_web_1");
        assert_eq!(
            (pool.members[0].host.as_str(), pool.members[0].port),
            ("127.0.1.3", AJP_PORT)
        );
        assert!(pool.listening);
        assert_eq!(
            g.phase,
            Phase::Starting,
            "not ready before the splitter acknowledges"
        );

        obs.acked_generation = pool.generation;
        heard(
            &mut obs,
            "s",
            11.5,
            Some("http://127.0.1.2:8000/webserver/"),
        );
        heard(&mut obs, "shop-web-1", 11.5, None);
        let third = g.step(at(12.0), obs);
        assert_eq!(g.phase, Phase::Ready);
        assert!(third.iter().any(
            |a| matches!(a, Action::Notify(e) if e.event_type == "autoscaler.template.ready")
        ));
        assert_eq!(
            g.view(at(12.0)).url.as_deref(),
            Some("http://127.0.1.2:8000/webserver/")
        );
        assert!(
            pools(&third).is_empty(),
            "acknowledged and unchanged: not resent yet"
        );
    }

    /// Issue 7: Nova's fake virt driver gives servers no address; the agent announces
    /// where its server listens, and the pool uses that. A cloud's address wins.
    #[test]
    fn issue_7_a_vm_without_a_cloud_address_joins_on_its_agents_address() {
        let mut g = settled(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, ""),
                vm("shop-web-1", Role::Web, VmStatus::Active, ""),
                vm("shop-web-2", Role::Web, VmStatus::Active, "10.0.0.2"),
            ],
            ..Default::default()
        };
        assert_eq!(obs.vms[1].address, None);
        heard(&mut obs, "s", 9.5, None);
        heard(&mut obs, "shop-web-1", 9.5, None);
        heard(&mut obs, "shop-web-2", 9.5, None);
        // Silent about its address: it cannot be routed to.
        let first = g.step(at(10.0), obs.clone());
        let hosts: Vec<String> = pools(&first)[0]
            .members
            .iter()
            .map(|m| m.host.clone())
            .collect();
        assert_eq!(hosts, ["10.0.0.2"]);
        for (name, addr) in [("shop-web-1", "127.0.7.3"), ("shop-web-2", "127.0.7.4")] {
            obs.heartbeats.get_mut(name).unwrap().address = addr.parse().ok();
        }
        let second = g.step(at(10.5), obs.clone());
        let members: Vec<(String, String)> = pools(&second)[0]
            .members
            .iter()
            .map(|m| (m.name.clone(), m.host.clone()))
            .collect();
        assert_eq!(
            members,
            [
                ("shop_web_1".to_owned(), "127.0.7.3".to_owned()),
                ("shop_web_2".to_owned(), "10.0.0.2".to_owned())
            ]
        );
        let view = g.view(at(10.5));
        assert_eq!(view.vms[1].address.as_deref(), Some("127.0.7.3"));
    }

    #[test]
    fn generations_grow_and_survive_a_restart() {
        let mut g = settled(0);
        let p1 = pools(&g.step(
            at(1.0),
            Observed {
                link_up: true,
                ..Default::default()
            },
        ))[0]
            .generation;
        let mut restarted = settled(0);
        let p2 = pools(&restarted.step(
            at(2.0),
            Observed {
                link_up: true,
                ..Default::default()
            },
        ))[0]
            .generation;
        assert!(p2 > p1);
    }

    #[test]
    fn a_silent_vm_is_reported_once_dropped_from_the_pool_and_replaced() {
        let mut g = settled(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
            ],
            ..Default::default()
        };
        heard(&mut obs, "s", 10.0, None);
        heard(&mut obs, "w1", 10.0, None);
        g.step(at(10.0), obs.clone());
        // 3.5 s later the splitter still speaks, w1 does not.
        heard(&mut obs, "s", 13.5, None);
        let actions = g.step(at(13.5), obs.clone());
        assert!(actions.iter().any(
            |a| matches!(a, Action::Notify(e) if e.event_type == "autoscaler.vm.failed"
                && e.payload["cause"] == "heartbeat_lost")
        ));
        assert!(actions.contains(&Action::Delete(VmId("id-w1".into()))));
        assert_eq!(boots(&actions), [Role::Web], "the minimum is kept");
        assert!(pools(&actions)[0].members.is_empty());
        // Reported once.
        let again = g.step(at(14.0), obs.clone());
        assert!(!again.iter().any(|a| matches!(a, Action::Notify(_))));
        // A broker outage is no evidence: nobody heard, nothing reported.
        let mut quiet = group(1);
        let mut obs2 = obs.clone();
        obs2.link_up = false;
        let actions = quiet.step(at(20.0), obs2);
        assert!(!actions.iter().any(|a| matches!(a, Action::Delete(_))));
    }

    #[test]
    fn an_operator_removal_drains_first_then_deletes_and_keeps_the_minimum() {
        let mut g = settled(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
            ],
            ..Default::default()
        };
        heard(&mut obs, "s", 1.0, None);
        heard(&mut obs, "w1", 1.0, None);
        let first = pools(&g.step(at(1.0), obs.clone()))[0].clone();
        obs.acked_generation = first.generation;
        assert!(g.remove_vm("s").unwrap_err().contains("splitter"));
        assert!(g.remove_vm("nope").is_err());
        g.remove_vm("w1").unwrap();

        heard(&mut obs, "s", 2.0, None);
        heard(&mut obs, "w1", 2.0, None);
        obs.busy.insert("w1".into(), 3);
        let actions = g.step(at(2.0), obs.clone());
        assert_eq!(boots(&actions), [Role::Web], "a replacement boots first");
        assert!(
            pools(&actions).is_empty(),
            "w1 keeps serving: it is the only member"
        );

        // The replacement joins: w1 drains now.
        obs.vms
            .push(vm("w2", Role::Web, VmStatus::Active, "127.0.1.4"));
        heard(&mut obs, "s", 3.0, None);
        heard(&mut obs, "w1", 3.0, None);
        heard(&mut obs, "w2", 3.0, None);
        let actions = g.step(at(3.0), obs.clone());
        let draining = &pools(&actions)[0];
        let states: Vec<_> = draining
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.state))
            .collect();
        assert_eq!(
            states,
            [("w1", MemberState::Draining), ("w2", MemberState::Active)]
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Delete(_))),
            "busy: not yet"
        );

        // Applied and idle: deleted.
        obs.acked_generation = draining.generation;
        obs.busy.insert("w1".into(), 0);
        heard(&mut obs, "w1", 4.0, None);
        heard(&mut obs, "w2", 4.0, None);
        heard(&mut obs, "s", 4.0, None);
        let actions = g.step(at(4.0), obs.clone());
        assert!(actions.contains(&Action::Delete(VmId("id-w1".into()))));
        assert!(boots(&actions).is_empty());
    }

    #[test]
    fn after_a_restart_or_reconnect_silence_proves_nothing_and_no_empty_pool_is_sent() {
        let mut g = group(1);
        let mut obs = Observed {
            link_up: true,
            vms: vec![
                vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
                vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
            ],
            ..Default::default()
        };
        // Restarted: the VMs are in the cloud, their heartbeats not heard yet.
        let actions = g.step(at(0.0), obs.clone());
        assert!(
            actions.iter().all(|a| matches!(a, Action::Record(_))),
            "{actions:?}"
        );
        heard(&mut obs, "s", 0.5, None);
        heard(&mut obs, "w1", 0.5, None);
        assert!(
            pools(&g.step(at(1.0), obs.clone())).is_empty(),
            "still settling"
        );
        // Settled and heard: the pool is sent, with w1.
        heard(&mut obs, "s", 3.0, None);
        heard(&mut obs, "w1", 3.0, None);
        let pool = &pools(&g.step(at(3.0), obs.clone()))[0];
        assert_eq!(pool.members.len(), 1);
        // A broker outage: nothing heard for 10 s, but nobody is declared dead, and the
        // pool is kept while the link settles again.
        obs.link_up = false;
        assert!(g
            .step(at(13.0), obs.clone())
            .iter()
            .all(|a| !matches!(a, Action::Delete(_) | Action::Notify(_))));
        obs.link_up = true;
        let actions = g.step(at(14.0), obs.clone());
        assert!(
            actions
                .iter()
                .all(|a| !matches!(a, Action::Delete(_) | Action::Notify(_))),
            "{actions:?}"
        );
        assert!(pools(&actions).iter().all(|p| p.members.len() == 1));
    }

    #[test]
    fn a_crashed_vm_is_reported_as_failed() {
        let mut g = group(1);
        let obs = Observed {
            link_up: true,
            vms: vec![vm("w1", Role::Web, VmStatus::Shutoff, "127.0.1.3")],
            ..Default::default()
        };
        let actions = g.step(at(1.0), obs);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Notify(e) if e.event_type == "autoscaler.vm.failed")));
        assert!(actions.contains(&Action::Delete(VmId("id-w1".into()))));
    }

    #[test]
    fn destroy_stops_the_splitter_first_then_deletes_everything_then_forgets() {
        let mut g = settled(1);
        let vms = vec![
            vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2"),
            vm("w1", Role::Web, VmStatus::Active, "127.0.1.3"),
        ];
        let mut obs = Observed {
            link_up: true,
            vms: vms.clone(),
            ..Default::default()
        };
        heard(&mut obs, "s", 1.0, None);
        heard(&mut obs, "w1", 1.0, None);
        g.step(at(1.0), obs.clone());
        g.destroy();
        let actions = g.step(at(2.0), obs.clone());
        let stop = &pools(&actions)[0];
        assert!(!stop.listening);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Delete(_))),
            "nothing deleted before the splitter stopped"
        );
        assert_eq!(g.phase, Phase::Stopping);

        obs.acked_generation = stop.generation;
        heard(&mut obs, "s", 2.5, None);
        heard(&mut obs, "w1", 2.5, None);
        let actions = g.step(at(3.0), obs.clone());
        assert_eq!(g.phase, Phase::Deleting);
        assert!(actions.contains(&Action::Delete(VmId("id-s".into()))));
        assert!(actions.contains(&Action::Delete(VmId("id-w1".into()))));
        assert!(
            boots(&actions).is_empty(),
            "no replacement while tearing down"
        );

        obs.pending_deletes = vms.iter().map(|v| v.id.clone()).collect();
        assert!(!g
            .step(at(4.0), obs.clone())
            .iter()
            .any(|a| matches!(a, Action::Delete(_))));
        let done = g.step(
            at(5.0),
            Observed {
                link_up: true,
                ..Default::default()
            },
        );
        assert_eq!(done, vec![Action::Forget]);
        assert_eq!(g.phase, Phase::Gone);
    }

    #[test]
    fn a_splitter_that_never_acknowledges_the_stop_is_deleted_after_drain_timeout() {
        let mut g = settled(0);
        let obs = Observed {
            link_up: true,
            vms: vec![vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2")],
            ..Default::default()
        };
        g.step(at(0.0), obs.clone());
        g.destroy();
        g.step(at(1.0), obs.clone());
        g.step(at(20.0), obs.clone());
        assert_eq!(g.phase, Phase::Stopping);
        let actions = g.step(at(31.5), obs);
        assert_eq!(g.phase, Phase::Deleting);
        assert!(actions.contains(&Action::Delete(VmId("id-s".into()))));
    }

    // Scenarios in virtual time: a site ticked once a second as the service would, with
    // the splitter's measurements, the cloud's view and the agents' heartbeats.

    /// One second of the splitter's measurements as closed-loop load shows them.
    #[derive(Debug, Clone, Copy)]
    struct Load {
        requests: u64,
        /// Mean response time, seconds.
        mean: f64,
    }

    /// 36 clients on one VM that completes 80 requests a second: W = 36 / 80 = 0.45 s,
    /// and they need 36 / (80 × 0.18) = 2.5 VMs at the aim of 0.2 s × (1 − 10 %).
    const SLOW: Load = Load {
        requests: 80,
        mean: 0.45,
    };
    /// The same 36 clients on three such VMs: W = 36 / 240 = 0.15 s, still 2.5 VMs.
    const SPREAD: Load = Load {
        requests: 240,
        mean: 0.15,
    };
    /// 1.5 clients: a fraction of one VM.
    const LOW: Load = Load {
        requests: 30,
        mean: 0.05,
    };

    /// The splitter's metrics for the second ending at `end`.
    fn metrics(end: f64, load: Load) -> Metrics {
        let stats = crate::messaging::Stats {
            requests: load.requests,
            errors: 0,
            mean: load.mean,
            p50: load.mean,
            p95: load.mean,
            p99: load.mean,
            max: load.mean,
        };
        Metrics {
            group: "shop".into(),
            vm_id: "s".into(),
            start: at(end - 1.0),
            interval: 1.0,
            site: stats,
            members: Vec::new(),
            malformed_lines: 0,
            modjk_messages: 0,
        }
    }

    /// A web VM asked for at `created` (seconds).
    fn web(name: &str, status: VmStatus, addr: &str, created: f64) -> Vm {
        Vm {
            created_at: at(created),
            ..vm(name, Role::Web, status, addr)
        }
    }

    /// Payloads of the notifications of `event_type`.
    fn notified<'a>(actions: &'a [Action], event_type: &str) -> Vec<&'a serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(e) if e.event_type == event_type => Some(&e.payload),
                _ => None,
            })
            .collect()
    }

    /// Ids of the VMs deleted.
    fn deleted(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(id) => Some(id.0.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The `replaces` of each web VM booted.
    fn web_boots(actions: &[Action]) -> Vec<Option<String>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Boot {
                    role: Role::Web,
                    replaces,
                } => Some(replaces.clone()),
                _ => None,
            })
            .collect()
    }

    /// The tick's time-series row (exactly one a tick).
    fn record(actions: &[Action]) -> &Row {
        let rows: Vec<&Row> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 1, "{actions:?}");
        rows[0]
    }

    fn members(pool: &PoolUpdate) -> Vec<(&str, MemberState)> {
        pool.members
            .iter()
            .map(|m| (m.name.as_str(), m.state))
            .collect()
    }

    /// A group under test with the world around it.
    struct Site {
        g: Group,
        obs: Observed,
        now: f64,
        /// Whether the agents' heartbeats reach the conductor (each ACTIVE VM's is
        /// refreshed every tick).
        agents_heard: bool,
        /// VMs whose agent reports that their server does not answer.
        unserving: BTreeSet<String>,
        /// Acknowledge every pool published, before the next tick, like a healthy splitter.
        auto_ack: bool,
        /// Every tick's time and actions.
        log: Vec<(f64, Vec<Action>)>,
    }

    impl Site {
        fn new(g: Group, vms: Vec<Vm>) -> Site {
            Site {
                g,
                obs: Observed {
                    link_up: true,
                    vms,
                    ..Default::default()
                },
                now: 0.0,
                agents_heard: true,
                unserving: BTreeSet::new(),
                auto_ack: true,
                log: Vec::new(),
            }
        }

        /// A settled group, Ready at 1 s with splitter `s` and `webs` ACTIVE, heard, in
        /// the acknowledged pool; no metrics yet.
        fn ready(min: u32, webs: &[&str]) -> Site {
            let mut vms = vec![vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2")];
            for (i, name) in webs.iter().enumerate() {
                let addr = format!("127.0.1.{}", 10 + i);
                vms.push(vm(name, Role::Web, VmStatus::Active, &addr));
            }
            let mut site = Site::new(settled(min), vms);
            site.tick_at(0.0, None);
            site.tick_at(1.0, None);
            assert_eq!(site.g.phase, Phase::Ready);
            assert_eq!(site.g.pool.len(), webs.len());
            site
        }

        fn tick(&mut self, load: Option<Load>) -> Vec<Action> {
            self.tick_at(self.now + 1.0, load)
        }

        /// One tick at `now`: heartbeats refreshed, the second's metrics, and the
        /// service's bookkeeping of the actions (web boots pending until the test has the
        /// cloud answer them, pools acknowledged when `auto_ack`).
        fn tick_at(&mut self, now: f64, load: Option<Load>) -> Vec<Action> {
            self.now = now;
            if self.agents_heard {
                for vm in self
                    .obs
                    .vms
                    .iter()
                    .filter(|vm| vm.status == VmStatus::Active)
                {
                    self.obs.heartbeats.insert(
                        vm.name.clone(),
                        HeartbeatInfo {
                            last: at(now),
                            serving: Some(!self.unserving.contains(&vm.name)),
                            url: None,
                            address: None,
                        },
                    );
                }
            }
            self.obs.metrics = load.map(|l| metrics(now, l)).into_iter().collect();
            let actions = self.g.step(at(now), self.obs.clone());
            self.obs.pending_web_boots += web_boots(&actions).len();
            if self.auto_ack {
                if let Some(pool) = pools(&actions).last() {
                    self.obs.acked_generation = pool.generation;
                }
            }
            self.log.push((now, actions.clone()));
            actions
        }

        /// The cloud finished deleting `name`.
        fn gone(&mut self, name: &str) {
            self.obs.vms.retain(|vm| vm.name != name);
            self.obs.heartbeats.remove(name);
        }

        /// The cloud answered a pending web boot with `vm`.
        fn booted(&mut self, vm: Vm) {
            self.obs.pending_web_boots -= 1;
            self.obs.vms.push(vm);
        }

        fn set_status(&mut self, name: &str, status: VmStatus) {
            for vm in self.obs.vms.iter_mut().filter(|vm| vm.name == name) {
                vm.status = status;
            }
        }

        /// The ticks whose actions hold a notification of `event_type`.
        fn ticks_notifying(&self, event_type: &str) -> Vec<f64> {
            self.log
                .iter()
                .filter(|(_, a)| !notified(a, event_type).is_empty())
                .map(|(t, _)| *t)
                .collect()
        }

        /// Every web boot of the log: when, and what it replaces.
        fn web_boots(&self) -> Vec<(f64, Option<String>)> {
            self.log
                .iter()
                .flat_map(|(t, a)| web_boots(a).into_iter().map(move |r| (*t, r)))
                .collect()
        }
    }

    /// 36 closed-loop clients on a one-VM site (min 1, max 4, target 0.2 s) until the
    /// policy scales out; the two boots are then pending, BUILD, ACTIVE and join the pool
    /// (the load stays slow meanwhile: the clients wait). Returns the site and the time
    /// of the scale-out.
    fn scaled_out_to_three() -> (Site, f64) {
        let mut site = Site::ready(1, &["w1"]);
        let mut up = None;
        while up.is_none() && site.now < 30.0 {
            let actions = site.tick(Some(SLOW));
            if !notified(&actions, "autoscaler.scale.up").is_empty() {
                up = Some(site.now);
            }
        }
        let up = up.expect("36 clients on one VM for 30 s: no scale-out");
        // Both boots still pending at the cloud.
        site.tick(Some(SLOW));
        site.tick(Some(SLOW));
        // One answered (BUILD), one pending.
        site.booted(web("w2", VmStatus::Build, "127.0.1.11", site.now + 1.0));
        site.tick(Some(SLOW));
        site.booted(web("w3", VmStatus::Build, "127.0.1.12", site.now + 1.0));
        for _ in 0..3 {
            site.tick(Some(SLOW));
        }
        // Up and heard: they join the pool.
        site.set_status("w2", VmStatus::Active);
        site.set_status("w3", VmStatus::Active);
        site.tick(Some(SLOW));
        assert_eq!(
            members(&site.g.view_pool()),
            [
                ("w1", MemberState::Active),
                ("w2", MemberState::Active),
                ("w3", MemberState::Active)
            ]
        );
        (site, up)
    }

    impl Group {
        /// The pool last decided, as the next publication would carry it.
        fn view_pool(&self) -> PoolUpdate {
            PoolUpdate {
                group: self.name().to_owned(),
                generation: self.generation,
                members: self.pool.clone(),
                listening: self.listening,
            }
        }
    }

    #[test]
    fn sustained_slow_seconds_scale_out_once_to_the_clients_over_capacity() {
        let (mut site, up) = scaled_out_to_three();
        for _ in 0..20 {
            site.tick(Some(SPREAD));
        }
        // Slow from 2 s: the 7th slow second (stabilization 5 s + 2) decides.
        assert_eq!(up, 8.0);
        assert_eq!(site.ticks_notifying("autoscaler.scale.up"), [up]);
        let (_, actions) = site.log.iter().find(|(t, _)| *t == up).unwrap();
        let payload = notified(actions, "autoscaler.scale.up")[0];
        assert_eq!(
            (&payload["from"], &payload["to"], &payload["add"]),
            (
                &serde_json::json!(1),
                &serde_json::json!(3),
                &serde_json::json!(2)
            )
        );
        let metric = payload["metric"].as_f64().unwrap();
        assert!((metric - 2.5).abs() < 1e-9, "{metric}");
        // Two boots, at once, replacing nothing; none while they are pending or BUILD,
        // nor once they serve.
        assert_eq!(site.web_boots(), [(up, None), (up, None)]);
        assert!(site.ticks_notifying("autoscaler.scale.down").is_empty());
        assert!(site.ticks_notifying("autoscaler.vm.failed").is_empty());
        assert!(site.log.iter().all(|(_, a)| deleted(a).is_empty()));
    }

    #[test]
    fn low_load_after_the_cooldown_scales_in_draining_before_deleting_never_below_min() {
        let (mut site, up) = scaled_out_to_three();
        // w2 is the cheapest to drain, then w3.
        site.obs.busy = [("w1", 2), ("w2", 0), ("w3", 1)]
            .into_iter()
            .map(|(n, b)| (n.to_owned(), b))
            .collect();
        // The splitter acknowledges only when the test says so from here.
        site.auto_ack = false;
        for _ in 0..5 {
            site.tick(Some(SPREAD));
        }
        let low_from = site.now + 1.0;
        let mut down = None;
        while down.is_none() && site.now < up + 90.0 {
            let actions = site.tick(Some(LOW));
            if !notified(&actions, "autoscaler.scale.down").is_empty() {
                down = Some((site.now, actions));
            }
        }
        let (t_down, actions) = down.expect("no scale-in");
        // 15 low seconds (scale_in_delay) were there before the cooldown ended; the
        // cooldown (30 s after the scale-out) decides.
        assert!(t_down - low_from + 1.0 >= 15.0);
        assert_eq!(t_down, up + 30.0);
        let payload = notified(&actions, "autoscaler.scale.down")[0];
        assert_eq!(
            (&payload["from"], &payload["to"], &payload["remove"]),
            (
                &serde_json::json!(3),
                &serde_json::json!(1),
                &serde_json::json!(["w2", "w3"])
            )
        );
        assert_eq!(record(&actions).decision, "scale_in");
        // Drained first: the splitter is told, nothing is deleted yet.
        let draining = pools(&actions)
            .pop()
            .expect("the draining pool is sent at once");
        assert_eq!(
            members(&draining),
            [
                ("w1", MemberState::Active),
                ("w2", MemberState::Draining),
                ("w3", MemberState::Draining)
            ]
        );
        assert!(deleted(&actions).is_empty());
        assert!(web_boots(&actions).is_empty());

        // Idle but the splitter has not applied the draining pool: not yet.
        let actions = site.tick(Some(LOW));
        assert!(deleted(&actions).is_empty(), "{actions:?}");
        let row = record(&actions);
        assert_eq!(
            (
                row.vms_booting,
                row.vms_active,
                row.vms_draining,
                row.desired
            ),
            (0, 1, 2, 1)
        );
        // Applied: the idle one goes, the busy one waits for its requests.
        site.obs.acked_generation = draining.generation;
        let actions = site.tick(Some(LOW));
        assert_eq!(deleted(&actions), ["id-w2"]);
        site.gone("w2");
        site.auto_ack = true;
        let actions = site.tick(Some(LOW));
        assert!(deleted(&actions).is_empty(), "w3 still busy: {actions:?}");
        site.obs.busy.insert("w3".into(), 0);
        let actions = site.tick(Some(LOW));
        assert_eq!(deleted(&actions), ["id-w3"]);
        site.gone("w3");

        // Never below min, however long the load stays low.
        let settled_from = site.now;
        for _ in 0..90 {
            let actions = site.tick(Some(LOW));
            let row = record(&actions);
            assert_eq!((row.vms_active, row.desired), (1, 1), "{row:?}");
        }
        assert_eq!(site.ticks_notifying("autoscaler.scale.down"), [t_down]);
        assert!(
            site.web_boots().iter().all(|(t, _)| *t <= up),
            "no boot after the scale-out: {:?}",
            site.web_boots()
        );
        assert!(site
            .log
            .iter()
            .filter(|(t, _)| *t > settled_from)
            .all(|(_, a)| deleted(a).is_empty()));
        assert_eq!(members(&site.g.view_pool()), [("w1", MemberState::Active)]);
    }

    #[test]
    fn scale_in_waits_for_scale_in_delay_of_low_seconds() {
        // (low seconds before the load is back, scale-in time). Fresh site: no cooldown.
        let cases = [(10, None), (14, None), (15, Some(16.0)), (20, Some(16.0))];
        for (low_seconds, expected) in cases {
            let mut site = Site::ready(1, &["w1", "w2", "w3"]);
            for _ in 0..low_seconds {
                site.tick(Some(LOW));
            }
            for _ in 0..5 {
                site.tick(Some(SPREAD));
            }
            assert_eq!(
                site.ticks_notifying("autoscaler.scale.down"),
                expected.into_iter().collect::<Vec<_>>(),
                "{low_seconds} low seconds"
            );
            assert!(site.ticks_notifying("autoscaler.scale.up").is_empty());
            assert!(site.web_boots().is_empty());
        }
    }

    #[test]
    fn a_burst_shorter_than_stabilization_changes_nothing() {
        // A burst of under 5 s touches at most 6 one-second measurements; 7 is a load
        // change the policy must act on (the harness can see a scale-out).
        for (slow_seconds, scale_outs) in [(1, 0), (2, 0), (3, 0), (4, 0), (6, 0), (7, 1)] {
            let mut site = Site::ready(1, &["w1"]);
            for _ in 0..10 {
                site.tick(Some(LOW));
            }
            for _ in 0..slow_seconds {
                site.tick(Some(SLOW));
            }
            for _ in 0..20 {
                site.tick(Some(LOW));
            }
            let what = format!("{slow_seconds} slow seconds");
            assert_eq!(
                site.ticks_notifying("autoscaler.scale.up").len(),
                scale_outs,
                "{what}"
            );
            assert!(
                site.ticks_notifying("autoscaler.scale.down").is_empty(),
                "{what}"
            );
            assert_eq!(site.web_boots().len(), 2 * scale_outs, "{what}");
            if scale_outs == 0 {
                assert!(
                    site.log
                        .iter()
                        .all(|(_, a)| record(a).decision == "hold" && record(a).desired == 1),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn a_web_vm_still_building_after_boot_timeout_is_failed_deleted_and_replaced() {
        let splitter = vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2");
        let mut site = Site::new(
            settled(1),
            vec![splitter, web("w1", VmStatus::Build, "", 0.0)],
        );
        // Booting within boot_timeout (300 s): capacity on its way, nothing to do.
        for t in [1.0, 2.0, 150.0, 299.5] {
            let actions = site.tick_at(t, None);
            assert!(web_boots(&actions).is_empty(), "{t}: {actions:?}");
            assert!(notified(&actions, "autoscaler.vm.failed").is_empty(), "{t}");
        }
        let actions = site.tick_at(300.5, None);
        let failed = notified(&actions, "autoscaler.vm.failed");
        assert_eq!(failed.len(), 1, "{actions:?}");
        assert_eq!(
            (
                &failed[0]["vm_name"],
                &failed[0]["cause"],
                &failed[0]["role"]
            ),
            (
                &serde_json::json!("w1"),
                &serde_json::json!("boot_timeout"),
                &serde_json::json!("web")
            )
        );
        assert_eq!(deleted(&actions), ["id-w1"]);
        // Reported once; replaced once, naming it (boots may be held back a few seconds
        // after a VM that was never heard).
        site.obs.pending_deletes.insert(VmId("id-w1".into()));
        for t in 1..=10 {
            let actions = site.tick_at(300.5 + f64::from(t), None);
            assert!(
                notified(&actions, "autoscaler.vm.failed").is_empty(),
                "{actions:?}"
            );
        }
        let boots = site.web_boots();
        assert_eq!(boots.len(), 1, "{boots:?}");
        assert_eq!(boots[0].1.as_deref(), Some("w1"));
        assert!(boots[0].0 <= 300.5 + 2.0, "{boots:?}");
    }

    /// Ticks a one-web-VM site from 391 s to 420 s; w1 (asked for at `created`) has its
    /// server stop answering from 401 s. Deletes are carried out at once.
    fn stops_serving(created: f64) -> Site {
        let splitter = vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2");
        let w1 = web("w1", VmStatus::Active, "127.0.1.10", created);
        let mut site = Site::new(settled(1), vec![splitter, w1]);
        for t in 391..=420 {
            if t == 401 {
                site.unserving.insert("w1".into());
            }
            let actions = site.tick_at(f64::from(t), Some(LOW));
            if deleted(&actions).contains(&"id-w1") {
                site.gone("w1");
            }
        }
        site
    }

    #[test]
    fn a_web_vm_whose_server_stops_answering_is_failed_only_once_past_boot_timeout() {
        // (asked for at, failed at): heartbeat_timeout 3 s of not serving, past
        // boot_timeout 300 s.
        for (created, failed_at) in [(0.0, Some(405.0)), (390.0, None)] {
            let site = stops_serving(created);
            assert_eq!(
                site.ticks_notifying("autoscaler.vm.failed"),
                failed_at.into_iter().collect::<Vec<_>>(),
                "created at {created}"
            );
            // Out of the pool at once either way.
            let (_, at_401) = &site.log[10];
            assert!(
                members(&pools(at_401)[0]).is_empty(),
                "created at {created}: {at_401:?}"
            );
            match failed_at {
                Some(t) => {
                    let (_, actions) = site.log.iter().find(|(at, _)| *at == t).unwrap();
                    let failed = notified(actions, "autoscaler.vm.failed")[0];
                    assert_eq!(failed["cause"], "not_serving");
                    assert_eq!(failed["vm_name"], "w1");
                    assert_eq!(deleted(actions), ["id-w1"]);
                    // One VM booted in its place (not two).
                    assert_eq!(site.web_boots().len(), 1, "{:?}", site.web_boots());
                }
                None => {
                    // Young: still booting as far as the policy goes; it counts.
                    assert!(site.log.iter().all(|(_, a)| deleted(a).is_empty()));
                    assert!(site.web_boots().is_empty(), "{:?}", site.web_boots());
                }
            }
        }
    }

    /// An old VM that stops serving stops counting as capacity at once, so the policy
    /// boots its replacement before health declares it failed (the boot cannot name it);
    /// its name must not stick to a later, unrelated boot.
    #[test]
    fn a_vm_that_stops_serving_leaves_no_stale_replacement_name() {
        let mut site = stops_serving(0.0);
        // Later the load calls for more VMs: that boot is a scale-out, not a replacement.
        site.booted(web("w4", VmStatus::Active, "127.0.1.14", 421.0));
        for _ in 0..10 {
            site.tick(Some(SLOW));
        }
        assert_eq!(
            site.web_boots()
                .into_iter()
                .map(|(_, r)| r)
                .collect::<Vec<_>>(),
            [None, None, None],
            "{:?}",
            site.web_boots()
        );
    }

    #[test]
    fn a_boot_timed_out_at_a_whole_tick_is_named_by_its_replacement() {
        let splitter = vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2");
        let mut site = Site::new(
            settled(1),
            vec![splitter, web("w1", VmStatus::Build, "", 0.0)],
        );
        for t in [1.0, 299.0, 300.0, 301.0, 302.0, 303.0, 304.0, 305.0] {
            site.tick_at(t, None);
        }
        // One boot, the replacement, naming w1 (whenever a hold on boots lets it go).
        let replaces: Vec<Option<String>> = site.web_boots().into_iter().map(|(_, r)| r).collect();
        assert_eq!(replaces, [Some("w1".to_owned())], "{:?}", site.web_boots());
    }

    #[test]
    fn a_broker_reconnect_fails_nothing_during_the_grace_period() {
        // The link's start as the service reports it after the reconnect: none (the
        // group's own view) or the reconnect itself.
        for service_view in [None, Some(21.0)] {
            let mut site = Site::ready(1, &["w1"]);
            for _ in 0..9 {
                site.tick(Some(LOW));
            }
            // Outage from 11 s: nothing heard, no metrics.
            site.agents_heard = false;
            site.obs.link_up = false;
            for _ in 0..10 {
                site.tick(None);
            }
            // Back at 21 s; the heartbeats (last at 10 s) take a moment.
            site.obs.link_up = true;
            site.obs.link_up_since = service_view.map(at);
            let mut grace = Vec::new();
            for _ in 0..3 {
                grace.push(site.tick(None));
            }
            for actions in &grace {
                let row = record(actions);
                assert_eq!(row.decision, "hold");
                assert!(row.reason.contains("grace period"), "{}", row.reason);
            }
            site.agents_heard = true;
            for _ in 0..20 {
                site.tick(Some(LOW));
            }
            let what = format!("{service_view:?}");
            assert!(
                site.ticks_notifying("autoscaler.vm.failed").is_empty(),
                "{what}"
            );
            assert!(
                site.log.iter().all(|(_, a)| deleted(a).is_empty()),
                "{what}"
            );
            assert!(site.web_boots().is_empty(), "{what}");
            assert!(
                site.log
                    .iter()
                    .flat_map(|(_, a)| pools(a))
                    .all(|p| members(&p) == [("w1", MemberState::Active)]),
                "{what}: the pool is never emptied"
            );
        }
    }

    #[test]
    fn each_tick_records_one_row_with_the_fleet_and_the_decision() {
        // The link has just come up: a grace period with one VM serving.
        let splitter = vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2");
        let w1 = vm("w1", Role::Web, VmStatus::Active, "127.0.1.10");
        let mut site = Site::new(group(1), vec![splitter, w1]);
        let actions = site.tick_at(0.0, Some(LOW));
        let row = record(&actions);
        assert_eq!(row.decision, "hold");
        assert!(row.reason.contains("grace period"), "{}", row.reason);
        assert_eq!(
            (row.vms_booting, row.vms_active, row.vms_draining),
            (0, 1, 0)
        );
        assert_eq!((row.requests, row.rate), (30, 30.0));
        assert_eq!(row.mean_response_time, Some(0.05));
        assert_eq!(row.target_response_time, 0.2);
        assert_eq!(row.group, "shop");
        assert_eq!(row.time, at(0.0));

        // Settled at 3 s; then 36 clients on the one VM.
        for _ in 0..3 {
            site.tick(Some(LOW));
        }
        assert_eq!(record(&site.log[3].1).desired, 1);
        let mut scaling = None;
        while scaling.is_none() && site.now < 30.0 {
            let actions = site.tick(Some(SLOW));
            if record(&actions).decision != "hold" {
                scaling = Some(actions);
            }
        }
        let actions = scaling.expect("no scale-out");
        let row = record(&actions);
        assert_eq!(row.decision, "scale_out");
        assert!(row.reason.contains("1 -> 3"), "{}", row.reason);
        assert_eq!(row.desired, 3);
        assert!((row.metric.unwrap() - 2.5).abs() < 1e-9, "{row:?}");
        assert_eq!(
            (row.vms_booting, row.vms_active, row.vms_draining),
            (2, 1, 0),
            "the fleet after the decision: the boots asked for are booting"
        );
        assert_eq!((row.requests, row.mean_response_time), (80, Some(0.45)));
        assert!((row.in_flight.unwrap() - 36.0).abs() < 1e-9);
        // The boots asked for count as booting.
        let row = record(&site.tick(Some(SLOW))).clone();
        assert_eq!(
            (
                row.vms_booting,
                row.vms_active,
                row.vms_draining,
                row.desired
            ),
            (2, 1, 0, 3)
        );
        assert_eq!(row.decision, "hold");
        site.booted(web("w2", VmStatus::Build, "127.0.1.11", site.now + 1.0));
        let row = record(&site.tick(Some(SLOW))).clone();
        assert_eq!((row.vms_booting, row.vms_active, row.desired), (2, 1, 3));
        // One row a tick, all along.
        assert!(site
            .log
            .iter()
            .all(|(_, a)| { a.iter().filter(|x| matches!(x, Action::Record(_))).count() == 1 }));
    }

    #[test]
    fn a_restarted_conductor_adopts_the_vms_it_finds() {
        // (the link's start as the service reports it, the first heartbeats heard):
        // settled by the group's own grace period, with the agents heard at once or
        // only within the grace period (their VMs, asked for long ago, must not be
        // taken for boots that timed out), or settled at once by the service's link (up
        // long before this group was created).
        for (link_up_since, heard_from) in [(None, 0.0), (None, 2.0), (Some(-100.0), 0.0)] {
            let mut vms = vec![vm("s", Role::Splitter, VmStatus::Active, "127.0.1.2")];
            for (i, name) in ["w1", "w2", "w3"].into_iter().enumerate() {
                vms.push(web(
                    name,
                    VmStatus::Active,
                    &format!("127.0.1.{}", 10 + i),
                    -600.0,
                ));
            }
            let mut site = Site::new(group(1), vms);
            site.obs.link_up_since = link_up_since.map(at);
            for t in 0..30 {
                let t = f64::from(t);
                site.agents_heard = t >= heard_from;
                site.tick_at(t, None);
            }
            let what = format!("{link_up_since:?}, heard from {heard_from}");
            assert!(site.web_boots().is_empty(), "{what}");
            assert!(
                site.log.iter().all(|(_, a)| deleted(a).is_empty()),
                "{what}"
            );
            assert!(
                site.ticks_notifying("autoscaler.scale.down").is_empty(),
                "{what}"
            );
            assert!(
                site.ticks_notifying("autoscaler.vm.failed").is_empty(),
                "{what}"
            );
            let row = record(&site.log.last().unwrap().1);
            assert_eq!((row.vms_active, row.desired), (3, 3), "{what}");
            assert_eq!(site.g.pool.len(), 3, "{what}");
            assert_eq!(site.g.phase, Phase::Ready, "{what}");
        }
    }
}
