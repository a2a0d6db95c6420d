//! The group's tests: a [`Site`] (the group and the world around it: the cloud's VMs,
//! the agents' heartbeats, the splitter's metrics and acknowledgements, the cloud's
//! answers) ticked in virtual time as the service would, one file per stage.

mod admit;
mod drain;
mod health;
mod keeper;
mod lifecycle;
mod replace;
mod sizing;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::*;
use crate::{
    cloud::{META_GROUP, META_ROLE, META_TEMPLATE},
    notification::Notification,
    payload::{MemberStats, Stats},
    policy::PolicyOpts,
    pool::{MemberState, PoolAck, PoolOutcome, PoolUpdate},
    timeseries::Row,
};

const T0: i64 = 1_800_000_000;

/// `seconds` after the tests' epoch.
fn at(seconds: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(T0 * 1000 + (seconds * 1000.0) as i64).unwrap()
}

/// The conductor's defaults, with a 3 s heartbeat timeout.
fn settings() -> GroupSettings {
    GroupSettings {
        heartbeat_timeout: Duration::from_secs(3),
        drain_timeout: Duration::from_secs(30),
        boot_timeout: Duration::from_secs(300),
        not_serving_timeout: Duration::from_secs(2),
        hearing_window: Duration::from_millis(1500),
        policy: PolicyOpts {
            target_margin_percent: 10,
            stabilization: Duration::from_secs(5),
            scale_in_delay: Duration::from_secs(15),
            scale_in_cooldown: Duration::from_secs(30),
        },
    }
}

/// The sample's site: 1 to 4 web VMs (`min` here), target 0.2 s. A `min` of 0 (a site
/// of a splitter alone, for the tests of the splitter) is refused in a template file
/// since issue 16 but still read from a record an older conductor stored.
fn group(min: u32) -> Group {
    let record = serde_json::json!({
        "name": "shop", "image": "tomcat-web", "min_vms": min, "max_vms": 4,
        "target_response_time": 0.2,
    });
    let template: Template = serde_json::from_value(record).unwrap();
    Group::new(template, false, settings())
}

/// A VM of the group `shop`, created at 0 s.
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

/// A web VM asked for at `created` (seconds).
fn web(name: &str, status: VmStatus, addr: &str, created: f64) -> Vm {
    Vm {
        created_at: at(created),
        ..vm(name, Role::Web, status, addr)
    }
}

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

/// Payloads of the notifications of `event_type`.
fn notified(actions: &[Action], event_type: &str) -> Vec<serde_json::Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Notify(n) if n.event_type() == event_type => Some(n.payload()),
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
    /// The cloud's VMs.
    vms: Vec<Vm>,
    heartbeats: BTreeMap<String, HeartbeatInfo>,
    link_up: bool,
    /// The link's start as the service reports it.
    link_up_since: Option<DateTime<Utc>>,
    now: f64,
    /// Whether the agents' heartbeats reach the conductor (each ACTIVE VM's is
    /// refreshed every tick).
    agents_heard: bool,
    /// VMs whose agent reports that their server does not answer.
    unserving: BTreeSet<String>,
    /// Acknowledge every pool published, before the next tick, like a healthy splitter.
    auto_ack: bool,
    /// In-flight requests per member, in the splitter's metrics.
    busy: BTreeMap<String, u32>,
    /// Boots asked for and not yet answered by the cloud, oldest first.
    asked: VecDeque<(Role, Option<String>)>,
    /// Every tick's (and cloud answer's) time and actions.
    log: Vec<(f64, Vec<Action>)>,
}

impl Site {
    /// A site whose conductor has just started (its link up now): in the grace period.
    fn starting(min: u32) -> Site {
        Site {
            g: group(min),
            vms: Vec::new(),
            heartbeats: BTreeMap::new(),
            link_up: true,
            link_up_since: None,
            now: 0.0,
            agents_heard: false,
            unserving: BTreeSet::new(),
            auto_ack: false,
            busy: BTreeMap::new(),
            asked: VecDeque::new(),
            log: Vec::new(),
        }
    }

