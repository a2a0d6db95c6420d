//! One run of the whole loop in virtual time: clients or arrivals, the splitter, the web
//! VMs, the splitter agent's quarter-second observations, and the conductor's tick feeding
//! a [`ScalingPolicy`] and carrying its decisions out as `conductor/group.rs` does.
//!
//! Timeline: the agent's intervals end every quarter of a second (its requests are those
//! that *ended* in it, as `autoscaler-agent` measures); the conductor ticks once a second,
//! first at 1.6 s (the tick is not aligned with the agent), takes the observations that
//! arrived since its last tick, decides and acts, and writes its row. As the conductor
//! does, it also ticks as soon as an observation completes the evidence for a scaling
//! action ([`ScalingPolicy::acts_now`]), and counts its next tick a second from then.
//!
//! What the conductor does, with the group's own rules (`autoscaler_core::group`: health's
//! [`judge`], the drain rule [`drained`], the bounds [`boots_within_bounds`], the row
//! [`build`]):
//! - VMs are booting from the boot request until they take requests (boot delay drawn
//!   from [`SimConfig::boot`]); booting VMs count as capacity (the policy applies
//!   `boot_timeout`);
//! - a removed VM that is still booting is deleted at once; an active one drains (the
//!   splitter stops sending it requests, those it has finish) and is deleted at the first
//!   tick it has none; draining VMs count against `max_vms` until then;
//! - a failed VM (crashed, or its heartbeats lost) is noticed at the first tick
//!   `heartbeat_timeout` after it failed: it leaves the pool, is deleted (what it still
//!   had fails) and no longer counts, so the size has it replaced.
//!
//! A crash stops the VM at once: its requests fail, and the splitter (mod_jk puts the
//! member in error on its first failure) sends it no more. A VM whose heartbeats are lost
//! keeps serving until the conductor deletes it.
//!
//! Deterministic: the same config, load, policy and seed give the same rows.

use chrono::{DateTime, TimeDelta, Utc};

use super::{
    agent::IntervalStats,
    distribution::Distribution,
    events::EventQueue,
    load::{Load, LoadKind},
    rng::{Rng, Stream},
    splitter::Splitter,
    vm::{Request, Vm, VmState},
};
use crate::{
    conductor::{
        group::{
            drain::drained,
            health::{judge, Hearing, VmFacts},
            row::{build, Outcome},
            sizing::boots_within_bounds,
            GroupSettings,
        },
        group_settings,
        timeseries::Row,
    },
    driver::VmStatus,
    policy::{FleetVm, Inputs, Observation, ScalingPolicy, VmPhase},
};

/// Where virtual time 0 is on the wall clock, for the CSV's `time` column: fixed, so a
/// run's CSV does not depend on when it ran.
pub fn epoch() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).expect("2030-01-01T00:00:00Z is a valid time")
}

/// A closed-loop client whose request failed at once (no member to take it) tries again
/// after this long, seconds: ab's next request after a refused connection.
const RETRY_AFTER_FAILURE: f64 = 0.01;
/// The conductor's first tick, this long after the agent's first second ends, seconds.
const TICK_OFFSET: f64 = 0.6;
/// The agent's interval, seconds (`autoscaler-agent`'s `METRICS_INTERVAL`).
const REPORT_INTERVAL: f64 = 0.25;

/// A failure the run injects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// Seconds since the run began.
    pub at: f64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The oldest active VM dies: its requests fail, it serves no more.
    Crash,
    /// The oldest active VM's heartbeats stop; it keeps serving until deleted.
    HeartbeatLost,
}

/// The site and the cloud being simulated.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// The group name in the CSV.
    pub group: String,
    pub min_vms: u32,
    pub max_vms: u32,
    /// The template's `target_response_time`, seconds.
    pub target_response_time: f64,
    /// Requests a web VM serves at once (Tomcat `maxThreads`; the local images: 4).
    pub threads: u32,
    /// Service time of one request on a thread, seconds.
    pub service: Distribution,
    /// From the boot request until the VM takes requests, seconds.
    pub boot: Distribution,
    /// `[conductor] heartbeat_timeout`, seconds.
    pub heartbeat_timeout: f64,
    pub faults: Vec<Fault>,
    /// Seconds simulated after the load ends (no load).
    pub tail: f64,
}

