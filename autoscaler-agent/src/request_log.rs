//! The mod_jk request-log line parser: one line of the `JkLogFile` in, a classified
//! [`Line`] out. Pure: no I/O, no clock, no allocation, no panic on any input.
//!
//! The file mixes three kinds of line (see `/work/shared/notes/webtier.md`, "The request
//! log", and mod_jk's `request_log_transaction` and `jk_log`):
//!
//! - requests in the seed's `JkRequestLogFormat "%w %V %T"`:
//!   `[Fri Nov 27 19:12:26 2026]loadbalancer 127.0.0.1 0.080683`;
//! - requests in the splitter's `"%w %R %V %T %s"` (with
//!   `JkLogStampFormat "[%a %b %d %H:%M:%S.%Q %Y] "`):
//!   `[Fri Nov 27 19:27:10.185 2026] loadbalancer worker1 127.0.0.1 0.051356 200`,
//!   and the design's `"%w %R %V %T"` (the same without the status);
//! - mod_jk's own messages, `[stamp] [pid:tid] [level] function::file (line): text`.
//!
//! The stamp is checked only for shape (bracketed printable ASCII, any `strftime` layout,
//! with or without a space after it): the agent aggregates by arrival time, not by stamp.
//! The fields are checked strictly, so a line of another format is [`Line::Malformed`]
//! rather than a wrong measurement: the field count must be 3, 4 or 5, no field may be
//! empty, `%T` must be `seconds[.fraction]` in plain digits, `%s` a status 100-599.
//! mod_jk writes `-` for a value it does not have; that is `None` for `%R` and `%s`, and
//! malformed for `%T`, without which a request says nothing about response time.

use std::time::Duration;

/// A request line, borrowing from the line it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestRecord<'a> {
    /// `%w`: the worker the request was mapped to; the load balancer (e.g. `loadbalancer`).
    pub(crate) worker: &'a str,
    /// `%R`: the balancer member that served it; `None` in the seed's format or when mod_jk
    /// logged `-` (no member was reached).
    pub(crate) member: Option<&'a str>,
    /// `%V`: the server name of the virtual host.
    pub(crate) vhost: &'a str,
    /// `%T`: time from mod_jk's start of the request to its end, queueing in Tomcat included.
    pub(crate) duration: Duration,
    /// `%s`: the HTTP status sent; `None` when the format has no `%s` or mod_jk logged `-`.
    pub(crate) status: Option<u16>,
}

/// What one log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    Request(RequestRecord<'a>),
    /// One of mod_jk's own messages (`[pid:tid] [level]` after the stamp): not a request.
    Message,
    Malformed(Defect),
}

/// Why a line is [`Line::Malformed`]: for tests and debug logs; all are counted alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Defect {
    /// Empty, or only whitespace.
    Empty,
    /// No `[stamp]` at the start, or a stamp that is empty, too long or not printable ASCII.
    Stamp,
    /// After the stamp, `[` that does not open mod_jk's `[pid:tid] [level]`.
    MessagePrefix,
    /// Not 3, 4 or 5 space-separated fields.
    FieldCount,
    /// Two spaces in a row: an empty field.
    EmptyField,
    /// `%T` is not `digits[.digits]` (at most 12 integer and 9 fraction digits).
    Duration,
    /// `%s` is neither `-` nor a number 100-599.
    Status,
}

/// The longest stamp accepted, in bytes: mod_jk's default and ours are 26-30, so this
/// leaves room for other `JkLogStampFormat`s while bounding the search for `]`.
const MAX_STAMP: usize = 64;

/// Classifies one line; a trailing `\r`, `\n` or spaces are ignored.
pub(crate) fn parse(line: &str) -> Line<'_> {
    let line = line.trim_end_matches([' ', '\r', '\n']);
    if line.is_empty() {
        return Line::Malformed(Defect::Empty);
    }
    let Some(body) = strip_stamp(line) else {
        return Line::Malformed(Defect::Stamp);
    };
    // The seed's stamp format has no trailing space, mod_jk's default and ours have one.
    let body = body.strip_prefix(' ').unwrap_or(body);
    if body.starts_with('[') {
        return if is_message_prefix(body) {
            Line::Message
        } else {
            Line::Malformed(Defect::MessagePrefix)
        };
    }
    match parse_fields(body) {
        Ok(record) => Line::Request(record),
        Err(defect) => Line::Malformed(defect),
    }
}

/// The line after `[stamp]`, or `None` when it does not start with a plausible stamp.
fn strip_stamp(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    if bytes.first() != Some(&b'[') {
        return None;
    }
    let window = &bytes[1..bytes.len().min(MAX_STAMP + 2)];
    let close = window.iter().position(|&b| b == b']')?;
    let stamp = &window[..close];
    let printable = stamp
        .iter()
        .all(|&b| (b' '..=b'~').contains(&b) && b != b'[');
    if stamp.is_empty() || !printable {
        return None;
    }
    // `[` and `]` are ASCII, so close + 2 is a char boundary.
    line.get(close + 2..)
}

