//! Templates: what the operator hands the service for one web site.
//!
//! A template is a small INI file (the shipped sample is
//! `etc/autoscaler/templates/tomcat.template`): the web VM image, the group's bounds
//! `min_vms..=max_vms`, and the target average response time of the whole site. This module
//! owns the file format, its validation and the [`Template`] value that the conductor and the
//! CLI pass around and serialize into messages and state files.
//!
//! Invariants: a `Template` that exists is valid, however it was built (INI or serde); only
//! the `max_vms` ceiling, a setting of the conductor (`[conductor] max_vms_ceiling`), is
//! checked by the INI path alone. Validation reports every problem of a file at once (see
//! [`TemplateError`]). Pure apart from [`Template::load`], which reads the file.

mod error;
pub mod metadata;
mod record;
#[cfg(test)]
mod tests;

pub use error::{TemplateError, TemplateProblem};
pub use record::TemplateRecord;

use std::path::Path;
use std::time::Duration;

use crate::ini::{self, IniError};
use serde::{Deserialize, Serialize};

/// The only section a template may have; keys may also stand before any section header.
pub const SECTION: &str = "template";

/// The key names, for messages and docs: the required ones first, in the order `to_ini`
/// writes them after `name`.
pub const VALID_KEYS: &[&str] = &[
    "image",
    "min_vms",
    "max_vms",
    "target_response_time",
    "name",
    "flavor",
    "network",
    "splitter_image",
    "key_name",
    "web_service_time_ms",
    "web_threads",
    "splitter_port",
    "site_path",
];

/// Longest template name. It becomes part of VM names (hostnames: labels of at most 63
/// characters) and of AMQP routing keys.
pub const NAME_MAX_LEN: usize = 63;

/// Longest accepted `site_path`: a path, not a document.
pub const SITE_PATH_MAX_LEN: usize = 128;

/// The path the splitter's status worker (jkstatus) is mounted at, which the splitter's
/// agent reads: a site cannot take it.
pub const STATUS_PATH: &str = "/jkmanager/";

/// Longest accepted `target_response_time`. Anything longer is surely a typo, and up to
/// here the nanosecond count survives the trip through an f64 of seconds (JSON) exactly.
pub const MAX_TARGET_RESPONSE_TIME: Duration = Duration::from_secs(24 * 60 * 60);

/// One web site's group of VMs, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTemplate", into = "RawTemplate")]
pub struct Template {
    /// Valid by [`validate_name`]: safe in VM names and routing keys.
    name: String,
    /// Image of the web VMs (a Glance name or id on Nova, a folder under the local images).
    image: String,
    min_vms: u32,
    /// `>= max(1, min_vms)`, and at most the conductor's ceiling when parsed from INI.
    max_vms: u32,
    /// Target average response time of the whole site; in `1ns..=MAX_TARGET_RESPONSE_TIME`.
    target_response_time: Duration,
    flavor: Option<String>,
    network: Option<String>,
    /// Image of the splitter VM (Apache mod_jk); the conductor's default when `None`.
    splitter_image: Option<String>,
    key_name: Option<String>,
    /// Local images only: the web VMs' emulated capacity (see
    /// `etc/autoscaler/images/README.md`), overriding the image's `SERVICE_TIME_MS`.
    web_service_time_ms: Option<u32>,
    /// Local images only: Tomcat threads per web VM, overriding the image's `THREADS`.
    web_threads: Option<u32>,
    /// The TCP port the splitter serves the site on; the splitter image's default when
    /// `None` (8000 on the local cloud, 80 on the Nova image).
    splitter_port: Option<u16>,
    /// The URL path the splitter serves the site at, valid by [`check_site_path`]; the
    /// image's default (`/webserver/`, the web application's own path) when `None`.
    site_path: Option<String>,
}

impl Template {
    /// Parses and validates a template. `source` names the file in errors (a path as the
    /// operator typed it) and, without a `name` key, gives the name (its stem); `text` is its
    /// content. `max_vms_ceiling` is the conductor's `[conductor] max_vms_ceiling`.
    pub fn parse(
        source: &str,
        text: &str,
        max_vms_ceiling: u32,
    ) -> Result<Template, TemplateError> {
        parse_ini(source, text, max_vms_ceiling)
            .map_err(|problems| TemplateError::new(source, problems))
    }

