//! Local images: an image named N is the folder `<images_path>/N` holding an executable
//! `boot` script, which does on the local "VM" what cloud-init does on a real one.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use crate::driver::DriverError;

/// The boot script of `image`, or [`DriverError::UnknownImage`] listing the images there
/// are. An image name is a single path component: `..`, `a/b` and hidden names are unknown.
pub(super) fn boot_script(images_path: &Path, image: &str) -> Result<PathBuf, DriverError> {
    let plain = !image.is_empty() && !image.starts_with('.') && !image.contains('/');
    let script = images_path.join(image).join("boot");
    if plain && is_executable_file(&script) {
        return Ok(script);
    }
    Err(DriverError::UnknownImage {
        image: image.to_owned(),
        looked_in: format!(
            "no executable {}; images in {}",
            script.display(),
            images_path.display()
        ),
        available: available(images_path),
    })
}

/// The images in `images_path`, sorted; none when it cannot be read.
pub(super) fn available(images_path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(images_path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| is_executable_file(&e.path().join("boot")))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(root: &Path, name: &str, mode: u32) {
        let dir = root.join(name);
        fs::create_dir(&dir).unwrap();
        let boot = dir.join("boot");
        fs::write(&boot, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&boot, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn only_folders_with_an_executable_boot_are_images() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        image(root, "tomcat", 0o755);
        image(root, "apache", 0o700);
        image(root, "not-executable", 0o644);
        image(root, ".hidden", 0o755);
        fs::create_dir(root.join("empty")).unwrap();
        assert_eq!(available(root), ["apache", "tomcat"]);
        assert_eq!(
            boot_script(root, "tomcat").unwrap(),
            root.join("tomcat/boot")
        );
        for bad in [
            "not-executable",
            "empty",
            "missing",
            "",
            ".hidden",
            "../x",
            "tomcat/..",
        ] {
            match boot_script(root, bad) {
                Err(DriverError::UnknownImage { available, .. }) => {
                    assert_eq!(available, ["apache", "tomcat"], "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_missing_images_path_has_no_images() {
        assert!(available(Path::new("/nonexistent/autoscaler/images")).is_empty());
    }
}
