//! `autoscaler-sim ha-bench` at 100 sites (1,100 VMs in the in-memory cloud): two whole
//! conductors over the real RabbitMQ and MariaDB. Asserts counts, not the machine's
//! speed: every site held and stepped by exactly one conductor, a steady tick that
//! writes nothing but the service record and the lease renewal (never per heartbeat or
//! per site), and, after one conductor is killed, the other holding and stepping every
//! site within the lease time and a few ticks. The 1,000-site figures are in doc/ha.md.

use std::process::Command;

#[test]
fn two_conductors_share_100_sites_write_only_on_change_and_fail_over() {
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler-sim"))
        .args(["ha-bench", "--sites", "100", "--seconds", "5", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{report:#}");
    assert_eq!(report["vms"], 1100);
    let steady = &report["steady"];
    assert_eq!(steady["stepped_by_one"], 100, "{steady}");
    assert_eq!(steady["stepped_by_both"], 0, "no site stepped twice");
    let conductors = steady["conductors"].as_array().unwrap();
    let held: i64 = conductors
        .iter()
        .map(|c| c["sites"].as_i64().unwrap())
        .sum();
    assert_eq!(held, 100, "{steady}");
    let seconds = steady["seconds"].as_f64().unwrap();
    for c in conductors {
        assert!(c["sites"].as_i64().unwrap() > 0, "{c}");
        // A tick a second: 6 statements (report, renew's UPDATE and SELECT, three
        // SELECTs); one tick more or less at the window's edges.
        let per_s = c["statements_per_s"].as_f64().unwrap();
        assert!(per_s <= 7.0 * 6.0 / seconds + 6.0, "{c}");
        for (kind, rate) in c["by_kind"].as_object().unwrap() {
            match kind.as_str() {
                "SELECT" => {}
                // The service record and the renewal: two a tick.
                "UPDATE" => assert!(rate.as_f64().unwrap() <= 2.0 + 2.0 / seconds, "{c}"),
                other => panic!("a steady conductor sent {other} statements: {c}"),
            }
        }
    }
    let failover = &report["failover"];
    let held_s = failover["all_held_s"]
        .as_f64()
        .expect("the survivor holds every site");
    let stepped_s = failover["all_stepped_s"]
        .as_f64()
        .expect("the survivor steps every site");
    // The lease is 10 s: it expires at most 10 s after the victim's last renewal (a tick
    // before the kill), and the survivor's next tick takes the sites.
    assert!(held_s <= 13.0, "{failover}");
    assert!(stepped_s <= held_s + 3.0, "{failover}");
}
