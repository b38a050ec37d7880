//! `signingKeys`: the public keys that sign this deployment's records (the same list as
//! `GET /.well-known/governance-keys`).

use async_graphql::{Context, Enum, Object};
use governance_core::signing::PublishedKey;

use super::{principal, state};

/// Whether a key signs now or signed before a rotation.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SigningKeyStatus {
    /// Signs new checkpoints.
    Active,
    /// Signed before a rotation; what it signed still verifies with it.
    Retired,
}

pub struct SigningKey(pub PublishedKey);

/// A public key that verifies the service's signed records.
#[Object]
impl SigningKey {
    /// The signed-note key id: 8 hex characters, in every signature this key made.
    async fn key_id(&self) -> &str {
        &self.0.key_id
    }
    /// The key's name, as signature lines carry it.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Always `Ed25519`.
    async fn algorithm(&self) -> &str {
        self.0.algorithm
    }
    /// The 32-byte public key, base64.
    async fn public_key(&self) -> &str {
        &self.0.public_key
    }
    /// The signed-note verifier key, `<name>+<keyId>+<base64(0x01 ‖ public key)>`, as note
    /// verifiers and `governance verify --key` take it.
    async fn verifier_key(&self) -> &str {
        &self.0.verifier_key
    }
    /// ACTIVE (signs new checkpoints) or RETIRED.
    async fn status(&self) -> SigningKeyStatus {
        if self.0.status == "ACTIVE" {
            SigningKeyStatus::Active
        } else {
            SigningKeyStatus::Retired
        }
    }
}

#[derive(Default)]
pub struct SigningQuery;

#[Object]
impl SigningQuery {
    /// The keys that sign this deployment's records: the active one first, then the retired
    /// ones (see `docs/verifying.md`).
    async fn signing_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<SigningKey>> {
        principal(ctx)?;
        Ok(state(ctx)
            .signing
            .published()
            .into_iter()
            .map(SigningKey)
            .collect())
    }
}
