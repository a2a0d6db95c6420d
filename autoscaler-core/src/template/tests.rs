//! Unit tests of template parsing, validation, serde and INI round trips.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const CEILING: u32 = 20;

/// The smallest valid template, keys before any section header.
const MINIMAL: &str = "image = tomcat-web\nmin_vms = 1\nmax_vms = 5\ntarget_response_time = 0.25\n";

const FULL: &str = "\
# comments allowed
[template]
name = shop
image = tomcat-web
min_vms = 1
max_vms = 5
target_response_time = 0.25
flavor = m1.small
network = private
splitter_image = modjk-splitter
key_name = ops
";

fn parse(text: &str) -> Result<Template, TemplateError> {
    Template::parse("shop.template", text, CEILING)
}

fn parse_err(source: &str, text: &str, ceiling: u32) -> TemplateError {
    match Template::parse(source, text, ceiling) {
        Ok(template) => panic!("{source} should be rejected:\n{text}\nbut parsed as {template:?}"),
        Err(err) => err,
    }
}

/// MINIMAL with one line replaced (or added, when no line starts with `key =`).
fn minimal_with(key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut lines: Vec<&str> = MINIMAL
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .collect();
    lines.push(line);
    lines.join("\n") + "\n"
}

#[test]
fn minimal_template_is_valid() {
    let template = parse(MINIMAL).unwrap();
    assert_eq!(template.name(), "shop");
    assert_eq!(template.image(), "tomcat-web");
    assert_eq!(template.min_vms(), 1);
    assert_eq!(template.max_vms(), 5);
    assert_eq!(template.target_response_time(), Duration::from_millis(250));
    assert_eq!(template.flavor(), None);
    assert_eq!(template.network(), None);
    assert_eq!(template.splitter_image(), None);
    assert_eq!(template.key_name(), None);
}

#[test]
fn full_template_with_section_header_is_valid() {
    let template = parse(FULL).unwrap();
    assert_eq!(template.name(), "shop");
    assert_eq!(template.flavor(), Some("m1.small"));
    assert_eq!(template.network(), Some("private"));
    assert_eq!(template.splitter_image(), Some("modjk-splitter"));
    assert_eq!(template.key_name(), Some("ops"));
}

#[test]
fn name_defaults_to_the_file_stem() {
    let template = Template::parse("/x/shop.template", MINIMAL, CEILING).unwrap();
    assert_eq!(template.name(), "shop");
    let template = Template::parse("etc/web.v2.template", MINIMAL, CEILING).unwrap();
    assert_eq!(template.name(), "web.v2");
    let named = minimal_with("name", "name = other");
    assert_eq!(
        Template::parse("/x/my shop.template", &named, CEILING)
            .unwrap()
            .name(),
        "other"
    );
}

#[test]
fn a_trailing_backslash_does_not_swallow_the_next_line() {
    // Regression: rust-ini read it as a line continuation, so the next key went missing.
    let err = parse(&format!("flavor = m1.small \\\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("flavor: \"m1.small \\\\\" ends with a backslash"),
        "{err}"
    );
    assert!(!err.contains("missing"), "{err}");
}

#[test]
fn section_names_are_case_insensitive_as_in_oslo() {
    assert!(parse(&format!("[Template]\n{MINIMAL}")).is_ok());
}

#[test]
fn keys_may_stand_before_the_section_header_and_after_it() {
    let text =
        "image = tomcat-web\nmin_vms = 1\n[template]\nmax_vms = 3\ntarget_response_time = 1\n";
    let template = parse(text).unwrap();
    assert_eq!((template.min_vms(), template.max_vms()), (1, 3));
    assert_eq!(template.target_response_time(), Duration::from_secs(1));
}

