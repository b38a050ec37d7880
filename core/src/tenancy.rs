//! Tenants and API keys. A key is random, shown once, and stored only as its sha256; a request
//! presents it as `Authorization: Bearer <key>` and is resolved to a [`Principal`].

use governance_entities::{api_key, tenant};
use rand::RngCore;
use std::collections::{HashMap, HashSet};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QuerySelect, Set,
};

use crate::{
    error::{CoreError, CoreResult},
    hashing::sha256_hex,
    ids::{new_id, prefix},
    roles::{self, Capability, KeyRole},
    store::Store,
    time::now,
};

/// Keys look like `gov_<48 hex>`: 192 random bits, recognisable in logs and secret scanners.
pub const KEY_PREFIX: &str = "gov_";
/// The tenant created on first start of an empty database.
pub const DEFAULT_TENANT: &str = "default";

/// Who is calling: resolved from an API key, carried by every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub tenant_name: String,
    pub key_id: String,
    pub key_name: String,
    /// What the key may do ([`crate::roles`]).
    pub roles: Vec<KeyRole>,
}

impl Principal {
    /// Allow the call if the key's roles grant `capability`, else `FORBIDDEN`.
    pub fn authorize(&self, capability: Capability) -> CoreResult<()> {
        roles::authorize(&self.roles, capability)
    }
}

/// A freshly created key. `secret` exists only here: it is never stored or shown again.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    pub secret: String,
    pub roles: Vec<KeyRole>,
}

fn generate_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The part of a key that may be displayed (`gov_1a2b3c…`), enough to tell keys apart.
fn display_prefix(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX.len() + 6).collect()
}

fn validate_name(what: &str, name: &str) -> CoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(CoreError::bad_input(format!(
            "{what} name `{name}` is invalid: use 1 to 64 letters, digits, `-` or `_`"
        )))
    }
}

async fn insert_key<C: ConnectionTrait>(
    conn: &C,
    tenant: &tenant::Model,
    key_name: &str,
    key_roles: &[KeyRole],
) -> CoreResult<IssuedKey> {
    if key_roles.is_empty() {
        return Err(CoreError::bad_field(
            "role",
            "a key needs at least one role",
        ));
    }
    let secret = generate_secret();
    let key_id = new_id(prefix::API_KEY);
    api_key::ActiveModel {
        id: Set(key_id.clone()),
        tenant_id: Set(tenant.id.clone()),
        name: Set(key_name.to_string()),
        key_hash: Set(sha256_hex(&secret)),
        key_prefix: Set(display_prefix(&secret)),
        created_at: Set(now()),
        revoked_at: Set(None),
        last_used_at: Set(None),
        roles: Set(roles::encode(key_roles)),
    }
    .insert(conn)
    .await?;
    Ok(IssuedKey {
        key_id,
        tenant_id: tenant.id.clone(),
        tenant_name: tenant.name.clone(),
        secret,
        roles: roles::decode(&roles::encode(key_roles)),
    })
}

async fn find_tenant_by_name<C: ConnectionTrait>(
    conn: &C,
    name: &str,
) -> CoreResult<tenant::Model> {
    tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Tenant", name))
}

/// The id of the tenant named `name`.
pub async fn tenant_id_by_name<C: ConnectionTrait>(conn: &C, name: &str) -> CoreResult<String> {
    Ok(find_tenant_by_name(conn, name).await?.id)
}

/// Create a tenant and its first key (with `key_roles`), in one transaction.
pub async fn create_tenant(
    store: &Store,
    name: &str,
    key_roles: &[KeyRole],
) -> CoreResult<IssuedKey> {
    validate_name("tenant", name)?;
    let txn = store.begin().await?;
    let exists = tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .count(&*txn)
        .await?;
    if exists > 0 {
        return Err(CoreError::Conflict(format!(
            "tenant `{name}` already exists"
        )));
    }
    let tenant = tenant::ActiveModel {
        id: Set(new_id(prefix::TENANT)),
        name: Set(name.to_string()),
        created_at: Set(now()),
        require_simulation: Set(false),
    }
    .insert(&*txn)
    .await?;
    let key = insert_key(&*txn, &tenant, "initial", key_roles).await?;
    txn.commit().await?;
    Ok(key)
}

/// Create another key (with `key_roles`) for an existing tenant.
pub async fn create_key(
    db: &DatabaseConnection,
    tenant_name: &str,
    key_name: &str,
    key_roles: &[KeyRole],
) -> CoreResult<IssuedKey> {
    validate_name("key", key_name)?;
    let tenant = find_tenant_by_name(db, tenant_name).await?;
    insert_key(db, &tenant, key_name, key_roles).await
}

/// Revoke a key by its id (`key_…`). Revoking twice is harmless; the first time is kept.
pub async fn revoke_key(db: &DatabaseConnection, key_id: &str) -> CoreResult<api_key::Model> {
    let key = api_key::Entity::find_by_id(key_id.to_string())
        .one(db)
        .await?
        .ok_or_else(|| CoreError::not_found("ApiKey", key_id))?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let mut active: api_key::ActiveModel = key.into();
    active.revoked_at = Set(Some(now()));
    Ok(active.update(db).await?)
}

/// The refusal of a key that is unknown or revoked: the same for both, so a caller learns nothing
/// about which keys exist.
pub fn key_refused() -> CoreError {
    CoreError::Unauthenticated(
        "the API key is not valid: send `Authorization: Bearer <key>` with an active key"
            .to_string(),
    )
}

