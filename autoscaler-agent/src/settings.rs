//! What the agent runs with: its [`AgentConfig`] (from `--config-file`, `--user-data`, or
//! individual flags) plus the role's local paths, which the image's boot script passes as
//! flags because they belong to the image, not to the conductor. Two stages: raw flags
//! ([`RunArgs`]), then settings checked against the configured role ([`role_settings`]).

use std::path::PathBuf;

use autoscaler_messaging::{AgentConfig, Role};

use crate::http::HttpUrl;

/// Command-line settings of `autoscaler-agent` (running, not `write-files`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The agent's INI file (`[agent]` section), as cloud-init writes it from user data.
    #[arg(long, value_name = "FILE", conflicts_with = "user_data")]
    pub config_file: Option<PathBuf>,
    /// The VM's user data (a cloud-config carrying the agent's configuration).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Without --config-file or --user-data: the broker, in transport_url form.
    #[arg(long, env = "AUTOSCALER_TRANSPORT_URL", hide_env_values = true)]
    pub transport_url: Option<String>,
    /// Without --config-file or --user-data: the exchange.
    #[arg(long, env = "AUTOSCALER_EXCHANGE", default_value = "autoscaler")]
    pub exchange: String,
    /// Without --config-file or --user-data: the template (group) this VM belongs to.
    #[arg(long, env = "AUTOSCALER_GROUP")]
    pub group: Option<String>,
    /// Without --config-file or --user-data: this VM's id.
    #[arg(long, env = "AUTOSCALER_VM_ID")]
    pub vm_id: Option<String>,
    /// Without --config-file or --user-data: web or splitter.
    #[arg(long, env = "AUTOSCALER_ROLE")]
    pub role: Option<Role>,
    /// Without --config-file or --user-data: this VM's message key (base64; only from
    /// the environment, never a flag others could read in the process list).
    #[arg(skip = std::env::var("AUTOSCALER_MESSAGE_KEY").ok())]
    pub message_key: Option<String>,
    /// Without --config-file or --user-data: seconds between heartbeats.
    #[arg(long, default_value = "1")]
    pub heartbeat_interval: String,
    /// Without --config-file or --user-data: seconds a heartbeat may wait on the broker.
    #[arg(long, default_value = "10")]
    pub telemetry_ttl: String,
    /// Without --config-file or --user-data: declare the exchange durable, as a conductor
    /// with `[oslo_messaging_rabbit] amqp_durable_queues = true` does.
    #[arg(long)]
    pub amqp_durable_queues: bool,
    /// Web role: the local URL whose answer the heartbeat reports (`serving`: 200 within
    /// the configuration's `check_timeout`, 1 s unless the conductor says otherwise).
    /// Without it the web agent heartbeats without `serving`.
    #[arg(long, value_name = "URL")]
    pub check_url: Option<String>,
    /// Splitter role: mod_jk's log (JkLogFile), with the request lines to measure.
    #[arg(long, value_name = "FILE")]
    pub request_log: Option<PathBuf>,
    /// Splitter role: the workers.properties the agent owns (JkWorkersFile).
    #[arg(long, value_name = "FILE")]
    pub workers_properties: Option<PathBuf>,
    /// Splitter role: mod_jk's status worker, e.g. http://127.0.1.2:8000/jkmanager/.
    #[arg(long, value_name = "URL")]
    pub jkstatus_url: Option<String>,
    /// Splitter role: mod_jk's read-write status worker, for draining members (with
    /// --jkstatus-credentials); without it, updates go to --jkstatus-url.
    #[arg(long, value_name = "URL", requires = "jkstatus_credentials")]
    pub jkstatus_admin_url: Option<String>,
    /// Splitter role: a file holding the agent's login to --jkstatus-admin-url, one line
    /// USER:PASSWORD (HTTP Basic).
    #[arg(long, value_name = "FILE", requires = "jkstatus_admin_url")]
    pub jkstatus_credentials: Option<PathBuf>,
    /// Splitter role: the URL path clients reach the site at, when Apache maps it onto the
    /// balancer's `JkMount` path (the image's `SITE_PATH`, from the template's
    /// `site_path`); it goes into the site URL the heartbeats announce. Default: the
    /// balancer's `JkMount` path.
    #[arg(long, value_name = "PATH")]
    pub site_path: Option<String>,
    /// Splitter role: Apache's configuration, for `apache2 -f FILE -t|-k graceful`.
    #[arg(long, value_name = "FILE")]
    pub httpd_config: Option<PathBuf>,
    /// The address this VM's server listens on, announced in every heartbeat so a cloud
    /// that reports no address (Nova's fake virt driver) still gets the VM into the pool.
    /// Default: the host of --check-url (web) or --jkstatus-url (splitter) when it is an
    /// IP address.
    #[arg(long, value_name = "IP")]
    pub address: Option<std::net::IpAddr>,
    /// Splitter role: the Apache binary.
    #[arg(
        long,
        value_name = "FILE",
        env = "HTTPD",
        default_value = "/usr/sbin/apache2"
    )]
    pub httpd: PathBuf,
}

