//! The control loop's hands: each tick, for every group, ask the cloud for its VMs, run
//! the group's rules ([`Group::step`](super::group::Group::step)) and carry their actions out. Boots and deletes run
//! as tasks of their own (a Nova boot takes seconds) and report back as [`CloudEvent`]s,
//! so the loop never waits on the cloud for more than a listing.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    group::{Action, Observed},
    handler::{Conductor, Event},
    notifier::Notifier,
    timeseries::{Row, TimeSeries, DIR_NAME as TIMESERIES_DIR},
    vm_spec::vm_spec,
};
use crate::{
    conf::Config,
    driver::{CloudDriver, DriverError, Vm, VmId},
    messaging::{
        envelope, LinkHandle, Metrics, Outgoing, PoolAck, PoolOutcome, Priority, Role, Topology,
    },
};

/// Cloud answers waiting for the loop: a handful per tick at most.
const CLOUD_EVENT_BACKLOG: usize = 64;
/// How long a pool update may wait for the broker.
const POOL_PUBLISH_PATIENCE: Duration = Duration::from_secs(5);

/// A boot or delete finished.
#[derive(Debug)]
pub enum CloudEvent {
    Booted {
        group: String,
        role: Role,
        name: String,
        /// The failed VM this one replaces.
        replaces: Option<String>,
        result: Result<Vm, DriverError>,
    },
    Deleted {
        group: String,
        id: VmId,
        result: Result<(), DriverError>,
    },
}

#[derive(Debug, Default)]
struct Pending {
    web: usize,
    splitter: usize,
    deletes: BTreeSet<VmId>,
    /// Boots that failed in a row, and when the next boot may be tried: a cloud that
    /// refuses (unknown image, quota) is asked again after 2, 4, 8 ... 60 s, not every tick.
    boot_failures: u32,
    next_boot: Option<DateTime<Utc>>,
}

/// Longest wait between boot attempts after failures.
const BOOT_BACKOFF_MAX: i64 = 60;

/// What the loop keeps between ticks besides the groups themselves.
pub struct Steering {
    driver: Arc<dyn CloudDriver>,
    config: Config,
    sender: String,
    topology: Topology,
    pending: BTreeMap<String, Pending>,
    acked: BTreeMap<String, u64>,
    busy: BTreeMap<String, BTreeMap<String, u32>>,
    /// The splitter's metrics not yet seen by the group's policy.
    fresh_metrics: BTreeMap<String, Vec<Metrics>>,
    timeseries: TimeSeries,
    events: mpsc::Sender<CloudEvent>,
}

/// Metrics kept per group between two ticks; more means the loop is far behind, and the
/// oldest are worthless by then.
const FRESH_METRICS_MAX: usize = 30;

impl Steering {
    pub fn new(
        driver: Arc<dyn CloudDriver>,
        config: Config,
        sender: String,
        topology: Topology,
    ) -> (Steering, mpsc::Receiver<CloudEvent>) {
        let (events, receiver) = mpsc::channel(CLOUD_EVENT_BACKLOG);
        let timeseries = TimeSeries::new(config.default.state_path.join(TIMESERIES_DIR));
        let steering = Steering {
            driver,
            config,
            sender,
            topology,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            busy: BTreeMap::new(),
            fresh_metrics: BTreeMap::new(),
            timeseries,
            events,
        };
        (steering, receiver)
    }

