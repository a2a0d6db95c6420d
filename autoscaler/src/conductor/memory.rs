//! The conductor's link to the database and what it holds there: the leases, and what
//! the groups it owns must not forget. The rules that use them are in `ownership`.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::store::{Lease, Store};

/// The conductor's link to the database and what it holds there.
#[derive(Debug)]
pub struct Memory {
    pub store: Store,
    /// `[DEFAULT] host`.
    pub host: String,
    /// `[conductor] lease_time`.
    pub lease_time: Duration,
    /// `[DEFAULT] service_down_time`.
    pub service_down_time: Duration,
    /// The leases held, by group.
    pub leases: BTreeMap<String, Lease>,
    /// Removals pending in the database, by group: finished when their VM is gone.
    pub(super) removals: BTreeMap<String, BTreeSet<String>>,
    /// Removals read from the database that the group could not take yet (its VM not
    /// listed yet), by group.
    pub(super) carried: BTreeMap<String, BTreeSet<String>>,
    /// The last pool generation recorded, by group (written only when it grows).
    pub(super) recorded: BTreeMap<String, u64>,
    /// When the leases were last renewed.
    pub(super) renewed: Option<Instant>,
}

impl Memory {
    pub fn new(store: Store, host: String, lease_time: Duration, down: Duration) -> Memory {
        Memory {
            store,
            host,
            lease_time,
            service_down_time: down,
            leases: BTreeMap::new(),
            removals: BTreeMap::new(),
            carried: BTreeMap::new(),
            recorded: BTreeMap::new(),
            renewed: None,
        }
    }

    /// Whether `group`'s pending removals include `vm`.
    pub(super) fn pending(&self, group: &str, vm: &str) -> bool {
        self.removals.get(group).is_some_and(|r| r.contains(vm))
    }
}
