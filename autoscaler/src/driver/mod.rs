//! The cloud driver contract: the one trait through which the conductor boots, finds and
//! deletes VMs ([`CloudDriver`]), its vocabulary ([`VmId`], [`VmStatus`], [`VmSpec`],
//! [`Vm`], [`DriverError`]), and the only function that maps `[compute] driver` to a
//! driver ([`from_config`]). Modelled on Nova's virt driver contract (`nova/virt/driver.py`).
//!
//! # Vocabulary
//!
//! - A **VM id** ([`VmId`]) is an opaque string chosen by the driver at boot. It is unique
//!   among the VMs of one driver (a deleted VM's id is never given to another VM) and stable
//!   across conductor restarts: a driver built again on the same cloud reports the same VM
//!   under the same id. Callers never parse it.
//! - **Statuses** are Nova's words ([`VmStatus`]): `BUILD` while booting, `ACTIVE` once the
//!   VM has booted and runs, `ERROR` when booting failed (the VM's `fault` says why; the VM
//!   stays until it is deleted, as in Nova), `SHUTOFF` when an `ACTIVE` VM stopped on its own
//!   (a crash), `DELETED` while a delete is under way. `ERROR` and `SHUTOFF` are final: only
//!   a delete follows them.
//! - **Groups**: every VM the autoscaler boots carries the metadata keys [`META_GROUP`],
//!   [`META_ROLE`] and [`META_TEMPLATE`]; the cloud, not the conductor, is the source of
//!   truth for which VMs a group has, so a restarted conductor rebuilds its state from
//!   [`CloudDriver::list_all`] (which groups exist, and their VMs) and
//!   [`CloudDriver::list`]. A VM without [`META_GROUP`] is not the autoscaler's: no call
//!   reports it.
//!
//! # Calls
//!
//! - [`boot`](CloudDriver::boot) returns at once with the VM in `BUILD`; the caller polls
//!   [`get`](CloudDriver::get) to see it reach `ACTIVE` or `ERROR`. It is **not**
//!   idempotent: each call boots a new VM. A spec whose metadata lacks [`META_GROUP`] is
//!   refused ([`DriverError::InvalidSpec`]) so that no VM can escape [`CloudDriver::list`].
//! - [`get`](CloudDriver::get) of an id the driver does not know (never booted, or deleted)
//!   is `Ok(None)`, as Nova answers 404 after a deletion.
//! - [`list`](CloudDriver::list) returns the VMs whose metadata names the group, including
//!   those in `ERROR`, `SHUTOFF` or being deleted (`DELETED`), oldest first.
//! - [`list_all`](CloudDriver::list_all) is `list` over every group at once: each VM
//!   whose metadata has [`META_GROUP`], whatever the group, by the same rules. A VM whose
//!   delete has returned is in neither.
//! - [`delete`](CloudDriver::delete) returns once the VM is gone, so its address and quota
//!   are free again. It is **idempotent**: deleting a missing or already deleted VM is
//!   `Ok(())`, and a delete that failed may be repeated.
//!
//! # Errors
//!
//! [`DriverError::is_retryable`] says whether the same call may succeed later without
//! anyone changing the configuration, the spec or the images (an exhausted address pool
//! frees up when a VM is deleted; a process group that has not died yet may die). The
//! conductor retries those with backoff and reports the others.

mod local;
mod memory;
pub mod nova;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::conf::{ComputeDriver, Config};

pub use autoscaler_core::cloud::{Vm, VmId, VmStatus, META_GROUP, META_ROLE, META_TEMPLATE};

pub use local::LocalDriver;
pub use memory::MemoryDriver;
pub use nova::NovaDriver;

/// What to boot: Nova's server-create request, reduced to what the autoscaler uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VmSpec {
    /// A display name; need not be unique.
    pub name: String,
    /// The image's name (local: a folder of `[local] images_path`).
    pub image: String,
    /// Ignored by the local driver.
    pub flavor: Option<String>,
    /// Ignored by the local driver.
    pub network: Option<String>,
    /// Ignored by the local driver.
    pub key_name: Option<String>,
    /// Must hold [`META_GROUP`].
    pub metadata: BTreeMap<String, String>,
    /// Handed to the VM's boot as cloud-init's user data.
    pub user_data: String,
}