    /// Reads the file (an unreadable file is a `TemplateError` naming the file) and parses it.
    pub fn load(path: &Path, max_vms_ceiling: u32) -> Result<Template, TemplateError> {
        let source = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Template::parse(&source, &text, max_vms_ceiling),
            Err(err) => Err(TemplateError::new(
                &source,
                vec![TemplateProblem::Unreadable {
                    reason: err.to_string(),
                }],
            )),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn min_vms(&self) -> u32 {
        self.min_vms
    }

    pub fn max_vms(&self) -> u32 {
        self.max_vms
    }

    pub fn image(&self) -> &str {
        &self.image
    }

    pub fn target_response_time(&self) -> Duration {
        self.target_response_time
    }

    pub fn flavor(&self) -> Option<&str> {
        self.flavor.as_deref()
    }

    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    pub fn splitter_image(&self) -> Option<&str> {
        self.splitter_image.as_deref()
    }

    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    pub fn web_service_time_ms(&self) -> Option<u32> {
        self.web_service_time_ms
    }

    pub fn web_threads(&self) -> Option<u32> {
        self.web_threads
    }

    pub fn splitter_port(&self) -> Option<u16> {
        self.splitter_port
    }

    pub fn site_path(&self) -> Option<&str> {
        self.site_path.as_deref()
    }

    /// The template written back as INI text; `parse` of it gives back an equal template.
    pub fn to_ini(&self) -> String {
        let mut lines = vec![format!("[{SECTION}]")];
        lines.extend(
            self.entries()
                .into_iter()
                .map(|(key, value)| format!("{key} = {value}")),
        );
        lines.push(String::new());
        lines.join("\n")
    }

    /// The keys that are set, each with its value as a template file spells it, in
    /// `to_ini`'s order. The one place that spells values, so the INI text and the cloud
    /// metadata ([`metadata::to_metadata`]) never disagree.
    pub(crate) fn entries(&self) -> Vec<(&'static str, String)> {
        let mut entries = vec![
            ("name", self.name.clone()),
            ("image", self.image.clone()),
            ("min_vms", self.min_vms.to_string()),
            ("max_vms", self.max_vms.to_string()),
            (
                "target_response_time",
                format_seconds(self.target_response_time),
            ),
        ];
        let optional = [
            ("flavor", &self.flavor),
            ("network", &self.network),
            ("splitter_image", &self.splitter_image),
            ("key_name", &self.key_name),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                entries.push((key, value.clone()));
            }
        }
        let emulation = [
            ("web_service_time_ms", self.web_service_time_ms),
            ("web_threads", self.web_threads),
        ];
        for (key, value) in emulation {
            if let Some(value) = value {
                entries.push((key, value.to_string()));
            }
        }
        if let Some(port) = self.splitter_port {
            entries.push(("splitter_port", port.to_string()));
        }
        if let Some(path) = &self.site_path {
            entries.push(("site_path", path.clone()));
        }
        entries
    }
}

/// Checks a template name: 1-63 characters of `[A-Za-z0-9_.-]`, starting with a letter or
/// digit. It becomes part of VM names and AMQP routing keys, so no blanks, no `#` or `*`
/// (routing-key wildcards), no dots-only name. The error says what is wrong, not the name.
pub fn validate_name(name: &str) -> Result<(), String> {
    const ALLOWED: &str = "only letters, digits, '_', '.' and '-' are allowed";
    let Some(first) = name.chars().next() else {
        return Err(format!("it is empty: expected 1-{NAME_MAX_LEN} characters"));
    };
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return Err(format!("it contains {bad:?}: {ALLOWED}"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "it starts with {first:?}: it must start with a letter or digit"
        ));
    }
    if name.len() > NAME_MAX_LEN {
        return Err(format!(
            "it is {} characters long: at most {NAME_MAX_LEN} are allowed",
            name.len()
        ));
    }
    Ok(())
}

