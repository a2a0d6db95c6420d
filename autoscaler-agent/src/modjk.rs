//! mod_jk as the splitter agent drives it: the workers.properties it owns, Apache's
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
//! to `balance_workers` and, after [`MEMBERS_MARKER`], one section per member:
//! `reference`, `host`, `port`, and `activation=D` for a draining member (a graceful
//! reload re-reads the file and forgets jkstatus changes, so the file must say it). A
//! restarted agent reads its own file back the same way.
//!
//! # What `apache2 -t` checks (measured with Debian's apache2 2.4.71, mod_jk 1.2.48)
//! Only that the `JkWorkersFile` exists: mod_jk reads its content after the test has
//! ended. A balance member that is not defined passes `-t` and a graceful reload, and
//! mod_jk then routes to it with its defaults, `localhost:8009`. So the agent checks the
//! rendered file itself ([`validate`]) before `-t` and before it goes live.
//!
//! # jkstatus
//! Always answers HTTP 200; `mime=txt` says `Result: type=OK ...` or `type=ERROR
//! message="..."` in the body. An unknown `vwa` value is taken as "active" with
//! `type=OK`, so [`JkStatus::set_activation`] reads the activation back.
//!
//! # `apache2 -k graceful` on a stopped server
//! Prints `httpd not running, trying to start`, exits 0 and starts a new, daemonized
//! Apache in a session of its own, outside the VM's process group. [`Apache::graceful`] therefore refuses to run unless the
//! `PidFile` names a live process.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use autoscaler_messaging::{MemberState, PoolMember};

use crate::http::{self, HttpUrl};

/// The line after which the agent writes the pool's members; everything below it is
/// rewritten at each update.
pub(crate) const MEMBERS_MARKER: &str =
    "# --- pool members, written by autoscaler-agent: everything below this line is rewritten ---";

/// How long `apache2` and jkstatus commands may take before they count as failed.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of a failing command's output quoted in errors (and so in a `PoolAck`).
const QUOTED_LINES: usize = 3;

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

/// The splitter's workers.properties: the image's lines and the pool's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkersFile {
    /// The lines before [`MEMBERS_MARKER`] (all of them in the image's file), kept as
    /// they are except `balance_line`.
    base: Vec<String>,
    /// Index in `base` of the balancer's `balance_workers` line.
    balance_line: usize,
    /// The key of that line, e.g. `worker.loadbalancer.balance_workers`.
    balance_key: String,
    /// The `type=lb` worker's name (jkstatus's `w=`).
    balancer: String,
    /// Members of `balance_workers` defined above the marker (the placeholder): always
    /// listed first, never touched.
    image_members: Vec<String>,
    /// The worker the members inherit from (`worker.<template>`).
    template: String,
    /// Every worker defined above the marker (balancer, template, placeholder, status):
    /// names a pool member must not take.
    reserved: BTreeSet<String>,
    /// The pool's members below the marker, in file order.
    members: Vec<PoolMember>,
}

/// `key=value` of a properties line, or `None` for blank lines and comments.
fn property(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

/// `(worker, property)` of a `worker.<worker>.<property>` key.
fn worker_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("worker.")?;
    let (worker, property) = rest.rsplit_once('.')?;
    (!worker.is_empty() && !property.is_empty()).then_some((worker, property))
}

