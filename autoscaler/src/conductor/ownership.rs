//! The conductor's memory in the database and its share of the groups: its service
//! record, the leases it holds, and what the groups it owns must not forget (pending VM
//! removals, the last pool generation). See doc/ha.md.
//!
//! At every pass of the loop ([`Conductor::refresh`]) the conductor reports itself,
//! renews all its leases in one statement, and reads the template names and the lease
//! rows; it takes a group when the rendezvous plan over the live conductors gives it the
//! group, or when nobody holds it (a dead owner's lease expired); it hands a group over
//! (releases it) when the plan gives it to another conductor that is reporting; it stops
//! steering a group whose lease it lost. Statements per pass: 6 when nothing changes;
//! a write otherwise only when a decision changes (a lease taken or given, a pool sent, a
//! removal asked or done).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use tracing::{info, warn};

use super::{api::TemplateRecord, group::Group, handler::Conductor};
use crate::store::{spread, StoreError};
use autoscaler_core::notification::Notification;

/// What one pass read from the database.
struct Survey {
    names: Vec<(String, bool)>,
    /// Group -> (owner, whether its lease is unexpired).
    holders: BTreeMap<String, (Option<String>, bool)>,
    /// Conductors up by `service_down_time`, and those reporting within half a lease.
    live: Vec<String>,
    fresh: BTreeSet<String>,
}

impl Conductor {
    /// One pass over the database (see the module doc). A database that cannot be reached
    /// is logged; once the leases may have lapsed (half the lease time without renewal)
    /// the groups are no longer steered.
    pub async fn refresh(&mut self) {
        if let Err(error) = self.refresh_leases().await {
            warn!(%error, "cannot renew the group leases in the database");
            let lapsed = self
                .memory
                .renewed
                .is_none_or(|t| t.elapsed() >= self.memory.lease_time / 2);
            if lapsed && !self.groups.is_empty() {
                warn!("the leases may have lapsed: no group is steered until the database answers");
                for name in self.memory.leases.keys().cloned().collect::<Vec<_>>() {
                    self.drop_group(&name);
                }
            }
            return;
        }
        let survey = match self.survey().await {
            Ok(s) => s,
            Err(error) => return warn!(%error, "cannot read the groups from the database"),
        };
        self.rebalance(&survey).await;
        self.carry_removals().await;
    }

    /// Reports this conductor and renews its leases; drops the groups it lost.
    async fn refresh_leases(&mut self) -> Result<(), StoreError> {
        let m = &self.memory;
        m.store.report_service(&m.host).await?;
        let held = m.store.renew_owned(&m.host, m.lease_time).await?;
        self.memory.renewed = Some(Instant::now());
        let lost: Vec<String> = self
            .memory
            .leases
            .iter()
            .filter(|(_, lease)| !held.contains(lease))
            .map(|(name, _)| name.clone())
            .collect();
        for name in lost {
            warn!(template = %name, "lost the group's lease to another conductor: no longer steered here");
            self.drop_group(&name);
        }
        Ok(())
    }

    async fn survey(&self) -> Result<Survey, StoreError> {
        let store = &self.memory.store;
        let names = store.template_names().await?;
        let holders = store
            .leases()
            .await?
            .into_iter()
            .map(|l| (l.group, (l.owner, !l.expires_in.is_zero())))
            .collect();
        let services = store.services(self.memory.service_down_time).await?;
        let fresh = services
            .iter()
            .filter(|s| s.up && s.age <= self.memory.lease_time / 2)
            .map(|s| s.host.clone())
            .collect();
        let live = services
            .into_iter()
            .filter(|s| s.up)
            .map(|s| s.host)
            .collect();
        Ok(Survey {
            names,
            holders,
            live,
            fresh,
        })
    }

