//! The secrets of each group (issue 17): the AJP secret its splitter and web VMs share.
//! Made once, by the first conductor that boots a VM of the group, and kept in the
//! database, so every conductor after that uses the same (the database decides a race).
//! It is derived (HKDF-SHA256) from the conductor's key, `<state_path>/conductor.key`
//! (32 bytes from the OS's random source, made on first use), and the group's name: a
//! conductor that lost its database and adopts the group from the cloud's metadata
//! makes the same secret again, so the VMs it boots still match the splitter.

use std::path::Path;

use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;

use super::{is_duplicate, query_error, Result, Store, StoreError};

/// Random bytes in an AJP secret (written as twice as many hex digits).
const AJP_SECRET_BYTES: usize = 32;

/// HKDF's `info` for a group's AJP secret; other secrets derived from a conductor key
/// must use another.
const AJP_SECRET_INFO: &[u8] = b"autoscaler ajp-secret v1\0";

/// The conductor key's file under `state_path`.
pub const CONDUCTOR_KEY_FILE: &str = "conductor.key";

/// The shared secret of a group's AJP connections: mod_jk's `secret` on the splitter,
/// the AJP connector's `secret` (with `secretRequired="true"`) on the web VMs. Lowercase
/// hex digits only, so that it needs no quoting in workers.properties or server.xml.
/// Never printed: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AjpSecret(String);

impl AjpSecret {
    /// A new secret from the OS's random source.
    pub fn generate() -> AjpSecret {
        let mut bytes = [0u8; AJP_SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        AjpSecret::from_bytes(&bytes)
    }

    /// `group`'s secret derived from a conductor key: HKDF-SHA256, no salt, info
    /// [`AJP_SECRET_INFO`] followed by the group's name.
    pub fn derive(key: &[u8], group: &str) -> AjpSecret {
        let mut info = AJP_SECRET_INFO.to_vec();
        info.extend_from_slice(group.as_bytes());
        let mut bytes = [0u8; AJP_SECRET_BYTES];
        Hkdf::<Sha256>::new(None, key)
            .expand(&info, &mut bytes)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        AjpSecret::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> AjpSecret {
        AjpSecret(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A stored secret, if it has the form [`AjpSecret::generate`] gives.
    pub fn parse(text: &str) -> Option<AjpSecret> {
        (text.len() == 2 * AJP_SECRET_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| AjpSecret(text.to_owned()))
    }

    /// The secret's text, for the VM's user data only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AjpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AjpSecret(hidden)")
    }
}

/// The conductor's key, `<state_path>/conductor.key`: read, or made (32 random bytes as
/// hex, mode 0600) when there is none. Two conductors sharing `state_path` read the one
/// made first.
pub fn conductor_key(state_path: &Path) -> std::io::Result<Vec<u8>> {
    let path = state_path.join(CONDUCTOR_KEY_FILE);
    let mut bytes = [0u8; AJP_SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    let made = AjpSecret::from_bytes(&bytes);
    crate::private_file::create_new(&path, made.expose().as_bytes())?;
    let text = std::fs::read_to_string(&path)?;
    let key = text.trim();
    if key.len() < 32 {
        return Err(std::io::Error::other(format!(
            "{}: shorter than 32 characters",
            path.display()
        )));
    }
    Ok(key.as_bytes().to_vec())
}

impl Store {
    /// `group`'s AJP secret, made from `key` (the conductor's) and stored if it has none
    /// yet. Unfenced: any conductor may boot for a group it owns, and a race between two
    /// ends with both reading the one row that was inserted first.
    pub async fn ajp_secret(&self, group: &str, key: &[u8]) -> Result<AjpSecret> {
        let doing = "reading a group's AJP secret";
        if let Some(secret) = self.stored_ajp_secret(group).await? {
            return Ok(secret);
        }
        let inserted =
            sqlx::query("INSERT INTO group_secrets (group_name, ajp_secret) VALUES (?, ?)")
                .bind(group)
                .bind(AjpSecret::derive(key, group).expose().to_owned())
                .execute(&self.pool)
                .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_duplicate(&e) => {}
            Err(e) => return Err(query_error("storing a group's AJP secret")(e)),
        }
        self.stored_ajp_secret(group)
            .await?
            .ok_or_else(|| StoreError::Corrupt {
                what: "AJP secret",
                name: group.to_owned(),
                detail: format!("no row after it was stored ({doing})"),
            })
    }

    async fn stored_ajp_secret(&self, group: &str) -> Result<Option<AjpSecret>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT ajp_secret FROM group_secrets WHERE group_name = ?")
                .bind(group)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_error("reading a group's AJP secret"))?;
        text.map(|text| {
            AjpSecret::parse(&text).ok_or_else(|| StoreError::Corrupt {
                what: "AJP secret",
                name: group.to_owned(),
                detail: "not 64 lowercase hex digits".into(),
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_secret_is_the_groups_and_the_keys() {
        let key = b"0123456789abcdef0123456789abcdef";
        let shop = AjpSecret::derive(key, "shop");
        assert_eq!(shop, AjpSecret::derive(key, "shop"));
        assert_ne!(shop, AjpSecret::derive(key, "blog"));
        assert_ne!(
            shop,
            AjpSecret::derive(b"another key, another conductor..", "shop")
        );
        assert_eq!(AjpSecret::parse(shop.expose()), Some(shop));
        let dir = tempfile::tempdir().unwrap();
        let first = conductor_key(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(conductor_key(dir.path()).unwrap(), first, "made once");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(CONDUCTOR_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn secrets_are_random_hex_and_never_printed() {
        let (a, b) = (AjpSecret::generate(), AjpSecret::generate());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(AjpSecret::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "AjpSecret(hidden)");
        assert!(AjpSecret::parse(&a.expose().to_uppercase()).is_none());
        assert!(AjpSecret::parse("abc").is_none());
        assert!(AjpSecret::parse(&format!("{}\"", &a.expose()[1..])).is_none());
    }
}
