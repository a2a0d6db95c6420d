//! Per-VM message keys and the MACs on agent messages (issue 17, item 2).
//!
//! The conductors share one secret, the *message key file* (`[agent] message_key_file`):
//! one key per line, the first the current one, an optional second the previous one
//! (rotation, doc/security.md). Each VM gets its own key, derived from the current secret
//! and its name (HKDF-SHA256), in its user data only. A VM's agent signs the exact bytes
//! of every message it publishes (HMAC-SHA256) and sends the MAC and its name in two AMQP
//! headers; the conductor derives the same key from the name and checks the MAC before
//! it reads the body. Pool updates go the other way: the conductor signs them with the
//! splitter's key, and the splitter's agent checks them with its own.
//!
//! Nothing here is hand-made: RustCrypto's `hkdf`, `hmac` and `sha2`, and `hmac`'s
//! constant-time comparison.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use sha2::Sha256;

/// The AMQP header with the name of the VM whose key signed the message.
pub const SIGNER_HEADER: &str = "x-autoscaler-signer";
/// The AMQP header with the MAC (HMAC-SHA256 of the body, base64).
pub const MAC_HEADER: &str = "x-autoscaler-mac";
/// On a pool update only: the MAC under the splitter's key of the previous secret, for a
/// splitter booted before the last rotation (the conductor cannot tell which it holds).
pub const PREVIOUS_MAC_HEADER: &str = "x-autoscaler-mac-previous";
/// A secret line shorter than this is refused (32 characters of base64 or hex carry at
/// least 128 bits).
pub const MIN_SECRET_CHARS: usize = 32;
/// The HKDF `info` prefix: a VM's key is for agent messages and nothing else, and the
/// version lets a later scheme derive different keys from the same secret.
const KEY_INFO: &[u8] = b"autoscaler agent message key v1\0";
/// The HKDF `info` that turns a VM's key into its pool queue's name tag. A message MAC is
/// HMAC over a JSON body (`{...`), never over these bytes, so the tag tells nothing of it.
const POOL_QUEUE_INFO: &[u8] = b"autoscaler splitter pool queue v1";

type HmacSha256 = Hmac<Sha256>;

/// The conductors' shared secrets, as the key file holds them.
#[derive(Clone)]
pub struct MessageSecrets {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

impl std::fmt::Debug for MessageSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageSecrets(hidden)")
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: holds no key (one per line: the current, then optionally the previous)")]
    Empty { path: String },
    #[error("{path}: line {line} is shorter than {MIN_SECRET_CHARS} characters")]
    Short { path: String, line: usize },
    #[error("{path}: more than two keys (the current and the previous)")]
    TooMany { path: String },
    #[error("{path}: readable by others (mode {mode:o}); chmod 600 it")]
    Exposed { path: String, mode: u32 },
}

impl MessageSecrets {
    /// From the key file's text: non-empty lines, `#` comments left out.
    pub fn parse(path: &str, text: &str) -> Result<MessageSecrets, KeyFileError> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if let Some(i) = lines.iter().position(|l| l.len() < MIN_SECRET_CHARS) {
            return Err(KeyFileError::Short {
                path: path.to_owned(),
                line: i + 1,
            });
        }
        match lines.as_slice() {
            [] => Err(KeyFileError::Empty {
                path: path.to_owned(),
            }),
            [current] => Ok(MessageSecrets::new(current.as_bytes(), None)),
            [current, previous] => Ok(MessageSecrets::new(
                current.as_bytes(),
                Some(previous.as_bytes()),
            )),
            _ => Err(KeyFileError::TooMany {
                path: path.to_owned(),
            }),
        }
    }

    /// Reads the key file at `path`, refusing one that others may read.
    pub fn read(path: &std::path::Path) -> Result<MessageSecrets, KeyFileError> {
        use std::os::unix::fs::PermissionsExt as _;
        let shown = path.display().to_string();
        let io = |source| KeyFileError::Io {
            path: shown.clone(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Exposed {
                path: shown,
                mode: mode & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        MessageSecrets::parse(&shown, &text)
    }

    pub fn new(current: &[u8], previous: Option<&[u8]>) -> MessageSecrets {
        MessageSecrets {
            current: current.to_vec(),
            previous: previous.map(<[u8]>::to_vec),
        }
    }

    /// `vm`'s key under the current secret: what its user data carries.
    pub fn vm_key(&self, vm: &str) -> VmKey {
        VmKey::derive(&self.current, vm)
    }

    /// `vm`'s keys under the current secret, then the previous one: a VM booted before the
    /// last rotation holds the second.
    pub fn vm_keys(&self, vm: &str) -> Vec<VmKey> {
        let secrets = std::iter::once(&self.current).chain(self.previous.as_ref());
        secrets.map(|s| VmKey::derive(s, vm)).collect()
    }

    /// The headers that sign `body` (a pool update) for `vm` under each secret, so that
    /// its agent can check it whichever key its user data gave it.
    pub fn headers_for(&self, vm: &str, body: &[u8]) -> FieldTable {
        let mut headers = self.vm_key(vm).headers(vm, body);
        if let Some(previous) = &self.previous {
            let mac = VmKey::derive(previous, vm).sign(body);
            headers.insert(PREVIOUS_MAC_HEADER.into(), long_string(&mac));
        }
        headers
    }

    /// Whether `mac` is `vm`'s MAC of `body` under the current secret or the previous one
    /// (a VM booted before the last rotation).
    pub fn verify(&self, vm: &str, body: &[u8], mac: &[u8]) -> bool {
        let secrets = std::iter::once(&self.current).chain(self.previous.as_ref());
        secrets
            .into_iter()
            .any(|s| VmKey::derive(s, vm).verify(body, mac))
    }
}

/// One VM's message key.
#[derive(Clone, PartialEq, Eq)]
pub struct VmKey([u8; 32]);

impl std::fmt::Debug for VmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VmKey(hidden)")
    }
}

