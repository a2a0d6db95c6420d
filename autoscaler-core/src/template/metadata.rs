//! A template as cloud metadata, so that a conductor that lost its state rebuilds every
//! group's template from the cloud alone: the cloud is the source of truth, and every VM
//! the autoscaler boots carries its template's values next to its group and role (see
//! `autoscaler::driver`).
//!
//! Each key of the template that is set becomes one metadata item `autoscaler:tpl:<key>`
//! ([`KEY_PREFIX`], keys as in [`VALID_KEYS`]) whose value is spelled as the template file
//! spells it ([`Template::to_ini`]): `autoscaler:tpl:target_response_time = 0.25`. Rebuilding
//! goes through [`Template::parse`], so a template from metadata passes exactly the checks
//! a template file passes, the conductor's `max_vms` ceiling included. Pure.
//!
//! # Nova's limits
//!
//! Nova accepts at most 128 metadata items per server, keys and values of at most 255
//! characters. The keys are at most 34 characters and at most 13 of them, so at most 16
//! items with the driver's own three. Of the values, `name` is at most 63 characters
//! ([`super::NAME_MAX_LEN`]), the counts at most 10 digits, `target_response_time` at most
//! 15 characters and `site_path` at most 128 ([`super::SITE_PATH_MAX_LEN`]), but `image`,
//! `flavor`, `network`, `splitter_image` and `key_name` have no length bound in template
//! validation: a value longer than 255 characters passes here and makes Nova refuse the
//! boot.

use std::collections::BTreeMap;

use super::{expected, Template, TemplateError, TemplateProblem, SECTION, VALID_KEYS};
use crate::cloud::META_GROUP;

/// What every template metadata key starts with; the template key follows.
pub const KEY_PREFIX: &str = "autoscaler:tpl:";

/// The template as metadata items: one `autoscaler:tpl:<key>` per key that is set, valued
/// as the template file spells it. Infallible; see the module documentation for the one
/// Nova limit a template can exceed.
pub fn to_metadata(template: &Template) -> BTreeMap<String, String> {
    template
        .entries()
        .into_iter()
        .map(|(key, value)| (format!("{KEY_PREFIX}{key}"), value))
        .collect()
}

