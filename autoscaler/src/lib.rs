//! autoscaler: an OpenStack-native auto-scaling service for web sites.
//!
//! The library behind `autoscaler-conductor` and `autoscaler-manage`, one module per part
//! of the design: [`conf`] (oslo-style configuration), [`template`] (what the operator
//! asks for), [`conductor`] (the service), [`manage`] (the operator CLI), [`store`] (the database), [`logging`].
//! The broker protocol lives in the `autoscaler-messaging` crate, shared with the in-VM
//! agent, and is re-exported as [`messaging`].

pub mod cli_args;
pub mod conductor;
pub mod conf;
pub mod driver;
pub mod logging;
pub mod manage;
pub mod private_file;
pub mod sim;
pub mod store;

/// The pure core (see `autoscaler-core`), re-exported under the names the rest of the
/// library and its users have always used.
pub use autoscaler_core::{policy, scenario, template};

/// The broker protocol, shared with the in-VM agent (see `autoscaler-messaging`).
pub use autoscaler_messaging as messaging;