    /// A site whose conductor has been up (link included) for long: past the grace
    /// period in which silence proves nothing.
    fn settled(min: u32) -> Site {
        Site {
            link_up_since: Some(at(-100.0)),
            ..Site::starting(min)
        }
    }

    /// A settled site, Ready at 1 s with splitter `s` and `webs` ACTIVE, heard, in the
    /// acknowledged pool; no metrics yet. Its agents are heard every tick and its
    /// splitter acknowledges every pool.
    fn ready(min: u32, webs: &[&str]) -> Site {
        let mut site = Site::settled(min).splitter("s", VmStatus::Active);
        for name in webs {
            site = site.web(name, VmStatus::Active);
        }
        site.agents_heard = true;
        site.auto_ack = true;
        site.tick_at(0.0, None);
        site.tick_at(1.0, None);
        assert_eq!(site.g.phase, Phase::Ready);
        assert_eq!(site.g.pool.members.len(), webs.len());
        site
    }

    /// With a splitter VM `name` (address 127.0.1.2), created at 0 s.
    fn splitter(mut self, name: &str, status: VmStatus) -> Site {
        self.vms.push(vm(name, Role::Splitter, status, "127.0.1.2"));
        self
    }

    /// With a web VM `name` (addresses from 127.0.1.10 in order), created at 0 s.
    fn web(mut self, name: &str, status: VmStatus) -> Site {
        let webs = self
            .vms
            .iter()
            .filter(|v| v.role() == Some(Role::Web))
            .count();
        let addr = format!("127.0.1.{}", 10 + webs);
        self.vms.push(vm(name, Role::Web, status, &addr));
        self
    }

    /// With `vm` as it is.
    fn with(mut self, vm: Vm) -> Site {
        self.vms.push(vm);
        self
    }

    /// `name`'s agent is heard at `when` (seconds), serving.
    fn heard(&mut self, name: &str, when: f64) {
        self.heard_with(name, when, None);
    }

    /// `name`'s agent is heard at `when`, announcing `url`.
    fn heard_with(&mut self, name: &str, when: f64, url: Option<&str>) {
        self.heartbeats.insert(
            name.into(),
            HeartbeatInfo {
                last: at(when),
                serving: Some(!self.unserving.contains(name)),
                url: url.map(str::to_owned),
                address: None,
            },
        );
    }

    /// Every VM's agent is heard at `when`.
    fn heard_all(&mut self, when: f64) {
        let names: Vec<String> = self.vms.iter().map(|v| v.name.clone()).collect();
        for name in names {
            self.heard(&name, when);
        }
    }

    fn observed(&self) -> Observed {
        Observed {
            vms: self.vms.clone(),
            heartbeats: self.heartbeats.clone(),
            link_up: self.link_up,
            link_up_since: self.link_up_since,
        }
    }

    /// One second later.
    fn tick(&mut self, load: Option<Load>) -> Vec<Action> {
        self.tick_at(self.now + 1.0, load)
    }

    /// One tick at `now`: heartbeats refreshed (when `agents_heard`), the second's
    /// metrics, and the service's bookkeeping of the actions (boots remembered until the
    /// test has the cloud answer them, pools acknowledged when `auto_ack`).
    fn tick_at(&mut self, now: f64, load: Option<Load>) -> Vec<Action> {
        self.now = now;
        if self.agents_heard {
            let active: Vec<String> = self
                .vms
                .iter()
                .filter(|vm| vm.status == VmStatus::Active)
                .map(|vm| vm.name.clone())
                .collect();
            for name in active {
                self.heard(&name, now);
            }
        }
        if let Some(load) = load {
            self.measure(now, load);
        }
        let actions = self.g.step(at(now), self.observed());
        for action in &actions {
            if let Action::Boot { role, replaces } = action {
                self.asked.push_back((*role, replaces.clone()));
            }
        }
        if self.auto_ack {
            if let Some(pool) = pools(&actions).last() {
                self.ack(pool.generation);
            }
        }
        self.log.push((now, actions.clone()));
        actions
    }