    /// Takes the groups the plan gives this conductor (and any nobody holds), hands over
    /// those the plan gives to another reporting conductor, and starts the tear-down of
    /// owned groups an operator destroyed through another conductor.
    async fn rebalance(&mut self, survey: &Survey) {
        let me = self.memory.host.clone();
        for (name, destroying) in &survey.names {
            let planned = spread::owner(name, &survey.live).unwrap_or(&me);
            let owned = self.groups.contains_key(name);
            if owned {
                if *destroying {
                    self.mark_destroying(name);
                }
                if planned != me && survey.fresh.contains(planned) {
                    self.hand_over(name, planned).await;
                }
                continue;
            }
            let (holder, unexpired) = survey.holders.get(name).cloned().unwrap_or((None, false));
            let free = holder.is_none() || !unexpired || holder.as_deref() == Some(&me);
            if free && (planned == me || !unexpired) {
                if let Err(error) = self.take(name).await {
                    match error {
                        StoreError::Held { .. } => {}
                        error => warn!(%error, template = %name, "cannot take the group"),
                    }
                }
            }
        }
        // Groups whose template is gone from the database (removed elsewhere).
        let known: BTreeSet<&str> = survey.names.iter().map(|(n, _)| n.as_str()).collect();
        let orphans: Vec<String> = self
            .groups
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .cloned()
            .collect();
        for name in orphans {
            self.drop_group(&name);
        }
    }

    /// Takes `name`'s lease and starts steering it: its template, pending removals and
    /// last pool generation from the database. Its VMs are adopted from the cloud at the
    /// group's first tick (the policy counts what exists: no duplicate boot).
    pub(super) async fn take(&mut self, name: &str) -> Result<(), StoreError> {
        let m = &self.memory;
        let Some(record) = m.store.template(name).await? else {
            return Ok(());
        };
        let lease = m.store.acquire(name, &m.host, m.lease_time).await?;
        let removals: BTreeSet<String> = m
            .store
            .removals(name)
            .await?
            .into_iter()
            .map(|r| r.vm)
            .collect();
        let generation = m.store.pool_generation(name).await?.unwrap_or(0);
        let mut group = Group::new(record.template.clone(), record.destroying, self.settings);
        group.resume_pool_after(generation);
        info!(template = %name, generation = lease.generation, removals = removals.len(), "took the group");
        self.memory.leases.insert(name.to_owned(), lease);
        self.memory.recorded.insert(name.to_owned(), generation);
        self.memory
            .carried
            .insert(name.to_owned(), removals.clone());
        self.memory.removals.insert(name.to_owned(), removals);
        self.groups.insert(name.to_owned(), group);
        self.templates.insert(name.to_owned(), record);
        Ok(())
    }

    /// Gives `name` to `to` (the plan's owner): released now, taken there at its next pass.
    async fn hand_over(&mut self, name: &str, to: &str) {
        let Some(lease) = self.memory.leases.get(name).cloned() else {
            return;
        };
        match self.memory.store.release(&lease).await {
            Ok(()) => info!(template = %name, to, "handed the group over"),
            Err(error) => warn!(%error, template = %name, "cannot release the group"),
        }
        self.drop_group(name);
    }

    /// Releases every lease held (a clean stop): the other conductors take the groups at
    /// their next pass instead of waiting for the leases to expire.
    pub async fn release_all(&mut self) {
        for lease in std::mem::take(&mut self.memory.leases).into_values() {
            if let Err(error) = self.memory.store.release(&lease).await {
                warn!(%error, template = %lease.group, "cannot release the group");
            }
        }
    }

    /// Stops steering `name` here (its VMs stay; whoever owns the group next adopts them).
    fn drop_group(&mut self, name: &str) {
        self.groups.remove(name);
        self.sequences.forget_group(name);
        self.vms.forget_group(name);
        self.templates.remove(name);
        self.memory.leases.remove(name);
        self.memory.removals.remove(name);
        self.memory.carried.remove(name);
        self.memory.recorded.remove(name);
    }

    fn mark_destroying(&mut self, name: &str) {
        if let Some(group) = self.groups.get_mut(name) {
            group.destroy();
        }
        if let Some(record) = self.templates.get_mut(name) {
            record.destroying = true;
        }
    }

