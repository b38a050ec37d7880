//! Policy snapshots: the immutable, content-addressed policy set a run is checked against.
//!
//! `policies_json` lists the applicable enabled policies sorted by id; `thresholds_json` maps each
//! policy id to its rule. Both are canonical JSON, and `content_hash = sha256(policies_json ‖
//! thresholds_json)` (plain concatenation), so anyone holding the two texts can recompute it. The
//! public id is `SNAP-` + the first 12 hex of the hash: the same policy set gives the same id.

use governance_entities::{enums::PolicyMode, policy, policy_snapshot, policy_version};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, Select, Statement,
    sea_query::{Expr, ExprTrait, OnConflict, Query, SimpleExpr},
};
use serde_json::{Map, Value, json};

use crate::{canonical, error::CoreResult, hashing::sha256_hex, time::now};

/// The policy-set version before any policy was written.
pub const INITIAL_POLICY_SET_VERSION: &str = "0.0.0";

/// A snapshot's content, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotContent {
    pub snapshot_id: String,
    pub content_hash: String,
    pub policies_json: String,
    pub thresholds_json: String,
    pub policy_count: i32,
}

/// Does `policy` apply to runs of `workflow_id`? Unscoped policies apply to every workflow.
pub fn applies_to(policy: &policy::Model, workflow_id: &str) -> bool {
    policy.enabled
        && policy
            .workflow_id
            .as_deref()
            .is_none_or(|scope| scope == workflow_id)
}

/// The snapshot id of a content hash.
pub fn snapshot_id_of(content_hash: &str) -> String {
    format!("SNAP-{}", &content_hash[..12])
}

/// Compose the canonical content of a policy set. Order of `policies` does not matter.
pub fn compose(policies: &[policy::Model]) -> SnapshotContent {
    let mut sorted: Vec<&policy::Model> = policies.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut thresholds = Map::new();
    let entries: Vec<Value> = sorted
        .iter()
        .map(|p| {
            thresholds.insert(p.id.clone(), p.rule.clone());
            let mut entry = json!({
                "id": p.id,
                "version": p.version,
                "name": p.name,
                "kind": p.kind.as_str(),
                "action": p.action.as_str(),
                "severity": p.severity.as_str(),
                "workflowId": p.workflow_id,
                "rule": p.rule,
            });
            // Only a shadow policy says so: a set of enforcing policies keeps the content (and
            // so the hash and id) its snapshot had before modes existed.
            if p.mode == PolicyMode::Shadow {
                entry["mode"] = json!(p.mode.as_str());
            }
            entry
        })
        .collect();
    let policies_json = canonical::to_string(&Value::Array(entries));
    let thresholds_json = canonical::to_string(&Value::Object(thresholds));
    let content_hash = sha256_hex(format!("{policies_json}{thresholds_json}"));
    SnapshotContent {
        snapshot_id: snapshot_id_of(&content_hash),
        content_hash,
        policies_json,
        thresholds_json,
        policy_count: sorted.len() as i32,
    }
}

/// The tenant's current policy-set version (semver), from the newest policy version written.
pub async fn current_policy_set_version<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
) -> CoreResult<String> {
    Ok(set_version_of(
        newest_version(tenant_id).one(conn).await?.as_ref(),
    ))
}

/// The tenant's policy versions, newest first.
fn newest_version(tenant_id: &str) -> Select<policy_version::Entity> {
    policy_version::Entity::find()
        .filter(policy_version::Column::TenantId.eq(tenant_id))
        .order_by_desc(policy_version::Column::CreatedAt)
        .order_by_desc(policy_version::Column::Id)
}

/// The policy-set version after `newest`, the newest policy version written (if any).
fn set_version_of(newest: Option<&policy_version::Model>) -> String {
    newest
        .map(|v| v.policy_set_version.clone())
        .unwrap_or_else(|| INITIAL_POLICY_SET_VERSION.to_string())
}

