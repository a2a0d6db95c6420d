//! `autoscaler-manage` without a conductor: the generated sample, `config validate`,
//! `template validate`, and the exit codes.

mod common;

use std::path::PathBuf;

use common::{manage_with, stderr, stdout};

fn committed_sample() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../etc/autoscaler/autoscaler.conf.sample");
    std::fs::read_to_string(path).expect("etc/autoscaler/autoscaler.conf.sample")
}

#[test]
fn the_committed_sample_is_the_generated_one() {
    let hint = "regenerate: cargo run -q -p autoscaler --bin autoscaler-manage -- config sample > etc/autoscaler/autoscaler.conf.sample";
    assert!(committed_sample() == autoscaler::conf::sample(), "{hint}");
    let dir = tempfile::tempdir().unwrap();
    let out = manage_with(&dir.path().join("none.conf"), &["config", "sample"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out) == committed_sample(), "{hint}");
}

#[test]
fn config_validate_names_file_section_option_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.conf");
    std::fs::write(
        &file,
        "[DEFAULT]\ntransport_url = rabbit://u:s3cret@h1:notaport/\ndebgu = true\n[conductor]\nmax_vms_ceiling = lots\n",
    )
    .unwrap();
    let out = manage_with(&file, &["config", "validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let file = file.display().to_string();
    assert!(
        err.contains(&format!(
            "WARNING: {file}: [DEFAULT] unknown option \"debgu\""
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("ERROR: {file}: [conductor] max_vms_ceiling = \"lots\": expected an integer from 1 to 10000")),
        "{err}"
    );
    assert!(
        err.contains(&format!("ERROR: {file}: [DEFAULT] transport_url")),
        "{err}"
    );
    assert!(err.contains("notaport"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the password must not be shown: {err}"
    );
    assert!(err.contains("ERROR: 2 error(s)"), "{err}");
}

#[test]
fn config_validate_accepts_devstack_style_files_with_warnings_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("autoscaler.conf");
    std::fs::write(
        &file,
        "[DEFAULT]\ntransport_url = rabbit://stackrabbit:secret@10.0.0.5:5672/\ndebug = True\n\
         logging_context_format_string = %(asctime)s.%(msecs)03d %(color)s%(levelname)s\n\
         [keystone_authtoken]\nauth_type = password\n",
    )
    .unwrap();
    let out = manage_with(&file, &["config", "validate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("OK: "), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("logging_context_format_string"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn template_errors_name_file_and_key_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("shop.template");
    let config = dir.path().join("empty.conf");
    std::fs::write(&config, "").unwrap();
    std::fs::write(
        &template,
        "image = tomcat-web\nmin_vms = 3\nmax_vms = 2\ntarget_response_time = fast\nmax_vm = 4\n",
    )
    .unwrap();
    for args in [["template", "validate"], ["template", "instantiate"]] {
        let out = manage_with(&config, &[args[0], args[1], template.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("ERROR: "), "{err}");
        let file = template.display().to_string();
        for key in ["target_response_time", "min_vms"] {
            assert!(err.contains(&format!("{file}: {key}: ")), "{key} in {err}");
        }
        assert!(
            err.contains(&format!(
                "{file}: unknown key \"max_vm\": valid keys are image,"
            )),
            "{err}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("none.conf");
    for args in [
        &["template"][..],
        &["frobnicate"],
        &["template", "instantiate"],
        &["--format", "yaml", "vm", "list"],
    ] {
        let out = manage_with(&config, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let out = manage_with(
        std::path::Path::new("/nonexistent/autoscaler.conf"),
        &["template", "show"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("ERROR: ")
            && stderr(&out).contains("/nonexistent/autoscaler.conf"),
        "{}",
        stderr(&out)
    );
}
