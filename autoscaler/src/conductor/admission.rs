//! Telemetry admission (issue 17): what a VM sends is checked before the conductor keeps
//! any of it. The message's time and a metrics interval's start must lie within now ±
//! `[agent] max_clock_skew` (checked without arithmetic on them); the group must be one
//! this conductor steers; and the group itself says who may speak for it
//! (`autoscaler_core::group::admit`): a heartbeat only from a VM the cloud lists there in
//! the role it claims, metrics and pool acknowledgements only from its splitter, an
//! acknowledgement only of a generation that was sent. So a heartbeat with a made-up id
//! or group stores nothing, and one VM's word cannot move another group.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};

use super::{delivery::Telemetry, group::Group, handler::Conductor};
use crate::messaging::DropReason;
use autoscaler_core::payload::within_clock_skew;

impl Conductor {
    /// Whether `telemetry`, written at `sent` by its agent, may be taken in at `now`.
    pub fn admit(
        &self,
        telemetry: &Telemetry,
        sent: DateTime<Utc>,
        now: DateTime<Utc>,
        skew: Duration,
    ) -> Result<(), DropReason> {
        admit(&self.groups, telemetry, sent, now, skew)
    }
}

/// Whether `telemetry`, written at `sent`, may be taken in at `now` by a conductor
/// steering `groups`.
pub fn admit(
    groups: &BTreeMap<String, Group>,
    telemetry: &Telemetry,
    sent: DateTime<Utc>,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(), DropReason> {
    in_window("time", sent, now, skew)?;
    let steered = |group: &str| {
        groups
            .get(group)
            .ok_or_else(|| DropReason::UnknownGroup(group.to_owned()))
    };
    match telemetry {
        Telemetry::Heartbeat(h) => steered(&h.group)?.admits(&h.vm_id, h.role)?,
        Telemetry::Metrics(m) => {
            in_window("start", m.start, now, skew)?;
            steered(&m.group)?.admits_splitter(&m.vm_id)?
        }
        Telemetry::PoolAck(ack) => steered(&ack.group)?.admits_ack(ack)?,
    }
    Ok(())
}

fn in_window(
    field: &'static str,
    time: DateTime<Utc>,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<(), DropReason> {
    if within_clock_skew(time, now, skew) {
        Ok(())
    } else {
        Err(DropReason::OutOfWindow { field, time })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use autoscaler_core::{
        cloud::{Vm, VmId, VmStatus, META_GROUP, META_ROLE},
        group::Observed,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::conductor::{delivery::decode_sent, state::VmRegistry};

    const SHOP: &str =
        "name = shop\nimage = web\nmin_vms = 1\nmax_vms = 4\ntarget_response_time = 0.2\n";

    fn vm(name: &str, role: &str) -> Vm {
        Vm {
            id: VmId(format!("id-{name}")),
            name: name.into(),
            image: "web".into(),
            status: VmStatus::Active,
            address: Some("127.0.0.2".parse().unwrap()),
            metadata: BTreeMap::from([
                (META_GROUP.to_owned(), "shop".to_owned()),
                (META_ROLE.to_owned(), role.to_owned()),
            ]),
            created_at: DateTime::from_timestamp(1_796_000_000, 0).unwrap(),
            fault: None,
        }
    }

    fn listing() -> Observed {
        Observed {
            vms: vec![vm("shop-splitter", "splitter"), vm("shop-web-1", "web")],
            heartbeats: BTreeMap::new(),
            link_up: true,
            link_up_since: None,
        }
    }

    /// The groups of a conductor steering `shop`, whose cloud lists a splitter and one
    /// web VM.
    fn groups(now: DateTime<Utc>) -> BTreeMap<String, Group> {
        let settings = crate::conductor::group_settings(&crate::conf::Config::default());
        let template = crate::template::Template::parse("shop", SHOP, 20).unwrap();
        let mut group = Group::new(template, false, settings);
        group.step(now, listing());
        BTreeMap::from([("shop".to_owned(), group)])
    }

    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("shop-splitter".to_owned()),
            Just("shop-web-1".to_owned()),
            Just("shop".to_owned()),
            "\\PC{0,12}",
        ]
    }

    /// Any time chrono can read, most of them absurd.
    fn times() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("+262142-12-31T23:59:59Z".to_owned()),
            Just("-262143-01-01T00:00:00Z".to_owned()),
            Just("2026-12-04T09:00:00Z".to_owned()),
            (-8_210_266_876_799i64..8_210_298_412_799)
                .prop_map(|s| DateTime::from_timestamp(s, 0).unwrap().to_rfc3339()),
        ]
    }

    /// One envelope of each kind the telemetry queue carries, with arbitrary fields.
    fn envelopes() -> impl Strategy<Value = Vec<u8>> {
        let fields = (
            names(),
            names(),
            times(),
            times(),
            any::<u64>(),
            prop_oneof![any::<f64>(), Just(1.0), Just(f64::NAN)],
            0..3usize,
            any::<bool>(),
        );
        fields.prop_map(|(group, vm, time, start, n, interval, kind, flag)| {
            let role = if flag { "web" } else { "splitter" };
            let payload = match kind {
                0 => serde_json::json!({"group": group, "vm_id": vm, "role": role, "seq": n,
                    "serving": flag, "address": "127.0.0.9"}),
                1 => serde_json::json!({"group": group, "vm_id": vm, "start": start,
                    "interval": interval, "site": {"requests": n, "errors": n, "mean": interval,
                    "p50": 0.0, "p95": interval, "p99": 0.0, "max": 0.0},
                    "members": [{"member": vm, "requests": n, "errors": 0, "mean": 0.0,
                    "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "busy": n % 100}],
                    "malformed_lines": n, "modjk_messages": 0}),
                _ => serde_json::json!({"group": group, "vm_id": vm, "generation": n,
                    "result": if flag { "applied" } else { "rejected" }, "reason": vm}),
            };
            let kind = ["heartbeat", "metrics", "pool.ack"][kind];
            serde_json::to_vec(&serde_json::json!({"version": 1, "kind": kind,
                "sender": vm, "time": time, "payload": payload}))
            .unwrap()
        })
    }

    proptest! {
        /// Issue 17: arbitrary envelopes through admission, the intake and the next
        /// tick: no panic, and nothing kept of what was refused.
        #[test]
        fn arbitrary_envelopes_never_panic_the_intake(
            messages in proptest::collection::vec(envelopes(), 1..20),
        ) {
            let now: DateTime<Utc> = "2026-12-04T09:00:00Z".parse().unwrap();
            let mut groups = groups(now);
            let mut vms = VmRegistry::default();
            let skew = Duration::from_secs(30);
            for bytes in &messages {
                let Ok((sent, telemetry)) = decode_sent(bytes, 65_536) else { continue };
                if admit(&groups, &telemetry, sent, now, skew).is_err() {
                    continue;
                }
                let shop = groups.get_mut("shop").unwrap();
                match telemetry {
                    Telemetry::Heartbeat(h) => {
                        vms.heard(h, now);
                    }
                    Telemetry::Metrics(m) => {
                        shop.metrics(m);
                        let _ = shop.acts_now(now);
                    }
                    Telemetry::PoolAck(a) => {
                        let _ = shop.pool_ack(&a);
                    }
                }
            }
            prop_assert!(vms.len() <= 2, "only listed VMs are kept");
            let mut observed = listing();
            observed.heartbeats = vms.infos("shop");
            let group = groups.get_mut("shop").unwrap();
            let _ = group.step(now + chrono::TimeDelta::seconds(1), observed);
            let _ = group.view(now);
            prop_assert!(group.view(now).acked_generation <= group.view(now).pool_generation);
        }
    }
}
