//! Which files make the configuration ([`ConfigSources`], as oslo.config's `--config-file`
//! and `--config-dir`) and reading them: [`load`] stops at the first error, [`validate`]
//! collects them all. Each file is checked on its own, so every error names its file;
//! values merge with later files winning.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    error::{ConfError, ConfWarning},
    ini,
    opt::Values,
    Config, SECTIONS,
};

/// Read when neither `--config-file` nor `--config-dir` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/autoscaler/autoscaler.conf";

/// The command line's say on which files to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// `--config-file F`, repeatable; later files win.
    pub config_files: Vec<PathBuf>,
    /// `--config-dir D`: its `*.conf` files, alphabetically, after the `config_files`.
    pub config_dir: Option<PathBuf>,
}

impl ConfigSources {
    /// The files to read, in order (later wins). A missing `--config-file` or an
    /// unreadable `--config-dir` is an error naming it; with neither given,
    /// [`DEFAULT_CONFIG_FILE`] if it exists, else none (all defaults).
    pub fn files(&self) -> Result<Vec<PathBuf>, ConfError> {
        self.files_or(Path::new(DEFAULT_CONFIG_FILE))
    }

    fn files_or(&self, default_file: &Path) -> Result<Vec<PathBuf>, ConfError> {
        if self.config_files.is_empty() && self.config_dir.is_none() {
            return Ok(if default_file.is_file() {
                vec![default_file.to_owned()]
            } else {
                Vec::new()
            });
        }
        let mut files = Vec::new();
        for file in &self.config_files {
            fs::metadata(file).map_err(|error| ConfError::ReadFile {
                path: file.clone(),
                error,
            })?;
            files.push(file.clone());
        }
        if let Some(dir) = &self.config_dir {
            files.extend(conf_files_in(dir)?);
        }
        Ok(files)
    }
}

/// `dir/*.conf` sorted by name, as oslo's glob: hidden files and directories left out.
fn conf_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let read_dir_error = |error| ConfError::ReadDir {
        path: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let path = entry.map_err(read_dir_error)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".conf") && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A configuration that loaded.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    pub warnings: Vec<ConfWarning>,
}

/// Everything wrong with a configuration, for `autoscaler-manage config validate`.
#[derive(Debug)]
pub struct Report {
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    pub errors: Vec<ConfError>,
    pub warnings: Vec<ConfWarning>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Reads the configuration; the first error stops it.
pub fn load(sources: &ConfigSources) -> Result<Loaded, ConfError> {
    let mut acc = Accumulator::default();
    for file in sources.files()? {
        let text = read(&file)?;
        acc.add_text(&file, &text);
        if !acc.errors.is_empty() {
            return Err(acc.errors.swap_remove(0));
        }
    }
    Ok(acc.into_loaded())
}

/// Reads the configuration and reports every error of every file.
pub fn validate(sources: &ConfigSources) -> Report {
    let mut acc = Accumulator::default();
    match sources.files() {
        Err(e) => acc.errors.push(e),
        Ok(files) => {
            for file in files {
                match read(&file) {
                    Ok(text) => acc.add_text(&file, &text),
                    Err(e) => acc.errors.push(e),
                }
            }
        }
    }
    Report {
        files: acc.files,
        errors: acc.errors,
        warnings: acc.warnings,
    }
}

/// Loads in-memory files, in order (later wins); `name` is what errors call each one.
/// No I/O: for tests and for callers that already hold the text.
pub fn load_from_strs(files: &[(&str, &str)]) -> Result<Loaded, ConfError> {
    let mut acc = Accumulator::default();
    for (name, text) in files {
        acc.add_text(Path::new(name), text);
    }
    match acc.errors.is_empty() {
        true => Ok(acc.into_loaded()),
        false => Err(acc.errors.swap_remove(0)),
    }
}

/// [`load_from_strs`] for a single file.
pub fn load_from_str(name: &str, text: &str) -> Result<Loaded, ConfError> {
    load_from_strs(&[(name, text)])
}

/// [`validate`] for in-memory files.
pub fn validate_strs(files: &[(&str, &str)]) -> Report {
    let mut acc = Accumulator::default();
    for (name, text) in files {
        acc.add_text(Path::new(name), text);
    }
    Report {
        files: acc.files,
        errors: acc.errors,
        warnings: acc.warnings,
    }
}

fn read(file: &Path) -> Result<String, ConfError> {
    fs::read_to_string(file).map_err(|error| ConfError::ReadFile {
        path: file.to_owned(),
        error,
    })
}

/// The pure core: files' text in, merged values, errors and warnings out.
#[derive(Default)]
struct Accumulator {
    values: Values,
    files: Vec<PathBuf>,
    errors: Vec<ConfError>,
    warnings: Vec<ConfWarning>,
}

impl Accumulator {
    fn add_text(&mut self, file: &Path, text: &str) {
        self.files.push(file.to_owned());
        let sections = match ini::parse(file, text, ini::Keys::InSections) {
            Ok(sections) => sections,
            Err(errors) => {
                self.errors.extend(errors.into_iter().map(ConfError::from));
                return;
            }
        };
        for section in sections {
            let Some(decl) = SECTIONS.iter().find(|d| d.name == section.name) else {
                self.warn(ConfWarning::UnknownSection {
                    file: file.to_owned(),
                    section: section.name,
                });
                continue;
            };
            for (option, text) in section.entries {
                let Some(opt) = decl.opt(&option) else {
                    self.warn(ConfWarning::UnknownOption {
                        file: file.to_owned(),
                        section: section.name.clone(),
                        option,
                    });
                    continue;
                };
                match opt.kind.parse(&text) {
                    // A repeated option: the last one wins, as in oslo.
                    Ok(value) => {
                        self.values.insert((decl.name, opt.name), value);
                    }
                    Err(reason) => self.errors.push(ConfError::BadValue {
                        file: file.to_owned(),
                        section: decl.name.to_owned(),
                        option,
                        value: opt.shown_value(&text),
                        reason,
                    }),
                }
            }
        }
    }