/// mod_jk worker names the agent writes or sends to jkstatus: letters, digits and `_`.
fn is_worker_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl WorkersFile {
    /// Reads the file's text; `path` only names it in errors.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<WorkersFile, ModJkError> {
        let error = |problem: String| ModJkError::File {
            path: path.display().to_string(),
            problem,
        };
        let lines: Vec<&str> = text.lines().collect();
        let marker = lines.iter().position(|l| l.trim() == MEMBERS_MARKER);
        let (mut base, block) = match marker {
            Some(i) => (&lines[..i], &lines[i + 1..]),
            None => (&lines[..], &[][..]),
        };
        // Trailing blank lines: render writes one before the marker.
        while let [rest @ .., last] = base {
            if !last.trim().is_empty() {
                break;
            }
            base = rest;
        }

        let mut balancers = Vec::new();
        let mut reserved = BTreeSet::new();
        for line in base {
            if let Some((key, value)) = property(line) {
                if let Some((worker, prop)) = worker_key(key) {
                    reserved.insert(worker.to_owned());
                    if prop == "type" && value == "lb" {
                        balancers.push(worker.to_owned());
                    }
                }
            }
        }
        let balancer = match balancers.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(error(format!(
                    "expected exactly one worker with type=lb, found {}",
                    balancers.len()
                )))
            }
        };
        if !balancer
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(error(format!(
                "the balancer's name {balancer:?} has characters jkstatus URLs cannot carry"
            )));
        }
        let balance_key = format!("worker.{balancer}.balance_workers");
        let balance_lines: Vec<usize> = base
            .iter()
            .enumerate()
            .filter(|(_, l)| property(l).is_some_and(|(k, _)| k == balance_key))
            .map(|(i, _)| i)
            .collect();
        let balance_line = match balance_lines.as_slice() {
            [one] => *one,
            _ => {
                return Err(error(format!(
                    "expected one {balance_key} line, found {}",
                    balance_lines.len()
                )))
            }
        };
        let listed: Vec<&str> = property(base[balance_line])
            .map(|(_, v)| v)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();

        let members = parse_members(block).map_err(error)?;
        let in_block: BTreeSet<&str> = members.iter().map(|m| m.name.as_str()).collect();
        let image_members: Vec<String> = listed
            .iter()
            .filter(|n| !in_block.contains(*n))
            .map(|n| (*n).to_owned())
            .collect();
        for m in &members {
            if !listed.contains(&m.name.as_str()) {
                return Err(error(format!(
                    "member {:?} is defined below the marker but not in {balance_key}",
                    m.name
                )));
            }
        }
        // The template: what the image's own members inherit from.
        let template = image_members
            .iter()
            .find_map(|member| {
                let key = format!("worker.{member}.reference");
                base.iter()
                    .filter_map(|l| property(l))
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, v)| v.strip_prefix("worker."))
                    .map(str::to_owned)
            })
            .ok_or_else(|| {
                error(format!(
                    "cannot tell which worker members inherit from: no member of {balance_key} \
                     above the marker has reference=worker.<name>"
                ))
            })?;
        Ok(WorkersFile {
            base: base.iter().map(|l| (*l).to_owned()).collect(),
            balance_line,
            balance_key,
            balancer,
            image_members,
            template,
            reserved,
            members,
        })
    }

    /// Whether `name` is a worker of the image, which no pool member may be called.
    pub(crate) fn is_reserved(&self, name: &str) -> bool {
        self.reserved.contains(name)
    }

    /// The `type=lb` worker's name.
    pub(crate) fn balancer(&self) -> &str {
        &self.balancer
    }

    /// The image's own members of the balancer (never routed to, never reported).
    pub(crate) fn image_members(&self) -> &[String] {
        &self.image_members
    }

    /// The pool's members as the file holds them.
    pub(crate) fn members(&self) -> &[PoolMember] {
        &self.members
    }

    /// This file with `members` as the pool.
    pub(crate) fn with_members(&self, members: &[PoolMember]) -> WorkersFile {
        WorkersFile {
            members: members.to_vec(),
            ..self.clone()
        }
    }

    /// The file's text; `generation` goes into a comment for the operator.
    pub(crate) fn render(&self, generation: Option<u64>) -> String {
        let mut out = String::new();
        for (i, line) in self.base.iter().enumerate() {
            if i == self.balance_line {
                let names: Vec<&str> = self
                    .image_members
                    .iter()
                    .map(String::as_str)
                    .chain(self.members.iter().map(|m| m.name.as_str()))
                    .collect();
                out.push_str(&format!("{}={}\n", self.balance_key, names.join(",")));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        if self.base.last().is_some_and(|l| !l.trim().is_empty()) {
            out.push('\n');
        }
        out.push_str(MEMBERS_MARKER);
        out.push('\n');
        if let Some(generation) = generation {
            out.push_str(&format!("# pool generation {generation}\n"));
        }
        for m in &self.members {
            let n = &m.name;
            out.push_str(&format!(
                "\nworker.{n}.reference=worker.{}\nworker.{n}.host={}\nworker.{n}.port={}\n",
                self.template, m.host, m.port
            ));
            if m.state == MemberState::Draining {
                out.push_str(&format!("worker.{n}.activation=D\n"));
            }
        }
        out
    }
}

/// The members the agent wrote below the marker.
fn parse_members(block: &[&str]) -> Result<Vec<PoolMember>, String> {
    let mut members: Vec<PoolMember> = Vec::new();
    let mut seen = BTreeMap::new(); // name -> (host, port, state)
    for line in block {
        let Some((key, value)) = property(line) else {
            if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                return Err(format!("below the marker: {line:?} is not key=value"));
            }
            continue;
        };
        let Some((worker, prop)) = worker_key(key) else {
            return Err(format!("below the marker: unexpected key {key:?}"));
        };
        if !is_worker_name(worker) {
            return Err(format!("below the marker: bad worker name {worker:?}"));
        }
        let entry = seen.entry(worker.to_owned()).or_insert_with(|| {
            members.push(PoolMember {
                name: worker.to_owned(),
                host: String::new(),
                port: 0,
                state: MemberState::Active,
            });
            members.len() - 1
        });
        let member = &mut members[*entry];
        match prop {
            "reference" => {}
            "host" => member.host = value.to_owned(),
            "port" => {
                member.port = value
                    .parse()
                    .map_err(|_| format!("{key}={value}: not a port"))?
            }
            "activation" => {
                member.state = match value.chars().next().map(|c| c.to_ascii_lowercase()) {
                    Some('a') => MemberState::Active,
                    Some('d') => MemberState::Draining,
                    _ => return Err(format!("{key}={value}: expected A or D")),
                }
            }
            _ => return Err(format!("below the marker: unexpected key {key:?}")),
        }
    }
    for m in &members {
        if m.host.is_empty() || m.port == 0 {
            return Err(format!("member {:?} has no host or port", m.name));
        }
    }
    Ok(members)
}

