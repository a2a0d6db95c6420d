//! A load script's timestamped output as phases (`autoscaler-loadtest phases-from`), for a
//! grader who drives the site with a script of their own instead of a scenario. Pure.
//!
//! The log is what the script printed. Phase lines say when a phase starts and how many
//! clients it runs, and one line ends the last phase:
//!
//! ```text
//! 2026-11-27T23:50:01+00:00 4 low        <- echo "$(date -Is) 4 low"; ab -c 4 -t 30 URL
//! 2026-11-27T23:50:31+00:00 36 high      <- echo "$(date -Is) 36 high"; ab -c 36 -t 60 URL
//! 2026-11-27T23:51:31+00:00 end          <- echo "$(date -Is) end"
//! ```
//!
//! `<time> <clients> [label]`: the time in RFC 3339 (`date -Is`, `date -Ins`, `date -u
//! +%FT%T.%3NZ`, `date --rfc-3339=seconds`; a `,` before the fraction as `date -Ins` writes
//! it is read as `.`) or in seconds since the epoch (`date +%s`, `date +%s.%N`), then a
//! whole number of clients (0: a pause), then a free label. A phase lasts until the next
//! phase line or an `end` line (`<time> end`); a phase line after `end` starts again after
//! a gap. Its kind is [`Kind::of_phases`]' rule, as for a scenario: the label when it is
//! `high` or `low`, else high when its clients are above the midpoint of the fewest and
//! most clients.
//!
//! Every other line is ab's or the script's own. ab's reports (from `Server Software:` to
//! the next) are added up into the phase during which they are printed, the way a script
//! that runs `ab` in the foreground prints them: at the end of the phase they measured.
//! A phase with no ab report has no request counts (all 0), which `autoscaler-graphs
//! --check` reports as not judged.

use chrono::{DateTime, Utc};

use autoscaler_core::scenario::{Kind, PhaseRecord};

use crate::ab::AbReport;

/// The smallest epoch seconds taken as a time (2001-09-09): smaller whole numbers are
/// clients.
const EPOCH_MIN: f64 = 1e9;

/// What is wrong with a log; names the source and, where there is one, the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error(
        "{source_name}: no phase line: print one as each phase starts, \
         `<time> <clients> [label]`, e.g. echo \"$(date -Is) 36 high\", and `<time> end` \
         after the last"
    )]
    NoPhase { source_name: String },
    #[error(
        "{source_name}: the last phase (line {line}) has no end: print `<time> end` after \
         it, e.g. echo \"$(date -Is) end\""
    )]
    NoEnd { source_name: String, line: usize },
    #[error("{source_name}:{line}: {time} is before the line before it ({previous})")]
    Backwards {
        source_name: String,
        line: usize,
        time: String,
        previous: String,
    },
}

/// One marker line.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Start { clients: u32, label: String },
    End,
}

/// What the log holds: the phases, and ab reports printed outside any phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Phases {
    pub phases: Vec<PhaseRecord>,
    /// ab reports printed before the first phase line or after an `end`: counted nowhere.
    pub stray_reports: usize,
}

/// A phase being read: from its marker line on.
struct Started {
    line: usize,
    start: DateTime<Utc>,
    clients: u32,
    label: String,
    /// The lines printed since, for ab's reports.
    body: String,
}

/// A phase read to its end.
struct Ended {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    clients: u32,
    label: String,
    ab: AbReport,
}

/// The phases of `text`; `source_name` names it in errors.
pub fn phases(source_name: &str, text: &str) -> Result<Phases, LogError> {
    let mut open: Option<Started> = None;
    let mut done: Vec<Ended> = Vec::new();
    let mut previous: Option<(DateTime<Utc>, String)> = None;
    let mut stray = String::new();
    for (i, line) in text.lines().enumerate() {
        let Some((time, time_text, marker)) = marker(line) else {
            let body = open.as_mut().map_or(&mut stray, |p| &mut p.body);
            body.push_str(line);
            body.push('\n');
            continue;
        };
        if let Some((before, before_text)) = &previous {
            if time < *before {
                return Err(LogError::Backwards {
                    source_name: source_name.to_owned(),
                    line: i + 1,
                    time: time_text,
                    previous: before_text.clone(),
                });
            }
        }
        previous = Some((time, time_text));
        if let Some(p) = open.take() {
            done.push(Ended {
                start: p.start,
                end: time,
                clients: p.clients,
                label: p.label,
                ab: reports(&p.body),
            });
        }
        if let Marker::Start { clients, label } = marker {
            open = Some(Started {
                line: i + 1,
                start: time,
                clients,
                label,
                body: String::new(),
            });
        }
    }
    if let Some(p) = open {
        return Err(LogError::NoEnd {
            source_name: source_name.to_owned(),
            line: p.line,
        });
    }
    if done.is_empty() {
        return Err(LogError::NoPhase {
            source_name: source_name.to_owned(),
        });
    }
    let kinds = Kind::of_phases(done.iter().map(|p| (p.clients, p.label.as_str())));
    let phases = done
        .into_iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (p, kind))| record(i + 1, p, kind))
        .collect();
    Ok(Phases {
        phases,
        stray_reports: report_texts(&stray).len(),
    })
}