/// Take the snapshot for a run of `workflow_id` now: the tenant's enabled, applicable policies.
/// Stored once per (tenant, content hash); taking it again returns the stored row.
pub async fn take<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    workflow_id: &str,
) -> CoreResult<(policy_snapshot::Model, String)> {
    let content = compose(&applicable(conn, tenant_id, workflow_id).await?);
    let version = current_policy_set_version(conn, tenant_id).await?;
    let stored = store(conn, tenant_id, &content, &version).await?;
    Ok((stored, version))
}

/// The snapshot a run of `workflow_id` would take now, read without writing, for a start
/// written in one request after it (see `runs::start`).
#[derive(Debug, Clone)]
pub(crate) struct SnapshotPlan {
    pub content: SnapshotContent,
    /// The policy-set version it belongs to.
    pub version: String,
    /// The tenant's newest policy version when read: `None` if no policy was ever written.
    newest_version_id: Option<String>,
    /// Whether the snapshot is stored already.
    stored: bool,
}

/// Read what [`take`] would take, without storing it.
pub(crate) async fn plan<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    workflow_id: &str,
) -> CoreResult<SnapshotPlan> {
    let content = compose(&applicable(conn, tenant_id, workflow_id).await?);
    let newest = newest_version(tenant_id).one(conn).await?;
    let stored = stored_with_hash(tenant_id, &content.content_hash)
        .one(conn)
        .await?
        .is_some();
    Ok(SnapshotPlan {
        content,
        version: set_version_of(newest.as_ref()),
        newest_version_id: newest.map(|v| v.id),
        stored,
    })
}

impl SnapshotPlan {
    /// True while no policy of the tenant has changed since the plan was read: every change
    /// writes a policy version (they are append-only), so the newest is still the one read.
    pub(crate) fn still_current(&self, tenant_id: &str) -> SimpleExpr {
        let newest = newest_version(tenant_id)
            .select_only()
            .column(policy_version::Column::Id)
            .limit(1)
            .into_query();
        match &self.newest_version_id {
            Some(id) => SimpleExpr::SubQuery(None, Box::new(newest.into())).eq(id.as_str()),
            None => Expr::exists(newest).not(),
        }
    }

    /// The statement storing the snapshot, when it is not stored yet, if `guard` holds.
    pub(crate) fn store_statement(
        &self,
        backend: DbBackend,
        tenant_id: &str,
        guard: SimpleExpr,
    ) -> CoreResult<Option<Statement>> {
        if self.stored {
            return Ok(None);
        }
        insert_statement(backend, tenant_id, &self.content, &self.version, guard).map(Some)
    }
}

/// The insert of a snapshot, if `guard` holds when it runs. ON CONFLICT DO NOTHING: a
/// concurrent run may store the same snapshot first; that is fine, and must not abort the
/// transaction (it would on PostgreSQL with a plain INSERT). No conflict target: both unique
/// indexes (tenant + content hash, tenant + snapshot id) must be arbiters, or PostgreSQL raises
/// the race on the other one as a unique violation. (The `WHERE` also keeps SQLite from reading
/// `ON CONFLICT` as a join's `ON`.)
fn insert_statement(
    backend: DbBackend,
    tenant_id: &str,
    content: &SnapshotContent,
    version: &str,
    guard: SimpleExpr,
) -> CoreResult<Statement> {
    use policy_snapshot::Column as C;
    let values = Query::select()
        .expr(Expr::val(tenant_id))
        .expr(Expr::val(content.snapshot_id.as_str()))
        .expr(Expr::val(content.content_hash.as_str()))
        .expr(Expr::val(content.policies_json.as_str()))
        .expr(Expr::val(content.thresholds_json.as_str()))
        .expr(Expr::val(content.policy_count))
        .expr(Expr::val(version))
        .expr(Expr::val(now()))
        .and_where(guard)
        .to_owned();
    let insert = Query::insert()
        .into_table(policy_snapshot::Entity)
        .columns([
            C::TenantId,
            C::SnapshotId,
            C::ContentHash,
            C::PoliciesJson,
            C::ThresholdsJson,
            C::PolicyCount,
            C::Version,
            C::CreatedAt,
        ])
        .select_from(values)
        .map_err(|err| anyhow::anyhow!("snapshot insert: {err}"))?
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .to_owned();
    Ok(backend.build(&insert))
}

