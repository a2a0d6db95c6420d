//! autoscaler: an OpenStack-native auto-scaling service for web sites.
//!
//! The library behind `autoscaler-conductor` and `autoscaler-manage`. One module per part
//! of the design (../DESIGN.md in the steering repo; doc/ for operators).

pub mod conf;
pub mod template;

/// The broker protocol, shared with the in-VM agent (see `autoscaler-messaging`).
pub use autoscaler_messaging as messaging;
