//! The splitter role: one loop that owns mod_jk's pool and the request log's metrics.
//!
//! - **Metrics**: every line of the mod_jk log (followed by [`log_follower`]) goes to the
//!   [`Aggregator`]; every quarter of a second the interval's [`Metrics`] are completed (every pool
//!   member listed, `busy` from jkstatus) and published on `metrics.<group>`, transient
//!   with the telemetry TTL. Only requests through the site's balancer count: jkstatus's
//!   own requests (the agent's checks among them) are in the same log.
//! - **Pool updates** from `pool.<group>`, through the agent's own queue: [`decide`] (pure)
//!   says what a decoded update means against what was applied; [`Splitter::apply`]
//!   carries it out (members joining while spare workers are free: jkstatus points a
//!   spare at each, then the file follows, no reload; any other membership change: a new
//!   workers.properties, checked, renamed into place, `apache2 -k graceful`, which stops
//!   Apache from accepting for about a second; a drain or an undrain: jkstatus, then the
//!   file, no reload; a join, drain or undrain jkstatus refuses: the file and a reload;
//!   `listening = false`: `apache2 -k graceful-stop`, once, and never a reload after it)
//!   and every generation is answered with a [`PoolAck`] (confirmed) before the delivery
//!   is acknowledged.
//!
//! The last applied generation lives in memory only: a restarted agent applies the next
//! update it gets (the conductor re-sends the pool periodically), starting from what
//! workers.properties holds.
//!
//! One task, no shared state: pool updates are rare and take at most a few seconds
//! (commands time out after [`modjk::COMMAND_TIMEOUT`]); the follower's bounded channel
//! holds the log meanwhile, and a late tick shows as a longer `interval`.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use autoscaler_messaging::{
    signing::{Signature, Signer},
    DropCounts, DropReason, Envelope, LinkHandle, MemberState, MemberStats, Metrics, Outgoing,
    PoolAck, PoolMember, PoolOutcome, PoolUpdate, Stats, Topology,
};
use chrono::Utc;
use tokio::{
    sync::{mpsc, watch},
    time::MissedTickBehavior,
};
use tracing::{debug, info, warn};

use crate::{
    aggregate::Aggregator,
    http::HttpUrl,
    log_follower::{self, Batch, LogFollower},
    modjk::{self, Apache, JkStatus, Login, ModJkError, WorkersFile},
    request_log::{self, Line},
    settings::SplitterPaths,
    web::LocalCheck,
};

/// How often metrics are published: a quarter of a second, so that the policy, which
/// judges each on its last second and decides as soon as the evidence is complete, acts
/// within a quarter of a second of the 5 s the seed's spike rule asks for, where whole
/// seconds cost up to one more (doc/policy.md, "Reaction and settle").
pub(crate) const METRICS_INTERVAL: Duration = Duration::from_millis(250);

/// How often the request log is polled (a tenth of the metrics interval: a request
/// lands in the interval in which it ended, give or take 25 ms).
const LOG_POLL: Duration = Duration::from_millis(25);

/// How long the busy read of each interval may take: past it the metrics go out without
/// (jkstatus answers in a few milliseconds; during a graceful reload it may not answer
/// at all, and the metrics must not wait: measured, 0.5 s late).
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a pool ack may wait for the broker (confirmed publish).
const ACK_PATIENCE: Duration = Duration::from_secs(10);

/// The largest pool message read: a member is under 100 bytes of JSON.
pub(crate) const MAX_POOL_MESSAGE: usize = 1024 * 1024;

/// Acknowledges one delivery to the broker when awaited.
pub(crate) type Acknowledge = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One message from the splitter's pool queue: its bytes and its acknowledgement. The
/// loop sees no broker types, so it runs the same on lapin's deliveries and in tests.
pub(crate) struct Incoming {
    pub(crate) data: Vec<u8>,
    /// The signer and MAC its headers carry, if any.
    pub(crate) signature: Option<Signature>,
    pub(crate) ack: Acknowledge,
}

/// What the splitter loop needs besides its channels.
pub(crate) struct Settings {
    pub(crate) exchange: String,
    /// The envelope's sender.
    pub(crate) sender: String,
    pub(crate) group: String,
    pub(crate) vm_id: String,
    pub(crate) telemetry_ttl: Duration,
    pub(crate) request_log: PathBuf,
    pub(crate) workers_properties: PathBuf,
    /// Signs what the agent publishes; its key checks the conductor's pool updates.
    pub(crate) signer: Arc<Signer>,
}

