//! autoscaler-core: what every part of the autoscaler shares and none of them does I/O
//! for: the vocabulary of the cloud ([`cloud`]) and of the wire ([`payload`], [`pool`],
//! [`notification`]), the operator's template ([`template`], read with oslo's INI rules,
//! [`ini`]), the scaling policy ([`policy`]), and the file formats the tools exchange
//! ([`scenario`], [`timeseries`]).
//!
//! It links no cloud client, no broker client and no async runtime, so the graph tool and
//! the load tester use it without the conductor's dependencies, and the rules here are
//! tested with plain values. Time is always an argument.

pub mod cloud;
pub mod group;
pub mod ini;
pub mod notification;
pub mod payload;
pub mod policy;
pub mod pool;
pub mod scenario;
pub mod template;
pub mod time_format;
pub mod timeseries;