    /// One pass over every group.
    pub async fn tick(
        &mut self,
        conductor: &mut Conductor,
        link: &LinkHandle,
        notifier: &Notifier,
        now: DateTime<Utc>,
    ) {
        // Up means connected and allowed to publish, since a time the link reports: a
        // reconnect or a broker's block (memory alarm) between two ticks still restarts
        // the groups' grace, during which silence proves nothing (the agents were
        // disconnected or blocked too, and come back a little later).
        let state = link.state();
        let link_up_since = state.up_since();
        let link_up = link_up_since.is_some();
        let names: Vec<String> = conductor.groups.keys().cloned().collect();
        for name in names {
            let vms = match self.driver.list(&name).await {
                Ok(vms) => vms,
                Err(error) => {
                    warn!(%error, template = %name, "cannot list the group's VMs; trying again next tick");
                    continue;
                }
            };
            let pending = self.pending.entry(name.clone()).or_default();
            let observed = Observed {
                vms,
                heartbeats: conductor.vms.infos(&name),
                busy: self.busy.get(&name).cloned().unwrap_or_default(),
                acked_generation: self.acked.get(&name).copied().unwrap_or(0),
                link_up,
                link_up_since,
                pending_web_boots: pending.web,
                pending_splitter_boots: pending.splitter,
                pending_deletes: pending.deletes.clone(),
                metrics: self.fresh_metrics.remove(&name).unwrap_or_default(),
            };
            let Some(group) = conductor.groups.get_mut(&name) else {
                continue;
            };
            let template = group.template.clone();
            let actions = group.step(now, observed);
            for action in actions {
                match action {
                    Action::Boot { .. }
                        if self
                            .pending
                            .get(&name)
                            .and_then(|p| p.next_boot)
                            .is_some_and(|t| now < t) => {}
                    Action::Boot { role, replaces } => {
                        let spec = vm_spec(&self.config, &template, role);
                        info!(template = %name, vm = %spec.name, %role, image = %spec.image, "booting a VM");
                        let pending = self.pending.entry(name.clone()).or_default();
                        match role {
                            Role::Web => pending.web += 1,
                            Role::Splitter => pending.splitter += 1,
                        }
                        let (driver, events, group) =
                            (self.driver.clone(), self.events.clone(), name.clone());
                        tokio::spawn(async move {
                            let vm_name = spec.name.clone();
                            let result = driver.boot(spec).await;
                            let _ = events
                                .send(CloudEvent::Booted {
                                    group,
                                    role,
                                    name: vm_name,
                                    replaces,
                                    result,
                                })
                                .await;
                        });
                    }
                    Action::Delete(id) => {
                        info!(template = %name, vm = %id, "deleting a VM");
                        self.pending
                            .entry(name.clone())
                            .or_default()
                            .deletes
                            .insert(id.clone());
                        let (driver, events, group) =
                            (self.driver.clone(), self.events.clone(), name.clone());
                        tokio::spawn(async move {
                            let result = driver.delete(&id).await;
                            let _ = events.send(CloudEvent::Deleted { group, id, result }).await;
                        });
                    }
                    Action::PublishPool(update) => {
                        let body = envelope::encode(&self.sender, now, &update);
                        let key = Topology::pool_key(&name);
                        let message = Outgoing {
                            exchange: &self.topology.exchange,
                            routing_key: &key,
                            body: &body,
                            confirm: true,
                            ttl: None,
                            correlation_id: None,
                        };
                        // While the link is down the pool waits for the group's next
                        // resend instead of holding the loop (heartbeats, requests) up.
                        let patience = if link_up {
                            POOL_PUBLISH_PATIENCE
                        } else {
                            Duration::ZERO
                        };
                        match link.publish(message, patience).await {
                            Ok(()) => info!(
                                template = %name,
                                generation = update.generation,
                                members = update.members.len(),
                                listening = update.listening,
                                "pool sent to the splitter"
                            ),
                            Err(error) => warn!(%error, template = %name, "pool update not sent"),
                        }
                    }
                    Action::Notify(event) => {
                        if matches!(event.priority, Priority::Error | Priority::Warn) {
                            warn!(template = %name, event_type = event.event_type, payload = %event.payload, "attention");
                        }
                        notifier.notify(link, event).await
                    }
                    Action::Record(row) => {
                        if let Err(error) = self.timeseries.append(&row) {
                            warn!(%error, template = %name, "time series row not written");
                        }
                        if link_up {
                            self.publish_status(link, &row, now).await;
                        }
                    }
                    Action::Forget => {
                        info!(template = %name, "every VM is gone; template forgotten");
                        for event in conductor.forget(&name) {
                            notifier.notify(link, event).await;
                        }
                        self.pending.remove(&name);
                        self.acked.remove(&name);
                        self.busy.remove(&name);
                        self.fresh_metrics.remove(&name);
                        self.timeseries.close(&name);
                    }
                }
            }
        }
    }

    /// The tick's row of a group on `status.<group>`, for live views: fire and forget,
    /// like telemetry (a late row is worthless, and the loop must not wait for it).
    async fn publish_status(&self, link: &LinkHandle, row: &Row, now: DateTime<Utc>) {
        let body = envelope::encode(&self.sender, now, row);
        let key = Topology::status_key(&row.group);
        let message = Outgoing {
            exchange: &self.topology.exchange,
            routing_key: &key,
            body: &body,
            confirm: false,
            ttl: Some(self.config.agent.telemetry_ttl),
            correlation_id: None,
        };
        if let Err(error) = link.publish(message, Duration::ZERO).await {
            debug!(%error, template = %row.group, "status row not published");
        }
    }