/// What a key expects, for messages.
fn expected(key: &str) -> &'static str {
    match key {
        "image" | "splitter_image" => "an image name or id",
        "min_vms" => "a whole number >= 1",
        "max_vms" => "a whole number >= 1",
        "target_response_time" => "a number of seconds > 0, such as 0.25",
        "name" => "a name of letters, digits, '_', '.' and '-'",
        "flavor" => "a flavor name or id",
        "network" => "a network name or id",
        "key_name" => "a key pair name",
        "web_service_time_ms" => "milliseconds, a whole number >= 1",
        "web_threads" => "a whole number >= 1",
        "splitter_port" => "a TCP port, a whole number from 1 to 65535",
        "site_path" => "a URL path that starts and ends with '/', such as / or /shop/",
        _ => "a value",
    }
}

/// The INI path: text to a template, or every problem found.
fn parse_ini(source: &str, text: &str, ceiling: u32) -> Result<Template, Vec<TemplateProblem>> {
    // Editors on some systems start UTF-8 files with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The configuration's INI reader, so templates follow the same oslo rules (no escape
    // processing, a value wholly in matching quotes loses them, a trailing backslash kept,
    // a line without `=` refused); keys may also stand before any section header.
    let sections =
        ini::parse(Path::new(source), text, ini::Keys::BeforeSection).map_err(|errors| {
            errors
                .into_iter()
                .map(|error| match error {
                    IniError::Syntax { line, message, .. } => {
                        TemplateProblem::Syntax { line, message }
                    }
                    other => TemplateProblem::Syntax {
                        line: 0,
                        message: other.to_string(),
                    },
                })
                .collect::<Vec<_>>()
        })?;

    let mut problems = Vec::new();
    let mut given = Given::default();
    for section in &sections {
        if !section.name.is_empty() {
            check_section(&section.name, &mut problems);
        }
        for (key, value) in &section.entries {
            match VALID_KEYS.iter().position(|valid| valid == key) {
                Some(index) => given.values[index].push(value.trim().to_owned()),
                None => problems.push(TemplateProblem::UnknownKey { key: key.clone() }),
            }
        }
    }
    for (key, values) in VALID_KEYS.iter().zip(&given.values) {
        if values.len() > 1 {
            problems.push(TemplateProblem::Duplicate {
                key,
                values: values.clone(),
            });
        }
    }

    let image = given
        .required("image", &mut problems)
        .and_then(|v| check_text("image", v, &mut problems));
    let min_vms = given
        .required("min_vms", &mut problems)
        .and_then(|v| whole_number("min_vms", v, 0, &mut problems))
        .filter(|(n, _)| {
            if *n == 0 {
                problems.push(TemplateProblem::MinVmsZero);
            }
            *n > 0
        });
    let max_vms = given
        .required("max_vms", &mut problems)
        .and_then(|v| whole_number("max_vms", v, 1, &mut problems));
    let target_response_time = given
        .required("target_response_time", &mut problems)
        .and_then(|v| {
            let seconds = v.parse::<f64>().unwrap_or(f64::NAN);
            response_time(seconds, v, &mut problems)
        });
    let name = match given.lookup("name") {
        Lookup::Given(name) => check_name(name, &mut problems),
        Lookup::Absent => name_from_file(source, &mut problems),
        Lookup::Duplicate => None,
    };
    let mut optional = |key: &'static str| match given.lookup(key) {
        Lookup::Given(value) => check_text(key, value, &mut problems),
        Lookup::Absent | Lookup::Duplicate => None,
    };
    let flavor = optional("flavor");
    let network = optional("network");
    let splitter_image = optional("splitter_image");
    let key_name = optional("key_name");
    let mut emulation = |key: &'static str| match given.lookup(key) {
        Lookup::Given(value) => whole_number(key, value, 1, &mut problems)
            .map(|(n, _)| u32::try_from(n).unwrap_or(u32::MAX)),
        Lookup::Absent | Lookup::Duplicate => None,
    };
    let web_service_time_ms = emulation("web_service_time_ms");
    let web_threads = emulation("web_threads");
    let splitter_port = match given.lookup("splitter_port") {
        Lookup::Given(value) => port(value, &mut problems),
        Lookup::Absent | Lookup::Duplicate => None,
    };
    let site_path = match given.lookup("site_path") {
        Lookup::Given(value) => site_path(value, &mut problems),
        Lookup::Absent | Lookup::Duplicate => None,
    };
    if let (Some(min), Some(max)) = (&min_vms, &max_vms) {
        check_vm_counts(min, max, Some(ceiling), &mut problems);
    }

    // Once checked, both counts are at most the ceiling, a u32.
    let min_vms = min_vms.and_then(|(n, _)| u32::try_from(n).ok());
    let max_vms = max_vms.and_then(|(n, _)| u32::try_from(n).ok());
    match (name, image, min_vms, max_vms, target_response_time) {
        (Some(name), Some(image), Some(min_vms), Some(max_vms), Some(target_response_time))
            if problems.is_empty() =>
        {
            Ok(Template {
                name,
                image,
                min_vms,
                max_vms,
                target_response_time,
                flavor,
                network,
                splitter_image,
                key_name,
                web_service_time_ms,
                web_threads,
                splitter_port,
                site_path,
            })
        }
        _ => {
            debug_assert!(
                !problems.is_empty(),
                "a value is missing but no problem says why"
            );
            Err(problems)
        }
    }
}

