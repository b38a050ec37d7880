//! Comparing two policy snapshots of a tenant: which policies were added, removed, changed (and
//! in which fields) or left as they were. Policies are matched by id, and every list is sorted by
//! policy id, so the same two snapshots always compare the same way.

use std::collections::BTreeMap;

use governance_entities::{
    enums::{PolicyAction, PolicyKind, Severity},
    policy_snapshot,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CoreError, CoreResult};

/// One policy as a snapshot recorded it (an entry of `policies_json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPolicy {
    pub id: String,
    pub version: i32,
    pub name: String,
    pub kind: PolicyKind,
    pub action: PolicyAction,
    pub severity: Severity,
    pub workflow_id: Option<String>,
    pub rule: Value,
}

/// A policy present in both snapshots with different content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    pub policy_id: String,
    /// The name in the newer (`to`) snapshot.
    pub name: String,
    /// The fields that differ, in camelCase, in this order: `name`, `kind`, `action`,
    /// `severity`, `workflowId`, `rule`, `version`.
    pub changed_fields: Vec<String>,
    pub old: SnapshotPolicy,
    pub new: SnapshotPolicy,
}

/// How the policies of `to` differ from those of `from`. Every list is sorted by policy id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// In `to` only.
    pub added: Vec<SnapshotPolicy>,
    /// In `from` only.
    pub removed: Vec<SnapshotPolicy>,
    /// In both, with at least one field different.
    pub changed: Vec<PolicyChange>,
    /// In both, identical.
    pub unchanged: Vec<SnapshotPolicy>,
}

/// Two snapshots of a tenant, compared.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotComparison {
    pub from: policy_snapshot::Model,
    pub to: policy_snapshot::Model,
    /// Both snapshots have the same content hash (hence the same policies and thresholds).
    pub identical: bool,
    pub added: Vec<SnapshotPolicy>,
    pub removed: Vec<SnapshotPolicy>,
    pub changed: Vec<PolicyChange>,
    pub unchanged: Vec<SnapshotPolicy>,
}

/// Parse a snapshot's `policies_json`. Malformed text is an internal error: snapshots are written
/// by this service only.
pub fn parse_policies(policies_json: &str) -> CoreResult<Vec<SnapshotPolicy>> {
    serde_json::from_str(policies_json).map_err(|err| {
        CoreError::Internal(anyhow::anyhow!(
            "malformed policies_json in a stored snapshot: {err}"
        ))
    })
}

/// The policies a snapshot recorded, in its order (by id).
pub fn snapshot_policies(snapshot: &policy_snapshot::Model) -> CoreResult<Vec<SnapshotPolicy>> {
    parse_policies(&snapshot.policies_json).map_err(|err| {
        CoreError::Internal(anyhow::anyhow!("snapshot {}: {err}", snapshot.snapshot_id))
    })
}

/// The fields in which `new` differs from `old`, in the documented order.
fn changed_fields(old: &SnapshotPolicy, new: &SnapshotPolicy) -> Vec<String> {
    [
        ("name", old.name != new.name),
        ("kind", old.kind != new.kind),
        ("action", old.action != new.action),
        ("severity", old.severity != new.severity),
        ("workflowId", old.workflow_id != new.workflow_id),
        ("rule", old.rule != new.rule),
        ("version", old.version != new.version),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(field, _)| field.to_string())
    .collect()
}

/// Compare two policy lists by policy id. The inputs may be in any order; the outputs are
/// sorted by policy id.
pub fn diff(from: &[SnapshotPolicy], to: &[SnapshotPolicy]) -> SnapshotDiff {
    let old: BTreeMap<&str, &SnapshotPolicy> = from.iter().map(|p| (p.id.as_str(), p)).collect();
    let new: BTreeMap<&str, &SnapshotPolicy> = to.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut out = SnapshotDiff::default();
    for (id, before) in &old {
        match new.get(id) {
            None => out.removed.push((*before).clone()),
            Some(after) => {
                let fields = changed_fields(before, after);
                if fields.is_empty() {
                    out.unchanged.push((*after).clone());
                } else {
                    out.changed.push(PolicyChange {
                        policy_id: id.to_string(),
                        name: after.name.clone(),
                        changed_fields: fields,
                        old: (*before).clone(),
                        new: (*after).clone(),
                    });
                }
            }
        }
    }
    out.added = new
        .iter()
        .filter(|(id, _)| !old.contains_key(*id))
        .map(|(_, p)| (*p).clone())
        .collect();
    out
}

/// One snapshot of the tenant by its `SNAP-…` id; another tenant's is `NOT_FOUND`.
pub async fn get_snapshot<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    snapshot_id: &str,
) -> CoreResult<policy_snapshot::Model> {
    policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(tenant_id))
        .filter(policy_snapshot::Column::SnapshotId.eq(snapshot_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("PolicySnapshot", snapshot_id))
}

