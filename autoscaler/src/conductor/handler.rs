//! The conductor's answers to CLI requests and its intake of telemetry: plain functions of
//! the request, the time and the conductor's state, so they are tested without a broker.

use chrono::{DateTime, Utc};
use serde::Serialize;

use std::collections::BTreeMap;

use super::{
    api::{Request, StatusView, TemplateRecord, TemplateView, VmView, NOT_OWNER},
    group::{GroupSettings, RemoveError},
    memory::Memory,
    state::VmRegistry,
};
use crate::store::StoreError;
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
    /// The conductor that owns the request's group, when another one does: the service
    /// forwards the request there, and sends `reply` (`not_owner`) only when it cannot.
    pub forward_to: Option<String>,
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
    /// The templates of the groups this conductor owns, by name (the database has all).
    pub templates: BTreeMap<String, TemplateRecord>,
    pub vms: VmRegistry,
    /// One per group this conductor owns (holds the lease of), steered by its ticks.
    pub groups: BTreeMap<String, super::group::Group>,
    /// The database and the leases held there.
    pub memory: Memory,
    pub settings: GroupSettings,
    pub received_requests: u64,
    pub received_telemetry: u64,
    /// The last sequence number of each listed VM's messages (issue 17, item 2).
    pub sequences: super::signed::Sequences,
}