/// Rebuilds the template that [`to_metadata`] wrote, from a VM's whole metadata: items
/// without [`KEY_PREFIX`] are ignored. `max_vms_ceiling` is the conductor's
/// `[conductor] max_vms_ceiling`, as for a template file. Errors name the source as
/// `cloud metadata of <group>` (the [`META_GROUP`] item) and report every problem at once:
/// the template file's problems, plus an unknown `autoscaler:tpl:` key, a value with a
/// control character (which could smuggle a line into the INI text) and a missing `name`
/// (which a file may leave out, but `to_metadata` always writes).
pub fn from_metadata(
    metadata: &BTreeMap<String, String>,
    max_vms_ceiling: u32,
) -> Result<Template, TemplateError> {
    let source = match metadata.get(META_GROUP) {
        Some(group) => format!("cloud metadata of {}", group.escape_debug()),
        None => "cloud metadata".to_owned(),
    };
    let mut problems = Vec::new();
    // Keys whose value was refused here: they are not "missing" too.
    let mut refused: Vec<&str> = Vec::new();
    let mut lines = vec![format!("[{SECTION}]")];
    for (item, value) in metadata {
        let Some(key) = item.strip_prefix(KEY_PREFIX) else {
            continue;
        };
        let Some(&key) = VALID_KEYS.iter().find(|valid| **valid == key) else {
            problems.push(TemplateProblem::UnknownKey {
                key: key.to_owned(),
            });
            continue;
        };
        if value.contains(char::is_control) {
            problems.push(TemplateProblem::BadText {
                key,
                value: value.clone(),
                defect: "contains a control character",
                expected: expected(key),
            });
            refused.push(key);
            continue;
        }
        lines.push(format!("{key} = {value}"));
    }
    let name_given = metadata.contains_key(&format!("{KEY_PREFIX}name"));
    let missing_name = TemplateProblem::Missing {
        key: "name",
        expected: expected("name"),
    };
    lines.push(String::new());

    let parsed = Template::parse(&source, &lines.join("\n"), max_vms_ceiling);
    let parse_problems = match &parsed {
        Ok(_) if !name_given => vec![missing_name],
        Ok(_) => Vec::new(),
        Err(err) => err
            .problems()
            .iter()
            .filter_map(|problem| match problem {
                // Without a name key `parse` falls back to the source's "file name".
                TemplateProblem::NameFromFileName { .. } if name_given => None,
                TemplateProblem::NameFromFileName { .. } => Some(missing_name.clone()),
                TemplateProblem::Missing { key, .. } if refused.contains(key) => None,
                other => Some(other.clone()),
            })
            .collect(),
    };
    problems.extend(parse_problems);
    match parsed {
        Ok(template) if problems.is_empty() => Ok(template),
        _ => Err(TemplateError::new(&source, problems)),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path, time::Duration};

    use super::*;
    use crate::cloud::{META_ROLE, META_TEMPLATE};

    const CEILING: u32 = 20;

    /// Every key set, values at the edges of what `to_ini` spells.
    const EVERY_KEY: &str = "\
name = shop.v2
image = tomcat-web
min_vms = 1
max_vms = 20
target_response_time = 0.000000001
flavor = m1.small
network = private net
splitter_image = modjk-splitter
key_name = ops=key;#1
web_service_time_ms = 50
web_threads = 4294967295
splitter_port = 65535
site_path = /a.b/c_d/~e-f/
";

    /// The driver's own items, which a VM carries beside the template's.
    fn with_driver_items(mut metadata: BTreeMap<String, String>) -> BTreeMap<String, String> {
        for (key, value) in [
            (META_GROUP, "shop"),
            (META_ROLE, "web"),
            (META_TEMPLATE, "shop"),
        ] {
            metadata.insert(key.to_owned(), value.to_owned());
        }
        metadata
    }

    fn sample_templates() -> Vec<(String, Template)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/autoscaler/templates");
        let mut samples: Vec<(String, Template)> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "template"))
            .map(|path| {
                let template = Template::load(&path, CEILING).unwrap();
                (path.display().to_string(), template)
            })
            .collect();
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(
            !samples.is_empty(),
            "no sample template in {}",
            dir.display()
        );
        samples
    }

    fn rebuild_err(metadata: &BTreeMap<String, String>) -> TemplateError {
        match from_metadata(metadata, CEILING) {
            Ok(template) => panic!("{metadata:?} should be refused but gave {template:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn sample_templates_round_trip() {
        for (path, template) in sample_templates() {
            let metadata = to_metadata(&template);
            assert_eq!(
                from_metadata(&metadata, CEILING).unwrap(),
                template,
                "{path}: {metadata:?}"
            );
        }
    }

    #[test]
    fn every_key_is_written_as_the_file_spells_it_and_round_trips() {
        let template = Template::parse("x.template", EVERY_KEY, CEILING).unwrap();
        let metadata = to_metadata(&template);
        let written: Vec<(&str, &str)> = metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            written,
            [
                ("autoscaler:tpl:flavor", "m1.small"),
                ("autoscaler:tpl:image", "tomcat-web"),
                ("autoscaler:tpl:key_name", "ops=key;#1"),
                ("autoscaler:tpl:max_vms", "20"),
                ("autoscaler:tpl:min_vms", "1"),
                ("autoscaler:tpl:name", "shop.v2"),
                ("autoscaler:tpl:network", "private net"),
                ("autoscaler:tpl:site_path", "/a.b/c_d/~e-f/"),
                ("autoscaler:tpl:splitter_image", "modjk-splitter"),
                ("autoscaler:tpl:splitter_port", "65535"),
                ("autoscaler:tpl:target_response_time", "0.000000001"),
                ("autoscaler:tpl:web_service_time_ms", "50"),
                ("autoscaler:tpl:web_threads", "4294967295"),
            ]
        );
        assert_eq!(metadata.len(), VALID_KEYS.len());
        let rebuilt = from_metadata(&metadata, CEILING).unwrap();
        assert_eq!(rebuilt, template);
        assert_eq!(rebuilt.target_response_time(), Duration::from_nanos(1));
        // The same text as the file would hold.
        assert_eq!(rebuilt.to_ini(), template.to_ini());
    }

    #[test]
    fn unset_keys_are_not_written() {
        let minimal = "image = i\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 2\n";
        let template = Template::parse("shop.template", minimal, CEILING).unwrap();
        let metadata = to_metadata(&template);
        let keys: Vec<&str> = metadata.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "autoscaler:tpl:image",
                "autoscaler:tpl:max_vms",
                "autoscaler:tpl:min_vms",
                "autoscaler:tpl:name",
                "autoscaler:tpl:target_response_time",
            ]
        );
        assert_eq!(metadata["autoscaler:tpl:name"], "shop");
        assert_eq!(from_metadata(&metadata, CEILING).unwrap(), template);
    }

    #[test]
    fn other_metadata_is_ignored() {
        let template = Template::parse("x.template", EVERY_KEY, CEILING).unwrap();
        let mut metadata = with_driver_items(to_metadata(&template));
        for (key, value) in [
            ("autoscaler:tpl", "no colon after the prefix"),
            ("autoscaler:tplx:image", "other"),
            ("tpl:image", "other"),
            ("image", "other"),
            ("owner", "line one\nline two"),
        ] {
            metadata.insert(key.to_owned(), value.to_owned());
        }
        assert_eq!(from_metadata(&metadata, CEILING).unwrap(), template);
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let template = Template::parse("x.template", EVERY_KEY, CEILING).unwrap();
        for key in [
            "image",
            "min_vms",
            "max_vms",
            "target_response_time",
            "name",
        ] {
            let mut metadata = with_driver_items(to_metadata(&template));
            metadata.remove(&format!("{KEY_PREFIX}{key}"));
            let err = rebuild_err(&metadata);
            assert_eq!(
                err.to_string(),
                format!(
                    "cloud metadata of shop: {key}: required key is missing (expected {})",
                    expected(key)
                )
            );
            assert_eq!(err.file(), "cloud metadata of shop");
        }
    }

    #[test]
    fn bad_values_are_reported_as_in_a_file_all_at_once() {
        let template = Template::parse("x.template", EVERY_KEY, CEILING).unwrap();
        let mut metadata = to_metadata(&template);
        metadata.insert("autoscaler:tpl:max_vms".into(), "21".into());
        metadata.insert("autoscaler:tpl:flavor".into(), String::new());
        metadata.insert("autoscaler:tpl:colour".into(), "blue".into());
        let err = rebuild_err(&metadata);
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(
            lines.iter().all(|l| l.starts_with("cloud metadata: ")),
            "{err}"
        );
        assert!(lines[0].contains("unknown key \"colour\""), "{err}");
        assert!(lines
            .iter()
            .any(|l| l.contains("flavor: the value is empty")));
        assert!(lines
            .iter()
            .any(|l| l.contains("max_vms: 21 is above the ceiling of 20")));
    }

    #[test]
    fn a_value_cannot_smuggle_a_line_into_the_template() {
        let template = Template::parse("x.template", EVERY_KEY, CEILING).unwrap();
        let mut metadata = with_driver_items(to_metadata(&template));
        metadata.remove("autoscaler:tpl:web_threads");
        metadata.insert(
            "autoscaler:tpl:image".into(),
            "tomcat-web\nweb_threads = 1".into(),
        );
        let err = rebuild_err(&metadata);
        assert_eq!(
            err.problems(),
            [TemplateProblem::BadText {
                key: "image",
                value: "tomcat-web\nweb_threads = 1".into(),
                defect: "contains a control character",
                expected: expected("image"),
            }]
        );
        // Nor can a key.
        let mut metadata = to_metadata(&template);
        metadata.insert("autoscaler:tpl:x = 1\nmax_vms".into(), "2".into());
        assert!(matches!(
            rebuild_err(&metadata).problems(),
            [TemplateProblem::UnknownKey { .. }]
        ));
    }

    #[test]
    fn keys_and_item_count_stay_within_novas_limits() {
        // The driver's own items (group, role, template) come on top.
        assert!(VALID_KEYS.len() + 3 <= 128);
        for key in VALID_KEYS {
            assert!(KEY_PREFIX.len() + key.len() <= 255, "{key}");
        }
    }
}
