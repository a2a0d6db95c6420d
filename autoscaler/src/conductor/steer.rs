//! The control loop's hands: each tick, for every group, ask the cloud for its VMs; when
//! the listing comes back, run the group's rules ([`Group::step`](super::group::Group::step))
//! and carry every action out, never second-guessing one. Listings, boots and deletes
//! run as tasks of their own, each within a time limit (`[conductor] list_timeout`,
//! `cloud_call_timeout`), and report back as [`CloudEvent`]s, which the group takes in
//! ([`Group::booted`](super::group::Group::booted), [`Group::deleted`](super::group::Group::deleted)):
//! the loop never waits on the cloud, so a hung cloud API cannot stop it from answering
//! the CLI or taking heartbeats (issue 16, item 3). A group whose listing is still out is
//! not listed again, nor stepped, until it comes back or times out.

use std::{collections::BTreeSet, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    bindings::TelemetryBindings,
    group::{Action, BootOutcome, BootRefusal, Observed},
    handler::Conductor,
    notifier::Notifier,
    pool_queues::PoolQueues,
    timeseries::{Row, TimeSeries, DIR_NAME as TIMESERIES_DIR},
    vm_spec::vm_spec,
};
use crate::{
    conf::Config,
    driver::{CloudDriver, DriverError, Vm, VmId},
    messaging::{
        envelope, signing::MessageSecrets, LinkHandle, LinkState, Outgoing, PoolAck, PoolUpdate,
        Role, Topology,
    },
    store::{conductor_key, AjpSecret, Store, StoreError},
};

/// Cloud answers waiting for the loop: a handful per tick at most.
const CLOUD_EVENT_BACKLOG: usize = 64;
/// How long a pool update may wait for the broker.
const POOL_PUBLISH_PATIENCE: Duration = Duration::from_secs(5);

/// A listing, boot or delete finished (or timed out).
#[derive(Debug)]
pub enum CloudEvent {
    Listed {
        group: String,
        result: Result<Vec<Vm>, DriverError>,
    },
    Booted {
        group: String,
        role: Role,
        name: String,
        /// The failed VM this one replaces.
        replaces: Option<String>,
        result: Result<Vm, BootError>,
    },
    Deleted {
        group: String,
        id: VmId,
        result: Result<(), DriverError>,
    },
}

/// Why a boot failed: the cloud refused it, or the group's AJP secret could not be read
/// from the database (then no boot was asked).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Driver(DriverError),
    #[error("the group's AJP secret: {0}")]
    Secret(StoreError),
    #[error("the conductor's key ([DEFAULT] state_path/conductor.key): {0}")]
    Key(std::io::Error),
}

/// The group's AJP secret: the database's, or made from the conductor's key.
async fn secret(store: &Store, config: &Config, group: &str) -> Result<AjpSecret, BootError> {
    let key = conductor_key(&config.default.state_path).map_err(BootError::Key)?;
    store
        .ajp_secret(group, &key)
        .await
        .map_err(BootError::Secret)
}

impl BootError {
    /// Whether trying again may succeed: a database that failed may come back.
    fn is_retryable(&self) -> bool {
        match self {
            BootError::Driver(e) => e.is_retryable(),
            BootError::Secret(_) | BootError::Key(_) => true,
        }
    }
}

