//! `[conductor]`: limits of the conductor, the service that scales the groups, and their
//! typed form, [`ConductorOpts`].

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};

pub const SECTION: SectionDecl = SectionDecl {
    name: "conductor",
    help: "The conductor: the service that watches the groups and scales them.",
    opts: &[
        OptDecl::new(
            "max_vms_ceiling",
            OptKind::Integer {
                min: Some(1),
                max: Some(10_000),
            },
            Some("20"),
            "The highest max_vms a template may ask for; a template asking for more is \
             refused.",
        ),
        OptDecl::new(
            "telemetry_queue_length",
            OptKind::Integer {
                min: Some(10),
                max: Some(1_000_000),
            },
            Some("10000"),
            "Bound of the conductor's queue of heartbeats and metrics on the broker, in \
             messages; beyond it the broker drops the oldest (RabbitMQ's x-max-length with \
             drop-head; see them with rabbitmqctl list_queues), so a flood cannot exhaust \
             the broker's or the conductor's memory.",
        ),
    ],
};

/// `[conductor]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorOpts {
    pub max_vms_ceiling: u32,
    /// Messages.
    pub telemetry_queue_length: usize,
}

impl ConductorOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        ConductorOpts {
            max_vms_ceiling: v.int("max_vms_ceiling"),
            telemetry_queue_length: v.int("telemetry_queue_length"),
        }
    }
}