#[test]
fn values_are_trimmed_and_taken_literally() {
    let text = "\u{feff}image =   \"tomcat\\web\"  \r\nmin_vms=1\r\nmax_vms :5\r\ntarget_response_time=.3\r\n";
    let template = parse(text).unwrap();
    // oslo.config's rules: no escape processing, and a value wholly wrapped in matching
    // quotes loses them.
    assert_eq!(template.image(), "tomcat\\web");
    assert_eq!(template.max_vms(), 5);
    assert_eq!(template.target_response_time(), Duration::from_millis(300));
}

#[test]
fn bounds_are_inclusive() {
    let text = minimal_with("max_vms", "max_vms = 20");
    assert_eq!(parse(&text).unwrap().max_vms(), 20);
    let text = minimal_with("min_vms", "min_vms = 5");
    assert_eq!(parse(&text).unwrap().min_vms(), 5);
    let text = minimal_with("min_vms", "min_vms = 1");
    assert_eq!(parse(&text).unwrap().min_vms(), 1);
    let text = minimal_with("target_response_time", "target_response_time = 86400");
    assert_eq!(
        parse(&text).unwrap().target_response_time(),
        MAX_TARGET_RESPONSE_TIME
    );
    let text = minimal_with("target_response_time", "target_response_time = 1e-9");
    assert_eq!(
        parse(&text).unwrap().target_response_time(),
        Duration::from_nanos(1)
    );
}

