//! `[agent]`: how the in-VM agents reach the broker and the rhythm of their heartbeats and
//! metrics, and its typed form,
//! [`AgentOpts`].

use std::time::Duration;

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};
use crate::messaging::TransportUrl;

pub const SECTION: SectionDecl = SectionDecl {
    name: "agent",
    help: "Heartbeats and metrics of the agents that run in every VM.",
    opts: &[
        OptDecl::new(
            "transport_url",
            OptKind::OptionalTransportUrl,
            None,
            "The broker URL the agents in the VMs use, when they reach the broker by \
             another address than the conductor does (on OpenStack, the controller's \
             address rather than 127.0.0.1). Unset: [DEFAULT] transport_url.",
        ),
        OptDecl::new(
            "heartbeat_interval",
            OptKind::Seconds {
                min: 0.1,
                max: Some(60.0),
            },
            Some("1.0"),
            "Seconds between two heartbeats of an agent.",
        ),
        OptDecl::new(
            "telemetry_ttl",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("10"),
            "Time to live of each heartbeat and metrics message on the broker, in \
             seconds: older ones are stale and are discarded unread.",
        ),
        OptDecl::new(
            "max_clock_skew",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("30"),
            "How far, in seconds, a time an agent writes (a message's time, the start of \
             its metrics) may be from the conductor's clock; messages outside the window \
             are dropped and counted before any use of their times. The hosts' clocks \
             agree through NTP, as OpenStack requires.",
        ),
    ],
};

/// `[agent]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOpts {
    pub transport_url: Option<TransportUrl>,
    pub heartbeat_interval: Duration,
    pub telemetry_ttl: Duration,
    pub max_clock_skew: Duration,
}

impl AgentOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        AgentOpts {
            transport_url: v.optional_transport_url("transport_url"),
            heartbeat_interval: v.duration("heartbeat_interval"),
            telemetry_ttl: v.duration("telemetry_ttl"),
            max_clock_skew: v.duration("max_clock_skew"),
        }
    }
}
