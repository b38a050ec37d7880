//! What the core's own tests share: a migrated SQLite store of one tenant, in a temporary
//! directory that lives as long as it.

use governance_entities::run;
use sea_orm::EntityTrait;

use crate::{db, roles::KeyRole, store::Store, tenancy};

pub(crate) struct TenantStore {
    pub(crate) store: Store,
    pub(crate) tenant_id: String,
    pub(crate) key_id: String,
    /// Holds the database (and anything else a test writes there) until the test ends.
    pub(crate) dir: tempfile::TempDir,
}

/// A fresh SQLite store, migrated, with the tenant `acme` and its admin key.
pub(crate) async fn tenant_store() -> TenantStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::new(db::migrated_sqlite(dir.path()).await);
    let created = tenancy::create_tenant(&store, "acme", &[KeyRole::Admin])
        .await
        .expect("tenant");
    TenantStore {
        store,
        tenant_id: created.tenant_id,
        key_id: created.key_id,
        dir,
    }
}

/// The run `id` as stored.
pub(crate) async fn run_row(store: &Store, id: &str) -> run::Model {
    run::Entity::find_by_id(id.to_string())
        .one(store.db())
        .await
        .expect("read")
        .expect("the run")
}