/// What has been applied: the input of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolState {
    pub(crate) group: String,
    /// The generation applied last by this process; `None` until the first.
    pub(crate) last_applied: Option<u64>,
    /// The members mod_jk runs with, as workers.properties holds them.
    pub(crate) members: Vec<PoolMember>,
    /// Apache was told to stop (graceful-stop): it is never reloaded or started again.
    pub(crate) stopped: bool,
    /// Spare workers free in the running mod_jk: members that join take them, no reload.
    pub(crate) spares: usize,
}

/// What to do with a decoded pool update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// For another group: ignored, no answer.
    OtherGroup,
    /// Older than the generation applied last: ignored, no answer.
    Stale {
        last_applied: u64,
    },
    /// The generation applied last, again: answered `Applied` again, so a conductor that
    /// missed the first answer learns it.
    Repeat,
    /// Not applicable; mod_jk is untouched and the answer says why.
    Reject(String),
    Apply(Plan),
}

/// How to apply a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) change: Change,
    /// `listening` turned false: graceful-stop after the change.
    pub(crate) stop_listening: bool,
}

/// How the pool differs from what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing to do to mod_jk (only the generation moves on).
    Nothing,
    /// Only activations differ: these members, to these states, through jkstatus; the file
    /// follows without a reload.
    Activations(Vec<(String, MemberState)>),
    /// Members join, none leaves or moves, and enough spares are free: each new member
    /// takes a spare through jkstatus, these members change activation, and the file
    /// follows without a reload.
    Join {
        joining: Vec<String>,
        flips: Vec<(String, MemberState)>,
    },
    /// The set of (name, host, port) differs otherwise: a new file and a graceful reload.
    Membership,
}

/// Decides what `update` means given `state`; `reserved` says which names belong to the
/// image's own workers. Pure.
pub(crate) fn decide(
    state: &PoolState,
    update: &PoolUpdate,
    reserved: impl Fn(&str) -> bool,
) -> Decision {
    if update.group != state.group {
        return Decision::OtherGroup;
    }
    match state.last_applied {
        Some(last) if update.generation < last => return Decision::Stale { last_applied: last },
        Some(last) if update.generation == last => return Decision::Repeat,
        _ => {}
    }
    if let Err(reason) = update.validate() {
        return Decision::Reject(reason);
    }
    if let Some(m) = update.members.iter().find(|m| reserved(&m.name)) {
        return Decision::Reject(format!(
            "member name {:?} is taken by a worker of the splitter image",
            m.name
        ));
    }
    if state.stopped && update.listening {
        return Decision::Reject(
            "the splitter has stopped listening (graceful-stop) and does not start again".into(),
        );
    }
    let addresses = |members: &[PoolMember]| -> BTreeSet<(String, String, u16)> {
        members
            .iter()
            .map(|m| (m.name.clone(), m.host.clone(), m.port))
            .collect()
    };
    let now: BTreeMap<&str, MemberState> = state
        .members
        .iter()
        .map(|m| (m.name.as_str(), m.state))
        .collect();
    let flips: Vec<(String, MemberState)> = update
        .members
        .iter()
        .filter(|m| now.get(m.name.as_str()).is_some_and(|s| *s != m.state))
        .map(|m| (m.name.clone(), m.state))
        .collect();
    let (running, wanted) = (addresses(&state.members), addresses(&update.members));
    let change = if running == wanted {
        if flips.is_empty() {
            Change::Nothing
        } else {
            Change::Activations(flips)
        }
    } else if running.is_subset(&wanted) && wanted.len() - running.len() <= state.spares {
        let joining = update
            .members
            .iter()
            .filter(|m| !now.contains_key(m.name.as_str()))
            .map(|m| m.name.clone())
            .collect();
        Change::Join { joining, flips }
    } else {
        Change::Membership
    };
    Decision::Apply(Plan {
        change,
        stop_listening: !update.listening && !state.stopped,
    })
}

/// Whether `message` carries the conductor's MAC for this splitter (its own key, issue
/// 17): anyone else who can publish on the pool key cannot move or freeze the pool.
pub(crate) fn signed_for(
    signer: &Signer,
    vm_id: &str,
    message: &Incoming,
) -> Result<(), DropReason> {
    let signature = message.signature.as_ref().ok_or(DropReason::Unsigned)?;
    if signature.signer != vm_id || !signature.made_by(signer.key(), &message.data) {
        return Err(DropReason::BadMac(signature.signer.clone()));
    }
    Ok(())
}

