//! Encryption at rest of the secrets the service keeps in its database (webhook signing secrets,
//! the download-link key), under a key kept outside the database.
//!
//! The key is 32 random bytes in a file (`secrets.key_path`, created 0600 on first start, like
//! the signing key). A secret is stored as `enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`,
//! sealed with XChaCha20-Poly1305 (RustCrypto) under a fresh random 24-byte nonce, and with
//! the identity of its row (table, column, row id) as associated data: a ciphertext copied to
//! another row, or altered, does not open. Whoever reads the database (a dump, a backup, a
//! replica's disk) without the key file learns nothing of the secrets; the key file must
//! therefore be backed up beside the database, and every replica must read the same one.
//!
//! A stored value without the `enc:` prefix is a plaintext secret written before sealing
//! existed; it is read as it is, and sealed in place at start-up
//! (`webhooks::seal_plaintext_secrets`, `exports::download_key`). A sealed value under another
//! key, or one that does not open, is an error naming the row, never garbage.

use std::path::Path;

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, CoreResult};

/// The prefix of a sealed value, with its format version.
const PREFIX_V1: &str = "enc:v1:";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Where a sealed value lives: its associated data, so it opens only there.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub id: &'a str,
}

impl Row<'_> {
    fn associated_data(&self) -> String {
        format!(
            "governance-sealed:v1:{}.{}:{}",
            self.table, self.column, self.id
        )
    }
}

impl std::fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{} of `{}`", self.table, self.column, self.id)
    }
}

/// The key that seals stored secrets.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    id: String,
    /// Set once the process has sealed every stored secret ([`seal_stored_secrets`]): from then
    /// on a plaintext value is refused, since only a write outside the service can put one
    /// there (and a known plaintext would let its writer mint download links or forge
    /// webhook signatures).
    refuse_plaintext: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("id", &self.id).finish()
    }
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        // The id names the key in each sealed value without revealing anything about it.
        let digest = Sha256::new()
            .chain_update(b"governance secrets key id\0")
            .chain_update(bytes)
            .finalize();
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            id: hex::encode(&digest[..8]),
            refuse_plaintext: Default::default(),
        }
    }

    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        Self::from_bytes(&random_key())
    }

    /// The key's id, as it appears in sealed values.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Read the key at `path`, or create it there (mode 0600) when there is no file. Returns
    /// whether it was created.
    pub fn load_or_create(path: &Path) -> CoreResult<(Self, bool)> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let bytes = random_key();
        let created = crate::key_file::create_private(
            path,
            &format!("{}\n", STANDARD.encode(bytes)),
            "secrets key",
        )?;
        // Read back what is on disk: another process may have created it first.
        Ok((Self::load(path)?, created))
    }

    /// Read the key at `path`: one line, the base64 of 32 bytes.
    pub fn load(path: &Path) -> CoreResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!("cannot read the secrets key {}: {err}", path.display())
        })?;
        let bytes = STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes).ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the secrets key {} is not the base64 of 32 bytes",
                    path.display()
                )
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// `plaintext` sealed for `row`.
    pub fn seal(&self, plaintext: &str, row: Row<'_>) -> CoreResult<String> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = row.associated_data();
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("cannot seal {row}"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX_V1}{}:{}", self.id, STANDARD.encode(out)))
    }

    /// From now on, refuse plaintext values (every stored secret has been sealed).
    pub fn refuse_plaintext(&self) {
        self.refuse_plaintext
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The secret stored for `row`: opened when sealed; as it is when it predates sealing,
    /// until [`Self::refuse_plaintext`].
    pub fn open(&self, stored: &str, row: Row<'_>) -> CoreResult<String> {
        if !is_sealed(stored) {
            if self
                .refuse_plaintext
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Err(internal(format!(
                    "{row} holds a plaintext value where a sealed one belongs: it was written \
                     outside the service"
                )));
            }
            return Ok(stored.to_string());
        }
        let Some(rest) = stored.strip_prefix(PREFIX_V1) else {
            return Err(internal(format!(
                "{row} is sealed in a format this version does not know"
            )));
        };
        let (key_id, data) = rest
            .split_once(':')
            .ok_or_else(|| internal(format!("{row} is not a well-formed sealed value")))?;
        if key_id != self.id {
            return Err(internal(format!(
                "{row} was sealed with the secrets key `{key_id}`, but the key in use is `{}`: \
                 point `secrets.key_path` at the deployment's key file",
                self.id
            )));
        }
        let data = STANDARD
            .decode(data)
            .map_err(|_| internal(format!("{row} is not a well-formed sealed value")))?;
        if data.len() < NONCE_LEN {
            return Err(internal(format!("{row} is not a well-formed sealed value")));
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| internal(format!("{row} is not a well-formed sealed value")))?;
        let aad = row.associated_data();
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                internal(format!(
                    "{row} does not open: it was altered, or copied from another row"
                ))
            })?;
        String::from_utf8(plain).map_err(|_| internal(format!("{row} is not UTF-8")))
    }
}