/// The cloud driver contract; see the module documentation for the rules every driver
/// follows.
#[async_trait]
pub trait CloudDriver: Send + Sync + 'static {
    /// The driver's `[compute] driver` name.
    fn name(&self) -> &'static str;

    /// Starts booting a VM and returns it at once, in `BUILD`. Not idempotent.
    async fn boot(&self, spec: VmSpec) -> Result<Vm, DriverError>;

    /// The VM, or `None` when the driver does not know the id (never booted or deleted).
    async fn get(&self, id: &VmId) -> Result<Option<Vm>, DriverError>;

    /// The VMs whose [`META_GROUP`] metadata is `group`, oldest first.
    async fn list(&self, group: &str) -> Result<Vec<Vm>, DriverError>;

    /// Every VM whose metadata has [`META_GROUP`], of any group, oldest first: what a
    /// conductor that lost its state starts from (the groups and their VMs; each VM's
    /// metadata also carries its template, see `crate::template::metadata`). Includes
    /// VMs in `ERROR`, `SHUTOFF` and `DELETED`, as [`list`](CloudDriver::list) does; VMs
    /// without [`META_GROUP`] (the project's other servers) are left out.
    async fn list_all(&self) -> Result<Vec<Vm>, DriverError>;

    /// Deletes the VM and returns when it is gone. Idempotent: a missing VM is `Ok`.
    async fn delete(&self, id: &VmId) -> Result<(), DriverError>;
}

/// Why a driver call failed; each variant carries what a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The spec names an image the cloud does not have.
    #[error("unknown image {image:?}: {looked_in}: {}", list_or_none(available))]
    UnknownImage {
        image: String,
        /// Where the driver looked, ending with where the available images are, e.g.
        /// `no executable /srv/images/x/boot; images in /srv/images`.
        looked_in: String,
        /// The images that do exist, sorted.
        available: Vec<String>,
    },

    /// The spec names a flavor the cloud does not have.
    #[error(
        "unknown flavor {flavor:?}: Nova has no flavor of that id or name; flavors: {}",
        list_or_none(available)
    )]
    UnknownFlavor {
        flavor: String,
        /// The flavors that do exist, sorted.
        available: Vec<String>,
    },

    /// The spec names a network the driver cannot find.
    #[error("unknown network {network:?}: {reason}")]
    UnknownNetwork { network: String, reason: String },

    /// The cloud refused the call (HTTP 4xx, or 5xx after the driver's retries).
    #[error("{call}: HTTP {status}: {message}")]
    Api {
        /// The request, e.g. `POST /servers`.
        call: String,
        status: u16,
        /// The cloud's own message (Nova's fault).
        message: String,
    },

    /// A quota or rate limit refused the call; deleting VMs (or waiting) frees it up.
    #[error("{call}: over quota or rate limit (HTTP {status}): {message}")]
    OverLimit {
        call: String,
        status: u16,
        message: String,
    },

    /// No answer from the cloud (connection refused, timeout), after the driver's retries.
    #[error("{call}: the cloud does not answer: {reason}")]
    Unreachable { call: String, reason: String },

    /// The cloud's session failed before the call could be sent: authentication, the
    /// catalog has no compute endpoint, a clouds.yaml cloud that cannot be read.
    #[error("{call}: {reason}")]
    Cloud { call: String, reason: String },

    /// A delete was accepted but the VM is still there after the driver's wait; the delete
    /// may be repeated.
    #[error("VM {id} still exists {} s after its delete (status {status})", waited.as_secs_f64())]
    DeleteTimedOut {
        id: VmId,
        waited: Duration,
        status: String,
    },

    /// Every address of the pool is held by a VM; deleting one frees its address.
    #[error("address pool {pool} is exhausted: all its {usable} usable addresses are in use")]
    PoolExhausted { pool: String, usable: usize },

    /// The spec cannot be booted as it is.
    #[error("invalid VM spec: {reason}")]
    InvalidSpec { reason: String },

    /// A configuration value the driver cannot use (checked when the driver is built).
    #[error("[{section}] {option} = {value:?}: {reason}")]
    InvalidConfig {
        section: &'static str,
        option: &'static str,
        value: String,
        reason: String,
    },

    /// Reading or writing the driver's state failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A VM record in the driver's state cannot be read; the driver refuses to start
    /// rather than forget a VM that may still run.
    #[error(
        "{}: unreadable VM record ({reason}); stop that VM's processes if any and remove its \
         directory",
        path.display()
    )]
    CorruptRecord { path: PathBuf, reason: String },

    /// The VM's boot program could not be started.
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line, e.g. `setsid /usr/share/autoscaler/images/tomcat/boot`.
        command: String,
        #[source]
        source: io::Error,
    },

    /// A VM's processes outlived SIGKILL for longer than the driver waits (e.g. stuck in
    /// uninterruptible I/O); the delete may be repeated.
    #[error("VM {id} is still running after SIGKILL of its process group {pgid}")]
    StillRunning { id: VmId, pgid: i32 },
}

