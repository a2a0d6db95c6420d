//! The conductor's per-second time series: one CSV file per group,
//! `<state_path>/timeseries/<group>.csv`, one row per control-loop tick
//! (`[conductor] evaluation_interval`, 1 s by default, counted again from a tick that acts
//! as soon as the splitter's metrics call for a scaling action). Graphs are drawn from these
//! files by another tool, so the format below is a contract; `doc/monitoring.md` ("Time
//! series") describes it for operators. Change a column only with both.
//!
//! The first line is the header, written once when the file is new or empty:
//!
//! ```text
//! time,group,requests,rate,mean_response_time,p95_response_time,in_flight,vms_booting,vms_active,vms_draining,desired,target_response_time,metric,decision,reason
//! ```
//!
//! Columns, in that order (times in seconds, decimal numbers with a `.` as written by the
//! `csv` crate: the shortest form that reads back to the same value, e.g. `0.25`, `3.0`,
//! `1e-7`; an empty cell means "no value"):
//!
//! | Column | Type | Meaning |
//! |---|---|---|
//! | `time` | RFC 3339, UTC, milliseconds (`2026-11-27T22:05:41.000Z`) | when the conductor took the row (its tick); the request columns cover the splitter's measurements that arrived since the previous tick (normally one second) |
//! | `group` | text | the template's name, as in the file name |
//! | `requests` | whole number | requests that ended in that second |
//! | `rate` | decimal, requests/s | request rate |
//! | `mean_response_time` | decimal, s, or empty | mean response time of those requests; empty when there was none |
//! | `p95_response_time` | decimal, s, or empty | their 95th percentile response time; empty when there was none |
//! | `in_flight` | decimal, or empty | mean requests in flight, by Little's law (`rate` × `mean_response_time`); 0 when measurements arrived without requests, empty when none arrived |
//! | `vms_booting` | whole number | web VMs booting |
//! | `vms_active` | whole number | web VMs serving |
//! | `vms_draining` | whole number | web VMs draining before deletion |
//! | `desired` | whole number | the web VMs the conductor aims at after this row's decision (0 until the policy's first decision, in the grace period after a start) |
//! | `target_response_time` | decimal, s | the template's target (the policy aims `[policy] target_margin_percent` under it) |
//! | `metric` | decimal, or empty | the policy's decision metric: the web VMs it finds needed; empty when it has none |
//! | `decision` | text | what the policy decided: `hold`, `scale_out`, `scale_in`; `destroy` while the template is torn down |
//! | `reason` | text, one line | why, for a person |
//!
//! Text cells are quoted by CSV rules when they hold a comma or a quote. A line break in
//! `decision` or `reason` is written as a space, so one row is one line and a reader may
//! tail the file.
//!
//! The same row travels on the broker each tick, as the payload of kind `group_status` on
//! `status.<group>` (transient, with `[agent] telemetry_ttl`), so that live views such as
//! `autoscaler-manage monitor` need no access to these files.
//!
//! Durability: every row is flushed to the operating system as it is appended (not
//! fsynced), so a crash of the conductor loses at most the row being written. Reopening a
//! file whose last line is incomplete cuts that line off before appending. A file whose
//! first line is not the header above is refused rather than mixed with rows of another
//! format.