/// Whether `vm` is named as a VM of `template` (`<template>-<role>-<8 hex>`).
fn vm_of(vm: &str, template: &str) -> bool {
    vm.strip_prefix(template)
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(role, hex)| {
            matches!(role, "web" | "splitter")
                && hex.len() == 8
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

fn error(kind: &str, message: impl Into<String>) -> Handled {
    Handled {
        reply: RpcReply::Error(RemoteError {
            kind: kind.to_owned(),
            message: message.into(),
        }),
        events: Vec::new(),
        forward_to: None,
    }
}

/// `not_owner`: `template` is steered by `owner`, where the request is forwarded.
fn not_owner(template: &str, owner: String) -> Handled {
    Handled {
        forward_to: Some(owner),
        ..error(
            NOT_OWNER,
            format!("template {template:?} is steered by another conductor"),
        )
    }
}

fn ok(value: impl Serialize, events: Vec<Notification>) -> Handled {
    Handled {
        reply: RpcReply::Ok(serde_json::to_value(value).expect("replies serialize to JSON")),
        events,
        forward_to: None,
    }
}

impl Conductor {
    /// Answers one request. `broker` and `dropped` describe the link for `status`.
    pub async fn handle(
        &mut self,
        request: Request,
        now: DateTime<Utc>,
        broker: &str,
        dropped: DropSnapshot,
    ) -> Handled {
        self.received_requests += 1;
        match request {
            Request::TemplateInstantiate { source, text } => {
                self.instantiate(source, &text, now).await
            }
            Request::TemplateDestroy { name } => self.destroy(&name).await,
            Request::TemplateShow { name } => self.show(name.as_deref(), now).await,
            Request::VmList { template } => {
                if let Some(t) = &template {
                    if let Some(owner) = self.held_elsewhere(t).await {
                        return not_owner(t, owner);
                    }
                }
                ok(self.vm_list(template.as_deref(), now), vec![])
            }
            Request::VmDelete { name } => self.delete_vm(&name, now).await,
            Request::Status => ok(
                StatusView {
                    host: self.identity.host.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    started_at: self.identity.started_at,
                    broker: broker.to_owned(),
                    templates: self.templates.keys().cloned().collect(),
                    received_requests: self.received_requests,
                    received_telemetry: self.received_telemetry,
                    dropped,
                },
                vec![],
            ),
        }
    }

    async fn instantiate(&mut self, source: String, text: &str, now: DateTime<Utc>) -> Handled {
        let template = match Template::parse(&source, text, self.max_vms_ceiling) {
            Ok(t) => t,
            Err(e) => return error("invalid", e.to_string()),
        };
        let record = TemplateRecord {
            template,
            source,
            instantiated_at: now,
            destroying: false,
        };
        match self.add_template(&record).await {
            Ok(()) => {}
            // Names are unique: the name is the group, its VMs' prefix and routing keys.
            Err(StoreError::Duplicate(name)) => {
                let active = self.memory.store.template(&name).await.ok().flatten();
                let (at, from) =
                    active.map_or((now, "?".to_owned()), |a| (a.instantiated_at, a.source));
                return error(
                    "conflict",
                    format!(
                        "template {name:?} is already active (instantiated {} from {from}); destroy it first with: autoscaler-manage template destroy {name}",
                        at.format("%Y-%m-%d %H:%M:%S UTC"),
                    ),
                );
            }
            Err(e) => return error("internal", e.to_string()),
        }
        let event = Notification::TemplateInstantiated(record.clone());
        ok(record, vec![event])
    }

    /// Starts the tear-down: recorded in the database, where the group's owner (this
    /// conductor or another) sees it; the owner forgets the template when it is done
    /// ([`Conductor::forget`]). Asking again while it runs is not an error.
    async fn destroy(&mut self, name: &str) -> Handled {
        match self.memory.store.set_destroying(name).await {
            Ok(true) => {}
            Ok(false) => return self.not_found(name).await,
            Err(e) => return error("internal", e.to_string()),
        }
        if let Some(group) = self.groups.get_mut(name) {
            group.destroy();
        }
        if let Some(record) = self.templates.get_mut(name) {
            record.destroying = true;
        }
        let record = match self.memory.store.template(name).await {
            Ok(Some(record)) => record,
            Ok(None) => return self.not_found(name).await,
            Err(e) => return error("internal", e.to_string()),
        };
        let event = Notification::TemplateDestroyStart(record.clone());
        ok(record, vec![event])
    }

    async fn delete_vm(&mut self, name: &str, now: DateTime<Utc>) -> Handled {
        let mut refusals = Vec::new();
        let mut removed = None;
        for group in self.groups.values_mut() {
            match group.remove_vm(name, now) {
                Ok(vm) => {
                    removed = Some((group.name().to_owned(), vm));
                    break;
                }
                Err(RemoveError::NotFound { .. }) => continue,
                Err(why) => refusals.push(why),
            }
        }
        if let Some((template, vm)) = removed {
            self.record_removal(&template, name).await;
            let event = Notification::VmDeleteStart(VmDeleteStart {
                template,
                vm_name: name.to_owned(),
            });
            return ok(vm, vec![event]);
        }
        if let Some(why) = refusals.pop() {
            return error("conflict", why.to_string());
        }
        // A VM of a group another conductor steers: forwarded to its owner, or (none
        // holds it just now) the CLI asks again.
        let names = self.memory.store.template_names().await.unwrap_or_default();
        if let Some((template, _)) = names
            .iter()
            .find(|(t, _)| !self.groups.contains_key(t) && vm_of(name, t))
        {
            return Handled {
                forward_to: self.held_elsewhere(template).await,
                ..error(
                    NOT_OWNER,
                    format!(
                        "{name} is a VM of template {template:?}, which another conductor steers"
                    ),
                )
            };
        }
        error(
            "not_found",
            format!("no VM named {name:?} in any template (see autoscaler-manage vm list)"),
        )
    }

    /// `template show`: the templates from the database, with the live view of those this
    /// conductor owns (`status` is `null` for the others).
    async fn show(&self, name: Option<&str>, now: DateTime<Utc>) -> Handled {
        if let Some(name) = name {
            if let Some(owner) = self.held_elsewhere(name).await {
                return not_owner(name, owner);
            }
        }
        let records = match name {
            None => self.memory.store.templates().await,
            Some(name) => self
                .memory
                .store
                .template(name)
                .await
                .map(|r| r.into_iter().collect()),
        };
        match records {
            Ok(records) if records.is_empty() && name.is_some() => {
                self.not_found(name.unwrap_or_default()).await
            }
            Ok(records) => {
                let holders: BTreeMap<String, String> = match self.memory.store.leases().await {
                    Ok(leases) => leases
                        .into_iter()
                        .filter(|l| !l.expires_in.is_zero())
                        .filter_map(|l| Some((l.group, l.owner?)))
                        .collect(),
                    Err(e) => return error("internal", e.to_string()),
                };
                let views: Vec<TemplateView> = records
                    .iter()
                    .map(|r| {
                        let mut view =
                            self.view(self.templates.get(r.template.name()).unwrap_or(r), now);
                        view.conductor = holders.get(r.template.name()).cloned();
                        view
                    })
                    .collect();
                ok(views, vec![])
            }
            Err(e) => error("internal", e.to_string()),
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
            conductor: None,
        }
    }

    /// The VMs of the groups as the cloud last showed them, with what their heartbeats
    /// say, then VMs only heard from.
    fn vm_list(&self, template: Option<&str>, now: DateTime<Utc>) -> Vec<VmView> {
        // By id: at 10,000 VMs a search of the list for each would be 10^8 comparisons.
        let mut heard: BTreeMap<String, VmView> = self
            .vms
            .list(template, now)
            .into_iter()
            .map(|h| (h.vm_id.clone(), h))
            .collect();
        let mut out = Vec::new();
        for (name, group) in &self.groups {
            if template.is_some_and(|t| t != name) {
                continue;
            }
            for vm in group.view(now).vms {
                let beat = heard.remove(&vm.name);
                out.push(VmView {
                    vm_id: vm.name.clone(),
                    group: name.clone(),
                    role: vm.role,
                    cloud_id: Some(vm.id),
                    status: Some(vm.status),
                    address: vm.address,
                    last_heartbeat: beat.as_ref().and_then(|b| b.last_heartbeat),
                    heartbeat_age: vm.heartbeat_age,
                    heartbeats: beat.map_or(0, |b| b.heartbeats),
                    in_pool: vm.in_pool,
                    busy: vm.busy,
                });
            }
        }
        // Heard from, not (or not yet) listed.
        out.extend(heard.into_values());
        out
    }

    /// The conductor that holds an unexpired lease on `template`, when it is another one
    /// (a request about it alone is then forwarded there, or answered `not_owner`).
    async fn held_elsewhere(&self, template: &str) -> Option<String> {
        if self.groups.contains_key(template) {
            return None;
        }
        match self.memory.store.lease(template).await {
            Ok(Some(lease)) if !lease.expires_in.is_zero() => {
                lease.owner.filter(|o| *o != self.memory.host)
            }
            _ => None,
        }
    }

    async fn not_found(&self, name: &str) -> Handled {
        let active: Vec<String> = self
            .memory
            .store
            .template_names()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
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

    /// Takes in one heartbeat. When it is the first of a splitter of a group this
    /// conductor steers, that group: a new splitter serves nothing until it has the pool,
    /// so its group should be looked at now rather than at the next tick (issue 16,
    /// item 6).
    pub fn heard(&mut self, heartbeat: Heartbeat, now: DateTime<Utc>) -> Option<String> {
        self.received_telemetry += 1;
        let group = heartbeat.group.clone();
        let splitter = heartbeat.role == crate::messaging::Role::Splitter;
        let first = self.vms.heard(heartbeat, now);
        (first && splitter && self.groups.contains_key(&group)).then_some(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DatabaseUrl, PoolSettings, Store};

    const SHOP: &str =
        "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 4\ntarget_response_time = 0.2\n";

    /// A conductor on an SQLite database of its own in `dir`.
    async fn conductor(dir: &std::path::Path) -> Conductor {
        let url = DatabaseUrl::Sqlite {
            path: dir.join("autoscaler.sqlite"),
        };
        let store = Store::connect(&url, &PoolSettings::default())
            .await
            .unwrap();
        store.sync().await.unwrap();
        let memory = Memory::new(
            store,
            "node1".into(),
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(10),
        );
        Conductor {
            identity: Identity {
                host: "node1".into(),
                started_at: Utc::now(),
            },
            max_vms_ceiling: 20,
            templates: BTreeMap::new(),
            vms: VmRegistry::default(),
            groups: BTreeMap::new(),
            memory,
            settings: crate::conductor::group_settings(&crate::conf::Config::default()),
            received_requests: 0,
            received_telemetry: 0,
            sequences: Default::default(),
        }
    }

    async fn call(c: &mut Conductor, request: Request) -> Handled {
        c.handle(
            request,
            Utc::now(),
            "rabbit://guest@127.0.0.1:5672/",
            DropSnapshot::default(),
        )
        .await
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
    fn vm_names_tell_their_template() {
        assert!(vm_of("shop-web-0123abcd", "shop"));
        assert!(vm_of("my-shop-splitter-0123abcd", "my-shop"));
        assert!(!vm_of("my-shop-web-0123abcd", "shop"));
        assert!(!vm_of("shop-web-0123abc", "shop"));
        assert!(!vm_of("shop-db-0123abcd", "shop"));
    }

    #[tokio::test]
    async fn instantiate_records_and_notifies() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path()).await;
        let handled = call(&mut c, instantiate(SHOP)).await;
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

    #[tokio::test]
    async fn several_templates_run_at_once_under_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path()).await;
        call(&mut c, instantiate(SHOP)).await;
        let blog = call(&mut c, instantiate(&SHOP.replace("shop", "blog"))).await;
        assert!(matches!(blog.reply, RpcReply::Ok(_)), "{:?}", blog.reply);
        assert_eq!(c.groups.keys().collect::<Vec<_>>(), ["blog", "shop"]);
        let again = call(&mut c, instantiate(SHOP)).await;
        let message = error_message(&again);
        assert!(
            message.starts_with("conflict: template \"shop\" is already active"),
            "{message}"
        );
        assert!(message.contains("template destroy shop"), "{message}");
        assert!(again.events.is_empty());
        assert_eq!(c.templates.len(), 2);
        // The database is the memory: the groups come back from it, with their leases.
        let mut restarted = conductor(dir.path()).await;
        restarted.refresh().await;
        assert_eq!(
            restarted.groups.keys().collect::<Vec<_>>(),
            ["blog", "shop"]
        );
        assert_eq!(restarted.memory.leases.len(), 2);
    }

    #[tokio::test]
    async fn a_group_held_by_another_conductor_is_not_steered_here() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path()).await;
        call(&mut c, instantiate(SHOP)).await;
        let mut other = conductor(dir.path()).await;
        other.memory.host = "node2".into();
        other.refresh().await;
        assert!(other.groups.is_empty(), "shop is node1's for 10 s");
        // A VM of shop, asked of node2: "ask again" (the CLI does, reaching node1).
        let asked = call(
            &mut other,
            Request::VmDelete {
                name: "shop-web-0123abcd".into(),
            },
        )
        .await;
        let message = error_message(&asked);
        assert!(
            message.starts_with("not_owner: shop-web-0123abcd"),
            "{message}"
        );
        let unknown = call(
            &mut other,
            Request::VmDelete {
                name: "blog-web-0123abcd".into(),
            },
        )
        .await;
        assert!(error_message(&unknown).starts_with("not_found: "));
        // So is a request about shop alone; the list of every template is answered.
        let shown = call(
            &mut other,
            Request::TemplateShow {
                name: Some("shop".into()),
            },
        )
        .await;
        assert!(error_message(&shown).starts_with("not_owner: "));
        let listed = call(
            &mut other,
            Request::VmList {
                template: Some("shop".into()),
            },
        )
        .await;
        assert!(error_message(&listed).starts_with("not_owner: "));
        match call(&mut other, Request::TemplateShow { name: None })
            .await
            .reply
        {
            RpcReply::Ok(v) => {
                assert_eq!(v[0]["status"], serde_json::Value::Null);
                assert_eq!(v[0]["conductor"], "node1");
            }
            other => panic!("{other:?}"),
        }
        // node1 stops cleanly: its lease is released and node2 takes the group at once.
        c.release_all().await;
        other.refresh().await;
        assert_eq!(other.groups.keys().collect::<Vec<_>>(), ["shop"]);
        // node1's stale lease no longer writes.
        c.memory.leases.clear();
        let lease = other.memory.leases["shop"].clone();
        assert_eq!(lease.owner, "node2");
    }

    #[tokio::test]
    async fn invalid_templates_are_refused_with_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path()).await;
        let refused = call(
            &mut c,
            instantiate(&SHOP.replace("max_vms = 4", "max_vms = 99")),
        )
        .await;
        let message = error_message(&refused);
        assert!(message.starts_with("invalid: "), "{message}");
        assert!(
            message.contains("/tmp/shop.template") && message.contains("max_vms"),
            "{message}"
        );
        assert!(c.templates.is_empty());
    }

    #[tokio::test]
    async fn destroy_then_show() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = conductor(dir.path()).await;
        call(&mut c, instantiate(SHOP)).await;
        let missing = call(
            &mut c,
            Request::TemplateDestroy {
                name: "blog".into(),
            },
        )
        .await;
        let missing = error_message(&missing);
        assert_eq!(
            missing,
            "not_found: no active template named \"blog\" (active: shop)"
        );
        let destroyed = call(
            &mut c,
            Request::TemplateDestroy {
                name: "shop".into(),
            },
        )
        .await;
        assert_eq!(
            destroyed.events[0].event_type(),
            "autoscaler.template.destroy.start"
        );
        // Destroying: still shown (the group tears down), recorded as such.
        assert!(c.templates.get("shop").unwrap().destroying);
        let stored = c.memory.store.template("shop").await.unwrap().unwrap();
        assert!(stored.destroying);
        assert_eq!(
            c.groups["shop"].phase,
            crate::conductor::api::Phase::Stopping
        );
        match call(&mut c, Request::TemplateShow { name: None })
            .await
            .reply
        {
            RpcReply::Ok(v) => assert_eq!(v[0]["destroying"], true),
            other => panic!("{other:?}"),
        }
        // The group reports it is gone: forgotten, with the end notification.
        let events = c.forget("shop").await;
        assert_eq!(events[0].event_type(), "autoscaler.template.destroyed");
        match call(&mut c, Request::TemplateShow { name: None })
            .await
            .reply
        {
            RpcReply::Ok(v) => assert_eq!(v, serde_json::json!([])),
            other => panic!("{other:?}"),
        }
    }
}
