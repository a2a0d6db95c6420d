//! The splitters' pool queues the conductor declares (the agents' login may declare
//! nothing: doc/security.md). Each is declared once on each session of the conductor's
//! link, when its splitter first shows in a listing, and again every
//! [`REDECLARE_EVERY`] while it is listed (so it never reaches its `x-expires` while its
//! VM lives, even with its agent away), instead of at every listing: at 1,000 sites that
//! was about 500 declarations a second (issue 14). A declaration that fails is forgotten,
//! so the next listing tries again; a new session (a broker restart) starts afresh.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tracing::debug;

use crate::messaging::{LinkHandle, QueueSpec, Topology};

/// How often a listed splitter's queue is declared again on the same session.
pub const REDECLARE_EVERY: Duration = Duration::from_secs(30);

/// The queues declared on the current session, and when.
#[derive(Debug, Default, Clone)]
pub struct PoolQueues {
    inner: Arc<Mutex<Declared>>,
}

#[derive(Debug, Default)]
struct Declared {
    /// The session they were declared on ([`LinkHandle::session_id`]).
    session: Option<u64>,
    at: BTreeMap<String, DateTime<Utc>>,
}

impl PoolQueues {
    /// Declares `queue` (bound to `group`'s pool key) unless it was declared on the
    /// link's current session less than [`REDECLARE_EVERY`] ago; off the loop, in a
    /// task. Nothing while the link is down: the first listing after it is up declares.
    pub fn ensure(&self, link: &LinkHandle, topology: &Topology, group: &str, queue: String) {
        let Some(session) = link.session_id() else {
            return;
        };
        let now = Utc::now();
        {
            let mut declared = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if declared.session != Some(session) {
                declared.session = Some(session);
                declared.at.clear();
            }
            let every = chrono::TimeDelta::from_std(REDECLARE_EVERY).unwrap_or_default();
            if declared.at.get(&queue).is_some_and(|t| now - *t < every) {
                return;
            }
            // Forget the queues of splitters no longer listed.
            declared.at.retain(|_, t| now - *t < every * 2);
            declared.at.insert(queue.clone(), now);
        }
        let (link, topology, this) = (link.clone(), topology.clone(), self.clone());
        let bindings = vec![Topology::pool_key(group)];
        tokio::spawn(async move {
            let spec = QueueSpec::splitter_pool();
            let declared = link.declare_queue(&topology, &queue, &spec, &bindings, Duration::ZERO);
            if let Err(error) = declared.await {
                debug!(%error, %queue, "splitter queue not declared; next listing tries again");
                let mut declared = this.inner.lock().unwrap_or_else(|e| e.into_inner());
                declared.at.remove(&queue);
            }
        });
    }
}
