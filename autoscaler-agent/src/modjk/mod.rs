//! mod_jk as the splitter agent drives it, one job per file: the workers.properties it owns, Apache's
//! `-t`, `-k graceful` and `-k graceful-stop`, and the jkstatus worker (set a member's
//! activation, read in-flight counts).
//!
//! # workers.properties
//! The image writes the file at boot (see `etc/autoscaler/images/modjk-splitter/
//! templates/workers.properties`): one `type=lb` worker whose `balance_workers` lists the
//! image's own members (a `placeholder` with port 0, because mod_jk refuses an empty
//! balancer), the template the members inherit from (`reference=worker.member`) and the
//! jkstatus worker. [`WorkersFile::parse`] keeps all of that as it is and only learns what
//! it needs: the balancer's name, its `balance_workers` line, the image's members and the
//! template. [`WorkersFile::render`] writes the same lines with the pool's members added
//! to `balance_workers` and, after [`workers::MEMBERS_MARKER`], one section per member:
//! `reference`, `host`, `port`, and `activation=D` for a draining member (a graceful
//! reload re-reads the file and forgets jkstatus changes, so the file must say it). A
//! restarted agent reads its own file back the same way.
//!
//! # Members join without a reload: spare workers
//! A graceful reload stops Apache from accepting for about a second: the old children
//! close their listeners at once, and the event MPM starts the new generation only when
//! it reaps an old child or at its next one-second maintenance run (measured here with
//! 36 clients: no request completed for 0.6-1.0 s after one reload, 1.8 s after two a
//! second apart). So every file the agent renders for a reload also holds
//! [`workers::SPARES`] spare workers (`_spare_1` ..., port 0: stopped, never routed to),
//! and a member that joins while spares are free takes one through jkstatus: host, port
//! and `route` (the member's name, which the request log's `%R` prints, so metrics
//! name the member), then its activation (mod_jk 1.2.48 leaves a worker that had port 0
//! stopped until `vwa=A`). The file then says the same (`worker._spare_1.route=<member>`).
//! Members leaving or moving, or more joining than spares are free, still reload.
//!
//! # What `apache2 -t` checks (measured with Debian's apache2 2.4.71, mod_jk 1.2.48)
//! Only that the `JkWorkersFile` exists: mod_jk reads its content after the test has
//! ended. A balance member that is not defined passes `-t` and a graceful reload, and
//! mod_jk then routes to it with its defaults, `localhost:8009`. So the agent checks the
//! rendered file itself ([`validate`]) before `-t` and before it goes live.
//!
//! # jkstatus
//! Two status workers in the image: `jkstatus` (`read_only=true`, `/jkmanager/`), which
//! the agent polls, and `jkadmin` (`/jkmanager/admin/`, Apache's Basic login with the
//! agent's random password, and mod_jk's `user=`), through which it drains a member.
//! Always answers HTTP 200; `mime=txt` says `Result: type=OK ...` or `type=ERROR
//! message="..."` in the body. An unknown `vwa` value is taken as "active" with
//! `type=OK`, so [`JkStatus::set_activation`] reads the activation back.
//!
//! # `apache2 -k graceful` on a stopped server
//! Prints `httpd not running, trying to start`, exits 0 and starts a new, daemonized
//! Apache in a session of its own, outside the VM's process group. [`Apache::graceful`] therefore refuses to run unless the
//! `PidFile` names a live process.
//!
//! - [`workers`]: the workers.properties model (parse, validate, render; pure);
//! - [`apache`]: Apache process control (`-t`, `-k graceful`, `-k graceful-stop`);
//! - [`jkstatus`]: the jkstatus client;
//! - here: their error, the atomic file replacement and how command output is quoted.

mod apache;
mod jkstatus;
mod workers;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub(crate) use apache::Apache;
pub(crate) use jkstatus::{JkStatus, Login};
pub(crate) use workers::{validate, WorkersFile};

/// How long `apache2` and jkstatus commands may take before they count as failed.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a failing command's output quoted in errors (and so in a `PoolAck`).
pub(super) const QUOTED_LINES: usize = 3;

/// What went wrong with mod_jk, Apache or their files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ModJkError {
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("rendered workers.properties is invalid: {0}")]
    Invalid(String),
    #[error("{command}: {problem}")]
    Command { command: String, problem: String },
    #[error("jkstatus: {0}")]
    JkStatus(String),
}

/// Writes `text` to `path` atomically: `<path>.new` first (mode 0600: workers.properties
/// holds the group's AJP secret), then a rename over `path`. On failure the `.new` file
/// is removed and `path` is untouched.
pub(crate) async fn replace_file(path: &Path, text: &str) -> Result<(), ModJkError> {
    let staged = staged_path(path);
    let error = |what: &str, e: std::io::Error| ModJkError::File {
        path: staged.display().to_string(),
        problem: format!("{what}: {e}"),
    };
    if let Err(e) = write_private(&staged, text).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(error("cannot write", e));
    }
    if let Err(e) = tokio::fs::rename(&staged, path).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(error("cannot rename into place", e));
    }
    Ok(())
}

/// Writes `text` to `path`, made with mode 0600 when new: workers.properties holds the
/// group's AJP secret (issue 17).
pub(crate) async fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

/// `workers.properties.new` beside `workers.properties`.
pub(crate) fn staged_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// The first `n` non-empty lines of `text`, joined with " / ".
pub(super) fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .collect();
    if lines.is_empty() {
        "no output".into()
    } else {
        lines.join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_output_is_quoted_briefly() {
        assert_eq!(
            first_lines(
                "\nAH00526: Syntax error on line 3\nInvalid command 'x'\nmore\nand more\n",
                3
            ),
            "AH00526: Syntax error on line 3 / Invalid command 'x' / more"
        );
        assert_eq!(first_lines("", 3), "no output");
    }

    #[tokio::test]
    async fn replace_file_is_atomic_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workers.properties");
        std::fs::write(&path, "old").unwrap();
        replace_file(&path, "new").await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file holds the AJP secret");
        assert!(!staged_path(&path).exists());
        assert_eq!(
            staged_path(&path),
            dir.path().join("workers.properties.new")
        );
        let missing = dir.path().join("no-such-dir/workers.properties");
        assert!(replace_file(&missing, "x").await.is_err());
    }
}