/// A key in an agent's configuration that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message key (32 bytes in base64)")]
pub struct BadVmKey;

impl VmKey {
    fn derive(secret: &[u8], vm: &str) -> VmKey {
        let mut info = KEY_INFO.to_vec();
        info.extend_from_slice(vm.as_bytes());
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret)
            .expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        VmKey(key)
    }

    /// The tag in the name of this VM's pool queue (a splitter's, [`crate::Topology::splitter_queue`]):
    /// 128 bits only this VM and the conductors can compute, so that the agents' shared
    /// broker login, which may read every pool queue, can find only its own
    /// (doc/security.md).
    pub fn pool_queue_tag(&self) -> String {
        let mut tag = [0u8; 16];
        Hkdf::<Sha256>::from_prk(&self.0)
            .expect("a 32-byte key is a valid HKDF-SHA256 pseudo-random key")
            .expand(POOL_QUEUE_INFO, &mut tag)
            .expect("16 bytes is a valid HKDF-SHA256 output length");
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key as the agent's configuration carries it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn from_base64(text: &str) -> Result<VmKey, BadVmKey> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| BadVmKey)?;
        Ok(VmKey(bytes.try_into().map_err(|_| BadVmKey)?))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    /// The MAC of `body`, base64, as the header carries it.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` (the header's base64 bytes) is this key's MAC of `body`, compared in
    /// constant time.
    pub fn verify(&self, body: &[u8], mac: &[u8]) -> bool {
        let Ok(tag) = STANDARD.decode(mac) else {
            return false;
        };
        let mut check = self.mac();
        check.update(body);
        check.verify_slice(&tag).is_ok()
    }

    /// The headers that sign `body` as `signer`'s.
    pub fn headers(&self, signer: &str, body: &[u8]) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(SIGNER_HEADER.into(), long_string(signer));
        headers.insert(MAC_HEADER.into(), long_string(&self.sign(body)));
        headers
    }
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(text.as_bytes().to_vec().into())
}

/// What an agent signs its messages with: its name, its key and its next sequence
/// number. The first is the agent's start time in microseconds, so a restarted agent
/// carries on above the numbers it used before (with the hosts' clocks in NTP's hands).
#[derive(Debug)]
pub struct Signer {
    name: String,
    key: VmKey,
    next: std::sync::atomic::AtomicU64,
}

impl Signer {
    pub fn new(name: impl Into<String>, key: VmKey) -> Signer {
        let start = chrono::Utc::now().timestamp_micros().max(1) as u64;
        Signer {
            name: name.into(),
            key,
            next: std::sync::atomic::AtomicU64::new(start),
        }
    }

    /// `payload` in its envelope from `sender` at `time`, with the next sequence number,
    /// and the headers that sign those exact bytes.
    pub fn seal<P: crate::Payload>(
        &self,
        sender: &str,
        time: chrono::DateTime<chrono::Utc>,
        payload: &P,
    ) -> (Vec<u8>, FieldTable) {
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let body = crate::envelope::encode_seq(sender, time, Some(seq), payload);
        let headers = self.key.headers(&self.name, &body);
        (body, headers)
    }

    /// The agent's key, to check what the conductor signs for it.
    pub fn key(&self) -> &VmKey {
        &self.key
    }
}

/// A message's signer and MAC, as its headers carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub signer: String,
    pub mac: Vec<u8>,
    /// [`PREVIOUS_MAC_HEADER`], on pool updates while a previous secret is kept.
    pub previous_mac: Option<Vec<u8>>,
}

impl Signature {
    /// From a delivery's headers; `None` when either is missing or not a string.
    pub fn of(headers: Option<&FieldTable>) -> Option<Signature> {
        let headers = headers?.inner();
        let text = |name: &str| match headers.get(&ShortString::from(name))? {
            AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
            _ => None,
        };
        let signer = String::from_utf8(text(SIGNER_HEADER)?).ok()?;
        Some(Signature {
            signer,
            mac: text(MAC_HEADER)?,
            previous_mac: text(PREVIOUS_MAC_HEADER),
        })
    }