/// Resolve a presented key to its principal (one read). Unknown and revoked keys are both
/// refused with [`key_refused`].
pub async fn authenticate<C: ConnectionTrait>(conn: &C, presented: &str) -> CoreResult<Principal> {
    authenticate_hash(conn, &hash_of(presented)?).await
}

/// The stored form of a presented key (its sha256); a value that is not a key at all is refused
/// without a read.
fn hash_of(presented: &str) -> CoreResult<String> {
    if !presented.starts_with(KEY_PREFIX) {
        return Err(key_refused());
    }
    Ok(sha256_hex(presented))
}

async fn authenticate_hash<C: ConnectionTrait>(conn: &C, key_hash: &str) -> CoreResult<Principal> {
    let found = api_key::Entity::find()
        .filter(api_key::Column::KeyHash.eq(key_hash))
        .find_also_related(tenant::Entity)
        .one(conn)
        .await?;
    match found {
        Some((key, Some(tenant))) if key.revoked_at.is_none() => Ok(Principal {
            tenant_id: tenant.id,
            tenant_name: tenant.name,
            roles: roles::decode(&key.roles),
            key_id: key.id,
            key_name: key.name,
        }),
        _ => Err(key_refused()),
    }
}

/// An API key of the tenant, by id (revoked ones too): who reported or decided something.
pub async fn key_of<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    key_id: &str,
) -> CoreResult<Option<api_key::Model>> {
    Ok(api_key::Entity::find_by_id(key_id.to_string())
        .filter(api_key::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?)
}

/// The keys among `key_ids` that are not revoked, read in the caller's transaction (one
/// statement). A step writer calls it before it writes, so no step commits under a key revoked
/// before that commit, in this process or any other.
pub async fn active_keys<C: ConnectionTrait>(
    conn: &C,
    key_ids: impl IntoIterator<Item = &str>,
) -> CoreResult<HashSet<String>> {
    let mut ids: Vec<&str> = key_ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    ids.sort_unstable();
    ids.dedup();
    let active: Vec<String> = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Id)
        .filter(api_key::Column::Id.is_in(ids))
        .filter(api_key::Column::RevokedAt.is_null())
        .into_tuple()
        .all(conn)
        .await?;
    Ok(active.into_iter().collect())
}

/// When a presented key is checked against the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// Before the request does anything.
    Now,
    /// When what the request writes commits. For requests that only record steps: the step
    /// writer checks every key in the committing transaction ([`active_keys`]), so a key seen
    /// recently need not be read again first.
    AtCommit,
}

/// The principals of keys seen recently, by the sha256 of the key (never the key itself).
/// [`KeyCheck::AtCommit`] requests are answered from it without a read; every other request
/// reads the key, which also refreshes or drops its entry. A revoked key therefore never gets
/// past a check: a read refuses it, and a commit refuses it.
#[derive(Default)]
pub struct KeyCache {
    principals: std::sync::Mutex<HashMap<String, Principal>>,
}

impl KeyCache {
    /// Keys remembered before the cache starts again from empty (it refills from reads).
    const MAX_KEYS: usize = 10_000;

    /// Resolve a presented key, reading it unless `check` is [`KeyCheck::AtCommit`] and it was
    /// seen recently.
    pub async fn authenticate<C: ConnectionTrait>(
        &self,
        conn: &C,
        presented: &str,
        check: KeyCheck,
    ) -> CoreResult<Principal> {
        let hash = hash_of(presented)?;
        if check == KeyCheck::AtCommit
            && let Some(known) = self.entries().get(&hash)
        {
            return Ok(known.clone());
        }
        match authenticate_hash(conn, &hash).await {
            Ok(principal) => {
                let mut entries = self.entries();
                if entries.len() >= Self::MAX_KEYS {
                    entries.clear();
                }
                entries.insert(hash, principal.clone());
                Ok(principal)
            }
            Err(err) => {
                if matches!(err, CoreError::Unauthenticated(_)) {
                    self.entries().remove(&hash);
                }
                Err(err)
            }
        }
    }

    /// Drop a key a commit refused (it was revoked): its next request reads it again.
    pub fn forget(&self, presented: &str) {
        self.entries().remove(&sha256_hex(presented));
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Principal>> {
        // A poisoned map only means a panic elsewhere mid-update; the map is still usable.
        self.principals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// On an empty database, create the `default` tenant and return its key (to print once).
/// Returns `None` when any tenant exists, so restarts and concurrent replicas never make two.
pub async fn bootstrap_default(store: &Store) -> CoreResult<Option<IssuedKey>> {
    let db = store.db();
    if tenant::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    match create_tenant(store, DEFAULT_TENANT, &[KeyRole::Admin]).await {
        Ok(key) => Ok(Some(key)),
        // Another replica won the race: the tenant exists, which is all we wanted.
        Err(CoreError::Conflict(_)) => Ok(None),
        Err(CoreError::Internal(err))
            if tenant::Entity::find()
                .filter(tenant::Column::Name.eq(DEFAULT_TENANT))
                .count(db)
                .await?
                > 0 =>
        {
            tracing::debug!(error = %err, "default tenant created concurrently");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_prefixed() {
        let a = generate_secret();
        let b = generate_secret();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 48);
        assert_ne!(a, b);
        assert_eq!(display_prefix(&a).len(), KEY_PREFIX.len() + 6);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("tenant", "acme-prod_1").is_ok());
        assert!(validate_name("tenant", "").is_err());
        assert!(validate_name("tenant", "has space").is_err());
        assert!(validate_name("tenant", &"x".repeat(65)).is_err());
    }
}
