//! The declaration table each section file fills in ([`SectionDecl`], [`OptDecl`]: name,
//! kind, default, help, mutability, once per option) and the pure parsers that turn an INI
//! string into a typed value or say what was expected. The loader, the validator and the
//! generated sample are all driven by these tables.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use crate::{messaging::TransportUrl, store::DatabaseUrl};

/// One allowed value of a choice or list option, with the line the sample shows for it.
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub value: &'static str,
    pub help: &'static str,
}

/// An option's type, with the bounds its values must respect.
#[derive(Debug, Clone, Copy)]
pub enum OptKind {
    /// `true/false`, `yes/no`, `on/off`, `1/0`, any case (oslo's `types.Boolean`).
    Bool,
    /// A whole number within the inclusive bounds. Options counting seconds use this
    /// kind and are typed as `Duration`.
    Integer { min: Option<i64>, max: Option<i64> },
    /// A finite number of seconds, fractions allowed, within the inclusive bounds; typed as
    /// `Duration`.
    Seconds { min: f64, max: Option<f64> },
    /// A non-empty string.
    String,
    /// A string; empty means unset.
    OptionalString,
    /// A string that must never be shown (a password, a token); empty means unset.
    Secret,
    /// A non-empty file system path.
    Path,
    /// A path; empty means unset.
    OptionalPath,
    /// Comma-separated items, trimmed, empty items dropped; each one of `choices` unless
    /// that is empty.
    List { choices: &'static [Choice] },
    /// Exactly one of `choices` (case-sensitive, as oslo).
    Choice { choices: &'static [Choice] },
    /// An oslo.messaging transport URL; never echoed with its password.
    TransportUrl,
    /// A transport URL; empty means unset.
    OptionalTransportUrl,
    /// An oslo.db database URL (`[database] connection`); empty means unset. Never
    /// echoed with its password.
    OptionalDatabaseUrl,
    /// An IPv4 network inside 127.0.0.0/8 in CIDR notation (`[local] address_pool`).
    LoopbackNetwork,
}

/// One option: declared once, it yields the typed value, its validation and its sample.
#[derive(Debug, Clone, Copy)]
pub struct OptDecl {
    /// The oslo option name; the typed field is spelled the same.
    pub name: &'static str,
    pub kind: OptKind,
    /// As it would be written in the INI file; `None` when there is no default or it is
    /// computed at run time (see `sample_default`).
    pub default: Option<&'static str>,
    /// What the sample shows instead of `default`, e.g. `<hostname>`.
    pub sample_default: Option<&'static str>,
    pub help: &'static str,
    /// Reloadable on SIGHUP without a restart.
    pub mutable: bool,
}

impl OptDecl {
    pub const fn new(
        name: &'static str,
        kind: OptKind,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        OptDecl {
            name,
            kind,
            default,
            sample_default: None,
            help,
            mutable: false,
        }
    }

    /// Marks the option reloadable on SIGHUP.
    pub const fn mutable(self) -> Self {
        OptDecl {
            mutable: true,
            ..self
        }
    }

    /// Shows `text` in the sample in place of a default computed at run time.
    pub const fn sample_default(self, text: &'static str) -> Self {
        OptDecl {
            sample_default: Some(text),
            ..self
        }
    }

    /// The value as an error may show it: a transport URL loses its passwords.
    pub fn shown_value(&self, text: &str) -> String {
        match self.kind {
            OptKind::TransportUrl
            | OptKind::OptionalTransportUrl
            | OptKind::OptionalDatabaseUrl => redact_transport_url(text),
            OptKind::Secret => "***".to_owned(),
            _ => text.to_owned(),
        }
    }
}

/// One `[section]` and its options, in the order the sample lists them.
#[derive(Debug, Clone, Copy)]
pub struct SectionDecl {
    pub name: &'static str,
    pub help: &'static str,
    pub opts: &'static [OptDecl],
}

impl SectionDecl {
    pub fn opt(&self, name: &str) -> Option<&'static OptDecl> {
        self.opts.iter().find(|o| o.name == name)
    }
}

/// A validated option value, before it is moved into its typed field.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Bool(bool),
    Integer(i64),
    Seconds(Duration),
    String(String),
    Path(PathBuf),
    /// An optional string or path left empty.
    Unset,
    List(Vec<String>),
    TransportUrl(TransportUrl),
    DatabaseUrl(DatabaseUrl),
}

