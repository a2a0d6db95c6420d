//! A second conductor beside the fixture's: the same configuration (database, broker,
//! local cloud's `state_path`) with another `[DEFAULT] host` and `[local] address_pool`,
//! its log in `conductor-b.log`.

use std::process::{Child, Command};

use super::Fixture;

/// The second conductor: the fixture's configuration with another host and address pool.
pub struct SecondConductor {
    pub host: String,
    pub child: Option<Child>,
}

impl SecondConductor {
    pub fn start(fx: &Fixture) -> SecondConductor {
        let host = format!("{}-b", fx.host);
        let text = std::fs::read_to_string(fx.config_path()).unwrap();
        let pool_b = fx.address_pool.replace(".0/28", ".16/28");
        let text = text
            .replace(
                &format!("host = {}\n", fx.host),
                &format!("host = {host}\n"),
            )
            .replace(&fx.address_pool, &pool_b);
        let config = fx.dir.path().join("conductor-b.conf");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(fx.dir.path().join("conductor-b.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_autoscaler-conductor"))
            .arg("--config-file")
            .arg(&config)
            .arg("--debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        SecondConductor {
            host,
            child: Some(child),
        }
    }
}

impl Drop for SecondConductor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