/// The pool update in `data`, or why it cannot be read.
pub(crate) fn decode(data: &[u8]) -> Result<PoolUpdate, DropReason> {
    let raw = Envelope::decode(data, MAX_POOL_MESSAGE)?;
    match raw.payload_as::<PoolUpdate>() {
        Some(update) => update.map(|envelope| envelope.payload),
        None => Err(raw.unknown()),
    }
}

/// Completes a second's metrics: every pool member listed (zeros when it ended no
/// request), the image's own members left out, `busy` from jkstatus where it was read,
/// sorted by name.
pub(crate) fn complete_members(
    metrics: &mut Metrics,
    pool: &[PoolMember],
    is_image_member: impl Fn(&str) -> bool,
    busy: Option<&BTreeMap<String, u32>>,
) {
    metrics.members.retain(|m| !is_image_member(&m.member));
    for member in pool {
        if !metrics.members.iter().any(|m| m.member == member.name) {
            metrics.members.push(MemberStats {
                member: member.name.clone(),
                stats: Stats::default(),
                busy: None,
            });
        }
    }
    for m in &mut metrics.members {
        m.busy = busy.and_then(|b| b.get(&m.member).copied());
    }
    metrics.members.sort_by(|a, b| a.member.cmp(&b.member));
}

/// Resolves once `stop` is true (or its sender is gone). Holds no borrow of the value
/// across the loop's other awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The splitter VM's Apache, mod_jk and workers.properties, opened before the agent
/// connects: a file it cannot use is a bad setting, found at start.
pub(crate) struct ModJk {
    /// workers.properties as it is at start: the image's, or this agent's before a
    /// restart (then with the members it applied).
    file: WorkersFile,
    apache: Apache,
    jkstatus: JkStatus,
    jkstatus_url: HttpUrl,
    /// `--site-path`: where clients reach the site when Apache maps it onto the mount.
    site_path: Option<String>,
}

impl ModJk {
    pub(crate) fn open(paths: &SplitterPaths) -> Result<ModJk, String> {
        let path = &paths.workers_properties;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file = WorkersFile::parse(path, &text).map_err(|e| e.to_string())?;
        let apache = Apache::new(paths.httpd.clone(), paths.httpd_config.clone())
            .map_err(|e| e.to_string())?;
        let mut jkstatus = JkStatus::new(paths.jkstatus_url.clone(), file.balancer());
        if let Some((url, credentials)) = &paths.jkstatus_admin {
            let login = Login::read(credentials).map_err(|e| e.to_string())?;
            jkstatus = jkstatus.with_admin(url.clone(), login);
        }
        Ok(ModJk {
            file,
            apache,
            jkstatus,
            jkstatus_url: paths.jkstatus_url.clone(),
            site_path: paths.site_path.clone(),
        })
    }

    /// The splitter's local check: mod_jk's status worker answers.
    pub(crate) fn check(&self) -> LocalCheck {
        LocalCheck::new(self.jkstatus.properties_url())
    }

    /// The site's URL: Apache's address (jkstatus's) and the site's path (`--site-path`,
    /// else the balancer's `JkMount` path).
    pub(crate) fn site_url(&self) -> Option<String> {
        let path = match &self.site_path {
            Some(path) => path.as_str(),
            None => self.apache.mount_of(self.file.balancer())?,
        };
        Some(self.jkstatus_url.with_path(path).to_string())
    }
}

/// The splitter's loop and what it owns.
pub(crate) struct Splitter {
    settings: Settings,
    link: LinkHandle,
    apache: Apache,
    jkstatus: JkStatus,
    /// The image's lines of workers.properties (its members are in `state`).
    file: WorkersFile,
    state: PoolState,
    aggregator: Aggregator,
    drops: DropCounts,
}

impl Splitter {
    pub(crate) fn new(settings: Settings, link: LinkHandle, modjk: ModJk) -> Splitter {
        let state = PoolState {
            group: settings.group.clone(),
            last_applied: None,
            members: modjk.file.members().to_vec(),
            stopped: false,
            spares: modjk.file.free_spares(),
        };
        let aggregator = Aggregator::new(&settings.group, &settings.vm_id, Utc::now());
        Splitter {
            settings,
            link,
            apache: modjk.apache,
            jkstatus: modjk.jkstatus,
            file: modjk.file,
            state,
            aggregator,
            drops: DropCounts::default(),
        }
    }