/// One case per kind of error: the problem's line must name the file and the key (for
/// key-level problems) and contain the offending value.
#[test]
fn each_error_names_the_file_the_key_and_the_value() {
    struct Case {
        source: &'static str,
        text: String,
        ceiling: u32,
        /// The key the problem is about; `None` for file-level problems.
        key: Option<&'static str>,
        /// Fragments the problem's line must contain (the value given, what was expected).
        contains: &'static [&'static str],
    }
    let case = |key: &'static str, line: &str, contains: &'static [&'static str]| Case {
        source: "shop.template",
        text: minimal_with(key, line),
        ceiling: CEILING,
        key: Some(key),
        contains,
    };
    let file_level = |text: &str, contains: &'static [&'static str]| Case {
        source: "shop.template",
        text: text.to_owned(),
        ceiling: CEILING,
        key: None,
        contains,
    };
    let cases = vec![
        case("max_vms", "max_vms = ten", &["shop.template: max_vms: \"ten\" is not a whole number >= 1"]),
        case("max_vms", "max_vms = 0", &["\"0\" is not a whole number >= 1"]),
        case("max_vms", "max_vms = 5.0", &["\"5.0\"", ">= 1"]),
        case("max_vms", "max_vms = +5", &["\"+5\"", ">= 1"]),
        case("min_vms", "min_vms = -1", &["min_vms: \"-1\" is not a whole number >= 0"]),
        case("min_vms", "min_vms = one", &["\"one\"", ">= 0"]),
        case(
            "max_vms",
            "max_vms = 50",
            &["shop.template: max_vms: 50 is above the ceiling of 20 ([conductor] max_vms_ceiling)"],
        ),
        case(
            "max_vms",
            "max_vms = 99999999999999999999999",
            &["99999999999999999999999 is above the ceiling of 20"],
        ),
        case("min_vms", "min_vms = 6", &["shop.template: min_vms: 6 is greater than max_vms (5)"]),
        case("target_response_time", "target_response_time = nan", &["\"nan\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = inf", &["\"inf\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = 0", &["\"0\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = -1", &["\"-1\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = abc", &["\"abc\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = 250ms", &["\"250ms\"", "seconds > 0"]),
        case("target_response_time", "target_response_time =", &["\"\"", "seconds > 0"]),
        case("target_response_time", "target_response_time = 1e-12", &["\"1e-12\"", "out of range"]),
        case("target_response_time", "target_response_time = 90000", &["\"90000\"", "86400 seconds"]),
        case("image", "image =", &["image: the value is empty", "image name"]),
        case("name", "name = my shop", &["name: \"my shop\" is not a valid name", "' '"]),
        case("name", "name = ...", &["\"...\"", "must start with a letter or digit"]),
        case("name", "name = -shop", &["\"-shop\"", "must start with a letter or digit"]),
        case("name", "name = a#b", &["\"a#b\"", "'#'"]),
        case("name", "name = *", &["\"*\"", "'*'"]),
        case("name", "name =", &["name: \"\" is not a valid name", "empty"]),
        case("name", &format!("name = {}", "a".repeat(64)), &["\"aaaa", "64 characters", "at most 63"]),
        case("flavor", "flavor =", &["flavor: the value is empty"]),
        case("network", "network =", &["network: the value is empty"]),
        case("splitter_image", "splitter_image =", &["splitter_image: the value is empty"]),
        case("key_name", "key_name =", &["key_name: the value is empty"]),
        Case {
            // Only at the end of the file: before a line break, rust-ini joins the lines.
            text: "min_vms = 1\nmax_vms = 5\ntarget_response_time = 0.25\nimage = tomcat\\".to_owned(),
            ..case("image", "", &["image: \"tomcat\\\\\"", "backslash"])
        },
        case("image", "image = a\u{7}b", &["\"a\\u{7}b\"", "control character"]),
        Case {
            key: Some("max_vm"),
            ..case(
                "max_vm",
                "max_vm = 5",
                &["shop.template: unknown key \"max_vm\": valid keys are image, min_vms, max_vms, \
                   target_response_time, name, flavor, network, splitter_image, key_name, web_service_time_ms, web_threads, splitter_port, site_path"],
            )
        },
        Case {
            key: Some("Image"),
            ..case("Image", "Image = x", &["unknown key \"Image\""])
        },
        case("max_vms", "max_vms = 5\nmax_vms = 6", &["max_vms: given 2 times (\"5\", \"6\"): give it once"]),
        Case {
            text: format!("{MINIMAL}[template]\nimage = a\n"),
            ..case("image", "", &["image: given 2 times (\"tomcat-web\", \"a\")"])
        },
        Case {
            source: "/etc/autoscaler/templates/my shop.template",
            ..case("name", "", &["/etc/autoscaler/templates/my shop.template: name: not given", "\"my shop\"", "add a name key"])
        },
        Case {
            source: "-",
            ..case("name", "", &["-: name: not given", "\"-\"", "add a name key"])
        },
        file_level(&format!("[web]\n{MINIMAL}"), &["shop.template: section [web] is not allowed: only [template] is allowed"]),
        file_level(&format!("{MINIMAL}[DEFAULT]\n"), &["section [DEFAULT]", "only [template]"]),
        file_level(&format!("{MINIMAL}foo\nname = x\n"), &["shop.template: line 5: not valid INI: expected `name = value`"]),
        file_level(&format!("{MINIMAL}foo\n[web]\nname = x\n"), &["shop.template: line 5: not valid INI"]),
        file_level(&format!("[a\nb]\n{MINIMAL}"), &["shop.template: line 1: not valid INI: a section header must end with ']'"]),
        file_level(&format!("{MINIMAL}[template"), &["shop.template: line ", "not valid INI"]),
        file_level(&format!("[template] # shop\n{MINIMAL}"), &["shop.template: line 1: not valid INI: a section header must end with ']'"]),
        file_level(&format!("{MINIMAL}trailing"), &["not valid INI"]),
    ];
    let mut cases = cases;
    for key in ["image", "min_vms", "max_vms", "target_response_time"] {
        let text: String = MINIMAL
            .lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect();
        cases.push(Case {
            text,
            ..case(key, "", &["required key is missing", "expected"])
        });
    }

    for case in cases {
        let err = parse_err(case.source, &case.text, case.ceiling);
        assert_eq!(err.file(), case.source);
        let rendered = err.to_string();
        let wanted_prefix = match case.key {
            Some(key)
                if key.starts_with(|c: char| c.is_ascii_lowercase())
                    && VALID_KEYS.contains(&key) =>
            {
                format!("{}: {key}: ", case.source)
            }
            Some(key) => format!("{}: unknown key {key:?}", case.source),
            None => format!("{}: ", case.source),
        };
        let line = rendered
            .lines()
            .find(|line| case.contains.iter().all(|fragment| line.contains(fragment)))
            .unwrap_or_else(|| {
                panic!(
                    "no line of\n{rendered}\ncontains all of {:?}",
                    case.contains
                )
            });
        assert!(
            line.starts_with(&wanted_prefix),
            "{line:?} should start with {wanted_prefix:?}"
        );
        let problem = &err.problems()[rendered.lines().position(|l| l == line).unwrap()];
        assert_eq!(problem.key(), case.key, "{line}");
        // Messages: lowercase after the file, no trailing period.
        assert!(!line.ends_with('.'), "{line}");
    }
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let text = "\
[template]
name = my shop
min_vms = 9
max_vms = 50
target_response_time = abc
flavor =
max_vm = 5
";
    let err = parse_err("shop.template", text, CEILING);
    let rendered = err.to_string();
    let expected = [
        "shop.template: unknown key \"max_vm\": valid keys are image, min_vms, max_vms, target_response_time, \
         name, flavor, network, splitter_image, key_name, web_service_time_ms, web_threads, \
         splitter_port, site_path",
        "shop.template: image: required key is missing (expected an image name or id)",
        "shop.template: target_response_time: \"abc\" is not a number of seconds > 0 (such as 0.25)",
        "shop.template: name: \"my shop\" is not a valid name: it contains ' ': only letters, digits, '_', '.' \
         and '-' are allowed",
        "shop.template: flavor: the value is empty (expected a flavor name or id; remove the line if the key is \
         optional)",
        "shop.template: max_vms: 50 is above the ceiling of 20 ([conductor] max_vms_ceiling)",
    ];
    assert_eq!(
        rendered.lines().collect::<Vec<_>>(),
        expected,
        "\n{rendered}"
    );
    assert_eq!(err.problems().len(), expected.len());
    // min_vms = 9 <= max_vms = 50: not a problem, even though max_vms is.
    assert!(!rendered.contains("min_vms:"));
}

#[test]
fn an_unreadable_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.template");
    let err = Template::load(&path, CEILING).unwrap_err();
    assert_eq!(err.file(), path.display().to_string());
    assert!(matches!(
        err.problems(),
        [TemplateProblem::Unreadable { .. }]
    ));
    assert!(err
        .to_string()
        .starts_with(&format!("{}: cannot read the file: ", path.display())));
    // A directory is unreadable too.
    let err = Template::load(dir.path(), CEILING).unwrap_err();
    assert!(err.to_string().contains("cannot read the file"), "{err}");
}

#[test]
fn load_reads_the_file_and_names_the_template_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.template");
    std::fs::write(&path, MINIMAL).unwrap();
    let template = Template::load(&path, CEILING).unwrap();
    assert_eq!(template, parse(MINIMAL).unwrap());
    std::fs::write(&path, "max_vms = 50\n").unwrap();
    let err = Template::load(&path, CEILING).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", path.display())),
        "{err}"
    );
}

#[test]
fn validate_name_follows_the_rule() {
    for good in [
        "shop",
        "a",
        "0",
        "web-1",
        "web_1",
        "shop.v2",
        "A.b-C_9",
        &"x".repeat(63),
    ] {
        assert_eq!(validate_name(good), Ok(()), "{good:?}");
    }
    for bad in [
        "",
        ".",
        "...",
        "-a",
        "_a",
        ".a",
        "my shop",
        "a#b",
        "a*b",
        "a/b",
        "é",
        "a\n",
        &"x".repeat(64),
    ] {
        let reason = validate_name(bad).expect_err(bad);
        assert!(
            !reason.ends_with('.') && reason.starts_with("it "),
            "{reason}"
        );
    }
}

#[test]
fn json_is_readable_and_round_trips() {
    let template = parse(FULL).unwrap();
    let json = serde_json::to_value(&template).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "name": "shop",
            "image": "tomcat-web",
            "min_vms": 1,
            "max_vms": 5,
            "target_response_time": 0.25,
            "flavor": "m1.small",
            "network": "private",
            "splitter_image": "modjk-splitter",
            "key_name": "ops",
        })
    );
    let back: Template = serde_json::from_value(json).unwrap();
    assert_eq!(back, template);

    let minimal = parse(MINIMAL).unwrap();
    let text = serde_json::to_string(&minimal).unwrap();
    assert!(
        !text.contains("flavor"),
        "absent options are left out: {text}"
    );
    assert_eq!(serde_json::from_str::<Template>(&text).unwrap(), minimal);
}

