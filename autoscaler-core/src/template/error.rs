//! Template errors: every problem found in one template file, one line each.
//!
//! Validation does not stop at the first problem: an operator who fixes a file should see
//! everything that is wrong with it in one go. So a [`TemplateError`] names the file once and
//! holds a list of [`TemplateProblem`]s, and prints one `FILE: KEY: problem` line per problem
//! (`FILE: problem` for the file-level ones: unreadable file, bad INI, bad section).

use std::fmt;

use super::{MAX_TARGET_RESPONSE_TIME, SECTION, VALID_KEYS};

/// Everything wrong with one template; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// The file as the operator named it (or what else the template came from).
    file: String,
    problems: Vec<TemplateProblem>,
}

impl TemplateError {
    pub(crate) fn new(file: &str, problems: Vec<TemplateProblem>) -> TemplateError {
        debug_assert!(!problems.is_empty(), "a TemplateError without a problem");
        TemplateError {
            file: file.to_owned(),
            problems,
        }
    }

    /// The file the problems were found in, as given to `Template::parse` or `load`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The problems, in the order they are printed (file order first, then key by key).
    pub fn problems(&self) -> &[TemplateProblem] {
        &self.problems
    }
}

impl fmt::Display for TemplateError {
    /// One line per problem, `FILE: KEY: problem`, without a trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {problem}", self.file)?;
        }
        Ok(())
    }
}

/// One thing wrong with a template. Its Display starts with the key it is about
/// (`max_vms: ...`), except for the file-level problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateProblem {
    /// The file could not be read (missing, a directory, not UTF-8, ...).
    #[error("cannot read the file: {reason}")]
    Unreadable { reason: String },

    /// rust-ini rejected the text; nothing else can be checked then.
    #[error("line {line}: not valid INI: {}", one_line(.message))]
    Syntax { line: usize, message: String },

    #[error("section [{}] is not allowed: only [{SECTION}] is allowed (or no section header at all)", one_line(.section))]
    Section { section: String },

    #[error("unknown key {key:?}: valid keys are {}", VALID_KEYS.join(", "))]
    UnknownKey { key: String },

    /// The key appears more than once (in any section); which one was meant is a guess.
    #[error("{key}: given {} times ({}): give it once", .values.len(), quoted(.values))]
    Duplicate {
        key: &'static str,
        values: Vec<String>,
    },

    #[error("{key}: required key is missing (expected {expected})")]
    Missing {
        key: &'static str,
        expected: &'static str,
    },

    #[error(
        "{key}: the value is empty (expected {expected}; remove the line if the key is optional)"
    )]
    Empty {
        key: &'static str,
        expected: &'static str,
    },

    /// A string value that could not be written back to INI unchanged: control characters,
    /// surrounding blanks, a trailing backslash (a line continuation to rust-ini).
    #[error("{key}: {value:?} {defect} (expected {expected})")]
    BadText {
        key: &'static str,
        value: String,
        defect: &'static str,
        expected: &'static str,
    },

    #[error("{key}: {value:?} is not a whole number >= {minimum}")]
    NotWholeNumber {
        key: &'static str,
        value: String,
        minimum: u32,
    },

    #[error("max_vms: {max_vms} is above the ceiling of {ceiling} ([conductor] max_vms_ceiling)")]
    AboveCeiling { max_vms: String, ceiling: u32 },

    /// Issue 16, item 5: a site with no web VM never scales out; refused rather than
    /// accepted and left at zero.
    #[error("min_vms: 0 is not supported: with no web VM the splitter answers every request 503, and the policy, which sizes the site from what its web VMs serve, never boots one (use min_vms = 1 or more)")]
    MinVmsZero,

    #[error("min_vms: {min_vms} is greater than max_vms ({max_vms})")]
    MinAboveMax { min_vms: String, max_vms: String },

    #[error("target_response_time: {value:?} is not a number of seconds > 0 (such as 0.25)")]
    NotPositiveSeconds { value: String },

    #[error(
        "target_response_time: {value:?} is out of range (expected between 0.000000001 and {} seconds)",
        MAX_TARGET_RESPONSE_TIME.as_secs()
    )]
    SecondsOutOfRange { value: String },

    #[error(
        "splitter_port: {value:?} is not a TCP port (expected a whole number from 1 to 65535)"
    )]
    BadPort { value: String },

    #[error("site_path: {value:?} is not a path the splitter can serve the site at: {reason} (expected a URL path that starts and ends with '/', such as / or /shop/)")]
    BadSitePath { value: String, reason: String },

    #[error("name: {value:?} is not a valid name: {reason}")]
    BadName { value: String, reason: String },

    /// No `name` key, and the file's stem cannot stand in for it.
    #[error(
        "name: not given, and the file name {stem:?} is not a valid name ({reason}): add a name key, such as `name = shop`"
    )]
    NameFromFileName { stem: String, reason: String },
}

impl TemplateProblem {
    /// The key this problem is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        use TemplateProblem::*;
        match self {
            Unreadable { .. } | Syntax { .. } | Section { .. } => None,
            UnknownKey { key } => Some(key),
            Duplicate { key, .. }
            | Missing { key, .. }
            | Empty { key, .. }
            | BadText { key, .. }
            | NotWholeNumber { key, .. } => Some(key),
            AboveCeiling { .. } => Some("max_vms"),
            MinAboveMax { .. } | MinVmsZero => Some("min_vms"),
            NotPositiveSeconds { .. } | SecondsOutOfRange { .. } => Some("target_response_time"),
            BadName { .. } | NameFromFileName { .. } => Some("name"),
            BadPort { .. } => Some("splitter_port"),
            BadSitePath { .. } => Some("site_path"),
        }
    }
}

/// `"a", "b"`: values as given, quoted so blanks and odd characters show.
fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `text` on one line: control characters (a section name may span lines) escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