/// Whether `body` starts with `[pid:tid] [level]` as `jk_log` writes for every level but
/// the request level (`[%d:%lu] ` then `[debug] `, `[info] `, ...).
fn is_message_prefix(body: &str) -> bool {
    fn bracketed(text: &str) -> Option<(&str, &str)> {
        let inner = text.strip_prefix('[')?;
        let close = inner.find(']')?;
        Some((&inner[..close], &inner[close + 1..]))
    }
    let Some((ids, rest)) = bracketed(body) else {
        return false;
    };
    let Some((pid, tid)) = ids.split_once(':') else {
        return false;
    };
    // The thread id's format is platform-dependent (decimal on Linux, hex elsewhere).
    let ids_ok = !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !tid.is_empty()
        && tid.bytes().all(|b| b.is_ascii_alphanumeric());
    let level_ok = match bracketed(rest.strip_prefix(' ').unwrap_or(rest)) {
        Some((level, _)) => !level.is_empty() && level.bytes().all(|b| b.is_ascii_lowercase()),
        None => false,
    };
    ids_ok && level_ok
}

/// The request fields after the stamp: `%w %V %T`, `%w %R %V %T` or `%w %R %V %T %s`.
fn parse_fields(body: &str) -> Result<RequestRecord<'_>, Defect> {
    // At most 5 fields are kept; a sixth means the line is not one of our formats.
    let mut fields = [""; 5];
    let mut count = 0;
    for field in body.split(' ') {
        if count == fields.len() {
            return Err(Defect::FieldCount);
        }
        fields[count] = field;
        count += 1;
    }
    let (worker, member, vhost, duration, status) = match count {
        3 => (fields[0], None, fields[1], fields[2], None),
        4 => (fields[0], Some(fields[1]), fields[2], fields[3], None),
        5 => (
            fields[0],
            Some(fields[1]),
            fields[2],
            fields[3],
            Some(fields[4]),
        ),
        _ => return Err(Defect::FieldCount),
    };
    if fields[..count].iter().any(|f| f.is_empty()) {
        return Err(Defect::EmptyField);
    }
    Ok(RequestRecord {
        worker,
        member: member.filter(|m| *m != "-"),
        vhost,
        duration: parse_seconds(duration).ok_or(Defect::Duration)?,
        status: match status {
            None | Some("-") => None,
            Some(text) => Some(parse_status(text).ok_or(Defect::Status)?),
        },
    })
}

/// `%T`: mod_jk writes `%d.%06d`; any `digits[.digits]` with up to 12 integer digits (no
/// overflow) and 9 fraction digits (nanoseconds) is accepted. Signs, exponents, `inf` and
/// `NaN` are not digits, so they are rejected by construction.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() => (whole, fraction),
        Some(_) => return None,
        None => (text, ""),
    };
    if whole.is_empty() || whole.len() > 12 || fraction.len() > 9 {
        return None;
    }
    let secs = digits(whole)?;
    let mut nanos = digits(fraction)?;
    for _ in fraction.len()..9 {
        nanos *= 10;
    }
    // nanos < 10^9 by the length check, so this cannot overflow or panic.
    Some(Duration::new(secs, nanos as u32))
}

/// The value of a string of ASCII digits (0 for ""); the caller bounds the length.
fn digits(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |value, b| {
        b.is_ascii_digit().then(|| value * 10 + u64::from(b - b'0'))
    })
}

