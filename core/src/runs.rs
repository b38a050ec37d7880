//! The run lifecycle: start (snapshot taken), and the terminal transitions. A run is checked
//! against the snapshot taken when it started, for its whole life.

use governance_entities::{
    enums::{RunStatus, TerminationReason},
    policy_snapshot, run,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult,
    Iterable, ModelTrait, QueryFilter, QuerySelect, Set, Statement,
    sea_query::{Expr, ExprTrait, Query, SimpleExpr},
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
///
/// The halt check and the snapshot are read first, outside the transaction, and the writes
/// (snapshot, run, event) are one request ([`Store::commit_statements`]): on SQLite every
/// step's commit waits for the one write lock, and reading inside it, statement by statement,
/// held it for 3 ms at the median under step load. Each write is guarded by what the plan was
/// read from: no halt stands over the run and no policy changed since. If either changed, the
/// run is not written and the start is made again inside one transaction, which refuses it or
/// takes the new snapshot.
pub async fn start(
    store: &Store,
    tenant_id: &str,
    input: StartRun,
) -> CoreResult<Committed<run::Model>> {
    input.validate()?;
    if let Some(committed) = start_planned(store, tenant_id, &input).await? {
        return Ok(committed);
    }
    let txn = store.begin().await?;
    let committed = start_in(&*txn, tenant_id, input).await?;
    txn.commit().await?;
    Ok(committed)
}

/// [`start`] from reads made before its one write request; `None` when what was read changed
/// before the write (nothing was written then).
async fn start_planned(
    store: &Store,
    tenant_id: &str,
    input: &StartRun,
) -> CoreResult<Option<Committed<run::Model>>> {
    let planned = plan_start(store, tenant_id, input).await?;
    write_planned(store, planned).await
}

/// A run start read and planned, not yet written: its statements, each guarded by what the
/// plan was read from.
struct PlannedStart {
    statements: Vec<Statement>,
}

/// Read what a start of `input` needs (refusing it under a standing halt) and plan its writes.
async fn plan_start(store: &Store, tenant_id: &str, input: &StartRun) -> CoreResult<PlannedStart> {
    let db = store.db();
    let agent = input.agent.as_deref();
    crate::halts::refuse_start_under(
        crate::halts::standing_halt(db, tenant_id, &input.workflow_id, agent).await?,
    )?;
    let plan = snapshot::plan(db, tenant_id, &input.workflow_id).await?;
    let model = new_run(
        tenant_id,
        input.clone(),
        &plan.content.snapshot_id,
        &plan.content.content_hash,
        &plan.version,
        crate::policy::silent_run_limit_seconds(&plan.content.policies_json)?,
    );
    let guard = || {
        crate::halts::no_standing_halt(tenant_id, &input.workflow_id, agent)
            .and(plan.still_current(tenant_id))
    };
    let backend = store.backend();
    let mut statements = Vec::new();
    // PostgreSQL: ordered against a halt as `start_in` is (see `halts::lock_tenant`).
    statements.extend(crate::halts::lock_tenant_statement(
        backend, tenant_id, false,
    ));
    statements.extend(plan.store_statement(backend, tenant_id, guard())?);
    statements.push(insert_run_statement(backend, &model, guard())?);
    statements.extend(events::append_statements_if(
        backend,
        tenant_id,
        run_event(EventKind::RunStarted, &model),
        Expr::exists(
            Query::select()
                .expr(Expr::val(1))
                .from(run::Entity)
                .and_where(run::Column::Id.eq(model.id.as_str()))
                .to_owned(),
        ),
    ));
    Ok(PlannedStart { statements })
}

/// Write a planned start: the run and its event, or nothing if its guards no longer hold.
async fn write_planned(
    store: &Store,
    planned: PlannedStart,
) -> CoreResult<Option<Committed<run::Model>>> {
    let mut run = None;
    let mut event = None;
    for row in store.commit_statements(planned.statements).await? {
        if let Ok(stored) = run::Model::from_query_result(&row, "") {
            run = Some(stored);
        } else if let Ok(stored) = governance_entities::event::Model::from_query_result(&row, "") {
            event = Some(stored);
        }
    }
    match (run, event) {
        (Some(run), Some(event)) => {
            let mut committed = Committed::new(run);
            committed.events.push(event);
            Ok(Some(committed))
        }
        (None, None) => Ok(None),
        _ => Err(anyhow::anyhow!(
            "a committed run start did not return both its run and its event"
        )
        .into()),
    }
}

/// `INSERT INTO runs … SELECT <model's values> WHERE guard RETURNING *`.
fn insert_run_statement(
    backend: DbBackend,
    model: &run::Model,
    guard: SimpleExpr,
) -> CoreResult<Statement> {
    let columns: Vec<run::Column> = run::Column::iter().collect();
    let values = Query::select()
        .exprs(columns.iter().map(|column| Expr::val(model.get(*column))))
        .and_where(guard)
        .to_owned();
    let insert = Query::insert()
        .into_table(run::Entity)
        .columns(columns)
        .select_from(values)
        .map_err(|err| anyhow::anyhow!("run insert: {err}"))?
        .returning_all()
        .to_owned();
    Ok(backend.build(&insert))
}

/// The run `input` starts on the snapshot `snapshot_id` (of policy-set `version`), with its
/// genesis hash and the deadline its silent-run limit gives.
fn new_run(
    tenant_id: &str,
    input: StartRun,
    snapshot_id: &str,
    content_hash: &str,
    version: &str,
    silent_run_limit_seconds: Option<i64>,
) -> run::Model {
    let at = now();
    let mut model = run::Model {
        id: new_id(prefix::RUN),
        tenant_id: tenant_id.to_string(),
        workflow_id: input.workflow_id,
        agent: input.agent,
        triggered_by: input.triggered_by,
        status: RunStatus::Running,
        termination_reason: None,
        error: None,
        policy_snapshot_id: snapshot_id.to_string(),
        policy_set_version: version.to_string(),
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
        deadline_at: crate::timeouts::deadline(at, silent_run_limit_seconds),
        created_at: at,
        updated_at: at,
    };
    // The genesis binds the run's header, so it is computed from the run as it will be stored.
    model.trace_head_hash = chain::genesis(&model, content_hash);
    model
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
    let model = new_run(
        tenant_id,
        input,
        &snap.snapshot_id,
        &snap.content_hash,
        &policy_set_version,
        crate::policy::silent_run_limit_seconds(&snap.policies_json)?,
    );
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

#[cfg(test)]
mod tests {
    use governance_entities::enums::{PolicyAction, PolicyKind, PolicyMode, Severity};
    use serde_json::json;

    use super::*;
    use crate::{
        halts::{self, HaltScope},
        policies::{self, NewPolicy},
    };

    use crate::test_support::{TenantStore as Fixture, tenant_store as fixture};

    async fn runs_of(f: &Fixture) -> usize {
        run::Entity::find()
            .filter(run::Column::TenantId.eq(f.tenant_id.as_str()))
            .all(f.store.db())
            .await
            .expect("runs")
            .len()
    }

    /// A halt committed after a start was planned, before it was written: the planned write
    /// writes nothing (no run, no event), and the start made again is refused.
    #[tokio::test]
    async fn a_halt_between_the_plan_and_the_write_refuses_the_start() {
        let f = fixture().await;
        let input = StartRun::of_workflow("wf");
        let planned = plan_start(&f.store, &f.tenant_id, &input)
            .await
            .expect("plan");
        halts::halt(
            &f.store,
            &f.tenant_id,
            &f.key_id,
            HaltScope::default(),
            "incident drill",
        )
        .await
        .expect("halt");

        assert!(
            write_planned(&f.store, planned)
                .await
                .expect("write")
                .is_none(),
            "the guard sees the halt"
        );
        assert_eq!(runs_of(&f).await, 0);
        let events = crate::events::after(f.store.db(), &f.tenant_id, 0, 100)
            .await
            .expect("events");
        assert!(
            events
                .iter()
                .all(|e| e.kind != EventKind::RunStarted.as_str()),
            "no RUN_STARTED without its run: {events:?}"
        );
        let refused = start(&f.store, &f.tenant_id, input).await;
        assert!(
            matches!(refused, Err(CoreError::Conflict(ref m)) if m.contains("halted")),
            "{refused:?}"
        );
    }

    /// A policy written after a start was planned: the planned write writes nothing, and the
    /// start made again takes the snapshot holding the new policy.
    #[tokio::test]
    async fn a_policy_change_between_the_plan_and_the_write_gives_the_run_the_new_snapshot() {
        let f = fixture().await;
        let input = StartRun::of_workflow("wf");
        let before = start(&f.store, &f.tenant_id, input.clone())
            .await
            .expect("first run")
            .value;
        let planned = plan_start(&f.store, &f.tenant_id, &input)
            .await
            .expect("plan");
        policies::create(
            &f.store,
            &f.tenant_id,
            NewPolicy {
                name: "budget".into(),
                description: None,
                kind: PolicyKind::TokenBudget,
                rule: json!({ "maxTokens": 1000 }),
                action: PolicyAction::Block,
                severity: Severity::High,
                workflow_id: None,
                enabled: true,
                mode: PolicyMode::Enforce,
            },
            None,
        )
        .await
        .expect("policy");

        assert!(
            write_planned(&f.store, planned)
                .await
                .expect("write")
                .is_none(),
            "the guard sees the new policy version"
        );
        assert_eq!(runs_of(&f).await, 1);
        let after = start(&f.store, &f.tenant_id, input)
            .await
            .expect("second run");
        assert_ne!(after.value.policy_snapshot_id, before.policy_snapshot_id);
        assert_ne!(after.value.policy_set_version, before.policy_set_version);
        let snapshot = policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::SnapshotId.eq(after.value.policy_snapshot_id.as_str()))
            .one(f.store.db())
            .await
            .expect("read")
            .expect("the new snapshot is stored");
        assert_eq!(snapshot.policy_count, 1);
        assert_eq!(after.events.len(), 1, "its RUN_STARTED");
        assert_eq!(
            after.events[0].run_id.as_deref(),
            Some(after.value.id.as_str())
        );
    }

    /// A start planned and written unhindered stores what the transaction would: the run as
    /// planned (its genesis binding its header), its snapshot, and its RUN_STARTED event.
    #[tokio::test]
    async fn a_planned_start_writes_the_run_its_snapshot_and_its_event() {
        let f = fixture().await;
        let committed = start(&f.store, &f.tenant_id, StartRun::of_workflow("wf"))
            .await
            .expect("run");
        let run = committed.value;
        let stored = run::Entity::find_by_id(run.id.clone())
            .one(f.store.db())
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored, run);
        assert_eq!(run.status, RunStatus::Running);
        let snapshot = policy_snapshot::Entity::find()
            .filter(policy_snapshot::Column::SnapshotId.eq(run.policy_snapshot_id.as_str()))
            .one(f.store.db())
            .await
            .expect("read")
            .expect("its snapshot is stored");
        assert_eq!(
            run.trace_head_hash,
            chain::genesis(&run, &snapshot.content_hash)
        );
        assert_eq!(committed.events.len(), 1);
        assert_eq!(committed.events[0].kind, EventKind::RunStarted.as_str());
        assert_eq!(committed.events[0].run_id.as_deref(), Some(run.id.as_str()));
    }
}
