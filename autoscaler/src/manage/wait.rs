//! `autoscaler-manage`'s conversation with the conductor: one broker connection for a
//! command, and the waits of `template instantiate` and `template destroy`, which follow
//! the group with `template show` and print each VM's progress until the site answers
//! (or is gone).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;

use crate::{
    conductor::api::{Phase, Request, TemplateView, VmState, VmView, NOT_OWNER},
    conf::Config,
    driver::VmStatus,
    messaging::rpc::{RpcClient, RpcError},
};

/// How often a wait asks the conductor.
const POLL: Duration = Duration::from_millis(500);

/// A connected CLI: its own runtime (the CLI is synchronous) and RPC client.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    client: Option<RpcClient>,
    timeout: Duration,
}

impl Session {
    pub fn connect(config: &Config, timeout: Duration) -> anyhow::Result<Session> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let name = format!(
            "autoscaler-manage.{}.{}",
            config.default.host,
            std::process::id()
        );
        let link = config.link_config(name.clone());
        let topology = config.topology();
        let client = runtime.block_on(RpcClient::connect(&link, topology, name))?;
        Ok(Session {
            runtime,
            client: Some(client),
            timeout,
        })
    }

    /// One request/reply round trip.
    pub fn call<T: DeserializeOwned>(&mut self, request: &Request) -> anyhow::Result<T> {
        let value = self.ask(request)?;
        serde_json::from_value(value)
            .context("unexpected answer from the conductor (is it another version?)")
    }

    /// The answer to `request`. Several conductors share the request queue: one that does
    /// not own the group asked about says so, and the request asked again reaches another
    /// (ten tries at most).
    fn ask(&mut self, request: &Request) -> Result<serde_json::Value, RpcError> {
        let client = self.client.as_mut().expect("open until dropped");
        let mut tries = 0;
        loop {
            match self.runtime.block_on(client.call(request, self.timeout)) {
                Err(RpcError::Remote(e)) if e.kind == NOT_OWNER && tries < 10 => tries += 1,
                answer => return answer,
            }
        }
    }

    fn show(&mut self, name: &str) -> anyhow::Result<Option<TemplateView>> {
        let request = Request::TemplateShow {
            name: Some(name.to_owned()),
        };
        match self.ask(&request) {
            Ok(value) => {
                let mut views: Vec<TemplateView> = serde_json::from_value(value)
                    .context("unexpected answer from the conductor (is it another version?)")?;
                Ok(views.pop())
            }
            Err(RpcError::Remote(e)) if e.kind == "not_found" => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.runtime.block_on(client.close());
        }
    }
}

/// A VM's progress in words an operator reads.
fn progress(vm: &VmState) -> &'static str {
    match vm.status {
        VmStatus::Build => "booting",
        VmStatus::Error | VmStatus::Shutoff => "failed",
        VmStatus::Deleted => "deleting",
        VmStatus::Active if vm.in_pool => "in the pool",
        VmStatus::Active if vm.heartbeat_age.is_some() => "active, agent up",
        VmStatus::Active => "active, waiting for its agent",
    }
}

/// Prints what changed since the last look; returns nothing, remembers in `seen`.
fn report(view: &TemplateView, seen: &mut BTreeMap<String, String>, quiet: bool) {
    let Some(status) = &view.status else { return };
    let phase = format!("{:?}", status.phase).to_lowercase();
    if seen.get("\0phase") != Some(&phase) {
        if !quiet {
            println!("template {}: {phase}", view.record.template.name());
        }
        seen.insert("\0phase".into(), phase);
    }
    for vm in &status.vms {
        let role = vm.role.map_or("?", |r| r.as_str());
        let line = format!(
            "  {} ({role}, {}): {}",
            vm.name,
            vm.address.as_deref().unwrap_or("no address yet"),
            progress(vm)
        );
        if seen.get(&vm.id) != Some(&line) {
            if !quiet {
                println!("{line}");
            }
            seen.insert(vm.id.clone(), line);
        }
    }
}

/// Polls `step` every [`POLL`] until it returns a value, an error, or `patience` runs
/// out (then the error says `unfinished`).
fn follow<T>(
    patience: Duration,
    unfinished: impl Fn() -> String,
    mut step: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(done) = step()? {
            return Ok(done);
        }
        if start.elapsed() > patience {
            bail!("{}", unfinished());
        }
        std::thread::sleep(POLL);
    }
}

/// Follows `name` until its site is ready; returns the last view.
pub fn until_ready(
    session: &mut Session,
    name: &str,
    patience: Duration,
    quiet: bool,
) -> anyhow::Result<TemplateView> {
    let mut seen = BTreeMap::new();
    let unfinished = || {
        format!(
            "the site of {name:?} was not ready within {} s; follow it with: autoscaler-manage template show {name}",
            patience.as_secs()
        )
    };
    follow(patience, unfinished, || {
        let view = session
            .show(name)?
            .ok_or_else(|| anyhow!("template {name:?} disappeared while starting"))?;
        report(&view, &mut seen, quiet);
        match view.status.as_ref().map(|s| s.phase) {
            Some(Phase::Ready) => Ok(Some(view)),
            Some(Phase::Stopping | Phase::Deleting | Phase::Gone) => {
                bail!("template {name:?} is being destroyed")
            }
            _ => Ok(None),
        }
    })
}

/// Follows `name` until the conductor has forgotten it.
pub fn until_gone(
    session: &mut Session,
    name: &str,
    patience: Duration,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut seen = BTreeMap::new();
    let unfinished = || {
        format!(
            "template {name:?} was not gone within {} s; follow it with: autoscaler-manage template show {name}",
            patience.as_secs()
        )
    };
    follow(patience, unfinished, || match session.show(name)? {
        Some(view) => {
            report(&view, &mut seen, quiet);
            Ok(None)
        }
        None => Ok(Some(())),
    })?;
    if !quiet {
        println!("template {name}: gone");
    }
    Ok(())
}

/// Follows VM `name` until the conductor no longer lists it.
pub fn until_vm_gone(
    session: &mut Session,
    name: &str,
    patience: Duration,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut last = String::new();
    let unfinished = || format!("{name} was not deleted within {} s", patience.as_secs());
    follow(patience, unfinished, || {
        let vms: Vec<VmView> = session.call(&Request::VmList { template: None })?;
        let Some(vm) = vms.iter().find(|v| v.vm_id == name) else {
            return Ok(Some(()));
        };
        let line = format!(
            "{name}: {}{}",
            if vm.in_pool { "draining" } else { "deleting" },
            vm.busy
                .map(|b| format!(" ({b} in flight)"))
                .unwrap_or_default()
        );
        if line != last && !quiet {
            println!("{line}");
        }
        last = line;
        Ok(None)
    })?;
    if !quiet {
        println!("{name}: deleted");
    }
    Ok(())
}