#[test]
fn json_deserialization_rechecks_the_invariants_but_not_the_ceiling() {
    let base = serde_json::json!({
        "name": "shop", "image": "tomcat-web", "min_vms": 1, "max_vms": 5, "target_response_time": 0.25,
    });
    let with = |key: &str, value: serde_json::Value| {
        let mut json = base.clone();
        json[key] = value;
        json
    };
    let rejected = [
        (
            with("min_vms", 6.into()),
            "min_vms: 6 is greater than max_vms (5)",
        ),
        (
            with("max_vms", 0.into()),
            "max_vms: \"0\" is not a whole number >= 1",
        ),
        (
            with("name", "my shop".into()),
            "name: \"my shop\" is not a valid name",
        ),
        (with("image", "".into()), "image: the value is empty"),
        (
            with("image", " x".into()),
            "image: \" x\" starts or ends with blanks",
        ),
        (
            with("flavor", "a\nb".into()),
            "flavor: \"a\\nb\" contains a control character",
        ),
        (
            with("target_response_time", 0.0.into()),
            "target_response_time: \"0\" is not a number",
        ),
        (
            with("target_response_time", (-1.5).into()),
            "target_response_time: \"-1.5\" is not a number",
        ),
        (
            with("target_response_time", 1e9.into()),
            "target_response_time: \"1000000000\" is out of range",
        ),
        (with("min_vms", (-1).into()), "invalid value"),
        (with("extra", 1.into()), "unknown field `extra`"),
    ];
    for (json, message) in rejected {
        let err = serde_json::from_value::<Template>(json.clone()).expect_err(&json.to_string());
        assert!(err.to_string().contains(message), "{json}: {err}");
    }
    let mut json = base.clone();
    json.as_object_mut().unwrap().remove("image");
    assert!(serde_json::from_value::<Template>(json).is_err());
    // The ceiling is the loader's business: a template in a message may exceed today's.
    let big: Template = serde_json::from_value(with("max_vms", 1000.into())).unwrap();
    assert_eq!(big.max_vms(), 1000);
}