    /// Whether `key` made one of the MACs on `body` (a pool update, checked by the agent
    /// that holds `key`).
    pub fn made_by(&self, key: &VmKey, body: &[u8]) -> bool {
        let macs = std::iter::once(&self.mac).chain(self.previous_mac.as_ref());
        macs.into_iter().any(|mac| key.verify(body, mac))
    }
}

/// A new secret for a key file: 32 random bytes from the OS, base64 (44 characters).
pub fn new_secret() -> String {
    use rand_core::{OsRng, RngCore as _};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef-current";
    const B: &str = "fedcba9876543210fedcba9876543210-previous";

    #[test]
    fn a_vm_signs_and_the_conductor_checks() {
        let secrets = MessageSecrets::new(A.as_bytes(), None);
        let key = secrets.vm_key("shop-web-1");
        let mac = key.sign(b"{\"x\":1}");
        assert!(secrets.verify("shop-web-1", b"{\"x\":1}", mac.as_bytes()));
        // Another body, another VM's name, another secret, a mangled MAC: refused.
        assert!(!secrets.verify("shop-web-1", b"{\"x\":2}", mac.as_bytes()));
        assert!(!secrets.verify("shop-web-2", b"{\"x\":1}", mac.as_bytes()));
        let other = MessageSecrets::new(B.as_bytes(), None);
        assert!(!other.verify("shop-web-1", b"{\"x\":1}", mac.as_bytes()));
        assert!(!secrets.verify("shop-web-1", b"{\"x\":1}", b"not base64!"));
        assert!(!secrets.verify("shop-web-1", b"{\"x\":1}", b""));
        // Keys differ per VM, and survive their base64 form.
        assert_ne!(key, secrets.vm_key("shop-web-2"));
        assert_eq!(VmKey::from_base64(&key.to_base64()), Ok(key));
        assert_eq!(VmKey::from_base64("c2hvcnQ="), Err(BadVmKey));
    }

    #[test]
    fn after_a_rotation_keys_of_both_secrets_are_accepted() {
        let old = MessageSecrets::new(B.as_bytes(), None).vm_key("w");
        let rotated = MessageSecrets::parse("k", &format!("{A}\n{B}\n")).unwrap();
        assert!(rotated.verify("w", b"m", old.sign(b"m").as_bytes()));
        assert!(rotated.verify("w", b"m", rotated.vm_key("w").sign(b"m").as_bytes()));
        // The next rotation drops B.
        let again = MessageSecrets::parse("k", &format!("# rotated\n{}\n{A}\n", new_secret()));
        assert!(!again.unwrap().verify("w", b"m", old.sign(b"m").as_bytes()));
    }

    #[test]
    fn pool_updates_after_a_rotation_reach_splitters_of_either_key() {
        let old = MessageSecrets::new(B.as_bytes(), None).vm_key("s");
        let rotated = MessageSecrets::parse("k", &format!("{A}\n{B}\n")).unwrap();
        let new = rotated.vm_key("s");
        let signature = Signature::of(Some(&rotated.headers_for("s", b"pool"))).unwrap();
        assert!(signature.made_by(&old, b"pool") && signature.made_by(&new, b"pool"));
        assert!(!signature.made_by(&old, b"other pool"));
        assert!(!signature.made_by(&rotated.vm_key("t"), b"pool"));
        // Without a previous secret, one MAC only.
        let single = MessageSecrets::new(A.as_bytes(), None).headers_for("s", b"pool");
        let signature = Signature::of(Some(&single)).unwrap();
        assert_eq!(signature.previous_mac, None);
        assert!(!signature.made_by(&old, b"pool"));
        // Each key names a pool queue of its own: another VM's, another secret's differ.
        assert_eq!(rotated.vm_keys("s"), vec![new.clone(), old.clone()]);
        assert_eq!(new.pool_queue_tag().len(), 32);
        assert_ne!(new.pool_queue_tag(), old.pool_queue_tag());
        assert_ne!(new.pool_queue_tag(), rotated.vm_key("t").pool_queue_tag());
        assert_eq!(new.pool_queue_tag(), rotated.vm_key("s").pool_queue_tag());
    }

    #[test]
    fn key_files_that_cannot_serve_are_refused() {
        assert!(matches!(
            MessageSecrets::parse("k", "\n# x\n"),
            Err(KeyFileError::Empty { .. })
        ));
        assert!(matches!(
            MessageSecrets::parse("k", &format!("{A}\nshort\n")),
            Err(KeyFileError::Short { line: 2, .. })
        ));
        assert!(matches!(
            MessageSecrets::parse("k", &format!("{A}\n{B}\n{A}\n")),
            Err(KeyFileError::TooMany { .. })
        ));
        assert_eq!(new_secret().len(), 44);
    }

    #[test]
    fn headers_carry_the_signer_and_the_mac() {
        let key = MessageSecrets::new(A.as_bytes(), None).vm_key("s");
        let headers = key.headers("s", b"body");
        let signature = Signature::of(Some(&headers)).unwrap();
        assert_eq!(signature.signer, "s");
        assert!(key.verify(b"body", &signature.mac));
        assert_eq!(Signature::of(None), None);
        assert_eq!(Signature::of(Some(&FieldTable::default())), None);
    }
}
