//! What the conductor remembers: the active templates, kept on disk under `state_path` so a
//! restarted conductor carries on, and the VMs it hears heartbeats from.
//!
//! The file is `<state_path>/templates.json`, written to a temporary file and renamed, so a
//! crash mid-write leaves the previous version intact.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    api::{TemplateRecord, VmView},
    group::HeartbeatInfo,
};
use crate::messaging::Heartbeat;

const STATE_VERSION: u32 = 1;
const TEMPLATES_FILE: &str = "templates.json";

/// A state file that cannot be used. The conductor refuses to start rather than
/// overwrite it and lose track of what it runs.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} is not a valid state file ({detail}); move it aside to start afresh")]
    Corrupt { path: PathBuf, detail: String },
}

#[derive(Serialize, Deserialize)]
struct TemplatesFile {
    version: u32,
    templates: Vec<TemplateRecord>,
}

/// The active templates by name, persisted.
#[derive(Debug)]
pub struct TemplateStore {
    path: PathBuf,
    templates: BTreeMap<String, TemplateRecord>,
}

impl TemplateStore {
    /// Loads `<state_path>/templates.json`, or starts empty when there is none.
    pub fn open(state_path: &Path) -> Result<Self, StateError> {
        let path = state_path.join(TEMPLATES_FILE);
        let templates = match std::fs::read(&path) {
            Ok(bytes) => {
                let corrupt = |detail: String| StateError::Corrupt {
                    path: path.clone(),
                    detail,
                };
                let file: TemplatesFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.version != STATE_VERSION {
                    return Err(corrupt(format!(
                        "version {} (expected {STATE_VERSION})",
                        file.version
                    )));
                }
                file.templates
                    .into_iter()
                    .map(|r| (r.template.name().to_owned(), r))
                    .collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        Ok(TemplateStore { path, templates })
    }

    pub fn get(&self, name: &str) -> Option<&TemplateRecord> {
        self.templates.get(name)
    }

    pub fn all(&self) -> impl Iterator<Item = &TemplateRecord> {
        self.templates.values()
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// Adds or replaces a record and writes the file.
    pub fn insert(&mut self, record: TemplateRecord) -> Result<(), StateError> {
        let name = record.template.name().to_owned();
        let previous = self.templates.insert(name.clone(), record);
        self.save().inspect_err(|_| {
            // Keep memory and disk in step: undo what could not be written.
            match previous {
                Some(p) => self.templates.insert(name.clone(), p),
                None => self.templates.remove(&name),
            };
        })
    }

    /// Marks a template as being destroyed and writes the file.
    pub fn set_destroying(&mut self, name: &str) -> Result<(), StateError> {
        let Some(record) = self.templates.get_mut(name) else {
            return Ok(());
        };
        if record.destroying {
            return Ok(());
        }
        record.destroying = true;
        self.save().inspect_err(|_| {
            if let Some(r) = self.templates.get_mut(name) {
                r.destroying = false;
            }
        })
    }

    /// Removes a record and writes the file; `None` when there was no such template.
    pub fn remove(&mut self, name: &str) -> Result<Option<TemplateRecord>, StateError> {
        let Some(record) = self.templates.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.templates.insert(name.to_owned(), record);
            return Err(e);
        }
        Ok(Some(record))
    }

    fn save(&self) -> Result<(), StateError> {
        let write_error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(write_error)?;
        }
        let file = TemplatesFile {
            version: STATE_VERSION,
            templates: self.templates.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("state serializes to JSON");
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes).map_err(write_error)?;
        std::fs::rename(&tmp, &self.path).map_err(write_error)
    }
}

/// The VMs heard from, by group, then by id. In memory: heartbeats are re-sent every
/// second, so a restarted conductor relearns them at once. Indexed by group because the
/// conductor's work is per group: stepping one (its heartbeats), keeping what its listing
/// shows, forgetting one handed over; each costs that group's VMs, not the fleet's (at
/// 1,000 groups listed a second, a walk over 10,000 VMs at each listing was ten million
/// visits a second: issue 14).
#[derive(Debug, Default)]
pub struct VmRegistry {
    groups: BTreeMap<String, BTreeMap<String, HeardVm>>,
}

#[derive(Debug, Clone)]
struct HeardVm {
    heartbeat: Heartbeat,
    last: DateTime<Utc>,
    count: u64,
}

impl HeardVm {
    fn view(&self, now: DateTime<Utc>) -> VmView {
        VmView {
            vm_id: self.heartbeat.vm_id.clone(),
            group: self.heartbeat.group.clone(),
            role: Some(self.heartbeat.role),
            cloud_id: None,
            status: None,
            address: None,
            last_heartbeat: Some(self.last),
            heartbeat_age: Some((now - self.last).num_milliseconds().max(0) as f64 / 1000.0),
            heartbeats: self.count,
            in_pool: false,
            busy: None,
        }
    }
}

impl VmRegistry {
    /// Records a heartbeat received at `now`; whether it is the VM's first.
    pub fn heard(&mut self, heartbeat: Heartbeat, now: DateTime<Utc>) -> bool {
        let group = match self.groups.get_mut(&heartbeat.group) {
            Some(group) => group,
            None => self.groups.entry(heartbeat.group.clone()).or_default(),
        };
        let entry = match group.get_mut(&heartbeat.vm_id) {
            Some(entry) => entry,
            None => group.entry(heartbeat.vm_id.clone()).or_insert(HeardVm {
                heartbeat: heartbeat.clone(),
                last: now,
                count: 0,
            }),
        };
        entry.heartbeat = heartbeat;
        entry.last = now;
        entry.count += 1;
        entry.count == 1
    }