/// Checks a workers.properties text the way mod_jk would need it, since `apache2 -t`
/// does not read it: every line a property, worker names mod_jk accepts, and every
/// member of every balancer defined with a host and a non-empty port (directly or through
/// `reference`). An undefined member would otherwise get mod_jk's `localhost:8009`.
pub(crate) fn validate(text: &str) -> Result<(), ModJkError> {
    let invalid = |problem: String| Err(ModJkError::Invalid(problem));
    // worker -> property -> value; balance_workers values concatenate as in mod_jk.
    let mut workers: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let Some((key, value)) = property(line) else {
            let t = line.trim();
            if !t.is_empty() && !t.starts_with('#') {
                return invalid(format!("line {}: {t:?} is not key=value", index + 1));
            }
            continue;
        };
        let Some((worker, prop)) = worker_key(key) else {
            if key.starts_with("worker.") && !key[7..].contains('.') {
                continue; // worker.list, worker.maintain
            }
            return invalid(format!("line {}: unexpected key {key:?}", index + 1));
        };
        if !is_worker_name(worker) {
            return invalid(format!(
                "line {}: worker name {worker:?} is not letters, digits and _",
                index + 1
            ));
        }
        let props = workers.entry(worker).or_default();
        match props.get_mut(prop) {
            Some(old) if prop == "balance_workers" => {
                old.push(',');
                old.push_str(value);
            }
            _ => {
                props.insert(prop, value.to_owned());
            }
        }
    }
    // A property of `worker`, following `reference=worker.<other>` up to a few levels.
    let lookup = |worker: &str, prop: &str| -> Option<String> {
        let mut current = worker.to_owned();
        for _ in 0..8 {
            let props = workers.get(current.as_str())?;
            if let Some(v) = props.get(prop) {
                return Some(v.clone());
            }
            current = props.get("reference")?.strip_prefix("worker.")?.to_owned();
        }
        None
    };
    let mut balancers = 0;
    for (name, props) in &workers {
        if lookup(name, "type").as_deref() != Some("lb") {
            continue;
        }
        balancers += 1;
        let members: Vec<&str> = props
            .get("balance_workers")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if members.is_empty() {
            return invalid(format!("balancer {name:?} has no balance_workers"));
        }
        let mut unique = BTreeSet::new();
        for member in members {
            if !is_worker_name(member) {
                return invalid(format!(
                    "balancer {name:?}: member name {member:?} is not letters, digits and _"
                ));
            }
            if !unique.insert(member) {
                return invalid(format!("balancer {name:?} lists {member:?} twice"));
            }
            if !workers.contains_key(member) {
                return invalid(format!("balance worker {member:?} is not defined"));
            }
            if lookup(member, "host").is_none_or(|host| host.is_empty()) {
                return invalid(format!("balance worker {member:?} has no host"));
            }
            // Port 0 is valid: mod_jk starts such a member stopped (the placeholder).
            if lookup(member, "port").is_none_or(|port| port.parse::<u16>().is_err()) {
                return invalid(format!("balance worker {member:?} has no valid port"));
            }
        }
    }
    if balancers == 0 {
        return invalid("no worker of type lb".into());
    }
    Ok(())
}

