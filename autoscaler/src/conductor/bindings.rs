//! The conductor's telemetry queue hears only the groups it steers: it is bound with each
//! such group's routing keys ([`Topology::telemetry_bindings`]), and unbound from a group
//! handed to another conductor, instead of with `heartbeat.#` and the like. Each message
//! then reaches one conductor, not every one, which decoded, verified and dropped the
//! others' (issue 14: at 1,000 sites on two conductors, half of each one's intake).
//!
//! The bindings follow the leases at every tick: what is steered and not bound on the
//! link's current session is bound, what is bound and no longer steered is unbound, in a
//! task off the loop, one at a time. The queue is auto-deleted with its session, so a new
//! session starts with none and every group is bound again. Until its group is bound (a
//! tick after it is taken), a group's messages reach no conductor: the grace after a
//! takeover or a start covers it, as it covers a reconnection.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use tracing::{debug, warn};

use crate::messaging::{Binding, LinkHandle, Topology};

/// What is bound, on which session; shared with the task that binds.
#[derive(Debug, Clone)]
pub struct TelemetryBindings {
    topology: Topology,
    queue: String,
    applied: Arc<Mutex<Applied>>,
}

#[derive(Debug, Default)]
struct Applied {
    session: Option<u64>,
    /// Groups whose keys are all bound on `session`.
    bound: BTreeSet<String>,
    /// A task is binding: the next tick waits for it.
    busy: bool,
}

impl TelemetryBindings {
    pub fn new(topology: Topology, queue: String) -> Self {
        TelemetryBindings {
            topology,
            queue,
            applied: Arc::default(),
        }
    }

    /// Brings the bindings in line with `steered`, in a task; nothing while the link is
    /// down or a previous task still runs (the next tick tries again).
    pub fn follow<'a>(&self, link: &LinkHandle, steered: impl Iterator<Item = &'a String>) {
        let Some(session) = link.session_id() else {
            return;
        };
        let steered: BTreeSet<&String> = steered.collect();
        let (bind, unbind) = {
            let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            if applied.busy {
                return;
            }
            if applied.session != Some(session) {
                applied.session = Some(session);
                applied.bound.clear();
            }
            let bind: Vec<String> = steered
                .iter()
                .filter(|g| !applied.bound.contains(**g))
                .map(|g| (*g).clone())
                .collect();
            let unbind: Vec<String> = applied
                .bound
                .iter()
                .filter(|g| !steered.contains(g))
                .cloned()
                .collect();
            if bind.is_empty() && unbind.is_empty() {
                return;
            }
            applied.busy = true;
            (bind, unbind)
        };
        let (this, link) = (self.clone(), link.clone());
        tokio::spawn(async move {
            let changes = unbind
                .into_iter()
                .map(|g| (g, Binding::Unbind))
                .chain(bind.into_iter().map(|g| (g, Binding::Bind)));
            for (group, what) in changes {
                if !this.apply(&link, session, &group, what).await {
                    break;
                }
            }
            this.applied.lock().unwrap_or_else(|e| e.into_inner()).busy = false;
        });
    }

    /// Binds or unbinds one group's keys on `session`; whether to go on.
    async fn apply(&self, link: &LinkHandle, session: u64, group: &str, what: Binding) -> bool {
        for key in Topology::telemetry_bindings(group) {
            match link
                .bind(&self.topology, session, &self.queue, &key, what)
                .await
            {
                Ok(true) => {}
                // Another session: the next tick starts over on it.
                Ok(false) => return false,
                Err(error) => {
                    warn!(%error, template = group, key, ?what, "telemetry binding not changed; the next tick tries again");
                    return false;
                }
            }
        }
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        if applied.session == Some(session) {
            match what {
                Binding::Bind => applied.bound.insert(group.to_owned()),
                Binding::Unbind => applied.bound.remove(group),
            };
        }
        debug!(template = group, ?what, "telemetry bindings changed");
        true
    }
}
