//! What the conductor asks the cloud for when a group needs a VM: name, image, flavor,
//! metadata naming group, role and template, and the user data that configures the VM's
//! agent and image (cloud-config carrying `agent.conf`, the group's AJP secret, and
//! `web.conf` or `splitter.conf` when the template overrides an image setting).

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{
    conf::Config,
    driver::{VmSpec, META_GROUP, META_ROLE, META_TEMPLATE},
    messaging::{agent_config::WriteFile, signing::MessageSecrets, AgentConfig, Role},
    store::AjpSecret,
    template::{metadata, Template},
};

/// Where both images read the group's AJP secret (issue 17): the splitter writes it into
/// workers.properties (`secret`), the web VM into Tomcat's AJP connector (`secret`,
/// `secretRequired="true"`). Mode 0600: on a real VM only root reads it.
pub const AJP_SECRET_PATH: &str = "/etc/autoscaler/ajp-secret";

/// Where the web images read their emulated capacity (`etc/autoscaler/images/README.md`).
pub const WEB_CONF_PATH: &str = "/etc/autoscaler/web.conf";

/// Where the splitter images read the site's port and path (`etc/autoscaler/images/README.md`).
pub const SPLITTER_CONF_PATH: &str = "/etc/autoscaler/splitter.conf";

/// The splitter image used when a template names none.
pub const DEFAULT_SPLITTER_IMAGE: &str = "modjk-splitter";