/// What the loop needs to carry actions out; the groups keep their own state.
pub struct Steering {
    driver: Arc<dyn CloudDriver>,
    config: Config,
    sender: String,
    topology: Topology,
    timeseries: TimeSeries,
    events: mpsc::Sender<CloudEvent>,
    /// Groups whose listing is out: at most one each.
    listing: BTreeSet<String>,
    /// The VMs' message keys come from these: their user data, and the pool's MAC.
    secrets: MessageSecrets,
    /// The splitters' pool queues declared on the link's current session.
    pool_queues: PoolQueues,
    /// The telemetry queue's bindings, one set per group steered here.
    telemetry_bindings: TelemetryBindings,
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
        secrets: MessageSecrets,
    ) -> (Steering, mpsc::Receiver<CloudEvent>) {
        let (events, receiver) = mpsc::channel(CLOUD_EVENT_BACKLOG);
        let timeseries = TimeSeries::new(config.default.state_path.join(TIMESERIES_DIR));
        let telemetry_queue = topology.conductor_telemetry_queue(&config.default.host);
        let telemetry_bindings = TelemetryBindings::new(topology.clone(), telemetry_queue);
        let steering = Steering {
            driver,
            config,
            sender,
            topology,
            timeseries,
            events,
            listing: BTreeSet::new(),
            secrets,
            pool_queues: PoolQueues::default(),
            telemetry_bindings,
        };
        (steering, receiver)
    }

    /// One pass over every group: asks the cloud for each group's VMs (unless a listing
    /// is still out); each group steps when its listing comes back ([`Self::listed`]).
    pub fn tick<'a>(&mut self, groups: impl IntoIterator<Item = &'a String>) {
        for name in groups {
            self.list(name);
        }
    }

    /// Binds the telemetry queue to the keys of `groups` (those steered here) alone
    /// ([`TelemetryBindings`]).
    pub fn hear<'a>(&self, groups: impl Iterator<Item = &'a String>, link: &LinkHandle) {
        self.telemetry_bindings.follow(link, groups);
    }

    /// Asks the cloud for `group`'s VMs, unless a listing of it is already out; the
    /// group steps when the answer comes back. Also between ticks, for a group with a
    /// new splitter to give its pool to.
    pub fn list(&mut self, group: &str) {
        if !self.listing.insert(group.to_owned()) {
            debug!(template = %group, "the group's last listing is still out");
            return;
        }
        let (driver, group) = (self.driver.clone(), group.to_owned());
        let patience = self.config.conductor.list_timeout;
        self.spawn(async move {
            let result = within(patience, "list", driver.list(&group)).await;
            CloudEvent::Listed { group, result }
        });
    }

    /// Runs a cloud call as a task of its own; its answer comes back as an event.
    fn spawn(&self, call: impl Future<Output = CloudEvent> + Send + 'static) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(call.await).await;
        });
    }

    /// `group` may be listed again.
    fn listing_returned(&mut self, group: &str) {
        self.listing.remove(group);
    }

    /// A group's listing came back: the group steps on it.
    async fn listed(
        &mut self,
        name: String,
        result: Result<Vec<Vm>, DriverError>,
        conductor: &mut Conductor,
        out: &Outlets<'_>,
    ) {
        self.listing_returned(&name);
        let vms = match result {
            Ok(vms) => vms,
            Err(error) => {
                warn!(%error, template = %name, "cannot list the group's VMs; trying again next tick");
                return;
            }
        };
        // Up means connected and allowed to publish, since a time the link reports: a
        // reconnect or a broker's block (memory alarm) between two ticks still restarts
        // the groups' grace, during which silence proves nothing (the agents were
        // disconnected or blocked too, and come back a little later).
        let link_up_since = out.link.state().up_since();
        self.declare_splitter_queues(&name, &vms, out.link);
        let observed = Observed {
            vms,
            heartbeats: conductor.vms.infos(&name),
            link_up: link_up_since.is_some(),
            link_up_since,
        };
        let Some(group) = conductor.groups.get_mut(&name) else {
            return;
        };
        let now = Utc::now();
        let actions = group.step(now, observed);
        // The registry keeps only VMs the cloud lists (issue 17: bounded by the fleet).
        if let Some(group) = conductor.groups.get(&name) {
            conductor.vms.retain_listed(&name, |vm| group.lists(vm));
            conductor
                .sequences
                .retain_listed(&name, |vm| group.lists(vm));
        }
        self.carry_out(&name, actions, conductor, out, now).await;
    }

    /// Makes sure the pool queue of each splitter in a group's listing exists, bound to
    /// the group's pool key: its agent's login may declare nothing (doc/security.md), so
    /// its queue must exist before the agent can consume it ([`PoolQueues`]).
    fn declare_splitter_queues(&self, group: &str, vms: &[Vm], link: &LinkHandle) {
        let splitters = vms.iter().filter(|vm| vm.role() == Some(Role::Splitter));
        for vm in splitters {
            // One queue per key the splitter may hold (two between rotations), all bound
            // to the pool key: its agent reads the one its key names.
            for key in self.secrets.vm_keys(&vm.name) {
                let queue = self
                    .topology
                    .splitter_queue(&vm.name, &key.pool_queue_tag());
                self.pool_queues.ensure(link, &self.topology, group, queue);
            }
        }
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
                        let store = conductor.memory.store.clone();
                        self.boot(name, &group.template, role, replaces, store);
                    }
                }
                Action::Delete(id) => self.delete(name, id),
                Action::PublishPool(update) => {
                    let splitter = conductor.groups.get(name).and_then(|g| g.pool_splitter());
                    let splitter = splitter.map(str::to_owned);
                    self.publish_pool(name, &update, splitter.as_deref(), out.link, now)
                        .await;
                    conductor.pool_sent(name, update.generation).await;
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
                    for notification in conductor.forget(name).await {
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
        store: Store,
    ) {
        let (driver, group) = (self.driver.clone(), group.to_owned());
        let (config, template) = (self.config.clone(), template.clone());
        let patience = self.config.conductor.cloud_call_timeout;
        let messages = self.secrets.clone();
        self.spawn(async move {
            // The group's AJP secret (made on its first boot), for the VM's user data.
            let secret = match secret(&store, &config, &group).await {
                Ok(secret) => secret,
                Err(error) => {
                    return CloudEvent::Booted {
                        name: format!("{group}-{role}"),
                        group,
                        role,
                        replaces,
                        result: Err(error),
                    }
                }
            };
            let spec = vm_spec(&config, &template, role, &secret, &messages);
            info!(template = %group, vm = %spec.name, %role, image = %spec.image, "booting a VM");
            let name = spec.name.clone();
            let result = within(patience, "boot", driver.boot(spec))
                .await
                .map_err(BootError::Driver);
            CloudEvent::Booted {
                group,
                role,
                name,
                replaces,
                result,
            }
        });
    }

    fn delete(&self, group: &str, id: VmId) {
        info!(template = %group, vm = %id, "deleting a VM");
        let (driver, group) = (self.driver.clone(), group.to_owned());
        let patience = self.config.conductor.cloud_call_timeout;
        self.spawn(async move {
            let result = within(patience, "delete", driver.delete(&id)).await;
            CloudEvent::Deleted { group, id, result }
        });
    }

    async fn publish_pool(
        &self,
        name: &str,
        update: &PoolUpdate,
        splitter: Option<&str>,
        link: &LinkHandle,
        now: DateTime<Utc>,
    ) {
        let body = envelope::encode(&self.sender, now, update);
        let key = Topology::pool_key(name);
        // Signed with the splitter's key, which its agent checks; before a splitter was
        // heard there is nobody to sign for (the pool is sent again once one is).
        let headers = splitter.map(|s| self.secrets.headers_for(s, &body));
        let message = Outgoing {
            exchange: &self.topology.exchange,
            routing_key: &key,
            body: &body,
            confirm: true,
            ttl: None,
            correlation_id: None,
            headers: headers.as_ref(),
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
            headers: None,
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
            CloudEvent::Listed { group, result } => {
                self.listed(group, result, conductor, out).await;
            }
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
                    conductor.vms.forget(&group, &name);
                    conductor.vm_gone(&group, &name).await;
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

/// `call`, or [`DriverError::Unreachable`] once `patience` has passed (retryable: the
/// group asks again). A boot given up on may still happen: its VM then shows up in a
/// later listing, where the group's rules see it like any other.
async fn within<T>(
    patience: Duration,
    call: &str,
    answer: impl Future<Output = Result<T, DriverError>>,
) -> Result<T, DriverError> {
    tokio::time::timeout(patience, answer)
        .await
        .unwrap_or_else(|_| {
            Err(DriverError::Unreachable {
                call: call.to_owned(),
                reason: format!("no answer within {} s", patience.as_secs_f64()),
            })
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::driver::VmSpec;

    /// A cloud whose listing of group `hung` never answers; every other call answers at
    /// once with nothing. Counts the listings asked for, by group.
    #[derive(Default)]
    struct HalfHung {
        listings: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl CloudDriver for HalfHung {
        fn name(&self) -> &'static str {
            "half-hung"
        }
        async fn boot(&self, _: VmSpec) -> Result<Vm, DriverError> {
            unreachable!("no boot in this test")
        }
        async fn get(&self, _: &VmId) -> Result<Option<Vm>, DriverError> {
            Ok(None)
        }
        async fn list(&self, group: &str) -> Result<Vec<Vm>, DriverError> {
            self.listings.lock().unwrap().push(group.to_owned());
            if group == "hung" {
                std::future::pending::<()>().await;
            }
            Ok(Vec::new())
        }
        async fn list_all(&self) -> Result<Vec<Vm>, DriverError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &VmId) -> Result<(), DriverError> {
            Ok(())
        }
    }

    fn listed(event: CloudEvent) -> (String, bool) {
        match event {
            CloudEvent::Listed { group, result } => (group, result.is_ok()),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 16, item 3: a group whose listing hangs holds up neither the tick nor the
    /// other groups' listings; it is not listed twice at once, and its listing gives up
    /// after list_timeout, after which the next tick asks again.
    #[tokio::test(start_paused = true)]
    async fn a_hung_listing_holds_up_no_other_group_and_times_out() {
        let driver = Arc::new(HalfHung::default());
        let mut config = Config::default();
        config.conductor.list_timeout = Duration::from_secs(10);
        let topology = Topology::new("test", crate::messaging::Durability::Transient);
        let (mut steering, mut events) = Steering::new(
            driver.clone(),
            config,
            "s".into(),
            topology,
            MessageSecrets::new(&[1; 32], None),
        );
        let groups = ["hung".to_owned(), "shop".to_owned()];
        let start = tokio::time::Instant::now();
        steering.tick(&groups);
        assert_eq!(listed(events.recv().await.unwrap()), ("shop".into(), true));
        assert!(start.elapsed() < Duration::from_secs(1));
        // The next tick lists the other group again, not the hung one.
        steering.listing_returned("shop");
        steering.tick(&groups);
        assert_eq!(listed(events.recv().await.unwrap()), ("shop".into(), true));
        assert_eq!(*driver.listings.lock().unwrap(), ["hung", "shop", "shop"]);
        // The hung listing gives up after list_timeout.
        assert_eq!(listed(events.recv().await.unwrap()), ("hung".into(), false));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        steering.listing_returned("hung");
        steering.tick(&groups[..1]);
        assert_eq!(listed(events.recv().await.unwrap()), ("hung".into(), false));
        assert_eq!(driver.listings.lock().unwrap().len(), 4, "asked again");
    }
}
