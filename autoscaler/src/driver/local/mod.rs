//! The `local` cloud driver, the embedded stand-in for Nova: a VM is a process group in its
//! own session on this machine, with its own loopback address from `[local] address_pool`,
//! started from a local image (see [`image`]). Killing the group is a VM crash.
//!
//! # A VM on disk
//!
//! `<state_path>/local/vms/<id>/` is the VM directory (the boot script's working
//! directory): `vm.json` (the [`record`]), `user-data` (the spec's user data),
//! `console.log` (the boot script's standard output and error, appended) and
//! `boot-finished`, created by the boot script when it has booted (as cloud-init's
//! `/var/lib/cloud/instance/boot-finished`). The id is `<name>-<8 hex digits>`, the name
//! reduced to `[A-Za-z0-9._-]`.
//!
//! # Booting
//!
//! The boot script is started as `setsid <images_path>/<image>/boot` (see [`process`] for
//! why), standard input from `/dev/null`, inheriting the driver's environment plus
//! `AUTOSCALER_VM_ID`, `AUTOSCALER_VM_NAME`, `AUTOSCALER_VM_ADDRESS`, `AUTOSCALER_VM_DIR`,
//! `AUTOSCALER_USER_DATA` (the user-data file's path), `AUTOSCALER_AGENT` (the agent
//! executable) and `AUTOSCALER_IMAGE_DIR`. The record is written before the script starts
//! (so a restarted driver knows the address is held) and again with its process group,
//! microseconds later; a driver that dies between the two leaves a VM whose group is
//! unknown: it shows as `ERROR` after a restart, and its processes, if any, must be stopped
//! by hand. The statuses follow the rules of [`status`].
//!
//! # Deleting
//!
//! SIGTERM to the whole process group, up to `[local] delete_grace_period` for it to
//! vanish (polled every 50 ms), then SIGKILL to the group; then the whole VM directory is
//! removed, console log included (Nova keeps nothing of a deleted server either; the fault
//! of a VM in `ERROR` carries its console's last lines), and its address is free again.
//! While a delete runs, `get` and `list` show the VM as `DELETED`; afterwards `get` is
//! `Ok(None)`. Only the recorded process group is ever signalled, never a process by name.
//!
//! # Restarting
//!
//! A driver built on the same `state_path` reads every `vm.json` and reports the same VMs;
//! without the boot process's handle it relies on the group's liveness alone. A VM
//! directory without `vm.json` is what an interrupted boot (before anything started) or
//! delete (after the group died) leaves behind, and is removed.
//!
//! # Several conductors on one local cloud
//!
//! Conductors on one machine may share a `state_path` (and so one local cloud), each with
//! an `[local] address_pool` of its own, disjoint from the others' (two drivers handing out
//! addresses from one pool could give the same one twice). Each listing takes in the VMs
//! the others booted and forgets those they deleted, so a conductor taking a group over
//! sees its VMs.

mod address_pool;
mod image;
mod process;
mod record;
mod status;
mod vm_user;

