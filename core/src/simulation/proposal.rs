//! The policy set a simulation replays against: the tenant's current policies with proposed
//! creations, updates and removals applied (each validated as the write itself would), or the
//! policies of an existing snapshot. And its hash, which the policy gate compares.
//!
//! The proposal hash is the sha256 of a canonical list of the enabled policies, each as `{id,
//! name, kind, rule, action, severity, workflowId, mode}`, sorted by its canonical text. It is
//! the snapshot's content without what a write assigns: the version (a write bumps it) and,
//! for a policy not yet created, the id (`null`; the write draws it). So the hash of a proposal
//! is the hash of the set the proposed write leaves, and the gate can compare the two.

use governance_entities::{enums::PolicyKind, policy, policy_snapshot};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    canonical,
    error::{CoreError, CoreResult},
    hashing::sha256_hex,
    policies::{self, NewPolicy, PolicyPatch},
};

/// A proposed change to the tenant's policy set.
#[derive(Debug, Clone)]
pub enum PolicyChange {
    /// A new policy, as `createPolicy` would make it.
    Create(NewPolicy),
    /// A change to a policy, as `updatePolicy` would make it.
    Update { id: String, patch: PolicyPatch },
    /// A policy taken out of the set (disabled: policies are never deleted).
    Remove { id: String },
}

/// Where the proposed set comes from.
#[derive(Debug, Clone)]
pub enum ProposalSource {
    /// The tenant's current policies with these changes applied in order.
    Changes(Vec<PolicyChange>),
    /// The policies of a stored snapshot (`SNAP-…`).
    Snapshot(String),
}

/// How a policy of the proposal differs from the tenant's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Proposed {
    Unchanged,
    Created,
    Updated,
    Removed,
}

/// One policy of a proposal. A proposed creation has the key `new:<n>` (its place among the
/// changes) in place of an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProposedPolicy {
    pub policy: policy::Model,
    pub proposed: Proposed,
}

impl ProposedPolicy {
    /// The id the policy has (or will have); `None` for a proposed creation.
    pub fn policy_id(&self) -> Option<&str> {
        (self.proposed != Proposed::Created).then_some(self.policy.id.as_str())
    }
}

/// The resolved proposal: every policy it names (removed ones included, so results can show
/// them), and the hash of its enabled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub policies: Vec<ProposedPolicy>,
    pub hash: String,
}

impl Proposal {
    /// The policies in the proposed set (enabled).
    pub fn enabled(&self) -> Vec<policy::Model> {
        self.policies
            .iter()
            .filter(|p| p.policy.enabled)
            .map(|p| p.policy.clone())
            .collect()
    }

    /// The policy of the proposal with `key` (its id, or `new:<n>`).
    pub fn get(&self, key: &str) -> Option<&ProposedPolicy> {
        self.policies.iter().find(|p| p.policy.id == key)
    }
}

/// The key of the `n`-th change when it creates a policy.
pub fn new_key(n: usize) -> String {
    format!("new:{n}")
}

/// The hash of a set of policies (only the enabled ones count), with `None` as the id of a
/// policy not yet created: see the module documentation.
pub fn hash_of<'a>(
    policies: impl IntoIterator<Item = (Option<&'a str>, &'a policy::Model)>,
) -> String {
    let mut entries: Vec<String> = policies
        .into_iter()
        .filter(|(_, p)| p.enabled)
        .map(|(id, p)| {
            canonical::to_string(&json!({
                "id": id,
                "name": p.name,
                "kind": p.kind.as_str(),
                "rule": p.rule,
                "action": p.action.as_str(),
                "severity": p.severity.as_str(),
                "workflowId": p.workflow_id,
                "mode": p.mode.as_str(),
            }))
        })
        .collect();
    entries.sort();
    sha256_hex(format!("[{}]", entries.join(",")))
}

/// A `BAD_USER_INPUT` of a write, named where it sits among the changes.
fn at_change(err: CoreError, place: &str) -> CoreError {
    match err {
        CoreError::BadInput { message, field } => CoreError::BadInput {
            message,
            field: Some(match field {
                Some(field) => {
                    format!("{place}.{}", field.strip_prefix("input.").unwrap_or(&field))
                }
                None => place.to_string(),
            }),
        },
        other => other,
    }
}

