//! Black-box tests of template files: the shipped sample and files read from disk.

use std::path::PathBuf;
use std::time::Duration;

use autoscaler::template::{Template, VALID_KEYS};

/// `etc/autoscaler/templates/tomcat.template`, from the workspace root.
fn sample_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../etc/autoscaler/templates/tomcat.template")
}

#[test]
fn shipped_sample_loads_with_the_default_ceiling() {
    let template = Template::load(&sample_path(), 20).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(template.name(), "tomcat");
    assert_eq!(template.image(), "tomcat-web");
    assert_eq!((template.min_vms(), template.max_vms()), (1, 4));
    assert_eq!(template.target_response_time(), Duration::from_millis(200));
    assert_eq!(template.splitter_image(), Some("modjk-splitter"));
    // Nova-only keys are shown commented out.
    assert_eq!(
        (template.flavor(), template.network(), template.key_name()),
        (None, None, None)
    );
}

#[test]
fn shipped_sample_documents_every_key() {
    let text = std::fs::read_to_string(sample_path()).unwrap();
    for key in VALID_KEYS {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("# {key}:"))),
            "the sample does not explain {key}"
        );
    }
}

#[test]
fn shipped_sample_is_rejected_below_its_max_vms() {
    let err = Template::load(&sample_path(), 3).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("tomcat.template: max_vms: 4 is above the ceiling of 3"),
        "{message}"
    );
}

#[test]
fn a_file_with_several_mistakes_reports_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.template");
    std::fs::write(
        &path,
        "[web]\nimage =\nmin_vms = 6\nmax_vms = 5\ntarget_response_time = 0\n",
    )
    .unwrap();
    let err = Template::load(&path, 20).unwrap_err();
    let file = path.display().to_string();
    assert_eq!(err.file(), file);
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|line| line.starts_with(&format!("{file}: "))),
        "{lines:#?}"
    );
    assert!(lines[0].contains("section [web] is not allowed"));
    assert!(lines[1].contains("image: the value is empty"));
    assert!(lines[2].contains("target_response_time: \"0\""));
    assert!(lines[3].contains("min_vms: 6 is greater than max_vms (5)"));
}
