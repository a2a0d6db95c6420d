//! `[policy]`: the knobs of the scaling policy (`doc/policy.md`), and their typed form,
//! [`PolicyOpts`]. The bounds and the target come from each template.

pub use autoscaler_core::policy::PolicyOpts;

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};

pub const SECTION: SectionDecl = SectionDecl {
    name: "policy",
    help: "The scaling policy: how the number of web VMs follows the load.",
    opts: &[
        OptDecl::new(
            "target_margin_percent",
            OptKind::Integer {
                min: Some(0),
                max: Some(90),
            },
            Some("10"),
            "The policy aims this many percent under the template's target_response_time, \
             so that the settled mean response time stays just under the target.",
        ),
        OptDecl::new(
            "stabilization",
            OptKind::Seconds {
                min: 1.0,
                max: Some(300.0),
            },
            Some("5"),
            "Load changes shorter than this never add or remove VMs. A longer change is \
             acted on once consecutive measurements (each judged on its last second) \
             prove it has lasted this long: the window counts seconds of measurements, \
             not messages.",
        ),
        OptDecl::new(
            "scale_in_delay",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("15"),
            "How long the load must need fewer VMs before any is removed (scale-in is \
             slower than scale-out: a VM removed too early costs seconds over target).",
        ),
        OptDecl::new(
            "scale_in_cooldown",
            OptKind::Seconds {
                min: 0.0,
                max: Some(3600.0),
            },
            Some("30"),
            "No VM is removed within this long after a scale-out (no flapping). Replacing \
             failed VMs does not start it.",
        ),
    ],
};

/// `[policy]`, typed: the core's [`PolicyOpts`], read from the section's values.
pub(super) fn from_values(v: &SectionValues<'_>) -> PolicyOpts {
    PolicyOpts {
        target_margin_percent: v.int("target_margin_percent"),
        stabilization: v.duration("stabilization"),
        scale_in_delay: v.duration("scale_in_delay"),
        scale_in_cooldown: v.duration("scale_in_cooldown"),
    }
}