/// Resolve what a simulation proposes, reading the tenant's policies (or the snapshot) through
/// `conn`. Each change is validated as its write would be; the first invalid one is refused
/// with `BAD_USER_INPUT` naming it (`input.changes[2].create.rule.maxTokens`).
pub async fn resolve<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    source: ProposalSource,
) -> CoreResult<Proposal> {
    let policies = match source {
        ProposalSource::Snapshot(snapshot_id) => {
            from_snapshot(conn, tenant_id, &snapshot_id).await?
        }
        ProposalSource::Changes(changes) => {
            let current = policy::Entity::find()
                .filter(policy::Column::TenantId.eq(tenant_id))
                .all(conn)
                .await?;
            apply(tenant_id, current, changes)?
        }
    };
    let hash = hash_of(policies.iter().map(|p| (p.policy_id(), &p.policy)));
    Ok(Proposal { policies, hash })
}

/// The current policies with `changes` applied in order.
pub fn apply(
    tenant_id: &str,
    current: Vec<policy::Model>,
    changes: Vec<PolicyChange>,
) -> CoreResult<Vec<ProposedPolicy>> {
    let mut policies: Vec<ProposedPolicy> = current
        .into_iter()
        .map(|policy| ProposedPolicy {
            policy,
            proposed: Proposed::Unchanged,
        })
        .collect();
    policies.sort_by(|a, b| a.policy.id.cmp(&b.policy.id));
    for (n, change) in changes.into_iter().enumerate() {
        let place = format!("input.changes[{n}]");
        match change {
            PolicyChange::Create(input) => {
                let mut policy = policies::prepare_new(tenant_id, input)
                    .map_err(|e| at_change(e, &format!("{place}.create")))?;
                policy.id = new_key(n);
                policies.push(ProposedPolicy {
                    policy,
                    proposed: Proposed::Created,
                });
            }
            PolicyChange::Update { id, patch } => {
                let target = policies
                    .iter_mut()
                    .find(|p| p.policy.id == id)
                    .ok_or_else(|| CoreError::not_found("Policy", id.as_str()))?;
                let old = target.policy.clone();
                let mut new = policies::apply_patch(&old, patch)
                    .map_err(|e| at_change(e, &format!("{place}.update.input")))?;
                if policies::classify(&old, &new).is_some() {
                    new.version = old.version + 1;
                    target.policy = new;
                    if target.proposed == Proposed::Unchanged {
                        target.proposed = Proposed::Updated;
                    }
                }
            }
            PolicyChange::Remove { id } => {
                let target = policies
                    .iter_mut()
                    .find(|p| p.policy.id == id)
                    .ok_or_else(|| CoreError::not_found("Policy", id.as_str()))?;
                if target.policy.enabled {
                    target.policy.enabled = false;
                    target.policy.version += 1;
                    target.proposed = Proposed::Removed;
                }
            }
        }
    }
    Ok(policies)
}

/// The policies of a stored snapshot of the tenant, as a proposal (all enabled, none changed).
async fn from_snapshot<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    snapshot_id: &str,
) -> CoreResult<Vec<ProposedPolicy>> {
    let snap = policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(tenant_id))
        .filter(policy_snapshot::Column::SnapshotId.eq(snapshot_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("PolicySnapshot", snapshot_id))?;
    let entries: Vec<Value> = serde_json::from_str(&snap.policies_json)
        .map_err(|e| CoreError::Internal(anyhow::anyhow!("snapshot {snapshot_id}: {e}")))?;
    entries
        .iter()
        .map(|entry| {
            let text = |key: &str| entry.get(key).and_then(Value::as_str);
            let damaged =
                || CoreError::Internal(anyhow::anyhow!("snapshot {snapshot_id} is damaged"));
            let parse = |key: &str| text(key).ok_or_else(damaged);
            let policy = policy::Model {
                id: parse("id")?.to_string(),
                tenant_id: tenant_id.to_string(),
                name: parse("name")?.to_string(),
                description: None,
                kind: parse("kind")?.parse().map_err(|_| damaged())?,
                rule: entry.get("rule").cloned().unwrap_or(Value::Null),
                action: parse("action")?.parse().map_err(|_| damaged())?,
                severity: parse("severity")?.parse().map_err(|_| damaged())?,
                workflow_id: text("workflowId").map(str::to_string),
                enabled: true,
                mode: match text("mode") {
                    Some(mode) => mode.parse().map_err(|_| damaged())?,
                    None => governance_entities::enums::PolicyMode::Enforce,
                },
                version: entry
                    .get("version")
                    .and_then(Value::as_i64)
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(damaged)?,
                current_version_id: String::new(),
                created_at: snap.created_at,
                updated_at: snap.created_at,
            };
            Ok(ProposedPolicy {
                policy,
                proposed: Proposed::Unchanged,
            })
        })
        .collect()
}