    /// Each warning once, however often the section or option is repeated.
    fn warn(&mut self, warning: ConfWarning) {
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    fn into_loaded(self) -> Loaded {
        Loaded {
            config: Config::from_values(&self.values),
            files: self.files,
            warnings: self.warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn bad_value(err: &ConfError) -> (&Path, &str, &str, &str, &str) {
        match err {
            ConfError::BadValue {
                file,
                section,
                option,
                value,
                reason,
            } => (file, section, option, value, reason),
            other => panic!("not a bad value: {other}"),
        }
    }

    #[test]
    fn devstack_shape_loads() {
        let text = "[DEFAULT]\ntransport_url = rabbit://stackrabbit:secret@127.0.0.1:5672/\ndebug = True\n";
        let loaded = load_from_str("/etc/autoscaler/autoscaler.conf", text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let d = &loaded.config.default;
        assert!(d.debug);
        assert_eq!(d.transport_url.hosts[0].username, "stackrabbit");
        assert_eq!(d.transport_url.hosts[0].password, "secret");
        assert_eq!(d.transport_url.virtual_host, "/");
        assert_eq!(d.control_exchange, "autoscaler");
    }

    #[test]
    fn every_option_can_be_set() {
        let text = "\
[DEFAULT]
transport_url = rabbit://a:b@h1:5672,a:b@h2:5673/vh
control_exchange = scaling
host = conductor-1
debug = on
log_dir = /var/log/autoscaler
log_file = conductor.log
state_path = /srv/autoscaler
rpc_response_timeout = 60
max_message_size = 1024
[oslo_messaging_rabbit]
heartbeat_timeout_threshold = 0
rabbit_retry_interval = 2
rabbit_retry_backoff = 0
rabbit_interval_max = 10
[oslo_messaging_notifications]
driver = log, noop
topics = notifications, audit
[conductor]
max_vms_ceiling = 10000
telemetry_queue_length = 10
[agent]
heartbeat_interval = 0.5
telemetry_ttl = 30
";
        let loaded = load_from_str("a.conf", text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert_eq!(c.default.transport_url.hosts.len(), 2);
        assert_eq!(c.default.transport_url.virtual_host, "vh");
        assert_eq!(c.default.control_exchange, "scaling");
        assert_eq!(c.default.host, "conductor-1");
        assert!(c.default.debug);
        assert_eq!(
            c.default.log_path("x"),
            Some("/var/log/autoscaler/conductor.log".into())
        );
        assert_eq!(c.default.state_path, PathBuf::from("/srv/autoscaler"));
        assert_eq!(c.default.rpc_response_timeout, Duration::from_secs(60));
        assert_eq!(c.default.max_message_size, 1024);
        let r = &c.oslo_messaging_rabbit;
        assert_eq!(
            (
                r.heartbeat_secs(),
                r.rabbit_retry_interval,
                r.rabbit_retry_backoff,
                r.rabbit_interval_max
            ),
            (
                0,
                Duration::from_secs(2),
                Duration::ZERO,
                Duration::from_secs(10)
            )
        );
        use crate::conf::NotificationDriver::{Log, Noop};
        assert_eq!(c.oslo_messaging_notifications.driver, [Log, Noop]);
        assert_eq!(
            c.oslo_messaging_notifications.topics,
            ["notifications", "audit"]
        );
        assert_eq!(c.conductor.max_vms_ceiling, 10_000);
        assert_eq!(c.conductor.telemetry_queue_length, 10);
        assert_eq!(c.agent.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.agent.telemetry_ttl, Duration::from_secs(30));
    }

    #[test]
    fn bad_value_names_file_section_option_value_and_expectation() {
        let err = load_from_str(
            "/etc/autoscaler/autoscaler.conf",
            "[conductor]\nmax_vms_ceiling = lots\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/autoscaler/autoscaler.conf: [conductor] max_vms_ceiling = \"lots\": expected an integer from 1 to 10000"
        );
    }

    #[test]
    fn every_kind_of_bad_value_is_reported() {
        let text = "\
[DEFAULT]
debug = maybe
control_exchange =
state_path =
rpc_response_timeout = 0
[oslo_messaging_notifications]
driver = messagingv2, kafka
[agent]
heartbeat_interval = 0
telemetry_ttl = forever
";
        let report = validate_strs(&[("f.conf", text)]);
        let got: Vec<_> = report.errors.iter().map(bad_value).collect();
        let f = Path::new("f.conf");
        assert_eq!(
            got,
            [
                (f, "DEFAULT", "debug", "maybe", "expected a boolean (true/false, yes/no, on/off or 1/0)"),
                (f, "DEFAULT", "control_exchange", "", "expected a non-empty string"),
                (f, "DEFAULT", "state_path", "", "expected a non-empty path"),
                (f, "DEFAULT", "rpc_response_timeout", "0", "expected an integer from 1 to 3600"),
                (
                    f,
                    "oslo_messaging_notifications",
                    "driver",
                    "messagingv2, kafka",
                    "expected a comma-separated list of messagingv2, messaging, log or noop (\"kafka\" is not one)"
                ),
                (f, "agent", "heartbeat_interval", "0", "expected a number of seconds from 0.1 to 60"),
                (f, "agent", "telemetry_ttl", "forever", "expected a number of seconds from 1 to 3600"),
            ]
        );
        assert!(!report.is_ok());
    }

    #[test]
    fn bad_transport_url_error_redacts_the_password() {
        let err = load_from_str(
            "a.conf",
            "[DEFAULT]\ntransport_url = kafka://user:hunter2@broker:9092/\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        let (file, section, option, value, reason) = bad_value(&err);
        assert_eq!(
            (file, section, option, value),
            (
                Path::new("a.conf"),
                "DEFAULT",
                "transport_url",
                "kafka://user:***@broker:9092/"
            )
        );
        assert!(
            reason.starts_with("not a valid transport URL: unsupported scheme"),
            "{reason}"
        );

        let err = load_from_str(
            "a.conf",
            "[DEFAULT]\ntransport_url = rabbit://u:p4ss@h1:5672,u:p4ss@h2:bad/\n",
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(!message.contains("p4ss"), "{message}");
        assert!(
            message.contains("rabbit://u:***@h1:5672,u:***@h2:bad/"),
            "{message}"
        );
    }

    #[test]
    fn unknown_section_and_option_are_warnings_naming_them() {
        let text = "[keystone_authtoken]\nauth_url = http://x\n[conductor]\nmax_vm_ceiling = 5\nmax_vm_ceiling = 6\n[DEFAULT]\nlogging_context_format_string = %(asctime)s\n";
        let loaded = load_from_str("/etc/autoscaler/autoscaler.conf", text).unwrap();
        let shown: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/etc/autoscaler/autoscaler.conf: unknown section [keystone_authtoken] ignored",
                "/etc/autoscaler/autoscaler.conf: [conductor] unknown option \"max_vm_ceiling\" ignored",
                "/etc/autoscaler/autoscaler.conf: [DEFAULT] unknown option \"logging_context_format_string\" ignored",
            ]
        );
        assert_eq!(loaded.config, Config::default());
    }

    #[test]
    fn section_names_other_than_default_are_case_insensitive() {
        let loaded = load_from_str("a", "[Conductor]\nmax_vms_ceiling = 7\n[default]\n").unwrap();
        assert_eq!(loaded.config.conductor.max_vms_ceiling, 7);
        assert_eq!(
            loaded.warnings,
            [ConfWarning::UnknownSection {
                file: "a".into(),
                section: "default".into()
            }]
        );
    }

    #[test]
    fn values_come_through_verbatim() {
        let text = "[DEFAULT]\ncontrol_exchange = %(asctime)s # ; \\x\\\nhost = a;b#c\\\n";
        let c = load_from_str("a", text).unwrap().config;
        assert_eq!(c.default.control_exchange, "%(asctime)s # ; \\x\\");
        assert_eq!(c.default.host, "a;b#c\\");
    }

    #[test]
    fn later_file_wins_and_errors_name_their_own_file() {
        let one = "[conductor]\nmax_vms_ceiling = 5\ntelemetry_queue_length = 100\n";
        let two = "[conductor]\nmax_vms_ceiling = 6\n";
        let c = load_from_strs(&[("one", one), ("two", two)])
            .unwrap()
            .config;
        assert_eq!(c.conductor.max_vms_ceiling, 6);
        assert_eq!(c.conductor.telemetry_queue_length, 100);

        let report = validate_strs(&[
            ("one", "[conductor]\nmax_vms_ceiling = 0\n"),
            (
                "two",
                "[conductor]\nmax_vms_ceiling = 6\n[agent]\ntelemetry_ttl = 0\n",
            ),
            ("three", "debug = 1\n"),
        ]);
        let shown: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "one: [conductor] max_vms_ceiling = \"0\": expected an integer from 1 to 10000",
                "two: [agent] telemetry_ttl = \"0\": expected a number of seconds from 1 to 3600",
                "three: line 1: option \"debug\" is outside any section (add a [DEFAULT] or other section header above it)",
            ]
        );
        assert_eq!(
            report.files,
            [Path::new("one"), Path::new("two"), Path::new("three")]
        );
    }

    #[test]
    fn repeated_option_last_one_wins() {
        let c = load_from_str("a", "[DEFAULT]\ndebug = true\n[DEFAULT]\ndebug = false\n")
            .unwrap()
            .config;
        assert!(!c.default.debug);
    }

    #[test]
    fn load_returns_the_first_error() {
        let err = load_from_str("a", "[DEFAULT]\ndebug = x\nhost =\n").unwrap_err();
        assert!(matches!(err, ConfError::BadValue { ref option, .. } if option == "debug"));
    }

    #[test]
    fn config_dir_files_follow_config_files_alphabetically_and_only_conf() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("autoscaler.conf.d");
        fs::create_dir(&dir).unwrap();
        let main = write(
            tmp.path(),
            "autoscaler.conf",
            "[conductor]\nmax_vms_ceiling = 1\n",
        );
        write(&dir, "20-b.conf", "[conductor]\nmax_vms_ceiling = 3\n");
        write(&dir, "10-a.conf", "[conductor]\nmax_vms_ceiling = 2\n");
        write(&dir, "30-c.conf.bak", "[conductor]\nmax_vms_ceiling = 9\n");
        write(&dir, ".hidden.conf", "[conductor]\nmax_vms_ceiling = 9\n");
        fs::create_dir(dir.join("sub.conf")).unwrap();
        let sources = ConfigSources {
            config_files: vec![main.clone()],
            config_dir: Some(dir.clone()),
        };
        assert_eq!(
            sources.files().unwrap(),
            [main, dir.join("10-a.conf"), dir.join("20-b.conf")]
        );
        let loaded = load(&sources).unwrap();
        assert_eq!(loaded.config.conductor.max_vms_ceiling, 3);
        assert_eq!(loaded.files.len(), 3);
    }

    #[test]
    fn missing_config_file_and_dir_are_errors_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope.conf");
        let err = ConfigSources {
            config_files: vec![missing.clone()],
            config_dir: None,
        }
        .files()
        .unwrap_err();
        assert!(matches!(&err, ConfError::ReadFile { path, .. } if *path == missing));
        assert!(err.to_string().starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )));