/// What [`seal_stored_secrets`] found.
pub struct SealedAtStart {
    /// Webhook secrets it sealed (stored in plaintext by an earlier version).
    pub webhook_secrets: usize,
    /// The download-link key, opened (and sealed in place if it was plaintext).
    pub download_key: Vec<u8>,
}

/// Seal every secret still stored in plaintext (webhook secrets, the download key), then refuse
/// plaintext from now on. Every process that holds the key runs it once at start-up; it is
/// idempotent, so replicas and workers may run it at the same time.
pub async fn seal_stored_secrets(store: &crate::store::Store) -> CoreResult<SealedAtStart> {
    let webhook_secrets = crate::webhooks::seal_plaintext_secrets(store).await?;
    let download_key = crate::exports::download_key(store).await?;
    store.secrets()?.refuse_plaintext();
    Ok(SealedAtStart {
        webhook_secrets,
        download_key,
    })
}

/// Whether a stored value is sealed (as opposed to a plaintext secret from before).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with("enc:")
}

fn internal(message: String) -> CoreError {
    CoreError::Internal(anyhow::anyhow!(message))
}

fn random_key() -> [u8; KEY_LEN] {
    let mut bytes = [0u8; KEY_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: Row<'static> = Row {
        table: "webhooks",
        column: "secret",
        id: "whk_a",
    };

    #[test]
    fn a_sealed_secret_opens_only_in_its_row_and_under_its_key() {
        let key = SecretsKey::generate();
        let sealed = key.seal("whsec_abc", HOOK).expect("seal");
        assert!(
            sealed.starts_with(&format!("enc:v1:{}:", key.id())),
            "{sealed}"
        );
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(
            sealed,
            key.seal("whsec_abc", HOOK).expect("seal"),
            "fresh nonces"
        );
        assert_eq!(key.open(&sealed, HOOK).expect("open"), "whsec_abc");

        let other_row = Row {
            id: "whk_b",
            ..HOOK
        };
        let err = key.open(&sealed, other_row).unwrap_err().to_string();
        assert!(err.contains("copied from another row"), "{err}");
        let other_column = Row {
            table: "service_keys",
            column: "key",
            id: "whk_a",
        };
        assert!(key.open(&sealed, other_column).is_err());

        let err = SecretsKey::generate().open(&sealed, HOOK).unwrap_err();
        assert!(
            err.to_string().contains("was sealed with the secrets key"),
            "{err}"
        );

        // One flipped byte of the ciphertext.
        let (head, data) = sealed.rsplit_once(':').expect("parts");
        let mut bytes = STANDARD.decode(data).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = format!("{head}:{}", STANDARD.encode(bytes));
        assert!(key.open(&altered, HOOK).is_err());
        assert!(key.open("enc:v9:x:y", HOOK).is_err());
        assert!(key.open("enc:v1:nocolon", HOOK).is_err());
    }

    #[test]
    fn plaintext_is_refused_once_everything_was_sealed() {
        let key = SecretsKey::generate();
        let row = HOOK;
        assert_eq!(key.open("whsec_known", row).unwrap(), "whsec_known");
        key.refuse_plaintext();
        let err = key.open("whsec_known", row).unwrap_err();
        assert!(err.to_string().contains("plaintext"), "{err}");
        let sealed = key.seal("whsec_real", row).unwrap();
        assert_eq!(key.open(&sealed, row).unwrap(), "whsec_real");
    }

    #[test]
    fn plaintext_from_before_sealing_reads_as_it_is() {
        let key = SecretsKey::generate();
        assert!(!is_sealed("whsec_plain"));
        assert_eq!(key.open("whsec_plain", HOOK).expect("open"), "whsec_plain");
    }

    #[test]
    fn the_key_file_is_created_private_once_and_read_back() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys/secrets.key");
        let (key, created) = SecretsKey::load_or_create(&path).expect("create");
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = SecretsKey::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(again.id(), key.id());
        let sealed = key.seal("s", HOOK).expect("seal");
        assert_eq!(again.open(&sealed, HOOK).expect("open"), "s");

        std::fs::write(&path, "not a key\n").expect("overwrite");
        let err = SecretsKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not the base64 of 32 bytes"), "{err}");
        let err = SecretsKey::load(&dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the secrets key"), "{err}");
    }
}
