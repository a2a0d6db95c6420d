//! autoscaler-conductor: the one long-running service. It answers the operator CLI over
//! RabbitMQ, takes in the agents' heartbeats, keeps the active templates, and publishes
//! oslo-format notifications.

pub mod api;
pub mod group;
pub mod handler;
pub mod notifier;
pub mod service;
pub mod state;
pub mod steer;
/// The per-second time series, a format of the core's (`autoscaler_core::timeseries`).
pub use autoscaler_core::timeseries;
pub mod vm_spec;

pub use service::{run, ServiceError};
