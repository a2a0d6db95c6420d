//! The one backoff on boots: when boots keep failing (the cloud refuses them, or the VMs
//! die before they are ever heard: a broken image, a cloud that cannot run it), the group
//! holds further boots back 2, 4, 8 ... 60 s instead of a boot and a failure every tick.
//! A VM booted after the last failure and then heard proves the image works and ends the
//! hold.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest hold after failures.
const HOLD_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backoff {
    /// Failures in a row.
    failures: u32,
    /// The last one.
    last_failure: Option<DateTime<Utc>>,
    /// Until when boots are held back.
    held_until: Option<DateTime<Utc>>,
}

impl Backoff {
    /// A boot failed at `now`; returns how long boots are held back from now.
    pub fn failed(&mut self, now: DateTime<Utc>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        let hold = Duration::from_secs(1 << self.failures.min(6)).min(HOLD_MAX);
        self.held_until = Some(now + hold);
        hold
    }

    /// Whether boots may be asked for at `now`.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        self.held_until.is_none_or(|t| now >= t)
    }

    /// Until when boots are held back, if they are.
    pub fn held_until(&self) -> Option<DateTime<Utc>> {
        self.held_until
    }

    /// The last failure, if boots are failing: a VM created after it and heard from
    /// ends the backoff ([`Backoff::reset`]).
    pub fn last_failure(&self) -> Option<DateTime<Utc>> {
        self.last_failure
    }

    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_double_up_to_a_minute_and_end_on_reset() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut b = Backoff::default();
        assert!(b.allows(t0));
        let holds: Vec<u64> = (0..8).map(|_| b.failed(t0).as_secs()).collect();
        assert_eq!(holds, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert!(!b.allows(t0 + Duration::from_secs(59)));
        assert!(b.allows(t0 + Duration::from_secs(60)));
        b.reset();
        assert!(b.allows(t0));
        assert_eq!(b.last_failure(), None);
    }
}
