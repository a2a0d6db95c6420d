//! `[oslo_messaging_rabbit]`: RabbitMQ connection tuning with oslo.messaging's names and
//! defaults, and its typed form, [`RabbitOpts`].

use std::time::Duration;

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};
use crate::messaging::Durability;

pub const SECTION: SectionDecl = SectionDecl {
    name: "oslo_messaging_rabbit",
    help: "RabbitMQ connection tuning, named as in oslo.messaging's rabbit driver.",
    opts: &[
        OptDecl::new(
            "heartbeat_timeout_threshold",
            OptKind::Integer {
                min: Some(0),
                max: Some(65535),
            },
            Some("60"),
            "AMQP heartbeat timeout in seconds, used when transport_url has no heartbeat= \
             parameter: a connection silent for this long is considered dead. 0 disables \
             heartbeats.",
        ),
        OptDecl::new(
            "rabbit_retry_interval",
            OptKind::Integer {
                min: Some(1),
                max: None,
            },
            Some("1"),
            "Seconds to wait before the first attempt to reconnect to the broker.",
        ),
        OptDecl::new(
            "rabbit_retry_backoff",
            OptKind::Integer {
                min: Some(0),
                max: None,
            },
            Some("2"),
            "Seconds added to the wait after each failed attempt to reconnect.",
        ),
        OptDecl::new(
            "rabbit_interval_max",
            OptKind::Integer {
                min: Some(1),
                max: None,
            },
            Some("30"),
            "Longest wait between two attempts to reconnect, in seconds.",
        ),
        OptDecl::new(
            "amqp_durable_queues",
            OptKind::Bool,
            Some("false"),
            "Declare the control exchange, the conductors' request queue and the \
             notification queues durable, so that they and their persistent messages survive \
             a broker restart. oslo.messaging declares them with its option of the same \
             name and default, and RabbitMQ refuses a declaration that differs: keep it \
             equal to what your oslo.messaging notification consumers (Ceilometer, \
             listeners) use. The agents get it through their user data. Changing it on a \
             running deployment: see doc/messaging.md, Durability.",
        ),
    ],
};

/// `[oslo_messaging_rabbit]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitOpts {
    /// Whole seconds, at most 65535; zero disables heartbeats.
    pub heartbeat_timeout_threshold: Duration,
    pub rabbit_retry_interval: Duration,
    pub rabbit_retry_backoff: Duration,
    pub rabbit_interval_max: Duration,
    pub amqp_durable_queues: bool,
}

impl RabbitOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        RabbitOpts {
            heartbeat_timeout_threshold: v.duration("heartbeat_timeout_threshold"),
            rabbit_retry_interval: v.duration("rabbit_retry_interval"),
            rabbit_retry_backoff: v.duration("rabbit_retry_backoff"),
            rabbit_interval_max: v.duration("rabbit_interval_max"),
            amqp_durable_queues: v.bool("amqp_durable_queues"),
        }
    }

    /// How the exchange and the lasting queues are declared.
    pub fn durability(&self) -> Durability {
        Durability::from_amqp_durable_queues(self.amqp_durable_queues)
    }

    /// The heartbeat as AMQP negotiates it: whole seconds, 0 = off.
    pub fn heartbeat_secs(&self) -> u16 {
        // The declared maximum is 65535, so this only saturates on a hand-built value.
        u16::try_from(self.heartbeat_timeout_threshold.as_secs()).unwrap_or(u16::MAX)
    }
}
