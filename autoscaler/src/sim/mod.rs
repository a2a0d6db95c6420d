//! The simulator: a discrete-event model of the whole loop, deterministic for a seed, and
//! a second shell around the very policy code the conductor runs.
//!
//! - [`events`]: the virtual clock and the event heap, ordered by (time, sequence);
//! - [`rng`], [`distribution`]: seeded streams; deterministic, exponential and lognormal
//!   service times and boot delays;
//! - [`load`]: closed-loop clients (the load tests' scenario files) and open-loop Poisson
//!   arrivals (a CSV trace);
//! - [`splitter`]: mod_jk's balancing by request count, skipping draining members;
//! - [`vm`]: a web VM as a k-server FIFO queue;
//! - [`agent`]: the splitter agent's per-second observation;
//! - [`world`]: one run: the model, the conductor's tick, the policy, the CSV rows;
//! - [`peers`]: Kubernetes HPA, AWS target tracking, Heat + Aodh, AutoScale and the
//!   oracle, behind the same [`ScalingPolicy`](crate::policy::ScalingPolicy) trait;
//! - [`score`], [`suite`]: the comparison's figures, the scenario suite and its table.
//!
//! No I/O but reading the load files ([`suite::load_file`]); the binary
//! `autoscaler-sim` writes the CSV. `doc/simulator.md` says what is modelled and what is
//! not.

pub mod agent;
pub mod distribution;
pub mod events;
pub mod load;
pub mod peers;
pub mod rng;
pub mod score;
pub mod splitter;
pub mod suite;
pub mod vm;
pub mod world;

#[cfg(test)]
mod tests;