impl SimConfig {
    /// The local images' web tier (4 threads, 50 ms a request: 80 requests a second a
    /// VM) and the sample template (1 to 4 VMs, target 0.2 s), with VMs that boot in
    /// about 30 s, like a small Nova instance.
    pub fn local_images(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            group: "sim".to_owned(),
            min_vms: 1,
            max_vms: 4,
            target_response_time: 0.2,
            threads: 4,
            service: Distribution::Deterministic(0.05),
            boot: Distribution::Lognormal {
                mean: 30.0,
                cv: 0.1,
            },
            heartbeat_timeout: 3.0,
            faults: Vec::new(),
            tail: 0.0,
        }
    }

    /// The group's rules' parameters: the conductor's defaults, with this site's
    /// `heartbeat_timeout`.
    pub fn group_settings(&self) -> GroupSettings {
        GroupSettings {
            heartbeat_timeout: std::time::Duration::from_secs_f64(self.heartbeat_timeout.max(0.0)),
            ..group_settings(&crate::conf::Config::default())
        }
    }

    /// Requests a second one VM completes when saturated.
    pub fn per_vm_rate(&self) -> f64 {
        f64::from(self.threads) / self.service.mean()
    }
}

/// Requests of one load phase, as the load test's phase CSV counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseCounts {
    pub complete: u64,
    pub failed: u64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// One row a tick, as the conductor writes them.
    pub rows: Vec<Row>,
    /// Failed requests of each row's seconds (the CSV has no column for them).
    pub failed_per_row: Vec<u64>,
    /// Seconds each VM existed (from its boot request to its deletion), summed.
    pub vm_seconds: f64,
    pub phases: Vec<PhaseCounts>,
    /// Decisions that broke the bounds (`add` beyond `max_vms`, `desired` outside
    /// `[min_vms, max_vms]`); carried out clamped. Must be 0 for every policy.
    pub bound_violations: u32,
    /// Events processed, for the speed figures.
    pub events: u64,
    /// Seconds simulated.
    pub seconds: f64,
}

enum Event {
    PhaseStart(usize),
    /// The load ends: clients send no more, arrivals stop.
    LoadEnd,
    /// Open loop: the next arrival of the arrival process `epoch`.
    Arrival {
        epoch: u32,
    },
    /// A request's service on `vm` ends.
    Done {
        vm: u32,
        id: u64,
    },
    /// A closed-loop client of `phase` sends again after a failure.
    Retry {
        phase: u32,
    },
    Ready {
        vm: u32,
    },
    Fault(usize),
    /// The agent's interval ends.
    Report,
    /// The conductor's tick, unless a tick of a later `epoch` replaced it.
    Tick {
        epoch: u32,
    },
}

struct World<'a> {
    config: &'a SimConfig,
    load: &'a Load,
    queue: EventQueue<Event>,
    vms: Vec<Vm>,
    splitter: Splitter,
    stats: IntervalStats,
    arrivals: Rng,
    service: Rng,
    boots: Rng,
    /// The phase playing now, and the arrival process of the open loop.
    phase: Option<usize>,
    arrival_epoch: u32,
    next_id: u64,
    pending: Vec<Observation>,
    pending_errors: u64,
    /// The conductor's ticks: a tick that acts early starts a new epoch.
    tick_epoch: u32,
    failed_per_row: Vec<u64>,
    counts: Vec<PhaseCounts>,
    rows: Vec<Row>,
    violations: u32,
    events: u64,
}

fn at(t: f64) -> DateTime<Utc> {
    epoch() + TimeDelta::microseconds((t * 1e6).round() as i64)
}