use std::{
    collections::BTreeMap,
    env, fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;

use self::{
    address_pool::AddressPool,
    process::{BootCommand, BootWatch},
    record::{VmRecord, RECORD_FILE},
    status::{BootProcess, Observation},
    vm_user::VmUser,
};
use super::{CloudDriver, DriverError, Vm, VmId, VmSpec, VmStatus, META_GROUP};
use crate::conf::Config;

/// Console lines a fault quotes.
const FAULT_CONSOLE_LINES: usize = 10;

/// The local driver; see the module documentation.
pub struct LocalDriver {
    /// `<state_path>/local/vms`, absolute.
    vms_dir: PathBuf,
    /// Absolute, so boot scripts can be started from their VM directory.
    images_path: PathBuf,
    agent: PathBuf,
    delete_grace_period: Duration,
    boot_timeout: Duration,
    /// `[local] vm_user` when the conductor is root.
    vm_user: Option<VmUser>,
    /// Held for bookkeeping only, never across an `.await`.
    state: Mutex<State>,
}

struct State {
    vms: BTreeMap<VmId, Entry>,
    pool: AddressPool,
}

struct Entry {
    record: VmRecord,
    /// How the boot process ended; `None` for VMs booted by an earlier driver.
    boot: Option<BootWatch>,
    /// A delete is under way: the VM shows as `DELETED`.
    deleting: bool,
    /// A process of the group last seen alive, checked before scanning `/proc`.
    member_hint: Option<i32>,
}

impl Entry {
    /// A VM known from its record only (booted by an earlier driver, or another
    /// conductor's on the same `state_path`).
    fn recorded(record: VmRecord) -> Entry {
        Entry {
            record,
            boot: None,
            deleting: false,
            member_hint: None,
        }
    }
}

impl LocalDriver {
    /// The driver for `[DEFAULT] state_path` and `[local]`, with the VMs recorded there.
    pub fn from_config(config: &Config) -> Result<Self, DriverError> {
        let local = &config.local;
        let pool = local
            .address_pool_cidr()
            .map_err(|reason| DriverError::InvalidConfig {
                section: "local",
                option: "address_pool",
                value: local.address_pool.clone(),
                reason,
            })?;
        let absolute =
            |path: &Path| std::path::absolute(path).map_err(|e| DriverError::io(path, e));
        let state_path = absolute(&config.default.state_path)?;
        let vms_dir = state_path.join("local").join("vms");
        let vm_user = VmUser::from_config(&local.vm_user)?;
        if let Some(user) = &vm_user {
            user.prepare(&state_path, &vms_dir)?;
        }
        let driver = LocalDriver {
            vms_dir,
            images_path: absolute(&local.images_path)?,
            agent: resolve_agent(local.agent_path.as_deref()),
            delete_grace_period: local.delete_grace_period,
            boot_timeout: local.boot_timeout,
            vm_user,
            state: Mutex::new(State {
                vms: BTreeMap::new(),
                pool: AddressPool::new(pool),
            }),
        };
        driver.load_records()?;
        Ok(driver)
    }

    /// The VMs whose [`META_GROUP`] satisfies `group`, oldest first (ties by id, so the
    /// order is total); VMs without one are never listed.
    fn list_where(&self, group: impl Fn(&str) -> bool) -> Vec<Vm> {
        let mut state = self.lock();
        self.sync_with_disk(&mut state);
        let mut vms: Vec<Vm> = state
            .vms
            .values_mut()
            .filter(|e| e.record.metadata.get(META_GROUP).is_some_and(|g| group(g)))
            .map(|entry| self.report(entry))
            .collect();
        vms.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        vms
    }

    /// Another driver on the same `state_path` (a second conductor: see the module doc)
    /// boots and deletes VMs too: VMs recorded on disk that this driver does not know are
    /// taken in, and those whose directory is gone are forgotten. A directory without a
    /// record is a boot or delete in progress, here or there, and is left alone.
    fn sync_with_disk(&self, state: &mut State) {
        let Ok(dirs) = record::vm_dirs(&self.vms_dir) else {
            return;
        };
        let on_disk: std::collections::BTreeSet<PathBuf> = dirs.into_iter().collect();
        let gone: Vec<VmId> = state
            .vms
            .iter()
            .filter(|(id, e)| !e.deleting && !on_disk.contains(&self.vm_dir(id)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(entry) = state.vms.remove(&id) {
                state.pool.release(entry.record.address);
            }
        }
        for dir in on_disk {
            let known = dir
                .file_name()
                .is_some_and(|n| state.vms.contains_key(&VmId(n.to_string_lossy().into())));
            if known || !dir.join(RECORD_FILE).exists() {
                continue;
            }
            let Ok(record) = VmRecord::read(&dir) else {
                continue; // being written: the next listing reads it
            };
            state.pool.hold(record.address);
            let entry = Entry::recorded(record);
            state.vms.insert(entry.record.id.clone(), entry);
        }
    }

    /// Reads the VMs recorded under `vms_dir` and holds their addresses.
    fn load_records(&self) -> Result<(), DriverError> {
        let mut state = self.lock();
        for dir in record::vm_dirs(&self.vms_dir)? {
            if !dir.join(RECORD_FILE).exists() {
                tracing::warn!(dir = %dir.display(), "removing a VM directory without a record");
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove it");
                }
                continue;
            }
            let mut record = VmRecord::read(&dir)?;
            if record.pgid.is_none() && record.status == VmStatus::Build {
                // The conductor died while starting this VM, before recording its group:
                // the VM wrote it itself.
                if let Some(pgid) = process::recorded_by_the_vm(&dir) {
                    record.pgid = Some(pgid);
                    record.leader_start = process::leader_start_time(pgid);
                    tracing::warn!(vm = %record.id, pgid, "adopted the process group of a VM whose start was interrupted");
                    if let Err(e) = record.write(&dir) {
                        tracing::warn!(vm = %record.id, error = %e, "cannot record the VM's process group");
                    }
                }
            }
            if !state.pool.hold(record.address) {
                tracing::warn!(vm = %record.id, address = %record.address,
                    "two VM records hold the same address");
            }
            let entry = Entry::recorded(record);
            state.vms.insert(entry.record.id.clone(), entry);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the bookkeeping is
        // still consistent enough to go on.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn vm_dir(&self, id: &VmId) -> PathBuf {
        self.vms_dir.join(&id.0)
    }

    /// Looks at the VM again: derives its status, forgets a process group that is gone, and
    /// records what changed.
    fn refresh(&self, entry: &mut Entry) {
        let vm_dir = self.vm_dir(&entry.record.id);
        let record = &mut entry.record;
        let hint = &mut entry.member_hint;
        let group_alive = record
            .pgid
            .is_some_and(|pgid| process::group_alive(pgid, record.leader_start, hint));
        let boot = match &entry.boot {
            None => BootProcess::Unknown,
            Some(watch) => match watch.get() {
                None => BootProcess::Running,
                Some(outcome) => BootProcess::Exited {
                    status: outcome.status.clone(),
                    before_boot_finished: outcome.before_boot_finished,
                },
            },
        };
        let elapsed = (Utc::now() - record.created_at)
            .to_std()
            .unwrap_or(Duration::ZERO);
        let observation = Observation {
            last: record.status,
            boot_finished: vm_dir.join("boot-finished").exists(),
            boot,
            group_alive,
            elapsed,
            boot_timeout: self.boot_timeout,
        };
        let (status, fault) = status::derive(&observation);
        let mut changed = status != record.status;
        record.status = status;
        if let Some(fault) = fault {
            let tail = process::console_tail(&vm_dir.join("console.log"), FAULT_CONSOLE_LINES);
            record.fault = Some(fault.describe(&tail));
            changed = true;
        }
        if !group_alive && record.pgid.is_some() {
            record.pgid = None;
            record.leader_start = None;
            changed = true;
        }
        if changed {
            if let Err(e) = record.write(&vm_dir) {
                tracing::warn!(vm = %record.id, error = %e, "cannot record the VM's status");
            }
        }
    }

    /// The VM as the trait reports it, refreshed unless it is being deleted.
    fn report(&self, entry: &mut Entry) -> Vm {
        if entry.deleting {
            return entry.record.to_vm(VmStatus::Deleted);
        }
        self.refresh(entry);
        entry.record.to_vm(entry.record.status)
    }

    /// The uid every VM process group must have before it is signalled, when VMs run as
    /// `[local] vm_user`.
    fn owner(&self) -> Option<u32> {
        self.vm_user.as_ref().map(|u| u.uid)
    }

    /// Creates a fresh VM directory and returns its id.
    fn create_vm_dir(&self, name: &str) -> Result<VmId, DriverError> {
        fs::create_dir_all(&self.vms_dir).map_err(|e| DriverError::io(&self.vms_dir, e))?;
        let base = id_base(name);
        loop {
            let hex = uuid::Uuid::new_v4().simple().to_string();
            let id = VmId(format!("{base}-{}", &hex[..8]));
            match fs::create_dir(self.vm_dir(&id)) {
                Ok(()) => {
                    // The VM's own directory, its user's alone.
                    if let Some(user) = &self.vm_user {
                        if let Err(e) = user.own(&self.vm_dir(&id), 0o700) {
                            let _ = fs::remove_dir(self.vm_dir(&id));
                            return Err(e);
                        }
                    }
                    return Ok(id);
                }
                // 2^32 suffixes per name: a collision is rare, another draw fixes it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(DriverError::io(&self.vm_dir(&id), e)),
            }
        }
    }

    /// Starts the VM whose directory and address are reserved; on error the caller
    /// undoes the reservation.
    async fn start(
        &self,
        spec: VmSpec,
        id: &VmId,
        address: Ipv4Addr,
        boot_script: &Path,
    ) -> Result<Entry, DriverError> {
        let vm_dir = self.vm_dir(id);
        let user_data = vm_dir.join("user-data");
        // 0600: user data carries the broker password (as Nova shows it to admins only).
        {
            use std::{io::Write, os::unix::fs::OpenOptionsExt};
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&user_data)
                .map_err(|e| DriverError::io(&user_data, e))?;
            file.write_all(spec.user_data.as_bytes())
                .map_err(|e| DriverError::io(&user_data, e))?;
        }
        if let Some(user) = &self.vm_user {
            user.own(&user_data, 0o600)?;
        }
        let mut record = VmRecord {
            id: id.clone(),
            name: spec.name,
            image: spec.image,
            address,
            pgid: None,
            leader_start: None,
            metadata: spec.metadata,
            created_at: Utc::now(),
            status: VmStatus::Build,
            fault: None,
        };
        record.write(&vm_dir)?;
        let image_dir = boot_script.parent().unwrap_or(&self.images_path);
        let path_text = |p: &Path| p.display().to_string();
        let spawned = process::spawn_boot(BootCommand {
            boot_script,
            vm_dir: &vm_dir,
            console_log: &vm_dir.join("console.log"),
            boot_finished: vm_dir.join("boot-finished"),
            env: vec![
                ("AUTOSCALER_VM_ID", id.0.clone()),
                ("AUTOSCALER_VM_NAME", record.name.clone()),
                ("AUTOSCALER_VM_ADDRESS", address.to_string()),
                ("AUTOSCALER_VM_DIR", path_text(&vm_dir)),
                ("AUTOSCALER_USER_DATA", path_text(&user_data)),
                ("AUTOSCALER_AGENT", path_text(&self.agent)),
                ("AUTOSCALER_IMAGE_DIR", path_text(image_dir)),
            ],
            run_as: self.vm_user.as_ref().map(|u| (u.uid, u.gid)),
        })
        .await?;
        record.pgid = Some(spawned.pgid);
        record.leader_start = spawned.leader_start;
        if let Err(e) = record.write(&vm_dir) {
            // Unrecorded, the VM would be lost on restart: stop it now.
            let _ = process::terminate_group(
                spawned.pgid,
                spawned.leader_start,
                self.owner(),
                Duration::ZERO,
            )
            .await;
            return Err(e);
        }
        Ok(Entry {
            record,
            boot: Some(spawned.watch),
            deleting: false,
            member_hint: None,
        })
    }
}

#[async_trait]
impl CloudDriver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn boot(&self, spec: VmSpec) -> Result<Vm, DriverError> {
        if spec.name.trim().is_empty() {
            return Err(DriverError::InvalidSpec {
                reason: "the name is empty".to_owned(),
            });
        }
        if spec.metadata.get(META_GROUP).is_none_or(|g| g.is_empty()) {
            return Err(DriverError::InvalidSpec {
                reason: format!("the metadata has no {META_GROUP:?} key naming the VM's group"),
            });
        }
        let boot_script = image::boot_script(&self.images_path, &spec.image)?;
        let address = {
            let mut state = self.lock();
            let pool = &mut state.pool;
            pool.allocate().ok_or_else(|| DriverError::PoolExhausted {
                pool: pool.cidr().to_string(),
                usable: pool.usable(),
            })?
        };
        let id = match self.create_vm_dir(&spec.name) {
            Ok(id) => id,
            Err(e) => {
                self.lock().pool.release(address);
                return Err(e);
            }
        };
        match self.start(spec, &id, address, &boot_script).await {
            Ok(entry) => {
                let vm = entry.record.to_vm(VmStatus::Build);
                self.lock().vms.insert(id, entry);
                Ok(vm)
            }
            Err(e) => {
                if let Err(rm) = fs::remove_dir_all(self.vm_dir(&id)) {
                    tracing::warn!(vm = %id, error = %rm, "cannot remove a failed VM's directory");
                }
                self.lock().pool.release(address);
                Err(e)
            }
        }
    }

    async fn get(&self, id: &VmId) -> Result<Option<Vm>, DriverError> {
        let mut state = self.lock();
        Ok(state.vms.get_mut(id).map(|entry| self.report(entry)))
    }

    async fn list(&self, group: &str) -> Result<Vec<Vm>, DriverError> {
        Ok(self.list_where(|g| g == group))
    }

    async fn list_all(&self) -> Result<Vec<Vm>, DriverError> {
        Ok(self.list_where(|_| true))
    }

    async fn delete(&self, id: &VmId) -> Result<(), DriverError> {
        // Claim the delete; a concurrent delete of the same VM waits for this one.
        let (pgid, leader_start) = loop {
            {
                let mut state = self.lock();
                match state.vms.get_mut(id) {
                    None => return Ok(()),
                    Some(entry) if !entry.deleting => {
                        entry.deleting = true;
                        break (entry.record.pgid, entry.record.leader_start);
                    }
                    Some(_) => {}
                }
            }
            tokio::time::sleep(process::POLL).await;
        };
        if let Some(pgid) = pgid {
            if process::terminate_group(pgid, leader_start, self.owner(), self.delete_grace_period)
                .await
                .is_err()
            {
                if let Some(entry) = self.lock().vms.get_mut(id) {
                    entry.deleting = false;
                }
                return Err(DriverError::StillRunning {
                    id: id.clone(),
                    pgid,
                });
            }
        }
        let mut state = self.lock();
        let Some(entry) = state.vms.get_mut(id) else {
            return Ok(());
        };
        // The group is gone: its id must never be signalled again.
        entry.record.pgid = None;
        let vm_dir = self.vm_dir(id);
        // The record first: without it, what is left of the directory is known debris.
        let record_path = vm_dir.join(RECORD_FILE);
        let removed = remove_file_if_exists(&record_path)
            .map_err(|e| DriverError::io(&record_path, e))
            .and_then(|()| {
                remove_dir_all_if_exists(&vm_dir).map_err(|e| DriverError::io(&vm_dir, e))
            });
        if let Err(e) = removed {
            entry.deleting = false;
            return Err(e);
        }
        let address = entry.record.address;
        state.vms.remove(id);
        state.pool.release(address);
        Ok(())
    }
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_dir_all_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The first part of a VM id: the name reduced to `[A-Za-z0-9._-]`, at most 32 characters,
/// not starting with `.` or `-`; `vm` when nothing is left.
fn id_base(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(32)
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', '-']);
    match trimmed.is_empty() {
        true => "vm".to_owned(),
        false => trimmed.to_owned(),
    }
}

/// The agent executable: `[local] agent_path` if set, else `autoscaler-agent` next to the
/// running executable, else the first in `PATH`, else the bare name (the boot script's
/// console then says it was not found).
fn resolve_agent(configured: Option<&Path>) -> PathBuf {
    const NAME: &str = "autoscaler-agent";
    if let Some(path) = configured {
        return std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    }
    let beside_us = env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(NAME)))
        .filter(|p| p.is_file());
    let in_path = || {
        env::var_os("PATH").and_then(|paths| {
            env::split_paths(&paths)
                .map(|dir| dir.join(NAME))
                .find(|p| p.is_file())
        })
    };
    beside_us
        .or_else(in_path)
        .unwrap_or_else(|| PathBuf::from(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_base_is_a_safe_directory_name() {
        assert_eq!(id_base("shop-web-3"), "shop-web-3");
        assert_eq!(id_base("a b/c"), "a-b-c");
        assert_eq!(id_base("../etc"), "etc");
        assert_eq!(id_base(".."), "vm");
        assert_eq!(id_base(""), "vm");
        assert_eq!(id_base("é"), "vm");
        assert_eq!(id_base(&"x".repeat(100)).len(), 32);
    }

    #[test]
    fn configured_agent_path_wins() {
        assert_eq!(
            resolve_agent(Some(Path::new("/opt/bin/autoscaler-agent"))),
            PathBuf::from("/opt/bin/autoscaler-agent")
        );
        assert!(resolve_agent(None).ends_with("autoscaler-agent"));
    }

    #[test]
    fn a_bad_address_pool_names_the_option() {
        let mut config = Config::default();
        config.local.address_pool = "10.0.0.0/24".into();
        let err = LocalDriver::from_config(&config).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "[local] address_pool = \"10.0.0.0/24\": {} (it is not inside 127.0.0.0/8)",
                crate::conf::CidrV4::EXPECTED
            )
        );
    }
}