    /// The VMs heard from, optionally only those of `group`, as seen at `now`.
    pub fn list(&self, group: Option<&str>, now: DateTime<Utc>) -> Vec<VmView> {
        let groups: Box<dyn Iterator<Item = &BTreeMap<String, HeardVm>>> = match group {
            Some(g) => Box::new(self.groups.get(g).into_iter()),
            None => Box::new(self.groups.values()),
        };
        groups
            .flat_map(BTreeMap::values)
            .map(|vm| vm.view(now))
            .collect()
    }

    /// What the group rules need to know of each VM of `group` heard from, by name.
    pub fn infos(&self, group: &str) -> BTreeMap<String, HeartbeatInfo> {
        let vms = self
            .groups
            .get(group)
            .into_iter()
            .flat_map(BTreeMap::values);
        vms.map(|vm| {
            let info = HeartbeatInfo {
                last: vm.last,
                serving: vm.heartbeat.serving,
                url: vm.heartbeat.url.clone(),
                address: vm.heartbeat.address.as_deref().and_then(|a| a.parse().ok()),
            };
            (vm.heartbeat.vm_id.clone(), info)
        })
        .collect()
    }

    /// Forgets every VM of `group` (handed over, or destroyed: this conductor would never
    /// learn of their deletion). Only steered groups are heard, so dropping a group here
    /// is the one way its VMs leave.
    pub fn forget_group(&mut self, group: &str) {
        self.groups.remove(group);
    }

    /// Forgets a VM of `group` (deleted).
    pub fn forget(&mut self, group: &str, vm_id: &str) {
        if let Some(vms) = self.groups.get_mut(group) {
            vms.remove(vm_id);
            if vms.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    /// Keeps only the VMs of `group` that its listing shows (`listed` says which): the
    /// registry is bounded by the fleet (issue 17), whatever VMs were deleted behind the
    /// conductor's back.
    pub fn retain_listed(&mut self, group: &str, listed: impl Fn(&str) -> bool) {
        if let Some(vms) = self.groups.get_mut(group) {
            vms.retain(|id, _| listed(id));
            if vms.is_empty() {
                self.groups.remove(group);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{messaging::Role, template::Template};

    fn record(name: &str) -> TemplateRecord {
        let text = format!(
            "name = {name}\nimage = img\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n"
        );
        TemplateRecord {
            template: Template::parse("t.template", &text, 20).unwrap(),
            source: "t.template".into(),
            instantiated_at: Utc::now(),
            destroying: false,
        }
    }

    #[test]
    fn templates_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TemplateStore::open(dir.path()).unwrap();
        store.insert(record("shop")).unwrap();
        store.insert(record("blog")).unwrap();
        assert_eq!(
            store.remove("blog").unwrap().unwrap().template.name(),
            "blog"
        );
        assert!(store.remove("blog").unwrap().is_none());
        let reopened = TemplateStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened
                .all()
                .map(|r| r.template.name())
                .collect::<Vec<_>>(),
            ["shop"]
        );
    }

    #[test]
    fn a_corrupt_state_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TEMPLATES_FILE), "{oops").unwrap();
        let error = TemplateStore::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("templates.json"), "{error}");
        assert!(error.contains("move it aside"), "{error}");
    }

    #[test]
    fn registry_counts_heartbeats_and_filters_by_group() {
        let mut vms = VmRegistry::default();
        let t0 = Utc::now();
        let mut firsts = Vec::new();
        for (group, vm) in [("shop", "a"), ("shop", "a"), ("blog", "b")] {
            let hb = Heartbeat {
                group: group.into(),
                vm_id: vm.into(),
                role: Role::Web,
                seq: 0,
                serving: None,
                url: None,
                address: None,
            };
            firsts.push(vms.heard(hb, t0));
        }
        // Each VM's first heartbeat is told apart (a new splitter's gets its pool now).
        assert_eq!(firsts, [true, false, true]);
        let shop = vms.list(Some("shop"), t0 + chrono::Duration::milliseconds(1500));
        assert_eq!(shop.len(), 1);
        assert_eq!(shop[0].heartbeats, 2);
        assert_eq!(shop[0].heartbeat_age, Some(1.5));
        assert_eq!(vms.list(None, t0).len(), 2);
        // What a listing does not show is forgotten, in that group only.
        vms.retain_listed("shop", |vm| vm != "a");
        assert_eq!(vms.list(Some("shop"), t0).len(), 0);
        assert_eq!(vms.list(None, t0).len(), 1);
        vms.heard(
            Heartbeat {
                group: "shop".into(),
                vm_id: "a".into(),
                role: Role::Web,
                seq: 0,
                serving: None,
                url: None,
                address: None,
            },
            t0,
        );
        // A group steered elsewhere now: forgotten, an own group's VM is kept.
        vms.forget_group("blog");
        assert_eq!(vms.infos("shop").len(), 1);
        assert!(vms.infos("blog").is_empty());
        vms.forget("shop", "a");
        assert!(vms.is_empty());
        assert_eq!(vms.len(), 0);
    }
}
