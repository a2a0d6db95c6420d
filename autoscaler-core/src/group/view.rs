//! A group as the operator sees it (`template show`, `vm list`): where it is in its life
//! ([`Phase`]) and its VMs ([`VmState`]). Wire types of the conductor's RPC API,
//! re-exported by `autoscaler::conductor::api`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Group;
use crate::{cloud::VmStatus, payload::Role, pool::member_name};

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

impl Phase {
    /// Starting or Ready: the group keeps its site (boots, pool, policy).
    pub fn is_live(self) -> bool {
        matches!(self, Phase::Starting | Phase::Ready)
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

impl Group {
    /// The group as `template show` reports it, from the last observation.
    pub fn view(&self, now: DateTime<Utc>) -> GroupView {
        let obs = &self.last_seen;
        let in_pool: BTreeSet<&str> = self.pool.members.iter().map(|m| m.name.as_str()).collect();
        let vms = obs
            .vms
            .iter()
            .map(|vm| {
                let member = member_name(&vm.name);
                VmState {
                    id: vm.id.0.clone(),
                    name: vm.name.clone(),
                    role: vm.role(),
                    status: vm.status,
                    address: super::address_of(vm, obs).map(|a| a.to_string()),
                    heartbeat_age: obs
                        .heartbeats
                        .get(&vm.name)
                        .map(|h| (now - h.last).num_milliseconds().max(0) as f64 / 1000.0),
                    in_pool: in_pool.contains(member.as_str()),
                    busy: self.reports.busy.get(&member).copied(),
                }
            })
            .collect();
        GroupView {
            phase: self.phase,
            url: super::url(obs),
            pool_generation: self.pool.generation,
            acked_generation: self.pool.acked,
            vms,
        }
    }
}