/// The role's local settings, checked.
#[derive(Debug, Clone)]
pub enum RoleSettings {
    Web { check_url: Option<HttpUrl> },
    Splitter(SplitterPaths),
}

/// Where the splitter's Apache and mod_jk live.
#[derive(Debug, Clone)]
pub struct SplitterPaths {
    pub request_log: PathBuf,
    pub workers_properties: PathBuf,
    pub jkstatus_url: HttpUrl,
    /// `--jkstatus-admin-url` and `--jkstatus-credentials`.
    pub jkstatus_admin: Option<(HttpUrl, PathBuf)>,
    pub httpd_config: PathBuf,
    pub httpd: PathBuf,
    /// `--site-path`: starts and ends with `/`, no blank or control character.
    pub site_path: Option<String>,
}

/// The address the heartbeats announce: `--address`, else the host of the role's local
/// URL (web: `--check-url`; splitter: `--jkstatus-url`) when it is an IP address, which is
/// where the image's server listens.
pub fn announced_address(args: &RunArgs, role: &RoleSettings) -> Option<std::net::IpAddr> {
    args.address.or_else(|| match role {
        RoleSettings::Web { check_url } => check_url.as_ref().and_then(HttpUrl::ip),
        RoleSettings::Splitter(paths) => paths.jkstatus_url.ip(),
    })
}

/// The flags of `role`, checked: each role's own are required (except the web role's
/// check URL) and the other role's are refused, so an image booted with the wrong role
/// says so at once.
pub fn role_settings(args: &RunArgs, role: Role) -> Result<RoleSettings, String> {
    let splitter_flags = [
        ("--request-log", args.request_log.is_some()),
        ("--workers-properties", args.workers_properties.is_some()),
        ("--jkstatus-url", args.jkstatus_url.is_some()),
        ("--httpd-config", args.httpd_config.is_some()),
    ];
    match role {
        Role::Web => {
            let site_path = [
                ("--site-path", args.site_path.is_some()),
                ("--jkstatus-admin-url", args.jkstatus_admin_url.is_some()),
            ];
            let mut given = splitter_flags.iter().chain(&site_path);
            if let Some((flag, _)) = given.find(|(_, given)| *given) {
                return Err(format!(
                    "{flag} is for the splitter role; this agent's role is web"
                ));
            }
            let check_url = args
                .check_url
                .as_deref()
                .map(|url| url.parse().map_err(|e| format!("--check-url: {e}")))
                .transpose()?;
            Ok(RoleSettings::Web { check_url })
        }
        Role::Splitter => {
            if args.check_url.is_some() {
                return Err(
                    "--check-url is for the web role; this agent's role is splitter".into(),
                );
            }
            let missing = splitter_flags
                .iter()
                .filter(|(_, given)| !given)
                .map(|(flag, _)| *flag)
                .collect::<Vec<_>>();
            if !missing.is_empty() {
                return Err(format!(
                    "the splitter role needs {} (the image's boot script passes them)",
                    missing.join(", ")
                ));
            }
            let jkstatus = args.jkstatus_url.as_deref().unwrap_or_default();
            Ok(RoleSettings::Splitter(SplitterPaths {
                request_log: args.request_log.clone().unwrap_or_default(),
                workers_properties: args.workers_properties.clone().unwrap_or_default(),
                jkstatus_url: jkstatus
                    .parse()
                    .map_err(|e| format!("--jkstatus-url: {e}"))?,
                jkstatus_admin: match (&args.jkstatus_admin_url, &args.jkstatus_credentials) {
                    (Some(url), Some(file)) => Some((
                        url.parse()
                            .map_err(|e| format!("--jkstatus-admin-url: {e}"))?,
                        file.clone(),
                    )),
                    _ => None,
                },
                httpd_config: args.httpd_config.clone().unwrap_or_default(),
                httpd: args.httpd.clone(),
                site_path: args.site_path.as_deref().map(site_path).transpose()?,
            }))
        }
    }
}

