//! `[compute]`: which cloud driver boots and deletes the VMs, and its typed form,
//! [`ComputeOpts`]. The name is mapped to a driver in one place only,
//! `crate::driver::from_config`.

use super::opt::{Choice, OptDecl, OptKind, SectionDecl, SectionValues};

/// The cloud drivers, as `[compute] driver` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeDriver {
    /// The embedded stand-in for Nova: VMs are process groups on this machine.
    Local,
    /// OpenStack Nova, with the `[nova]` credentials.
    Nova,
}

impl ComputeDriver {
    pub const ALL: [ComputeDriver; 2] = [ComputeDriver::Local, ComputeDriver::Nova];

    pub fn name(self) -> &'static str {
        match self {
            ComputeDriver::Local => "local",
            ComputeDriver::Nova => "nova",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Kept in step with [`ComputeDriver`] by a test.
const DRIVERS: &[Choice] = &[
    Choice {
        value: "local",
        help: "VMs are process groups on this machine, started from the local images of \
               [local] images_path; for development, tests and demos",
    },
    Choice {
        value: "nova",
        help: "VMs are OpenStack Nova servers, booted with the [nova] credentials",
    },
];

pub const SECTION: SectionDecl = SectionDecl {
    name: "compute",
    help: "The cloud the conductor boots its VMs in.",
    opts: &[OptDecl::new(
        "driver",
        OptKind::Choice { choices: DRIVERS },
        Some("local"),
        "The cloud driver that boots, lists and deletes the VMs.",
    )],
};

/// `[compute]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeOpts {
    pub driver: ComputeDriver,
}

impl ComputeOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        let name = v.string("driver");
        ComputeOpts {
            driver: ComputeDriver::from_name(&name)
                .unwrap_or_else(|| panic!("[compute] driver {name:?} passed validation")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_choices_are_the_driver_names() {
        let declared: Vec<&str> = DRIVERS.iter().map(|c| c.value).collect();
        let names: Vec<&str> = ComputeDriver::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(declared, names);
        for d in ComputeDriver::ALL {
            assert_eq!(ComputeDriver::from_name(d.name()), Some(d));
        }
    }

    #[test]
    fn local_is_the_default_and_nova_can_be_chosen() {
        use crate::conf::{load_from_str, Config};
        assert_eq!(Config::default().compute.driver, ComputeDriver::Local);
        let c = load_from_str("a.conf", "[compute]\ndriver = nova\n").unwrap();
        assert_eq!(c.config.compute.driver, ComputeDriver::Nova);
        let err = load_from_str("a.conf", "[compute]\ndriver = xen\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.conf: [compute] driver = \"xen\": expected one of local or nova"
        );
    }
}