/// The spec of a new VM of `role` for `template`. Its name, `<template>-<role>-<8 hex>`,
/// is also the agent's `vm_id`, so heartbeats and the cloud's records meet on it.
/// `ajp_secret` is the group's ([`crate::store::Store::ajp_secret`]).
/// Its agent's message key is derived from `messages` and the name.
pub fn vm_spec(
    config: &Config,
    template: &Template,
    role: Role,
    ajp_secret: &AjpSecret,
    messages: &MessageSecrets,
) -> VmSpec {
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    let name = format!("{}-{}-{suffix}", template.name(), role.as_str());
    let image = match role {
        Role::Web => template.image().to_owned(),
        Role::Splitter => template
            .splitter_image()
            .unwrap_or(DEFAULT_SPLITTER_IMAGE)
            .to_owned(),
    };
    let agent = AgentConfig {
        // The service checked the agents' login at start (refusing its own unless
        // allowed); a configuration it refuses gets the service's URL as allowed.
        transport_url: config
            .agent
            .agent_url(&config.default.transport_url)
            .map_or(&config.default.transport_url, |a| a.url)
            .to_secret_string(),
        control_exchange: config.default.control_exchange.clone(),
        group: template.name().to_owned(),
        role,
        vm_id: name.clone(),
        heartbeat_interval: config.agent.heartbeat_interval,
        telemetry_ttl: config.agent.telemetry_ttl,
        amqp_durable_queues: config.oslo_messaging_rabbit.amqp_durable_queues,
        check_timeout: check_timeout(template.target_response_time()),
        message_key: messages.vm_key(&name),
    };
    // The template's values ride along, so a conductor that lost its state rebuilds the
    // group from the cloud (see `service::recover_from_cloud`).
    let mut metadata: BTreeMap<String, String> = metadata::to_metadata(template);
    metadata.extend(
        [
            (META_GROUP, template.name()),
            (META_ROLE, role.as_str()),
            (META_TEMPLATE, template.name()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    VmSpec {
        name,
        image,
        flavor: template.flavor().map(str::to_owned),
        network: template.network().map(str::to_owned),
        key_name: template.key_name().map(str::to_owned),
        metadata,
        user_data: user_data(&agent, template, role, ajp_secret),
    }
}

/// How long the agent's local check may wait for the VM's page: five times the site's
/// target response time, at least 1 s, at most 60 s. A page slower than the agent waits
/// never says "serving", so its VM would never join the pool (issue 16, item 1); the
/// target says how slow the site's page may be, and a single request may take several
/// times the mean the target bounds.
pub fn check_timeout(target_response_time: std::time::Duration) -> std::time::Duration {
    (target_response_time * 5).clamp(
        crate::messaging::agent_config::DEFAULT_CHECK_TIMEOUT,
        std::time::Duration::from_secs(60),
    )
}

/// The agent's configuration, plus the image settings the template overrides: for web
/// VMs the capacity the local web image reads (`web.conf`: `SERVICE_TIME_MS`, `THREADS`),
/// for the splitter where it serves the site (`splitter.conf`: `LISTEN_PORT`, `SITE_PATH`);
/// and for both the group's AJP secret.
fn user_data(
    agent: &AgentConfig,
    template: &Template,
    role: Role,
    ajp_secret: &AjpSecret,
) -> String {
    let mut cloud_config = agent.cloud_config();
    cloud_config.write_files.push(WriteFile {
        path: AJP_SECRET_PATH.to_owned(),
        content: format!("{}\n", ajp_secret.expose()),
        permissions: "0600".to_owned(),
    });
    let (path, settings) = match role {
        Role::Web => (WEB_CONF_PATH, web_settings(template)),
        Role::Splitter => (SPLITTER_CONF_PATH, splitter_settings(template)),
    };
    if !settings.is_empty() {
        cloud_config.write_files.push(WriteFile {
            path: path.to_owned(),
            content: settings,
            permissions: "0644".to_owned(),
        });
    }
    cloud_config.to_user_data()
}

/// `web.conf`: `KEY=value` lines, empty when the template overrides nothing.
fn web_settings(template: &Template) -> String {
    let mut text = String::new();
    if let Some(ms) = template.web_service_time_ms() {
        text.push_str(&format!("SERVICE_TIME_MS={ms}\n"));
    }
    if let Some(threads) = template.web_threads() {
        text.push_str(&format!("THREADS={threads}\n"));
    }
    text
}

/// `splitter.conf`: `KEY=value` lines, empty when the template overrides nothing. The
/// path is valid by `template::check_site_path`, so it needs no quoting.
fn splitter_settings(template: &Template) -> String {
    let mut text = String::new();
    if let Some(port) = template.splitter_port() {
        text.push_str(&format!("LISTEN_PORT={port}\n"));
    }
    if let Some(path) = template.site_path() {
        text.push_str(&format!("SITE_PATH={path}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secret() -> AjpSecret {
        AjpSecret::parse(&"ab".repeat(32)).unwrap()
    }

    fn messages() -> MessageSecrets {
        MessageSecrets::new(&[9; 32], None)
    }

    /// Issue 17, item 5: both roles get the group's AJP secret, readable by root only.
    #[test]
    fn both_roles_carry_the_groups_ajp_secret() {
        let template = Template::parse(
            "shop.template",
            "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n",
            20,
        )
        .unwrap();
        let config = Config::default();
        for role in [Role::Web, Role::Splitter] {
            let spec = vm_spec(&config, &template, role, &secret(), &messages());
            let files =
                crate::messaging::CloudConfig::from_user_data("u", &spec.user_data).unwrap();
            let file = files
                .write_files
                .iter()
                .find(|f| f.path == AJP_SECRET_PATH)
                .unwrap();
            assert_eq!(file.content, format!("{}\n", "ab".repeat(32)));
            assert_eq!(file.permissions, "0600");
            assert!(!spec.metadata.values().any(|v| v.contains("abab")));
        }
    }

    #[test]
    fn spec_carries_group_role_and_the_agent_configuration() {
        let template = Template::parse(
            "shop.template",
            "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n",
            20,
        )
        .unwrap();
        let config = Config::default();
        let spec = vm_spec(&config, &template, Role::Splitter, &secret(), &messages());
        assert!(spec.name.starts_with("shop-splitter-"));
        assert_eq!(spec.image, DEFAULT_SPLITTER_IMAGE);
        assert_eq!(spec.metadata[META_GROUP], "shop");
        assert_eq!(spec.metadata[META_ROLE], "splitter");
        let agent = AgentConfig::from_user_data("user-data", &spec.user_data).unwrap();
        assert_eq!(agent.vm_id, spec.name);
        assert_eq!(agent.role, Role::Splitter);
        assert_eq!(agent.transport_url, "rabbit://guest:guest@127.0.0.1:5672/");
        // The template's values ride along for restart recovery.
        assert_eq!(
            crate::template::metadata::from_metadata(&spec.metadata, 20).unwrap(),
            template
        );
        // VMs may reach the broker by another address than the conductor.
        let mut other = Config::default();
        other.agent.transport_url = Some("rabbit://vm:s3cret@10.0.0.5:5672/".parse().unwrap());
        let spec = vm_spec(&other, &template, Role::Web, &secret(), &messages());
        let agent = AgentConfig::from_user_data("user-data", &spec.user_data).unwrap();
        assert_eq!(agent.transport_url, "rabbit://vm:s3cret@10.0.0.5:5672/");
        let web = vm_spec(&config, &template, Role::Web, &secret(), &messages());
        assert_eq!(web.image, "tomcat-web");
        let files = crate::messaging::CloudConfig::from_user_data("u", &web.user_data).unwrap();
        assert!(
            files.file(WEB_CONF_PATH).is_none(),
            "no override, no web.conf"
        );
    }

    /// Issue 16, item 1: a page slower than the agent's check must still join the pool.
    #[test]
    fn the_agents_check_timeout_follows_the_target() {
        let secs = Duration::from_secs_f64;
        for (target, timeout) in [
            (0.05, 1.0),
            (0.2, 1.0),
            (0.5, 2.5),
            (2.0, 10.0),
            (3600.0, 60.0),
        ] {
            assert_eq!(check_timeout(secs(target)), secs(timeout), "{target}");
        }
        let template = Template::parse(
            "slow.template",
            "name = slow\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 2\n",
            20,
        )
        .unwrap();
        let spec = vm_spec(
            &Config::default(),
            &template,
            Role::Web,
            &secret(),
            &messages(),
        );
        let agent = AgentConfig::from_user_data("user-data", &spec.user_data).unwrap();
        assert_eq!(agent.check_timeout, secs(10.0));
    }

    #[test]
    fn capacity_overrides_reach_the_web_vms_only() {
        let template = Template::parse(
            "shop.template",
            "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\nweb_service_time_ms = 80\nweb_threads = 2\n",
            20,
        )
        .unwrap();
        let config = Config::default();
        let web = vm_spec(&config, &template, Role::Web, &secret(), &messages());
        let files = crate::messaging::CloudConfig::from_user_data("u", &web.user_data).unwrap();
        assert_eq!(
            files.file(WEB_CONF_PATH),
            Some("SERVICE_TIME_MS=80\nTHREADS=2\n")
        );
        let splitter = vm_spec(&config, &template, Role::Splitter, &secret(), &messages());
        let files =
            crate::messaging::CloudConfig::from_user_data("u", &splitter.user_data).unwrap();
        assert!(files.file(WEB_CONF_PATH).is_none());
        assert!(files.file(SPLITTER_CONF_PATH).is_none(), "no override");
    }

    #[test]
    fn the_site_port_and_path_reach_the_splitter_only() {
        let template = Template::parse(
            "shop.template",
            "name = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\nsplitter_port = 80\nsite_path = /shop/\n",
            20,
        )
        .unwrap();
        let config = Config::default();
        let splitter = vm_spec(&config, &template, Role::Splitter, &secret(), &messages());
        let files =
            crate::messaging::CloudConfig::from_user_data("u", &splitter.user_data).unwrap();
        assert_eq!(
            files.file(SPLITTER_CONF_PATH),
            Some("LISTEN_PORT=80\nSITE_PATH=/shop/\n")
        );
        // The agent's own file is still there, and the keys ride along for recovery.
        assert!(AgentConfig::from_user_data("u", &splitter.user_data).is_ok());
        assert_eq!(splitter.metadata["autoscaler:tpl:splitter_port"], "80");
        assert_eq!(splitter.metadata["autoscaler:tpl:site_path"], "/shop/");
        let web = vm_spec(&config, &template, Role::Web, &secret(), &messages());
        let files = crate::messaging::CloudConfig::from_user_data("u", &web.user_data).unwrap();
        assert!(files.file(SPLITTER_CONF_PATH).is_none());
        assert!(files.file(WEB_CONF_PATH).is_none());
    }
}