/// Writes `text` to `path` atomically: `<path>.new` first, then a rename over `path`.
/// On failure the `.new` file is removed and `path` is untouched.
pub(crate) async fn replace_file(path: &Path, text: &str) -> Result<(), ModJkError> {
    let staged = staged_path(path);
    let error = |what: &str, e: std::io::Error| ModJkError::File {
        path: staged.display().to_string(),
        problem: format!("{what}: {e}"),
    };
    if let Err(e) = tokio::fs::write(&staged, text).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(error("cannot write", e));
    }
    if let Err(e) = tokio::fs::rename(&staged, path).await {
        let _ = tokio::fs::remove_file(&staged).await;
        return Err(error("cannot rename into place", e));
    }
    Ok(())
}

/// `workers.properties.new` beside `workers.properties`.
pub(crate) fn staged_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

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

/// The first `n` non-empty lines of `text`, joined with " / ".
fn first_lines(text: &str, n: usize) -> String {
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

/// mod_jk's status worker.
#[derive(Debug, Clone)]
pub(crate) struct JkStatus {
    /// `http://<host>:<port>/jkmanager/`, as the image passes it.
    url: HttpUrl,
    balancer: String,
}

impl JkStatus {
    pub(crate) fn new(url: HttpUrl, balancer: impl Into<String>) -> JkStatus {
        JkStatus {
            url,
            balancer: balancer.into(),
        }
    }

    /// The properties page (`?mime=prop`), also the splitter's liveness check.
    pub(crate) fn properties_url(&self) -> HttpUrl {
        self.url.with_query("mime=prop")
    }

    /// The properties text, within `timeout`.
    pub(crate) async fn properties(&self, timeout: Duration) -> Result<String, ModJkError> {
        let response = http::get(&self.properties_url(), timeout)
            .await
            .map_err(|e| ModJkError::JkStatus(e.to_string()))?;
        if response.status != 200 {
            return Err(ModJkError::JkStatus(format!(
                "?mime=prop answered {}",
                response.status
            )));
        }
        Ok(response.body)
    }

    /// In-flight requests per worker (`worker.<name>.busy`), within `timeout`.
    pub(crate) async fn busy(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, u32>, ModJkError> {
        let text = self.properties(timeout).await?;
        Ok(worker_values(&text, "busy")
            .filter_map(|(w, v)| Some((w.to_owned(), v.parse().ok()?)))
            .collect())
    }

    /// Sets `member`'s activation in the running mod_jk (all children: it lives in the
    /// shared memory), then reads it back. Not persistent: the next graceful reload
    /// takes the file's.
    pub(crate) async fn set_activation(
        &self,
        member: &str,
        state: MemberState,
    ) -> Result<(), ModJkError> {
        if !is_worker_name(member) {
            return Err(ModJkError::JkStatus(format!(
                "{member:?} is not a worker name"
            )));
        }
        let (code, shown) = match state {
            MemberState::Active => ("A", "ACT"),
            MemberState::Draining => ("D", "DIS"),
        };
        let url = self.url.with_query(&format!(
            "cmd=update&mime=txt&w={}&sw={member}&vwa={code}",
            self.balancer
        ));
        let response = http::get(&url, COMMAND_TIMEOUT)
            .await
            .map_err(|e| ModJkError::JkStatus(e.to_string()))?;
        let result = update_result(&response.body);
        if response.status != 200 || result.is_err() {
            return Err(ModJkError::JkStatus(format!(
                "setting {member} to {code}: HTTP {}: {}",
                response.status,
                result
                    .err()
                    .unwrap_or_else(|| first_lines(&response.body, 1))
            )));
        }
        let text = self.properties(COMMAND_TIMEOUT).await?;
        let now = worker_values(&text, "activation")
            .find(|(w, _)| *w == member)
            .map(|(_, value)| value.to_owned());
        match now {
            Some(now) if now == shown => Ok(()),
            Some(now) => Err(ModJkError::JkStatus(format!(
                "{member} is {now} after setting it to {code}"
            ))),
            None => Err(ModJkError::JkStatus(format!(
                "{member} is not in the properties after setting it"
            ))),
        }
    }
}

/// Whether a `mime=txt` update answer says `type=OK`; the error's message otherwise.
fn update_result(body: &str) -> Result<(), String> {
    let line = body
        .lines()
        .find(|l| l.trim_start().starts_with("Result:"))
        .ok_or_else(|| format!("no Result line in {:?}", first_lines(body, 1)))?;
    if line.contains("type=OK") {
        Ok(())
    } else {
        Err(line.trim().to_owned())
    }
}

/// `(worker, value)` of every `worker.<worker>.<property>=<value>` line of a
/// `?mime=prop` page, for workers whose name has no dot (not `worker.lb.map.1.x`).
pub(crate) fn worker_values<'a>(
    text: &'a str,
    property: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    text.lines().filter_map(move |line| {
        let (key, value) = line.split_once('=')?;
        let (worker, prop) = key.trim().strip_prefix("worker.")?.split_once('.')?;
        (prop == property).then_some((worker, value.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image's file as its boot script renders it (values from image.conf).
    pub(crate) const IMAGE_FILE: &str = "\
# workers.properties of one modjk-splitter VM
worker.list=loadbalancer,jkstatus

worker.maintain=5

# A member is three lines:
#   worker.tomcat-web-1.reference=worker.member
worker.member.type=ajp13
worker.member.ping_mode=A
worker.member.ping_timeout=1000
worker.member.reply_timeout=2000

worker.loadbalancer.type=lb
worker.loadbalancer.method=B
worker.loadbalancer.sticky_session=false
worker.loadbalancer.balance_workers=placeholder

worker.placeholder.reference=worker.member
worker.placeholder.host=localhost
worker.placeholder.port=0

worker.jkstatus.type=status
";

    fn member(name: &str, host: &str, state: MemberState) -> PoolMember {
        PoolMember {
            name: name.into(),
            host: host.into(),
            port: 8009,
            state,
        }
    }

    fn image() -> WorkersFile {
        WorkersFile::parse(Path::new("workers.properties"), IMAGE_FILE).unwrap()
    }

    #[test]
    fn the_image_file_is_understood() {
        let file = image();
        assert_eq!(file.balancer(), "loadbalancer");
        assert_eq!(file.image_members(), ["placeholder"]);
        assert_eq!(file.template, "member");
        assert!(file.members().is_empty());
        for name in ["loadbalancer", "placeholder", "member", "jkstatus"] {
            assert!(file.is_reserved(name), "{name}");
        }
        assert!(!file.is_reserved("shop_web_1"));
        // Nothing to add: the image's lines come back as they were, plus the marker.
        let text = file.render(None);
        assert_eq!(text, format!("{IMAGE_FILE}\n{MEMBERS_MARKER}\n"));
        validate(&text).unwrap();
    }

    #[test]
    fn members_are_rendered_after_the_placeholder_and_read_back() {
        let members = [
            member("shop_web_1", "127.0.1.11", MemberState::Active),
            member("shop_web_2", "127.0.1.12", MemberState::Draining),
        ];
        let file = image().with_members(&members);
        let text = file.render(Some(7));
        assert!(text
            .contains("\nworker.loadbalancer.balance_workers=placeholder,shop_web_1,shop_web_2\n"));
        // The rest of the image is kept: the placeholder, the template, jkstatus.
        for kept in [
            "worker.placeholder.port=0\n",
            "worker.member.ping_mode=A\n",
            "worker.jkstatus.type=status\n",
            "worker.maintain=5\n",
        ] {
            assert!(text.contains(kept), "{kept} missing from\n{text}");
        }
        let tail = text.split(MEMBERS_MARKER).nth(1).unwrap();
        assert_eq!(
            tail,
            "\n# pool generation 7\n\
             \nworker.shop_web_1.reference=worker.member\n\
             worker.shop_web_1.host=127.0.1.11\n\
             worker.shop_web_1.port=8009\n\
             \nworker.shop_web_2.reference=worker.member\n\
             worker.shop_web_2.host=127.0.1.12\n\
             worker.shop_web_2.port=8009\n\
             worker.shop_web_2.activation=D\n"
        );
        validate(&text).unwrap();
        // A restarted agent reads its own file back.
        let again = WorkersFile::parse(Path::new("w"), &text).unwrap();
        assert_eq!(again.members(), file.members());
        assert_eq!(again.image_members(), file.image_members());
        assert_eq!(again.render(Some(7)), text);
        // Removing every member leaves the image's file again.
        assert_eq!(again.with_members(&[]).render(None), image().render(None));
    }

    #[test]
    fn the_images_template_is_understood() {
        // The template with its @KEY@ placeholders: the structure is what matters here.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../etc/autoscaler/images/modjk-splitter/templates/workers.properties");
        let text = std::fs::read_to_string(&path).unwrap();
        let file = WorkersFile::parse(&path, &text).unwrap();
        assert_eq!(file.balancer(), "loadbalancer");
        assert_eq!(file.image_members(), ["placeholder"]);
        assert_eq!(file.template, "member");
        let text = file
            .with_members(&[member("a", "127.0.1.11", MemberState::Draining)])
            .render(Some(1));
        assert!(text.contains("balance_workers=placeholder,a\n"));
        assert!(text.ends_with("worker.a.activation=D\n"));
    }

    #[test]
    fn unusable_files_are_refused_with_the_reason() {
        let cases = [
            (
                IMAGE_FILE.replace("worker.loadbalancer.type=lb\n", ""),
                "expected exactly one worker with type=lb, found 0",
            ),
            (
                format!("{IMAGE_FILE}worker.other.type=lb\n"),
                "expected exactly one worker with type=lb, found 2",
            ),
            (
                IMAGE_FILE.replace("worker.loadbalancer.balance_workers=placeholder\n", ""),
                "expected one worker.loadbalancer.balance_workers line, found 0",
            ),
            (
                IMAGE_FILE.replace("worker.placeholder.reference=worker.member\n", ""),
                "cannot tell which worker members inherit from",
            ),
            (
                format!("{IMAGE_FILE}{MEMBERS_MARKER}\nworker.a.host=h\nworker.a.port=1\n"),
                "member \"a\" is defined below the marker but not in",
            ),
            (
                format!("{IMAGE_FILE}{MEMBERS_MARKER}\nworker.a.color=red\n"),
                "unexpected key \"worker.a.color\"",
            ),
        ];
        for (text, want) in cases {
            let err = WorkersFile::parse(Path::new("w.p"), &text).unwrap_err();
            assert!(err.to_string().starts_with("w.p: "), "{err}");
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn validation_catches_what_apache_t_does_not() {
        let good = image()
            .with_members(&[member("a", "127.0.1.11", MemberState::Active)])
            .render(None);
        validate(&good).unwrap();
        let cases = [
            // mod_jk would route an undefined member to localhost:8009.
            (
                good.replace(
                    "balance_workers=placeholder,a",
                    "balance_workers=placeholder,a,ghost",
                ),
                "balance worker \"ghost\" is not defined",
            ),
            (
                good.replace("worker.a.host=127.0.1.11\n", ""),
                "balance worker \"a\" has no host",
            ),
            (
                good.replace("worker.a.port=8009", "worker.a.port=http"),
                "balance worker \"a\" has no valid port",
            ),
            (
                good.replace(
                    "balance_workers=placeholder,a",
                    "balance_workers=placeholder,a,a",
                ),
                "lists \"a\" twice",
            ),
            (
                good.replace("balance_workers=placeholder,a", "balance_workers="),
                "has no balance_workers",
            ),
            (
                good.replace("worker.a.", "worker.a-b.")
                    .replace(",a\n", ",a-b\n"),
                "worker name \"a-b\"",
            ),
            (format!("{good}garbage\n"), "\"garbage\" is not key=value"),
            (
                good.replace(
                    "worker.loadbalancer.type=lb",
                    "worker.loadbalancer.type=ajp13",
                ),
                "no worker of type lb",
            ),
        ];
        for (text, want) in cases {
            let err = validate(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn busy_counts_come_from_the_properties_page() {
        let prop = "\
worker.list=loadbalancer
worker.loadbalancer.type=lb
worker.loadbalancer.busy=3
worker.loadbalancer.max_busy=9
worker.loadbalancer.balance_workers=placeholder
worker.loadbalancer.balance_workers=shop_web_1
worker.placeholder.busy=0
worker.placeholder.activation=STP
worker.shop_web_1.busy=3
worker.shop_web_1.busy_limit=0
worker.shop_web_1.activation=DIS
worker.loadbalancer.map.1.busy=x
";
        let busy: Vec<_> = worker_values(prop, "busy").collect();
        assert_eq!(
            busy,
            [
                ("loadbalancer", "3"),
                ("placeholder", "0"),
                ("shop_web_1", "3")
            ]
        );
        let activation: Vec<_> = worker_values(prop, "activation").collect();
        assert_eq!(activation, [("placeholder", "STP"), ("shop_web_1", "DIS")]);
    }

    #[test]
    fn update_answers_are_read() {
        assert_eq!(
            update_result("Result: type=OK message=\"Action finished\"\n"),
            Ok(())
        );
        assert_eq!(
            update_result("Result: type=ERROR message=\"could not find sub worker\"\n"),
            Err("Result: type=ERROR message=\"could not find sub worker\"".into())
        );
        assert!(update_result("<html>").is_err());
    }

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
        assert!(!staged_path(&path).exists());
        assert_eq!(
            staged_path(&path),
            dir.path().join("workers.properties.new")
        );
        let missing = dir.path().join("no-such-dir/workers.properties");
        assert!(replace_file(&missing, "x").await.is_err());
    }
}
