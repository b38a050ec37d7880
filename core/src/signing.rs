//! The deployment's Ed25519 signing keys, kept outside the database, and the C2SP signed-note
//! format they sign in (<https://c2sp.org/signed-note>).
//!
//! - A key has a name (no spaces, no `+`) and a key id: the first four bytes of
//!   `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`, 0x01 being Ed25519's signature type.
//! - The private key is a file (mode 0600): `PRIVATE+KEY+<name>+<key id, 8 hex>+<base64(0x01 ‖
//!   32-byte seed)>`, created on first start in the data directory unless a path is configured
//!   (every replica of a deployment reads the same file).
//! - Its public half is published as a verifier key, `<name>+<key id>+<base64(0x01 ‖ 32-byte
//!   public key)>`, the form note verifiers take. Rotating moves the old verifier key to
//!   `<key file>.retired` (one per line), which stays published, so everything the old key signed
//!   still verifies.
//! - A signed note is its text (UTF-8, ending in a newline), a blank line, then one line per
//!   signature: `— <name> <base64(key id ‖ 64-byte signature of the text)>`.

use std::{
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ed25519_dalek::{Signature, Signer, Verifier};
use sha2::{Digest, Sha256};

use crate::error::{CoreError, CoreResult};

/// The signature type byte of Ed25519 in the signed-note format.
const ED25519: u8 = 0x01;

/// What starts a signature line.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// The four-byte key id of `name` and `public`, as the note format computes it.
fn key_id(name: &str, public: &ed25519_dalek::VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ED25519])
        .chain_update(public.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && c != '+' && !c.is_control())
}

/// A public key that verifies notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    public: ed25519_dalek::VerifyingKey,
    id: [u8; 4],
}

impl VerifierKey {
    /// Parse `<name>+<key id>+<base64(0x01 ‖ public key)>`; the key id must match.
    pub fn parse(text: &str) -> CoreResult<Self> {
        let bad = |why: &str| CoreError::bad_field("key", format!("not a verifier key: {why}"));
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        if !valid_name(name) {
            return Err(bad("the name is empty or holds a space or a `+`"));
        }
        let bytes = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519, public)) = bytes.split_first() else {
            return Err(bad("not an Ed25519 key"));
        };
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("an Ed25519 key has 32 bytes"))?;
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| bad("not a valid Ed25519 point"))?;
        let id = key_id(name, &public);
        if hex::encode(id) != id_hex.to_ascii_lowercase() {
            return Err(bad("the key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_string(),
            public,
            id,
        })
    }

    /// The key id as 8 lowercase hex characters.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }

    /// The raw 32-byte public key, base64.
    pub fn public_key(&self) -> String {
        B64.encode(self.public.as_bytes())
    }

    /// The verifier key string.
    pub fn encoded(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.public.as_bytes());
        format!("{}+{}+{}", self.name, self.key_id(), B64.encode(key))
    }

    /// Does `signature` (from a signature line) carry a valid signature of `text` by this key?
    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        let Some((id, sig)) = signature.split_first_chunk::<4>() else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        id == &self.id && self.public.verify(text.as_bytes(), &sig).is_ok()
    }
}

/// The private key that signs this deployment's checkpoints.
pub struct SigningKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> CoreResult<Self> {
        if !valid_name(name) {
            return Err(CoreError::bad_field(
                "signing.name",
                "a key name has no spaces and no `+`",
            ));
        }
        Ok(Self {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        })
    }

    /// Parse the private key file's text.
    pub fn parse(text: &str) -> CoreResult<Self> {
        let bad = |why: &str| anyhow::anyhow!("not a signing key file: {why}");
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| bad("it must start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<key>").into());
        };
        let bytes = B64.decode(key).map_err(|_| bad("the key is not base64"))?;
        let Some((&ED25519, seed)) = bytes.split_first() else {
            return Err(bad("not an Ed25519 key").into());
        };
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad("an Ed25519 seed has 32 bytes"))?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let parsed = Self {
            name: name.to_string(),
            key,
        };
        if !valid_name(name) || parsed.verifier().key_id() != id_hex.to_ascii_lowercase() {
            return Err(bad("the key id does not match the name and key").into());
        }
        Ok(parsed)
    }

    /// The private key file's text.
    fn encoded(&self) -> String {
        let mut seed = vec![ED25519];
        seed.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}\n",
            self.name,
            self.verifier().key_id(),
            B64.encode(seed)
        )
    }

    pub fn verifier(&self) -> VerifierKey {
        let public = self.key.verifying_key();
        VerifierKey {
            name: self.name.clone(),
            id: key_id(&self.name, &public),
            public,
        }
    }

    /// `text` as a note signed by this key. `text` must end with a newline.
    pub fn sign_note(&self, text: &str) -> String {
        debug_assert!(text.ends_with('\n'));
        let verifier = self.verifier();
        let mut signature = verifier.id.to_vec();
        signature.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        let mut note = String::with_capacity(text.len() + 120);
        note.push_str(text);
        note.push('\n');
        let _ = writeln!(
            note,
            "{SIGNATURE_PREFIX}{} {}",
            self.name,
            B64.encode(signature)
        );
        note
    }
}