/// The values given for each key, by index in `VALID_KEYS`.
#[derive(Default)]
struct Given {
    values: [Vec<String>; VALID_KEYS.len()],
}

enum Lookup<'a> {
    Absent,
    Given(&'a str),
    /// Given more than once: already reported, and not checked further.
    Duplicate,
}

impl Given {
    fn lookup(&self, key: &str) -> Lookup<'_> {
        let index = VALID_KEYS.iter().position(|valid| *valid == key);
        match index.map(|i| self.values[i].as_slice()) {
            None | Some([]) => Lookup::Absent,
            Some([value]) => Lookup::Given(value),
            Some(_) => Lookup::Duplicate,
        }
    }

    /// The value of a required key; a missing key is reported.
    fn required(&self, key: &'static str, problems: &mut Vec<TemplateProblem>) -> Option<&str> {
        match self.lookup(key) {
            Lookup::Given(value) => Some(value),
            Lookup::Absent => {
                problems.push(TemplateProblem::Missing {
                    key,
                    expected: expected(key),
                });
                None
            }
            Lookup::Duplicate => None,
        }
    }
}

fn check_section(section: &str, problems: &mut Vec<TemplateProblem>) {
    if section != SECTION {
        problems.push(TemplateProblem::Section {
            section: section.to_owned(),
        });
    }
}

/// A count as given: its value (saturated at `u64::MAX`) and its text, for messages.
type Count = (u64, String);

/// Parses `[0-9]+` (no sign, no blank) that must be `>= minimum`.
fn whole_number(
    key: &'static str,
    text: &str,
    minimum: u32,
    problems: &mut Vec<TemplateProblem>,
) -> Option<Count> {
    let value = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: the one failure left is overflow, which is a very large number.
        Some(text.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        None
    };
    match value {
        Some(value) if value >= u64::from(minimum) => Some((value, text.to_owned())),
        _ => {
            problems.push(TemplateProblem::NotWholeNumber {
                key,
                value: text.to_owned(),
                minimum,
            });
            None
        }
    }
}

/// `min_vms <= max_vms <= ceiling` (`max_vms >= 1` is checked where it is parsed).
fn check_vm_counts(
    min: &Count,
    max: &Count,
    ceiling: Option<u32>,
    problems: &mut Vec<TemplateProblem>,
) {
    if let Some(ceiling) = ceiling {
        if max.0 > u64::from(ceiling) {
            problems.push(TemplateProblem::AboveCeiling {
                max_vms: max.1.clone(),
                ceiling,
            });
        }
    }
    if min.0 > max.0 {
        problems.push(TemplateProblem::MinAboveMax {
            min_vms: min.1.clone(),
            max_vms: max.1.clone(),
        });
    }
}

