//! The payloads agents publish: what a VM says about itself ([`Heartbeat`]) and what the
//! splitter measures of the site's requests ([`Metrics`]).
//!
//! Conductor-only requests (the operator CLI's RPC) live with the conductor; only what
//! crosses into a VM is defined here.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A payload type with its wire name.
pub trait Payload: Serialize + DeserializeOwned {
    /// The envelope's `kind` for this payload.
    const KIND: &'static str;
}

/// What a VM does in the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Tomcat web VM behind the splitter.
    Web,
    /// The Apache httpd + mod_jk load splitter.
    Splitter,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Web => "web",
            Role::Splitter => "splitter",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "web" => Ok(Role::Web),
            "splitter" => Ok(Role::Splitter),
            other => Err(format!("unknown role {other:?}: expected web or splitter")),
        }
    }
}

/// "I am alive", sent by every agent each `[agent] heartbeat_interval` on
/// `heartbeat.<group>.<vm>`, with a short TTL: a late heartbeat is worthless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub group: String,
    pub vm_id: String,
    pub role: Role,
    /// Increments by one per heartbeat from one agent process; restarts at 0 when the
    /// agent restarts, which is how a receiver can tell a reboot from a gap.
    pub seq: u64,
    /// Whether the VM's own server answered the agent's last check (web: Tomcat; splitter:
    /// Apache); `None` when the agent does not check.
    #[serde(default)]
    pub serving: Option<bool>,
    /// The splitter's site URL, for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The IP address the VM's server listens on, as the agent knows it (issue 7): the
    /// conductor uses it for a VM whose cloud reports no address. Absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Payload for Heartbeat {
    const KIND: &'static str = "heartbeat";
}

/// What the splitter measured in one interval (normally one second), sent on
/// `metrics.<group>` with a short TTL like heartbeats: a late measurement is worthless.
///
/// Times are seconds as `f64` on the wire (mod_jk's `%T` has microsecond resolution).
/// Built from the mod_jk request log, so a request is counted when it *ends*, in the
/// interval in which its log line reached the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub group: String,
    /// The splitter VM that measured.
    pub vm_id: String,
    /// When the interval began (the end of the previous one), UTC.
    pub start: DateTime<Utc>,
    /// Length of the interval in seconds; about 1.0, longer when the agent was late. Divide
    /// request counts by it for a rate.
    pub interval: f64,
    /// The whole site: every request line of the interval, including those whose member is
    /// unknown (the seed's `%w %V %T` format, or `%R` logged as `-`).
    pub site: Stats,
    /// One entry per member (mod_jk worker) that ended at least one request in the interval,
    /// sorted by name. A pool member missing here served nothing in the interval.
    pub members: Vec<MemberStats>,
    /// Log lines of the interval that were neither a request nor a mod_jk message, plus
    /// lines longer than the agent's cap; a non-zero count means a format mismatch.
    pub malformed_lines: u64,
    /// mod_jk's own log lines (`[pid:tid] [level] ...`) of the interval; not requests.
    pub modjk_messages: u64,
}

impl Payload for Metrics {
    const KIND: &'static str = "metrics";
}

/// Request count, error count and response-time distribution of one interval. All times
/// are seconds, measured by mod_jk (`%T`, queueing inside Tomcat included); all are 0.0 when
/// `requests` is 0. Percentiles are exact, nearest-rank over the interval's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests that ended in the interval.
    pub requests: u64,
    /// Of those, responses with a status outside 200-399 (a request logged without a
    /// status, as in the seed's format, counts as a success).
    pub errors: u64,
    /// Mean response time, seconds.
    pub mean: f64,
    /// Median response time, seconds.
    pub p50: f64,
    /// 95th percentile response time, seconds.
    pub p95: f64,
    /// 99th percentile response time, seconds.
    pub p99: f64,
    /// Longest response time, seconds.
    pub max: f64,
}

/// [`Stats`] of one member (mod_jk worker), flattened into the member's JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStats {
    /// The mod_jk worker name (`%R`), as in workers.properties.
    pub member: String,
    #[serde(flatten)]
    pub stats: Stats,
    /// Requests in flight on this member at the end of the interval, from jkstatus
    /// (`worker.<member>.busy`); `None` when it was not read.
    #[serde(default)]
    pub busy: Option<u32>,
}

/// Whether `time`, as a VM wrote it, lies within `skew` of `now` (issue 17). Only `now`
/// is shifted, with checked arithmetic: a VM's time may be anything chrono can hold
/// (`+262142-12-31T23:59:59Z`), and adding to it could overflow.
pub fn within_clock_skew(
    time: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    skew: std::time::Duration,
) -> bool {
    let skew = chrono::TimeDelta::from_std(skew).unwrap_or(chrono::TimeDelta::MAX);
    let earliest = now
        .checked_sub_signed(skew)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let latest = now
        .checked_add_signed(skew)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
    (earliest..=latest).contains(&time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_may_be_absent_or_null() {
        let json = r#"{"member":"worker2","requests":0,"errors":0,"mean":0.0,"p50":0.0,
            "p95":0.0,"p99":0.0,"max":0.0}"#;
        let member: MemberStats = serde_json::from_str(json).unwrap();
        assert_eq!(member.busy, None);
        assert_eq!(member.stats, Stats::default());
        let json = json.replace("\"max\":0.0", "\"max\":0.0,\"busy\":null");
        assert_eq!(
            serde_json::from_str::<MemberStats>(&json).unwrap().busy,
            None
        );
    }

    proptest::proptest! {
        /// Issue 17: any time chrono can hold, any skew, no panic; inside means inside.
        #[test]
        fn the_clock_skew_window_never_panics(
            secs in proptest::num::i64::ANY,
            skew_ms in proptest::num::u64::ANY,
        ) {
            let time = chrono::DateTime::from_timestamp(secs % 8_210_298_412_799, 0)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            let now = chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap();
            let skew = std::time::Duration::from_millis(skew_ms);
            let inside = within_clock_skew(time, now, skew);
            let far = (time - now).num_milliseconds().unsigned_abs();
            proptest::prop_assert_eq!(inside, far <= skew_ms);
        }
    }

    #[test]
    fn the_end_of_time_is_outside_any_sane_window() {
        let now = chrono::Utc::now();
        let end: chrono::DateTime<chrono::Utc> = "+262142-12-31T23:59:59Z".parse().unwrap();
        let skew = std::time::Duration::from_secs(30);
        assert!(!within_clock_skew(end, now, skew));
        assert!(!within_clock_skew(
            chrono::DateTime::<chrono::Utc>::MIN_UTC,
            now,
            skew
        ));
        assert!(within_clock_skew(now, now, skew));
    }
}
