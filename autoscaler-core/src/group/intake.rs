//! What the splitter's agent reports between ticks: its metrics and its answers to pool
//! updates (admitted first by [`super::admit`]), and the facts about them the conductor
//! reads back.

use chrono::{DateTime, Utc};

use super::{Action, Group};
use crate::{
    cloud::VmId,
    notification::{Notification, PoolRejected},
    payload::Metrics,
    pool::{PoolAck, PoolOutcome},
};

/// Metrics kept between two ticks; more means the loop is far behind, and the oldest are
/// worthless by then.
const FRESH_METRICS_MAX: usize = 30;

impl Group {
    /// The splitter's per-second metrics: the busy counts the drains read, and the
    /// observations for the policy's next tick.
    pub fn metrics(&mut self, metrics: Metrics) {
        self.reports.busy = metrics
            .members
            .iter()
            .filter_map(|m| Some((m.member.clone(), m.busy?)))
            .collect();
        if self.reports.fresh.len() >= FRESH_METRICS_MAX {
            self.reports.fresh.remove(0);
        }
        self.reports.fresh.push(metrics.clone());
        self.reports.last = Some(metrics);
    }

    /// Until when boots are held back after failures, if they are.
    pub fn boots_held_until(&self) -> Option<DateTime<Utc>> {
        self.backoff.held_until()
    }

    /// The splitter the pool is sent for (its agent's name), once one was heard: pool
    /// updates are signed with its key.
    pub fn pool_splitter(&self) -> Option<&str> {
        self.pool.splitter.as_deref()
    }

    /// The splitter's last metrics.
    pub fn last_metrics(&self) -> Option<&Metrics> {
        self.reports.last.as_ref()
    }

    /// The splitter's answer to a pool update.
    pub fn pool_ack(&mut self, ack: &PoolAck) -> Vec<Action> {
        match &ack.outcome {
            PoolOutcome::Applied => {
                let pool = &mut self.pool;
                if let Some(&(_, active)) = pool.sent.iter().find(|(g, _)| *g == ack.generation) {
                    pool.applied_serving = Some(active);
                    pool.sent.retain(|(g, _)| *g > ack.generation);
                }
                pool.acked = pool.acked.max(ack.generation);
                Vec::new()
            }
            PoolOutcome::Rejected { reason } => {
                vec![Action::Notify(Notification::PoolRejected(PoolRejected {
                    template: self.name().to_owned(),
                    splitter: ack.vm_id.clone(),
                    generation: ack.generation,
                    reason: reason.clone(),
                }))]
            }
        }
    }

    /// The name of VM `id`, as the cloud last showed it.
    pub fn vm_name(&self, id: &VmId) -> Option<&str> {
        self.last_seen
            .vms
            .iter()
            .find(|vm| &vm.id == id)
            .map(|vm| vm.name.as_str())
    }

    /// Whether the group has stepped once (seen the cloud's listing of its VMs).
    pub fn has_listed(&self) -> bool {
        self.last_now.is_some()
    }

    /// An earlier owner of the group last sent pool `generation`: every pool this group
    /// sends from now on is newer (the splitter ignores older ones).
    pub fn resume_pool_after(&mut self, generation: u64) {
        self.pool.floor = self.pool.floor.max(generation);
    }
}
