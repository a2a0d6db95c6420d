//! A Nova server as the driver contract reports it ([`to_vm`]): Nova's status and task
//! state mapped onto [`VmStatus`] ([`vm_status`]), the address the VM's services listen on
//! ([`address`]), the fault, and the metadata without the driver's own keys. Pure.
//!
//! # Statuses
//!
//! | Nova `status` (`OS-EXT-STS:task_state`) | reported | why |
//! |---|---|---|
//! | any, task state `deleting` | `DELETED` | a delete is under way (Nova keeps the old status until it is done) |
//! | `DELETED`, `SOFT_DELETED` | `DELETED` | |
//! | `BUILD` | `BUILD` | |
//! | `ACTIVE` | `ACTIVE` | |
//! | `REBOOT`, `HARD_REBOOT`, `REBUILD`, `RESIZE`, `VERIFY_RESIZE`, `REVERT_RESIZE`, `MIGRATING`, `PASSWORD`, `RESCUE`, `UNKNOWN` | `ACTIVE` | an operator's action or a compute host Nova cannot reach: the VM is still the group's, and its heartbeats tell whether it serves (a VM that stays silent is replaced as any silent VM is) |
//! | `ERROR` | `ERROR` | with the fault |
//! | `SHUTOFF`, `STOPPED`, `PAUSED`, `SUSPENDED`, `SHELVED`, `SHELVED_OFFLOADED` | `SHUTOFF` | the VM does not run: final for the conductor, which deletes and replaces it |
//! | anything else | `ERROR` | a status this driver does not know is not trusted to serve |
//!
//! # The driver's own metadata
//!
//! Keys under [`PRIVATE_PREFIX`] are written at boot and never reported: the image's name
//! as the spec gave it (the server only knows the image's id), the network as the spec gave
//! it (to pick the address on it), and the boot time with microseconds (Nova's `created`
//! has whole seconds, and VMs booted in the same second must still list oldest first).

use std::{collections::BTreeMap, net::IpAddr};

use chrono::{DateTime, Utc};

use super::protocol::Server;
use crate::driver::{Vm, VmId, VmStatus};

/// What every metadata key the driver keeps for itself starts with.
pub const PRIVATE_PREFIX: &str = "autoscaler:nova:";
/// The image as the spec named it.
pub const META_IMAGE: &str = "autoscaler:nova:image";
/// The network as the spec named it, when it named one.
pub const META_NETWORK: &str = "autoscaler:nova:network";
/// When the driver asked for the server, RFC 3339 with microseconds.
pub const META_BOOTED_AT: &str = "autoscaler:nova:booted_at";

/// Nova's status and task state as the contract's status; see the module doc.
pub fn vm_status(status: &str, task_state: Option<&str>) -> VmStatus {
    if task_state == Some("deleting") {
        return VmStatus::Deleted;
    }
    match status {
        "BUILD" => VmStatus::Build,
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "REBUILD" | "RESIZE" | "VERIFY_RESIZE"
        | "REVERT_RESIZE" | "MIGRATING" | "PASSWORD" | "RESCUE" | "UNKNOWN" => VmStatus::Active,
        "SHUTOFF" | "STOPPED" | "PAUSED" | "SUSPENDED" | "SHELVED" | "SHELVED_OFFLOADED" => {
            VmStatus::Shutoff
        }
        "DELETED" | "SOFT_DELETED" => VmStatus::Deleted,
        _ => VmStatus::Error,
    }
}

/// The address the VM's services listen on: the first fixed address on the spec's network
/// when the server has one there, else the first fixed address of any network (networks
/// by name), IPv4 before IPv6, else `accessIPv4`. `None` when Nova shows none (the fake
/// virt driver never does; the conductor then uses the address the VM's agent announces).
pub fn address(server: &Server, network: Option<&str>) -> Option<IpAddr> {
    let fixed_of = |name: &str| -> Vec<IpAddr> {
        let mut found: Vec<IpAddr> = server
            .addresses
            .get(name)
            .into_iter()
            .flatten()
            .filter(|a| a.kind.as_deref() != Some("floating"))
            .filter_map(|a| a.addr.parse().ok())
            .collect();
        // Stable: IPv4 first, in Nova's order within a family.
        found.sort_by_key(|a: &IpAddr| a.is_ipv6());
        found
    };
    if let Some(first) = network.and_then(|n| fixed_of(n).into_iter().next()) {
        return Some(first);
    }
    let mut all: Vec<IpAddr> = server.addresses.keys().flat_map(|n| fixed_of(n)).collect();
    all.sort_by_key(|a| a.is_ipv6());
    all.into_iter().next().or_else(|| {
        server
            .access_ipv4
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok())
    })
}

