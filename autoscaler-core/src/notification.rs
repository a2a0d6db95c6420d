//! What the conductor tells operators: oslo.messaging's notification priorities.

use serde::{Deserialize, Serialize};

/// oslo.messaging's priorities, in its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    Audit,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
    Sample,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Audit => "AUDIT",
            Priority::Debug => "DEBUG",
            Priority::Info => "INFO",
            Priority::Warn => "WARN",
            Priority::Error => "ERROR",
            Priority::Critical => "CRITICAL",
            Priority::Sample => "SAMPLE",
        }
    }
}