impl OptKind {
    /// Parses `text` as written in the INI file (already trimmed); the error says what
    /// was expected and never contains a transport URL's password.
    pub(super) fn parse(&self, text: &str) -> Result<Value, String> {
        let text = text.trim();
        let expected = || format!("expected {}", self.expected());
        match *self {
            OptKind::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(expected()),
            },
            OptKind::Integer { min, max } => {
                let n: i64 = text.parse().map_err(|_| expected())?;
                let in_range = min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
                in_range.then_some(Value::Integer(n)).ok_or_else(expected)
            }
            OptKind::Seconds { min, max } => {
                let x: f64 = text.parse().map_err(|_| expected())?;
                let in_range = x.is_finite() && x >= min && max.is_none_or(|m| x <= m);
                // `min` is never negative in a declaration, so from_secs_f64 cannot panic.
                in_range
                    .then(|| Value::Seconds(Duration::from_secs_f64(x)))
                    .ok_or_else(expected)
            }
            OptKind::String | OptKind::Path if text.is_empty() => Err(expected()),
            OptKind::OptionalString | OptKind::OptionalPath | OptKind::Secret
                if text.is_empty() =>
            {
                Ok(Value::Unset)
            }
            OptKind::String | OptKind::OptionalString | OptKind::Secret => {
                Ok(Value::String(text.to_owned()))
            }
            OptKind::Path | OptKind::OptionalPath => Ok(Value::Path(PathBuf::from(text))),
            OptKind::List { choices } => {
                let items: Vec<String> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect();
                match items.iter().find(|item| !is_choice(choices, item)) {
                    Some(bad) => Err(format!("{} ({bad:?} is not one)", expected())),
                    None => Ok(Value::List(items)),
                }
            }
            OptKind::Choice { choices } => {
                if is_choice(choices, text) {
                    Ok(Value::String(text.to_owned()))
                } else {
                    Err(expected())
                }
            }
            OptKind::OptionalTransportUrl if text.is_empty() => Ok(Value::Unset),
            OptKind::TransportUrl | OptKind::OptionalTransportUrl => text
                .parse::<TransportUrl>()
                .map(Value::TransportUrl)
                .map_err(|e| format!("not a valid transport URL: {e}")),
            OptKind::OptionalDatabaseUrl if text.is_empty() => Ok(Value::Unset),
            // UrlError never quotes the text, so the password stays out of the message.
            OptKind::OptionalDatabaseUrl => text
                .parse::<DatabaseUrl>()
                .map(Value::DatabaseUrl)
                .map_err(|e| format!("not a valid database URL: {e}")),
            // CidrV4's reason already reads "expected ... (why)".
            OptKind::LoopbackNetwork => text
                .parse::<super::cidr::CidrV4>()
                .map(|_| Value::String(text.to_owned())),
        }
    }

    /// What a valid value looks like, for error messages: completes "expected ...".
    pub fn expected(&self) -> String {
        match *self {
            OptKind::Bool => "a boolean (true/false, yes/no, on/off or 1/0)".to_owned(),
            OptKind::Integer { min, max } => match (min, max) {
                (Some(min), Some(max)) => format!("an integer from {min} to {max}"),
                (Some(min), None) => format!("an integer of at least {min}"),
                (None, Some(max)) => format!("an integer of at most {max}"),
                (None, None) => "an integer".to_owned(),
            },
            OptKind::Seconds { min, max } => match max {
                Some(max) => format!("a number of seconds from {min} to {max}"),
                None => format!("a number of seconds of at least {min}"),
            },
            OptKind::String => "a non-empty string".to_owned(),
            OptKind::OptionalString | OptKind::Secret => "a string".to_owned(),
            OptKind::Path => "a non-empty path".to_owned(),
            OptKind::OptionalPath => "a path".to_owned(),
            OptKind::List { choices: [] } => "a comma-separated list".to_owned(),
            OptKind::List { choices } => {
                format!("a comma-separated list of {}", choice_names(choices))
            }
            OptKind::Choice { choices } => format!("one of {}", choice_names(choices)),
            OptKind::TransportUrl | OptKind::OptionalTransportUrl => {
                "a transport URL such as rabbit://user:pass@host:5672/".to_owned()
            }
            OptKind::OptionalDatabaseUrl => {
                "a database URL such as sqlite:////var/lib/autoscaler/autoscaler.sqlite or \
                 mysql+pymysql://user:password@host/autoscaler"
                    .to_owned()
            }
            OptKind::LoopbackNetwork => super::cidr::CidrV4::EXPECTED
                .trim_start_matches("expected ")
                .to_owned(),
        }
    }

    /// oslo-config-generator's name for the type, as in `# (integer value)`.
    pub fn type_name(&self) -> &'static str {
        match self {
            OptKind::Bool => "boolean",
            OptKind::Integer { .. } => "integer",
            OptKind::Seconds { .. } => "floating point",
            // oslo has no path type: paths are string options.
            OptKind::String
            | OptKind::OptionalString
            | OptKind::Secret
            | OptKind::Path
            | OptKind::OptionalPath
            | OptKind::Choice { .. }
            | OptKind::LoopbackNetwork
            // oslo.db declares `connection` a (secret) string option.
            | OptKind::OptionalDatabaseUrl => "string",
            OptKind::List { .. } => "list",
            OptKind::TransportUrl | OptKind::OptionalTransportUrl => "uri",
        }
    }
}

