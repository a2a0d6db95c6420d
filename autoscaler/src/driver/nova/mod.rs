//! The `nova` cloud driver: a VM is an OpenStack Nova server, booted, found and deleted
//! through the compute API, with the openstack crate (0.6) wherever it can serve and
//! hand-written JSON over the same session where it cannot ([`session`]).
//!
//! # What the openstack crate 0.6 does, and what it cannot
//!
//! Through the crate: flavors (`Cloud::get_flavor`, `list_flavors`), images in the image
//! service (`find_images`, `get_image`, `list_images`; [`image`]), networks in the network
//! service (`find_networks`), and the server's delete (`Server::delete`). Hand-written
//! ([`protocol`], at compute microversion 2.52, [`protocol::MICROVERSION`]), because the
//! crate 0.6 cannot:
//! - **create**: its `NewServer` has no `tags` and sends no microversion (tags in a create
//!   need 2.52), and its networks are a list (no `"none"` or `"auto"`, 2.37);
//! - **list**: its `ServerQuery` has no `tags` filter (2.26), the way a group is found;
//! - **get**: its `Server` (read at 2.47 at most) carries no `tags`, `fault` or
//!   `OS-EXT-STS:task_state`, which say whose the server is, why it failed and that it is
//!   being deleted (and its `get_server` falls back to a look-up by name on a 404).
//!
//! # A VM in Nova
//!
//! - **Boot**: the spec's image and flavor by name or id ([`image`]), its network (`none`,
//!   `auto`, an id or a name; no network: `auto`), its key pair, its metadata plus the
//!   driver's own keys ([`status`]: the image's name, the network, the boot time in
//!   microseconds), the tags [`TAG`] and [`group_tag`], and its user data, base64. On Nova the user data is
//!   the cloud-config of `crate::conductor::vm_spec`: cloud-init writes
//!   `/etc/autoscaler/agent.conf` and runs `systemctl enable --now
//!   autoscaler-agent.service` (the unit the image carries, `etc/systemd/`).
//! - **Groups**: Nova cannot filter a list on metadata. `list` asks for the servers
//!   with both tags, [`TAG`] and the group's ([`group_tag`]), then keeps those whose
//!   metadata names the group (a hashed long name that collides, or a server someone else
//!   tagged, is never reported). `list_all` asks for [`TAG`] alone. A server without
//!   [`TAG`] is not the autoscaler's: no call reports it and `delete` leaves it alone.
//! - **Ids** are Nova's server UUIDs: unique, never reused, stable across restarts. An id
//!   that is not a UUID is unknown (`get` is `None`, `delete` is `Ok`) without a request.
//! - **Statuses**: see [`status`] (Nova's `deleting` task state shows as `DELETED`).
//! - **Addresses**: the fixed address on the spec's network, else the first fixed address
//!   ([`status::address`]). A server without one (Nova's fake virt driver gives none)
//!   reports `None`; the conductor then uses the address the VM's agent announces in its
//!   heartbeats (`doc/nova.md`).
//! - **Delete** returns once Nova answers 404 for the server (polled every
//!   [`DELETE_POLL`], up to `[nova] delete_timeout`), so its quota is free again.
//!
//! # Errors
//!
//! Unknown image, flavor or network: a clear error naming it (and the images or flavors
//! there are), found before anything is created, so nothing is left behind. Nova's refusals
//! carry the call, the HTTP status and Nova's message ([`DriverError::Api`]); quota and
//! rate limits are [`DriverError::OverLimit`] (retryable: deleting a VM frees quota; the
//! conductor notifies `autoscaler.vm.boot_failed` and backs off). No answer:
//! [`DriverError::Unreachable`] (retryable) after the session's own retries. A create whose
//! answer was lost is not sent again: the driver looks for the server by its name, which is
//! unique, and returns it if Nova created it (no duplicate, no orphan).
//!
//! # Compute API calls per operation
//!
//! | Operation | Calls |
//! |---|---|
//! | `boot` | `POST /servers` (2.52). Before it, when not found in the last 60 s, through the crate: the image service's `GET /v2/images?name=N&limit=1&sort=created_at:desc` (`GET /v2/images/{id}` when N is a UUID and no name matched; `GET /v2/images` pages for the error when unknown); `GET /flavors/{ref}` (404: `GET /flavors`, then `GET /flavors/{id}`); a network name: the network service's `GET /v2.0/networks?name=N&limit=2`; each service's version discovery (`GET` of its endpoint) once per session. After a lost answer: `GET /servers/detail?name=^NAME$&tags=autoscaler`. |
//! | `get` | `GET /servers/{id}` |
//! | `list` | `GET /servers/detail?tags=autoscaler,group:GROUP&limit=1000`, and one more per further page (`marker=`) |
//! | `list_all` | `GET /servers/detail?tags=autoscaler&limit=1000`, and one more per page |
//! | `delete` | `GET /servers/{id}` (a server that is not the autoscaler's is left alone), then through the crate `GET /servers/{id}` (2.47) and `DELETE /servers/{id}`, then `GET /servers/{id}` every 250 ms until 404 (the crate's two again every 5 s if Nova no longer shows the delete under way) |
//!
//! Every call may be repeated by the driver's retries (GET and DELETE only): the
//! hand-written ones by `Compute::call`, the crate's by `Compute::crate_call`.