    /// Runs until `stop` turns true.
    pub(crate) async fn run(
        mut self,
        mut pool: mpsc::Receiver<Incoming>,
        mut stop: watch::Receiver<bool>,
    ) {
        let follower = LogFollower::open(&self.settings.request_log, LOG_POLL).await;
        info!(
            log = %follower.path().display(),
            workers = %self.settings.workers_properties.display(),
            members = self.state.members.len(),
            "splitter running"
        );
        let (mut batches, follower_task) = log_follower::spawn(follower, stop.clone());
        let mut ticks = tokio::time::interval(METRICS_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate; the first interval is a whole one
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                Some(message) = pool.recv() => {
                    match signed_for(&self.settings.signer, &self.settings.vm_id, &message) {
                        Ok(()) => self.on_pool_message(&message.data).await,
                        Err(reason) => self.dropped(&reason),
                    }
                    if let Err(error) = message.ack.await {
                        warn!(%error, "pool message not acknowledged to the broker");
                    }
                }
                _ = ticks.tick() => self.publish_metrics().await,
                Some(batch) = batches.recv() => self.record(&batch),
            }
        }
        let _ = follower_task.await;
    }

    fn record(&mut self, batch: &Batch) {
        let balancer = self.file.balancer();
        for line in batch.lines() {
            match request_log::parse(line) {
                Line::Request(request) if request.worker == balancer => {
                    self.aggregator.record(&request)
                }
                // jkstatus (the agent's own checks among them): not the site's traffic.
                Line::Request(_) => {}
                Line::Message => self.aggregator.record_message(),
                malformed @ Line::Malformed(_) => self.aggregator.record_line(&malformed),
            }
        }
        self.aggregator.record_malformed(batch.cut());
        if !batch.is_empty() {
            tracing::trace!(lines = batch.len(), cut = batch.cut(), "log batch");
        }
    }

    async fn publish_metrics(&mut self) {
        let mut metrics = self.aggregator.take(Utc::now());
        let busy = match self.jkstatus.busy(BUSY_TIMEOUT).await {
            Ok(busy) => Some(busy),
            Err(error) => {
                debug!(%error, "no busy counts this second");
                None
            }
        };
        let file = &self.file;
        complete_members(
            &mut metrics,
            &self.state.members,
            |name| file.image_members().iter().any(|m| m == name),
            busy.as_ref(),
        );
        let (body, headers) =
            self.settings
                .signer
                .seal(&self.settings.sender, Utc::now(), &metrics);
        let key = Topology::metrics_key(&self.settings.group);
        let message = Outgoing {
            exchange: &self.settings.exchange,
            routing_key: &key,
            body: &body,
            confirm: false,
            ttl: Some(self.settings.telemetry_ttl),
            correlation_id: None,
            headers: Some(&headers),
        };
        // Patience of one interval: later, the next interval's metrics say more.
        if let Err(error) = self.link.publish(message, METRICS_INTERVAL).await {
            warn!(%error, "metrics not sent");
        }
    }

    fn dropped(&self, reason: &DropReason) {
        self.drops.record(reason);
        warn!(
            %reason,
            dropped = self.drops.snapshot().total(),
            "pool message dropped; mod_jk untouched"
        );
    }

    /// Handles one pool message; the caller acknowledges the delivery afterwards.
    async fn on_pool_message(&mut self, data: &[u8]) {
        let update = match decode(data) {
            Ok(update) => update,
            Err(reason) => return self.dropped(&reason),
        };
        let generation = update.generation;
        let file = &self.file;
        match decide(&self.state, &update, |name| file.is_reserved(name)) {
            Decision::OtherGroup => {
                debug!(group = %update.group, generation, "pool update for another group ignored")
            }
            Decision::Stale { last_applied } => {
                debug!(generation, last_applied, "older pool generation ignored")
            }
            Decision::Repeat => {
                debug!(
                    generation,
                    "pool generation already applied; answering again"
                );
                self.answer(generation, PoolOutcome::Applied).await;
            }
            Decision::Reject(reason) => {
                warn!(generation, %reason, "pool update rejected; mod_jk untouched");
                self.answer(generation, PoolOutcome::Rejected { reason })
                    .await;
            }
            Decision::Apply(plan) => {
                let outcome = match self.apply(&update, &plan).await {
                    Ok(()) => {
                        self.state.last_applied = Some(generation);
                        info!(
                            generation,
                            members = update.members.len(),
                            change = ?plan.change,
                            listening = update.listening,
                            "pool generation applied"
                        );
                        PoolOutcome::Applied
                    }
                    Err(error) => {
                        warn!(generation, %error, "pool update failed");
                        PoolOutcome::Rejected {
                            reason: error.to_string(),
                        }
                    }
                };
                self.answer(generation, outcome).await;
            }
        }
    }

    /// Carries out `plan`. On success the state holds the new members (and `stopped`);
    /// on failure it still describes what runs, so the next update tries again.
    async fn apply(&mut self, update: &PoolUpdate, plan: &Plan) -> Result<(), ModJkError> {
        let generation = Some(update.generation);
        // Members where they run, joining ones in spares; a reload's fresh file otherwise.
        let (target, joins) = match self.file.with_joined(&update.members) {
            Some((file, joins)) if !matches!(plan.change, Change::Membership) => (file, joins),
            _ => (self.file.with_members(&update.members), Vec::new()),
        };
        // A stopped (or stopping) Apache is never reloaded: `-k graceful` would start one.
        let reload_allowed = !self.state.stopped && !plan.stop_listening;
        match &plan.change {
            Change::Nothing => {}
            Change::Membership if reload_allowed => self.reload(&target, generation).await?,
            Change::Activations(flips) | Change::Join { flips, .. } if reload_allowed => {
                if let Err(error) = self.through_jkstatus(&joins, flips).await {
                    // The file says the same, and a reload makes mod_jk read it.
                    warn!(%error, "jkstatus refused; reloading instead");
                    self.reload(&target, generation).await?;
                } else {
                    self.write(&target, generation).await?;
                }
            }
            Change::Membership | Change::Activations(_) | Change::Join { .. } => {
                self.write(&target, generation).await?
            }
        }
        if !matches!(plan.change, Change::Nothing) {
            self.file = target;
        }
        self.state.spares = self.file.free_spares();
        self.state.members = update.members.clone();
        if plan.stop_listening {
            self.apache.graceful_stop().await?;
            self.state.stopped = true;
            info!("Apache stops listening (graceful-stop); requests in flight finish");
        }
        Ok(())
    }

    /// Points each spare of `joins` at its member, then sets the activations of `flips`,
    /// in the running mod_jk.
    async fn through_jkstatus(
        &self,
        joins: &[(String, PoolMember)],
        flips: &[(String, MemberState)],
    ) -> Result<(), ModJkError> {
        for (spare, member) in joins {
            self.jkstatus.join(spare, member).await?;
            info!(member = %member.name, %spare, "member joined through jkstatus, no reload");
        }
        for (member, state) in flips {
            let worker = self.file.worker_of(member);
            self.jkstatus.set_activation(worker, *state).await?;
        }
        Ok(())
    }

    /// Keeps the file in step without a reload: validated, then renamed into place.
    async fn write(&self, target: &WorkersFile, generation: Option<u64>) -> Result<(), ModJkError> {
        let text = target.render(generation);
        modjk::validate(&text)?;
        modjk::replace_file(&self.settings.workers_properties, &text).await
    }

    /// A new file, checked (by the agent, then `apache2 -t`), renamed into place, then a
    /// graceful reload. Invalid: the `.new` file is removed and nothing else is touched.
    async fn reload(
        &self,
        target: &WorkersFile,
        generation: Option<u64>,
    ) -> Result<(), ModJkError> {
        let path = &self.settings.workers_properties;
        let text = target.render(generation);
        modjk::validate(&text)?;
        let staged = modjk::staged_path(path);
        let io_error = |what: &str, e: std::io::Error| ModJkError::File {
            path: staged.display().to_string(),
            problem: format!("{what}: {e}"),
        };
        if let Err(e) = modjk::write_private(&staged, &text).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(io_error("cannot write", e));
        }
        if let Err(error) = self.apache.check().await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(error);
        }
        if let Err(e) = tokio::fs::rename(&staged, path).await {
            let _ = tokio::fs::remove_file(&staged).await;
            return Err(io_error("cannot rename into place", e));
        }
        self.apache.graceful().await
    }

    /// Publishes the answer to `generation`, confirmed.
    async fn answer(&self, generation: u64, outcome: PoolOutcome) {
        let ack = PoolAck {
            group: self.settings.group.clone(),
            vm_id: self.settings.vm_id.clone(),
            generation,
            outcome,
        };
        let (body, headers) = self
            .settings
            .signer
            .seal(&self.settings.sender, Utc::now(), &ack);
        let key = Topology::pool_ack_key(&self.settings.group);
        let message = Outgoing {
            exchange: &self.settings.exchange,
            routing_key: &key,
            body: &body,
            confirm: true,
            ttl: None,
            correlation_id: None,
            headers: Some(&headers),
        };
        if let Err(error) = self.link.publish(message, ACK_PATIENCE).await {
            // The conductor re-sends the pool; a repeat is answered again.
            warn!(%error, generation, "pool ack not sent");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, state: MemberState) -> PoolMember {
        PoolMember {
            name: name.into(),
            host: format!("127.0.1.{}", name.len() + 10),
            port: 8009,
            state,
        }
    }

    fn update(generation: u64, members: Vec<PoolMember>) -> PoolUpdate {
        PoolUpdate {
            group: "shop".into(),
            generation,
            members,
            listening: true,
        }
    }

    fn state(last_applied: Option<u64>, members: Vec<PoolMember>) -> PoolState {
        PoolState {
            group: "shop".into(),
            last_applied,
            members,
            stopped: false,
            spares: 0,
        }
    }

    fn image_worker(name: &str) -> bool {
        [
            "loadbalancer",
            "placeholder",
            "member",
            "jkstatus",
            "jkadmin",
        ]
        .contains(&name)
    }

    fn apply(change: Change) -> Decision {
        Decision::Apply(Plan {
            change,
            stop_listening: false,
        })
    }

    use MemberState::{Active, Draining};

    #[test]
    fn generations_decide_what_happens() {
        let a = member("a", Active);
        let running = state(Some(5), vec![a.clone()]);
        let d = |u: &PoolUpdate| decide(&running, u, image_worker);

        assert_eq!(d(&update(4, vec![])), Decision::Stale { last_applied: 5 });
        assert_eq!(d(&update(5, vec![])), Decision::Repeat);
        let mut other = update(9, vec![]);
        other.group = "blog".into();
        assert_eq!(d(&other), Decision::OtherGroup);
        // Same members: nothing to do to mod_jk, but the generation is applied.
        assert_eq!(d(&update(6, vec![a.clone()])), apply(Change::Nothing));
        // A fresh agent applies whatever comes first.
        let fresh = state(None, vec![]);
        assert_eq!(
            decide(&fresh, &update(1, vec![a.clone()]), image_worker),
            apply(Change::Membership)
        );
        assert_eq!(
            decide(&fresh, &update(0, vec![]), image_worker),
            apply(Change::Nothing)
        );
    }

    #[test]
    fn invalid_updates_are_rejected() {
        let running = state(Some(1), vec![]);
        let d = |u: &PoolUpdate| decide(&running, u, image_worker);
        let mut bad = member("a", Active);
        bad.host = "not-an-ip".into();
        match d(&update(2, vec![bad])) {
            Decision::Reject(reason) => assert!(reason.contains("not an IP address"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match d(&update(2, vec![member("placeholder", Active)])) {
            Decision::Reject(reason) => assert!(reason.contains("splitter image"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Validation comes after the generation check: an old invalid one is just old.
        assert_eq!(
            d(&update(0, vec![member("a b", Active)])),
            Decision::Stale { last_applied: 1 }
        );
    }

    #[test]
    fn drains_are_state_only_and_address_changes_are_membership() {
        let running = state(Some(1), vec![member("a", Active), member("bb", Active)]);
        let d = |u: &PoolUpdate| decide(&running, u, image_worker);
        assert_eq!(
            d(&update(
                2,
                vec![member("bb", Draining), member("a", Active)]
            )),
            apply(Change::Activations(vec![("bb".into(), Draining)]))
        );
        let mut moved = member("a", Active);
        moved.port = 8010;
        assert_eq!(
            d(&update(2, vec![moved, member("bb", Active)])),
            apply(Change::Membership)
        );
        // Removing a member (even while draining another) is a membership change.
        assert_eq!(
            d(&update(2, vec![member("a", Draining)])),
            apply(Change::Membership)
        );
        // Undrain.
        let drained = state(Some(2), vec![member("a", Draining)]);
        assert_eq!(
            decide(
                &drained,
                &update(3, vec![member("a", Active)]),
                image_worker
            ),
            apply(Change::Activations(vec![("a".into(), Active)]))
        );
    }

    #[test]
    fn members_joining_take_spares_while_enough_are_free() {
        let mut running = state(Some(1), vec![member("a", Active)]);
        running.spares = 2;
        let d = |s: &PoolState, u: &PoolUpdate| decide(s, u, image_worker);
        let joined = update(
            2,
            vec![
                member("bb", Active),
                member("a", Draining),
                member("ccc", Active),
            ],
        );
        assert_eq!(
            d(&running, &joined),
            apply(Change::Join {
                joining: vec!["bb".into(), "ccc".into()],
                flips: vec![("a".into(), Draining)],
            })
        );
        // One spare short, a member leaving or moving: a reload.
        running.spares = 1;
        assert_eq!(d(&running, &joined), apply(Change::Membership));
        running.spares = 8;
        let mut moved = member("a", Active);
        moved.port = 8010;
        assert_eq!(
            d(&running, &update(2, vec![moved, member("bb", Active)])),
            apply(Change::Membership)
        );
        let two = state(Some(1), vec![member("a", Active), member("bb", Active)]);
        let replaced = update(2, vec![member("a", Active), member("ccc", Active)]);
        assert_eq!(d(&two, &replaced), apply(Change::Membership));
    }

    #[test]
    fn listening_false_stops_once_and_never_restarts() {
        let mut running = state(Some(1), vec![member("a", Active)]);
        let mut last = update(2, vec![member("a", Draining)]);
        last.listening = false;
        assert_eq!(
            decide(&running, &last, image_worker),
            Decision::Apply(Plan {
                change: Change::Activations(vec![("a".into(), Draining)]),
                stop_listening: true,
            })
        );
        running.stopped = true;
        running.last_applied = Some(2);
        running.members = last.members.clone();
        last.generation = 3;
        assert_eq!(
            decide(&running, &last, image_worker),
            apply(Change::Nothing)
        );
        last.listening = true;
        last.generation = 4;
        assert!(matches!(
            decide(&running, &last, image_worker),
            Decision::Reject(reason) if reason.contains("does not start again")
        ));
    }

    #[test]
    fn undecodable_messages_say_why() {
        let good = Envelope::new("c", Utc::now(), update(1, vec![member("a", Active)])).to_bytes();
        assert_eq!(decode(&good).unwrap().generation, 1);
        let melting = String::from_utf8(good.clone())
            .unwrap()
            .replace("\"active\"", "\"melting\"");
        assert!(matches!(
            decode(melting.as_bytes()),
            Err(DropReason::BadPayload { .. })
        ));
        let other_kind = String::from_utf8(good)
            .unwrap()
            .replace("\"pool.update\"", "\"pool.upgrade\"");
        assert!(matches!(
            decode(other_kind.as_bytes()),
            Err(DropReason::UnknownKind(kind)) if kind == "pool.upgrade"
        ));
        assert!(matches!(
            decode(b"{\"generation\": 1"),
            Err(DropReason::Malformed(_))
        ));
    }

    #[test]
    fn metrics_list_every_pool_member_with_busy() {
        let stats = Stats {
            requests: 3,
            ..Stats::default()
        };
        let mut metrics = Metrics {
            group: "shop".into(),
            vm_id: "s".into(),
            start: Utc::now(),
            interval: 1.0,
            site: stats,
            members: vec![
                MemberStats {
                    member: "gone".into(), // removed from the pool, still finishing
                    stats,
                    busy: None,
                },
                MemberStats {
                    member: "placeholder".into(),
                    stats,
                    busy: None,
                },
            ],
            malformed_lines: 0,
            modjk_messages: 0,
        };
        let pool = [member("b", Active), member("a", Draining)];
        let busy: BTreeMap<String, u32> = [("a".into(), 2), ("gone".into(), 1)].into();
        complete_members(&mut metrics, &pool, |n| n == "placeholder", Some(&busy));
        let got: Vec<_> = metrics
            .members
            .iter()
            .map(|m| (m.member.as_str(), m.stats.requests, m.busy))
            .collect();
        assert_eq!(
            got,
            [("a", 0, Some(2)), ("b", 0, None), ("gone", 3, Some(1))]
        );
        // jkstatus did not answer: busy stays unknown.
        complete_members(&mut metrics, &pool, |_| false, None);
        assert!(metrics.members.iter().all(|m| m.busy.is_none()));
    }
}
