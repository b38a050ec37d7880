//! The run lifecycle: start (snapshot taken), and the terminal transitions. A run is checked
//! against the snapshot taken when it started, for its whole life.

use governance_entities::{
    enums::{RunStatus, TerminationReason},
    policy_snapshot, run,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
};
use serde_json::{Value, json};

use crate::{
    chain,
    chain::RecordFormat,
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    ids::{new_id, prefix},
    outcome::{Committed, FollowUp},
    snapshot,
    store::Store,
    time::now,
};

/// Longest accepted identifier-like strings (workflow id, agent, …).
const MAX_LABEL: usize = 256;
/// Largest accepted `metadata`, serialised.
const MAX_METADATA_BYTES: usize = 64 * 1024;

/// What an integrator says when a run starts.
#[derive(Debug, Clone, Default)]
pub struct StartRun {
    pub workflow_id: String,
    pub agent: Option<String>,
    pub triggered_by: Option<String>,
    pub is_synthetic: bool,
    pub synthetic_scenario_id: Option<String>,
    pub metadata: Option<Value>,
}

fn check_label(field: &str, value: &str, required: bool) -> CoreResult<()> {
    if required && value.trim().is_empty() {
        return Err(CoreError::bad_field(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if value.len() > MAX_LABEL {
        return Err(CoreError::bad_field(
            field,
            format!("`{field}` is longer than {MAX_LABEL} characters"),
        ));
    }
    Ok(())
}

impl StartRun {
    /// A run of `workflow_id` with nothing else said about it (no agent, trigger or metadata;
    /// not synthetic).
    pub fn of_workflow(workflow_id: &str) -> Self {
        Self {
            workflow_id: workflow_id.to_string(),
            agent: None,
            triggered_by: None,
            is_synthetic: false,
            synthetic_scenario_id: None,
            metadata: None,
        }
    }

    fn validate(&self) -> CoreResult<()> {
        check_label("input.workflowId", &self.workflow_id, true)?;
        for (field, value) in [
            ("input.agent", &self.agent),
            ("input.triggeredBy", &self.triggered_by),
            ("input.syntheticScenarioId", &self.synthetic_scenario_id),
        ] {
            if let Some(value) = value {
                check_label(field, value, false)?;
            }
        }
        if self.synthetic_scenario_id.is_some() && !self.is_synthetic {
            return Err(CoreError::bad_field(
                "input.syntheticScenarioId",
                "`syntheticScenarioId` is only for synthetic runs: set `isSynthetic: true`",
            ));
        }
        if let Some(metadata) = &self.metadata {
            if !metadata.is_object() {
                return Err(CoreError::bad_field(
                    "input.metadata",
                    "`metadata` must be a JSON object",
                ));
            }
            if metadata.to_string().len() > MAX_METADATA_BYTES {
                return Err(CoreError::bad_field(
                    "input.metadata",
                    format!("`metadata` is larger than {MAX_METADATA_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// Load a run of the tenant (another tenant's run is `NOT_FOUND`).
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<run::Model> {
    run::Entity::find_by_id(run_id.to_string())
        .filter(run::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Run", run_id))
}

/// Load a run for update: on PostgreSQL the row is locked until the transaction ends, so the
/// steps and transitions of one run are serialised. (SQLite has one writer at a time anyway.)
pub async fn get_for_update<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<run::Model> {
    crate::store::one_for_update(
        conn,
        run::Entity::find_by_id(run_id.to_string()).filter(run::Column::TenantId.eq(tenant_id)),
        || CoreError::not_found("Run", run_id),
    )
    .await
}

/// The run's snapshot.
pub async fn snapshot_of<C: ConnectionTrait>(
    conn: &C,
    run: &run::Model,
) -> CoreResult<policy_snapshot::Model> {
    policy_snapshot::Entity::find()
        .filter(policy_snapshot::Column::TenantId.eq(run.tenant_id.as_str()))
        .filter(policy_snapshot::Column::SnapshotId.eq(run.policy_snapshot_id.as_str()))
        .one(conn)
        .await?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "run {} names snapshot {} which does not exist",
                run.id,
                run.policy_snapshot_id
            )
            .into()
        })
}

/// The outbox event of a run's change of state.
pub fn run_event(kind: EventKind, run: &run::Model) -> NewEvent {
    NewEvent {
        kind,
        subject_id: run.id.clone(),
        run_id: Some(run.id.clone()),
        severity_rank: None,
        payload: json!({
            "runId": run.id,
            "workflowId": run.workflow_id,
            "status": run.status.as_str(),
            "terminationReason": run.termination_reason.map(|r| r.as_str()),
            "policySnapshotId": run.policy_snapshot_id,
        }),
    }
}

/// Start a run: take (or reuse) the snapshot of the policies that apply to its workflow and
/// record the run as `RUNNING`, in one transaction.
pub async fn start(
    store: &Store,
    tenant_id: &str,
    input: StartRun,
) -> CoreResult<Committed<run::Model>> {
    let txn = store.begin().await?;
    let committed = start_in(&*txn, tenant_id, input).await?;
    txn.commit().await?;
    Ok(committed)
}

/// [`start`] in the caller's transaction.
pub async fn start_in<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    input: StartRun,
) -> CoreResult<Committed<run::Model>> {
    input.validate()?;
    crate::halts::refuse_start_if_halted(
        conn,
        tenant_id,
        &input.workflow_id,
        input.agent.as_deref(),
    )
    .await?;
    let (snap, policy_set_version) = snapshot::take(conn, tenant_id, &input.workflow_id).await?;
    let id = new_id(prefix::RUN);
    let at = now();
    let mut model = run::Model {
        id,
        tenant_id: tenant_id.to_string(),
        workflow_id: input.workflow_id,
        agent: input.agent,
        triggered_by: input.triggered_by,
        status: RunStatus::Running,
        termination_reason: None,
        error: None,
        policy_snapshot_id: snap.snapshot_id.clone(),
        policy_set_version,
        stopped_at_step: None,
        violation_policy_id: None,
        tokens_used: 0,
        cost_micros: 0,
        step_count: 0,
        is_synthetic: input.is_synthetic,
        synthetic_scenario_id: input.synthetic_scenario_id,
        metadata: input.metadata,
        started_at: at,
        completed_at: None,
        trace_head_hash: String::new(),
        violation_step_index: None,
        violation_timestamp: None,
        violation_reason: None,
        record_format: RecordFormat::CURRENT.number(),
        logged_head_hash: None,
        logged_at: None,
        created_at: at,
        updated_at: at,
    };
    // The genesis binds the run's header, so it is computed from the run as it will be stored.
    model.trace_head_hash = chain::genesis(&model, &snap.content_hash);
    let model = run::ActiveModel::from(model)
        .reset_all()
        .insert(conn)
        .await?;
    let event = events::append(conn, tenant_id, run_event(EventKind::RunStarted, &model)).await?;
    let mut committed = Committed::new(model);
    committed.events.push(event);
    Ok(committed)
}

/// How an integrator ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Succeeded,
    Failed,
}

/// Move a running run to a terminal status, in the caller's transaction, with its event.
/// Repeating the same end is idempotent; any other change of an ended run is `RUN_TERMINATED`.
async fn finish<C: ConnectionTrait>(
    conn: &C,
    run: run::Model,
    status: RunStatus,
    reason: TerminationReason,
    error: Option<String>,
) -> CoreResult<Committed<run::Model>> {
    if run.status.is_terminal() {
        if run.status == status && run.termination_reason == Some(reason) {
            return Ok(Committed::new(run));
        }
        return Err(CoreError::RunTerminated(format!(
            "run `{}` already ended ({}{}); it cannot become {}",
            run.id,
            run.status,
            run.termination_reason
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            status
        )));
    }
    // A run cannot succeed past a step nobody approved; it may still fail or be cancelled.
    if run.status == RunStatus::AwaitingApproval && status == RunStatus::Succeeded {
        return Err(CoreError::Conflict(format!(
            "run `{}` waits for approval of step {}: it cannot succeed until that is decided (cancel it, or report it FAILED, to end it now)",
            run.id,
            run.step_count - 1
        )));
    }
    // A step waiting for approval will not run: its approval is closed, on the record.
    let closed = crate::approvals::close_for_ending_run(conn, &run, status, reason).await?;
    let at = now();
    let tenant_id = run.tenant_id.clone();
    let mut active: run::ActiveModel = run.into();
    let closing_event = closed.map(|(head, event)| {
        active.trace_head_hash = Set(head);
        event
    });
    active.status = Set(status);
    active.termination_reason = Set(Some(reason));
    active.error = Set(error);
    active.completed_at = Set(Some(at));
    active.updated_at = Set(at);
    let updated = active.update(conn).await?;
    let event = events::append(
        conn,
        &tenant_id,
        run_event(EventKind::RunCompleted, &updated),
    )
    .await?;
    let mut committed = Committed::new(updated);
    committed.follow_ups.push(FollowUp::RecordEvaluation {
        tenant_id,
        run_id: committed.value.id.clone(),
    });
    committed.events.extend(closing_event);
    committed.events.push(event);
    Ok(committed)
}

/// The integrator reports the run's end: `SUCCEEDED` (`COMPLETED`) or `FAILED` (`SYSTEM_FAILURE`).
pub async fn complete(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
    completion: Completion,
    error: Option<String>,
) -> CoreResult<Committed<run::Model>> {
    let (status, reason) = completion_status(completion, &error)?;
    transition(store, tenant_id, run_id, status, reason, error).await
}

/// [`complete`] of a run the caller already holds, in the caller's transaction.
pub async fn complete_in<C: ConnectionTrait>(
    conn: &C,
    run: run::Model,
    completion: Completion,
    error: Option<String>,
) -> CoreResult<Committed<run::Model>> {
    let (status, reason) = completion_status(completion, &error)?;
    finish(conn, run, status, reason, error).await
}

/// The status and reason an integrator's completion means.
fn completion_status(
    completion: Completion,
    error: &Option<String>,
) -> CoreResult<(RunStatus, TerminationReason)> {
    match completion {
        Completion::Succeeded => {
            if error.is_some() {
                return Err(CoreError::bad_field(
                    "error",
                    "`error` is only for runs that FAILED",
                ));
            }
            Ok((RunStatus::Succeeded, TerminationReason::Completed))
        }
        Completion::Failed => Ok((RunStatus::Failed, TerminationReason::SystemFailure)),
    }
}

/// Lock the run, end it, commit: the shared path of every terminal transition.
async fn transition(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
    status: RunStatus,
    reason: TerminationReason,
    error: Option<String>,
) -> CoreResult<Committed<run::Model>> {
    let txn = store.begin().await?;
    let run = get_for_update(&*txn, tenant_id, run_id).await?;
    let committed = finish(&*txn, run, status, reason, error).await?;
    txn.commit().await?;
    Ok(committed)
}

/// The user aborts the run: `CANCELLED` with `USER_ABORT`.
pub async fn cancel(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
    reason: Option<String>,
) -> CoreResult<Committed<run::Model>> {
    transition(
        store,
        tenant_id,
        run_id,
        RunStatus::Cancelled,
        TerminationReason::UserAbort,
        reason,
    )
    .await
}

/// Abort a running run the caller holds (locked), in the caller's transaction: `CANCELLED`
/// with `USER_ABORT`, `detail` as its error. The kill switch stops runs this way.
pub async fn abort_in<C: ConnectionTrait>(
    conn: &C,
    run: run::Model,
    detail: String,
) -> CoreResult<Committed<run::Model>> {
    finish(
        conn,
        run,
        RunStatus::Cancelled,
        TerminationReason::UserAbort,
        Some(detail),
    )
    .await
}

/// Fail-closed: the service could not record a decision for this run, so the run stops
/// (`FAILED`, `SYSTEM_FAILURE`) and its later steps are refused.
pub async fn stop_for_system_failure(
    store: &Store,
    tenant_id: &str,
    run_id: &str,
    reason: &str,
) -> CoreResult<Committed<run::Model>> {
    transition(
        store,
        tenant_id,
        run_id,
        RunStatus::Failed,
        TerminationReason::SystemFailure,
        Some(reason.to_string()),
    )
    .await
}

/// Ended runs that have no evaluation record yet (e.g. the process died between the commit and
/// the enqueue) and ended before `ended_before`: the sweeper enqueues their job again.
/// Oldest first, at most `limit`.
pub async fn ended_without_evaluation<C: ConnectionTrait>(
    conn: &C,
    ended_before: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> CoreResult<Vec<(String, String)>> {
    use governance_entities::policy_evaluation;
    use sea_orm::{JoinType, QueryOrder, RelationTrait};
    let rows: Vec<(String, String)> = run::Entity::find()
        .select_only()
        .column(run::Column::TenantId)
        .column(run::Column::Id)
        .join(JoinType::LeftJoin, run::Relation::PolicyEvaluation.def())
        .filter(run::Column::Status.is_in([
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::FailedPolicy,
            RunStatus::Cancelled,
        ]))
        .filter(policy_evaluation::Column::Id.is_null())
        .filter(run::Column::CompletedAt.lt(ended_before))
        .order_by_asc(run::Column::CompletedAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows)
}
