//! `autoscaler-loadtest` end to end: the real ab against a small HTTP server of the test's
//! own on a loopback port (answers 200, or a 500 every `fail_every` requests).

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    process::{Command, Output},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// Serves until the test ends; returns the page's URL.
fn serve(fail_every: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let served = served.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                let status = if fail_every > 0 && n.is_multiple_of(fail_every) {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
                );
            });
        }
    });
    format!("http://{addr}/index.html")
}

fn install_ab() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../install-webtier");
    let status = Command::new(script)
        .status()
        .expect("tools/install-webtier");
    assert!(status.success(), "tools/install-webtier failed");
}

fn loadtest(dir: &Path, scenario: &str, url: &str, extra: &[&str]) -> Output {
    let path = dir.join("scenario.txt");
    std::fs::write(&path, scenario).unwrap();
    Command::new(env!("CARGO_BIN_EXE_autoscaler-loadtest"))
        .arg("--csv")
        .arg(dir.join("phases.csv"))
        .args(extra)
        .arg(&path)
        .arg(url)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn plays_the_phases_prints_their_times_and_records_them() {
    install_ab();
    let dir = tempfile::tempdir().unwrap();
    let url = serve(0);
    let out = loadtest(dir.path(), "1 2 low\n1 0\n1 6 high\n", &url, &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for line in [
        "phase 1/3 start: 2 clients for 1 s, low load (low)",
        "phase 2/3 start: 0 clients for 1 s, low load",
        "phase 3/3 end: 6 clients, high load (high):",
        "total: ",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{stdout}");
    }
    let csv = std::fs::read_to_string(dir.path().join("phases.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "phase,label,kind,clients,seconds,start,end,complete,failed,failed_connect,\
         failed_receive,failed_length,failed_exceptions,non_2xx,mean_ms"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    let fields: Vec<&str> = lines[3].split(',').collect();
    assert_eq!(&fields[..5], ["3", "high", "high", "6", "1"]);
    assert!(fields[5] < fields[6], "start before end: {}", lines[3]);
    assert!(fields[7].parse::<u64>().unwrap() > 0, "{}", lines[3]);
    assert_eq!(&fields[8..14], ["0", "0", "0", "0", "0", "0"]);
}

#[test]
fn failed_requests_are_counted_by_kind_and_fail_the_run() {
    install_ab();
    let dir = tempfile::tempdir().unwrap();
    let url = serve(10);
    let out = loadtest(dir.path(), "1 4\n", &url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("requests did not succeed"),
        "{}",
        text(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("phases.csv")).unwrap();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert!(
        row[13].parse::<u64>().unwrap() > 0,
        "non-2xx counted: {csv}"
    );
}

#[test]
fn a_bad_scenario_or_a_missing_ab_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let out = loadtest(dir.path(), "10 4\nten 4\n", "http://127.0.0.1:9/", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("scenario.txt:2: seconds \"ten\": expected a whole number"),
        "{}",
        text(&out.stderr)
    );
    let out = loadtest(
        dir.path(),
        "1 4\n",
        "http://127.0.0.1:9/",
        &["--ab", "/nonexistent/ab"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("phase 1: cannot run /nonexistent/ab"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 15, item 3: a grader's own script, as such scripts are written (`date -Is` and
/// `ab -c N -t S` in the foreground), run by bash against the real ab; its output becomes
/// the phase CSV, with ab's counts in the phase they measured.
#[test]
fn phases_from_a_graders_script_log() {
    install_ab();
    let dir = tempfile::tempdir().unwrap();
    let url = serve(0);
    let script = format!(
        "set -e\n\
         echo \"load test of {url}\"\n\
         echo \"$(date -Is) 2 low\"\n\
         ab -c 2 -t 1 -n 50000 {url}\n\
         echo \"$(date -Is) 8 high\"\n\
         ab -c 8 -t 2 -n 50000 {url} 2>&1\n\
         echo \"$(date -Is) 0 pause\"\n\
         sleep 1\n\
         echo \"$(date -Is) end\"\n"
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = dir.path().join("grader.log");
    std::fs::write(&log, &out.stdout).unwrap();
    let csv = dir.path().join("phases.csv");
    let run = Command::new(env!("CARGO_BIN_EXE_autoscaler-loadtest"))
        .arg("phases-from")
        .arg("--log")
        .arg(&log)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = text(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", text(&run.stderr));
    assert!(stdout.contains("3 phases written to"), "{stdout}");
    let text_csv = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text_csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 3, "{text_csv}");
    let head = |r: &Vec<&str>| r[..4].join(",");
    assert_eq!(head(&rows[0]), "1,low,low,2");
    assert_eq!(head(&rows[1]), "2,high,high,8");
    assert_eq!(head(&rows[2]), "3,pause,low,0");
    for row in &rows[..2] {
        assert!(row[7].parse::<u64>().unwrap() > 0, "ab's count: {text_csv}");
        assert_eq!(&row[8..14], ["0", "0", "0", "0", "0", "0"]);
    }
    assert_eq!(rows[2][7], "0");
    // The phases follow one another, about as long as their ab runs.
    assert_eq!(rows[0][6], rows[1][5]);
    let seconds: Vec<u32> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    assert!((1..=3).contains(&seconds[1]), "{text_csv}");

    // A log without phase lines is refused with what to print.
    std::fs::write(&log, "ab output only\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_autoscaler-loadtest"))
        .args(["phases-from", "--log"])
        .arg(&log)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        text(&run.stderr).contains("no phase line: print one as each phase starts"),
        "{}",
        text(&run.stderr)
    );
}