/// `--site-path`, checked: a URL path that starts and ends with `/` (the template's rule,
/// `site_path`, is stricter; this keeps the announced URL well formed).
fn site_path(path: &str) -> Result<String, String> {
    let well_formed = path.starts_with('/')
        && path.ends_with('/')
        && !path.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(path.to_owned())
    } else {
        Err(format!(
            "--site-path {path:?}: expected a URL path that starts and ends with '/', without blanks"
        ))
    }
}

/// Builds the agent's configuration from whichever source was given.
pub fn agent_config(args: &RunArgs) -> Result<AgentConfig, String> {
    if let Some(path) = &args.config_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return AgentConfig::from_ini(&path.display().to_string(), &text)
            .map_err(|e| e.to_string());
    }
    if let Some(path) = &args.user_data {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        return AgentConfig::from_user_data(&path.display().to_string(), &text)
            .map_err(|e| e.to_string());
    }
    let missing = |flag: &str| format!("{flag} is required without --config-file or --user-data");
    let fields = [
        &args.transport_url,
        &args.group,
        &args.vm_id,
        &args.message_key,
    ];
    if fields
        .iter()
        .any(|f| f.as_deref().is_some_and(|v| v.contains('\n')))
        || args.exchange.contains('\n')
    {
        return Err("command-line values must be single lines".into());
    }
    // Reuse the INI parser's validation so flags and files accept the same values.
    let ini = format!(
        "[agent]\ntransport_url = {}\ncontrol_exchange = {}\ngroup = {}\nrole = {}\nvm_id = {}\nheartbeat_interval = {}\ntelemetry_ttl = {}\namqp_durable_queues = {}\nmessage_key = {}\n",
        args.transport_url.as_deref().ok_or_else(|| missing("--transport-url"))?,
        args.exchange,
        args.group.as_deref().ok_or_else(|| missing("--group"))?,
        args.role.ok_or_else(|| missing("--role"))?,
        args.vm_id.as_deref().ok_or_else(|| missing("--vm-id"))?,
        args.heartbeat_interval,
        args.telemetry_ttl,
        args.amqp_durable_queues,
        args.message_key
            .as_deref()
            .ok_or_else(|| missing("AUTOSCALER_MESSAGE_KEY"))?,
    );
    AgentConfig::from_ini("command line", &ini).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(flags: &[&str]) -> RunArgs {
        Cli::parse_from(std::iter::once("autoscaler-agent").chain(flags.iter().copied())).run
    }

    const SPLITTER: &[&str] = &[
        "--request-log",
        "/vm/apache/logs/mod_jk.log",
        "--workers-properties",
        "/vm/apache/workers.properties",
        "--jkstatus-url",
        "http://127.0.1.2:8000/jkmanager/",
        "--httpd-config",
        "/vm/apache/httpd.conf",
    ];

    /// Issue 7: on Nova's fake virt driver the cloud reports no address; the agent
    /// announces where its server listens.
    #[test]
    fn the_announced_address_is_the_flag_or_the_local_urls_host() {
        let splitter = args(SPLITTER);
        let role = role_settings(&splitter, Role::Splitter).unwrap();
        assert_eq!(
            announced_address(&splitter, &role),
            "127.0.1.2".parse().ok()
        );
        let web = args(&["--check-url", "http://127.0.1.9:8180/webserver/index.jsp"]);
        let role = role_settings(&web, Role::Web).unwrap();
        assert_eq!(announced_address(&web, &role), "127.0.1.9".parse().ok());
        let named = args(&[
            "--check-url",
            "http://localhost:8180/",
            "--address",
            "10.0.0.7",
        ]);
        let role = role_settings(&named, Role::Web).unwrap();
        assert_eq!(announced_address(&named, &role), "10.0.0.7".parse().ok());
        let bare = args(&["--check-url", "http://localhost:8180/"]);
        let role = role_settings(&bare, Role::Web).unwrap();
        assert_eq!(announced_address(&bare, &role), None);
    }

    #[test]
    fn each_role_takes_its_own_flags() {
        match role_settings(&args(SPLITTER), Role::Splitter).unwrap() {
            RoleSettings::Splitter(paths) => {
                assert_eq!(
                    paths.request_log,
                    PathBuf::from("/vm/apache/logs/mod_jk.log")
                );
                assert_eq!(
                    paths.jkstatus_url.to_string(),
                    "http://127.0.1.2:8000/jkmanager/"
                );
                assert_eq!(paths.httpd, PathBuf::from("/usr/sbin/apache2"));
            }
            other => panic!("{other:?}"),
        }
        let mut with_path = SPLITTER.to_vec();
        with_path.extend(["--site-path", "/shop/"]);
        match role_settings(&args(&with_path), Role::Splitter).unwrap() {
            RoleSettings::Splitter(paths) => assert_eq!(paths.site_path.as_deref(), Some("/shop/")),
            other => panic!("{other:?}"),
        }
        let bad = [SPLITTER, &["--site-path", "/a b/"]].concat();
        assert_eq!(
            role_settings(&args(&bad), Role::Splitter).unwrap_err(),
            "--site-path \"/a b/\": expected a URL path that starts and ends with '/', without blanks"
        );
        assert_eq!(
            role_settings(&args(&["--site-path", "/"]), Role::Web).unwrap_err(),
            "--site-path is for the splitter role; this agent's role is web"
        );
        let web = args(&["--check-url", "http://127.0.1.11:8180/webserver/index.jsp"]);
        assert!(matches!(
            role_settings(&web, Role::Web).unwrap(),
            RoleSettings::Web { check_url: Some(_) }
        ));
        assert!(matches!(
            role_settings(&args(&[]), Role::Web).unwrap(),
            RoleSettings::Web { check_url: None }
        ));
    }

    #[test]
    fn wrong_or_missing_flags_are_named() {
        let err = role_settings(&args(SPLITTER), Role::Web).unwrap_err();
        assert_eq!(
            err,
            "--request-log is for the splitter role; this agent's role is web"
        );
        let err = role_settings(&args(&SPLITTER[..4]), Role::Splitter).unwrap_err();
        assert_eq!(
            err,
            "the splitter role needs --jkstatus-url, --httpd-config (the image's boot script passes them)"
        );
        let mut bad = SPLITTER.to_vec();
        bad[5] = "https://127.0.1.2/jkmanager/";
        let err = role_settings(&args(&bad), Role::Splitter).unwrap_err();
        assert!(err.starts_with("--jkstatus-url: "), "{err}");
        let err = role_settings(&args(&["--check-url", "x"]), Role::Web).unwrap_err();
        assert!(err.starts_with("--check-url: "), "{err}");
    }
}