use std::{
    collections::HashMap,
    fs::{DirBuilder, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// The header line, without its line feed. A test checks it is what the `csv` crate writes
/// for [`Row`]; it is here to recognise files of this format.
pub const HEADER: &str = "time,group,requests,rate,mean_response_time,p95_response_time,\
in_flight,vms_booting,vms_active,vms_draining,desired,target_response_time,metric,decision,reason";

/// The folder under `state_path` that holds the files.
pub const DIR_NAME: &str = "timeseries";

/// One tick of one group. Field order is column order (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// When the row was taken; written to the millisecond (finer parts are dropped).
    #[serde(with = "crate::time_format::rfc3339_millis")]
    pub time: DateTime<Utc>,
    pub group: String,
    /// Requests that ended in the second up to `time`.
    pub requests: u64,
    /// Requests per second.
    pub rate: f64,
    /// Seconds; `None` when no request ended in the second.
    pub mean_response_time: Option<f64>,
    /// Seconds; `None` when no request ended in the second.
    pub p95_response_time: Option<f64>,
    /// Mean requests in flight by Little's law, `rate` × `mean_response_time`.
    pub in_flight: Option<f64>,
    pub vms_booting: u32,
    pub vms_active: u32,
    pub vms_draining: u32,
    /// Web VMs aimed at after this row's decision.
    pub desired: u32,
    /// Seconds.
    pub target_response_time: f64,
    /// The policy's decision metric, the web VMs it finds needed; `None` when it has none.
    pub metric: Option<f64>,
    /// `hold`, `scale_out`, `scale_in`, or `destroy`.
    #[serde(serialize_with = "one_line")]
    pub decision: String,
    #[serde(serialize_with = "one_line")]
    pub reason: String,
}

impl crate::payload::Payload for Row {
    const KIND: &'static str = "group_status";
}

/// The open files, one per group that has had a row since it was last closed.
#[derive(Debug)]
pub struct TimeSeries {
    dir: PathBuf,
    writers: HashMap<String, csv::Writer<File>>,
}

impl TimeSeries {
    /// `dir` is `<state_path>/timeseries`; it is created (mode 0755) on the first append.
    pub fn new(dir: PathBuf) -> TimeSeries {
        TimeSeries {
            dir,
            writers: HashMap::new(),
        }
    }

    /// The file of `group`: `<dir>/<group>.csv`.
    pub fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.csv"))
    }

    /// Appends `row` to the file of `row.group`, opening it (and writing the header when
    /// it is new or empty) if it is not open yet, and flushes it.
    ///
    /// After an error the file is closed; the next append reopens it, which cuts off a
    /// row left half-written.
    pub fn append(&mut self, row: &Row) -> io::Result<()> {
        let group = row.group.as_str();
        check_group(group)?;
        let path = self.path(group);
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        if !self.writers.contains_key(group) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&self.dir)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create {}: {e}", self.dir.display()),
                    )
                })?;
            let writer = open(&path).map_err(context)?;
            self.writers.insert(group.to_owned(), writer);
        }
        let writer = self.writers.get_mut(group).expect("opened above");
        let written = writer
            .serialize(row)
            .map_err(io::Error::from)
            .and_then(|()| writer.flush());
        if let Err(e) = written {
            self.writers.remove(group);
            return Err(context(e));
        }
        Ok(())
    }

    /// Closes the file of `group`, when its template is forgotten. A later append reopens it.
    pub fn close(&mut self, group: &str) {
        self.writers.remove(group);
    }
}

/// The rows of a time series file, header first.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    pub source: csv::Error,
}

/// Reads every row of a time series file, checking each against the format.
pub fn read_rows(path: &Path) -> Result<Vec<Row>, ReadError> {
    let error = |source| ReadError {
        path: path.to_owned(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(error)?;
    reader
        .deserialize()
        .collect::<Result<_, _>>()
        .map_err(error)
}

/// Mean response time over `rows`, weighted by their requests; `None` without requests.
pub fn mean_response_time(rows: &[&Row]) -> Option<f64> {
    let requests: u64 = rows.iter().map(|r| r.requests).sum();
    let busy: f64 = rows
        .iter()
        .map(|r| r.requests as f64 * r.mean_response_time.unwrap_or(0.0))
        .sum();
    (requests > 0).then(|| busy / requests as f64)
}

/// Rows a settle window spans (about 5 s at one row a second).
pub const SETTLE_WINDOW_ROWS: usize = 5;

/// Where `rows` (consecutive, one period) settled under `target`: the index of the first
/// row from which the mean over the last [`SETTLE_WINDOW_ROWS`] rows stayed under the
/// target to the end. `Some(0)` when it never went over, `None` when it ends over.
pub fn settled_from(rows: &[&Row], target: f64) -> Option<usize> {
    let last_over = (0..rows.len()).rev().find(|&i| {
        let window = &rows[(i + 1).saturating_sub(SETTLE_WINDOW_ROWS)..=i];
        mean_response_time(window).is_none_or(|m| m >= target)
    });
    match last_over {
        None => Some(0),
        Some(i) if i + 1 < rows.len() => Some(i + 1),
        Some(_) => None,
    }
}

/// Group names are checked by `template::validate_name`; this guards the path anyway.
fn check_group(group: &str) -> io::Result<()> {
    if group.is_empty() || group.contains('/') || group.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("group name {group:?} cannot name a time series file"),
        ));
    }
    Ok(())
}

