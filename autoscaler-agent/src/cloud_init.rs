//! `autoscaler-agent write-files`: the part of cloud-init a local image needs. It writes
//! the user data's `write_files` entries under a root directory (the VM's directory
//! stands for `/`), with their permissions, as cloud-init does on a Nova VM.

use std::{
    fs, io,
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use autoscaler_messaging::CloudConfig;

/// Why the files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteFilesError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(transparent)]
    UserData(#[from] autoscaler_messaging::agent_config::AgentConfigError),
    #[error("write_files path {0:?} must be absolute and must not contain \"..\"")]
    BadPath(String),
    #[error("write_files permissions {0:?} are not an octal mode such as 0644")]
    BadMode(String),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Writes every entry of the user data at `user_data` under `root`; returns the paths
/// written.
pub fn write_files(user_data: &Path, root: &Path) -> Result<Vec<PathBuf>, WriteFilesError> {
    let text = fs::read_to_string(user_data).map_err(|source| WriteFilesError::Read {
        path: user_data.to_owned(),
        source,
    })?;
    let config = CloudConfig::from_user_data(&user_data.display().to_string(), &text)?;
    let mut written = Vec::new();
    for file in &config.write_files {
        let target = under_root(root, &file.path)?;
        let mode = u32::from_str_radix(&file.permissions, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| WriteFilesError::BadMode(file.permissions.clone()))?;
        let write_error = |source| WriteFilesError::Write {
            path: target.clone(),
            source,
        };
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        // Created with the final mode before the content goes in: a 0600 file holding a
        // password is never readable by others, not even briefly.
        let tmp = target.with_extension("tmp-write-files");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(write_error)?;
            f.write_all(file.content.as_bytes()).map_err(write_error)?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(write_error)?;
        fs::rename(&tmp, &target).map_err(write_error)?;
        written.push(target);
    }
    Ok(written)
}

fn under_root(root: &Path, path: &str) -> Result<PathBuf, WriteFilesError> {
    let p = Path::new(path);
    let mut out = root.to_path_buf();
    let mut components = p.components();
    if components.next() != Some(Component::RootDir) {
        return Err(WriteFilesError::BadPath(path.to_owned()));
    }
    for c in components {
        match c {
            Component::Normal(part) => out.push(part),
            _ => return Err(WriteFilesError::BadPath(path.to_owned())),
        }
    }
    if out == root {
        return Err(WriteFilesError::BadPath(path.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoscaler_messaging::agent_config::WriteFile;

    fn user_data(dir: &Path, files: Vec<WriteFile>) -> PathBuf {
        let path = dir.join("user-data");
        let doc = CloudConfig {
            write_files: files,
            runcmd: vec![],
        };
        fs::write(&path, doc.to_user_data()).unwrap();
        path
    }

    #[test]
    fn writes_files_under_the_root_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let ud = user_data(
            dir.path(),
            vec![
                WriteFile {
                    path: "/etc/autoscaler/agent.conf".into(),
                    content: "[agent]\n".into(),
                    permissions: "0600".into(),
                },
                WriteFile {
                    path: "/etc/autoscaler/web.conf".into(),
                    content: "THREADS=2\n".into(),
                    permissions: "0644".into(),
                },
            ],
        );
        let root = dir.path().join("root");
        let written = write_files(&ud, &root).unwrap();
        assert_eq!(written.len(), 2);
        let agent = root.join("etc/autoscaler/agent.conf");
        assert_eq!(fs::read_to_string(&agent).unwrap(), "[agent]\n");
        assert_eq!(
            fs::metadata(&agent).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_paths_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["etc/x", "/etc/../../x", "/"] {
            let ud = user_data(
                dir.path(),
                vec![WriteFile {
                    path: bad.into(),
                    content: String::new(),
                    permissions: "0644".into(),
                }],
            );
            let err = write_files(&ud, &dir.path().join("root")).unwrap_err();
            assert!(matches!(err, WriteFilesError::BadPath(_)), "{bad}: {err}");
        }
        let ud = user_data(
            dir.path(),
            vec![WriteFile {
                path: "/x".into(),
                content: String::new(),
                permissions: "rw".into(),
            }],
        );
        assert!(matches!(
            write_files(&ud, &dir.path().join("root")),
            Err(WriteFilesError::BadMode(_))
        ));
    }
}
