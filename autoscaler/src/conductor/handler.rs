//! The conductor's answers to CLI requests and its intake of telemetry: plain functions of
//! the request, the time and the conductor's state, so they are tested without a broker.

use chrono::{DateTime, Utc};
use serde::Serialize;

use std::collections::BTreeMap;

use super::{
    api::{Request, StatusView, TemplateRecord, TemplateView, VmView},
    group::{Group, GroupSettings, RemoveError},
    state::{TemplateStore, VmRegistry},
};
use crate::{
    messaging::{rpc::RemoteError, rpc::RpcReply, DropSnapshot, Heartbeat, Metrics},
    template::Template,
};
use autoscaler_core::notification::{Notification, VmDeleteStart};

/// What handling a request produced.
#[derive(Debug)]
pub struct Handled {
    pub reply: RpcReply,
    /// Notifications the service publishes after answering.
    pub events: Vec<Notification>,
}

/// Facts about this conductor that `status` reports.
#[derive(Debug, Clone)]
pub struct Identity {
    pub host: String,
    pub started_at: DateTime<Utc>,
}

/// The conductor's state and the rules that change it.
#[derive(Debug)]
pub struct Conductor {
    pub identity: Identity,
    /// `[conductor] max_vms_ceiling`.
    pub max_vms_ceiling: u32,
    pub templates: TemplateStore,
    pub vms: VmRegistry,
    /// One per template record, steered by the service's ticks.
    pub groups: BTreeMap<String, Group>,
    pub settings: GroupSettings,
    pub received_requests: u64,
    pub received_telemetry: u64,
}

fn error(kind: &str, message: impl Into<String>) -> Handled {
    Handled {
        reply: RpcReply::Error(RemoteError {
            kind: kind.to_owned(),
            message: message.into(),
        }),
        events: Vec::new(),
    }
}

fn ok(value: impl Serialize, events: Vec<Notification>) -> Handled {
    Handled {
        reply: RpcReply::Ok(serde_json::to_value(value).expect("replies serialize to JSON")),
        events,
    }
}

impl Conductor {
    /// Answers one request. `broker` and `dropped` describe the link for `status`.
    pub fn handle(
        &mut self,
        request: Request,
        now: DateTime<Utc>,
        broker: &str,
        dropped: DropSnapshot,
    ) -> Handled {
        self.received_requests += 1;
        match request {
            Request::TemplateInstantiate { source, text } => self.instantiate(source, &text, now),
            Request::TemplateDestroy { name } => self.destroy(&name),
            Request::TemplateShow { name: None } => {
                let views: Vec<TemplateView> =
                    self.templates.all().map(|r| self.view(r, now)).collect();
                ok(views, vec![])
            }
            Request::TemplateShow { name: Some(name) } => match self.templates.get(&name) {
                Some(record) => ok(vec![self.view(record, now)], vec![]),
                None => self.not_found(&name),
            },
            Request::VmList { template } => ok(self.vm_list(template.as_deref(), now), vec![]),
            Request::VmDelete { name } => self.delete_vm(&name, now),
            Request::Status => ok(
                StatusView {
                    host: self.identity.host.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    started_at: self.identity.started_at,
                    broker: broker.to_owned(),
                    templates: self
                        .templates
                        .all()
                        .map(|r| r.template.name().to_owned())
                        .collect(),
                    received_requests: self.received_requests,
                    received_telemetry: self.received_telemetry,
                    dropped,
                },
                vec![],
            ),
        }
    }

    fn instantiate(&mut self, source: String, text: &str, now: DateTime<Utc>) -> Handled {
        let template = match Template::parse(&source, text, self.max_vms_ceiling) {
            Ok(t) => t,
            Err(e) => return error("invalid", e.to_string()),
        };
        // One template at a time for now: the local cloud and the splitter serve one site.
        if let Some(active) = self.templates.all().next() {
            return error(
                "conflict",
                format!(
                    "template {:?} is already active (instantiated {} from {}); destroy it first with: autoscaler-manage template destroy {}",
                    active.template.name(),
                    active.instantiated_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    active.source,
                    active.template.name()
                ),
            );
        }
        let record = TemplateRecord {
            template,
            source,
            instantiated_at: now,
            destroying: false,
        };
        if let Err(e) = self.templates.insert(record.clone()) {
            return error("internal", e.to_string());
        }
        let name = record.template.name().to_owned();
        self.groups.insert(
            name,
            Group::new(record.template.clone(), false, self.settings),
        );
        let event = Notification::TemplateInstantiated(record.clone());
        ok(record, vec![event])
    }

