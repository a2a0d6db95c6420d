//! Who may speak for a group (issue 17): a heartbeat only from a VM the cloud lists in
//! the group with the role it claims; metrics and pool acknowledgements only from the
//! group's splitter; an acknowledgement only of a generation the conductor sent. The
//! conductor checks these before it stores anything, so nothing a VM says can grow its
//! state or speak for another VM's group.

use super::Group;
use crate::{payload::Role, pool::PoolAck};

/// Why a message about a group was not taken in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no VM named {vm:?} with role {role} in the cloud's listing of the group")]
    NotListed { vm: String, role: Role },
    #[error("{vm:?} is not the group's splitter")]
    NotSplitter { vm: String },
    #[error("generation {claimed} was never sent (the newest is {sent})")]
    FutureGeneration { claimed: u64, sent: u64 },
}

impl Group {
    /// Whether the cloud's last listing of this group has a VM named `vm`.
    pub fn lists(&self, vm: &str) -> bool {
        self.last_seen.vms.iter().any(|v| v.name == vm)
    }

    /// Admits what VM `vm` says of itself in role `role`: the cloud's last listing of
    /// this group has it, with that role.
    pub fn admits(&self, vm: &str, role: Role) -> Result<(), Refusal> {
        let listed = self
            .last_seen
            .vms
            .iter()
            .any(|v| v.name == vm && v.role() == Some(role));
        listed.then_some(()).ok_or_else(|| Refusal::NotListed {
            vm: vm.to_owned(),
            role,
        })
    }

    /// Admits what only the group's splitter may say (metrics, pool acknowledgements).
    pub fn admits_splitter(&self, vm: &str) -> Result<(), Refusal> {
        self.admits(vm, Role::Splitter)
            .map_err(|_| Refusal::NotSplitter { vm: vm.to_owned() })
    }

    /// Admits a pool acknowledgement: from the splitter, of a generation already sent
    /// (an acknowledgement of 2^64-1 would otherwise mark every later pool applied).
    pub fn admits_ack(&self, ack: &PoolAck) -> Result<(), Refusal> {
        self.admits_splitter(&ack.vm_id)?;
        if ack.generation > self.pool.generation {
            return Err(Refusal::FutureGeneration {
                claimed: ack.generation,
                sent: self.pool.generation,
            });
        }
        Ok(())
    }
}
