//! A cloud that keeps its VMs in memory and boots nothing, for benchmarks of the conductor
//! at a size no machine could boot (`autoscaler-sim ha-bench`: 1,000 sites, 11,000 VMs).
//! A VM is a record: `boot` answers `BUILD` and the VM is `ACTIVE` from then on, with an
//! address of 10.0.0.0/8 of its own; `delete` forgets it at once. Nothing runs, so its
//! agent must be simulated by whoever booted it.
//!
//! Not a `[compute] driver` choice: [`super::from_config`] never builds it; a caller that
//! wants it hands it to [`crate::conductor::service::run_with_driver`] itself. Conductors
//! that share one `MemoryDriver` (one process, several tokio runtimes) see one cloud.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
};

use async_trait::async_trait;
use chrono::Utc;

use super::{CloudDriver, DriverError, Vm, VmId, VmSpec, VmStatus, META_GROUP};

/// The in-memory cloud. Listing a group costs a look-up and a copy of its VMs.
#[derive(Debug, Default)]
pub struct MemoryDriver {
    cloud: Mutex<Cloud>,
    /// Listings answered (`list` calls).
    listings: AtomicU64,
}

#[derive(Debug, Default)]
struct Cloud {
    /// Each group's VMs, oldest first.
    groups: HashMap<String, Vec<Vm>>,
    /// Which group each VM is in.
    group_of: HashMap<VmId, String>,
    /// VMs booted so far: the next id and address.
    booted: u32,
}

impl MemoryDriver {
    pub fn new() -> MemoryDriver {
        MemoryDriver::default()
    }

    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        // A panic while the lock was held cannot leave a half-made record: every change
        // is one insert or one removal.
        self.cloud.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every VM of every group, in no particular order.
    pub fn snapshot(&self) -> Vec<Vm> {
        self.cloud().groups.values().flatten().cloned().collect()
    }

    /// How many VMs the cloud holds.
    pub fn len(&self) -> usize {
        self.cloud().group_of.len()
    }

    /// How many group listings (`list` calls) the cloud has answered.
    pub fn listings(&self) -> u64 {
        self.listings.load(Ordering::Relaxed)
    }

    /// Whether the cloud holds no VM.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CloudDriver for MemoryDriver {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn boot(&self, spec: VmSpec) -> Result<Vm, DriverError> {
        let Some(group) = spec.metadata.get(META_GROUP).cloned() else {
            return Err(DriverError::InvalidSpec {
                reason: format!("metadata has no {META_GROUP}"),
            });
        };
        let mut cloud = self.cloud();
        cloud.booted = cloud
            .booted
            .checked_add(1)
            .ok_or(DriverError::PoolExhausted {
                pool: "10.0.0.0/8".into(),
                usable: u32::MAX as usize,
            })?;
        let n = cloud.booted;
        // 10.0.0.1 onwards; past 2^24 VMs the addresses wrap, far beyond any benchmark.
        let address = Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff));
        let vm = Vm {
            id: VmId(format!("mem-{n:08x}")),
            name: spec.name,
            image: spec.image,
            status: VmStatus::Active,
            address: Some(IpAddr::V4(address)),
            metadata: spec.metadata,
            created_at: Utc::now(),
            fault: None,
        };
        cloud.group_of.insert(vm.id.clone(), group.clone());
        cloud.groups.entry(group).or_default().push(vm.clone());
        Ok(Vm {
            status: VmStatus::Build,
            ..vm
        })
    }

    async fn get(&self, id: &VmId) -> Result<Option<Vm>, DriverError> {
        let cloud = self.cloud();
        let vm = cloud
            .group_of
            .get(id)
            .and_then(|g| cloud.groups.get(g))
            .and_then(|vms| vms.iter().find(|vm| &vm.id == id));
        Ok(vm.cloned())
    }

    async fn list(&self, group: &str) -> Result<Vec<Vm>, DriverError> {
        self.listings.fetch_add(1, Ordering::Relaxed);
        Ok(self.cloud().groups.get(group).cloned().unwrap_or_default())
    }

    async fn list_all(&self) -> Result<Vec<Vm>, DriverError> {
        let mut all = self.snapshot();
        all.sort_by_key(|vm| vm.created_at);
        Ok(all)
    }

    async fn delete(&self, id: &VmId) -> Result<(), DriverError> {
        let mut cloud = self.cloud();
        if let Some(group) = cloud.group_of.remove(id) {
            if let Some(vms) = cloud.groups.get_mut(&group) {
                vms.retain(|vm| &vm.id != id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(group: &str, name: &str) -> VmSpec {
        VmSpec {
            name: name.into(),
            image: "web".into(),
            metadata: BTreeMap::from([(META_GROUP.to_owned(), group.to_owned())]),
            ..VmSpec::default()
        }
    }

    #[tokio::test]
    async fn boots_lists_and_deletes_without_running_anything() {
        let cloud = MemoryDriver::new();
        let a = cloud.boot(spec("shop", "shop-web-1")).await.unwrap();
        assert_eq!(a.status, VmStatus::Build);
        let b = cloud.boot(spec("shop", "shop-web-2")).await.unwrap();
        cloud.boot(spec("blog", "blog-web-1")).await.unwrap();
        assert_ne!(a.address, b.address);
        let shop = cloud.list("shop").await.unwrap();
        let names: Vec<_> = shop.iter().map(|vm| vm.name.as_str()).collect();
        assert_eq!(names, ["shop-web-1", "shop-web-2"], "oldest first");
        assert!(shop.iter().all(|vm| vm.status == VmStatus::Active));
        assert_eq!(cloud.list_all().await.unwrap().len(), 3);
        cloud.delete(&a.id).await.unwrap();
        cloud.delete(&a.id).await.unwrap();
        assert_eq!(cloud.get(&a.id).await.unwrap(), None);
        assert_eq!(cloud.get(&b.id).await.unwrap().unwrap().name, "shop-web-2");
        assert_eq!(cloud.list("shop").await.unwrap().len(), 1);
        assert_eq!(cloud.len(), 2);
        assert_eq!(cloud.listings(), 3);
    }

    #[tokio::test]
    async fn a_spec_without_a_group_is_refused() {
        let mut no_group = spec("shop", "x");
        no_group.metadata.clear();
        let err = MemoryDriver::new().boot(no_group).await.unwrap_err();
        assert!(matches!(err, DriverError::InvalidSpec { .. }), "{err}");
    }
}