    /// Starts the tear-down; the group forgets the template when it is done
    /// ([`Conductor::forget`]). Asking again while it runs is not an error.
    fn destroy(&mut self, name: &str) -> Handled {
        if self.templates.get(name).is_none() {
            return self.not_found(name);
        }
        if let Err(e) = self.templates.set_destroying(name) {
            return error("internal", e.to_string());
        }
        if let Some(group) = self.groups.get_mut(name) {
            group.destroy();
        }
        let record = self.templates.get(name).expect("checked above").clone();
        let event = Notification::TemplateDestroyStart(record.clone());
        ok(record, vec![event])
    }

    fn delete_vm(&mut self, name: &str, now: DateTime<Utc>) -> Handled {
        let mut refusals = Vec::new();
        for group in self.groups.values_mut() {
            match group.remove_vm(name, now) {
                Ok(vm) => {
                    let event = Notification::VmDeleteStart(VmDeleteStart {
                        template: group.name().to_owned(),
                        vm_name: name.to_owned(),
                    });
                    return ok(vm, vec![event]);
                }
                Err(RemoveError::NotFound { .. }) => continue,
                Err(why) => refusals.push(why),
            }
        }
        match refusals.pop() {
            Some(why) => error("conflict", why.to_string()),
            None => error(
                "not_found",
                format!("no VM named {name:?} in any template (see autoscaler-manage vm list)"),
            ),
        }
    }

    /// The group of `name` is gone: the template is forgotten.
    pub fn forget(&mut self, name: &str) -> Vec<Notification> {
        self.groups.remove(name);
        match self.templates.remove(name) {
            Ok(Some(record)) => vec![Notification::TemplateDestroyed(record)],
            Ok(None) => vec![],
            Err(e) => {
                tracing::error!(%e, template = name, "could not forget the template");
                vec![]
            }
        }
    }

    fn view(&self, record: &TemplateRecord, now: DateTime<Utc>) -> TemplateView {
        TemplateView {
            record: record.clone(),
            status: self.groups.get(record.template.name()).map(|g| g.view(now)),
            metrics: self
                .groups
                .get(record.template.name())
                .and_then(|g| g.last_metrics().cloned()),
        }
    }

    /// The VMs of the groups as the cloud last showed them, with what their heartbeats
    /// say, then VMs only heard from.
    fn vm_list(&self, template: Option<&str>, now: DateTime<Utc>) -> Vec<VmView> {
        let heard = self.vms.list(template, now);
        let mut out = Vec::new();
        for (name, group) in &self.groups {
            if template.is_some_and(|t| t != name) {
                continue;
            }
            for vm in group.view(now).vms {
                let beat = heard.iter().find(|h| h.vm_id == vm.name);
                out.push(VmView {
                    vm_id: vm.name.clone(),
                    group: name.clone(),
                    role: vm.role,
                    cloud_id: Some(vm.id),
                    status: Some(vm.status),
                    address: vm.address,
                    last_heartbeat: beat.and_then(|b| b.last_heartbeat),
                    heartbeat_age: vm.heartbeat_age,
                    heartbeats: beat.map_or(0, |b| b.heartbeats),
                    in_pool: vm.in_pool,
                    busy: vm.busy,
                });
            }
        }
        for h in heard {
            if !out.iter().any(|v| v.vm_id == h.vm_id) {
                out.push(h);
            }
        }
        out
    }

    fn not_found(&self, name: &str) -> Handled {
        let active: Vec<_> = self.templates.all().map(|r| r.template.name()).collect();
        let known = if active.is_empty() {
            "no template is active".to_owned()
        } else {
            format!("active: {}", active.join(", "))
        };
        error(
            "not_found",
            format!("no active template named {name:?} ({known})"),
        )
    }

    /// Takes in the splitter's per-second metrics; metrics for a group this conductor
    /// does not steer are not kept.
    /// Takes in the splitter's metrics; true when they complete the evidence for a
    /// scaling action of their group at `now` (the caller then ticks at once).
    pub fn metrics(&mut self, metrics: Metrics, now: DateTime<Utc>) -> bool {
        self.received_telemetry += 1;
        match self.groups.get_mut(&metrics.group) {
            Some(group) => {
                group.metrics(metrics);
                group.acts_now(now)
            }
            None => false,
        }
    }