/// The tenant's enabled policies that apply to runs of `workflow_id`.
async fn applicable<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    workflow_id: &str,
) -> CoreResult<Vec<policy::Model>> {
    Ok(policy::Entity::find()
        .filter(policy::Column::TenantId.eq(tenant_id))
        .filter(policy::Column::Enabled.eq(true))
        .all(conn)
        .await?
        .into_iter()
        .filter(|p| applies_to(p, workflow_id))
        .collect())
}

/// The stored snapshot of the tenant with `content_hash`.
fn stored_with_hash(tenant_id: &str, content_hash: &str) -> Select<policy_snapshot::Entity> {
    policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(tenant_id))
        .filter(policy_snapshot::Column::ContentHash.eq(content_hash))
}

async fn store<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    content: &SnapshotContent,
    version: &str,
) -> CoreResult<policy_snapshot::Model> {
    let find = || stored_with_hash(tenant_id, &content.content_hash);
    if let Some(existing) = find().one(conn).await? {
        return Ok(existing);
    }
    conn.execute_raw(insert_statement(
        conn.get_database_backend(),
        tenant_id,
        content,
        version,
        Expr::value(true),
    )?)
    .await?;
    find().one(conn).await?.ok_or_else(|| {
        anyhow::anyhow!("snapshot {} vanished after insert", content.snapshot_id).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use governance_entities::enums::{PolicyAction, PolicyKind, Severity};
    use proptest::prelude::*;

    fn policy(id: &str, max: i64, scope: Option<&str>) -> policy::Model {
        policy::Model {
            id: id.to_string(),
            tenant_id: "ten_1".into(),
            name: format!("budget {id}"),
            description: None,
            kind: PolicyKind::TokenBudget,
            rule: json!({ "maxTokens": max }),
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: scope.map(str::to_string),
            enabled: true,
            mode: governance_entities::enums::PolicyMode::Enforce,
            version: 1,
            current_version_id: format!("pv_{id}"),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn id_is_prefix_of_hash_and_hash_covers_both_texts() {
        let c = compose(&[policy("pol_a", 100, None)]);
        assert_eq!(c.snapshot_id, format!("SNAP-{}", &c.content_hash[..12]));
        assert_eq!(
            c.content_hash,
            sha256_hex(format!("{}{}", c.policies_json, c.thresholds_json))
        );
        assert_eq!(c.thresholds_json, r#"{"pol_a":{"maxTokens":100}}"#);
        assert_eq!(c.policy_count, 1);
    }

    #[test]
    fn a_threshold_change_changes_the_hash() {
        let a = compose(&[policy("pol_a", 100, None)]);
        let b = compose(&[policy("pol_a", 101, None)]);
        assert_ne!(a.content_hash, b.content_hash);
    }

    #[test]
    fn scope_decides_applicability() {
        assert!(applies_to(&policy("pol_a", 1, None), "wf"));
        assert!(applies_to(&policy("pol_a", 1, Some("wf")), "wf"));
        assert!(!applies_to(&policy("pol_a", 1, Some("other")), "wf"));
        let mut disabled = policy("pol_a", 1, None);
        disabled.enabled = false;
        assert!(!applies_to(&disabled, "wf"));
    }

    proptest! {
        /// The hash does not depend on the order policies were created or listed.
        #[test]
        fn hash_is_order_independent(
            maxes in proptest::collection::vec(1i64..1_000_000, 1..12),
            seed in any::<u64>(),
        ) {
            let policies: Vec<policy::Model> = maxes
                .iter()
                .enumerate()
                .map(|(i, m)| policy(&format!("pol_{i:03}"), *m, None))
                .collect();
            let mut shuffled = policies.clone();
            // A deterministic shuffle driven by the seed.
            let n = shuffled.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (s >> 33) as usize % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(compose(&policies), compose(&shuffled));
        }
    }
}