/// Plays `load` on the site of `config`, with `policy` deciding.
pub fn run(config: &SimConfig, load: &Load, policy: &mut dyn ScalingPolicy) -> RunResult {
    let end = load.seconds() + config.tail.max(0.0);
    let mut world = World {
        config,
        load,
        queue: EventQueue::default(),
        vms: Vec::new(),
        splitter: Splitter::default(),
        stats: IntervalStats::default(),
        arrivals: Rng::new(config.seed, Stream::Arrivals),
        service: Rng::new(config.seed, Stream::Service),
        boots: Rng::new(config.seed, Stream::Boot),
        phase: None,
        arrival_epoch: 0,
        next_id: 0,
        pending: Vec::new(),
        pending_errors: 0,
        tick_epoch: 0,
        failed_per_row: Vec::new(),
        counts: vec![PhaseCounts::default(); load.phases.len()],
        rows: Vec::new(),
        violations: 0,
        events: 0,
    };
    // The site starts with its minimum, up for a while.
    for _ in 0..config.min_vms.max(1).min(config.max_vms.max(1)) {
        let vm = world.new_vm(-600.0, VmState::Active);
        world.splitter.add(vm);
    }
    for (i, phase) in load.phases.iter().enumerate() {
        world.queue.schedule(phase.start, Event::PhaseStart(i));
    }
    world.queue.schedule(load.seconds(), Event::LoadEnd);
    for (i, fault) in config.faults.iter().enumerate() {
        world.queue.schedule(fault.at, Event::Fault(i));
    }
    world.queue.schedule(REPORT_INTERVAL, Event::Report);
    world
        .queue
        .schedule(1.0 + TICK_OFFSET, Event::Tick { epoch: 0 });

    // The last second's row comes at its tick, half a second after the end.
    while let Some((now, event)) = world.queue.pop() {
        if now > end + TICK_OFFSET {
            break;
        }
        world.events += 1;
        match event {
            Event::PhaseStart(i) => world.phase_start(now, i),
            Event::LoadEnd => {
                world.phase = None;
                world.arrival_epoch += 1;
            }
            Event::Arrival { epoch } => {
                if epoch == world.arrival_epoch {
                    world.arrive(now);
                }
            }
            Event::Done { vm, id } => world.done(now, vm, id),
            Event::Retry { phase } => {
                if world.phase == Some(phase as usize) {
                    world.send(now, phase, true);
                }
            }
            Event::Ready { vm } => {
                let v = &mut world.vms[vm as usize];
                if matches!(v.state, VmState::Booting) {
                    v.state = VmState::Active;
                    world.splitter.add(vm);
                }
            }
            Event::Fault(i) => world.fault(now, config.faults[i].kind),
            Event::Report => world.report(now, policy),
            Event::Tick { epoch } => {
                if epoch == world.tick_epoch {
                    world.queue.schedule(now + 1.0, Event::Tick { epoch });
                    world.tick(now, policy);
                }
            }
        }
    }
    let vm_seconds = world
        .vms
        .iter()
        .map(|vm| (vm.deleted_at.unwrap_or(end).min(end) - vm.created_at.max(0.0)).max(0.0))
        .sum();
    RunResult {
        rows: world.rows,
        failed_per_row: world.failed_per_row,
        vm_seconds,
        phases: world.counts,
        bound_violations: world.violations,
        events: world.events,
        seconds: end,
    }
}