pub mod image;
pub mod protocol;
pub mod session;
pub mod status;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{SubsecRound, Utc};
use reqwest::Method;
use tokio::{sync::OnceCell, time::Instant};
use tracing::{info, warn};

use self::{
    image::{looks_like_uuid, Resolver},
    protocol::{Create, CreateRoot, CreatedRoot, ServerRoot, ServersPage},
    session::{Call, Compute, Retry, Settings},
    status::{to_vm, META_BOOTED_AT, META_IMAGE, META_NETWORK},
};
use super::{CloudDriver, DriverError, Vm, VmId, VmSpec, VmStatus, META_GROUP};
use crate::conf::Config;

/// The tag on every server the autoscaler boots: what `list_all` asks Nova for.
pub const TAG: &str = "autoscaler";
/// Nova's longest tag.
const TAG_MAX: usize = 60;

/// The tag naming the server's group, which `list` asks Nova for: `group:<name>`, or, for
/// a name too long for Nova's 60 characters, its first 37 characters, `~` and 16 hex digits
/// of its FNV-1a hash (template names have no `/` or `,`, which tags may not hold).
pub fn group_tag(group: &str) -> String {
    let tag = format!("group:{group}");
    if tag.len() <= TAG_MAX {
        return tag;
    }
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let head: String = group.chars().take(37).collect();
    format!("group:{head}~{hash:016x}")
}
/// How often a delete asks whether the server is gone.
pub const DELETE_POLL: Duration = Duration::from_millis(250);
/// How often a delete sends `DELETE` again when Nova no longer shows it under way.
const DELETE_RESEND: Duration = Duration::from_secs(5);
/// Servers per page of a list (Nova's default `max_limit`).
const PAGE: &str = "1000";

/// The nova driver; see the module documentation.
pub struct NovaDriver {
    settings: Settings,
    timeout: Duration,
    connect_retries: u32,
    status_code_retries: u32,
    delete_timeout: Duration,
    /// Opened at the first call (a clouds.yaml cloud is read then, Keystone asked then).
    compute: OnceCell<Compute>,
    resolver: Resolver,
}

impl NovaDriver {
    /// The driver for `[nova]`; the options are checked now, nothing is sent yet.
    pub fn from_config(config: &Config) -> Result<Self, DriverError> {
        let nova = &config.nova;
        Ok(NovaDriver {
            settings: session::settings(nova)?,
            timeout: nova.timeout,
            connect_retries: nova.connect_retries,
            status_code_retries: nova.status_code_retries,
            delete_timeout: nova.delete_timeout,
            compute: OnceCell::new(),
            resolver: Resolver::default(),
        })
    }

    async fn compute(&self) -> Result<&Compute, DriverError> {
        self.compute
            .get_or_try_init(|| async {
                Ok(Compute {
                    session: session::open(&self.settings).await?,
                    timeout: self.timeout,
                    connect_retries: self.connect_retries,
                    status_code_retries: self.status_code_retries,
                })
            })
            .await
    }

