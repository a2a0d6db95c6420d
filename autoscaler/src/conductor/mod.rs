//! autoscaler-conductor: the one long-running service. It answers the operator CLI over
//! RabbitMQ, takes in the agents' heartbeats, keeps the active templates, and publishes
//! oslo-format notifications.

mod admission;
pub mod api;
pub mod bindings;
pub mod delivery;
pub mod drop_log;
/// One group's rules, pure (`autoscaler_core::group`).
pub use autoscaler_core::group;
pub mod handler;
pub mod memory;
pub mod notifier;
pub mod ownership;
pub mod pool_queues;
pub mod service;
pub mod signed;
pub mod state;
pub mod steer;
/// The per-second time series, a format of the core's (`autoscaler_core::timeseries`).
pub use autoscaler_core::timeseries;
pub mod vm_spec;

pub use service::{run, ServiceError};

/// The group rules' parameters from `[conductor]`, `[agent]` and `[policy]`.
pub fn group_settings(config: &crate::conf::Config) -> group::GroupSettings {
    let timeout = config.conductor.heartbeat_timeout;
    group::GroupSettings {
        heartbeat_timeout: timeout,
        drain_timeout: config.conductor.drain_timeout,
        boot_timeout: config.conductor.boot_timeout,
        not_serving_timeout: config.conductor.not_serving_timeout,
        hearing_window: (config.agent.heartbeat_interval * 2).min(timeout / 2),
        policy: config.policy,
    }
}
