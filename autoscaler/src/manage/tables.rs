//! The tables `autoscaler-manage` prints (`--format table`).

use chrono::{DateTime, Utc};

use super::output::Table;
use crate::{
    conductor::api::{Phase, StatusView, TemplateRecord, TemplateView, VmView},
    driver::VmStatus,
    messaging::Role,
    template::Template,
};

/// `template list`: one site in a line (also its JSON form).
#[derive(Debug, serde::Serialize)]
pub(super) struct SiteLine {
    pub name: String,
    /// `None` while the conductor has not stepped the group yet.
    pub phase: Option<Phase>,
    /// Web VMs the cloud shows `ACTIVE`, and all the group's web VMs.
    pub web_active: usize,
    pub web_total: usize,
    pub min_vms: u32,
    pub max_vms: u32,
    pub url: Option<String>,
    /// The conductor that steers it, if one holds its lease.
    pub conductor: Option<String>,
    pub instantiated_at: DateTime<Utc>,
}

impl SiteLine {
    pub(super) fn of(view: &TemplateView) -> SiteLine {
        let status = view.status.as_ref();
        let web = || {
            status
                .into_iter()
                .flat_map(|s| &s.vms)
                .filter(|vm| vm.role == Some(Role::Web))
        };
        let template = &view.record.template;
        SiteLine {
            name: template.name().to_owned(),
            phase: status.map(|s| s.phase),
            web_active: web().filter(|vm| vm.status == VmStatus::Active).count(),
            web_total: web().count(),
            min_vms: template.min_vms(),
            max_vms: template.max_vms(),
            url: status.and_then(|s| s.url.clone()),
            conductor: view.conductor.clone(),
            instantiated_at: view.record.instantiated_at,
        }
    }
}

pub(super) fn site_table(sites: &[SiteLine]) -> Table {
    Table {
        header: vec![
            "name",
            "phase",
            "web VMs (active/all)",
            "min..max",
            "url",
            "conductor",
            "instantiated",
        ],
        rows: sites
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.phase
                        .map_or("-".into(), |p| format!("{p:?}").to_lowercase()),
                    format!("{}/{}", s.web_active, s.web_total),
                    format!("{}..{}", s.min_vms, s.max_vms),
                    s.url.clone().unwrap_or_else(|| "-".into()),
                    s.conductor.clone().unwrap_or_else(|| "-".into()),
                    s.instantiated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect(),
    }
}

pub(super) fn template_table(templates: &[&Template]) -> Table {
    Table {
        header: vec![
            "name",
            "image",
            "min_vms",
            "max_vms",
            "target_response_time",
            "flavor",
            "network",
        ],
        rows: templates
            .iter()
            .map(|t| {
                vec![
                    t.name().to_owned(),
                    t.image().to_owned(),
                    t.min_vms().to_string(),
                    t.max_vms().to_string(),
                    format!("{} s", t.target_response_time().as_secs_f64()),
                    t.flavor().unwrap_or("-").to_owned(),
                    t.network().unwrap_or("-").to_owned(),
                ]
            })
            .collect(),
    }
}

pub(super) fn record_table(records: &[TemplateRecord]) -> Table {
    let mut table = template_table(&records.iter().map(|r| &r.template).collect::<Vec<_>>());
    table.header.push("instantiated");
    for (row, record) in table.rows.iter_mut().zip(records) {
        row.push(
            record
                .instantiated_at
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        );
    }
    table
}

pub(super) fn vm_table(vms: &[VmView]) -> Table {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    Table {
        header: vec![
            "vm",
            "template",
            "role",
            "status",
            "address",
            "heartbeat age (s)",
            "in pool",
            "busy",
        ],
        rows: vms
            .iter()
            .map(|vm| {
                vec![
                    vm.vm_id.clone(),
                    vm.group.clone(),
                    or_dash(vm.role.map(|r| r.to_string())),
                    or_dash(vm.status.map(|s| s.to_string())),
                    or_dash(vm.address.clone()),
                    or_dash(vm.heartbeat_age.map(|a| format!("{a:.1}"))),
                    if vm.in_pool { "yes" } else { "no" }.to_owned(),
                    or_dash(vm.busy.map(|b| b.to_string())),
                ]
            })
            .collect(),
    }
}

pub(super) fn status_table(s: &StatusView) -> Table {
    let d = &s.dropped;
    let rows = [
        ("host", s.host.clone()),
        ("version", s.version.clone()),
        ("started", s.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        ("broker", s.broker.clone()),
        ("templates", s.templates.join(", ")),
        ("requests received", s.received_requests.to_string()),
        ("telemetry received", s.received_telemetry.to_string()),
        (
            "dropped",
            format!(
                "{} (malformed {}, oversized {}, unknown kind {}, bad payload {}, unsupported version {}, \
                 out of window {}, unknown group {}, not listed {}, not splitter {}, future generation {}, \
                 rpc not allowed {}, rpc bad reply_to {}, rpc stale {}, unsigned {}, bad mac {}, replayed {})",
                d.total(),
                d.malformed,
                d.oversized,
                d.unknown_kind,
                d.bad_payload,
                d.unsupported_version,
                d.out_of_window,
                d.unknown_group,
                d.not_listed,
                d.not_splitter,
                d.future_generation,
                d.rpc_not_allowed,
                d.rpc_bad_reply_to,
                d.rpc_stale,
                d.unsigned,
                d.bad_mac,
                d.replayed
            ),
        ),
    ];
    Table {
        header: vec!["property", "value"],
        rows: rows
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect(),
    }
}
