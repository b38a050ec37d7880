//! `me`: who the caller is.

use async_graphql::{Context, ID, Object, SimpleObject};
use governance_entities::{api_key, tenant};
use sea_orm::EntityTrait;

use super::{error::GqlResultExt, principal, scalars::DateTime, state};
use governance_core::CoreError;

#[derive(Default)]
pub struct TenancyQuery;

#[derive(Clone)]
pub struct Tenant(pub tenant::Model);

/// A tenant: the unit of isolation. Every object belongs to exactly one.
#[Object]
impl Tenant {
    /// `ten_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The tenant's unique name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// When the tenant was created.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// Whether enabling or tightening an enforcing BLOCK policy must cite a COMPLETED
    /// simulation of the policy set it leaves (`setRequireSimulation`).
    async fn require_simulation(&self) -> bool {
        self.0.require_simulation
    }
}

impl From<tenant::Model> for Tenant {
    fn from(m: tenant::Model) -> Self {
        Self(m)
    }
}

/// An API key, as it may be shown: never the key itself, only its prefix.
#[derive(SimpleObject, Clone)]
pub struct ApiKey {
    /// `key_…`
    #[graphql(owned)]
    pub id: ID,
    /// The key's name, for people.
    pub name: String,
    /// The first characters of the key, to tell keys apart.
    pub prefix: String,
    /// When the key was issued.
    pub created_at: DateTime,
    /// When the key was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<DateTime>,
    /// What the key may do. Keys issued before roles existed are ADMIN.
    pub roles: Vec<super::enums::KeyRole>,
}

impl From<api_key::Model> for ApiKey {
    fn from(m: api_key::Model) -> Self {
        Self {
            id: ID(m.id),
            name: m.name,
            prefix: m.key_prefix,
            created_at: m.created_at.into(),
            revoked_at: m.revoked_at.map(Into::into),
            roles: governance_core::roles::decode(&m.roles)
                .into_iter()
                .map(Into::into)
                .collect(),
        }
    }
}

/// The caller: its tenant and the key it authenticated with.
#[derive(SimpleObject)]
pub struct Me {
    /// The caller's tenant.
    pub tenant: Tenant,
    /// The key this request authenticated with.
    pub api_key: ApiKey,
}

#[Object]
impl TenancyQuery {
    /// The tenant and API key of this request.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Me> {
        let principal = principal(ctx)?;
        let db = &state(ctx).db;
        let tenant = tenant::Entity::find_by_id(principal.tenant_id.clone())
            .one(db)
            .await
            .map_err(CoreError::from)
            .gql()?
            .ok_or_else(|| CoreError::not_found("Tenant", principal.tenant_id.clone()))
            .gql()?;
        let key = api_key::Entity::find_by_id(principal.key_id.clone())
            .one(db)
            .await
            .map_err(CoreError::from)
            .gql()?
            .ok_or_else(|| CoreError::not_found("ApiKey", principal.key_id.clone()))
            .gql()?;
        Ok(Me {
            tenant: tenant.into(),
            api_key: key.into(),
        })
    }
}
