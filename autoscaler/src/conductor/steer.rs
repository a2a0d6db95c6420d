//! The control loop's hands: each tick, for every group, ask the cloud for its VMs, run
//! the group's rules ([`Group::step`](super::group::Group::step)) and carry every action
//! out, never second-guessing one. Boots and deletes run as tasks of their own (a Nova
//! boot takes seconds) and report back as [`CloudEvent`]s, which the group takes in
//! ([`Group::booted`](super::group::Group::booted), [`Group::deleted`](super::group::Group::deleted)),
//! so the loop never waits on the cloud for more than a listing.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    group::{Action, BootOutcome, BootRefusal, Observed},
    handler::Conductor,
    notifier::Notifier,
    timeseries::{Row, TimeSeries, DIR_NAME as TIMESERIES_DIR},
    vm_spec::vm_spec,
};
use crate::{
    conf::Config,
    driver::{CloudDriver, DriverError, Vm, VmId},
    messaging::{envelope, LinkHandle, LinkState, Outgoing, PoolAck, PoolUpdate, Role, Topology},
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

/// What the loop needs to carry actions out; the groups keep their own state.
pub struct Steering {
    driver: Arc<dyn CloudDriver>,
    config: Config,
    sender: String,
    topology: Topology,
    timeseries: TimeSeries,
    events: mpsc::Sender<CloudEvent>,
}

/// The loop's connections, for carrying actions out.
pub struct Outlets<'a> {
    pub link: &'a LinkHandle,
    pub notifier: &'a Notifier,
}

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
            timeseries,
            events,
        };
        (steering, receiver)
    }

    /// One pass over every group.
    pub async fn tick(&mut self, conductor: &mut Conductor, out: &Outlets<'_>, now: DateTime<Utc>) {
        // Up means connected and allowed to publish, since a time the link reports: a
        // reconnect or a broker's block (memory alarm) between two ticks still restarts
        // the groups' grace, during which silence proves nothing (the agents were
        // disconnected or blocked too, and come back a little later).
        let link_up_since = out.link.state().up_since();
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
            let observed = Observed {
                vms,
                heartbeats: conductor.vms.infos(&name),
                link_up,
                link_up_since,
            };
            let Some(group) = conductor.groups.get_mut(&name) else {
                continue;
            };
            let actions = group.step(now, observed);
            self.carry_out(&name, actions, conductor, out, now).await;
        }
        let groups = &conductor.groups;
        conductor
            .vms
            .retain_listed(|group, vm| groups.get(group).is_some_and(|g| g.lists(vm)));
    }

    /// Carries out a group's actions, in order.
    async fn carry_out(
        &mut self,
        name: &str,
        actions: Vec<Action>,
        conductor: &mut Conductor,
        out: &Outlets<'_>,
        now: DateTime<Utc>,
    ) {
        for action in actions {
            match action {
                Action::Boot { role, replaces } => {
                    if let Some(group) = conductor.groups.get(name) {
                        self.boot(name, &group.template, role, replaces);
                    }
                }
                Action::Delete(id) => self.delete(name, id),
                Action::PublishPool(update) => {
                    self.publish_pool(name, &update, out.link, now).await
                }
                Action::Notify(notification) => out.notifier.notify(out.link, notification).await,
                Action::Record(row) => {
                    if let Err(error) = self.timeseries.append(&row) {
                        warn!(%error, template = %name, "time series row not written");
                    }
                    if matches!(out.link.state(), LinkState::Up { .. }) {
                        self.publish_status(out.link, &row, now).await;
                    }
                }
                Action::Forget => {
                    info!(template = %name, "every VM is gone; template forgotten");
                    for notification in conductor.forget(name) {
                        out.notifier.notify(out.link, notification).await;
                    }
                    self.timeseries.close(name);
                }
            }
        }
    }

    fn boot(
        &self,
        group: &str,
        template: &crate::template::Template,
        role: Role,
        replaces: Option<String>,
    ) {
        let spec = vm_spec(&self.config, template, role);
        info!(template = %group, vm = %spec.name, %role, image = %spec.image, "booting a VM");
        let (driver, events, group) = (self.driver.clone(), self.events.clone(), group.to_owned());
        tokio::spawn(async move {
            let name = spec.name.clone();
            let result = driver.boot(spec).await;
            let event = CloudEvent::Booted {
                group,
                role,
                name,
                replaces,
                result,
            };
            let _ = events.send(event).await;
        });
    }

    fn delete(&self, group: &str, id: VmId) {
        info!(template = %group, vm = %id, "deleting a VM");
        let (driver, events, group) = (self.driver.clone(), self.events.clone(), group.to_owned());
        tokio::spawn(async move {
            let result = driver.delete(&id).await;
            let _ = events.send(CloudEvent::Deleted { group, id, result }).await;
        });
    }

    async fn publish_pool(
        &self,
        name: &str,
        update: &PoolUpdate,
        link: &LinkHandle,
        now: DateTime<Utc>,
    ) {
        let body = envelope::encode(&self.sender, now, update);
        let key = Topology::pool_key(name);
        let message = Outgoing {
            exchange: &self.topology.exchange,
            routing_key: &key,
            body: &body,
            confirm: true,
            ttl: None,
            correlation_id: None,
        };
        // While the link is down the pool waits for the group's next resend instead of
        // holding the loop (heartbeats, requests) up.
        let patience = if matches!(link.state(), LinkState::Up { .. }) {
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

    /// A boot or delete came back: the group takes the answer in.
    pub async fn cloud_event(
        &mut self,
        event: CloudEvent,
        conductor: &mut Conductor,
        out: &Outlets<'_>,
    ) {
        let now = Utc::now();
        match event {
            CloudEvent::Booted {
                group,
                role,
                name,
                replaces,
                result,
            } => {
                let Some(g) = conductor.groups.get_mut(&group) else {
                    return;
                };
                let refused = result.as_ref().err().map(|e| e.to_string());
                let outcome = BootOutcome {
                    role,
                    name: name.clone(),
                    replaces,
                    result: match result {
                        Ok(vm) => {
                            info!(template = %group, vm = %vm.name, id = %vm.id, address = ?vm.address, "VM booting");
                            Ok(vm.id)
                        }
                        Err(error) => Err(BootRefusal {
                            error: error.to_string(),
                            retryable: error.is_retryable(),
                        }),
                    },
                };
                let actions = g.booted(now, outcome);
                if let Some(error) = refused {
                    let hold = g.boots_held_until().map(|t| (t - now).num_seconds());
                    warn!(%error, template = %group, vm = %name, retry_in_s = hold.unwrap_or(0), "boot failed");
                }
                self.carry_out(&group, actions, conductor, out, now).await;
            }
            CloudEvent::Deleted { group, id, result } => {
                if let Err(error) = &result {
                    warn!(%error, template = %group, vm = %id, "delete failed; trying again next tick");
                } else {
                    info!(template = %group, vm = %id, "VM deleted");
                }
                let gone = conductor
                    .groups
                    .get_mut(&group)
                    .and_then(|g| g.deleted(&id, result.is_ok()).map(str::to_owned));
                if let Some(name) = gone {
                    conductor.vms.forget(&name);
                }
            }
        }
    }

    /// The splitter's answer to a pool update.
    pub async fn pool_ack(&mut self, ack: PoolAck, conductor: &mut Conductor, out: &Outlets<'_>) {
        let Some(group) = conductor.groups.get_mut(&ack.group) else {
            return;
        };
        let actions = group.pool_ack(&ack);
        if !actions.is_empty() {
            warn!(template = %ack.group, generation = ack.generation, "the splitter refused a pool update");
        }
        self.carry_out(&ack.group, actions, conductor, out, Utc::now())
            .await;
    }
}
