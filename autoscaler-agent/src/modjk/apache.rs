//! The splitter VM's private Apache, driven through `apache2 -f <httpd.conf>`: `-t`,
//! `-k graceful` and `-k graceful-stop`, refused when the `PidFile` names no live
//! process; and what the agent reads from its httpd.conf (`PidFile`, `JkMount`).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use super::{first_lines, ModJkError, COMMAND_TIMEOUT, QUOTED_LINES};

/// The private Apache of the splitter VM, driven through `apache2 -f <httpd.conf>`.
#[derive(Debug, Clone)]
pub(crate) struct Apache {
    httpd: PathBuf,
    config: PathBuf,
    /// From the config's `PidFile` (relative to `ServerRoot`); `None` when it has none.
    pid_file: Option<PathBuf>,
    /// The config's `JkMount <path> <worker>` directives.
    mounts: Vec<(String, String)>,
}

impl Apache {
    /// Reads `config` for its `ServerRoot` and `PidFile`.
    pub(crate) fn new(httpd: PathBuf, config: PathBuf) -> Result<Apache, ModJkError> {
        let text = std::fs::read_to_string(&config).map_err(|e| ModJkError::File {
            path: config.display().to_string(),
            problem: format!("cannot read: {e}"),
        })?;
        Ok(Apache {
            httpd,
            config,
            pid_file: pid_file(&text),
            mounts: mounts(&text),
        })
    }

    /// The path under which `worker` serves (its first `JkMount`, without the `*`).
    pub(crate) fn mount_of(&self, worker: &str) -> Option<&str> {
        self.mounts
            .iter()
            .find(|(_, w)| w == worker)
            .map(|(path, _)| path.trim_end_matches('*'))
    }

    /// `apache2 -t`: the configuration parses (and the JkWorkersFile exists).
    pub(crate) async fn check(&self) -> Result<(), ModJkError> {
        self.run(&["-t"]).await
    }

    /// `apache2 -k graceful`: children finish their requests and are replaced by ones
    /// that read the configuration and workers.properties again. Refused when Apache is
    /// not running, because then it would start a detached one.
    pub(crate) async fn graceful(&self) -> Result<(), ModJkError> {
        self.require_running("-k graceful")?;
        self.run(&["-k", "graceful"]).await
    }

    /// `apache2 -k graceful-stop`: stop listening, let requests in flight finish
    /// (GracefulShutdownTimeout), exit. Returns once the parent has exited, so that
    /// whoever is told "stopped" (the conductor, which then deletes the web VMs) knows no
    /// request is in flight any more; gives up waiting after [`GRACEFUL_STOP_WAIT`].
    pub(crate) async fn graceful_stop(&self) -> Result<(), ModJkError> {
        self.require_running("-k graceful-stop")?;
        self.run(&["-k", "graceful-stop"]).await?;
        let Some(pid_file) = &self.pid_file else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + GRACEFUL_STOP_WAIT;
        while process_alive(pid_file) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    waited = ?GRACEFUL_STOP_WAIT,
                    "Apache is still finishing requests after its graceful stop"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    fn require_running(&self, what: &str) -> Result<(), ModJkError> {
        match &self.pid_file {
            Some(pid_file) if !process_alive(pid_file) => Err(ModJkError::Command {
                command: format!("{} {what}", self.httpd.display()),
                problem: format!(
                    "Apache is not running (no live process in {}); not starting one",
                    pid_file.display()
                ),
            }),
            _ => Ok(()),
        }
    }

    async fn run(&self, args: &[&str]) -> Result<(), ModJkError> {
        let command = format!(
            "{} -f {} {}",
            self.httpd.display(),
            self.config.display(),
            args.join(" ")
        );
        let child = tokio::process::Command::new(&self.httpd)
            .arg("-f")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let failed = |problem: String| ModJkError::Command {
            command: command.clone(),
            problem,
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
            Err(_) => Err(failed(format!("no answer within {COMMAND_TIMEOUT:?}"))),
            Ok(Err(e)) => Err(failed(format!("cannot run: {e}"))),
            Ok(Ok(output)) if output.status.success() => Ok(()),
            Ok(Ok(output)) => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let stdout = String::from_utf8_lossy(&output.stdout);
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                Err(failed(format!(
                    "{}: {}",
                    output.status,
                    first_lines(&text, QUOTED_LINES)
                )))
            }
        }
    }
}

