//! Opening the approval of a step being held, in the step's transaction.

use chrono::{DateTime, Utc};
use governance_entities::{approval, run};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};

use super::{ApprovalState, approval_event};
use crate::{
    error::CoreResult,
    events::{self, EventKind},
    ids::{new_id, prefix},
    policy::{ApprovalTerms, Finding},
};

/// Open the approval of step `index` of `run` (the run as the held step leaves it), held by
/// `finding` under `terms`; `reported_by` is the key that reported the step. Returns the
/// approval and its `APPROVAL_REQUESTED` event.
pub(crate) async fn open<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    index: i64,
    finding: &Finding,
    terms: ApprovalTerms,
    reported_by: Option<&str>,
    at: DateTime<Utc>,
) -> CoreResult<(ApprovalState, governance_entities::event::Model)> {
    let approval = approval::ActiveModel {
        id: Set(new_id(prefix::APPROVAL)),
        tenant_id: Set(run.tenant_id.clone()),
        run_id: Set(run.id.clone()),
        step_index: Set(index),
        policy_id: Set(finding.policy_id.clone()),
        policy_version: Set(finding.policy_version),
        requested_by_key: Set(reported_by.map(str::to_string)),
        timeout_seconds: Set(terms.timeout_seconds),
        on_timeout: Set(terms.on_timeout),
        requested_at: Set(at),
        expires_at: Set(at + chrono::Duration::seconds(terms.timeout_seconds)),
    }
    .insert(txn)
    .await?;
    let state = ApprovalState {
        approval,
        decision: None,
    };
    let event = events::append(
        txn,
        &run.tenant_id,
        approval_event(EventKind::ApprovalRequested, &state),
    )
    .await?;
    Ok((state, event))
}