/// The phase CSV's row of phase `number`.
fn record(number: usize, p: Ended, kind: Kind) -> PhaseRecord {
    PhaseRecord {
        phase: number,
        label: p.label,
        kind: kind.as_str().to_owned(),
        clients: p.clients,
        seconds: ((p.end - p.start).num_milliseconds() as f64 / 1000.0).round() as u32,
        start: p.start,
        end: p.end,
        complete: p.ab.complete,
        failed: p.ab.failed,
        failed_connect: p.ab.failed_connect,
        failed_receive: p.ab.failed_receive,
        failed_length: p.ab.failed_length,
        failed_exceptions: p.ab.failed_exceptions,
        non_2xx: p.ab.non_2xx,
        mean_ms: p.ab.mean_ms,
    }
}

/// A marker line: its time (and as written), and what it marks.
fn marker(line: &str) -> Option<(DateTime<Utc>, String, Marker)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // The time is one field, or two for `date --rfc-3339` (a blank for the `T`).
    for width in [1, 2] {
        if fields.len() <= width {
            break;
        }
        let time_text = fields[..width].join(" ");
        let Some(time) = time(&time_text) else {
            continue;
        };
        let rest = &fields[width..];
        let marker = if rest[0].eq_ignore_ascii_case("end") && rest.len() == 1 {
            Marker::End
        } else {
            let clients = rest[0].parse::<u32>().ok()?;
            Marker::Start {
                clients,
                label: rest[1..].join(" "),
            }
        };
        return Some((time, time_text, marker));
    }
    None
}

/// RFC 3339 (`,` or `.` before the fraction, `T` or a blank before the time) or epoch
/// seconds.
fn time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.replacen(',', ".", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Some(t.with_timezone(&Utc));
    }
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let seconds: f64 = text.parse().ok()?;
    if !(EPOCH_MIN..1e11).contains(&seconds) {
        return None;
    }
    DateTime::from_timestamp_millis((seconds * 1000.0).round() as i64)
}

/// Each ab report in `text`: from a `Server Software:` line to the next.
fn report_texts(text: &str) -> Vec<&str> {
    let starts: Vec<usize> = text
        .match_indices("Server Software:")
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &i)| &text[i..starts.get(k + 1).copied().unwrap_or(text.len())])
        .collect()
}