fn is_choice(choices: &[Choice], text: &str) -> bool {
    choices.is_empty() || choices.iter().any(|c| c.value == text)
}

/// `a, b, c or d`.
fn choice_names(choices: &[Choice]) -> String {
    let names: Vec<&str> = choices.iter().map(|c| c.value).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// `text` with the password of each host entry replaced by `***`, for error messages
/// about a `transport_url` that did not parse (a parsed one has a redacting `Display`).
///
/// Malformed input is the case this exists for, so it errs on the side of hiding: an
/// entry is only shown as-is when it is clearly `host[:port]`; if an entry without `@`
/// comes before one with `@` (a password holding a raw `,`), everything up to the last
/// `@` is hidden.
pub fn redact_transport_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(i) => text.split_at(i + 3),
        None => ("", text),
    };
    let Some(last_at) = rest.rfind('@') else {
        // No user info, so no password.
        return text.to_owned();
    };
    let netloc_end = rest[last_at..]
        .find(['/', '?'])
        .map_or(rest.len(), |i| last_at + i);
    let (netloc, tail) = rest.split_at(netloc_end);
    let entries: Vec<&str> = netloc.split(',').collect();
    let first_with_at = entries.iter().position(|e| e.contains('@'));
    let last_without_at = entries.iter().rposition(|e| !e.contains('@'));
    let ambiguous = matches!((last_without_at, first_with_at), (Some(w), Some(a)) if w < a);
    if ambiguous {
        return format!("{scheme}***{}", &rest[last_at..]);
    }
    let redacted: Vec<String> = entries
        .iter()
        .map(|entry| match entry.rfind('@') {
            Some(at) => {
                let userinfo = &entry[..at];
                match userinfo.find(':') {
                    Some(colon) => format!("{}:***{}", &userinfo[..colon], &entry[at..]),
                    None => (*entry).to_owned(),
                }
            }
            None => (*entry).to_owned(),
        })
        .collect();
    format!("{scheme}{}{tail}", redacted.join(","))
}