#[test]
fn to_ini_round_trips_through_parse() {
    for text in [MINIMAL, FULL] {
        let template = parse(text).unwrap();
        let ini = template.to_ini();
        // Another file name: the name key, not the stem, carries the name.
        assert_eq!(
            Template::parse("other.template", &ini, CEILING).unwrap(),
            template,
            "\n{ini}"
        );
    }
    assert_eq!(
        parse(FULL).unwrap().to_ini(),
        "[template]\nname = shop\nimage = tomcat-web\nmin_vms = 1\nmax_vms = 5\ntarget_response_time = 0.25\n\
         flavor = m1.small\nnetwork = private\nsplitter_image = modjk-splitter\nkey_name = ops\n"
    );
}

#[test]
fn seconds_are_written_exactly() {
    for (text, nanos, written) in [
        ("0.25", 250_000_000, "0.25"),
        ("0.3", 300_000_000, "0.3"),
        ("2", 2_000_000_000, "2"),
        ("2.000", 2_000_000_000, "2"),
        ("1e-9", 1, "0.000000001"),
        ("0.1234567894", 123_456_789, "0.123456789"),
        ("86400", 86_400_000_000_000, "86400"),
    ] {
        let mut problems = Vec::new();
        let duration = response_time(text.parse().unwrap(), text, &mut problems).unwrap();
        assert_eq!(duration, Duration::from_nanos(nanos), "{text}");
        assert_eq!(format_seconds(duration), written);
    }
}

