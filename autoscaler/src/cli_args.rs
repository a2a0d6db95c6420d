//! Command-line options shared by `autoscaler-conductor` and `autoscaler-manage`:
//! oslo.config's `--config-file` and `--config-dir`.

use std::path::PathBuf;

use crate::conf::ConfigSources;

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// A configuration file; repeatable, later files win. Default:
    /// /etc/autoscaler/autoscaler.conf when neither this nor --config-dir is given.
    #[arg(long = "config-file", value_name = "PATH", global = true)]
    pub config_file: Vec<PathBuf>,
    /// A directory whose *.conf files are read in alphabetical order, after the
    /// --config-file files.
    #[arg(long = "config-dir", value_name = "DIR", global = true)]
    pub config_dir: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn sources(&self) -> ConfigSources {
        ConfigSources {
            config_files: self.config_file.clone(),
            config_dir: self.config_dir.clone(),
        }
    }
}
