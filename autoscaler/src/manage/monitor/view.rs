//! What `autoscaler-manage monitor` shows, from what it heard on the broker: one line a
//! second per template (the splitter's measurements, the conductor's tick: VMs by state,
//! its decision and why, and how many VMs are heard) and one line per notification as it
//! arrives.
//!
//! Pure: messages and the time go in, [`Line`]s come out; the I/O shell (`mod.rs`) only
//! moves bytes. A source that falls silent shows as `-` and a reason, never as stale
//! numbers: each second reports only what arrived within [`FRESH_SECONDS`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    conductor::timeseries::Row,
    messaging::{Heartbeat, Metrics, NotificationMessage, Role},
};

/// A measurement or a tick older than this (seconds) is not shown as current.
pub const FRESH_SECONDS: f64 = 3.0;
/// A VM not heard for this long (seconds) no longer counts as heard.
const HEARD_SECONDS: f64 = 5.0;
/// A template nothing was heard of for this long (seconds) leaves the view (destroyed).
const FORGET_SECONDS: f64 = 30.0;

/// One decoded message.
#[derive(Debug, Clone)]
pub enum Heard {
    /// The conductor's row of a group's tick (`status.<group>`).
    Status(Row),
    /// The splitter's measurements of one interval (`metrics.<group>`).
    Metrics(Metrics),
    Heartbeat(Heartbeat),
    Notification(NotificationMessage),
}

/// A template's second, as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Second {
    pub time: DateTime<Utc>,
    pub template: String,
    /// From the splitter: requests per second, mean and 95th percentile (seconds); `None`
    /// when no measurement arrived lately, the times also when there was no request.
    pub rate: Option<f64>,
    pub mean: Option<f64>,
    pub p95: Option<f64>,
    /// From the conductor's tick; `None` when no tick arrived lately.
    pub target: Option<f64>,
    pub booting: Option<u32>,
    pub active: Option<u32>,
    pub draining: Option<u32>,
    pub desired: Option<u32>,
    pub metric: Option<f64>,
    pub decision: Option<String>,
    pub reason: String,
    /// VMs whose heartbeat arrived lately, by role.
    pub heard_web: usize,
    pub heard_splitter: usize,
}

/// A notification, as shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub time: DateTime<Utc>,
    pub template: Option<String>,
    pub event_type: String,
    pub priority: String,
    pub payload: serde_json::Value,
}

/// What the monitor prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Line {
    Second(Second),
    Notification(Notice),
}

#[derive(Debug, Default)]
struct Template {
    /// Each with the time it arrived (this process's clock: the senders' may differ).
    status: Option<(DateTime<Utc>, Row)>,
    metrics: Option<(DateTime<Utc>, Metrics)>,
    heard: BTreeMap<String, (Role, DateTime<Utc>)>,
    last_heard: Option<DateTime<Utc>>,
}

/// The live state of the templates heard of.
#[derive(Debug, Default)]
pub struct LiveView {
    /// Only this template, when set.
    only: Option<String>,
    templates: BTreeMap<String, Template>,
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    (now - then).num_milliseconds() as f64 / 1000.0
}

impl LiveView {
    pub fn new(only: Option<String>) -> Self {
        LiveView {
            only,
            templates: BTreeMap::new(),
        }
    }