impl World<'_> {
    fn new_vm(&mut self, created_at: f64, state: VmState) -> u32 {
        let n = self.vms.len() as u32;
        self.vms.push(Vm::new(
            format!("web-{}", n + 1),
            created_at,
            state,
            self.config.threads,
        ));
        n
    }

    fn phase_start(&mut self, now: f64, i: usize) {
        self.phase = Some(i);
        let level = self.load.phases[i].level;
        match self.load.kind {
            LoadKind::Closed => {
                // ab -c N: N clients start at once; those of the phase before send no
                // more (their requests in flight still finish).
                for _ in 0..level.round() as u64 {
                    self.send(now, i as u32, true);
                }
            }
            LoadKind::Open => {
                // Poisson arrivals are memoryless: at a change of rate, draw afresh.
                self.arrival_epoch += 1;
                self.schedule_arrival(now);
            }
        }
    }

    fn schedule_arrival(&mut self, now: f64) {
        let Some(i) = self.phase else { return };
        let rate = self.load.phases[i].level;
        if rate > 0.0 {
            let next = now + self.arrivals.exponential(1.0 / rate);
            if next < self.load.phases[i].end {
                let epoch = self.arrival_epoch;
                self.queue.schedule(next, Event::Arrival { epoch });
            }
        }
    }

    fn arrive(&mut self, now: f64) {
        if let Some(i) = self.phase {
            self.send(now, i as u32, false);
        }
        self.schedule_arrival(now);
    }

    /// A client sends a request; the splitter routes it.
    fn send(&mut self, now: f64, phase: u32, closed: bool) {
        self.next_id += 1;
        let request = Request {
            id: self.next_id,
            sent: now,
            phase,
            closed,
        };
        match self.splitter.pick() {
            Some(vm) => {
                if let Some(started) = self.vms[vm as usize].admit(request) {
                    self.start_service(now, vm, started);
                }
            }
            None => {
                // No member takes requests: mod_jk answers 503 at once.
                self.fail(now, request);
            }
        }
    }

    fn start_service(&mut self, now: f64, vm: u32, request: Request) {
        let service = self.config.service.sample(&mut self.service).max(0.0);
        self.queue
            .schedule(now + service, Event::Done { vm, id: request.id });
    }

    fn done(&mut self, now: f64, vm: u32, id: u64) {
        let v = &mut self.vms[vm as usize];
        if v.crashed || v.state == VmState::Gone {
            return; // failed with the VM already
        }
        let Some((request, next)) = v.complete(id) else {
            return;
        };
        if let Some(next) = next {
            self.start_service(now, vm, next);
        }
        self.stats.record(now - request.sent, true);
        if let Some(c) = self.counts.get_mut(request.phase as usize) {
            c.complete += 1;
        }
        if request.closed && self.phase == Some(request.phase as usize) {
            self.send(now, request.phase, true);
        }
    }

    /// `request` failed now; a closed-loop client sends its next one.
    fn fail(&mut self, now: f64, request: Request) {
        self.stats.record(now - request.sent, false);
        if let Some(c) = self.counts.get_mut(request.phase as usize) {
            c.failed += 1;
        }
        if request.closed && self.phase == Some(request.phase as usize) {
            self.queue.schedule(
                now + RETRY_AFTER_FAILURE,
                Event::Retry {
                    phase: request.phase,
                },
            );
        }
    }

    fn fault(&mut self, now: f64, kind: FaultKind) {
        let Some(vm) = self
            .vms
            .iter()
            .position(|v| v.state == VmState::Active && v.failed_at.is_none())
        else {
            return;
        };
        self.vms[vm].failed_at = Some(now);
        if kind == FaultKind::Crash {
            self.vms[vm].crashed = true;
            self.splitter.stop_routing(vm as u32);
            for request in self.vms[vm].take_all() {
                self.fail(now, request);
            }
        }
    }

    fn delete(&mut self, now: f64, vm: usize) {
        self.splitter.stop_routing(vm as u32);
        for request in self.vms[vm].take_all() {
            self.fail(now, request);
        }
        let v = &mut self.vms[vm];
        v.state = VmState::Gone;
        v.deleted_at = Some(now);
    }

    /// The agent's interval ends: its observation goes to the conductor, which ticks at
    /// once when it completes the evidence for an action (and counts its next tick a
    /// second from then).
    fn report(&mut self, now: f64, policy: &mut dyn ScalingPolicy) {
        self.queue.schedule(now + REPORT_INTERVAL, Event::Report);
        self.pending_errors += self.stats.errors();
        let obs = self.stats.take(at(now), REPORT_INTERVAL, 0);
        self.pending.push(obs);
        if self.acts_now(now, policy) {
            self.tick_epoch += 1;
            let epoch = self.tick_epoch;
            self.queue.schedule(now + 1.0, Event::Tick { epoch });
            self.tick(now, policy);
        }
    }

    /// Whether the observations since the last tick call for an action now (the
    /// conductor's early tick).
    fn acts_now(&self, now: f64, policy: &dyn ScalingPolicy) -> bool {
        let serving = self
            .vms
            .iter()
            .filter(|v| v.state == VmState::Active)
            .count() as u32;
        let observations: Vec<Observation> = self
            .pending
            .iter()
            .map(|o| Observation { serving, ..*o })
            .collect();
        policy.acts_now(at(now), &observations)
    }

    fn tick(&mut self, now: f64, policy: &mut dyn ScalingPolicy) {
        let config = self.config;
        self.health(now);

        let fleet: Vec<FleetVm> = self
            .vms
            .iter()
            .filter(|v| v.state != VmState::Gone)
            .map(|v| FleetVm {
                name: v.name.clone(),
                phase: match v.state {
                    VmState::Booting => VmPhase::Booting,
                    VmState::Active => VmPhase::Active,
                    _ => VmPhase::Draining,
                },
                created_at: at(v.created_at),
                busy: (!matches!(v.state, VmState::Booting)).then(|| v.busy()),
            })
            .collect();
        let count = |phase| fleet.iter().filter(|vm| vm.phase == phase).count() as u32;
        let serving = count(VmPhase::Active);
        let mut observations = std::mem::take(&mut self.pending);
        for obs in &mut observations {
            obs.serving = serving;
        }
        let decision = policy.decide(
            at(now),
            Inputs {
                observations: &observations,
                fleet: &fleet,
            },
        );

        // The bounds, whatever the policy: never beyond max_vms, desired within them.
        let max = config.max_vms.max(config.min_vms);
        if decision.desired < config.min_vms || decision.desired > max {
            self.violations += 1;
        }
        let boots = boots_within_bounds(decision.add, max, fleet.len());
        if boots < decision.add {
            self.violations += 1;
        }
        for _ in 0..boots {
            let delay = config.boot.sample(&mut self.boots).max(0.0);
            let vm = self.new_vm(now, VmState::Booting);
            self.queue.schedule(now + delay, Event::Ready { vm });
        }
        for name in &decision.remove {
            let Some(vm) = self.vms.iter().position(|v| &v.name == name) else {
                continue;
            };
            match self.vms[vm].state {
                VmState::Booting => self.delete(now, vm),
                VmState::Active => {
                    self.vms[vm].state = VmState::Draining;
                    self.splitter.stop_routing(vm as u32);
                }
                VmState::Draining | VmState::Gone => {}
            }
        }

        self.failed_per_row
            .push(std::mem::take(&mut self.pending_errors));
        let outcome = Outcome {
            verdict: decision.verdict.as_str(),
            reason: decision.reason,
            desired: Some(decision.desired),
            metric: decision.metric,
        };
        self.rows.push(build(
            at(now),
            &config.group,
            config.target_response_time,
            &observations,
            &fleet,
            boots,
            outcome,
        ));
    }

    /// Health, by the group's rule: a failed VM's heartbeats stop, so it is failed once
    /// they are older than heartbeat_timeout. Drained VMs are deleted, by the group's
    /// drain rule (the simulated splitter applies a pool at once).
    fn health(&mut self, now: f64) {
        let config = self.config;
        let settings = config.group_settings();
        for vm in 0..self.vms.len() {
            let v = &self.vms[vm];
            if v.state == VmState::Gone {
                continue;
            }
            let facts = VmFacts {
                status: VmStatus::Active,
                age: std::time::Duration::from_secs_f64((now - v.created_at).max(0.0)),
                heard_before: true,
                fresh: v
                    .failed_at
                    .is_none_or(|t| now - t <= config.heartbeat_timeout),
                unserving_for: None,
                served_before: true,
            };
            let hearing = Hearing {
                settled: true,
                anyone_heard: true,
            };
            let failed = judge(&facts, hearing, &settings).is_some();
            let draining = v.state == VmState::Draining;
            if failed || (draining && drained(true, v.busy() == 0, false)) {
                self.delete(now, vm);
            }
        }
    }
}
