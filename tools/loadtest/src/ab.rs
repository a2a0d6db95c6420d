//! ApacheBench (`ab`, from apache2-utils): one run per phase, and its verdict read from
//! its report.
//!
//! `ab -t SECONDS -n <cap> -c CLIENTS -s 30 -r URL`: `-n` after `-t`, and far above what
//! the phase can serve, so that the time limit alone ends the run (`-t` alone caps it at
//! 50,000 requests); `-r` so that a socket receive error is counted as a failed request
//! instead of ending ab.

use std::{
    path::Path,
    process::{Command, Stdio},
};

/// ab's report, the fields a load test is judged by.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AbReport {
    pub complete: u64,
    /// All failed requests; the breakdown follows.
    pub failed: u64,
    pub failed_connect: u64,
    pub failed_receive: u64,
    pub failed_length: u64,
    pub failed_exceptions: u64,
    /// Answers with a status outside 2xx (ab counts them apart from `failed`).
    pub non_2xx: u64,
    /// ab's mean time per request (per client), milliseconds.
    pub mean_ms: Option<f64>,
}

impl AbReport {
    /// Requests that did not succeed: failed or not 2xx.
    pub fn unsuccessful(&self) -> u64 {
        self.failed + self.non_2xx
    }

    /// Adds `other` (the mean becomes the request-weighted mean).
    pub fn add(&mut self, other: &AbReport) {
        self.mean_ms = match (self.mean_ms, other.mean_ms) {
            (Some(a), Some(b)) if self.complete + other.complete > 0 => Some(
                (a * self.complete as f64 + b * other.complete as f64)
                    / (self.complete + other.complete) as f64,
            ),
            (a, b) => a.or(b),
        };
        self.complete += other.complete;
        self.failed += other.failed;
        self.failed_connect += other.failed_connect;
        self.failed_receive += other.failed_receive;
        self.failed_length += other.failed_length;
        self.failed_exceptions += other.failed_exceptions;
        self.non_2xx += other.non_2xx;
    }

    /// Reads ab's report. `None` when it holds no `Complete requests` line (ab did not get
    /// to run the test).
    pub fn parse(text: &str) -> Option<AbReport> {
        let value = |name: &str| -> Option<&str> {
            text.lines()
                .find_map(|l| l.trim_start().strip_prefix(name))
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .map(str::trim)
        };
        let count = |name: &str| {
            value(name)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let complete = count("Complete requests")?;
        let mut report = AbReport {
            complete,
            failed: count("Failed requests").unwrap_or(0),
            non_2xx: count("Non-2xx responses").unwrap_or(0),
            mean_ms: value("Time per request")
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok()),
            ..AbReport::default()
        };
        // "   (Connect: 0, Receive: 0, Length: 240, Exceptions: 0)", only when some failed.
        if let Some(line) = text
            .lines()
            .find(|l| l.trim_start().starts_with("(Connect:"))
        {
            for part in line
                .trim()
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
            {
                let mut kv = part.split(':').map(str::trim);
                let (Some(key), Some(n)) = (kv.next(), kv.next().and_then(|n| n.parse().ok()))
                else {
                    continue;
                };
                match key {
                    "Connect" => report.failed_connect = n,
                    "Receive" => report.failed_receive = n,
                    "Length" => report.failed_length = n,
                    "Exceptions" => report.failed_exceptions = n,
                    _ => {}
                }
            }
        }
        Some(report)
    }
}

/// Why a phase's ab run gave no report.
#[derive(Debug, thiserror::Error)]
pub enum AbError {
    #[error("cannot run {program} (install apache2-utils: tools/install-webtier): {reason}")]
    Spawn { program: String, reason: String },
    #[error("ab gave no report ({status}): {output}")]
    NoReport { status: String, output: String },
}

/// The `-n` that lets the time limit end the run: 50,000 requests a second of the phase,
/// far above what one machine serves. ab reserves room for that many results up front
/// (32 bytes each, touched only as used), so it is not simply "huge".
fn request_cap(seconds: u32) -> u64 {
    (u64::from(seconds) * 50_000).clamp(50_000, 100_000_000)
}

/// Runs `clients` concurrent clients against `url` for `seconds`.
pub fn run(program: &Path, url: &str, seconds: u32, clients: u32) -> Result<AbReport, AbError> {
    let output = Command::new(program)
        .args(["-q", "-r", "-s", "30", "-t"])
        .arg(seconds.to_string())
        .arg("-n")
        .arg(request_cap(seconds).to_string())
        .arg("-c")
        .arg(clients.to_string())
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AbError::Spawn {
            program: program.display().to_string(),
            reason: e.to_string(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    AbReport::parse(&text).ok_or_else(|| AbError::NoReport {
        status: output.status.to_string(),
        output: text.lines().rev().take(5).collect::<Vec<_>>().join(" / "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_FAILURES: &str = "Document Path:          /webserver/index.jsp
Document Length:        618 bytes

Concurrency Level:      8
Time taken for tests:   150.026 seconds
Complete requests:      15284
Failed requests:        240
   (Connect: 1, Receive: 2, Length: 237, Exceptions: 0)
Non-2xx responses:      240
Total transferred:      13083204 bytes
Requests per second:    101.88 [#/sec] (mean)
Time per request:       78.527 [ms] (mean)
Time per request:       9.816 [ms] (mean, across all concurrent requests)
";

    const CLEAN: &str = "Complete requests:      6000
Failed requests:        0
Requests per second:    142.69 [#/sec] (mean)
Time per request:       140.166 [ms] (mean)
";

    #[test]
    fn reads_counts_breakdown_and_mean() {
        let r = AbReport::parse(WITH_FAILURES).unwrap();
        assert_eq!(
            (
                r.complete,
                r.failed,
                r.failed_connect,
                r.failed_receive,
                r.failed_length
            ),
            (15284, 240, 1, 2, 237)
        );
        assert_eq!((r.failed_exceptions, r.non_2xx), (0, 240));
        assert_eq!(r.mean_ms, Some(78.527));
        assert_eq!(r.unsuccessful(), 480);
        let clean = AbReport::parse(CLEAN).unwrap();
        assert_eq!((clean.complete, clean.failed, clean.non_2xx), (6000, 0, 0));
    }

    #[test]
    fn no_report_without_complete_requests() {
        assert_eq!(
            AbReport::parse("apr_socket_connect(): Connection refused (111)"),
            None
        );
    }

    #[test]
    fn sums_weight_the_mean_by_requests() {
        let mut total = AbReport::default();
        total.add(&AbReport::parse(CLEAN).unwrap());
        total.add(&AbReport {
            complete: 2000,
            mean_ms: Some(20.0),
            ..AbReport::default()
        });
        assert_eq!(total.complete, 8000);
        let mean = total.mean_ms.unwrap();
        assert!((mean - (140.166 * 6000.0 + 20.0 * 2000.0) / 8000.0).abs() < 1e-9);
    }
}