#[test]
fn valid_keys_lists_each_key_once() {
    let mut keys = VALID_KEYS.to_vec();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), VALID_KEYS.len());
    for key in VALID_KEYS {
        assert_ne!(expected(key), "a value", "{key} has no description");
    }
}

/// Lines that look like a template, good and bad, for the fuzzing below.
fn template_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        proptest::sample::select(VALID_KEYS.to_vec()).prop_map(str::to_owned),
        "[a-z_]{0,12}",
        "\\PC{0,8}",
    ];
    let value = prop_oneof![
        "[0-9]{1,3}",
        "-?[0-9]{0,3}\\.?[0-9]{0,3}(e-?[0-9])?",
        "\\PC{0,12}",
        "[ \\t\\\\#;\\[\\]=:]{0,4}"
    ];
    prop_oneof![
        4 => (key, "[ \\t]{0,2}[=:][ \\t]{0,2}", value).prop_map(|(k, sep, v)| format!("{k}{sep}{v}")),
        1 => "\\[[a-zA-Z ]{0,10}\\]?",
        1 => "[#;][^\\n]{0,10}",
        1 => "[ \\t\\r]{0,3}",
        1 => "\\PC{0,16}",
    ]
}

fn text_template() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(template_line(), 0..12),
        "(\n|\r\n)",
    )
        .prop_map(|(lines, eol)| lines.join(&eol))
}

/// Templates that are mostly valid: each key at most once, in any order, with values that
/// are usually right and sometimes odd (blanks, `#`, backslashes, huge numbers, exponents).
fn near_valid_template() -> impl Strategy<Value = String> {
    let text = "\\PC{0,12}";
    let values = (
        prop_oneof![8 => "[a-z][a-z0-9-]{0,10}", 1 => text],
        prop_oneof![8 => "[0-9]", 1 => "[0-9]{1,22}"],
        prop_oneof![8 => "[1-9][0-9]?", 1 => "[0-9]{1,22}"],
        prop_oneof![
            8 => "[0-9]{0,2}\\.[0-9]{1,12}",
            1 => any::<f64>().prop_map(|f| f.to_string()),
            1 => "[0-9]e-?[0-9]{1,2}",
        ],
        prop_oneof![8 => "[A-Za-z0-9][A-Za-z0-9_.-]{0,70}", 1 => text],
        proptest::collection::vec(prop_oneof![8 => "[a-z0-9.-]{1,10}", 1 => text], 4),
    );
    let present = proptest::collection::vec(proptest::bool::weighted(0.97), VALID_KEYS.len());
    (values, present, any::<bool>())
        .prop_flat_map(
            |((image, min, max, target, name, optional), present, header)| {
                let values = [vec![image, min, max, target, name], optional].concat();
                let lines: Vec<String> = VALID_KEYS
                    .iter()
                    .zip(values)
                    .zip(present)
                    .filter(|(_, present)| *present)
                    .map(|((key, value), _)| format!("{key} = {value}"))
                    .collect();
                (Just(lines).prop_shuffle(), Just(header))
            },
        )
        .prop_map(|(lines, header)| {
            let header = if header { "[template]\n" } else { "" };
            format!("{header}{}\n", lines.join("\n"))
        })
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(source in any::<String>(), text in any::<String>(), ceiling in any::<u32>()) {
        let _ = Template::parse(&source, &text, ceiling);
    }

    #[test]
    fn parse_never_panics_and_accepted_templates_round_trip(
        text in prop_oneof![text_template(), near_valid_template()],
        ceiling in 0u32..120,
    ) {
        match Template::parse("fuzz.template", &text, ceiling) {
            Ok(template) => {
                let ini = template.to_ini();
                prop_assert_eq!(&Template::parse("x.template", &ini, ceiling).unwrap(), &template);
                let json = serde_json::to_string(&template).unwrap();
                prop_assert_eq!(&serde_json::from_str::<Template>(&json).unwrap(), &template);
            }
            Err(err) => {
                prop_assert!(!err.problems().is_empty());
                prop_assert_eq!(err.to_string().lines().count(), err.problems().len());
                for line in err.to_string().lines() {
                    prop_assert!(line.starts_with("fuzz.template: "), "{}", line);
                }
            }
        }
    }

    #[test]
    fn vm_counts_are_accepted_exactly_by_the_rule(
        min in prop_oneof![0u64..30, any::<u64>()],
        max in prop_oneof![0u64..30, any::<u64>()],
        ceiling in prop_oneof![0u32..30, any::<u32>()],
    ) {
        let text = format!("image = i\nmin_vms = {min}\nmax_vms = {max}\ntarget_response_time = 0.5\n");
        let accepted = min >= 1 && min <= max && max <= u64::from(ceiling);
        let result = Template::parse("shop.template", &text, ceiling);
        prop_assert_eq!(result.is_ok(), accepted, "{:?}", result);
        if let Ok(template) = result {
            prop_assert_eq!((u64::from(template.min_vms()), u64::from(template.max_vms())), (min, max));
        }
    }

    #[test]
    fn any_valid_response_time_round_trips(nanos in 1u64..=86_400_000_000_000) {
        let template = Template::try_from(RawTemplate {
            name: "shop".into(),
            image: "i".into(),
            min_vms: 1,
            max_vms: 1,
            target_response_time: Duration::from_nanos(nanos).as_secs_f64(),
            flavor: None,
            network: None,
            splitter_image: None,
            key_name: None,
            web_service_time_ms: None,
            web_threads: None,
            splitter_port: None,
            site_path: None,
        }).unwrap();
        prop_assert_eq!(template.target_response_time(), Duration::from_nanos(nanos));
        let json = serde_json::to_string(&template).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Template>(&json).unwrap(), &template);
        prop_assert_eq!(&Template::parse("shop.template", &template.to_ini(), 1).unwrap(), &template);
    }
}

