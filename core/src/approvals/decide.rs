//! Deciding an approval: granted or denied by a person, or expired by the sweeper. Each is one
//! transaction that writes the decision as a chained entry of the run's record (after the held
//! step), and then either lets the run continue or stops it through the normal stop path.

use governance_entities::{
    approval, approval_decision,
    enums::{ApprovalOnTimeout, ApprovalStatus, DecisionAction, RunStatus, TerminationReason},
    evidence, policy_version, run, violation,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect, Set,
};
use serde_json::json;

use super::{ApprovalState, MAX_NOTE_CHARS, approval_event, read};
use crate::{
    chain,
    error::{CoreError, CoreResult},
    events::{self, EventKind},
    outcome::Committed,
    runs,
    stops::{self, Stop},
    store::Store,
    tenancy::Principal,
    time::now,
};

/// At most this many waiting runs are looked at per sweep.
const SWEEP_BATCH: u64 = 500;

/// What a person decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The step continues.
    Grant,
    /// The run stops at the step.
    Deny,
}

/// What is recorded as an approval's decision.
struct Outcome<'a> {
    status: ApprovalStatus,
    decision: DecisionAction,
    decided_by: Option<&'a str>,
    note: Option<String>,
}

/// Grant or deny approval `id` as `principal` (an APPROVER key; the API checks the role). The
/// key that reported the step may not decide it (`FORBIDDEN`); an approval is decided once, and
/// only while its run waits for it (`CONFLICT`).
pub async fn decide(
    store: &Store,
    principal: &Principal,
    id: &str,
    verdict: Verdict,
    note: Option<String>,
) -> CoreResult<Committed<ApprovalState>> {
    let note = match note.map(|n| n.trim().to_string()) {
        Some(n) if n.chars().count() > MAX_NOTE_CHARS => {
            return Err(CoreError::bad_field(
                "note",
                format!("the note is longer than {MAX_NOTE_CHARS} characters"),
            ));
        }
        Some(n) if n.is_empty() => None,
        other => other,
    };
    let txn = store.begin().await?;
    let state = read::get(&*txn, &principal.tenant_id, id).await?;
    refuse_decided(&state)?;
    if state.approval.requested_by_key.as_deref() == Some(principal.key_id.as_str()) {
        return Err(CoreError::Forbidden {
            required_role: "APPROVER",
            message: format!(
                "approval `{id}` must be decided by another key: this key reported the held step (a reporter cannot approve its own step)"
            ),
        });
    }
    let run = waiting_run(&*txn, &state.approval).await?;
    let (status, decision) = match verdict {
        Verdict::Grant => (ApprovalStatus::Granted, DecisionAction::Continue),
        Verdict::Deny => (ApprovalStatus::Denied, DecisionAction::Stop),
    };
    let outcome = Outcome {
        status,
        decision,
        decided_by: Some(&principal.key_id),
        note,
    };
    let committed = record(&*txn, run, state.approval, outcome).await?;
    txn.commit().await?;
    Ok(committed)
}

