//! The user the VMs run as when the conductor is root (`[local] vm_user`, issue 17): a
//! VM's processes then cannot read the conductor's files, signal it or write into other
//! directories than their own; and the driver refuses to signal a process group that is
//! not that user's, so a VM that rewrites its own record (its directory is its own) cannot
//! make the conductor kill another user's processes.
//!
//! What the driver does (see [`VmUser::prepare`]): the conductor's umask becomes 077 (its
//! later files are its own), the files directly in `state_path` lose every permission of
//! others, and `state_path`, `state_path/local` and the VMs' folder gain the others'
//! search bit (`o+x`: traversable, not listable) so that a VM reaches its own directory,
//! which is its user's, mode 0700. The directories above `state_path` must already be
//! traversable by others: the driver says which is not rather than change it.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use nix::{
    sys::stat::{umask, Mode},
    unistd::{geteuid, User},
};

use crate::driver::DriverError;

/// The VMs' user: name, uid and primary group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct VmUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl VmUser {
    /// `[local] vm_user` when the conductor runs as root and it is not empty; `None`
    /// otherwise (the VMs run as the conductor's user). A user that does not exist, or is
    /// root, is a configuration error.
    pub(super) fn from_config(name: &str) -> Result<Option<VmUser>, DriverError> {
        if name.is_empty() || !geteuid().is_root() {
            return Ok(None);
        }
        let invalid = |reason: String| DriverError::InvalidConfig {
            section: "local",
            option: "vm_user",
            value: name.to_owned(),
            reason,
        };
        let user = User::from_name(name)
            .map_err(|e| invalid(format!("cannot look the user up: {e}")))?
            .ok_or_else(|| invalid("no such user".into()))?;
        if user.uid.is_root() {
            return Err(invalid("the VMs must not run as root".into()));
        }
        Ok(Some(VmUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
    }

    /// Before the first VM: umask 077, the files in `state_path` closed to others, the
    /// path from `state_path` to `vms_dir` (which it creates) traversable, and every
    /// directory above `state_path` checked to be.
    pub(super) fn prepare(&self, state_path: &Path, vms_dir: &Path) -> Result<(), DriverError> {
        umask(Mode::from_bits_truncate(0o077));
        fs::create_dir_all(vms_dir).map_err(|e| DriverError::io(vms_dir, e))?;
        for dir in state_path.ancestors().skip(1) {
            let meta = fs::metadata(dir).map_err(|e| DriverError::io(dir, e))?;
            if meta.mode() & 0o001 == 0 {
                return Err(DriverError::InvalidConfig {
                    section: "local",
                    option: "vm_user",
                    value: self.name.clone(),
                    reason: format!(
                        "{} is not traversable by others, so the VMs cannot reach their \
                         directories under [DEFAULT] state_path: chmod o+x it, move \
                         state_path, or set vm_user empty",
                        dir.display()
                    ),
                });
            }
        }
        for entry in fs::read_dir(state_path).map_err(|e| DriverError::io(state_path, e))? {
            let path = entry.map_err(|e| DriverError::io(state_path, e))?.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| DriverError::io(&path, e))?;
            if !meta.file_type().is_symlink() && meta.mode() & 0o007 != 0 {
                set_mode(&path, meta.mode() & 0o7770)?;
            }
        }
        let mut dir = vms_dir;
        loop {
            let meta = fs::metadata(dir).map_err(|e| DriverError::io(dir, e))?;
            // Traversable by the VMs' user, listable by nobody but the conductor.
            set_mode(dir, (meta.mode() & 0o7770) | 0o001)?;
            match dir.parent() {
                Some(parent) if dir != state_path => dir = parent,
                _ => break,
            }
        }
        Ok(())
    }

    /// Hands `path` (a new VM directory, or its user data) to the VMs' user, `mode`.
    pub(super) fn own(&self, path: &Path, mode: u32) -> Result<(), DriverError> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| DriverError::io(path, e))?;
        set_mode(path, mode)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), DriverError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| DriverError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_user_when_empty_and_an_unknown_one_is_refused_as_root() {
        assert_eq!(VmUser::from_config("").unwrap(), None);
        let unknown = VmUser::from_config("no-such-user-autoscaler");
        if geteuid().is_root() {
            let error = unknown.unwrap_err().to_string();
            assert!(error.contains("[local] vm_user"), "{error}");
            assert!(VmUser::from_config("root").is_err());
            let nobody = VmUser::from_config("nobody").unwrap().unwrap();
            assert_ne!(nobody.uid, 0);
        } else {
            assert_eq!(unknown.unwrap(), None, "not root: the setting is ignored");
        }
    }
}