        let missing_dir = tmp.path().join("nope.d");
        let report = validate(&ConfigSources {
            config_files: vec![],
            config_dir: Some(missing_dir.clone()),
        });
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].to_string().starts_with(&format!(
            "{}: cannot read the config directory: ",
            missing_dir.display()
        )));
    }

    #[test]
    fn default_file_only_when_nothing_is_given_and_it_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let default_file = tmp.path().join("autoscaler.conf");
        let none = ConfigSources::default();
        assert_eq!(none.files_or(&default_file).unwrap(), Vec::<PathBuf>::new());
        write(tmp.path(), "autoscaler.conf", "");
        assert_eq!(
            none.files_or(&default_file).unwrap(),
            std::slice::from_ref(&default_file)
        );
        let other = write(tmp.path(), "other.conf", "");
        let given = ConfigSources {
            config_files: vec![other.clone()],
            config_dir: None,
        };
        assert_eq!(given.files_or(&default_file).unwrap(), [other]);
    }

    #[test]
    fn validate_collects_errors_of_every_file_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let a = write(tmp.path(), "a.conf", "[DEFAULT]\ndebug = nope\n");
        let b = write(
            tmp.path(),
            "b.conf",
            "[agent]\nheartbeat_interval = 61\n[x]\n",
        );
        let report = validate(&ConfigSources {
            config_files: vec![a.clone(), b.clone()],
            config_dir: None,
        });
        assert_eq!(report.files, [a.clone(), b.clone()]);
        assert_eq!(report.errors.len(), 2);
        assert_eq!(bad_value(&report.errors[0]).0, a);
        assert_eq!(bad_value(&report.errors[1]).0, b);
        assert_eq!(report.warnings.len(), 1);
    }
}