/// Why a note does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signed note: {0}")]
    Malformed(&'static str),
    #[error("no signature by a known key (signed by: {0})")]
    UnknownKey(String),
    #[error("the signature of {0} does not verify: the note was altered or not signed by that key")]
    BadSignature(String),
}

/// A note whose signature by a known key verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    /// The signed text (ending in a newline).
    pub text: String,
    /// The key id (8 hex) of the key that verified it.
    pub key_id: String,
}

/// Verify `note` against `keys`: at least one signature line must be by one of them and verify.
pub fn verify_note(note: &str, keys: &[VerifierKey]) -> Result<VerifiedNote, NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let (text, signatures) = (&note[..split + 1], &note[split + 2..]);
    if text.trim().is_empty() {
        return Err(NoteError::Malformed("the text is empty"));
    }
    if !signatures.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the signatures must end with a newline",
        ));
    }
    let mut signers = Vec::new();
    for line in signatures.lines() {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::Malformed(
                "a signature line must start with an em dash",
            ))?;
        let (name, signature) = rest.split_once(' ').ok_or(NoteError::Malformed(
            "a signature line is `— <name> <signature>`",
        ))?;
        let signature = B64
            .decode(signature)
            .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
        signers.push(name.to_string());
        for key in keys.iter().filter(|k| k.name == name) {
            if signature.get(..4) == Some(&key.id[..]) {
                return if key.verifies(text, &signature) {
                    Ok(VerifiedNote {
                        text: text.to_string(),
                        key_id: key.key_id(),
                    })
                } else {
                    Err(NoteError::BadSignature(format!(
                        "{} ({})",
                        key.name,
                        key.key_id()
                    )))
                };
            }
        }
    }
    Err(NoteError::UnknownKey(signers.join(", ")))
}

/// The verifier keys in `text`: the JSON of `GET /.well-known/governance-keys` (or a list of
/// its key objects, or of verifier key strings), or verifier keys one per line (blank lines and
/// `#` comments skipped).
pub fn keys_from_text(text: &str) -> CoreResult<Vec<VerifierKey>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| CoreError::bad_field("key", format!("not JSON: {e}")))?;
        let list = value
            .get("keys")
            .unwrap_or(&value)
            .as_array()
            .cloned()
            .unwrap_or_default();
        let keys: Vec<VerifierKey> = list
            .iter()
            .map(|k| {
                k.as_str()
                    .or_else(|| k.get("verifierKey").and_then(serde_json::Value::as_str))
                    .ok_or_else(|| CoreError::bad_field("key", "a key without a verifierKey"))
                    .and_then(VerifierKey::parse)
            })
            .collect::<CoreResult<_>>()?;
        if keys.is_empty() {
            return Err(CoreError::bad_field("key", "the JSON lists no keys"));
        }
        return Ok(keys);
    }
    let keys: Vec<VerifierKey> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(VerifierKey::parse)
        .collect::<CoreResult<_>>()?;
    if keys.is_empty() {
        return Err(CoreError::bad_field("key", "no verifier key in the text"));
    }
    Ok(keys)
}

/// A public key as the service publishes it (`GET /.well-known/governance-keys`,
/// `signingKeys`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    /// 8 hex characters: the signed-note key id.
    pub key_id: String,
    pub name: String,
    pub algorithm: &'static str,
    /// The 32-byte Ed25519 public key, base64.
    pub public_key: String,
    /// The signed-note verifier key (`<name>+<key id>+<base64>`).
    pub verifier_key: String,
    /// `ACTIVE` (signs now) or `RETIRED` (signed before a rotation; still valid for what it
    /// signed).
    pub status: &'static str,
}

/// The active signing key and the retired verifier keys that stay published.
pub struct KeyRing {
    pub active: SigningKey,
    pub retired: Vec<VerifierKey>,
}

impl KeyRing {
    /// Every public key, the active one first.
    pub fn published(&self) -> Vec<PublishedKey> {
        self.verifiers()
            .into_iter()
            .enumerate()
            .map(|(i, key)| PublishedKey {
                key_id: key.key_id(),
                name: key.name.clone(),
                algorithm: "Ed25519",
                public_key: key.public_key(),
                verifier_key: key.encoded(),
                status: if i == 0 { "ACTIVE" } else { "RETIRED" },
            })
            .collect()
    }

    /// Every verifier key, the active one first.
    pub fn verifiers(&self) -> Vec<VerifierKey> {
        let mut all = vec![self.active.verifier()];
        all.extend(self.retired.iter().cloned());
        all
    }

