//! `[local]`: the local cloud driver (VMs as process groups on loopback addresses, booted
//! from local images), its typed form, [`LocalOpts`], and the loopback network type of its
//! address pool, [`CidrV4`].

use std::{path::PathBuf, time::Duration};

use super::{
    cidr::CidrV4,
    opt::{OptDecl, OptKind, SectionDecl, SectionValues},
};

pub const SECTION: SectionDecl = SectionDecl {
    name: "local",
    help: "The local cloud driver ([compute] driver = local): the stand-in for Nova. A VM \
           is a process group in its own session on this machine, with its own loopback \
           address, started from a local image: a folder whose executable boot script \
           does what cloud-init does on a real VM.",
    opts: &[
        OptDecl::new(
            "address_pool",
            OptKind::LoopbackNetwork,
            Some("127.0.1.0/24"),
            "The addresses given to VMs, as an IPv4 network in CIDR notation inside \
             127.0.0.0/8 (Linux routes all of it to the loopback interface, so no network \
             setup is needed), with a prefix from /8 to /30. The network's first and last \
             addresses and 127.0.1.1 (Debian's address for the host name) are never \
             given out.",
        ),
        OptDecl::new(
            "images_path",
            OptKind::Path,
            Some("/usr/share/autoscaler/images"),
            "Directory of the local images: an image named N is the folder N in it, \
             holding an executable boot script, N/boot. The repository ships its images \
             under etc/autoscaler/images.",
        ),
        OptDecl::new(
            "agent_path",
            OptKind::OptionalPath,
            None,
            "The autoscaler-agent executable the boot scripts start, given to them as \
             $AUTOSCALER_AGENT. Defaults to autoscaler-agent next to the running \
             executable, else the one found in PATH.",
        ),
        OptDecl::new(
            "delete_grace_period",
            OptKind::Seconds {
                min: 0.1,
                max: Some(300.0),
            },
            Some("10"),
            "Seconds a deleted VM's processes have to exit after SIGTERM before the \
             whole process group is killed with SIGKILL.",
        ),
        OptDecl::new(
            "boot_timeout",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("120"),
            "Seconds a VM's boot script has to create boot-finished in its VM \
             directory; a VM that has not by then goes to ERROR.",
        ),
        OptDecl::new(
            "vm_user",
            OptKind::String,
            Some("nobody"),
            "When the conductor runs as root: the user (with its primary group) the VMs' \
             processes run as (boot script, agent, Apache, Tomcat). Each VM's directory \
             is then that user's (mode 0700), the directories above it are made \
             traversable (not readable) by others, the files directly in state_path lose \
             every permission of others, and the conductor creates its files with umask \
             077. Empty: the VMs run as the conductor's user. Ignored when the conductor \
             is not root (the VMs run as its user).",
        ),
    ],
};

/// `[local]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalOpts {
    /// As written; [`LocalOpts::address_pool_cidr`] parses and checks it.
    pub address_pool: String,
    pub images_path: PathBuf,
    /// `None`: next to the running executable, else from `PATH`.
    pub agent_path: Option<PathBuf>,
    pub delete_grace_period: Duration,
    pub boot_timeout: Duration,
    /// Empty: the VMs run as the conductor's user.
    pub vm_user: String,
}

impl LocalOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        LocalOpts {
            address_pool: v.string("address_pool"),
            images_path: v.path("images_path"),
            agent_path: v.optional_path("agent_path"),
            delete_grace_period: v.duration("delete_grace_period"),
            boot_timeout: v.duration("boot_timeout"),
            vm_user: v.string("vm_user"),
        }
    }

    /// `address_pool` as a network; the error says what was expected, as the loader's
    /// errors do.
    pub fn address_pool_cidr(&self) -> Result<CidrV4, String> {
        self.address_pool.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load_from_str, validate_strs, Config};

    #[test]
    fn a_bad_address_pool_is_a_config_error_naming_file_and_option() {
        let report = validate_strs(&[("x.conf", "[local]\naddress_pool = 10.0.0.0/24\n")]);
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "x.conf: [local] address_pool = \"10.0.0.0/24\": expected an IPv4 network"
            ),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].ends_with("(it is not inside 127.0.0.0/8)"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn defaults_are_the_declared_ones() {
        let l = Config::default().local;
        assert_eq!(l.address_pool, "127.0.1.0/24");
        assert_eq!(l.images_path, PathBuf::from("/usr/share/autoscaler/images"));
        assert_eq!(l.agent_path, None);
        assert_eq!(l.delete_grace_period, Duration::from_secs(10));
        assert_eq!(l.boot_timeout, Duration::from_secs(120));
        assert_eq!(l.vm_user, "nobody");
        assert_eq!(l.address_pool_cidr().unwrap().to_string(), "127.0.1.0/24");
    }

    #[test]
    fn every_option_can_be_set() {
        let text = "[local]\naddress_pool = 127.0.9.0/28\nimages_path = etc/autoscaler/images\n\
                    agent_path = /usr/bin/autoscaler-agent\ndelete_grace_period = 0.5\n\
                    boot_timeout = 30\n";
        let loaded = load_from_str("a.conf", text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let l = loaded.config.local;
        assert_eq!(l.address_pool_cidr().unwrap().prefix(), 28);
        assert_eq!(l.images_path, PathBuf::from("etc/autoscaler/images"));
        assert_eq!(l.agent_path, Some("/usr/bin/autoscaler-agent".into()));
        assert_eq!(l.delete_grace_period, Duration::from_millis(500));
        assert_eq!(l.boot_timeout, Duration::from_secs(30));
    }

    #[test]
    fn grace_period_bounds_are_enforced_at_load() {
        let err = load_from_str("a.conf", "[local]\ndelete_grace_period = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.conf: [local] delete_grace_period = \"0\": expected a number of seconds \
             from 0.1 to 300"
        );
    }
}
