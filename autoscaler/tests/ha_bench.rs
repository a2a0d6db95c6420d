//! `autoscaler-sim ha-bench` at 100 sites (1,100 VMs in the in-memory cloud): two whole
//! conductors over the real RabbitMQ and MariaDB. Asserts counts, not the machine's
//! speed: every site held and stepped by exactly one conductor, statements a few per
//! tick (never per heartbeat or per site), and, after one conductor is killed, the other
//! holding and stepping every site within the lease time and a few ticks, then stepping
//! them all alone. The 1,000-site figures are in doc/ha.md.

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
    for c in conductors {
        assert!(c["sites"].as_i64().unwrap() > 0, "{c}");
        // A tick a second costs 6 statements (report, renew's UPDATE and SELECT, three
        // SELECTs), whatever the number of sites; a change (a VM heard late leaves and
        // rejoins its pool) adds a fenced write of 4 to 6. Nothing per heartbeat (1,100
        // a second here) nor per site (50 each).
        let per_s = c["statements_per_s"].as_f64().unwrap();
        assert!(per_s <= 20.0, "{c}");
        let kinds = c["by_kind"].as_object().unwrap();
        assert!(kinds["SELECT"].as_f64().unwrap() <= 8.0, "{c}");
        for kind in kinds.keys() {
            assert!(
                ["SELECT", "UPDATE", "INSERT", "BEGIN", "COMMIT", "SET"].contains(&kind.as_str()),
                "{c}"
            );
        }
        // `SET` is sqlx's set-up of a new MySQL connection (sql_mode, time zone,
        // names): the pool opens one when two statements overlap on a loaded machine,
        // never one per heartbeat or site.
        let set = kinds.get("SET").and_then(|v| v.as_f64()).unwrap_or(0.0);
        assert!(set <= 1.0, "{c}");
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
    // Then the survivor alone steps every site, a few statements a tick as before.
    let alone = &report["alone"];
    assert_eq!(alone["stepped_by_one"], 100, "{alone}");
    let survivor = alone["conductors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["host"] == failover["survivor"])
        .unwrap();
    assert_eq!(survivor["sites"], 100, "{alone}");
    assert!(
        survivor["statements_per_s"].as_f64().unwrap() <= 20.0,
        "{alone}"
    );
}
