//! `[local]`: the local cloud driver (VMs as process groups on loopback addresses, booted
//! from local images), its typed form, [`LocalOpts`], and the loopback network type of its
//! address pool, [`CidrV4`].

use std::{fmt, net::Ipv4Addr, path::PathBuf, str::FromStr, time::Duration};

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};

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
}

impl LocalOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        LocalOpts {
            address_pool: v.string("address_pool"),
            images_path: v.path("images_path"),
            agent_path: v.optional_path("agent_path"),
            delete_grace_period: v.duration("delete_grace_period"),
            boot_timeout: v.duration("boot_timeout"),
        }
    }

    /// `address_pool` as a network; the error says what was expected, as the loader's
    /// errors do.
    pub fn address_pool_cidr(&self) -> Result<CidrV4, String> {
        self.address_pool.parse()
    }
}

/// An IPv4 network inside 127.0.0.0/8 with room for at least one VM: prefix /8 to /30,
/// host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrV4 {
    network: Ipv4Addr,
    prefix: u8,
}

impl CidrV4 {
    /// What a valid value looks like, for error messages.
    pub const EXPECTED: &'static str =
        "expected an IPv4 network inside 127.0.0.0/8 in CIDR notation, from /8 to /30, \
         such as 127.0.1.0/24";

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network's last address (its broadcast address).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & self.mask() == u32::from(self.network)
    }

    /// Every address of the network, first to last.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network)..=u32::from(self.last())).map(Ipv4Addr::from)
    }

    fn mask(&self) -> u32 {
        // prefix is 8..=30 by construction, so the shift never overflows.
        u32::MAX << (32 - u32::from(self.prefix))
    }
}

impl FromStr for CidrV4 {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let because = |why: &str| format!("{} ({why})", CidrV4::EXPECTED);
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| because("no /prefix"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| because(&format!("{addr:?} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| because(&format!("{prefix:?} is not a prefix length")))?;
        if addr.octets()[0] != 127 || prefix < 8 {
            return Err(because("it is not inside 127.0.0.0/8"));
        }
        if prefix > 30 {
            return Err(because("a /31 or /32 leaves no address for a VM"));
        }
        let cidr = CidrV4 {
            network: addr,
            prefix,
        };
        let network = Ipv4Addr::from(u32::from(addr) & cidr.mask());
        if network != addr {
            return Err(because(&format!(
                "host bits are set: the network is {network}/{prefix}"
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for CidrV4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
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

    #[test]
    fn cidr_parses_loopback_networks() {
        let c: CidrV4 = "127.0.9.16/28".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(127, 0, 9, 16));
        assert_eq!(c.last(), Ipv4Addr::new(127, 0, 9, 31));
        assert_eq!(c.addresses().count(), 16);
        assert!(c.contains(Ipv4Addr::new(127, 0, 9, 20)));
        assert!(!c.contains(Ipv4Addr::new(127, 0, 9, 32)));
        let whole: CidrV4 = " 127.0.0.0/8 ".parse().unwrap();
        assert_eq!(whole.last(), Ipv4Addr::new(127, 255, 255, 255));
        assert_eq!(
            "127.0.1.0/30".parse::<CidrV4>().unwrap().last().octets()[3],
            3
        );
    }

    #[test]
    fn cidr_errors_say_what_was_expected_and_why() {
        let cases = [
            ("127.0.1.0", "no /prefix"),
            ("localhost/24", "\"localhost\" is not an IPv4 address"),
            ("127.0.1.0/33", "\"33\" is not a prefix length"),
            ("127.0.1.0/x", "\"x\" is not a prefix length"),
            ("10.0.0.0/24", "it is not inside 127.0.0.0/8"),
            ("0.0.0.0/0", "it is not inside 127.0.0.0/8"),
            ("127.0.1.0/31", "a /31 or /32 leaves no address for a VM"),
            (
                "127.0.1.5/24",
                "host bits are set: the network is 127.0.1.0/24",
            ),
        ];
        for (text, why) in cases {
            let err = text.parse::<CidrV4>().unwrap_err();
            assert_eq!(err, format!("{} ({why})", CidrV4::EXPECTED), "{text}");
        }
    }
}
