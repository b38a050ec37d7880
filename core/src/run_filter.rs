//! Which runs a list or a simulation takes: the filter of `runs`, as one condition within the
//! tenant, and the newest matching runs up to a limit.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{RunStatus, TerminationReason},
    incident, run,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use serde::{Deserialize, Serialize};

use crate::error::CoreResult;

/// A filter of runs. Every field narrows the selection; lists match any of their values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFilter {
    pub status: Option<Vec<RunStatus>>,
    pub termination_reason: Option<Vec<TerminationReason>>,
    pub workflow_id: Option<String>,
    pub agent: Option<String>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    pub policy_snapshot_id: Option<String>,
    pub has_incident: Option<bool>,
    pub is_synthetic: Option<bool>,
}

impl RunFilter {
    /// The filter as a SQL condition, within `tenant_id`.
    pub fn condition(&self, tenant_id: &str) -> Condition {
        let mut cond = Condition::all().add(run::Column::TenantId.eq(tenant_id));
        if let Some(statuses) = &self.status {
            cond = cond.add(run::Column::Status.is_in(statuses.iter().copied()));
        }
        if let Some(reasons) = &self.termination_reason {
            cond = cond.add(run::Column::TerminationReason.is_in(reasons.iter().copied()));
        }
        if let Some(workflow) = &self.workflow_id {
            cond = cond.add(run::Column::WorkflowId.eq(workflow.as_str()));
        }
        if let Some(agent) = &self.agent {
            cond = cond.add(run::Column::Agent.eq(agent.as_str()));
        }
        if let Some(from) = self.from {
            cond = cond.add(run::Column::StartedAt.gte(from));
        }
        if let Some(to) = self.to {
            cond = cond.add(run::Column::StartedAt.lt(to));
        }
        if let Some(snapshot) = &self.policy_snapshot_id {
            cond = cond.add(run::Column::PolicySnapshotId.eq(snapshot.as_str()));
        }
        if let Some(has) = self.has_incident {
            let with_incident = incident::Entity::find()
                .select_only()
                .column(incident::Column::RunId)
                .filter(incident::Column::TenantId.eq(tenant_id))
                .into_query();
            cond = cond.add(if has {
                run::Column::Id.in_subquery(with_incident)
            } else {
                run::Column::Id.not_in_subquery(with_incident)
            });
        }
        if let Some(synthetic) = self.is_synthetic {
            cond = cond.add(run::Column::IsSynthetic.eq(synthetic));
        }
        cond
    }

    /// The runs of the tenant that match, as a query (for pagination).
    pub fn query(&self, tenant_id: &str) -> sea_orm::Select<run::Entity> {
        run::Entity::find().filter(self.condition(tenant_id))
    }

    /// The ids of the newest `limit` matching runs of the tenant, newest first.
    pub async fn newest_ids<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant_id: &str,
        limit: u64,
    ) -> CoreResult<Vec<String>> {
        Ok(run::Entity::find()
            .select_only()
            .column(run::Column::Id)
            .filter(self.condition(tenant_id))
            .order_by_desc(run::Column::Id)
            .limit(limit)
            .into_tuple()
            .all(conn)
            .await?)
    }
}