/// The `PidFile` of an httpd.conf, made absolute with its `ServerRoot`.
fn pid_file(config: &str) -> Option<PathBuf> {
    let directive = |name: &str| {
        config.lines().find_map(|line| {
            let line = line.trim();
            let (word, rest) = line.split_once(char::is_whitespace)?;
            word.eq_ignore_ascii_case(name)
                .then(|| rest.trim().trim_matches('"').to_owned())
        })
    };
    let pid = PathBuf::from(directive("PidFile")?);
    Some(match directive("ServerRoot") {
        Some(root) if pid.is_relative() => Path::new(&root).join(pid),
        _ => pid,
    })
}

/// The `JkMount <path> <worker>` directives of an httpd.conf, in order.
fn mounts(config: &str) -> Vec<(String, String)> {
    config
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if !words.next()?.eq_ignore_ascii_case("JkMount") {
                return None;
            }
            let path = words.next()?.trim_matches('"');
            let worker = words.next()?.trim_matches('"');
            Some((path.to_owned(), worker.to_owned()))
        })
        .collect()
}

/// Whether the pid in `pid_file` is a live process (not a zombie: Apache is the
/// agent's child on a local image, and nobody reaps it once it has exited).
fn process_alive(pid_file: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may hold anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Longest wait for Apache to finish its requests after a graceful stop: more than the
/// image's `GracefulShutdownTimeout` (10 s), after which Apache itself cuts them.
const GRACEFUL_STOP_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_path_comes_from_jkmount() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("httpd.conf");
        std::fs::write(
            &conf,
            "JkMount /webserver/* loadbalancer\n  jkmount \"/jkmanager/*\" jkstatus\n",
        )
        .unwrap();
        let apache = Apache::new("apache2".into(), conf).unwrap();
        assert_eq!(apache.mount_of("loadbalancer"), Some("/webserver/"));
        assert_eq!(apache.mount_of("jkstatus"), Some("/jkmanager/"));
        assert_eq!(apache.mount_of("other"), None);
        assert!(Apache::new("apache2".into(), dir.path().join("none")).is_err());
    }

    #[test]
    fn pid_file_comes_from_the_config() {
        let conf = "ServerRoot \"/vm/apache\"\nPidFile \"/vm/apache/run/httpd.pid\"\n";
        assert_eq!(pid_file(conf), Some("/vm/apache/run/httpd.pid".into()));
        let conf = "ServerRoot /vm/apache\npidfile run/x.pid\n";
        assert_eq!(pid_file(conf), Some("/vm/apache/run/x.pid".into()));
        assert_eq!(pid_file("Listen 80\n"), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        assert!(!process_alive(&path));
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(process_alive(&path));
        std::fs::write(&path, "not a pid").unwrap();
        assert!(!process_alive(&path));
    }

    #[tokio::test]
    async fn commands_fail_with_a_reason_and_a_stopped_apache_is_not_started() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("httpd.conf");
        let pid = dir.path().join("httpd.pid");
        std::fs::write(&conf, format!("PidFile \"{}\"\n", pid.display())).unwrap();
        let failing = Apache::new("/bin/false".into(), conf.clone()).unwrap();
        let err = failing.check().await.unwrap_err().to_string();
        assert!(err.starts_with("/bin/false -f "), "{err}");
        assert!(err.ends_with(" -t: exit status: 1: no output"), "{err}");
        let missing = Apache::new(dir.path().join("no-apache2"), conf.clone()).unwrap();
        assert!(missing
            .check()
            .await
            .unwrap_err()
            .to_string()
            .contains("cannot run"));

        // No live process in the PidFile: graceful would start a detached Apache, so it
        // is refused without running the command (which here would succeed).
        let apache = Apache::new("/bin/true".into(), conf).unwrap();
        for result in [apache.graceful().await, apache.graceful_stop().await] {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("Apache is not running"), "{err}");
        }
        std::fs::write(&pid, std::process::id().to_string()).unwrap();
        apache.graceful().await.unwrap();
        apache.check().await.unwrap();
    }
}
