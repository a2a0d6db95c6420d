//! Dropped messages in the log, rate-limited (issue 17): a flood of forged messages must
//! not become a flood of log lines. The first drop of each window is logged with its
//! reason (escaped: the reason quotes what a VM sent); the others are only counted (the
//! counters `conductor status` shows), and the next line logged says how many were not.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::warn;

use crate::messaging::DropReason;

/// At most one line per window.
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct DropLog {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    logged_at: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    /// Logs a drop (`what`, e.g. "dropped a message") unless one was logged within the
    /// window; returns whether it did.
    pub fn dropped(&self, what: &str, routing_key: &str, reason: &DropReason) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if state
            .logged_at
            .is_some_and(|at| now.duration_since(at) < WINDOW)
        {
            state.suppressed += 1;
            return false;
        }
        let suppressed = std::mem::take(&mut state.suppressed);
        state.logged_at = Some(now);
        let reason = reason.to_string();
        warn!(
            routing_key = %routing_key.escape_debug(),
            reason = %reason.escape_debug(),
            not_logged_since = suppressed,
            "{what}"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window() {
        let log = DropLog::default();
        let reason = DropReason::UnknownGroup("x\u{1b}[2J".into());
        assert!(log.dropped("dropped a message", "k", &reason));
        for _ in 0..1000 {
            assert!(!log.dropped("dropped a message", "k", &reason));
        }
        assert_eq!(log.state.lock().unwrap().suppressed, 1000);
    }
}