/// Seconds to a response time, rounded to the nanosecond; `text` is the value as given.
fn response_time(
    seconds: f64,
    text: &str,
    problems: &mut Vec<TemplateProblem>,
) -> Option<Duration> {
    if !(seconds.is_finite() && seconds > 0.0) {
        problems.push(TemplateProblem::NotPositiveSeconds {
            value: text.to_owned(),
        });
        return None;
    }
    // Rounding (not truncating, as `Duration::from_secs_f64` does) makes 0.3 exactly 300 ms,
    // and seconds -> Duration -> seconds a fixed point.
    let nanos = (seconds * 1e9).round();
    if nanos < 1.0 || nanos > MAX_TARGET_RESPONSE_TIME.as_nanos() as f64 {
        problems.push(TemplateProblem::SecondsOutOfRange {
            value: text.to_owned(),
        });
        return None;
    }
    Some(Duration::from_nanos(nanos as u64))
}

/// Exact decimal seconds, shortest form: `0.25`, `2`, `0.000000001`.
fn format_seconds(duration: Duration) -> String {
    let (seconds, nanos) = (duration.as_secs(), duration.subsec_nanos());
    if nanos == 0 {
        return seconds.to_string();
    }
    let fraction = format!("{nanos:09}");
    format!("{seconds}.{}", fraction.trim_end_matches('0'))
}

/// A string value: not empty, and written back to INI unchanged (see `BadText`).
fn check_text(
    key: &'static str,
    value: &str,
    problems: &mut Vec<TemplateProblem>,
) -> Option<String> {
    let defect = if value.is_empty() {
        problems.push(TemplateProblem::Empty {
            key,
            expected: expected(key),
        });
        return None;
    } else if value.chars().any(char::is_control) {
        "contains a control character"
    } else if value.trim() != value {
        "starts or ends with blanks"
    } else if value.ends_with('\\') {
        "ends with a backslash (an INI line continuation)"
    } else {
        return Some(value.to_owned());
    };
    problems.push(TemplateProblem::BadText {
        key,
        value: value.to_owned(),
        defect,
        expected: expected(key),
    });
    None
}

/// `splitter_port`: a whole number from 1 to 65535.
fn port(text: &str, problems: &mut Vec<TemplateProblem>) -> Option<u16> {
    match text.parse::<u16>() {
        Ok(port) if port >= 1 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
        _ => {
            problems.push(TemplateProblem::BadPort {
                value: text.to_owned(),
            });
            None
        }
    }
}

/// `site_path`, checked by [`check_site_path`].
fn site_path(text: &str, problems: &mut Vec<TemplateProblem>) -> Option<String> {
    match check_site_path(text) {
        Ok(()) => Some(text.to_owned()),
        Err(reason) => {
            problems.push(TemplateProblem::BadSitePath {
                value: text.to_owned(),
                reason,
            });
            None
        }
    }
}

/// Checks a `site_path`: it starts and ends with `/`; its segments are non-empty runs of
/// letters, digits, `.`, `_`, `~` and `-` (unreserved URL characters: the splitter writes
/// the path into Apache's configuration and a rewrite pattern, and clients type it as
/// is), none of them `.` or `..`; at most [`SITE_PATH_MAX_LEN`] characters; and not under
/// [`STATUS_PATH`], which the splitter's agent needs. The error says what is wrong.
pub fn check_site_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || !path.ends_with('/') {
        return Err("it must start and end with '/'".into());
    }
    if path.len() > SITE_PATH_MAX_LEN {
        return Err(format!(
            "it is {} characters long: at most {SITE_PATH_MAX_LEN} are allowed",
            path.len()
        ));
    }
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._~-".contains(*c)))
    {
        return Err(format!(
            "it contains {bad:?}: only letters, digits, '/', '.', '_', '~' and '-' are allowed"
        ));
    }
    if path.len() > 1 {
        let inner = &path[1..path.len() - 1];
        if inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err("it has an empty, '.' or '..' segment".into());
        }
    }
    if path.starts_with(STATUS_PATH) {
        return Err(format!(
            "{STATUS_PATH} is the splitter's status worker, which its agent reads"
        ));
    }
    Ok(())
}

