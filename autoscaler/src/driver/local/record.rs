//! The local driver's record of one VM, `<state_path>/local/vms/<id>/vm.json`: what a new
//! driver needs to find the VM again after a restart. Written atomically (a temporary file,
//! then a rename), so a crash leaves the old record or the new one, never half of one.

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::driver::{DriverError, Vm, VmId, VmStatus};

/// The record's file name in the VM directory.
pub(super) const RECORD_FILE: &str = "vm.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct VmRecord {
    pub id: VmId,
    pub name: String,
    pub image: String,
    pub address: Ipv4Addr,
    /// The VM's process group: the boot process's pid, which is also its session id.
    /// `None` before the boot process started, and from the moment the group was seen
    /// gone: its id may then be reused by another session, which must never be signalled.
    pub pgid: Option<i32>,
    /// The group leader's start time (clock ticks since the machine booted), to tell the
    /// VM's group from a later one with the same id.
    pub leader_start: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    /// The status at the last look; `ERROR` and `SHUTOFF` are final.
    pub status: VmStatus,
    pub fault: Option<String>,
}

impl VmRecord {
    /// The VM as the trait reports it, with `status` (the record's, or `DELETED`).
    pub(super) fn to_vm(&self, status: VmStatus) -> Vm {
        Vm {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
            status,
            address: Some(self.address.into()),
            metadata: self.metadata.clone(),
            created_at: self.created_at,
            fault: self.fault.clone(),
        }
    }

    /// Writes `<vm_dir>/vm.json` atomically.
    pub(super) fn write(&self, vm_dir: &Path) -> Result<(), DriverError> {
        let path = vm_dir.join(RECORD_FILE);
        let tmp = vm_dir.join(format!("{RECORD_FILE}.tmp"));
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| DriverError::Io {
            path: path.clone(),
            source: e.into(),
        })?;
        json.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            Ok(())
        };
        write().map_err(|e| DriverError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| DriverError::io(&path, e))
    }

    /// Reads `<vm_dir>/vm.json`, checking what a driver relies on: the id is the directory's
    /// name and the process group id is one that may be signalled.
    pub(super) fn read(vm_dir: &Path) -> Result<VmRecord, DriverError> {
        let path = vm_dir.join(RECORD_FILE);
        let corrupt = |reason: String| DriverError::CorruptRecord {
            path: path.clone(),
            reason,
        };
        let text = fs::read(&path).map_err(|e| DriverError::io(&path, e))?;
        let record: VmRecord = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let dir_name = vm_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if record.id.0 != dir_name {
            return Err(corrupt(format!(
                "its id {:?} is not its directory's name",
                record.id.0
            )));
        }
        if let Some(pgid) = record.pgid {
            if pgid <= 1 {
                return Err(corrupt(format!("process group {pgid} is not a VM's")));
            }
        }
        if record.status == VmStatus::Deleted {
            return Err(corrupt("status DELETED is never recorded".to_owned()));
        }
        Ok(record)
    }
}

/// The directories of `vms_dir`, sorted; `vms_dir` is created when missing.
pub(super) fn vm_dirs(vms_dir: &Path) -> Result<Vec<PathBuf>, DriverError> {
    let io = |e| DriverError::io(vms_dir, e);
    fs::create_dir_all(vms_dir).map_err(io)?;
    let mut dirs = Vec::new();
    for entry in fs::read_dir(vms_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::META_GROUP;

    fn record(id: &str) -> VmRecord {
        VmRecord {
            id: VmId(id.into()),
            name: "web".into(),
            image: "tomcat".into(),
            address: Ipv4Addr::new(127, 0, 1, 2),
            pgid: Some(4242),
            leader_start: Some(123_456),
            metadata: [(META_GROUP.to_owned(), "shop".to_owned())].into(),
            created_at: DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z")
                .unwrap()
                .into(),
            status: VmStatus::Active,
            fault: Some("line\n\"quoted\"".into()),
        }
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let vm_dir = dir.path().join("web-0a1b2c3d");
        fs::create_dir(&vm_dir).unwrap();
        let r = record("web-0a1b2c3d");
        r.write(&vm_dir).unwrap();
        assert_eq!(VmRecord::read(&vm_dir).unwrap(), r);
        assert!(!vm_dir.join("vm.json.tmp").exists());
        let mut changed = r.clone();
        changed.status = VmStatus::Shutoff;
        changed.pgid = None;
        changed.write(&vm_dir).unwrap();
        assert_eq!(VmRecord::read(&vm_dir).unwrap(), changed);
        let json = fs::read_to_string(vm_dir.join(RECORD_FILE)).unwrap();
        assert!(json.contains("\"status\": \"SHUTOFF\""), "{json}");
    }

    #[test]
    fn bad_records_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let vm_dir = dir.path().join("a");
        fs::create_dir(&vm_dir).unwrap();
        fs::write(vm_dir.join(RECORD_FILE), "{not json").unwrap();
        let err = VmRecord::read(&vm_dir).unwrap_err().to_string();
        assert!(err.contains("a/vm.json: unreadable VM record"), "{err}");

        record("b").write(&vm_dir).unwrap();
        let err = VmRecord::read(&vm_dir).unwrap_err().to_string();
        assert!(
            err.contains("its id \"b\" is not its directory's name"),
            "{err}"
        );

        for pgid in [1, 0, -1] {
            let mut r = record("a");
            r.pgid = Some(pgid);
            r.write(&vm_dir).unwrap();
            let err = VmRecord::read(&vm_dir).unwrap_err().to_string();
            assert!(err.contains("is not a VM's"), "{err}");
        }
    }

    #[test]
    fn vm_dirs_creates_and_lists_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        let vms = dir.path().join("local/vms");
        assert!(vm_dirs(&vms).unwrap().is_empty());
        fs::create_dir(vms.join("b")).unwrap();
        fs::create_dir(vms.join("a")).unwrap();
        fs::write(vms.join("stray-file"), "").unwrap();
        assert_eq!(vm_dirs(&vms).unwrap(), [vms.join("a"), vms.join("b")]);
    }
}
