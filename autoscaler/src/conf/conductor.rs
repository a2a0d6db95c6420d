//! `[conductor]`: limits of the conductor, the service that scales the groups, and their
//! typed form, [`ConductorOpts`].

use std::time::Duration;

use super::opt::{OptDecl, OptKind, SectionDecl, SectionValues};

pub const SECTION: SectionDecl = SectionDecl {
    name: "conductor",
    help: "The conductor: the service that watches the groups and scales them.",
    opts: &[
        OptDecl::new(
            "max_vms_ceiling",
            OptKind::Integer {
                min: Some(1),
                max: Some(10_000),
            },
            Some("20"),
            "The highest max_vms a template may ask for; a template asking for more is \
             refused.",
        ),
        OptDecl::new(
            "telemetry_queue_length",
            OptKind::Integer {
                min: Some(10),
                max: Some(1_000_000),
            },
            Some("10000"),
            "Bound of the conductor's queue of heartbeats and metrics on the broker, in \
             messages; beyond it the broker drops the oldest (RabbitMQ's x-max-length with \
             drop-head; see them with rabbitmqctl list_queues), so a flood cannot exhaust \
             the broker's or the conductor's memory.",
        ),
        OptDecl::new(
            "evaluation_interval",
            OptKind::Seconds {
                min: 0.1,
                max: Some(60.0),
            },
            Some("1"),
            "Seconds between two passes of the control loop: the cloud's view of every \
             group is refreshed, VMs are booted, added to or drained from the splitter's \
             pool, and lost VMs are noticed.",
        ),
        OptDecl::new(
            "heartbeat_timeout",
            OptKind::Seconds {
                min: 0.5,
                max: Some(600.0),
            },
            Some("3"),
            "A VM whose heartbeats stop for this long has failed, provided the conductor's \
             own broker link is up and other VMs' heartbeats still arrive.",
        ),
        OptDecl::new(
            "not_serving_timeout",
            OptKind::Seconds {
                min: 0.0,
                max: Some(3600.0),
            },
            Some("2"),
            "A web VM whose server answered its agent's check before and has stopped \
             answering for this long has failed (the server died, its agent lives): it \
             leaves the pool at once, and is deleted and replaced after this time. A VM \
             whose server never answered is still booting until boot_timeout. The agent \
             checks once per [agent] heartbeat_interval, so a death is acted on within \
             about this time plus two intervals.",
        ),
        OptDecl::new(
            "drain_timeout",
            OptKind::Seconds {
                min: 0.0,
                max: Some(3600.0),
            },
            Some("30"),
            "Longest wait for a draining VM's requests in flight to finish (or for the \
             splitter's graceful stop) before the VM is deleted anyway.",
        ),
        OptDecl::new(
            "list_timeout",
            OptKind::Seconds {
                min: 0.1,
                max: Some(3600.0),
            },
            Some("10"),
            "Longest wait for the cloud to list a group's VMs. The listing runs apart from \
             the control loop, which goes on answering the CLI and taking heartbeats; a \
             group is decided for only when its listing comes back, and is listed again \
             at the next pass once this time has passed without an answer.",
        ),
        OptDecl::new(
            "cloud_call_timeout",
            OptKind::Seconds {
                min: 1.0,
                max: Some(7200.0),
            },
            Some("600"),
            "Longest wait for the cloud to boot or delete a VM (a Nova delete waits for the \
             server to be gone, up to [nova] delete_timeout: keep this above it). Past it \
             the call counts as failed and the group asks again; a boot given up on may \
             still create its VM, which the next listing then shows.",
        ),
        OptDecl::new(
            "boot_timeout",
            OptKind::Seconds {
                min: 1.0,
                max: Some(7200.0),
            },
            Some("300"),
            "A VM that is not ACTIVE and heartbeating this long after it was asked for \
             has failed: it stops counting as capacity, is deleted and replaced.",
        ),
        OptDecl::new(
            "lease_time",
            OptKind::Seconds {
                min: 2.0,
                max: Some(600.0),
            },
            Some("10"),
            "How long a conductor's hold on a group (its lease in the database) lasts \
             without renewal. The owner renews it at every pass of the control loop; when a \
             conductor dies, another takes its groups over once their leases have expired, \
             so this bounds how long a site goes unsteered. Keep it well above \
             evaluation_interval.",
        ),
        OptDecl::new(
            "rpc_allowed_users",
            OptKind::List { choices: &[] },
            Some(""),
            "Broker users whose requests (autoscaler-manage) the conductor carries out: \
             the AMQP user_id property of a request, which RabbitMQ checks against the \
             login that published it. Requests from any other user are dropped and \
             counted (rpc_not_allowed), unanswered. Empty: the users of [DEFAULT] \
             transport_url, the conductor's own login.",
        ),
    ],
};

/// `[conductor]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorOpts {
    pub max_vms_ceiling: u32,
    /// Messages.
    pub telemetry_queue_length: usize,
    pub evaluation_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub not_serving_timeout: Duration,
    pub drain_timeout: Duration,
    pub list_timeout: Duration,
    pub cloud_call_timeout: Duration,
    pub boot_timeout: Duration,
    pub lease_time: Duration,
    /// As written; empty means the conductor's own users
    /// ([`crate::conf::Config::rpc_allowed_users`]).
    pub rpc_allowed_users: Vec<String>,
}

impl ConductorOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        ConductorOpts {
            max_vms_ceiling: v.int("max_vms_ceiling"),
            telemetry_queue_length: v.int("telemetry_queue_length"),
            evaluation_interval: v.duration("evaluation_interval"),
            heartbeat_timeout: v.duration("heartbeat_timeout"),
            not_serving_timeout: v.duration("not_serving_timeout"),
            drain_timeout: v.duration("drain_timeout"),
            list_timeout: v.duration("list_timeout"),
            cloud_call_timeout: v.duration("cloud_call_timeout"),
            boot_timeout: v.duration("boot_timeout"),
            lease_time: v.duration("lease_time"),
            rpc_allowed_users: v.list("rpc_allowed_users"),
        }
    }
}
