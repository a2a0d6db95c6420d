//! The versioned JSON envelope every autoscaler message travels in, and the rules for
//! dropping what cannot be read.
//!
//! On the wire: `{"version": 1, "kind": "heartbeat", "sender": "agent.vm-1",
//! "time": "2026-11-27T19:00:00.123Z", "payload": {...}}`. Decoding is two-staged: first the
//! envelope (size, JSON, version), then the payload by kind, so a receiver can tell a
//! malformed message from one of a kind it does not know, and count each. Nothing here
//! panics on bad input.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The envelope version this build writes and reads. A receiver drops other versions
/// (counted as [`DropReason::UnsupportedVersion`]) rather than guessing at their meaning.
pub const ENVELOPE_VERSION: u32 = 1;

use autoscaler_core::group::Refusal;
pub use autoscaler_core::payload::Payload;

/// An envelope whose payload is still raw JSON: the first decoding stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<P = serde_json::Value> {
    pub version: u32,
    pub kind: String,
    pub sender: String,
    pub time: DateTime<Utc>,
    /// A signed agent message's sequence number, higher than any before from the same VM
    /// (the conductor drops a repeat: [`crate::signing`]); absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub payload: P,
}

impl<P: Payload> Envelope<P> {
    /// Wraps `payload` with this build's version, its kind, the sender and the time.
    pub fn new(sender: impl Into<String>, time: DateTime<Utc>, payload: P) -> Self {
        Envelope {
            version: ENVELOPE_VERSION,
            kind: P::KIND.to_owned(),
            sender: sender.into(),
            time,
            seq: None,
            payload,
        }
    }

    /// With sequence number `seq` (a signed agent message).
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self
    }

    /// The JSON bytes to publish.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("message payloads serialize to JSON")
    }
}

/// The JSON bytes of `payload` in an envelope, without taking ownership of it.
pub fn encode<P: Payload>(sender: &str, time: DateTime<Utc>, payload: &P) -> Vec<u8> {
    encode_seq(sender, time, None, payload)
}

/// [`encode`] with a sequence number (a signed agent message).
pub fn encode_seq<P: Payload>(
    sender: &str,
    time: DateTime<Utc>,
    seq: Option<u64>,
    payload: &P,
) -> Vec<u8> {
    let envelope = Envelope {
        version: ENVELOPE_VERSION,
        kind: P::KIND.to_owned(),
        sender: sender.to_owned(),
        time,
        seq,
        payload,
    };
    serde_json::to_vec(&envelope).expect("message payloads serialize to JSON")
}