impl DriverError {
    /// Whether the same call may succeed later without anyone changing the configuration,
    /// the spec or the images.
    pub fn is_retryable(&self) -> bool {
        match self {
            DriverError::PoolExhausted { .. }
            | DriverError::StillRunning { .. }
            | DriverError::OverLimit { .. }
            | DriverError::Unreachable { .. }
            | DriverError::DeleteTimedOut { .. } => true,
            // 5xx that outlasted the retries; 429 is OverLimit.
            DriverError::Api { status, .. } => *status >= 500 || *status == 429,
            // EAGAIN from fork: the process limit, which frees up as processes exit.
            DriverError::Spawn { source, .. } => source.kind() == io::ErrorKind::WouldBlock,
            DriverError::UnknownImage { .. }
            | DriverError::UnknownFlavor { .. }
            | DriverError::UnknownNetwork { .. }
            | DriverError::Cloud { .. }
            | DriverError::InvalidSpec { .. }
            | DriverError::InvalidConfig { .. }
            | DriverError::Io { .. }
            | DriverError::CorruptRecord { .. } => false,
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        DriverError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    match items.is_empty() {
        true => "none".to_owned(),
        false => items.join(", "),
    }
}

/// The driver `[compute] driver` names, built from the configuration. The only place that
/// maps a driver name to a driver.
pub fn from_config(config: &Config) -> Result<Arc<dyn CloudDriver>, DriverError> {
    match config.compute.driver {
        ComputeDriver::Local => Ok(Arc::new(LocalDriver::from_config(config)?)),
        ComputeDriver::Nova => Ok(Arc::new(NovaDriver::from_config(config)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_novas_words() {
        for (status, word) in [
            (VmStatus::Build, "BUILD"),
            (VmStatus::Active, "ACTIVE"),
            (VmStatus::Error, "ERROR"),
            (VmStatus::Shutoff, "SHUTOFF"),
            (VmStatus::Deleted, "DELETED"),
        ] {
            assert_eq!(status.to_string(), word);
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{word}\""));
            assert_eq!(serde_json::from_str::<VmStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn vm_id_is_a_bare_string_on_the_wire() {
        let id = VmId("web-0a1b2c3d".into());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"web-0a1b2c3d\"");
        assert_eq!(id.to_string(), "web-0a1b2c3d");
    }

    #[test]
    fn nova_is_built_from_the_nova_section() {
        let mut config = Config::default();
        config.compute.driver = ComputeDriver::Nova;
        let err = from_config(&config).err().unwrap();
        assert_eq!(
            err.to_string(),
            "[nova] auth_url = \"\": auth_type = password needs it"
        );
        assert!(!err.is_retryable());
        config.nova.auth_type = crate::conf::AuthType::AdminToken;
        config.nova.endpoint = Some("http://127.0.0.1:8774/v2.1".into());
        config.nova.token = Some(crate::conf::Secret::new("admin:admin"));
        // No catalog: the image service must be given.
        let err = from_config(&config).err().unwrap();
        assert!(
            err.to_string().starts_with(
                "[nova] image_endpoint_override = \"\": auth_type = admin_token needs it"
            ),
            "{err}"
        );
        config.nova.image_endpoint_override = Some("http://127.0.0.1:9292".into());
        assert_eq!(from_config(&config).unwrap().name(), "nova");
    }

    #[test]
    fn unknown_image_lists_the_available_ones() {
        let err = DriverError::UnknownImage {
            image: "tomcat".into(),
            looked_in: "no executable /srv/images/tomcat/boot; images in /srv/images".into(),
            available: vec!["apache".into(), "ok".into()],
        };
        assert_eq!(
            err.to_string(),
            "unknown image \"tomcat\": no executable /srv/images/tomcat/boot; images in \
             /srv/images: apache, ok"
        );
        let none = DriverError::UnknownImage {
            image: "x".into(),
            looked_in: "no executable /srv/images/x/boot; images in /srv/images".into(),
            available: vec![],
        };
        assert!(none.to_string().ends_with("images in /srv/images: none"));
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        let exhausted = DriverError::PoolExhausted {
            pool: "127.0.1.0/30".into(),
            usable: 1,
        };
        assert!(exhausted.is_retryable());
        let invalid = DriverError::InvalidSpec {
            reason: "no group".into(),
        };
        assert!(!invalid.is_retryable());
        let api = |status| DriverError::Api {
            call: "POST /servers".into(),
            status,
            message: "m".into(),
        };
        assert!(api(503).is_retryable() && api(429).is_retryable());
        assert!(!api(400).is_retryable() && !api(404).is_retryable());
        let quota = DriverError::OverLimit {
            call: "POST /servers".into(),
            status: 403,
            message: "Quota exceeded for instances".into(),
        };
        assert!(quota.is_retryable());
        assert_eq!(
            quota.to_string(),
            "POST /servers: over quota or rate limit (HTTP 403): Quota exceeded for instances"
        );
    }
}
