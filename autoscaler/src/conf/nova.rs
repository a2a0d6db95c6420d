//! `[nova]`: how the `nova` cloud driver reaches and authenticates to OpenStack Compute, and
//! its typed form, [`NovaOpts`]. Option names are keystoneauth's (`auth_type`, `auth_url`,
//! `username`, `password`, `project_name`, `user_domain_name`, `project_domain_name`,
//! `region_name`, `interface`, `endpoint_override`; `endpoint` and `token` of its
//! `admin_token` plugin; `cafile`, `timeout`, `connect_retries`, `status_code_retries` of its
//! session and adapter; `image_endpoint_override` and `network_endpoint_override` as
//! openstacksdk's clouds.yaml spells them), so the DevStack plugin writes this section with `iniset` as DevStack
//! writes nova.conf's `[placement]` or `[cinder]` (`cafile` with tls-proxy). `cloud` picks a
//! clouds.yaml entry
//! instead. Which options a given `auth_type` needs is checked when the driver is built
//! (`crate::driver::nova`), not here: a conductor on the local driver never reads them.
//!
//! The names are a contract with the DevStack plugin: keep them stable.

use std::{fmt, path::PathBuf, time::Duration};

use super::opt::{Choice, OptDecl, OptKind, SectionDecl, SectionValues};

/// keystoneauth's plugin names the driver understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// Keystone v3 password (`password` and `v3password` are the same here).
    Password,
    /// A fixed token sent as `X-Auth-Token` to a fixed `endpoint`, no Keystone
    /// (keystoneauth's `admin_token`; Nova's `noauth2` test deployments take
    /// `user:project` as the token).
    AdminToken,
    /// No authentication at all, a fixed `endpoint` (keystoneauth's `none`).
    None,
}

impl AuthType {
    pub fn from_name(name: &str) -> Option<AuthType> {
        match name {
            "password" | "v3password" => Some(AuthType::Password),
            "admin_token" => Some(AuthType::AdminToken),
            "none" => Some(AuthType::None),
            _ => None,
        }
    }
}

const AUTH_TYPES: &[Choice] = &[
    Choice {
        value: "password",
        help: "Keystone v3 with auth_url, username, password, user_domain_name, \
               project_name and project_domain_name",
    },
    Choice {
        value: "v3password",
        help: "the same as password",
    },
    Choice {
        value: "admin_token",
        help: "a fixed token and endpoint, no Keystone (test deployments with Nova's \
               noauth2, whose token is user:project)",
    },
    Choice {
        value: "none",
        help: "no authentication, a fixed endpoint",
    },
];

const INTERFACES: &[Choice] = &[
    Choice {
        value: "public",
        help: "the catalog's public endpoint",
    },
    Choice {
        value: "internal",
        help: "the catalog's internal endpoint",
    },
    Choice {
        value: "admin",
        help: "the catalog's admin endpoint",
    },
];