/// Is `kind` one whose verdict depends on a step's text (which replay does not have)?
pub fn reads_content(kind: PolicyKind) -> bool {
    kind == PolicyKind::ContentRule
}

#[cfg(test)]
mod tests {
    use governance_entities::enums::{PolicyAction, PolicyMode, Severity};

    use super::*;

    fn policy(id: &str, max: i64) -> policy::Model {
        policy::Model {
            id: id.into(),
            tenant_id: "ten_1".into(),
            name: format!("budget {id}"),
            description: None,
            kind: PolicyKind::TokenBudget,
            rule: json!({ "maxTokens": max }),
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            enabled: true,
            mode: PolicyMode::Enforce,
            version: 3,
            current_version_id: "pv".into(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn new_policy(max: i64) -> NewPolicy {
        NewPolicy {
            name: "budget new".into(),
            description: None,
            kind: PolicyKind::TokenBudget,
            rule: json!({ "maxTokens": max }),
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            enabled: true,
            mode: PolicyMode::Enforce,
        }
    }

    /// The hash of a proposal is the hash of the set its write leaves: versions and the id a
    /// creation will get do not count, order does not count, disabled policies do not count.
    #[test]
    fn the_proposal_hash_is_the_hash_of_the_set_the_write_leaves() {
        let current = vec![policy("pol_a", 100), policy("pol_b", 200)];
        let proposed = apply(
            "ten_1",
            current.clone(),
            vec![
                PolicyChange::Update {
                    id: "pol_a".into(),
                    patch: PolicyPatch {
                        rule: Some(json!({ "maxTokens": 50 })),
                        ..Default::default()
                    },
                },
                PolicyChange::Create(new_policy(10)),
            ],
        )
        .expect("valid changes");
        let proposal = hash_of(proposed.iter().map(|p| (p.policy_id(), &p.policy)));

        // What the two writes leave: pol_a at version 4, the new policy with a fresh id.
        let mut written_a = policy("pol_a", 50);
        written_a.version = 4;
        let created = policies::prepare_new("ten_1", new_policy(10)).expect("valid");
        let mut disabled = policy("pol_z", 1);
        disabled.enabled = false;
        let after = hash_of([
            (None, &created),
            (Some("pol_b"), &current[1]),
            (Some("pol_a"), &written_a),
            (Some("pol_z"), &disabled),
        ]);
        assert_eq!(proposal, after);
        // Any other threshold is another proposal.
        let other = hash_of([
            (None, &created),
            (Some("pol_b"), &current[1]),
            (Some("pol_a"), &policy("pol_a", 51)),
        ]);
        assert_ne!(proposal, other);
    }

    #[test]
    fn an_invalid_change_is_named_where_it_sits() {
        let err = apply(
            "ten_1",
            vec![policy("pol_a", 100)],
            vec![
                PolicyChange::Remove { id: "pol_a".into() },
                PolicyChange::Create(new_policy(-1)),
            ],
        )
        .expect_err("a negative budget is refused");
        match err {
            CoreError::BadInput { field, .. } => assert_eq!(
                field.as_deref(),
                Some("input.changes[1].create.rule.maxTokens")
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
}
