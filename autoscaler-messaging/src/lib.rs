//! What the autoscaler's processes say to each other over RabbitMQ, and how.
//!
//! Shared by the conductor, the operator CLI and the in-VM agent. It holds no Nova client
//! and no conductor logic, so the agent that links it stays small.

pub mod transport_url;

pub use transport_url::{BrokerHost, TransportUrl, TransportUrlError};