/// Compare snapshot `to_snapshot_id` with `from_snapshot_id`, both of the tenant.
pub async fn compare<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from_snapshot_id: &str,
    to_snapshot_id: &str,
) -> CoreResult<SnapshotComparison> {
    let from = get_snapshot(conn, tenant_id, from_snapshot_id).await?;
    let to = get_snapshot(conn, tenant_id, to_snapshot_id).await?;
    let diff = diff(&snapshot_policies(&from)?, &snapshot_policies(&to)?);
    Ok(SnapshotComparison {
        identical: from.content_hash == to.content_hash,
        from,
        to,
        added: diff.added,
        removed: diff.removed,
        changed: diff.changed,
        unchanged: diff.unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use governance_entities::policy;
    use serde_json::json;

    fn p(id: &str, max: i64) -> SnapshotPolicy {
        SnapshotPolicy {
            id: id.into(),
            version: 1,
            name: format!("budget {id}"),
            kind: PolicyKind::TokenBudget,
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            rule: json!({ "maxTokens": max }),
        }
    }

    fn ids(list: &[SnapshotPolicy]) -> Vec<&str> {
        list.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn parses_what_compose_writes() {
        let model = policy::Model {
            id: "pol_a".into(),
            tenant_id: "ten_1".into(),
            name: "budget".into(),
            description: None,
            kind: PolicyKind::CostBudget,
            rule: json!({ "maxCostMicros": 5 }),
            action: PolicyAction::Warn,
            severity: Severity::Low,
            workflow_id: Some("wf".into()),
            enabled: true,
            mode: governance_entities::enums::PolicyMode::Enforce,
            version: 4,
            current_version_id: "pv_1".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let content = crate::snapshot::compose(&[model]);
        let parsed = parse_policies(&content.policies_json).unwrap();
        assert_eq!(
            parsed,
            vec![SnapshotPolicy {
                id: "pol_a".into(),
                version: 4,
                name: "budget".into(),
                kind: PolicyKind::CostBudget,
                action: PolicyAction::Warn,
                severity: Severity::Low,
                workflow_id: Some("wf".into()),
                rule: json!({ "maxCostMicros": 5 }),
            }]
        );
    }

    #[test]
    fn malformed_policies_are_internal() {
        assert_eq!(parse_policies("{").unwrap_err().code(), "INTERNAL");
        assert_eq!(
            parse_policies(r#"[{"id":"x"}]"#).unwrap_err().code(),
            "INTERNAL"
        );
    }

    #[test]
    fn diff_sorts_and_classifies_by_id() {
        let mut renamed = p("pol_c", 30);
        renamed.name = "renamed".into();
        renamed.rule = json!({ "maxTokens": 31 });
        renamed.version = 2;
        let from = vec![
            p("pol_d", 40),
            p("pol_b", 20),
            p("pol_c", 30),
            p("pol_a", 10),
        ];
        let to = vec![p("pol_e", 50), renamed, p("pol_a", 10), p("pol_f", 60)];
        let d = diff(&from, &to);
        assert_eq!(ids(&d.added), ["pol_e", "pol_f"]);
        assert_eq!(ids(&d.removed), ["pol_b", "pol_d"]);
        assert_eq!(ids(&d.unchanged), ["pol_a"]);
        assert_eq!(d.changed.len(), 1);
        let change = &d.changed[0];
        assert_eq!(change.policy_id, "pol_c");
        assert_eq!(change.name, "renamed");
        assert_eq!(change.changed_fields, ["name", "rule", "version"]);
        assert_eq!(change.old.rule, json!({ "maxTokens": 30 }));
        assert_eq!(change.new.rule, json!({ "maxTokens": 31 }));
    }

    #[test]
    fn every_field_is_reported_in_order() {
        let old = p("pol_a", 1);
        let new = SnapshotPolicy {
            id: "pol_a".into(),
            version: 2,
            name: "other".into(),
            kind: PolicyKind::StepLimit,
            action: PolicyAction::Warn,
            severity: Severity::Critical,
            workflow_id: Some("wf".into()),
            rule: json!({ "maxSteps": 3 }),
        };
        assert_eq!(
            changed_fields(&old, &new),
            [
                "name",
                "kind",
                "action",
                "severity",
                "workflowId",
                "rule",
                "version"
            ]
        );
    }

    #[test]
    fn identical_lists_have_no_changes() {
        let list = vec![p("pol_b", 2), p("pol_a", 1)];
        let d = diff(&list, &list);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
        assert_eq!(ids(&d.unchanged), ["pol_a", "pol_b"]);
        assert_eq!(diff(&[], &[]), SnapshotDiff::default());
    }
}
