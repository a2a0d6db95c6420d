//! What the agent runs with: its [`AgentConfig`] (from `--config-file`, `--user-data`, or
//! individual flags) plus the role's local paths, which the image's boot script passes as
//! flags because they belong to the image, not to the conductor.

use std::path::PathBuf;

use autoscaler_messaging::{AgentConfig, Role};

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
    /// Without --config-file or --user-data: seconds between heartbeats.
    #[arg(long, default_value = "1")]
    pub heartbeat_interval: String,
    /// Without --config-file or --user-data: seconds a heartbeat may wait on the broker.
    #[arg(long, default_value = "10")]
    pub telemetry_ttl: String,
    /// Web role: the local URL whose answer the heartbeat reports.
    #[arg(long, value_name = "URL")]
    pub check_url: Option<String>,
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
    let fields = [&args.transport_url, &args.group, &args.vm_id];
    if fields
        .iter()
        .any(|f| f.as_deref().is_some_and(|v| v.contains('\n')))
        || args.exchange.contains('\n')
    {
        return Err("command-line values must be single lines".into());
    }
    // Reuse the INI parser's validation so flags and files accept the same values.
    let ini = format!(
        "[agent]\ntransport_url = {}\ncontrol_exchange = {}\ngroup = {}\nrole = {}\nvm_id = {}\nheartbeat_interval = {}\ntelemetry_ttl = {}\n",
        args.transport_url.as_deref().ok_or_else(|| missing("--transport-url"))?,
        args.exchange,
        args.group.as_deref().ok_or_else(|| missing("--group"))?,
        args.role.ok_or_else(|| missing("--role"))?,
        args.vm_id.as_deref().ok_or_else(|| missing("--vm-id"))?,
        args.heartbeat_interval,
        args.telemetry_ttl,
    );
    AgentConfig::from_ini("command line", &ini).map_err(|e| e.to_string())
}