/// Validated values of all sections, keyed by (section, option); later files replace
/// earlier ones.
pub(super) type Values = BTreeMap<(&'static str, &'static str), Value>;

/// Typed read access to one section's values, falling back to the declared defaults. The
/// getters panic when the code asks for an undeclared option or a different kind: that is
/// a bug in a declaration, caught by the tests that build `Config::default()`.
pub(super) struct SectionValues<'a> {
    decl: &'static SectionDecl,
    values: &'a Values,
    /// Options read so far, so a test can check that every declared option has a field.
    read: RefCell<BTreeSet<&'static str>>,
}

impl<'a> SectionValues<'a> {
    pub(super) fn new(decl: &'static SectionDecl, values: &'a Values) -> Self {
        SectionValues {
            decl,
            values,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// Declared options no typed field has read.
    pub(super) fn unread(&self) -> Vec<&'static str> {
        let read = self.read.borrow();
        self.decl
            .opts
            .iter()
            .map(|o| o.name)
            .filter(|name| !read.contains(name))
            .collect()
    }

    fn value(&self, name: &str) -> Option<Value> {
        let section = self.decl.name;
        let opt = self
            .decl
            .opt(name)
            .unwrap_or_else(|| panic!("[{section}] {name} is read but not declared"));
        self.read.borrow_mut().insert(opt.name);
        if let Some(value) = self.values.get(&(section, opt.name)) {
            return Some(value.clone());
        }
        opt.default.map(|text| {
            opt.kind.parse(text).unwrap_or_else(|e| {
                panic!("[{section}] {name}: the declared default {text:?} is invalid: {e}")
            })
        })
    }

    fn required(&self, name: &str) -> Value {
        self.value(name).unwrap_or_else(|| {
            panic!(
                "[{}] {name} has no default and none was computed",
                self.decl.name
            )
        })
    }

    fn mismatch(&self, name: &str, wanted: &str, value: &Value) -> ! {
        panic!(
            "[{}] {name} is read as {wanted} but its declared kind gave {value:?}",
            self.decl.name
        )
    }

    pub(super) fn bool(&self, name: &str) -> bool {
        match self.required(name) {
            Value::Bool(b) => b,
            other => self.mismatch(name, "a boolean", &other),
        }
    }

    /// An integer option, converted to the field's type (the declared bounds keep it in
    /// range).
    pub(super) fn int<T: TryFrom<i64>>(&self, name: &str) -> T {
        match self.required(name) {
            Value::Integer(n) => T::try_from(n).unwrap_or_else(|_| {
                panic!(
                    "[{}] {name} = {n} does not fit its field; check its declared bounds",
                    self.decl.name
                )
            }),
            other => self.mismatch(name, "an integer", &other),
        }
    }

    /// An integer or floating point number of seconds.
    pub(super) fn duration(&self, name: &str) -> Duration {
        match self.required(name) {
            Value::Integer(n) => Duration::from_secs(u64::try_from(n).unwrap_or_else(|_| {
                panic!(
                    "[{}] {name} = {n} is negative; declare min 0",
                    self.decl.name
                )
            })),
            Value::Seconds(d) => d,
            other => self.mismatch(name, "seconds", &other),
        }
    }

    pub(super) fn string(&self, name: &str) -> String {
        self.string_or_else(name, || {
            panic!("[{}] {name} has no default", self.decl.name)
        })
    }

    /// A string option whose default is computed at run time by `default`.
    pub(super) fn string_or_else(&self, name: &str, default: impl FnOnce() -> String) -> String {
        match self.value(name) {
            None => default(),
            Some(Value::String(s)) => s,
            Some(other) => self.mismatch(name, "a string", &other),
        }
    }

    /// A string option that may be unset (no default, or left empty).
    pub(super) fn optional_string(&self, name: &str) -> Option<String> {
        match self.value(name) {
            None | Some(Value::Unset) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => self.mismatch(name, "an optional string", &other),
        }
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        match self.required(name) {
            Value::Path(p) => p,
            other => self.mismatch(name, "a path", &other),
        }
    }

    pub(super) fn optional_path(&self, name: &str) -> Option<PathBuf> {
        match self.value(name) {
            None | Some(Value::Unset) => None,
            Some(Value::Path(p)) => Some(p),
            Some(other) => self.mismatch(name, "an optional path", &other),
        }
    }

    pub(super) fn list(&self, name: &str) -> Vec<String> {
        match self.required(name) {
            Value::List(items) => items,
            other => self.mismatch(name, "a list", &other),
        }
    }

    pub(super) fn optional_transport_url(&self, name: &str) -> Option<TransportUrl> {
        match self.value(name) {
            None | Some(Value::Unset) => None,
            Some(Value::TransportUrl(url)) => Some(url),
            Some(other) => self.mismatch(name, "an optional transport URL", &other),
        }
    }

    pub(super) fn optional_database_url(&self, name: &str) -> Option<DatabaseUrl> {
        match self.value(name) {
            None | Some(Value::Unset) => None,
            Some(Value::DatabaseUrl(url)) => Some(url),
            Some(other) => self.mismatch(name, "an optional database URL", &other),
        }
    }

    pub(super) fn transport_url(&self, name: &str) -> TransportUrl {
        match self.required(name) {
            Value::TransportUrl(url) => url,
            other => self.mismatch(name, "a transport URL", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLORS: &[Choice] = &[
        Choice {
            value: "red",
            help: "warm",
        },
        Choice {
            value: "blue",
            help: "cold",
        },
    ];

    #[test]
    fn bool_accepts_oslo_spellings_in_any_case() {
        for t in ["true", "True", "TRUE", "yes", "Yes", "on", "ON", "1"] {
            assert_eq!(OptKind::Bool.parse(t), Ok(Value::Bool(true)), "{t}");
        }
        for f in ["false", "False", "no", "NO", "off", "Off", "0"] {
            assert_eq!(OptKind::Bool.parse(f), Ok(Value::Bool(false)), "{f}");
        }
        for bad in ["", "2", "y", "enabled", "truee"] {
            let err = OptKind::Bool.parse(bad).unwrap_err();
            assert_eq!(
                err,
                "expected a boolean (true/false, yes/no, on/off or 1/0)"
            );
        }
    }

    #[test]
    fn integer_respects_bounds_and_says_them() {
        let kind = OptKind::Integer {
            min: Some(1),
            max: Some(10),
        };
        assert_eq!(kind.parse(" 10 "), Ok(Value::Integer(10)));
        assert_eq!(kind.parse("+1"), Ok(Value::Integer(1)));
        for bad in ["0", "11", "1.5", "ten", "", "99999999999999999999"] {
            assert_eq!(
                kind.parse(bad).unwrap_err(),
                "expected an integer from 1 to 10",
                "{bad}"
            );
        }
        let at_least = OptKind::Integer {
            min: Some(0),
            max: None,
        };
        assert_eq!(
            at_least.parse("-1").unwrap_err(),
            "expected an integer of at least 0"
        );
        assert_eq!(at_least.parse("1000000"), Ok(Value::Integer(1_000_000)));
    }

    #[test]
    fn seconds_become_durations_and_must_be_finite() {
        let kind = OptKind::Seconds {
            min: 0.1,
            max: Some(60.0),
        };
        assert_eq!(
            kind.parse("0.25"),
            Ok(Value::Seconds(Duration::from_millis(250)))
        );
        assert_eq!(
            kind.parse("60"),
            Ok(Value::Seconds(Duration::from_secs(60)))
        );
        assert_eq!(
            kind.parse("1e1"),
            Ok(Value::Seconds(Duration::from_secs(10)))
        );
        for bad in ["0", "0.05", "60.5", "inf", "NaN", "-1", "1s", ""] {
            assert_eq!(
                kind.parse(bad).unwrap_err(),
                "expected a number of seconds from 0.1 to 60",
                "{bad}"
            );
        }
    }

    #[test]
    fn strings_and_paths_required_or_optional() {
        assert_eq!(
            OptKind::String.parse("").unwrap_err(),
            "expected a non-empty string"
        );
        assert_eq!(OptKind::OptionalString.parse(""), Ok(Value::Unset));
        assert_eq!(
            OptKind::Path.parse("").unwrap_err(),
            "expected a non-empty path"
        );
        assert_eq!(
            OptKind::OptionalPath.parse("/var/log"),
            Ok(Value::Path("/var/log".into()))
        );
        assert_eq!(OptKind::OptionalPath.parse(""), Ok(Value::Unset));
    }

    #[test]
    fn list_splits_on_commas_trims_and_drops_empty_items() {
        let kind = OptKind::List { choices: &[] };
        assert_eq!(
            kind.parse(" a , b,,c ,"),
            Ok(Value::List(vec!["a".into(), "b".into(), "c".into()]))
        );
        assert_eq!(kind.parse(""), Ok(Value::List(vec![])));
        assert_eq!(
            kind.parse("one,\ntwo"),
            Ok(Value::List(vec!["one".into(), "two".into()]))
        );
    }

    #[test]
    fn list_with_choices_names_the_bad_item() {
        let kind = OptKind::List { choices: COLORS };
        assert_eq!(
            kind.parse("blue, red"),
            Ok(Value::List(vec!["blue".into(), "red".into()]))
        );
        assert_eq!(
            kind.parse("blue,green").unwrap_err(),
            "expected a comma-separated list of red or blue (\"green\" is not one)"
        );
    }

    #[test]
    fn choice_is_one_of_the_list_case_sensitive() {
        let kind = OptKind::Choice { choices: COLORS };
        assert_eq!(kind.parse("red"), Ok(Value::String("red".into())));
        assert_eq!(
            kind.parse("Red").unwrap_err(),
            "expected one of red or blue"
        );
    }

    #[test]
    fn transport_url_error_does_not_echo_the_url() {
        let err = OptKind::TransportUrl
            .parse("http://user:s3cret@host/")
            .unwrap_err();
        assert!(err.starts_with("not a valid transport URL: "), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn redaction_hides_every_password() {
        let cases = [
            ("rabbit://u:pw@h:5672/", "rabbit://u:***@h:5672/"),
            (
                "rabbit://a:one@h1:5672,b:two@h2:5672/vh?heartbeat=5",
                "rabbit://a:***@h1:5672,b:***@h2:5672/vh?heartbeat=5",
            ),
            ("rabbit://h1:5672,h2/", "rabbit://h1:5672,h2/"),
            ("rabbit://u@h/", "rabbit://u@h/"),
            // Raw `@` and `/` in a password: the last `@` ends the user info.
            ("rabbit://u:p@s/s@h:x/", "rabbit://u:***@h:x/"),
            // Raw `,` in a password: everything up to the last `@` is hidden.
            ("rabbit://u:1,2@h/", "rabbit://***@h/"),
            ("u:pw@h", "u:***@h"),
        ];
        for (input, want) in cases {
            assert_eq!(redact_transport_url(input), want, "{input}");
        }
    }

    #[test]
    fn expected_texts_read_well() {
        let k = OptKind::Integer {
            min: None,
            max: Some(5),
        };
        assert_eq!(k.expected(), "an integer of at most 5");
        let k = OptKind::Seconds {
            min: 1.0,
            max: None,
        };
        assert_eq!(k.expected(), "a number of seconds of at least 1");
    }
}
