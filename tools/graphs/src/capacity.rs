//! What a web VM can serve, and so what a load needs: the model the checks judge the
//! policy against (`acceptance.rs`) and the summary reports. Pure.
//!
//! A web VM serves at most `per_vm` requests a second, each taking `service_time` when it
//! does not queue. A closed-loop load of `N` clients (ab's `-c N`, or the requests in
//! flight measured at the splitter) on `k` VMs then has a mean response time of
//! `max(service_time, N / (k × per_vm))` (the interactive response time law with no think
//! time, once the VMs are saturated), so the fewest VMs that keep it at or under a target
//! `T` are `ceil(N / (T × per_vm))`, and none do when `T` is under the service time.
//!
//! The capacity comes from the template when it sets both `web_threads` and
//! `web_service_time_ms` (the local images' emulated capacity:
//! `web_threads × 1000 / web_service_time_ms` requests a second), else from the run: the
//! median of `rate / vms_active` over the saturated seconds, those whose mean response time
//! is at least [`SATURATED_FACTOR`] times the service time (requests waited as long as
//! they were served, so every VM was busy), the service time being the run's
//! [`SERVICE_TIME_PERCENTILE`]th percentile per-second mean response time.

use autoscaler_core::{template::Template, timeseries::Row};

/// A second whose mean response time is this many times the service time is saturated.
pub const SATURATED_FACTOR: f64 = 2.0;
/// The service time is this low percentile of the per-second mean response times.
pub const SERVICE_TIME_PERCENTILE: usize = 5;
/// Fewest saturated seconds a measured capacity is taken from.
pub const MIN_SATURATED_SECONDS: usize = 5;
/// Fewest requests in a second for its mean response time to count.
const MIN_REQUESTS: u64 = 5;

/// One web VM's capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Requests a second one web VM serves when saturated.
    pub per_vm: f64,
    /// Seconds one request takes when it does not queue.
    pub service_time: f64,
    /// Where the numbers come from, for a person.
    pub source: String,
}

impl Capacity {
    /// The template's emulated capacity, when it sets both keys.
    pub fn from_template(template: &Template) -> Option<Capacity> {
        let (ms, threads) = (template.web_service_time_ms()?, template.web_threads()?);
        Some(Capacity {
            per_vm: f64::from(threads) * 1000.0 / f64::from(ms),
            service_time: f64::from(ms) / 1000.0,
            source: format!(
                "the template's web_threads = {threads} and web_service_time_ms = {ms}"
            ),
        })
    }

    /// Measured from `rows` (see the module documentation); `None` when the run has fewer
    /// than [`MIN_SATURATED_SECONDS`] saturated seconds.
    pub fn measured(rows: &[Row]) -> Option<Capacity> {
        let mut means: Vec<f64> = rows
            .iter()
            .filter(|r| r.requests >= MIN_REQUESTS && r.decision != "destroy")
            .filter_map(|r| r.mean_response_time)
            .collect();
        if means.is_empty() {
            return None;
        }
        means.sort_by(f64::total_cmp);
        let service_time = means[(means.len() - 1) * SERVICE_TIME_PERCENTILE / 100];
        let mut per_vm: Vec<f64> = rows
            .iter()
            .filter(|r| {
                r.requests >= MIN_REQUESTS
                    && r.vms_active > 0
                    && r.vms_draining == 0
                    && r.decision != "destroy"
                    && r.mean_response_time
                        .is_some_and(|m| m >= SATURATED_FACTOR * service_time)
            })
            .map(|r| r.rate / f64::from(r.vms_active))
            .collect();
        if per_vm.len() < MIN_SATURATED_SECONDS {
            return None;
        }
        per_vm.sort_by(f64::total_cmp);
        let median = per_vm[per_vm.len() / 2];
        Some(Capacity {
            per_vm: median,
            service_time,
            source: format!(
                "measured: the median of {} saturated seconds (mean response time at least \
                 {SATURATED_FACTOR} × the service time, {service_time:.3} s)",
                per_vm.len()
            ),
        })
    }

    /// The template's capacity, else the measured one.
    pub fn of(template: Option<&Template>, rows: &[Row]) -> Option<Capacity> {
        template
            .and_then(Capacity::from_template)
            .or_else(|| Capacity::measured(rows))
    }