    /// Every server with the `tags` (and whose name matches the regular expression
    /// `name`, when given), all pages, as VMs whose metadata satisfies `keep`, oldest
    /// first (ties by id).
    async fn servers(
        &self,
        tags: &str,
        name: Option<&str>,
        keep: impl Fn(&Vm) -> bool,
    ) -> Result<Vec<Vm>, DriverError> {
        let compute = self.compute().await?;
        let mut vms = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut call = Call::get(&["servers", "detail"])
                .query("tags", tags)
                .query("limit", PAGE);
            if let Some(name) = name {
                call = call.query("name", name);
            }
            if let Some(m) = &marker {
                call = call.query("marker", m.clone());
            }
            let answer = compute.call(&call).await?;
            if !answer.is_success() {
                return Err(answer.error(&call));
            }
            let page: ServersPage = answer.json(&call)?;
            vms.extend(page.servers.iter().map(to_vm).filter(|vm| keep(vm)));
            match page.next_marker() {
                Some(next) if Some(next) != marker.as_deref() => marker = Some(next.to_owned()),
                _ => break,
            }
        }
        vms.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(vms)
    }

    /// The server, when it is the autoscaler's.
    async fn server(&self, id: &VmId) -> Result<Option<Vm>, DriverError> {
        if !looks_like_uuid(&id.0) {
            return Ok(None);
        }
        let compute = self.compute().await?;
        let call = Call::get(&["servers", &id.0]);
        let answer = compute.call(&call).await?;
        match answer.status {
            404 => Ok(None),
            _ if answer.is_success() => {
                let server = answer.json::<ServerRoot>(&call)?.server;
                let ours = server.tags.iter().any(|t| t == TAG);
                let vm = to_vm(&server);
                Ok((ours && vm.group().is_some()).then_some(vm))
            }
            _ => Err(answer.error(&call)),
        }
    }

    /// After a create whose answer was lost: the server Nova created under that name, if
    /// it did (names are unique: `<group>-<role>-<8 hex>`).
    async fn created_anyway(&self, spec: &VmSpec) -> Option<Vm> {
        let group = spec.metadata.get(META_GROUP)?;
        let exact = format!("^{}$", regex_escape(&spec.name));
        let found = self
            .servers(TAG, Some(&exact), |vm| {
                vm.name == spec.name && vm.group() == Some(group)
            })
            .await;
        match found {
            Ok(vms) => vms.into_iter().next(),
            Err(error) => {
                warn!(%error, vm = %spec.name, "cannot tell whether Nova created the server");
                None
            }
        }
    }
}

/// Asks Nova to delete server `id`, through the openstack crate: its `Server::delete`,
/// on the server the crate loads first (`GET /servers/{id}` at 2.47; the crate has no
/// delete by id). Gone already: `Ok`.
async fn send_delete(compute: &Compute, id: &VmId) -> Result<(), DriverError> {
    let cloud = compute.cloud();
    let label = format!("DELETE /servers/{}", id.0);
    let server = match compute
        .crate_call(&label, Retry::Idempotent, || cloud.get_server(&id.0))
        .await
    {
        Ok(server) => server,
        Err(e) if e.kind() == osauth::ErrorKind::ResourceNotFound => return Ok(()),
        Err(e) => return Err(session::osauth_error(label, &e)),
    };
    match compute
        .crate_call(&label, Retry::Idempotent, || server.clone().delete())
        .await
    {
        // The crate's waiter is not used: `delete` polls with the driver's own rules.
        Ok(_waiter) => Ok(()),
        Err(e) if e.kind() == osauth::ErrorKind::ResourceNotFound => Ok(()),
        Err(e) => Err(session::osauth_error(label, &e)),
    }
}