    /// Whether a heartbeat from `vm` of `group` saying its server answers puts it into the
    /// splitter's pool at a tick now (the caller then ticks at once).
    pub fn joins_now(&self, group: &str, vm: &str) -> bool {
        self.groups.get(group).is_some_and(|g| g.joins_now(vm))
    }

    /// Takes in one heartbeat.
    pub fn heard(&mut self, heartbeat: Heartbeat, now: DateTime<Utc>) {
        self.received_telemetry += 1;
        self.vms.heard(heartbeat, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conductor::state::TemplateStore;

    const SHOP: &str =
        "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 4\ntarget_response_time = 0.2\n";

    fn conductor(dir: &std::path::Path) -> Conductor {
        Conductor {
            identity: Identity {
                host: "node1".into(),
                started_at: Utc::now(),
            },
            max_vms_ceiling: 20,
            templates: TemplateStore::open(dir).unwrap(),
            vms: VmRegistry::default(),
            groups: BTreeMap::new(),
            settings: crate::conductor::group_settings(&crate::conf::Config::default()),
            received_requests: 0,
            received_telemetry: 0,
        }
    }

    fn call(c: &mut Conductor, request: Request) -> Handled {
        c.handle(
            request,
            Utc::now(),
            "rabbit://guest@127.0.0.1:5672/",
            DropSnapshot::default(),
        )
    }

    fn instantiate(text: &str) -> Request {
        Request::TemplateInstantiate {
            source: "/tmp/shop.template".into(),
            text: text.into(),
        }
    }

    fn error_message(handled: &Handled) -> String {
        match &handled.reply {
            RpcReply::Error(e) => format!("{}: {}", e.kind, e.message),
            RpcReply::Ok(v) => panic!("expected an error, got {v}"),
        }
    }

    #[test]
    fn instantiate_records_and_notifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path());
        let handled = call(&mut c, instantiate(SHOP));
        assert!(
            matches!(handled.reply, RpcReply::Ok(_)),
            "{:?}",
            handled.reply
        );
        assert_eq!(
            handled.events[0].event_type(),
            "autoscaler.template.instantiated"
        );
        assert_eq!(
            c.templates.get("shop").unwrap().source,
            "/tmp/shop.template"
        );
    }

    #[test]
    fn a_second_template_names_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path());
        call(&mut c, instantiate(SHOP));
        let second = call(&mut c, instantiate(&SHOP.replace("shop", "blog")));
        let message = error_message(&second);
        assert!(
            message.starts_with("conflict: template \"shop\" is already active"),
            "{message}"
        );
        assert!(message.contains("template destroy shop"), "{message}");
        assert!(second.events.is_empty());
    }

    #[test]
    fn invalid_templates_are_refused_with_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path());
        let message = error_message(&call(
            &mut c,
            instantiate(&SHOP.replace("max_vms = 4", "max_vms = 99")),
        ));
        assert!(message.starts_with("invalid: "), "{message}");
        assert!(
            message.contains("/tmp/shop.template") && message.contains("max_vms"),
            "{message}"
        );
        assert!(c.templates.is_empty());
    }

    #[test]
    fn destroy_then_show() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path());
        call(&mut c, instantiate(SHOP));
        let missing = error_message(&call(
            &mut c,
            Request::TemplateDestroy {
                name: "blog".into(),
            },
        ));
        assert_eq!(
            missing,
            "not_found: no active template named \"blog\" (active: shop)"
        );
        let destroyed = call(
            &mut c,
            Request::TemplateDestroy {
                name: "shop".into(),
            },
        );
        assert_eq!(
            destroyed.events[0].event_type(),
            "autoscaler.template.destroy.start"
        );
        // Destroying: still shown (the group tears down), persisted as such.
        assert!(c.templates.get("shop").unwrap().destroying);
        assert_eq!(
            c.groups["shop"].phase,
            crate::conductor::api::Phase::Stopping
        );
        match call(&mut c, Request::TemplateShow { name: None }).reply {
            RpcReply::Ok(v) => assert_eq!(v[0]["destroying"], true),
            other => panic!("{other:?}"),
        }
        // The group reports it is gone: forgotten, with the end notification.
        let events = c.forget("shop");
        assert_eq!(events[0].event_type(), "autoscaler.template.destroyed");
        match call(&mut c, Request::TemplateShow { name: None }).reply {
            RpcReply::Ok(v) => assert_eq!(v, serde_json::json!([])),
            other => panic!("{other:?}"),
        }
    }
}