/// Why a message was dropped. Each reason is counted separately in [`DropCounts`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("message of {size} bytes is larger than the {limit}-byte limit")]
    Oversized { size: usize, limit: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported envelope version {0} (this build reads {ENVELOPE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    #[error("malformed {kind} payload: {error}")]
    BadPayload { kind: String, error: String },
    /// A time the sender wrote is not within now ± `[agent] max_clock_skew` (issue 17):
    /// refused before any arithmetic on it.
    #[error("{field} {time} is outside now ± the allowed clock skew")]
    OutOfWindow {
        field: &'static str,
        time: DateTime<Utc>,
    },
    #[error("no template named {0:?} is steered here")]
    UnknownGroup(String),
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// An RPC request whose `user_id` (checked by the broker against the publishing
    /// login) is not one of `[conductor] rpc_allowed_users`; `None` when it has none.
    #[error("request from broker user {0:?}, not one of [conductor] rpc_allowed_users")]
    RpcNotAllowed(Option<String>),
    /// An RPC request whose reply address is not the direct reply-to pseudo-queue: the
    /// conductor would answer into someone else's queue.
    #[error("request with reply_to {0:?}, not amq.rabbitmq.reply-to")]
    RpcBadReplyTo(String),
    /// An RPC request older than its expiration (or than the conductor's bound).
    #[error("request {age_ms} ms old, beyond its {limit_ms} ms")]
    RpcStale { age_ms: i64, limit_ms: i64 },
    /// An agent message without a signer and a MAC ([`crate::signing`]).
    #[error("unsigned message")]
    Unsigned,
    /// An agent message whose MAC is not its signer's, or whose signer is not the VM its
    /// payload names.
    #[error("MAC is not {0:?}'s")]
    BadMac(String),
    /// An agent message whose sequence number is not above the last one its VM sent.
    #[error("sequence number {seq} not above {last}: a replay")]
    Replayed { seq: u64, last: u64 },
    /// A signed agent message without a sequence number: it could be played again at
    /// will, so it counts as a replay.
    #[error("no sequence number: it could be replayed")]
    NoSequence,
}

impl Envelope {
    /// First stage: checks size, JSON shape and version.
    pub fn decode(bytes: &[u8], max_size: usize) -> Result<Envelope, DropReason> {
        if bytes.len() > max_size {
            return Err(DropReason::Oversized {
                size: bytes.len(),
                limit: max_size,
            });
        }
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| DropReason::Malformed(e.to_string()))?;
        if envelope.version != ENVELOPE_VERSION {
            return Err(DropReason::UnsupportedVersion(envelope.version));
        }
        Ok(envelope)
    }

    /// Second stage: the payload as `P`, when the kind is `P`'s.
    ///
    /// Returns `None` for another kind, so receivers can try their known kinds in turn and
    /// finish with [`Envelope::unknown`].
    pub fn payload_as<P: Payload>(&self) -> Option<Result<Envelope<P>, DropReason>> {
        if self.kind != P::KIND {
            return None;
        }
        Some(
            P::deserialize(&self.payload)
                .map(|payload| Envelope {
                    version: self.version,
                    kind: self.kind.clone(),
                    sender: self.sender.clone(),
                    time: self.time,
                    seq: self.seq,
                    payload,
                })
                .map_err(|e| DropReason::BadPayload {
                    kind: self.kind.clone(),
                    error: e.to_string(),
                }),
        )
    }

    /// The drop reason for a kind the receiver does not handle.
    pub fn unknown(&self) -> DropReason {
        DropReason::UnknownKind(self.kind.clone())
    }
}

/// Counters of dropped messages by reason; shared between a consumer and whoever reports.
#[derive(Debug, Default)]
pub struct DropCounts {
    oversized: AtomicU64,
    malformed: AtomicU64,
    unsupported_version: AtomicU64,
    unknown_kind: AtomicU64,
    bad_payload: AtomicU64,
    out_of_window: AtomicU64,
    unknown_group: AtomicU64,
    not_listed: AtomicU64,
    not_splitter: AtomicU64,
    future_generation: AtomicU64,
    rpc_not_allowed: AtomicU64,
    rpc_bad_reply_to: AtomicU64,
    rpc_stale: AtomicU64,
    unsigned: AtomicU64,
    bad_mac: AtomicU64,
    replayed: AtomicU64,
}

/// A copy of [`DropCounts`] at one moment, for replies and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSnapshot {
    pub oversized: u64,
    pub malformed: u64,
    pub unsupported_version: u64,
    pub unknown_kind: u64,
    pub bad_payload: u64,
    /// Issue 17's reasons; absent in the answers of older conductors.
    #[serde(default)]
    pub out_of_window: u64,
    #[serde(default)]
    pub unknown_group: u64,
    #[serde(default)]
    pub not_listed: u64,
    #[serde(default)]
    pub not_splitter: u64,
    #[serde(default)]
    pub future_generation: u64,
    /// RPC requests refused (issue 17, item 3).
    #[serde(default)]
    pub rpc_not_allowed: u64,
    #[serde(default)]
    pub rpc_bad_reply_to: u64,
    #[serde(default)]
    pub rpc_stale: u64,
    /// Agent messages refused by their signature (issue 17, item 2).
    #[serde(default)]
    pub unsigned: u64,
    #[serde(default)]
    pub bad_mac: u64,
    #[serde(default)]
    pub replayed: u64,
}

impl DropSnapshot {
    pub fn total(&self) -> u64 {
        self.oversized
            + self.malformed
            + self.unsupported_version
            + self.unknown_kind
            + self.bad_payload
            + self.out_of_window
            + self.unknown_group
            + self.not_listed
            + self.not_splitter
            + self.future_generation
            + self.rpc_not_allowed
            + self.rpc_bad_reply_to
            + self.rpc_stale
            + self.unsigned
            + self.bad_mac
            + self.replayed
    }
}

