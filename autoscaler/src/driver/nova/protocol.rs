//! The compute API's JSON that the openstack crate (0.6) cannot write or read, as far as
//! the driver needs it, at the microversion it pins ([`MICROVERSION`]): server create
//! (with `tags`, and `networks` as `none` or `auto`), server details (with `fault`, `tags`,
//! the `OS-EXT-STS` fields and, for admins, `OS-EXT-SRV-ATTR:user_data`), pages of
//! servers and error bodies. Flavors, images, networks and server deletes go through the
//! crate. Pure: serde types and the functions that read an error body.
//!
//! Sources: the compute API reference (servers, flavors, images) and the answers of the
//! Zed Nova of `tools/nova-fixture`, checked by the integration tests.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The compute microversion of every server call: 2.37 lets a create say
/// `"networks": "none"`, 2.52 takes `tags` in the create request; both hold in every Nova
/// since Queens. At 2.52 details carry `tags`, `fault` (for `ERROR`), and, for admins,
/// `OS-EXT-SRV-ATTR:user_data` (2.3).
pub const MICROVERSION: (u16, u16) = (2, 52);

/// `POST /servers`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateRoot {
    pub server: Create,
}

#[derive(Debug, Clone, Serialize)]
pub struct Create {
    pub name: String,
    #[serde(rename = "imageRef")]
    pub image_ref: String,
    #[serde(rename = "flavorRef")]
    pub flavor_ref: String,
    pub networks: Networks,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// Base64 of the user data (Nova's limit: 65535 bytes of base64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

/// The `networks` of a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Networks {
    /// `"none"` or `"auto"` (2.37).
    Keyword(String),
    /// `[{"uuid": ...}]`.
    Uuids(Vec<NetworkUuid>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkUuid {
    pub uuid: String,
}

/// The answer to `POST /servers`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedRoot {
    pub server: Created,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: String,
}

/// `GET /servers/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerRoot {
    pub server: Server,
}

/// `GET /servers/detail`: one page.
#[derive(Debug, Clone, Deserialize)]
pub struct ServersPage {
    pub servers: Vec<Server>,
    /// `rel = next` carries the next page's URL when the page is full.
    #[serde(default)]
    pub servers_links: Vec<Link>,
}

impl ServersPage {
    /// The marker of the next page: the last server's id, when Nova says there is one.
    pub fn next_marker(&self) -> Option<&str> {
        let has_next = self.servers_links.iter().any(|l| l.rel == "next");
        has_next
            .then(|| self.servers.last().map(|s| s.id.as_str()))
            .flatten()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub rel: String,
    #[serde(default)]
    pub href: String,
}

/// A server's details, what the driver reads of them.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    /// By network name.
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Address>>,
    #[serde(rename = "accessIPv4", default)]
    pub access_ipv4: Option<String>,
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Only admins see it; base64.
    #[serde(rename = "OS-EXT-SRV-ATTR:user_data", default)]
    pub user_data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Address {
    pub addr: String,
    #[serde(default)]
    pub version: u8,
    /// `fixed` or `floating`.
    #[serde(rename = "OS-EXT-IPS:type", default)]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    /// Admins only: the traceback or the reason in full.
    #[serde(default)]
    pub details: Option<String>,
}

/// The message of a compute error body, `{"badRequest": {"code": 400, "message": "..."}}`
/// (any one key), or the body itself, shortened, when it is not such JSON.
pub fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Inner {
        message: Option<String>,
    }
    let parsed: Option<BTreeMap<String, Inner>> = serde_json::from_str(body).ok();
    if let Some(message) = parsed
        .and_then(|map| map.into_values().next())
        .and_then(|inner| inner.message)
    {
        return message;
    }
    let text = body.trim();
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Whether a 403 or 413 refusal is a quota or rate limit (Nova answers "Quota exceeded for
/// instances: ..." with 403 since 2.x, `overLimit` 413 in older releases and for rate limits).
pub fn is_over_limit(status: u16, message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    status == 413 || status == 429 || (status == 403 && lower.contains("quota"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_is_what_nova_takes() {
        let body = CreateRoot {
            server: Create {
                name: "shop-web-1".into(),
                image_ref: "img".into(),
                flavor_ref: "fl".into(),
                networks: Networks::Keyword("none".into()),
                key_name: None,
                metadata: BTreeMap::from([("autoscaler:group".into(), "shop".into())]),
                tags: vec!["autoscaler".into()],
                user_data: Some("aGk=".into()),
            },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["server"]["networks"], "none");
        assert_eq!(json["server"]["imageRef"], "img");
        assert_eq!(json["server"]["flavorRef"], "fl");
        assert_eq!(json["server"]["tags"][0], "autoscaler");
        assert!(json["server"].get("key_name").is_none());
        let uuids = Networks::Uuids(vec![NetworkUuid { uuid: "n1".into() }]);
        assert_eq!(
            serde_json::to_value(uuids).unwrap(),
            serde_json::json!([{"uuid": "n1"}])
        );
    }

    #[test]
    fn server_details_as_the_fixture_answers() {
        // Trimmed from a real answer of the Zed fixture, as admin.
        let text = r#"{"server": {"id": "616c", "name": "probe-1", "status": "ACTIVE",
            "metadata": {"a": "b"}, "created": "2026-12-02T04:35:35Z", "addresses": {},
            "accessIPv4": "", "OS-EXT-STS:task_state": null, "tags": ["autoscaler"],
            "OS-EXT-SRV-ATTR:user_data": "aGVsbG8=", "flavor": {"vcpus": 1}}}"#;
        let server = serde_json::from_str::<ServerRoot>(text).unwrap().server;
        assert_eq!(server.status, "ACTIVE");
        assert_eq!(server.task_state, None);
        assert_eq!(server.tags, ["autoscaler"]);
        assert_eq!(server.user_data.as_deref(), Some("aGVsbG8="));
        assert_eq!(server.access_ipv4.as_deref(), Some(""));
        let page: ServersPage = serde_json::from_str(
            r#"{"servers": [{"id": "a", "name": "n", "status": "BUILD",
                "created": "2026-12-02T04:35:35Z"}],
                "servers_links": [{"rel": "next", "href": "http://x/servers/detail?marker=a"}]}"#,
        )
        .unwrap();
        assert_eq!(page.next_marker(), Some("a"));
        let last: ServersPage = serde_json::from_str(r#"{"servers": []}"#).unwrap();
        assert_eq!(last.next_marker(), None);
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_message(
                r#"{"badRequest": {"code": 400, "message": "Flavor nope could not be found."}}"#
            ),
            "Flavor nope could not be found."
        );
        assert_eq!(
            error_message("<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
        assert_eq!(error_message(&"x".repeat(400)).len(), 303);
        assert!(is_over_limit(
            403,
            "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
        ));
        assert!(is_over_limit(413, "Maximum number of ports exceeded"));
        assert!(is_over_limit(429, ""));
        assert!(!is_over_limit(
            403,
            "Policy doesn't allow os_compute_api:servers:create"
        ));
        assert!(!is_over_limit(400, "quota"));
    }
}