/// `%s`: three digits, 100-599.
fn parse_status(text: &str) -> Option<u16> {
    if text.len() != 3 {
        return None;
    }
    let value = digits(text)?;
    (100..=599).contains(&value).then_some(value as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(
        worker: &'static str,
        member: Option<&'static str>,
        vhost: &'static str,
        micros: u64,
        status: Option<u16>,
    ) -> Line<'static> {
        Line::Request(RequestRecord {
            worker,
            member,
            vhost,
            duration: Duration::from_micros(micros),
            status,
        })
    }

    #[test]
    fn request_lines_of_every_format() {
        let cases = [
            // The seed's format, as measured: no space after the stamp.
            (
                "[Fri Nov 27 19:12:26 2026]loadbalancer 127.0.0.1 0.080683",
                request("loadbalancer", None, "127.0.0.1", 80_683, None),
            ),
            // The seed's format with mod_jk's default stamp (trailing space).
            (
                "[Fri Nov 27 19:12:26 2026] loadbalancer www.example.org 1.500000",
                request("loadbalancer", None, "www.example.org", 1_500_000, None),
            ),
            // The splitter's format, as measured.
            (
                "[Fri Nov 27 19:27:10.185 2026] loadbalancer worker1 127.0.0.1 0.051356 200",
                request(
                    "loadbalancer",
                    Some("worker1"),
                    "127.0.0.1",
                    51_356,
                    Some(200),
                ),
            ),
            // ... without the space, an error status, a CRLF ending.
            (
                "[Fri Nov 27 19:27:10.185 2026]lb worker2 127.0.0.1 12.000001 503\r\n",
                request("lb", Some("worker2"), "127.0.0.1", 12_000_001, Some(503)),
            ),
            // No member reached, no status: mod_jk's `-`.
            (
                "[Fri Nov 27 19:27:10.185 2026] loadbalancer - 127.0.0.1 0.000120 -",
                request("loadbalancer", None, "127.0.0.1", 120, None),
            ),
            // The design's `%w %R %V %T`.
            (
                "[Fri Nov 27 19:27:10 2026] loadbalancer worker3 127.0.0.1 0.2",
                request("loadbalancer", Some("worker3"), "127.0.0.1", 200_000, None),
            ),
            // Whole seconds, boundary statuses.
            (
                "[x] lb w1 h 3 100",
                request("lb", Some("w1"), "h", 3_000_000, Some(100)),
            ),
            (
                "[x] lb w1 h 0.000000 599",
                request("lb", Some("w1"), "h", 0, Some(599)),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "{line:?}");
        }
    }

    #[test]
    fn nanosecond_fraction_is_exact() {
        let Line::Request(r) = parse("[s] lb w h 0.123456789 200") else {
            panic!("not a request");
        };
        assert_eq!(r.duration, Duration::new(0, 123_456_789));
    }

    #[test]
    fn mod_jk_messages_are_classified() {
        for line in [
            "[Fri Nov 27 19:27:10.185 2026] [12345:140234] [info] init_jk::mod_jk.c (3586): mod_jk/1.2.48 initialized",
            "[Fri Nov 27 19:27:10 2026][12345:140234] [error] ajp_connect_to_endpoint::jk_ajp_common.c (1128): (worker1) can't connect",
            "[Fri Nov 27 19:27:10.185 2026] [1:7f3a9c] [debug] x",
        ] {
            assert_eq!(parse(line), Line::Message, "{line:?}");
        }
    }

    #[test]
    fn each_malformed_shape_has_its_defect() {
        let cases = [
            ("", Defect::Empty),
            ("   \r\n", Defect::Empty),
            ("loadbalancer worker1 127.0.0.1 0.05 200", Defect::Stamp),
            ("[Fri Nov 27 19:27:10 2026 lb w h 0.05 200", Defect::Stamp),
            ("[] lb w h 0.05 200", Defect::Stamp),
            ("[Fri\tNov] lb w h 0.05 200", Defect::Stamp),
            ("[Fr[i] lb w h 0.05 200", Defect::Stamp),
            ("[é] lb w h 0.05 200", Defect::Stamp),
            ("[s] [12345] [info] x", Defect::MessagePrefix),
            ("[s] [a:1] [info] x", Defect::MessagePrefix),
            ("[s] [1:2] info x", Defect::MessagePrefix),
            ("[s] [1:2] [INFO] x", Defect::MessagePrefix),
            ("[s] [1:2", Defect::MessagePrefix),
            ("[s]", Defect::FieldCount),
            ("[s] lb", Defect::FieldCount),
            ("[s] lb 0.05", Defect::FieldCount),
            ("[s] lb w h 0.05 200 extra", Defect::FieldCount),
            ("[s] lb  h 0.05", Defect::EmptyField),
            ("[s] lb w h 0.05\t200", Defect::Duration),
            ("[s] lb w h -0.05 200", Defect::Duration),
            ("[s] lb w h NaN 200", Defect::Duration),
            ("[s] lb w h inf 200", Defect::Duration),
            ("[s] lb w h 1e3 200", Defect::Duration),
            ("[s] lb w h .5 200", Defect::Duration),
            ("[s] lb w h 5. 200", Defect::Duration),
            ("[s] lb w h 0.0000000001 200", Defect::Duration),
            ("[s] lb w h 1234567890123 200", Defect::Duration),
            ("[s] lb w h - 200", Defect::Duration),
            ("[s] lb w h +1.0 200", Defect::Duration),
            ("[s] lb w h 0.05 99", Defect::Status),
            ("[s] lb w h 0.05 600", Defect::Status),
            ("[s] lb w h 0.05 0200", Defect::Status),
            ("[s] lb w h 0.05 2x0", Defect::Status),
            ("[s] lb w h 0.05 OK!", Defect::Status),
        ];
        for (line, defect) in cases {
            assert_eq!(parse(line), Line::Malformed(defect), "{line:?}");
        }
    }

    #[test]
    fn overlong_stamp_is_malformed() {
        let line = format!("[{}] lb w h 0.05 200", "x".repeat(MAX_STAMP + 1));
        assert_eq!(parse(&line), Line::Malformed(Defect::Stamp));
        let line = format!("[{}] lb w h 0.05 200", "x".repeat(MAX_STAMP));
        assert!(matches!(parse(&line), Line::Request(_)));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(line in any::<String>()) {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_near_misses(
            line in "\\[[ -~]{0,3}\\] ?[a-z0-9 .:\\[\\]-]{0,40}"
        ) {
            let _ = parse(&line);
        }

        #[test]
        fn any_written_duration_reads_back(micros in 0u64..3_600_000_000) {
            let line = format!(
                "[Fri Nov 27 19:27:10.185 2026] lb w1 h {}.{:06} 200",
                micros / 1_000_000,
                micros % 1_000_000
            );
            let Line::Request(r) = parse(&line) else { panic!("{line}") };
            prop_assert_eq!(r.duration, Duration::from_micros(micros));
        }
    }
}