#[test]
fn capacity_overrides_for_local_images() {
    let text = format!("{MINIMAL}web_service_time_ms = 80\nweb_threads = 2\n");
    let template = parse(&text).unwrap();
    assert_eq!(
        (template.web_service_time_ms(), template.web_threads()),
        (Some(80), Some(2))
    );
    assert_eq!(parse(&template.to_ini()).unwrap(), template);
    let json = serde_json::to_string(&template).unwrap();
    assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), template);
    let err = parse(&format!(
        "{MINIMAL}web_threads = 0\nweb_service_time_ms = fast\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("shop.template: web_threads: \"0\" is not a whole number >= 1"),
        "{err}"
    );
    assert!(
        err.contains("shop.template: web_service_time_ms: \"fast\" is not a whole number >= 1"),
        "{err}"
    );
}

#[test]
fn the_splitter_port_and_site_path_are_optional_and_round_trip() {
    let template = parse(MINIMAL).unwrap();
    assert_eq!(
        (template.splitter_port(), template.site_path()),
        (None, None)
    );
    for (port, path) in [("80", "/"), ("8088", "/shop/"), ("65535", "/a.b/c_d/~e-f/")] {
        let text = format!("{MINIMAL}splitter_port = {port}\nsite_path = {path}\n");
        let template = parse(&text).unwrap();
        assert_eq!(template.splitter_port(), Some(port.parse().unwrap()));
        assert_eq!(template.site_path(), Some(path));
        assert_eq!(parse(&template.to_ini()).unwrap(), template);
        let json = serde_json::to_string(&template).unwrap();
        assert_eq!(serde_json::from_str::<Template>(&json).unwrap(), template);
        let metadata = metadata::to_metadata(&template);
        assert_eq!(metadata["autoscaler:tpl:splitter_port"], port);
        assert_eq!(metadata["autoscaler:tpl:site_path"], path);
    }
}