    /// The splitter's metrics for the second ending at `end`.
    fn measure(&mut self, end: f64, load: Load) {
        let stats = |requests, mean| Stats {
            requests,
            errors: 0,
            mean,
            p50: mean,
            p95: mean,
            p99: mean,
            max: mean,
        };
        let members = self
            .busy
            .iter()
            .map(|(member, busy)| MemberStats {
                member: member.clone(),
                stats: stats(0, 0.0),
                busy: Some(*busy),
            })
            .collect();
        self.g.metrics(Metrics {
            group: "shop".into(),
            vm_id: "s".into(),
            start: at(end - 1.0),
            interval: 1.0,
            site: stats(load.requests, load.mean),
            members,
            malformed_lines: 0,
            modjk_messages: 0,
        });
    }

    /// The splitter applied pool `generation`.
    fn ack(&mut self, generation: u64) {
        let ack = PoolAck {
            group: "shop".into(),
            vm_id: "s".into(),
            generation,
            outcome: PoolOutcome::Applied,
        };
        assert!(self.g.pool_ack(&ack).is_empty());
    }

    /// The cloud answers the oldest boot of `vm`'s role by booting `vm`.
    fn booted(&mut self, vm: Vm) {
        let role = vm.role().unwrap();
        let replaces = self.take_asked(role);
        let outcome = BootOutcome {
            role,
            name: vm.name.clone(),
            replaces,
            result: Ok(vm.id.clone()),
        };
        self.vms.push(vm);
        let actions = self.g.booted(at(self.now), outcome);
        self.log.push((self.now, actions));
    }

    /// The cloud refuses the oldest boot of `role`.
    fn refused(&mut self, role: Role, name: &str) -> Vec<Action> {
        let replaces = self.take_asked(role);
        let outcome = BootOutcome {
            role,
            name: name.into(),
            replaces,
            result: Err(BootRefusal {
                error: "over quota".into(),
                retryable: true,
            }),
        };
        let actions = self.g.booted(at(self.now), outcome);
        self.log.push((self.now, actions.clone()));
        actions
    }

    fn take_asked(&mut self, role: Role) -> Option<String> {
        let i = self.asked.iter().position(|(r, _)| *r == role);
        let i = i.expect("the cloud answers a boot the group asked for");
        self.asked.remove(i).unwrap().1
    }

    /// The cloud finished deleting `name`.
    fn gone(&mut self, name: &str) {
        if let Some(vm) = self.vms.iter().find(|vm| vm.name == name) {
            let id = vm.id.clone();
            self.g.deleted(&id, true);
        }
        self.vms.retain(|vm| vm.name != name);
        self.heartbeats.remove(name);
    }

    fn set_status(&mut self, name: &str, status: VmStatus) {
        for vm in self.vms.iter_mut().filter(|vm| vm.name == name) {
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

    /// The pool last decided, as the next publication would carry it.
    fn pool(&self) -> PoolUpdate {
        PoolUpdate {
            group: self.g.name().to_owned(),
            generation: self.g.pool.generation,
            members: self.g.pool.members.clone(),
            listening: self.g.pool.listening,
        }
    }
}

/// 36 closed-loop clients on a one-VM site (min 1, max 4, target 0.2 s) until the
/// policy scales out; the two boots are then pending, BUILD, ACTIVE and join the pool
/// (the load stays slow meanwhile: the clients wait). Returns the site and the time of
/// the scale-out.
fn scaled_out_to_three() -> (Site, f64) {
    scale_out_and_join(true)
}

/// [`scaled_out_to_three`], the splitter acknowledging the pool with the new members
/// only when `applied`.
fn scale_out_and_join(applied: bool) -> (Site, f64) {
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
    site.auto_ack = applied;
    site.tick(Some(SLOW));
    assert_eq!(
        members(&site.pool()),
        [
            ("w1", MemberState::Active),
            ("w2", MemberState::Active),
            ("w3", MemberState::Active)
        ]
    );
    (site, up)
}

/// Whether any notification in `actions` is of `event_type`.
fn notifies(actions: &[Action], event_type: &str) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::Notify(n) if n.event_type() == event_type))
}

/// Keeps the compiler from flagging the notification type as unused in some files.
#[allow(dead_code)]
fn is_notification(_: &Notification) {}