/// Apply `onTimeout` to every approval whose time is up and that nobody decided (EXPIRED, and
/// CONTINUE or STOP). Returns what each expiry committed.
pub async fn expire_due(store: &Store) -> CoreResult<Vec<Committed<ApprovalState>>> {
    let at = now();
    let waiting: Vec<(String, String, i64)> = run::Entity::find()
        .select_only()
        .column(run::Column::TenantId)
        .column(run::Column::Id)
        .column(run::Column::StepCount)
        .filter(run::Column::Status.eq(RunStatus::AwaitingApproval))
        .limit(SWEEP_BATCH)
        .into_tuple()
        .all(store.db())
        .await?;
    let mut expired = Vec::new();
    for (tenant_id, run_id, step_count) in waiting {
        let due = approval::Entity::find()
            .filter(approval::Column::RunId.eq(run_id.as_str()))
            .filter(approval::Column::StepIndex.eq(step_count - 1))
            .filter(approval::Column::ExpiresAt.lte(at))
            .one(store.db())
            .await?;
        let Some(due) = due else { continue };
        let txn = store.begin().await?;
        let state = read::get(&*txn, &tenant_id, &due.id).await?;
        // Decided, or its run moved on, since it was read: nothing to do.
        if state.decision.is_some() {
            continue;
        }
        let Ok(run) = waiting_run(&*txn, &state.approval).await else {
            continue;
        };
        let decision = match state.approval.on_timeout {
            ApprovalOnTimeout::Allow => DecisionAction::Continue,
            ApprovalOnTimeout::Deny => DecisionAction::Stop,
        };
        let outcome = Outcome {
            status: ApprovalStatus::Expired,
            decision,
            decided_by: None,
            note: None,
        };
        let committed = record(&*txn, run, state.approval, outcome).await?;
        txn.commit().await?;
        expired.push(committed);
    }
    Ok(expired)
}

/// Close the pending approval of `run` (locked, `AWAITING_APPROVAL`), which is ending as
/// `status` for `reason` without anyone deciding: a CANCELLED decision (the step did not
/// proceed), chained like any other, so the record says why the held step never ran. Returns
/// the run's new head. The caller ends the run in the same transaction.
pub(crate) async fn close_for_ending_run<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    status: RunStatus,
    reason: TerminationReason,
) -> CoreResult<Option<String>> {
    let Some(state) = read::of_step(txn, &run.tenant_id, &run.id, run.step_count - 1).await? else {
        return Ok(None);
    };
    if state.decision.is_some() {
        return Ok(None);
    }
    let row = decision_entry(
        run,
        &state.approval,
        Outcome {
            status: ApprovalStatus::Cancelled,
            decision: DecisionAction::Stop,
            decided_by: None,
            note: Some(format!(
                "the run ended ({status}, {reason}) before anyone decided"
            )),
        },
    );
    let stored = row.into_active_model().reset_all().insert(txn).await?;
    Ok(Some(stored.entry_hash))
}

/// The decision's row, chained after the run's head.
fn decision_entry(
    run: &run::Model,
    approval: &approval::Model,
    outcome: Outcome<'_>,
) -> approval_decision::Model {
    let mut row = approval_decision::Model {
        approval_id: approval.id.clone(),
        tenant_id: approval.tenant_id.clone(),
        run_id: run.id.clone(),
        step_index: approval.step_index,
        status: outcome.status,
        decision: outcome.decision,
        decided_by_key: outcome.decided_by.map(str::to_string),
        note: outcome.note,
        decided_at: now(),
        prev_hash: run.trace_head_hash.clone(),
        entry_hash: String::new(),
    };
    row.entry_hash = chain::entry_hash(&row.prev_hash, &chain::approval_document(run, &row));
    row
}

/// A decided approval cannot be decided again.
fn refuse_decided(state: &ApprovalState) -> CoreResult<()> {
    match &state.decision {
        None => Ok(()),
        Some(d) => Err(CoreError::Conflict(format!(
            "approval `{}` was already decided: {}{} at {}",
            state.approval.id,
            d.status,
            d.decided_by_key
                .as_deref()
                .map(|k| format!(" by {k}"))
                .unwrap_or_default(),
            crate::time::rfc3339(d.decided_at)
        ))),
    }
}

/// The approval's run, locked, if it still waits for this approval; else `CONFLICT`.
async fn waiting_run<C: ConnectionTrait>(
    txn: &C,
    approval: &approval::Model,
) -> CoreResult<run::Model> {
    let run = runs::get_for_update(txn, &approval.tenant_id, &approval.run_id).await?;
    if run.status != RunStatus::AwaitingApproval || run.step_count != approval.step_index + 1 {
        return Err(CoreError::Conflict(format!(
            "run `{}` no longer waits for approval `{}` (it is {}): there is nothing to decide",
            run.id, approval.id, run.status
        )));
    }
    Ok(run)
}