/// Opens `path` for appending, mends an incomplete last line and checks the header.
fn open(path: &Path) -> io::Result<csv::Writer<File>> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)?;
    let len = cut_incomplete_line(&mut file, path)?;
    if len > 0 {
        let mut first = String::new();
        file.seek(SeekFrom::Start(0))?;
        BufReader::new(Read::by_ref(&mut file))
            .take(HEADER.len() as u64 + 1)
            .read_line(&mut first)?;
        if first.trim_end_matches('\n') != HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "its first line is not the time series header; move it aside to start afresh",
            ));
        }
    }
    Ok(csv::WriterBuilder::new()
        .has_headers(len == 0)
        .from_writer(file))
}

/// Cuts the file after its last line feed, dropping what a crash left of a row, and
/// returns the length kept.
fn cut_incomplete_line(file: &mut File, path: &Path) -> io::Result<u64> {
    const CHUNK: u64 = 4096;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0; CHUNK as usize];
    let kept = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(CHUNK);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if kept < len {
        warn!(
            path = %path.display(),
            bytes = len - kept,
            "time series file ended in an incomplete row; cut it off"
        );
        file.set_len(kept)?;
    }
    Ok(kept)
}

/// Keeps a row on one line.
fn one_line<S: serde::Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
    if text.contains(['\n', '\r']) {
        serializer.serialize_str(&text.replace("\r\n", " ").replace(['\n', '\r'], " "))
    } else {
        serializer.serialize_str(text)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt};

    use chrono::TimeZone;

    use super::*;

    fn row(group: &str, second: u32) -> Row {
        Row {
            time: Utc.with_ymd_and_hms(2026, 11, 27, 22, 5, second).unwrap()
                + chrono::Duration::milliseconds(250),
            group: group.to_owned(),
            requests: 42,
            rate: 42.0,
            mean_response_time: Some(0.125),
            p95_response_time: Some(0.3),
            in_flight: Some(5.25),
            vms_booting: 1,
            vms_active: 2,
            vms_draining: 0,
            desired: 3,
            target_response_time: 0.5,
            metric: Some(2.6),
            decision: "scale_out".to_owned(),
            reason: "needs 2.6 VMs, has 2, with \"headroom\"".to_owned(),
        }
    }

    fn quiet(group: &str, second: u32) -> Row {
        Row {
            requests: 0,
            rate: 0.0,
            mean_response_time: None,
            p95_response_time: None,
            in_flight: None,
            metric: None,
            decision: "hold".to_owned(),
            reason: "no requests".to_owned(),
            ..row(group, second)
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn settling_is_the_start_of_the_tail_whose_5_row_mean_is_under_target() {
        let row = |requests, mean| Row {
            requests,
            mean_response_time: Some(mean),
            ..sample_row_for_settle()
        };
        // 4 slow seconds (80 x 0.45 s), then fast ones (240 x 0.15 s): the 5-row mean
        // is 0.32, 0.25, 0.2045, then 0.173 at row 7 (one slow second left in it).
        let rows: Vec<Row> = (0..4)
            .map(|_| row(80, 0.45))
            .chain((0..8).map(|_| row(240, 0.15)))
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(settled_from(&refs, 0.2), Some(7));
        assert_eq!(settled_from(&refs[4..], 0.2), Some(0), "never over");
        assert_eq!(settled_from(&refs[..4], 0.2), None, "ends over");
        let mean = mean_response_time(&refs[3..5]).unwrap();
        assert!((mean - (36.0 + 36.0) / 320.0).abs() < 1e-12);
        assert_eq!(mean_response_time(&[]), None);
    }

    fn sample_row_for_settle() -> Row {
        Row {
            time: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            group: "site".into(),
            requests: 0,
            rate: 0.0,
            mean_response_time: None,
            p95_response_time: None,
            in_flight: None,
            vms_booting: 0,
            vms_active: 1,
            vms_draining: 0,
            desired: 1,
            target_response_time: 0.2,
            metric: None,
            decision: "hold".into(),
            reason: String::new(),
        }
    }

    #[test]
    fn header_is_what_csv_writes_for_a_row() {
        let mut writer = csv::Writer::from_writer(Vec::new());
        writer.serialize(row("web", 0)).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next(), Some(HEADER));
    }

    #[test]
    fn rows_are_written_as_documented() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().join(DIR_NAME));
        series.append(&row("web", 41)).unwrap();
        series.append(&quiet("web", 42)).unwrap();
        assert_eq!(
            lines(&series.path("web")),
            [
                HEADER,
                "2026-11-27T22:05:41.250Z,web,42,42.0,0.125,0.3,5.25,1,2,0,3,0.5,2.6,scale_out,\
                 \"needs 2.6 VMs, has 2, with \"\"headroom\"\"\"",
                "2026-11-27T22:05:42.250Z,web,0,0.0,,,,1,2,0,3,0.5,,hold,no requests",
            ]
        );
    }

    #[test]
    fn header_is_written_once_across_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR_NAME);
        let mut first = TimeSeries::new(dir.clone());
        first.append(&row("web", 1)).unwrap();
        first.close("web");
        first.append(&row("web", 2)).unwrap();
        drop(first);
        let mut second = TimeSeries::new(dir);
        second.append(&row("web", 3)).unwrap();
        let path = second.path("web");
        let lines = lines(&path);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines.iter().filter(|l| *l == HEADER).count(), 1);
        assert_eq!(read_rows(&path).unwrap().len(), 3);
    }

    #[test]
    fn an_empty_file_gets_the_header() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().to_owned());
        fs::write(series.path("web"), "").unwrap();
        series.append(&row("web", 1)).unwrap();
        assert_eq!(lines(&series.path("web"))[0], HEADER);
    }

    #[test]
    fn rows_round_trip_through_read_rows() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().join(DIR_NAME));
        let rows = [row("web", 1), quiet("web", 2), row("web", 3)];
        for r in &rows {
            series.append(r).unwrap();
        }
        assert_eq!(read_rows(&series.path("web")).unwrap(), rows);
    }

    #[test]
    fn empty_cells_read_back_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().join(DIR_NAME));
        series.append(&quiet("web", 1)).unwrap();
        let back = read_rows(&series.path("web")).unwrap();
        assert_eq!(back[0].mean_response_time, None);
        assert_eq!(back[0].p95_response_time, None);
        assert_eq!(back[0].in_flight, None);
        assert_eq!(back[0].metric, None);
    }

    #[test]
    fn two_groups_two_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR_NAME);
        let mut series = TimeSeries::new(dir.clone());
        series.append(&row("web", 1)).unwrap();
        series.append(&row("shop", 1)).unwrap();
        series.append(&quiet("web", 2)).unwrap();
        assert_eq!(series.path("shop"), dir.join("shop.csv"));
        let web = read_rows(&dir.join("web.csv")).unwrap();
        let shop = read_rows(&dir.join("shop.csv")).unwrap();
        assert_eq!(web, [row("web", 1), quiet("web", 2)]);
        assert_eq!(shop, [row("shop", 1)]);
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777 & !0o755, 0, "mode {mode:o}");
    }

    #[test]
    fn reason_stays_on_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().to_owned());
        let r = Row {
            reason: "first\r\nsecond\nthird".to_owned(),
            ..quiet("web", 1)
        };
        series.append(&r).unwrap();
        let back = read_rows(&series.path("web")).unwrap();
        assert_eq!(back[0].reason, "first second third");
        assert_eq!(lines(&series.path("web")).len(), 2);
    }

    #[test]
    fn an_incomplete_last_row_is_cut_off_on_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().to_owned());
        series.append(&row("web", 1)).unwrap();
        series.close("web");
        let path = series.path("web");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("2026-11-27T22:05:02.250Z,web,4");
        fs::write(&path, text).unwrap();
        series.append(&row("web", 3)).unwrap();
        assert_eq!(read_rows(&path).unwrap(), [row("web", 1), row("web", 3)]);
    }

    #[test]
    fn a_file_of_another_format_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().to_owned());
        let path = series.path("web");
        fs::write(&path, "time,group,requests\n").unwrap();
        let e = series.append(&row("web", 1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "time,group,requests\n");
    }

    #[test]
    fn unsafe_group_names_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let mut series = TimeSeries::new(tmp.path().join(DIR_NAME));
        for name in ["", ".hidden", "..", "../escape", "a/b"] {
            let e = series.append(&row(name, 1)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        assert!(!tmp.path().join(DIR_NAME).exists());
    }

    #[test]
    fn read_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("web.csv");
        fs::write(&path, format!("{HEADER}\nnot a time,web\n")).unwrap();
        let e = read_rows(&path).unwrap_err();
        assert!(e
            .to_string()
            .starts_with(&format!("cannot read {}", path.display())));
        assert!(read_rows(&tmp.path().join("missing.csv")).is_err());
    }
}
