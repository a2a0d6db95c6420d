//! `autoscaler-manage key create`: the message key file every conductor shares
//! (`[agent] message_key_file`, issue 17), made or rotated. A rotation puts a new key
//! first and keeps the current one second, so VMs booted before it still verify; the
//! key before that is dropped (doc/security.md, "Rotating the message key").

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::messaging::signing::{new_secret, MessageSecrets};

/// Makes the key file at `path` (mode 0600), or with `rotate` puts a new key before the
/// current one of the file there. Never prints a key.
pub fn create(path: &Path, rotate: bool) -> Result<String> {
    let shown = path.display();
    let text = match (path.exists(), rotate) {
        (true, false) => bail!("{shown} exists; --rotate replaces its previous key"),
        (false, true) => bail!("{shown} does not exist: nothing to rotate"),
        (false, false) => format!("{}\n", new_secret()),
        (true, true) => {
            let old = std::fs::read_to_string(path).with_context(|| format!("reading {shown}"))?;
            MessageSecrets::parse(&shown.to_string(), &old)?;
            let current = old
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or_default();
            format!("{}\n{current}\n", new_secret())
        }
    };
    let staged = path.with_extension("new");
    let _ = std::fs::remove_file(&staged);
    let made = crate::private_file::create_new(&staged, text.as_bytes())
        .with_context(|| format!("creating {}", staged.display()))?;
    if !made {
        bail!("{}: in the way (could not be removed)", staged.display());
    }
    std::fs::rename(&staged, path).with_context(|| format!("replacing {shown}"))?;
    Ok(match rotate {
        true => format!("{shown}: a new current key; the one before is kept as the previous"),
        false => format!("{shown}: created (mode 0600)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_rotate_keeps_the_key_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("message.key");
        assert!(create(&path, true).is_err(), "nothing to rotate");
        create(&path, false).unwrap();
        assert!(create(&path, false).is_err(), "never overwritten");
        let first = MessageSecrets::read(&path).unwrap();
        let signed = first.vm_key("w").sign(b"m");
        create(&path, true).unwrap();
        let rotated = MessageSecrets::read(&path).unwrap();
        assert!(rotated.verify("w", b"m", signed.as_bytes()));
        assert_ne!(rotated.vm_key("w"), first.vm_key("w"));
        create(&path, true).unwrap();
        let again = MessageSecrets::read(&path).unwrap();
        assert!(
            !again.verify("w", b"m", signed.as_bytes()),
            "two rotations drop it"
        );
    }
}