    /// A boot or delete came back.
    pub async fn cloud_event(
        &mut self,
        event: CloudEvent,
        conductor: &mut Conductor,
        link: &LinkHandle,
        notifier: &Notifier,
    ) {
        match event {
            CloudEvent::Booted {
                group,
                role,
                name,
                replaces,
                result,
            } => {
                let pending = self.pending.entry(group.clone()).or_default();
                match role {
                    Role::Web => pending.web = pending.web.saturating_sub(1),
                    Role::Splitter => pending.splitter = pending.splitter.saturating_sub(1),
                }
                match result {
                    Ok(vm) => {
                        pending.boot_failures = 0;
                        pending.next_boot = None;
                        info!(template = %group, vm = %vm.name, id = %vm.id, address = ?vm.address, "VM booting");
                        if let Some(failed) = replaces {
                            let event = Event {
                                event_type: "autoscaler.vm.replaced",
                                priority: Priority::Info,
                                payload: serde_json::json!({
                                    "template": group, "role": role.as_str(),
                                    "failed_vm_name": failed, "vm_name": vm.name, "vm_id": vm.id.0,
                                }),
                            };
                            notifier.notify(link, event).await;
                        }
                    }
                    Err(error) => {
                        pending.boot_failures = pending.boot_failures.saturating_add(1);
                        let wait = (1i64 << pending.boot_failures.min(6)).min(BOOT_BACKOFF_MAX);
                        pending.next_boot = Some(Utc::now() + chrono::Duration::seconds(wait));
                        warn!(%error, template = %group, vm = %name, retry_in_s = wait, "boot failed");
                        let event = Event {
                            event_type: "autoscaler.vm.boot_failed",
                            priority: Priority::Error,
                            payload: serde_json::json!({
                                "template": group, "vm_name": name, "role": role.as_str(),
                                "error": error.to_string(), "retryable": error.is_retryable(),
                            }),
                        };
                        notifier.notify(link, event).await;
                    }
                }
            }
            CloudEvent::Deleted { group, id, result } => {
                if let Some(pending) = self.pending.get_mut(&group) {
                    pending.deletes.remove(&id);
                }
                match result {
                    Ok(()) => {
                        info!(template = %group, vm = %id, "VM deleted");
                        // Its heartbeats are history now.
                        let name = conductor
                            .groups
                            .get(&group)
                            .and_then(|g| g.vm_name(&id))
                            .map(str::to_owned);
                        if let Some(name) = name {
                            conductor.vms.forget(&name);
                        }
                    }
                    Err(error) => {
                        warn!(%error, template = %group, vm = %id, "delete failed; trying again next tick")
                    }
                }
            }
        }
    }

    /// The splitter's per-second metrics: the busy counts the drain rules read.
    pub fn metrics(&mut self, metrics: &Metrics) {
        let busy = metrics
            .members
            .iter()
            .filter_map(|m| Some((m.member.clone(), m.busy?)))
            .collect();
        self.busy.insert(metrics.group.clone(), busy);
        let fresh = self.fresh_metrics.entry(metrics.group.clone()).or_default();
        if fresh.len() >= FRESH_METRICS_MAX {
            fresh.remove(0);
        }
        fresh.push(metrics.clone());
    }

    /// The splitter's answer to a pool update.
    pub async fn pool_ack(&mut self, ack: PoolAck, link: &LinkHandle, notifier: &Notifier) {
        match &ack.outcome {
            PoolOutcome::Applied => {
                let acked = self.acked.entry(ack.group.clone()).or_default();
                *acked = (*acked).max(ack.generation);
            }
            PoolOutcome::Rejected { reason } => {
                warn!(template = %ack.group, generation = ack.generation, %reason, "the splitter refused a pool update");
                let event = Event {
                    event_type: "autoscaler.pool.rejected",
                    priority: Priority::Error,
                    payload: serde_json::json!({
                        "template": ack.group, "splitter": ack.vm_id,
                        "generation": ack.generation, "reason": reason,
                    }),
                };
                notifier.notify(link, event).await;
            }
        }
    }
}
