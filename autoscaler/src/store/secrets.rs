//! The secrets of each group (issue 17): the AJP secret its splitter and web VMs share.
//! Made once, by the first conductor that boots a VM of the group, from the OS's random
//! source; the same for every conductor after that (the database decides a race).

use rand_core::{OsRng, RngCore};

use super::{is_duplicate, query_error, Result, Store, StoreError};

/// Random bytes in an AJP secret (written as twice as many hex digits).
const AJP_SECRET_BYTES: usize = 32;

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

impl Store {
    /// `group`'s AJP secret, made and stored if it has none yet. Unfenced: any conductor
    /// may boot for a group it owns, and a race between two ends with both reading the
    /// one row that was inserted first.
    pub async fn ajp_secret(&self, group: &str) -> Result<AjpSecret> {
        let doing = "reading a group's AJP secret";
        if let Some(secret) = self.stored_ajp_secret(group).await? {
            return Ok(secret);
        }
        let inserted =
            sqlx::query("INSERT INTO group_secrets (group_name, ajp_secret) VALUES (?, ?)")
                .bind(group)
                .bind(AjpSecret::generate().expose().to_owned())
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