/// `text` with every character but letters, digits, `-` and `_` escaped, for Nova's
/// name filter (a regular expression).
pub fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if !(c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl CloudDriver for NovaDriver {
    fn name(&self) -> &'static str {
        "nova"
    }

    async fn boot(&self, spec: VmSpec) -> Result<Vm, DriverError> {
        if spec.name.trim().is_empty() {
            return Err(DriverError::InvalidSpec {
                reason: "the name is empty".to_owned(),
            });
        }
        let Some(group) = spec.metadata.get(META_GROUP).filter(|g| !g.is_empty()) else {
            return Err(DriverError::InvalidSpec {
                reason: format!("the metadata has no {META_GROUP:?} key naming the VM's group"),
            });
        };
        let group = group.clone();
        if group.contains([',', '/']) {
            return Err(DriverError::InvalidSpec {
                reason: format!("the group {group:?} holds a ',' or '/', which Nova tags cannot"),
            });
        }
        let Some(flavor) = spec.flavor.as_deref().filter(|f| !f.is_empty()) else {
            return Err(DriverError::InvalidSpec {
                reason: "no flavor: Nova needs one (set flavor in the template)".to_owned(),
            });
        };
        let compute = self.compute().await?;
        let image_id = self.resolver.image(compute, &spec.image).await?;
        let flavor_id = self.resolver.flavor(compute, flavor).await?;
        let networks = self
            .resolver
            .networks(compute, spec.network.as_deref())
            .await?;
        let booted_at = Utc::now().trunc_subsecs(6);
        let mut metadata = spec.metadata.clone();
        metadata.insert(META_IMAGE.to_owned(), spec.image.clone());
        metadata.insert(
            META_BOOTED_AT.to_owned(),
            booted_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        if let Some(network) = &spec.network {
            metadata.insert(META_NETWORK.to_owned(), network.clone());
        }
        let body = CreateRoot {
            server: Create {
                name: spec.name.clone(),
                image_ref: image_id,
                flavor_ref: flavor_id,
                networks,
                key_name: spec.key_name.clone().filter(|k| !k.is_empty()),
                metadata,
                tags: vec![TAG.to_owned(), group_tag(&group)],
                user_data: (!spec.user_data.is_empty())
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&spec.user_data)),
            },
        };
        let call = Call {
            method: Method::POST,
            path: vec!["servers".to_owned()],
            query: Vec::new(),
            body: Some(
                serde_json::to_value(&body).map_err(|e| DriverError::InvalidSpec {
                    reason: e.to_string(),
                })?,
            ),
            version: protocol::MICROVERSION,
            retry: Retry::Never,
        };
        let answer = match compute.call(&call).await {
            Ok(answer) if answer.status < 500 => answer,
            lost => {
                // No answer, or a server error: Nova may have created it all the same.
                if let Some(vm) = self.created_anyway(&spec).await {
                    warn!(vm = %vm.name, id = %vm.id, "the create's answer was lost, but Nova created the server");
                    return Ok(vm);
                }
                return Err(match lost {
                    Ok(answer) => answer.error(&call),
                    Err(e) => e,
                });
            }
        };
        if !answer.is_success() {
            // An image or flavor deleted since it was found: look again next time.
            self.resolver.forget();
            return Err(answer.error(&call));
        }
        let created: CreatedRoot = answer.json(&call)?;
        info!(vm = %spec.name, id = %created.server.id, "server created");
        Ok(Vm {
            id: VmId(created.server.id),
            name: spec.name,
            image: spec.image,
            status: VmStatus::Build,
            address: None,
            metadata: spec.metadata,
            created_at: booted_at,
            fault: None,
        })
    }

    async fn get(&self, id: &VmId) -> Result<Option<Vm>, DriverError> {
        self.server(id).await
    }

    async fn list(&self, group: &str) -> Result<Vec<Vm>, DriverError> {
        let tags = format!("{TAG},{}", group_tag(group));
        self.servers(&tags, None, |vm| vm.group() == Some(group))
            .await
    }

    async fn list_all(&self) -> Result<Vec<Vm>, DriverError> {
        self.servers(TAG, None, |vm| vm.group().is_some()).await
    }

    async fn delete(&self, id: &VmId) -> Result<(), DriverError> {
        if self.server(id).await?.is_none() {
            return Ok(());
        }
        let compute = self.compute().await?;
        let send = || send_delete(compute, id);
        send().await?;
        let start = Instant::now();
        let mut last_sent = start;
        loop {
            tokio::time::sleep(DELETE_POLL).await;
            let Some(vm) = self.server(id).await? else {
                return Ok(());
            };
            if start.elapsed() >= self.delete_timeout {
                return Err(DriverError::DeleteTimedOut {
                    id: id.clone(),
                    waited: self.delete_timeout,
                    status: vm.status.to_string(),
                });
            }
            if vm.status != VmStatus::Deleted && last_sent.elapsed() >= DELETE_RESEND {
                // Nova dropped the delete (a compute host that failed it): ask again.
                send().await?;
                last_sent = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 7: a create whose answer is lost is not sent again; the server Nova made
    /// anyway is found by its name and returned (no duplicate, no orphan).
    #[tokio::test]
    async fn a_create_whose_answer_is_lost_returns_the_server_nova_made() {
        use std::sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        };
        let creates = Arc::new(AtomicUsize::new(0));
        let seen = creates.clone();
        let base = session::fake_nova(move |head| {
            let line = head.lines().next().unwrap_or_default().to_owned();
            if line.starts_with("POST /v2.1/servers ") {
                seen.fetch_add(1, Ordering::SeqCst);
                return Some((
                    504,
                    r#"{"computeFault": {"message": "gateway timeout"}}"#.into(),
                ));
            }
            // The image service: its version document, then the look-up by name.
            if line.starts_with("GET /image ") {
                return Some((
                    300,
                    r#"{"versions": [{"id": "v2.9", "status": "CURRENT",
                        "links": [{"rel": "self", "href": "{origin}/image/v2/"}]}]}"#
                        .into(),
                ));
            }
            if line.starts_with("GET /image/v2/images?") && line.contains("name=web") {
                return Some((
                    200,
                    r#"{"images": [{"id": "img-1", "name": "web", "status": "active",
                        "visibility": "public", "created_at": "2026-12-02T04:35:35Z",
                        "updated_at": "2026-12-02T04:35:35Z"}]}"#
                        .into(),
                ));
            }
            if line.starts_with("GET /v2.1/flavors/small ") {
                return Some((
                    200,
                    r#"{"flavor": {"id": "small", "name": "small", "vcpus": 1, "ram": 512,
                        "disk": 1, "swap": "", "OS-FLV-EXT-DATA:ephemeral": 0,
                        "os-flavor-access:is_public": true, "rxtx_factor": 1.0,
                        "extra_specs": {}, "links": []}}"#
                        .into(),
                ));
            }
            if line.starts_with("GET /v2.1/servers/detail?") && line.contains("shop-web-1") {
                return Some((
                    200,
                    serde_json::json!({"servers": [{"id": "11111111-2222-3333-4444-555555555555",
                        "name": "shop-web-1", "status": "BUILD", "created": "2026-12-02T04:35:35Z",
                        "tags": ["autoscaler", "group:shop"],
                        "metadata": {META_GROUP: "shop", "autoscaler:nova:image": "web"}}]})
                    .to_string(),
                ));
            }
            Some((404, r#"{"itemNotFound": {"message": "no"}}"#.into()))
        })
        .await;
        let config = crate::conf::load_from_str(
            "a.conf",
            &format!(
                "[nova]\nauth_type = admin_token\nendpoint = {base}\ntoken = a:b\n\
                 status_code_retries = 3\nimage_endpoint_override = {}/image\n",
                base.trim_end_matches("/v2.1")
            ),
        )
        .unwrap()
        .config;
        let driver = NovaDriver::from_config(&config).unwrap();
        let spec = VmSpec {
            name: "shop-web-1".into(),
            image: "web".into(),
            flavor: Some("small".into()),
            network: Some("none".into()),
            metadata: [(META_GROUP.to_owned(), "shop".to_owned())].into(),
            ..VmSpec::default()
        };
        let vm = driver.boot(spec).await.unwrap();
        assert_eq!(vm.id.0, "11111111-2222-3333-4444-555555555555");
        assert_eq!(
            (vm.name.as_str(), vm.status),
            ("shop-web-1", VmStatus::Build)
        );
        assert_eq!(creates.load(Ordering::SeqCst), 1, "the create is sent once");
    }

    #[test]
    fn group_tags_fit_novas_limit() {
        assert_eq!(group_tag("shop"), "group:shop");
        let long = "a".repeat(63);
        let tag = group_tag(&long);
        assert!(tag.len() <= TAG_MAX, "{tag}");
        assert!(
            tag.starts_with(&format!("group:{}~", "a".repeat(37))),
            "{tag}"
        );
        assert_eq!(tag, group_tag(&long));
        assert_ne!(tag, group_tag(&format!("{}b", "a".repeat(62))));
    }

    #[test]
    fn names_are_escaped_for_novas_regex_filter() {
        assert_eq!(regex_escape("shop-web_1"), "shop-web_1");
        assert_eq!(regex_escape("a.b"), "a\\.b");
        assert_eq!(regex_escape("x$"), "x\\$");
    }

    #[test]
    fn the_options_are_checked_when_the_driver_is_built() {
        let config = crate::conf::load_from_str(
            "a.conf",
            "[compute]\ndriver = nova\n[nova]\nauth_type = admin_token\n\
             endpoint = http://127.0.0.1:8774/v2.1\n",
        )
        .unwrap()
        .config;
        let err = NovaDriver::from_config(&config).err().unwrap();
        assert_eq!(
            err.to_string(),
            "[nova] token = \"\": auth_type = admin_token needs it"
        );
    }
}