#[test]
fn a_bad_splitter_port_is_named_with_its_file_and_key() {
    for bad in [
        "0",
        "65536",
        "80.0",
        "-1",
        "+80",
        "http",
        "99999999999999999999",
    ] {
        let err = parse_err(
            "shop.template",
            &format!("{MINIMAL}splitter_port = {bad}\n"),
            CEILING,
        );
        assert_eq!(
            err.to_string(),
            format!(
                "shop.template: splitter_port: {bad:?} is not a TCP port (expected a whole number from 1 to 65535)"
            )
        );
        assert_eq!(err.problems()[0].key(), Some("splitter_port"));
    }
    let json = r#"{"name":"shop","image":"i","min_vms":0,"max_vms":1,"target_response_time":1,"splitter_port":0}"#;
    let err = serde_json::from_str::<Template>(json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("splitter_port: \"0\" is not a TCP port"),
        "{err}"
    );
}

#[test]
fn a_bad_site_path_says_what_is_wrong() {
    for (bad, reason) in [
        ("shop/", "it must start and end with '/'"),
        ("/shop", "it must start and end with '/'"),
        ("", "it must start and end with '/'"),
        ("/a b/", "it contains ' ': only letters"),
        ("/shop%20x/", "it contains '%'"),
        ("/$1/", "it contains '$'"),
        ("/a//b/", "it has an empty, '.' or '..' segment"),
        ("//", "it has an empty, '.' or '..' segment"),
        ("/../", "it has an empty, '.' or '..' segment"),
        ("/a/./", "it has an empty, '.' or '..' segment"),
        ("/jkmanager/", "/jkmanager/ is the splitter's status worker"),
        (
            "/jkmanager/x/",
            "/jkmanager/ is the splitter's status worker",
        ),
    ] {
        let text = if bad.is_empty() {
            format!("{MINIMAL}site_path =\n")
        } else {
            format!("{MINIMAL}site_path = {bad}\n")
        };
        let err = parse_err("shop.template", &text, CEILING).to_string();
        assert!(
            err.starts_with(&format!("shop.template: site_path: {bad:?} is not a path the splitter can serve the site at: {reason}")),
            "{bad:?}: {err}"
        );
        assert!(
            err.ends_with(
                "(expected a URL path that starts and ends with '/', such as / or /shop/)"
            ),
            "{err}"
        );
    }
    let long = format!("/{}/", "a".repeat(SITE_PATH_MAX_LEN));
    let err = parse_err(
        "shop.template",
        &format!("{MINIMAL}site_path = {long}\n"),
        CEILING,
    );
    assert!(err.to_string().contains("at most 128 are allowed"), "{err}");
    assert!(check_site_path("/jkmanagers/").is_ok());
    let json = r#"{"name":"shop","image":"i","min_vms":0,"max_vms":1,"target_response_time":1,"site_path":"/a b/"}"#;
    let err = serde_json::from_str::<Template>(json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("site_path: \"/a b/\" is not a path"), "{err}");
}

/// Regression (issue 16, item 5): min_vms = 0 was accepted, and the site then never
/// scaled out (no web VM serves, so no second can be sized). Refused, by a variant of
/// its own naming the key.
#[test]
fn issue_16_min_vms_zero_is_refused_with_the_reason() {
    let text = minimal_with("min_vms", "min_vms = 0");
    let error = parse(&text).unwrap_err();
    let problems = error.problems();
    assert_eq!(problems, [TemplateProblem::MinVmsZero]);
    assert_eq!(problems[0].key(), Some("min_vms"));
    let message = problems[0].to_string();
    assert!(
        message.starts_with("min_vms: 0 is not supported: "),
        "{message}"
    );
    assert!(message.contains("use min_vms = 1 or more"), "{message}");
}