    /// Hands the group the removals carried from the database once it lists their VM;
    /// one that its group does not have once it has listed the cloud is done (the VM is
    /// gone).
    async fn carry_removals(&mut self) {
        let now = chrono::Utc::now();
        let carried = std::mem::take(&mut self.memory.carried);
        let mut gone = Vec::new();
        for (name, vms) in carried {
            let Some(group) = self.groups.get_mut(&name) else {
                continue;
            };
            let mut left = BTreeSet::new();
            for vm in vms {
                match group.remove_vm(&vm, now) {
                    Ok(_) => info!(template = %name, %vm, "carrying on a VM removal"),
                    Err(super::group::RemoveError::NotFound { .. }) if group.has_listed() => {
                        gone.push((name.clone(), vm));
                    }
                    Err(_) => {
                        left.insert(vm);
                    }
                }
            }
            if !left.is_empty() {
                self.memory.carried.insert(name, left);
            }
        }
        for (name, vm) in gone {
            self.vm_gone(&name, &vm).await;
        }
    }

    /// A VM of `group` was recorded for removal in the database by this conductor.
    pub(super) async fn record_removal(&mut self, group: &str, vm: &str) {
        match self.memory.store.request_removal(group, vm).await {
            Ok(_) => {
                let removals = self.memory.removals.entry(group.to_owned()).or_default();
                removals.insert(vm.to_owned());
            }
            Err(error) => {
                warn!(%error, template = group, vm, "VM removal not recorded in the database: a conductor taking the group over will not carry it on")
            }
        }
    }

    /// VM `vm` of `group` is gone: a pending removal of it is done.
    pub async fn vm_gone(&mut self, group: &str, vm: &str) {
        if !self.memory.pending(group, vm) {
            return;
        }
        let Some(lease) = self.memory.leases.get(group).cloned() else {
            return;
        };
        match self.memory.store.finish_removal(&lease, vm).await {
            Ok(_) => {
                if let Some(r) = self.memory.removals.get_mut(group) {
                    r.remove(vm);
                }
            }
            Err(error) => self.store_failed(group, error),
        }
    }

    /// The group sent pool `generation`: recorded when newer than the last recorded.
    pub async fn pool_sent(&mut self, group: &str, generation: u64) {
        if self
            .memory
            .recorded
            .get(group)
            .is_some_and(|g| *g >= generation)
        {
            return;
        }
        let Some(lease) = self.memory.leases.get(group).cloned() else {
            return;
        };
        match self
            .memory
            .store
            .set_pool_generation(&lease, generation)
            .await
        {
            Ok(_) => {
                self.memory.recorded.insert(group.to_owned(), generation);
            }
            Err(error) => self.store_failed(group, error),
        }
    }

    /// A fenced write failed: a group taken over is dropped at once; other errors are
    /// logged (the next change writes again).
    fn store_failed(&mut self, group: &str, error: StoreError) {
        warn!(%error, template = group, "database write failed");
        if matches!(error, StoreError::Fenced { .. }) {
            self.drop_group(group);
        }
    }

    /// The group of `name` is gone: the template is removed from the database (fenced),
    /// the lease released, and the end notified.
    pub async fn forget(&mut self, name: &str) -> Vec<Notification> {
        let Some(lease) = self.memory.leases.get(name).cloned() else {
            self.drop_group(name);
            return vec![];
        };
        let removed = self.memory.store.remove_template(&lease).await;
        let _ = self.memory.store.release(&lease).await;
        self.drop_group(name);
        match removed {
            Ok(Some(record)) => vec![Notification::TemplateDestroyed(record)],
            Ok(None) => vec![],
            Err(error) => {
                tracing::error!(%error, template = name, "could not forget the template");
                vec![]
            }
        }
    }

    /// Instantiates `record`: written to the database (names are unique there), then taken
    /// by this conductor. `Err` carries the database's refusal.
    pub(super) async fn add_template(&mut self, record: &TemplateRecord) -> Result<(), StoreError> {
        self.memory.store.insert_template(record).await?;
        let name = record.template.name();
        if let Err(error) = self.take(name).await {
            warn!(%error, template = name, "template recorded; another conductor will steer it");
        }
        Ok(())
    }
}