    fn wanted(&self, template: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == template)
    }

    /// Takes in one message heard at `now`; a notification comes straight back as a line.
    pub fn take(&mut self, now: DateTime<Utc>, heard: Heard) -> Option<Line> {
        let template = match &heard {
            Heard::Status(row) => row.group.clone(),
            Heard::Metrics(m) => m.group.clone(),
            Heard::Heartbeat(h) => h.group.clone(),
            Heard::Notification(n) => {
                // `template` is the name, or the whole template (`template.instantiated`).
                let template = n.payload["template"]
                    .as_str()
                    .or_else(|| n.payload["template"]["name"].as_str())
                    .map(str::to_owned);
                if template.as_deref().is_some_and(|t| !self.wanted(t))
                    || (template.is_none() && self.only.is_some())
                {
                    return None;
                }
                return Some(Line::Notification(Notice {
                    time: now,
                    template,
                    event_type: n.event_type.clone(),
                    priority: n.priority.as_str().to_owned(),
                    payload: n.payload.clone(),
                }));
            }
        };
        if !self.wanted(&template) {
            return None;
        }
        let entry = self.templates.entry(template).or_default();
        entry.last_heard = Some(now);
        match heard {
            Heard::Status(row) => entry.status = Some((now, row)),
            Heard::Metrics(metrics) => entry.metrics = Some((now, metrics)),
            Heard::Heartbeat(h) => {
                entry.heard.insert(h.vm_id, (h.role, now));
            }
            Heard::Notification(_) => unreachable!("returned above"),
        }
        None
    }

    /// One line per template for the second ending at `now`; templates silent for
    /// [`FORGET_SECONDS`] are dropped.
    pub fn second(&mut self, now: DateTime<Utc>) -> Vec<Line> {
        self.templates
            .retain(|_, t| t.last_heard.is_some_and(|at| age(now, at) < FORGET_SECONDS));
        let mut lines = Vec::new();
        for (name, t) in &mut self.templates {
            t.heard.retain(|_, (_, at)| age(now, *at) < HEARD_SECONDS);
            let count = |role| t.heard.values().filter(|(r, _)| *r == role).count();
            let metrics = t
                .metrics
                .as_ref()
                .filter(|(at, _)| age(now, *at) < FRESH_SECONDS)
                .map(|(_, m)| m);
            let status = t
                .status
                .as_ref()
                .filter(|(at, _)| age(now, *at) < FRESH_SECONDS);
            let answered = metrics.filter(|m| m.site.requests > 0);
            let reason = match (status, &t.status) {
                (Some((_, row)), _) => row.reason.clone(),
                (None, Some((at, _))) => {
                    format!("no tick from the conductor for {:.0} s", age(now, *at))
                }
                (None, None) => "no tick from the conductor yet".to_owned(),
            };
            let row = status.map(|(_, row)| row);
            lines.push(Line::Second(Second {
                time: now,
                template: name.clone(),
                rate: metrics.map(|m| {
                    if m.interval > 0.0 {
                        m.site.requests as f64 / m.interval
                    } else {
                        0.0
                    }
                }),
                mean: answered.map(|m| m.site.mean),
                p95: answered.map(|m| m.site.p95),
                target: row.map(|r| r.target_response_time),
                booting: row.map(|r| r.vms_booting),
                active: row.map(|r| r.vms_active),
                draining: row.map(|r| r.vms_draining),
                desired: row.map(|r| r.desired),
                metric: row.and_then(|r| r.metric),
                decision: row.map(|r| r.decision.clone()),
                reason,
                heard_web: count(Role::Web),
                heard_splitter: count(Role::Splitter),
            }));
        }
        lines
    }
}

/// The columns of a second, aligned; the header goes through the same widths.
#[allow(clippy::too_many_arguments)]
fn columns(
    time: &str,
    template: &str,
    rate: &str,
    mean: &str,
    p95: &str,
    target: &str,
    vms: &str,
    heard: &str,
    desired: &str,
    metric: &str,
    decision: &str,
    reason: &str,
) -> String {
    format!(
        "{time:<8} {template:<16} {rate:>7} {mean:>6} {p95:>6} {target:>6} {vms:<9} {heard:<5} \
         {desired:>7} {metric:>6} {decision:<9} {reason}"
    )
}

/// The header above [`Line::to_text`]'s seconds; `WEB a/b/d` is active/booting/draining,
/// `HEARD` web+splitter VMs.
pub fn header() -> String {
    columns(
        "TIME",
        "TEMPLATE",
        "REQ/S",
        "MEAN",
        "P95",
        "TARGET",
        "WEB a/b/d",
        "HEARD",
        "DESIRED",
        "METRIC",
        "DECISION",
        "REASON",
    )
}

