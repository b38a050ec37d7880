//! Signed download links: an export's content can be fetched without an API key through a URL
//! signed (HMAC-SHA256) over the tenant, the export and an expiry, with a key every replica
//! shares through the database (sealed there under the secrets key).

use governance_entities::export;
use sea_orm::{ConnectionTrait, EntityTrait, QuerySelect, Set};

use crate::{
    error::{CoreError, CoreResult},
    store::Store,
    time::now,
};

/// The name of the key that signs download URLs in `service_keys`.
const DOWNLOAD_KEY: &str = "export_download";
/// How long a signed download URL stays valid.
pub const DOWNLOAD_URL_TTL: chrono::Duration = chrono::Duration::minutes(15);

/// The key that signs download URLs: created once (randomly) and shared by every replica
/// through the database, where it is stored sealed ([`crate::sealing`], bound to its row). A
/// key stored in plaintext by an earlier version is sealed in place here, once.
pub async fn download_key(store: &Store) -> CoreResult<Vec<u8>> {
    use governance_entities::service_key;
    use rand::RngCore;
    use sea_orm::{ColumnTrait, QueryFilter, sea_query::OnConflict};
    let secrets = store.secrets()?;
    let row = crate::sealing::Row {
        table: "service_keys",
        column: "key",
        id: DOWNLOAD_KEY,
    };
    let stored = match service_key::Entity::find_by_id(DOWNLOAD_KEY.to_string())
        .one(store.db())
        .await?
    {
        Some(found) => found,
        None => {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let txn = store.begin().await?;
            service_key::Entity::insert(service_key::ActiveModel {
                name: Set(DOWNLOAD_KEY.to_string()),
                key: Set(secrets.seal(&hex::encode(key), row)?),
                created_at: Set(now()),
            })
            .on_conflict(
                OnConflict::column(service_key::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&*txn)
            .await?;
            txn.commit().await?;
            // Another replica may have won the race: read what is stored.
            service_key::Entity::find_by_id(DOWNLOAD_KEY.to_string())
                .one(store.db())
                .await?
                .ok_or_else(|| {
                    CoreError::Internal(anyhow::anyhow!("the download key was not stored"))
                })?
        }
    };
    let key = secrets.open(&stored.key, row)?;
    if !crate::sealing::is_sealed(&stored.key) {
        // Only if it is still the plaintext read: a replica sealing it meanwhile wins.
        let txn = store.begin().await?;
        service_key::Entity::update_many()
            .col_expr(
                service_key::Column::Key,
                sea_orm::sea_query::Expr::value(secrets.seal(&key, row)?),
            )
            .filter(service_key::Column::Name.eq(DOWNLOAD_KEY))
            .filter(service_key::Column::Key.eq(stored.key.as_str()))
            .exec(&*txn)
            .await?;
        txn.commit().await?;
    }
    hex::decode(key).map_err(|e| CoreError::Internal(e.into()))
}

fn download_signature(key: &[u8], tenant_id: &str, export_id: &str, expires: i64) -> String {
    let message = format!("{tenant_id}.{export_id}.{expires}");
    hex::encode(crate::hashing::hmac_sha256(key, message.as_bytes()))
}

/// A download URL (path and query) that works without an API key until `expires` (Unix
/// seconds): it is signed over the tenant, the export and the expiry.
pub fn signed_download_path(key: &[u8], tenant_id: &str, export_id: &str, expires: i64) -> String {
    format!(
        "/exports/{export_id}/download?expires={expires}&signature={}",
        download_signature(key, tenant_id, export_id, expires)
    )
}

/// The tenant a signed download link is good for, or `None` when the link has expired, was
/// altered, or names no export. The expiry is checked before any read, and only the export's
/// tenant is read to check the signature: its content is loaded only for a link that holds.
pub async fn signed_download_tenant<C: ConnectionTrait>(
    conn: &C,
    key: &[u8],
    export_id: &str,
    expires: i64,
    signature: &str,
) -> CoreResult<Option<String>> {
    if now().timestamp() > expires {
        return Ok(None);
    }
    let tenant: Option<String> = export::Entity::find_by_id(export_id.to_string())
        .select_only()
        .column(export::Column::TenantId)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(tenant.filter(|tenant_id| {
        let expected = download_signature(key, tenant_id, export_id, expires);
        // Constant-time comparison.
        expected.len() == signature.len()
            && expected
                .bytes()
                .zip(signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }))
}