/// Write the decision: its chained entry, the run continuing or stopped, the events.
async fn record<C: ConnectionTrait>(
    txn: &C,
    run: run::Model,
    approval: approval::Model,
    outcome: Outcome<'_>,
) -> CoreResult<Committed<ApprovalState>> {
    let stored = decision_entry(&run, &approval, outcome)
        .into_active_model()
        .reset_all()
        .insert(txn)
        .await?;
    let at = stored.decided_at;

    let mut active: run::ActiveModel = run.clone().into();
    active.trace_head_hash = Set(stored.entry_hash.clone());
    active.updated_at = Set(at);
    let incident = match stored.decision {
        DecisionAction::Stop => Some(stop(txn, &run, &approval, &stored, &mut active).await?),
        _ => {
            active.status = Set(RunStatus::Running);
            None
        }
    };
    let updated = active.update(txn).await?;
    let kind = match stored.status {
        ApprovalStatus::Granted => EventKind::ApprovalGranted,
        ApprovalStatus::Denied => EventKind::ApprovalDenied,
        _ => EventKind::ApprovalExpired,
    };
    let state = ApprovalState {
        approval,
        decision: Some(stored),
    };
    let mut committed = Committed::new(());
    committed
        .events
        .push(events::append(txn, &updated.tenant_id, approval_event(kind, &state)).await?);
    if let Some(incident) = &incident {
        stops::announce(txn, &updated, incident, &mut committed).await?;
    }
    Ok(Committed {
        value: state,
        events: committed.events,
        follow_ups: committed.follow_ups,
        steps: Vec::new(),
    })
}

/// Stop the run at the held step: the violation the step was held for is the incident's.
async fn stop<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    approval: &approval::Model,
    decided: &approval_decision::Model,
    active: &mut run::ActiveModel,
) -> CoreResult<governance_entities::incident::Model> {
    let held = violation::Entity::find()
        .filter(violation::Column::RunId.eq(run.id.as_str()))
        .filter(violation::Column::StepIndex.eq(approval.step_index))
        .filter(violation::Column::PolicyId.eq(approval.policy_id.as_str()))
        .one(txn)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "approval {} has no violation of {} at step {}",
                approval.id,
                approval.policy_id,
                approval.step_index
            )
        })?;
    let evidence = evidence::Entity::find()
        .filter(evidence::Column::ViolationId.eq(held.id.as_str()))
        .one(txn)
        .await?;
    let policy_name = policy_version::Entity::find()
        .filter(policy_version::Column::PolicyId.eq(approval.policy_id.as_str()))
        .filter(policy_version::Column::Version.eq(approval.policy_version))
        .one(txn)
        .await?
        .map_or_else(|| approval.policy_id.clone(), |v| v.name);
    let (termination_reason, why) = match decided.status {
        ApprovalStatus::Expired => (
            TerminationReason::Timeout,
            format!(
                "nobody decided it within {} s (onTimeout DENY)",
                approval.timeout_seconds
            ),
        ),
        _ => (
            TerminationReason::PolicyBlock,
            format!(
                "denied by {}{}",
                decided.decided_by_key.as_deref().unwrap_or("the service"),
                decided
                    .note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
        ),
    };
    let stop = Stop {
        step_index: approval.step_index,
        at: decided.decided_at,
        policy_id: &approval.policy_id,
        policy_name: &policy_name,
        severity: held.severity,
        termination_reason,
        reason: format!(
            "Step {} was held for approval `{}` and {why}. {}",
            approval.step_index, approval.id, held.reason
        ),
        violation_id: &held.id,
        evidence_id: evidence.as_ref().map(|e| e.id.as_str()),
        details: json!({
            "policyVersion": approval.policy_version,
            "approvalId": approval.id,
            "approvalStatus": decided.status.as_str(),
            "decidedBy": decided.decided_by_key,
            "note": decided.note,
        }),
    };
    stops::stop_in(txn, run, active, &stop).await
}