pub const SECTION: SectionDecl = SectionDecl {
    name: "nova",
    help: "The nova cloud driver ([compute] driver = nova): OpenStack Compute, its \
           credentials with keystoneauth's option names, or a clouds.yaml cloud.",
    opts: &[
        OptDecl::new(
            "cloud",
            OptKind::OptionalString,
            None,
            "A cloud of clouds.yaml (the first of ./clouds.yaml, \
             ~/.config/openstack/clouds.yaml and /etc/openstack/clouds.yaml, with \
             clouds-public.yaml profiles), as openstack --os-cloud NAME. When set, every other authentication option of \
             this section is ignored; region_name, interface, endpoint_override and the \
             timeouts still apply.",
        ),
        OptDecl::new(
            "auth_type",
            OptKind::Choice {
                choices: AUTH_TYPES,
            },
            Some("password"),
            "The keystoneauth authentication plugin.",
        ),
        OptDecl::new(
            "auth_url",
            OptKind::OptionalString,
            None,
            "Keystone's URL, e.g. http://controller/identity (auth_type password).",
        ),
        OptDecl::new(
            "username",
            OptKind::OptionalString,
            None,
            "The user (auth_type password).",
        ),
        OptDecl::new(
            "password",
            OptKind::Secret,
            None,
            "The user's password (auth_type password). Never logged.",
        ),
        OptDecl::new(
            "user_domain_name",
            OptKind::String,
            Some("Default"),
            "The user's domain (auth_type password).",
        ),
        OptDecl::new(
            "project_name",
            OptKind::OptionalString,
            None,
            "The project the VMs are booted in (auth_type password).",
        ),
        OptDecl::new(
            "project_domain_name",
            OptKind::String,
            Some("Default"),
            "The project's domain (auth_type password).",
        ),
        OptDecl::new(
            "region_name",
            OptKind::OptionalString,
            None,
            "The region whose compute endpoint the catalog gives; unset: the only or \
             first one.",
        ),
        OptDecl::new(
            "interface",
            OptKind::Choice {
                choices: INTERFACES,
            },
            Some("public"),
            "Which of the catalog's compute endpoints to use.",
        ),
        OptDecl::new(
            "endpoint_override",
            OptKind::OptionalString,
            None,
            "The compute API's URL, e.g. http://127.0.0.1:8774/v2.1, used instead of the \
             catalog's.",
        ),
        OptDecl::new(
            "endpoint",
            OptKind::OptionalString,
            None,
            "The compute API's URL for auth_type admin_token or none (which have no \
             catalog); endpoint_override, when set, wins.",
        ),
        OptDecl::new(
            "image_endpoint_override",
            OptKind::OptionalString,
            None,
            "The image service's (Glance's) URL, e.g. http://127.0.0.1:9292, used instead \
             of the catalog's to find images by name; required with auth_type admin_token \
             or none, which have no catalog.",
        ),
        OptDecl::new(
            "network_endpoint_override",
            OptKind::OptionalString,
            None,
            "The network service's (Neutron's) URL, e.g. http://127.0.0.1:9696, used \
             instead of the catalog's to find a template's network by name. With \
             auth_type admin_token or none and no value, templates must give network ids \
             (or none, auto).",
        ),
        OptDecl::new(
            "token",
            OptKind::Secret,
            None,
            "The token of auth_type admin_token, sent as X-Auth-Token. Never logged.",
        ),
        OptDecl::new(
            "cafile",
            OptKind::OptionalPath,
            None,
            "A PEM file of CA certificates trusted, beside the built-in web roots, for \
             Keystone's and Nova's HTTPS certificates (keystoneauth's cafile: DevStack \
             with tls-proxy writes its CA bundle here). Not used with cloud, whose \
             clouds.yaml entry has its own cacert.",
        ),
        OptDecl::new(
            "timeout",
            OptKind::Seconds {
                min: 1.0,
                max: Some(600.0),
            },
            Some("30"),
            "Seconds one compute API request may take before it counts as failed (and \
             is retried, see connect_retries).",
        ),
        OptDecl::new(
            "connect_retries",
            OptKind::Integer {
                min: Some(0),
                max: Some(20),
            },
            Some("3"),
            "How often a request that could not connect or timed out is tried again, \
             with backoff (0.5 s, doubling, at most 8 s between tries).",
        ),
        OptDecl::new(
            "status_code_retries",
            OptKind::Integer {
                min: Some(0),
                max: Some(20),
            },
            Some("3"),
            "How often a request answered with a server error (HTTP 5xx) is tried \
             again, with the same backoff. Requests refused by a client error (4xx: \
             unknown image or flavor, quota) are never retried here.",
        ),
        OptDecl::new(
            "delete_timeout",
            OptKind::Seconds {
                min: 1.0,
                max: Some(3600.0),
            },
            Some("300"),
            "Seconds a delete waits for Nova to answer 404 for the server (the delete \
             returns only once the server is gone, so its quota is free again); the \
             delete fails, and is tried again later, after that.",
        ),
    ],
};

/// A secret option's value: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[nova]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct NovaOpts {
    pub cloud: Option<String>,
    pub auth_type: AuthType,
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub user_domain_name: String,
    pub project_name: Option<String>,
    pub project_domain_name: String,
    pub region_name: Option<String>,
    /// `public`, `internal` or `admin`.
    pub interface: String,
    pub endpoint_override: Option<String>,
    pub endpoint: Option<String>,
    pub image_endpoint_override: Option<String>,
    pub network_endpoint_override: Option<String>,
    pub token: Option<Secret>,
    /// CA certificates trusted besides the built-in roots.
    pub cafile: Option<PathBuf>,
    pub timeout: Duration,
    pub connect_retries: u32,
    pub status_code_retries: u32,
    pub delete_timeout: Duration,
}