fn check_name(name: &str, problems: &mut Vec<TemplateProblem>) -> Option<String> {
    match validate_name(name) {
        Ok(()) => Some(name.to_owned()),
        Err(reason) => {
            problems.push(TemplateProblem::BadName {
                value: name.to_owned(),
                reason,
            });
            None
        }
    }
}

/// Without a `name` key the file's stem is the name (`shop` for `/x/shop.template`).
fn name_from_file(source: &str, problems: &mut Vec<TemplateProblem>) -> Option<String> {
    let stem = Path::new(source)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match validate_name(&stem) {
        Ok(()) => Some(stem),
        Err(reason) => {
            problems.push(TemplateProblem::NameFromFileName { stem, reason });
            None
        }
    }
}

/// The serde form of a [`Template`]: same keys as the INI file, the response time in seconds
/// (`"target_response_time": 0.25`). Converting it back re-checks every invariant but the
/// ceiling, which belongs to whoever loads the template from a file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    name: String,
    image: String,
    min_vms: u32,
    max_vms: u32,
    target_response_time: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    splitter_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    web_service_time_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    web_threads: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    splitter_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site_path: Option<String>,
}

/// Names a deserialized template in its errors, which have no file to name.
const SERIALIZED_SOURCE: &str = "serialized template";

impl TryFrom<RawTemplate> for Template {
    type Error = TemplateError;

    fn try_from(raw: RawTemplate) -> Result<Template, TemplateError> {
        let mut problems = Vec::new();
        let name = check_name(&raw.name, &mut problems);
        let image = check_text("image", &raw.image, &mut problems);
        let mut optional = |key: &'static str, value: Option<String>| {
            value.and_then(|v| check_text(key, &v, &mut problems))
        };
        let flavor = optional("flavor", raw.flavor);
        let network = optional("network", raw.network);
        let splitter_image = optional("splitter_image", raw.splitter_image);
        let key_name = optional("key_name", raw.key_name);
        let seconds = raw.target_response_time;
        let target_response_time = response_time(seconds, &seconds.to_string(), &mut problems);
        if raw.max_vms == 0 {
            problems.push(TemplateProblem::NotWholeNumber {
                key: "max_vms",
                value: "0".to_owned(),
                minimum: 1,
            });
        }
        for (key, value) in [
            ("web_service_time_ms", raw.web_service_time_ms),
            ("web_threads", raw.web_threads),
        ] {
            if value == Some(0) {
                problems.push(TemplateProblem::NotWholeNumber {
                    key,
                    value: "0".to_owned(),
                    minimum: 1,
                });
            }
        }
        if raw.splitter_port == Some(0) {
            problems.push(TemplateProblem::BadPort {
                value: "0".to_owned(),
            });
        }
        let site_path = raw
            .site_path
            .and_then(|path| self::site_path(&path, &mut problems));
        let count = |n: u32| (u64::from(n), n.to_string());
        check_vm_counts(
            &count(raw.min_vms),
            &count(raw.max_vms),
            None,
            &mut problems,
        );

        match (name, image, target_response_time) {
            (Some(name), Some(image), Some(target_response_time)) if problems.is_empty() => {
                Ok(Template {
                    name,
                    image,
                    min_vms: raw.min_vms,
                    max_vms: raw.max_vms,
                    target_response_time,
                    flavor,
                    network,
                    splitter_image,
                    key_name,
                    web_service_time_ms: raw.web_service_time_ms,
                    web_threads: raw.web_threads,
                    splitter_port: raw.splitter_port,
                    site_path,
                })
            }
            _ => Err(TemplateError::new(SERIALIZED_SOURCE, problems)),
        }
    }
}

impl From<Template> for RawTemplate {
    fn from(template: Template) -> RawTemplate {
        RawTemplate {
            name: template.name,
            image: template.image,
            min_vms: template.min_vms,
            max_vms: template.max_vms,
            target_response_time: template.target_response_time.as_secs_f64(),
            flavor: template.flavor,
            network: template.network,
            splitter_image: template.splitter_image,
            key_name: template.key_name,
            web_service_time_ms: template.web_service_time_ms,
            web_threads: template.web_threads,
            splitter_port: template.splitter_port,
            site_path: template.site_path,
        }
    }
}
