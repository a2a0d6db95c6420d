//! What the autoscaler's processes say to each other over RabbitMQ, and how.
//!
//! Shared by the conductor, the operator CLI and the in-VM agent. It holds no Nova client
//! and no conductor logic, so the agent that links it stays small.

pub mod agent_config;
/// What agents publish and the splitter's pool: the wire's value types, defined in
/// `autoscaler-core` (the group's rules read them) and re-exported here.
pub use autoscaler_core::{payload, pool};
pub mod envelope;
pub mod link;
pub mod notification;
pub mod rpc;
pub mod signing;
pub mod topology;
pub mod transport_url;

pub use agent_config::{AgentConfig, CloudConfig};
pub use envelope::{DropCounts, DropReason, DropSnapshot, Envelope, Payload};
pub use link::{Binding, Link, LinkConfig, LinkHandle, LinkState, Outgoing, Subscription};
pub use notification::{NotificationMessage, Priority};
pub use payload::{Heartbeat, MemberStats, Metrics, Role, Stats};
pub use pool::{member_name, MemberState, PoolAck, PoolMember, PoolOutcome, PoolUpdate};
pub use topology::{Durability, QueueSpec, Topology};
pub use transport_url::{BrokerHost, TransportUrl, TransportUrlError};
