//! Black-box tests of `autoscaler-sim`: the CSV it writes is the conductor's format and
//! the same for the same seed, bad input gets an error naming the file and the line, and
//! `bench` writes its table between the markers of a Markdown page.

use std::{path::Path, process::Command};

use autoscaler::conductor::timeseries::read_rows;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autoscaler-sim"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("autoscaler-sim runs")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_writes_the_conductors_csv_and_the_phases_the_same_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let phases = dir.path().join("phases.csv");
    let args = [
        "run",
        "tools/scenarios/ci-short.txt",
        "--out",
        out,
        "--phases",
        phases.to_str().unwrap(),
        "--seed",
        "9",
        "--service",
        "exp:0.05",
    ];
    let first = sim(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let csv = dir.path().join("sim.csv");
    let bytes = std::fs::read(&csv).unwrap();
    let rows = read_rows(&csv).unwrap();
    // A row a second, and one more for each early step (metrics that complete the
    // evidence for an action step the group at once).
    let early = rows.len().checked_sub(160).expect("a row a second");
    assert!(early <= 10, "{} rows", rows.len());
    assert!(rows.iter().any(|r| r.decision == "scale_out"));
    let phase_text = std::fs::read_to_string(&phases).unwrap();
    assert!(phase_text.starts_with("phase,label,kind,clients,seconds,start,end,complete,failed"));
    assert_eq!(phase_text.lines().count(), 6);
    // Again into the same folder: the file is replaced, byte for byte the same.
    let again = sim(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(std::fs::read(&csv).unwrap(), bytes);
}

#[test]
fn bad_input_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.txt");
    std::fs::write(&scenario, "10 4\nx 4\n").unwrap();
    let trace = dir.path().join("bad.csv");
    std::fs::write(&trace, "seconds,rate\n10,fast\n").unwrap();
    let out = dir.path().to_str().unwrap();
    for (file, message) in [
        (
            &scenario,
            ":2: seconds \"x\": expected a whole number from 1 to 86400",
        ),
        (
            &trace,
            ":2: rate \"fast\": expected requests a second from 0 to 1000000",
        ),
    ] {
        let o = sim(&["run", file.to_str().unwrap(), "--out", out]);
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(&o);
        assert!(
            e.starts_with(&format!("ERROR: {}{message}", file.display())),
            "{e}"
        );
    }
    let o = sim(&["run", "missing.txt", "--out", out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read missing.txt"),
        "{}",
        stderr(&o)
    );
    let o = sim(&[
        "run",
        "tools/scenarios/ci-short.txt",
        "--out",
        out,
        "--service",
        "gamma:1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected det:SECONDS"),
        "{}",
        stderr(&o)
    );
    let o = sim(&["bench", "--only", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no such scenario (the suite: seed-alternation"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_writes_its_table_between_the_markers() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.md");
    std::fs::write(
        &page,
        "# Page\n\nbefore\n<!-- bench-table:start -->\nold\n<!-- bench-table:end -->\nafter\n",
    )
    .unwrap();
    let o = sim(&[
        "bench",
        "--only",
        "repeated-bursts",
        "--seeds",
        "1",
        "--markdown",
        page.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(text
        .starts_with("# Page\n\nbefore\n<!-- bench-table:start -->\nMeans over seeds 1; 6 runs."));
    assert!(
        text.ends_with("<!-- bench-table:end -->\nafter\n"),
        "{text}"
    );
    assert!(!text.contains("old"));
    assert!(
        text.contains("| repeated-bursts | autoscaler | 38 | 38 | 250 | 1.00 | 0 | 0 |"),
        "{text}"
    );
}