/// The sum of the ab reports in `text`.
fn reports(text: &str) -> AbReport {
    let mut total = AbReport::default();
    for report in report_texts(text).into_iter().filter_map(AbReport::parse) {
        total.add(&report);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ab 2.3's report, as `ab -c 4 -t 2 URL` prints it (the banner and progress before).
    fn ab_report(complete: u64, non_2xx: u64, mean_ms: f64) -> String {
        let non_2xx = if non_2xx > 0 {
            format!("Non-2xx responses:      {non_2xx}\n")
        } else {
            String::new()
        };
        format!(
            "This is ApacheBench, Version 2.3 <$Revision: 1913912 $>\n\
             Benchmarking 127.0.1.1 (be patient)\n\
             Finished {complete} requests\n\n\n\
             Server Software:        Apache-Coyote/1.1\n\
             Server Hostname:        127.0.1.1\n\
             Server Port:            8000\n\n\
             Document Path:          /webserver/index.jsp\n\
             Document Length:        618 bytes\n\n\
             Concurrency Level:      4\n\
             Time taken for tests:   2.001 seconds\n\
             Complete requests:      {complete}\n\
             Failed requests:        0\n\
             {non_2xx}\
             Total transferred:      1000 bytes\n\
             Requests per second:    79.96 [#/sec] (mean)\n\
             Time per request:       {mean_ms} [ms] (mean)\n\
             Time per request:       12.5 [ms] (mean, across all concurrent requests)\n"
        )
    }

    #[test]
    fn a_graders_script_log_gives_its_phases_with_abs_counts() {
        let log = format!(
            "starting the test\n\
             2026-11-27T23:50:01+00:00 4 low\n{}\
             2026-11-27T23:50:31+00:00 36\n{}{}\
             2026-11-27T23:51:31+00:00 4 cool down\n\
             2026-11-27T23:52:01+00:00 end\n",
            ab_report(2400, 0, 50.0),
            ab_report(2000, 1, 400.0),
            ab_report(2000, 0, 500.0),
        );
        let got = phases("grader.log", &log).unwrap();
        assert_eq!(got.stray_reports, 0);
        let p = &got.phases;
        assert_eq!(p.len(), 3);
        let row = |i: usize| {
            (
                p[i].phase,
                p[i].label.as_str(),
                p[i].kind.as_str(),
                p[i].clients,
                p[i].seconds,
                p[i].complete,
                p[i].non_2xx,
            )
        };
        assert_eq!(row(0), (1, "low", "low", 4, 30, 2400, 0));
        assert_eq!(row(1), (2, "", "high", 36, 60, 4000, 1));
        assert_eq!(row(2), (3, "cool down", "low", 4, 30, 0, 0));
        assert_eq!(p[1].mean_ms, Some(450.0));
        assert_eq!(p[0].start.to_rfc3339(), "2026-11-27T23:50:01+00:00");
        assert_eq!(p[2].end.to_rfc3339(), "2026-11-27T23:52:01+00:00");
    }

    #[test]
    fn every_common_time_form_is_read() {
        let expected = DateTime::parse_from_rfc3339("2026-11-27T23:50:01.250+00:00").unwrap();
        for text in [
            "2026-11-27T23:50:01.250Z",
            "2026-11-27T23:50:01,250000000+00:00",
            "2026-11-28T00:50:01.25+01:00",
            "2026-11-27 23:50:01.250+00:00",
            "1795823401.25",
        ] {
            let line = format!("{text} 12 high");
            let (time, _, marker) = marker(&line).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(time, expected, "{text}");
            assert_eq!(
                marker,
                Marker::Start {
                    clients: 12,
                    label: "high".into()
                }
            );
        }
        assert_eq!(marker("1795823401 end").unwrap().2, Marker::End);
        for other in [
            "Complete requests:      2400",
            "12 36 high",
            "2026-11-27T23:50:01Z",
            "2026-11-27T23:50:01Z ab -c 36",
            "2026-11-27T23:50:01Z end of the test",
            "",
        ] {
            assert_eq!(marker(other), None, "{other}");
        }
    }

    #[test]
    fn what_is_wrong_with_a_log_is_said_with_its_line() {
        assert_eq!(
            phases("a.log", "no markers here\n").unwrap_err(),
            LogError::NoPhase {
                source_name: "a.log".into()
            }
        );
        let err = phases("a.log", "x\n2026-11-27T23:50:01Z 4\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.log: the last phase (line 2) has no end: print `<time> end` after it, e.g. \
             echo \"$(date -Is) end\""
        );
        let err = phases(
            "a.log",
            "2026-11-27T23:50:01Z 4\n2026-11-27T23:49:01Z end\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.log:2: 2026-11-27T23:49:01Z is before the line before it (2026-11-27T23:50:01Z)"
        );
    }

    #[test]
    fn a_gap_after_end_is_no_phase_and_stray_reports_are_counted() {
        let log = format!(
            "{}2026-11-27T23:50:01Z 4\n2026-11-27T23:50:11Z end\n{}\
             2026-11-27T23:51:01Z 40\n2026-11-27T23:51:11Z end\n",
            ab_report(10, 0, 1.0),
            ab_report(10, 0, 1.0),
        );
        let got = phases("a.log", &log).unwrap();
        assert_eq!(got.stray_reports, 2);
        let spans: Vec<(u32, u32, &str)> = got
            .phases
            .iter()
            .map(|p| (p.clients, p.seconds, p.kind.as_str()))
            .collect();
        assert_eq!(spans, [(4, 10, "low"), (40, 10, "high")]);
        assert_eq!(
            got.phases[1].start.to_rfc3339(),
            "2026-11-27T23:51:01+00:00"
        );
    }
}
