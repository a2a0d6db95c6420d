//! The splitter's pool: which web VMs mod_jk routes to, as the conductor wants it, and the
//! splitter agent's answer.
//!
//! The conductor always sends the *whole* desired pool with a generation number that only
//! grows; the splitter applies a generation once, ignores older ones, and answers each
//! with a [`PoolAck`]. So an update can be lost, repeated or reordered without harm, and
//! the conductor simply re-sends the current pool from time to time.

use serde::{Deserialize, Serialize};

use crate::payload::Payload;

/// What mod_jk should do with a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Takes new requests.
    Active,
    /// Takes no new requests; those in flight finish (mod_jk activation `D`).
    Draining,
}

/// One web VM in the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMember {
    /// The mod_jk worker name: letters, digits and `_` (see [`member_name`]).
    pub name: String,
    /// The VM's address; mod_jk connects to its AJP port.
    pub host: String,
    pub port: u16,
    pub state: MemberState,
}

/// The desired pool of one group, on `pool.<group>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUpdate {
    pub group: String,
    /// Grows with every change; the splitter ignores a generation older than the one it
    /// applied last.
    pub generation: u64,
    pub members: Vec<PoolMember>,
    /// False when the splitter must stop accepting connections (graceful stop: requests
    /// in flight finish), before the group is torn down.
    pub listening: bool,
}

impl Payload for PoolUpdate {
    const KIND: &'static str = "pool.update";
}

/// How a generation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum PoolOutcome {
    /// mod_jk runs this generation.
    Applied,
    /// Nothing changed; `reason` says why (e.g. `apache2 -t` refused the configuration).
    Rejected { reason: String },
}

/// The splitter's answer, on `pool-ack.<group>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAck {
    pub group: String,
    pub vm_id: String,
    pub generation: u64,
    pub outcome: PoolOutcome,
}

impl Payload for PoolAck {
    const KIND: &'static str = "pool.ack";
}

/// A mod_jk worker name for a VM name: mod_jk accepts letters, digits and `_` in worker
/// names, so anything else becomes `_`.
pub fn member_name(vm_name: &str) -> String {
    vm_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

impl PoolUpdate {
    /// Checks what serde cannot: names mod_jk accepts, unique names and addresses, a port.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for m in &self.members {
            if m.name.is_empty()
                || !m
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "member name {:?} is not a mod_jk worker name",
                    m.name
                ));
            }
            if m.name == "loadbalancer" || m.name == "jkstatus" {
                return Err(format!("member name {:?} is reserved", m.name));
            }
            if !names.insert(m.name.as_str()) {
                return Err(format!("member {:?} is listed twice", m.name));
            }
            if m.host.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "member {:?} has host {:?}, not an IP address",
                    m.name, m.host
                ));
            }
            if m.port == 0 {
                return Err(format!("member {:?} has port 0", m.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, host: &str) -> PoolMember {
        PoolMember {
            name: name.into(),
            host: host.into(),
            port: 8009,
            state: MemberState::Active,
        }
    }

    #[test]
    fn names_and_validation() {
        assert_eq!(member_name("shop-web-1a2b"), "shop_web_1a2b");
        let mut update = PoolUpdate {
            group: "shop".into(),
            generation: 3,
            members: vec![member("a", "127.0.1.5"), member("b", "127.0.1.6")],
            listening: true,
        };
        assert_eq!(update.validate(), Ok(()));
        update.members.push(member("a", "127.0.1.7"));
        assert!(update.validate().unwrap_err().contains("twice"));
        update.members.pop();
        update.members.push(member("c d", "127.0.1.7"));
        assert!(update
            .validate()
            .unwrap_err()
            .contains("not a mod_jk worker name"));
        update.members.pop();
        update.members.push(member("c", "somewhere"));
        assert!(update.validate().unwrap_err().contains("not an IP address"));
    }

    #[test]
    fn unknown_states_do_not_decode() {
        let json = r#"{"group":"g","generation":1,"listening":true,"members":[{"name":"a","host":"127.0.1.5","port":8009,"state":"melting"}]}"#;
        assert!(serde_json::from_str::<PoolUpdate>(json).is_err());
    }
}