    /// The fewest web VMs that keep `clients` clients' mean response time at or under
    /// `target` seconds (at least 1); `None` when no number does (the target is under the
    /// service time).
    pub fn needed(&self, clients: f64, target: f64) -> Option<u32> {
        if target < self.service_time {
            return None;
        }
        let vms = (clients / (target * self.per_vm)).ceil().max(1.0);
        Some(if vms >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            vms as u32
        })
    }

    /// The mean response time of `clients` clients on `vms` web VMs, seconds.
    pub fn response_time(&self, clients: f64, vms: u32) -> f64 {
        (clients / (f64::from(vms.max(1)) * self.per_vm)).max(self.service_time)
    }

    /// `80 req/s per web VM (source)`.
    pub fn describe(&self) -> String {
        format!("{:.0} req/s per web VM ({})", self.per_vm, self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn row(s: i64, rate: f64, mean: f64, active: u32) -> Row {
        Row {
            time: DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap(),
            group: "site".into(),
            requests: rate as u64,
            rate,
            mean_response_time: Some(mean),
            p95_response_time: Some(mean),
            in_flight: Some(rate * mean),
            vms_booting: 0,
            vms_active: active,
            vms_draining: 0,
            desired: active,
            target_response_time: 0.2,
            metric: None,
            decision: "hold".into(),
            reason: String::new(),
        }
    }

    fn template(extra: &str) -> Template {
        Template::parse(
            "site.template",
            &format!("image = i\nmin_vms = 1\nmax_vms = 4\ntarget_response_time = 0.2\n{extra}"),
            20,
        )
        .unwrap()
    }

    #[test]
    fn the_template_gives_the_capacity_when_it_sets_both_keys() {
        let c = Capacity::from_template(&template("web_threads = 4\nweb_service_time_ms = 50\n"))
            .unwrap();
        assert_eq!((c.per_vm, c.service_time), (80.0, 0.05));
        assert!(Capacity::from_template(&template("web_threads = 4\n")).is_none());
        assert!(Capacity::from_template(&template("")).is_none());
    }

    #[test]
    fn the_run_gives_it_from_its_saturated_seconds() {
        // Low load: 4 clients on 1 VM (0.051 s); then 36 clients on 1 VM (0.45 s, 80/s),
        // then on 3 VMs (0.15 s, 240/s); one second of a graceful reload (40/s).
        let mut rows: Vec<Row> = (0..40).map(|s| row(s, 78.0, 0.051, 1)).collect();
        rows.extend((40..48).map(|s| row(s, 80.0, 0.45, 1)));
        rows.push(row(48, 40.0, 0.9, 1));
        rows.extend((49..100).map(|s| row(s, 240.0, 0.15, 3)));
        let c = Capacity::measured(&rows).unwrap();
        assert_eq!(c.per_vm, 80.0);
        assert_eq!(c.service_time, 0.051);
        assert!(
            c.source
                .starts_with("measured: the median of 60 saturated seconds"),
            "{}",
            c.source
        );
        // Never saturated: nothing to measure.
        let idle: Vec<Row> = (0..40).map(|s| row(s, 78.0, 0.051, 1)).collect();
        assert_eq!(Capacity::measured(&idle), None);
        assert_eq!(Capacity::measured(&[]), None);
    }

    #[test]
    fn what_a_load_needs() {
        let c = Capacity {
            per_vm: 80.0,
            service_time: 0.05,
            source: String::new(),
        };
        // The sample: 36 clients at 0.2 s need 3 VMs (2 give 0.225 s).
        assert_eq!(c.needed(36.0, 0.2), Some(3));
        assert!((c.response_time(36.0, 2) - 0.225).abs() < 1e-12);
        assert!((c.response_time(36.0, 3) - 0.15).abs() < 1e-12);
        assert_eq!(c.needed(4.0, 0.2), Some(1));
        assert_eq!(c.needed(0.0, 0.2), Some(1));
        assert_eq!(c.response_time(4.0, 1), 0.05);
        // A target under the service time: no number of VMs.
        assert_eq!(c.needed(4.0, 0.04), None);
        assert_eq!(c.needed(f64::MAX, 0.2), Some(u32::MAX));
    }
}