    /// Read the key at `path` (and its retired keys beside it), creating a new key named `name`
    /// there (mode 0600) when there is none. Whether it was created is the second value.
    pub fn load_or_create(path: &Path, name: &str) -> CoreResult<(Self, bool)> {
        let created = !path.exists()
            && crate::key_file::create_private(
                path,
                &SigningKey::generate(name)?.encoded(),
                "signing key",
            )?;
        Ok((Self::load(path)?, created))
    }

    /// Read the key at `path` and its retired keys.
    pub fn load(path: &Path) -> CoreResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!("cannot read the signing key {}: {err}", path.display())
        })?;
        let active =
            SigningKey::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))?;
        let retired_path = retired_path(path);
        let retired = match std::fs::read_to_string(&retired_path) {
            Ok(text) => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(VerifierKey::parse)
                .collect::<CoreResult<Vec<_>>>()
                .map_err(|err| anyhow::anyhow!("{}: {err}", retired_path.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => {
                return Err(
                    anyhow::anyhow!("cannot read {}: {err}", retired_path.display()).into(),
                );
            }
        };
        Ok(Self { active, retired })
    }

    /// Retire the key at `path` (its verifier key is appended to the retired list, which stays
    /// published) and put a new key named `name` in its place. Returns the new key's verifier.
    pub fn rotate(path: &Path, name: &str) -> CoreResult<VerifierKey> {
        let old = Self::load(path)?;
        let fresh = SigningKey::generate(name)?;
        let mut retired = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(retired_path(path))
            .map_err(|err| anyhow::anyhow!("cannot open the retired keys: {err}"))?;
        writeln!(retired, "{}", old.active.verifier().encoded())
            .and_then(|()| retired.sync_all())
            .map_err(|err| anyhow::anyhow!("cannot record the retired key: {err}"))?;
        crate::key_file::replace_private(path, &fresh.encoded(), "signing key")?;
        Ok(fresh.verifier())
    }
}

fn retired_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".retired");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_note_verifies_and_any_change_is_caught() {
        let key = SigningKey::generate("governance.test").expect("key");
        let verifier = key.verifier();
        assert_eq!(
            VerifierKey::parse(&verifier.encoded()).expect("parses"),
            verifier
        );
        let note = key.sign_note("example.com/log\n3\nq2Z1bGwgaGFzaA==\n");
        let verified = verify_note(&note, std::slice::from_ref(&verifier)).expect("verifies");
        assert_eq!(verified.text, "example.com/log\n3\nq2Z1bGwgaGFzaA==\n");
        assert_eq!(verified.key_id, verifier.key_id());

        let altered = note.replacen("\n3\n", "\n4\n", 1);
        assert!(matches!(
            verify_note(&altered, std::slice::from_ref(&verifier)),
            Err(NoteError::BadSignature(_))
        ));
        let stranger = SigningKey::generate("governance.test")
            .expect("key")
            .verifier();
        assert!(matches!(
            verify_note(&note, &[stranger]),
            Err(NoteError::UnknownKey(_))
        ));
        assert!(verify_note("no signatures\n", &[verifier]).is_err());
    }

    /// Known answers from other implementations: the example of Go's `sumdb/note` package (a
    /// private key, its verifier key and the note it signs; Ed25519 signatures are
    /// deterministic, so signing must reproduce the published note byte for byte) and the
    /// example of the signed-note specification.
    #[test]
    fn notes_match_the_published_examples() {
        let key = SigningKey::parse(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .expect("the Go example key");
        assert_eq!(
            key.verifier().encoded(),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let note = key.sign_note(text);
        assert_eq!(
            note,
            format!(
                "{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
            )
        );

        let spec = VerifierKey::parse(
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        )
        .expect("the specification's key");
        let verified = verify_note(
            "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n",
            &[spec],
        )
        .expect("the specification's note verifies");
        assert_eq!(verified.text, "This is an example message.\n");
        assert_eq!(verified.key_id, "530d903a");
    }

    #[test]
    fn the_key_file_round_trips_and_a_mismatched_id_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("signing.key");
        let (ring, created) = KeyRing::load_or_create(&path, "gov").expect("created");
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, created) = KeyRing::load_or_create(&path, "gov").expect("read");
        assert!(!created);
        assert_eq!(again.active.verifier(), ring.active.verifier());

        let new = KeyRing::rotate(&path, "gov").expect("rotated");
        let rotated = KeyRing::load(&path).expect("read");
        assert_eq!(rotated.active.verifier(), new);
        assert_eq!(rotated.retired, vec![ring.active.verifier()]);
        assert_eq!(rotated.verifiers().len(), 2);

        let text = std::fs::read_to_string(&path).expect("text");
        let tampered = text.replacen("+gov+", "+other+", 1);
        assert!(SigningKey::parse(&tampered).is_err());
    }
}