/// The server as the contract's [`Vm`].
pub fn to_vm(server: &Server) -> Vm {
    let status = vm_status(&server.status, server.task_state.as_deref());
    let network = server.metadata.get(META_NETWORK).map(String::as_str);
    let metadata: BTreeMap<String, String> = server
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(PRIVATE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let created_at = server
        .metadata
        .get(META_BOOTED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(server.created);
    let fault = (status == VmStatus::Error).then(|| match &server.fault {
        Some(f) => {
            let mut text = format!("{} (code {})", f.message, f.code);
            if let Some(details) = f.details.as_deref().filter(|d| !d.trim().is_empty()) {
                text.push_str(": ");
                text.push_str(details.trim());
            }
            text
        }
        None => format!("Nova reports status {} without a fault", server.status),
    });
    Vm {
        id: VmId(server.id.clone()),
        name: server.name.clone(),
        image: server.metadata.get(META_IMAGE).cloned().unwrap_or_default(),
        status,
        address: address(server, network),
        metadata,
        created_at,
        fault,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::nova::protocol::{Address, Fault};

    fn server(status: &str) -> Server {
        serde_json::from_value(serde_json::json!({
            "id": "id-1", "name": "shop-web-1", "status": status,
            "created": "2026-12-02T04:35:35Z",
            "metadata": {
                "autoscaler:group": "shop",
                META_IMAGE: "tomcat-web",
                META_BOOTED_AT: "2026-12-02T04:35:34.123456Z",
            }
        }))
        .unwrap()
    }

    #[test]
    fn statuses_map_onto_the_contract() {
        for (nova, task, want) in [
            ("BUILD", None, VmStatus::Build),
            ("ACTIVE", None, VmStatus::Active),
            ("ACTIVE", Some("deleting"), VmStatus::Deleted),
            ("ERROR", Some("deleting"), VmStatus::Deleted),
            ("REBOOT", Some("rebooting"), VmStatus::Active),
            ("UNKNOWN", None, VmStatus::Active),
            ("ERROR", None, VmStatus::Error),
            ("SHUTOFF", None, VmStatus::Shutoff),
            ("SUSPENDED", None, VmStatus::Shutoff),
            ("SHELVED_OFFLOADED", None, VmStatus::Shutoff),
            ("SOFT_DELETED", None, VmStatus::Deleted),
            ("SOMETHING_NEW", None, VmStatus::Error),
        ] {
            assert_eq!(vm_status(nova, task), want, "{nova} {task:?}");
        }
    }

    #[test]
    fn the_vm_hides_the_drivers_keys_and_keeps_microseconds() {
        let vm = to_vm(&server("BUILD"));
        assert_eq!(vm.image, "tomcat-web");
        assert_eq!(vm.metadata.keys().collect::<Vec<_>>(), ["autoscaler:group"]);
        assert_eq!(
            vm.created_at.to_rfc3339(),
            "2026-12-02T04:35:34.123456+00:00"
        );
        assert_eq!(
            (vm.status, vm.fault, vm.address),
            (VmStatus::Build, None, None)
        );
    }

    #[test]
    fn an_error_carries_the_fault() {
        let mut s = server("ERROR");
        s.fault = Some(Fault {
            code: 500,
            message: "No valid host was found.".into(),
            details: Some("  ".into()),
        });
        assert_eq!(
            to_vm(&s).fault.as_deref(),
            Some("No valid host was found. (code 500)")
        );
        s.fault = None;
        assert_eq!(
            to_vm(&s).fault.as_deref(),
            Some("Nova reports status ERROR without a fault")
        );
    }

    #[test]
    fn the_address_is_the_fixed_one_on_the_spec_network() {
        let addr = |addr: &str, version, kind: &str| Address {
            addr: addr.into(),
            version,
            kind: Some(kind.into()),
        };
        let mut s = server("ACTIVE");
        s.addresses = BTreeMap::from([
            (
                "a-net".to_owned(),
                vec![addr("fd00::5", 6, "fixed"), addr("10.0.0.5", 4, "fixed")],
            ),
            (
                "web".to_owned(),
                vec![
                    addr("172.24.4.9", 4, "floating"),
                    addr("192.168.1.7", 4, "fixed"),
                ],
            ),
        ]);
        assert_eq!(address(&s, Some("web")), "192.168.1.7".parse().ok());
        assert_eq!(address(&s, None), "10.0.0.5".parse().ok());
        assert_eq!(address(&s, Some("missing")), "10.0.0.5".parse().ok());
        s.addresses.clear();
        s.access_ipv4 = Some("".into());
        assert_eq!(address(&s, None), None);
        s.access_ipv4 = Some("203.0.113.4".into());
        assert_eq!(address(&s, None), "203.0.113.4".parse().ok());
    }
}
