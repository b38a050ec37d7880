//! Deciding an approval: granted or denied by a person, or expired by the sweeper. Each is one
//! transaction that writes the decision as a chained entry of the run's record (after the held
//! step), and then either lets the run continue or stops it through the normal stop path.

use governance_entities::{
    approval, approval_decision,
    enums::{ApprovalOnTimeout, ApprovalStatus, DecisionAction, RunStatus, TerminationReason},
    evidence, policy_version, run, violation,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel,
    QueryFilter, Set, Statement,
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
    let found = read::get(&*txn, &principal.tenant_id, id).await?;
    refuse_decided(&found)?;
    if found.approval.requested_by_key.as_deref() == Some(principal.key_id.as_str()) {
        return Err(CoreError::Forbidden {
            required_role: "APPROVER",
            message: format!(
                "approval `{id}` must be decided by another key: this key reported the held step (a reporter cannot approve its own step)"
            ),
        });
    }
    let run = waiting_run(&*txn, &found.approval).await?;
    if now() >= found.approval.expires_at {
        return Err(CoreError::Conflict(format!(
            "approval `{id}` expired at {}: its policy's onTimeout ({}) applies, and it can no longer be decided",
            crate::time::rfc3339(found.approval.expires_at),
            found.approval.on_timeout
        )));
    }
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
    let committed = record(&*txn, run, found.approval, outcome).await?;
    txn.commit().await?;
    Ok(committed)
}

/// Apply `onTimeout` to every approval whose time is up and that nobody decided (EXPIRED, and
/// CONTINUE or STOP). Returns what each expiry committed.
pub async fn expire_due(store: &Store) -> CoreResult<Vec<Committed<ApprovalState>>> {
    let mut expired = Vec::new();
    for due in due_approvals(store.db()).await? {
        match expire(store, due).await {
            Ok(Some(committed)) => expired.push(committed),
            Ok(None) => {}
            // One approval that cannot be expired now does not hold up the others.
            Err(err) => {
                tracing::warn!(error = %err, "could not expire an approval; retrying next sweep")
            }
        }
    }
    Ok(expired)
}

/// The approvals whose time is up while their run still waits for them, earliest first.
async fn due_approvals<C: ConnectionTrait>(conn: &C) -> CoreResult<Vec<approval::Model>> {
    let backend = conn.get_database_backend();
    let (at, limit) = match backend {
        DbBackend::Postgres => ("$1", "$2"),
        _ => ("?", "?"),
    };
    let sql = format!(
        "SELECT approvals.* FROM runs JOIN approvals ON approvals.run_id = runs.id \
         AND approvals.step_index = runs.step_count - 1 \
         WHERE runs.status = 'AWAITING_APPROVAL' AND approvals.expires_at <= {at} \
         ORDER BY approvals.expires_at LIMIT {limit}"
    );
    Ok(approval::Entity::find()
        .from_raw_sql(Statement::from_sql_and_values(
            backend,
            sql,
            [now().into(), (SWEEP_BATCH as i64).into()],
        ))
        .all(conn)
        .await?)
}

/// Apply `onTimeout` to `due`, unless it was decided or its run moved on meanwhile.
async fn expire(
    store: &Store,
    due: approval::Model,
) -> CoreResult<Option<Committed<ApprovalState>>> {
    let txn = store.begin().await?;
    let Ok(run) = waiting_run(&*txn, &due).await else {
        return Ok(None);
    };
    let state = read::get(&*txn, &due.tenant_id, &due.id).await?;
    if state.decision.is_some() {
        return Ok(None);
    }
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
    Ok(Some(committed))
}

/// Close the pending approval of `run` (locked, `AWAITING_APPROVAL`), which is ending as
/// `status` for `reason` without anyone deciding: a CANCELLED decision (the step did not
/// proceed), chained like any other, so the record says why the held step never ran. Returns
/// the run's new head and the `APPROVAL_CANCELLED` event. The caller ends the run in the same
/// transaction.
pub(crate) async fn close_for_ending_run<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    status: RunStatus,
    reason: TerminationReason,
) -> CoreResult<Option<(String, governance_entities::event::Model)>> {
    let Some(held) = super::held_step(run) else {
        return Ok(None);
    };
    let Some(state) = read::of_step(txn, &run.tenant_id, &run.id, held).await? else {
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
    let head = stored.entry_hash.clone();
    let state = ApprovalState {
        approval: state.approval,
        decision: Some(stored),
    };
    let event = events::append(
        txn,
        &run.tenant_id,
        approval_event(EventKind::ApprovalCancelled, &state),
    )
    .await?;
    Ok(Some((head, event)))
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
    // Under the run's lock: another decision may have landed since the approval was read.
    refuse_decided(&read::get(txn, &approval.tenant_id, &approval.id).await?)?;
    if super::held_step(&run) != Some(approval.step_index) {
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
        ApprovalStatus::Expired => EventKind::ApprovalExpired,
        ApprovalStatus::Cancelled => EventKind::ApprovalCancelled,
        ApprovalStatus::Pending => {
            return Err(anyhow::anyhow!("a decision cannot be PENDING").into());
        }
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
        title: match decided.status {
            ApprovalStatus::Expired => format!(
                "{policy_name}: approval of step {} expired unanswered, stopping run {}",
                approval.step_index, run.id
            ),
            _ => format!(
                "{policy_name}: {} denied step {}, stopping run {}",
                decided.decided_by_key.as_deref().unwrap_or("an approver"),
                approval.step_index,
                run.id
            ),
        },
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
