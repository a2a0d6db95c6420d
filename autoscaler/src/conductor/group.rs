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
    pub policy: PolicyOpts,
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
    /// finish), then deleted; the minimum rule boots a replacement meanwhile if needed.
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
        let anyone_heard = obs.vms.iter().any(|vm| self.heartbeat_fresh(vm, &obs, now));
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
                && age > self.settings.boot_timeout
                && (vm.status == VmStatus::Build || !heard_before)
            {
                Some("boot_timeout")
            } else if settled
                && age > self.settings.boot_timeout
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
                if splitters.is_empty() && obs.pending_splitter_boots == 0 {
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
                    adding = d.add;
                    for _ in 0..d.add {
                        let replaces = self.take_replaced(Role::Web);
                        actions.push(Action::Boot {
                            role: Role::Web,
                            replaces,
                        });
                    }
                    for name in &d.remove {
                        if webs.iter().any(|vm| &vm.name == name) {
                            self.removals.entry(name.clone()).or_insert(None);
                        }
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
                                "add": d.add, "remove": d.remove, "metric": d.metric,
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
                            host: vm.address?.to_string(),
                            port: AJP_PORT,
                            state: MemberState::Active,
                        })
                    })
                    .collect();
                desired.sort_by(|a, b| a.name.cmp(&b.name));
                if !settled {
                    // Heartbeats may not have arrived yet: keep the members the splitter
                    // has rather than empty its pool on a conductor restart or reconnect.
                    desired = self.pool.clone();
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
            actions.push(Action::Record(self.row(
                now,
                &observations,
                &fleet,
                decision.as_ref(),
            )));
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
            vms_booting: count(VmPhase::Booting),
            vms_active: count(VmPhase::Active),
            vms_draining: count(VmPhase::Draining),
            desired: decision
                .map(|d| d.desired)
                .or(self.policy.desired())
                .unwrap_or(0),
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
                    address: vm.address.map(|a| a.to_string()),
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
                boot_timeout: Duration::from_secs(300),
                policy: crate::conf::Config::default().policy,
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
}
