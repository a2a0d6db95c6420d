//! Files only their owner may read (mode 0600): the conductors' message key file, the
//! conductor key behind the AJP secrets. Made whole or not at all, never overwritten.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Writes `contents` to a new file at `path`, mode 0600 from its creation (never readable
/// by others, even for an instant), and syncs it; the parent directories are made.
/// `Ok(false)` when a file is there already (it is left as it is).
pub fn create_new(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(contents)?;
            file.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn made_private_once_then_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        assert!(create_new(&path, b"one\n").unwrap());
        assert!(!create_new(&path, b"two\n").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