impl Line {
    /// One line of text for a terminal.
    pub fn to_text(&self) -> String {
        fn num(v: Option<f64>, decimals: usize) -> String {
            v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
        }
        fn count(v: Option<u32>) -> String {
            v.map_or("-".to_owned(), |v| v.to_string())
        }
        match self {
            Line::Second(s) => columns(
                &s.time.format("%H:%M:%S").to_string(),
                &s.template,
                &num(s.rate, 1),
                &num(s.mean, 3),
                &num(s.p95, 3),
                &num(s.target, 3),
                &format!(
                    "{}/{}/{}",
                    count(s.active),
                    count(s.booting),
                    count(s.draining)
                ),
                &format!("{}+{}", s.heard_web, s.heard_splitter),
                &count(s.desired),
                &num(s.metric, 2),
                s.decision.as_deref().unwrap_or("-"),
                &s.reason,
            ),
            Line::Notification(n) => format!(
                "{} {:<16} ** {} {}: {}",
                n.time.format("%H:%M:%S"),
                n.template.as_deref().unwrap_or("-"),
                n.priority,
                n.event_type,
                n.payload
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::{Priority, Stats};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn row(group: &str, decision: &str) -> Row {
        Row {
            time: t(0),
            group: group.into(),
            requests: 80,
            rate: 80.0,
            mean_response_time: Some(0.05),
            p95_response_time: Some(0.06),
            in_flight: Some(4.0),
            vms_booting: 2,
            vms_active: 1,
            vms_draining: 0,
            desired: 3,
            target_response_time: 0.2,
            metric: Some(2.5),
            decision: decision.into(),
            reason: "7 s need more".into(),
        }
    }

    fn metrics(group: &str, requests: u64) -> Metrics {
        Metrics {
            group: group.into(),
            vm_id: "splitter-1".into(),
            start: t(0),
            interval: 0.5,
            site: Stats {
                requests,
                mean: 0.05,
                p95: 0.09,
                ..Stats::default()
            },
            members: vec![],
            malformed_lines: 0,
            modjk_messages: 0,
        }
    }

    fn heartbeat(group: &str, vm: &str, role: Role) -> Heartbeat {
        Heartbeat {
            group: group.into(),
            vm_id: vm.into(),
            role,
            seq: 1,
            serving: Some(true),
            url: None,
            address: None,
        }
    }

    fn second(lines: &[Line]) -> &Second {
        match &lines[0] {
            Line::Second(s) => s,
            other => panic!("not a second: {other:?}"),
        }
    }

    #[test]
    fn a_second_joins_the_splitter_the_conductor_and_the_heartbeats() {
        let mut view = LiveView::new(None);
        assert!(view
            .take(t(0), Heard::Status(row("shop", "scale_out")))
            .is_none());
        assert!(view
            .take(t(0), Heard::Metrics(metrics("shop", 40)))
            .is_none());
        view.take(
            t(0),
            Heard::Heartbeat(heartbeat("shop", "web-1", Role::Web)),
        );
        view.take(
            t(0),
            Heard::Heartbeat(heartbeat("shop", "web-2", Role::Web)),
        );
        view.take(
            t(0),
            Heard::Heartbeat(heartbeat("shop", "sp", Role::Splitter)),
        );
        let lines = view.second(t(1));
        assert_eq!(lines.len(), 1);
        let s = second(&lines);
        assert_eq!(s.rate, Some(80.0), "40 requests in half a second");
        assert_eq!((s.mean, s.p95), (Some(0.05), Some(0.09)));
        assert_eq!(
            (s.active, s.booting, s.draining),
            (Some(1), Some(2), Some(0))
        );
        assert_eq!(s.decision.as_deref(), Some("scale_out"));
        assert_eq!((s.heard_web, s.heard_splitter), (2, 1));
        let text = lines[0].to_text();
        assert!(text.contains(" shop "), "{text}");
        assert!(text.contains("1/2/0"), "{text}");
        assert!(text.ends_with("scale_out 7 s need more"), "{text}");
        assert_eq!(text.find(" shop "), header().find(" TEMPLATE "));
        assert_eq!(text.find("1/2/0"), header().find("WEB a/b/d"));
    }

    #[test]
    fn silent_sources_show_as_dashes_with_the_reason() {
        let mut view = LiveView::new(None);
        view.take(t(0), Heard::Status(row("shop", "hold")));
        view.take(t(0), Heard::Metrics(metrics("shop", 0)));
        let s = second(&view.second(t(1))).clone();
        assert_eq!(s.rate, Some(0.0));
        assert_eq!(s.mean, None, "no request, no mean");
        let lines = view.second(t(10));
        let s = second(&lines);
        assert_eq!((s.rate, s.active, s.decision.clone()), (None, None, None));
        assert_eq!(s.reason, "no tick from the conductor for 10 s");
        assert!(lines[0].to_text().contains("-/-/-"));
        assert!(
            view.second(t(40)).is_empty(),
            "forgotten after 30 s of silence"
        );
    }

    #[test]
    fn heartbeats_expire() {
        let mut view = LiveView::new(None);
        view.take(
            t(0),
            Heard::Heartbeat(heartbeat("shop", "web-1", Role::Web)),
        );
        view.take(
            t(4),
            Heard::Heartbeat(heartbeat("shop", "web-2", Role::Web)),
        );
        let s = second(&view.second(t(6))).clone();
        assert_eq!(s.heard_web, 1);
        assert_eq!(s.reason, "no tick from the conductor yet");
    }

    #[test]
    fn one_template_only() {
        let mut view = LiveView::new(Some("shop".into()));
        view.take(t(0), Heard::Status(row("blog", "hold")));
        assert!(view.second(t(1)).is_empty());
        let note = |template: serde_json::Value| {
            Heard::Notification(NotificationMessage::new(
                "autoscaler-conductor.node1",
                "autoscaler.scale.up",
                Priority::Info,
                serde_json::json!({ "template": template, "from": 1, "to": 3 }),
                t(0),
            ))
        };
        assert!(view.take(t(0), note("blog".into())).is_none());
        assert!(view.take(t(0), note(serde_json::Value::Null)).is_none());
        assert!(
            view.take(
                t(0),
                note(serde_json::json!({"name": "shop", "min_vms": 1}))
            )
            .is_some(),
            "template.instantiated carries the whole template"
        );
        let line = view.take(t(0), note("shop".into())).unwrap();
        assert_eq!(
            line.to_text(),
            "04:00:00 shop             ** INFO autoscaler.scale.up: {\"from\":1,\"template\":\"shop\",\"to\":3}"
                .replace("04:00:00", &t(0).format("%H:%M:%S").to_string())
        );
        let json = serde_json::to_value(&line).unwrap();
        assert_eq!(json["kind"], "notification");
        assert_eq!(json["event_type"], "autoscaler.scale.up");
    }
}