impl DropCounts {
    pub fn record(&self, reason: &DropReason) {
        let counter = match reason {
            DropReason::Oversized { .. } => &self.oversized,
            DropReason::Malformed(_) => &self.malformed,
            DropReason::UnsupportedVersion(_) => &self.unsupported_version,
            DropReason::UnknownKind(_) => &self.unknown_kind,
            DropReason::BadPayload { .. } => &self.bad_payload,
            DropReason::OutOfWindow { .. } => &self.out_of_window,
            DropReason::UnknownGroup(_) => &self.unknown_group,
            DropReason::Refused(Refusal::NotListed { .. }) => &self.not_listed,
            DropReason::Refused(Refusal::NotSplitter { .. }) => &self.not_splitter,
            DropReason::Refused(Refusal::FutureGeneration { .. }) => &self.future_generation,
            DropReason::RpcNotAllowed(_) => &self.rpc_not_allowed,
            DropReason::RpcBadReplyTo(_) => &self.rpc_bad_reply_to,
            DropReason::RpcStale { .. } => &self.rpc_stale,
            DropReason::Unsigned => &self.unsigned,
            DropReason::BadMac(_) => &self.bad_mac,
            DropReason::Replayed { .. } | DropReason::NoSequence => &self.replayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DropSnapshot {
        DropSnapshot {
            oversized: self.oversized.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            unsupported_version: self.unsupported_version.load(Ordering::Relaxed),
            unknown_kind: self.unknown_kind.load(Ordering::Relaxed),
            bad_payload: self.bad_payload.load(Ordering::Relaxed),
            out_of_window: self.out_of_window.load(Ordering::Relaxed),
            unknown_group: self.unknown_group.load(Ordering::Relaxed),
            not_listed: self.not_listed.load(Ordering::Relaxed),
            not_splitter: self.not_splitter.load(Ordering::Relaxed),
            future_generation: self.future_generation.load(Ordering::Relaxed),
            rpc_not_allowed: self.rpc_not_allowed.load(Ordering::Relaxed),
            rpc_bad_reply_to: self.rpc_bad_reply_to.load(Ordering::Relaxed),
            rpc_stale: self.rpc_stale.load(Ordering::Relaxed),
            unsigned: self.unsigned.load(Ordering::Relaxed),
            bad_mac: self.bad_mac.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Heartbeat, MemberStats, Metrics, Role, Stats};
    use proptest::prelude::*;

    fn heartbeat() -> Envelope<Heartbeat> {
        Envelope::new(
            "agent.vm-1",
            Utc::now(),
            Heartbeat {
                group: "shop".into(),
                vm_id: "vm-1".into(),
                role: Role::Web,
                seq: 7,
                serving: None,
                url: None,
                address: None,
            },
        )
    }

    #[test]
    fn round_trip() {
        let bytes = heartbeat().to_bytes();
        let raw = Envelope::decode(&bytes, 65536).unwrap();
        assert_eq!(raw.kind, "heartbeat");
        let hb = raw.payload_as::<Heartbeat>().unwrap().unwrap();
        assert_eq!(hb.payload.seq, 7);
        assert_eq!(hb.sender, "agent.vm-1");
    }

    #[test]
    fn each_bad_message_has_its_reason() {
        let counts = DropCounts::default();
        let good = heartbeat().to_bytes();
        type Check = fn(&DropReason) -> bool;
        let cases: Vec<(Vec<u8>, Check)> = vec![
            (good.clone(), |r| matches!(r, DropReason::Oversized { limit: 10, .. })),
            (b"{not json".to_vec(), |r| matches!(r, DropReason::Malformed(_))),
            (
                br#"{"version":99,"kind":"heartbeat","sender":"x","time":"2026-01-01T00:00:00Z","payload":{}}"#.to_vec(),
                |r| matches!(r, DropReason::UnsupportedVersion(99)),
            ),
        ];
        for (i, (bytes, check)) in cases.into_iter().enumerate() {
            let limit = if i == 0 { 10 } else { 65536 };
            let reason = Envelope::decode(&bytes, limit).unwrap_err();
            assert!(check(&reason), "case {i}: {reason}");
            counts.record(&reason);
        }
        let unknown = br#"{"version":1,"kind":"gossip","sender":"x","time":"2026-01-01T00:00:00Z","payload":{}}"#;
        let raw = Envelope::decode(unknown, 65536).unwrap();
        assert!(raw.payload_as::<Heartbeat>().is_none());
        counts.record(&raw.unknown());
        let bad = br#"{"version":1,"kind":"heartbeat","sender":"x","time":"2026-01-01T00:00:00Z","payload":{"seq":"x"}}"#;
        let raw = Envelope::decode(bad, 65536).unwrap();
        let reason = raw.payload_as::<Heartbeat>().unwrap().unwrap_err();
        assert!(
            reason
                .to_string()
                .starts_with("malformed heartbeat payload"),
            "{reason}"
        );
        counts.record(&reason);
        let snap = counts.snapshot();
        assert_eq!(
            (snap.oversized, snap.malformed, snap.unsupported_version),
            (1, 1, 1)
        );
        assert_eq!(
            (snap.unknown_kind, snap.bad_payload, snap.total()),
            (1, 1, 5)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(raw) = Envelope::decode(&bytes, 256) {
                let _ = raw.payload_as::<Heartbeat>();
            }
        }
    }

    #[test]
    fn metrics_round_trip_with_flat_member_stats() {
        let stats = Stats {
            requests: 4,
            errors: 1,
            mean: 0.05,
            p50: 0.04,
            p95: 0.09,
            p99: 0.09,
            max: 0.09,
        };
        let sent = Metrics {
            group: "shop".into(),
            vm_id: "vm-0".into(),
            start: "2026-11-27T19:27:10Z".parse().unwrap(),
            interval: 1.0,
            site: stats,
            members: vec![MemberStats {
                member: "worker1".into(),
                stats,
                busy: Some(2),
            }],
            malformed_lines: 0,
            modjk_messages: 3,
        };
        let bytes = Envelope::new("agent.vm-0", Utc::now(), sent.clone()).to_bytes();
        let raw = Envelope::decode(&bytes, 65536).unwrap();
        assert_eq!(raw.kind, "metrics");
        assert_eq!(raw.payload["members"][0]["busy"], 2);
        let got = raw.payload_as::<Metrics>().unwrap().unwrap();
        assert_eq!(got.payload, sent);
    }
}