impl NovaOpts {
    pub(super) fn from_values(v: &SectionValues<'_>) -> Self {
        let name = v.string("auth_type");
        NovaOpts {
            cloud: v.optional_string("cloud"),
            auth_type: AuthType::from_name(&name)
                .unwrap_or_else(|| panic!("[nova] auth_type {name:?} passed validation")),
            auth_url: v.optional_string("auth_url"),
            username: v.optional_string("username"),
            password: v.optional_string("password").map(Secret),
            user_domain_name: v.string("user_domain_name"),
            project_name: v.optional_string("project_name"),
            project_domain_name: v.string("project_domain_name"),
            region_name: v.optional_string("region_name"),
            interface: v.string("interface"),
            endpoint_override: v.optional_string("endpoint_override"),
            endpoint: v.optional_string("endpoint"),
            image_endpoint_override: v.optional_string("image_endpoint_override"),
            network_endpoint_override: v.optional_string("network_endpoint_override"),
            token: v.optional_string("token").map(Secret),
            cafile: v.optional_path("cafile"),
            timeout: v.duration("timeout"),
            connect_retries: v.int("connect_retries"),
            status_code_retries: v.int("status_code_retries"),
            delete_timeout: v.duration("delete_timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{load_from_str, Config};

    #[test]
    fn defaults_are_the_declared_ones() {
        let n = Config::default().nova;
        assert_eq!(n.cloud, None);
        assert_eq!(n.auth_type, AuthType::Password);
        assert_eq!(n.user_domain_name, "Default");
        assert_eq!(n.project_domain_name, "Default");
        assert_eq!(n.interface, "public");
        assert_eq!(n.timeout, Duration::from_secs(30));
        assert_eq!((n.connect_retries, n.status_code_retries), (3, 3));
        assert_eq!(n.delete_timeout, Duration::from_secs(300));
        assert_eq!(n.password, None);
    }

    #[test]
    fn keystoneauth_options_as_devstack_writes_them() {
        let text = "[nova]\nauth_type = password\nauth_url = http://10.0.0.2/identity\n\
                    username = autoscaler\npassword = s3cret\nuser_domain_name = Default\n\
                    project_name = service\nproject_domain_name = Default\n\
                    region_name = RegionOne\ninterface = internal\n\
                    cafile = /opt/stack/data/ca-bundle.pem\n";
        let loaded = load_from_str("a.conf", text).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let n = &loaded.config.nova;
        assert_eq!(n.auth_url.as_deref(), Some("http://10.0.0.2/identity"));
        assert_eq!(n.username.as_deref(), Some("autoscaler"));
        assert_eq!(n.password.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(n.project_name.as_deref(), Some("service"));
        assert_eq!(n.region_name.as_deref(), Some("RegionOne"));
        assert_eq!(n.interface, "internal");
        assert_eq!(
            n.cafile.as_deref(),
            Some(std::path::Path::new("/opt/stack/data/ca-bundle.pem"))
        );
        // Never printed, not even in a debug dump of the configuration.
        let dump = format!("{:?}", loaded.config);
        assert!(!dump.contains("s3cret"), "{dump}");
    }

    #[test]
    fn admin_token_and_endpoint_for_noauth2_fixtures() {
        let text = "[nova]\nauth_type = admin_token\nendpoint = http://127.0.0.1:8774/v2.1\n\
                    token = admin:admin\n";
        let n = load_from_str("a.conf", text).unwrap().config.nova;
        assert_eq!(n.auth_type, AuthType::AdminToken);
        assert_eq!(n.endpoint.as_deref(), Some("http://127.0.0.1:8774/v2.1"));
        assert_eq!(n.token.as_ref().map(Secret::expose), Some("admin:admin"));
        assert!(!format!("{n:?}").contains("admin:admin"));
        let v3 = load_from_str("a.conf", "[nova]\nauth_type = v3password\n").unwrap();
        assert_eq!(v3.config.nova.auth_type, AuthType::Password);
    }

    #[test]
    fn bad_values_name_the_option() {
        let err = load_from_str("a.conf", "[nova]\nauth_type = kerberos\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.conf: [nova] auth_type = \"kerberos\": expected one of password, v3password, \
             admin_token or none"
        );
        let err = load_from_str("a.conf", "[nova]\ninterface = private\n").unwrap_err();
        assert!(err
            .to_string()
            .contains("expected one of public, internal or admin"));
    }

    #[test]
    fn declared_auth_types_are_understood() {
        for choice in AUTH_TYPES {
            assert!(
                AuthType::from_name(choice.value).is_some(),
                "{}",
                choice.value
            );
        }
    }
}
