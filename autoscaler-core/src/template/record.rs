//! A template as the service holds it: the template, where the operator instantiated it
//! from and when, and whether its tear-down has begun.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Template;

/// A template as the conductor holds it (and keeps on disk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub template: Template,
    /// The file the operator instantiated it from, as they typed it.
    pub source: String,
    pub instantiated_at: DateTime<Utc>,
    /// Destroy was asked: a restarted conductor carries the tear-down on.
    #[serde(default)]
    pub destroying: bool,
}
