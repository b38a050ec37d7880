//! Recording a step: check it against the run's snapshot and commit the step, its decision, and —
//! when it stops the run — everything the stop entails, in ONE transaction:
//! run status/termination/stopped step/violating policy and inflection fields, the inflection
//! marked on the step, violation facts with masked evidence, the incident (one per violation),
//! the enforcement rows, and the outbox events. A decision is acknowledged only after commit.
//!
//! Steps of one run are serialised (PostgreSQL: the run row is locked; SQLite: one writer), so
//! concurrent reports can never let a budget be exceeded by more than the one stopping step.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{
        DecisionAction, EnforcementAction, IncidentStatus, PolicyAction, RunStatus, StepStatus,
        StepType, TerminationReason,
    },
    evidence, incident, policy_enforcement, run, trace_step, violation,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::{Value, json};

use crate::{
    chain,
    error::{CoreError, CoreResult},
    events::{self, EventKind},
    hashing::sha256_hex,
    ids::{new_id, prefix},
    outcome::{Committed, FollowUp, StepNotice},
    policy::{
        CompiledSnapshot, ContentInput, Evaluation, Finding, RunState, SnapshotCache, StepInput,
        evaluate,
    },
    runs,
    store::Store,
    time::{now, to_millis},
};

/// Largest accepted step content, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

mod lane;
pub(crate) use lane::StepLane;

/// A step as an integrator reports it.
#[derive(Debug, Clone)]
pub struct RecordStep {
    pub run_id: String,
    /// 0-based; `None` means "the next one".
    pub step_index: Option<i64>,
    pub step_type: StepType,
    pub tokens: i64,
    pub cost_micros: i64,
    pub content: Option<String>,
    pub tool_name: Option<String>,
    /// Default: now.
    pub timestamp: Option<DateTime<Utc>>,
}

/// A recorded step with everything its decision produced.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run: run::Model,
    pub step: trace_step::Model,
    pub violations: Vec<violation::Model>,
    pub incident: Option<incident::Model>,
    /// True when this answer repeats a decision recorded earlier (an idempotent retry).
    pub replayed: bool,
}

/// The answer to a step report.
// Lives for one request; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The decision was committed.
    Recorded(StepRecord),
    /// The decision could not be committed: the answer is STOP (`SYSTEM_FAILURE`), never CONTINUE.
    FailClosed {
        /// The run as it is now (stopped, if the stop itself could be recorded).
        run: Option<run::Model>,
        /// The step that was reported, as it would have been recorded (not in the trace).
        step: trace_step::Model,
        reason: String,
    },
}

fn validate(input: &RecordStep) -> CoreResult<()> {
    if input.tokens < 0 {
        return Err(CoreError::bad_field(
            "input.tokens",
            "`tokens` must be 0 or more",
        ));
    }
    if input.cost_micros < 0 {
        return Err(CoreError::bad_field(
            "input.costMicros",
            "`costMicros` must be 0 or more (micro-dollars: 1 USD = 1000000)",
        ));
    }
    if let Some(index) = input.step_index
        && index < 0
    {
        return Err(CoreError::bad_field(
            "input.stepIndex",
            "`stepIndex` is 0-based and must be 0 or more",
        ));
    }
    if let Some(content) = &input.content
        && content.len() > MAX_CONTENT_BYTES
    {
        return Err(CoreError::bad_field(
            "input.content",
            format!("`content` is larger than {MAX_CONTENT_BYTES} bytes"),
        ));
    }
    if let Some(tool) = &input.tool_name
        && (tool.trim().is_empty() || tool.len() > 256)
    {
        return Err(CoreError::bad_field(
            "input.toolName",
            "`toolName` must be 1 to 256 characters",
        ));
    }
    Ok(())
}

fn content_hash(content: Option<&str>) -> String {
    sha256_hex(content.unwrap_or_default())
}

/// Does a re-sent step say the same as the recorded one?
fn same_step(recorded: &trace_step::Model, input: &RecordStep) -> bool {
    recorded.step_type == input.step_type
        && recorded.tokens == input.tokens
        && recorded.cost_micros == input.cost_micros
        && recorded.tool_name == input.tool_name
        && recorded.content_hash == content_hash(input.content.as_deref())
        && input
            .timestamp
            .is_none_or(|t| to_millis(t) == recorded.timestamp)
}

async fn step_extras<C: ConnectionTrait>(
    conn: &C,
    step: &trace_step::Model,
) -> CoreResult<(Vec<violation::Model>, Option<incident::Model>)> {
    let violations = violation::Entity::find()
        .filter(violation::Column::TenantId.eq(step.tenant_id.as_str()))
        .filter(violation::Column::RunId.eq(step.run_id.as_str()))
        .filter(violation::Column::StepIndex.eq(step.step_index))
        .order_by_asc(violation::Column::Id)
        .all(conn)
        .await?;
    let ids: Vec<String> = violations.iter().map(|v| v.id.clone()).collect();
    let incident = if ids.is_empty() {
        None
    } else {
        incident::Entity::find()
            .filter(incident::Column::TenantId.eq(step.tenant_id.as_str()))
            .filter(incident::Column::ViolationId.is_in(ids))
            .one(conn)
            .await?
    };
    Ok((violations, incident))
}

/// Timestamps of the run's steps after `since` (for rate limits).
async fn step_times_since<C: ConnectionTrait>(
    conn: &C,
    run_id: &str,
    since: DateTime<Utc>,
) -> CoreResult<Vec<DateTime<Utc>>> {
    Ok(trace_step::Entity::find()
        .select_only()
        .column(trace_step::Column::Timestamp)
        .filter(trace_step::Column::RunId.eq(run_id))
        .filter(trace_step::Column::Timestamp.gt(since))
        .into_tuple()
        .all(conn)
        .await?)
}

/// The decision detail stored with the step (and hashed into the chain).
fn decision_detail(evaluation: &Evaluation) -> Value {
    let findings: Vec<Value> = evaluation
        .findings
        .iter()
        .map(|f| {
            json!({
                "policyId": f.policy_id,
                "policyVersion": f.policy_version,
                "policyName": f.policy_name,
                "kind": f.kind.as_str(),
                "action": f.action.as_str(),
                "severity": f.severity.as_str(),
                "violatedRule": f.violated_rule,
                "evaluatedValue": f.evaluated_value,
                "thresholdCondition": f.threshold_condition,
                "threshold": f.threshold,
                "observed": f.observed,
                "reason": f.reason,
            })
        })
        .collect();
    json!({
        "action": evaluation.action.as_str(),
        "findings": findings,
        "inflectionPolicyId": evaluation.inflection.map(|i| evaluation.findings[i].policy_id.clone()),
        "terminationReason": evaluation.termination_reason().map(|r| r.as_str()),
        "contentMatches": evaluation.content_matches,
    })
}

/// The step row as it will be (or would have been) recorded.
fn step_row(
    run: &run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    evaluation: &Evaluation,
) -> trace_step::Model {
    let mut step = trace_step::Model {
        pk: 0,
        tenant_id: run.tenant_id.clone(),
        run_id: run.id.clone(),
        step_index: index,
        timestamp,
        step_type: input.step_type,
        tokens: input.tokens,
        cost_micros: input.cost_micros,
        tool_name: input.tool_name.clone(),
        content_hash: content_hash(input.content.as_deref()),
        status: evaluation.status,
        is_inflection: evaluation.action == DecisionAction::Stop,
        decision: evaluation.action,
        policies_checked: evaluation.policies_checked,
        reason: evaluation.reason.clone(),
        decision_json: decision_detail(evaluation),
        prev_hash: run.trace_head_hash.clone(),
        entry_hash: String::new(),
        created_at: now(),
    };
    step.entry_hash = chain::entry_hash(&step.prev_hash, &chain::step_document(&run.id, &step));
    step
}

/// The run's compiled snapshot: from the cache by snapshot id (no read at all), else read once
/// and compiled once per content hash.
pub async fn compiled_snapshot<C: ConnectionTrait>(
    conn: &C,
    cache: &SnapshotCache,
    run: &run::Model,
) -> CoreResult<std::sync::Arc<CompiledSnapshot>> {
    if let Some(hit) = cache.get_by_id(&run.tenant_id, &run.policy_snapshot_id) {
        return Ok(hit);
    }
    let snap = runs::snapshot_of(conn, run).await?;
    let compiled = cache.get_or_compile(&snap.content_hash, &snap.policies_json)?;
    cache.remember_id(&run.tenant_id, &run.policy_snapshot_id, &snap.content_hash);
    Ok(compiled)
}

/// Record a step. On a failure to commit, the answer is STOP with `SYSTEM_FAILURE` (fail-closed),
/// and the run is stopped if that can still be recorded.
pub async fn record(
    store: &Store,
    cache: &SnapshotCache,
    tenant_id: &str,
    input: RecordStep,
) -> CoreResult<Committed<StepOutcome>> {
    validate(&input)?;
    let result = match store.step_lane() {
        Some(lane) => lane.record(cache, tenant_id, &input).await,
        None => record_committed(store, cache, tenant_id, &input).await,
    };
    match result {
        Ok(committed) => Ok(Committed {
            value: StepOutcome::Recorded(committed.value),
            events: committed.events,
            follow_ups: committed.follow_ups,
            steps: committed.steps,
        }),
        Err(CoreError::Internal(err)) => fail_closed(store, tenant_id, &input, err).await,
        Err(other) => Err(other),
    }
}

async fn fail_closed(
    store: &Store,
    tenant_id: &str,
    input: &RecordStep,
    err: anyhow::Error,
) -> CoreResult<Committed<StepOutcome>> {
    let reference = new_id("err");
    tracing::error!(error = ?err, reference = %reference, run_id = %input.run_id, "cannot record step; failing closed");
    let reason = format!(
        "the decision could not be recorded (reference {reference}); failing closed: STOP ({})",
        TerminationReason::SystemFailure
    );
    // Best effort: stop the run so later steps are refused too. This may fail as well.
    let stopped = runs::stop_for_system_failure(store, tenant_id, &input.run_id, &reason).await;
    let (run, events, follow_ups) = match stopped {
        Ok(committed) => (
            Some(committed.value),
            committed.events,
            committed.follow_ups,
        ),
        Err(stop_err) => {
            tracing::error!(error = %stop_err, run_id = %input.run_id, "cannot record the fail-closed stop either");
            let run = runs::get(store.db(), tenant_id, &input.run_id).await.ok();
            (run, Vec::new(), Vec::new())
        }
    };
    let step = trace_step::Model {
        pk: 0,
        tenant_id: tenant_id.to_string(),
        run_id: input.run_id.clone(),
        step_index: input
            .step_index
            .or(run.as_ref().map(|r| r.step_count))
            .unwrap_or(0),
        timestamp: timestamp_of(input),
        step_type: input.step_type,
        tokens: input.tokens,
        cost_micros: input.cost_micros,
        tool_name: input.tool_name.clone(),
        content_hash: content_hash(input.content.as_deref()),
        status: StepStatus::Violation,
        is_inflection: false,
        decision: DecisionAction::Stop,
        policies_checked: 0,
        reason: reason.clone(),
        decision_json: json!({ "action": "STOP", "terminationReason": "SYSTEM_FAILURE", "recorded": false }),
        prev_hash: run
            .as_ref()
            .map(|r| r.trace_head_hash.clone())
            .unwrap_or_default(),
        entry_hash: String::new(),
        created_at: now(),
    };
    Ok(Committed {
        value: StepOutcome::FailClosed { run, step, reason },
        events,
        follow_ups,
        steps: Vec::new(),
    })
}

/// Record one step in its own transaction.
async fn record_committed(
    store: &Store,
    cache: &SnapshotCache,
    tenant_id: &str,
    input: &RecordStep,
) -> CoreResult<Committed<StepRecord>> {
    let txn = store.begin().await?;
    match record_in(&*txn, cache, tenant_id, input).await {
        Ok(committed) => {
            // Only a committed decision is answered.
            txn.commit().await?;
            Ok(committed)
        }
        // The refused attempt is on the record.
        Err(refused @ CoreError::RunTerminated(_)) => {
            txn.commit().await?;
            Err(refused)
        }
        // Anything else wrote nothing worth keeping; dropping the transaction rolls it back.
        Err(other) => Err(other),
    }
}

/// Check the step and write it with its consequences in the caller's transaction. Only
/// `RunTerminated` (whose refusal is recorded) and success leave writes behind; other refusals
/// are decided before anything is written.
async fn record_in<C: ConnectionTrait>(
    txn: &C,
    cache: &SnapshotCache,
    tenant_id: &str,
    input: &RecordStep,
) -> CoreResult<Committed<StepRecord>> {
    let run = runs::get_for_update(txn, tenant_id, &input.run_id).await?;

    // An index already recorded: the same step again gets the recorded decision; a different
    // step under that index is a conflict. Nothing is counted twice.
    if let Some(index) = input.step_index
        && index < run.step_count
    {
        let recorded = trace_step::Entity::find()
            .filter(trace_step::Column::RunId.eq(run.id.as_str()))
            .filter(trace_step::Column::StepIndex.eq(index))
            .one(txn)
            .await?
            .ok_or_else(|| anyhow::anyhow!("run {} has no step {index} below its count", run.id))?;
        if !same_step(&recorded, input) {
            return Err(CoreError::Conflict(format!(
                "step {index} of run `{}` is already recorded with different content; send the same step to get its decision, or the next index ({})",
                run.id, run.step_count
            )));
        }
        let (violations, incident) = step_extras(txn, &recorded).await?;
        return Ok(Committed::new(StepRecord {
            run,
            step: recorded,
            violations,
            incident,
            replayed: true,
        }));
    }

    if run.status.is_terminal() {
        // Refused, and the attempt is on the record.
        policy_enforcement::ActiveModel {
            id: Set(new_id(prefix::ENFORCEMENT)),
            tenant_id: Set(tenant_id.to_string()),
            policy_id: Set(run.violation_policy_id.clone()),
            run_id: Set(run.id.clone()),
            step_index: Set(Some(input.step_index.unwrap_or(run.step_count))),
            action_taken: Set(EnforcementAction::Blocked),
            details: Set(json!({
                "reason": "step reported after the run ended",
                "runStatus": run.status.as_str(),
                "terminationReason": run.termination_reason.map(|r| r.as_str()),
                "attemptedStepIndex": input.step_index,
                "stepType": input.step_type.as_str(),
                "tokens": input.tokens,
                "costMicros": input.cost_micros,
            })),
            created_at: Set(now()),
        }
        .insert(txn)
        .await?;
        return Err(CoreError::RunTerminated(format!(
            "run `{}` has ended ({}{}); the step was not added to the trace",
            run.id,
            run.status,
            run.termination_reason
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        )));
    }

    let index = input.step_index.unwrap_or(run.step_count);
    if index != run.step_count {
        return Err(CoreError::bad_field(
            "input.stepIndex",
            format!(
                "step {index} cannot be recorded yet: the next step of run `{}` is {}",
                run.id, run.step_count
            ),
        ));
    }
    let timestamp = timestamp_of(input);
    if timestamp < run.started_at {
        return Err(CoreError::bad_field(
            "input.timestamp",
            "`timestamp` is before the run started",
        ));
    }

    let snapshot = compiled_snapshot(txn, cache, &run).await?;
    let recent = match snapshot.max_rate_window_seconds() {
        Some(window) => {
            step_times_since(txn, &run.id, timestamp - chrono::Duration::seconds(window)).await?
        }
        None => Vec::new(),
    };
    let evaluation = check(&snapshot, &run, index, input, timestamp, &recent);
    apply(txn, run, index, input, timestamp, evaluation).await
}

/// When the step happened: as reported (to the millisecond), else now.
fn timestamp_of(input: &RecordStep) -> DateTime<Utc> {
    input.timestamp.map(to_millis).unwrap_or_else(now)
}

/// A decision that continues the run and records nothing beside the step (no violation,
/// enforcement, incident or event): the steps the lane and the synthetic loader write in bulk.
fn continues_cleanly(evaluation: &Evaluation) -> bool {
    evaluation.action == DecisionAction::Continue && evaluation.findings.is_empty()
}

/// What a clean step changes on its run: totals, step count, chain head.
fn count_clean_step(run: &mut run::Model, input: &RecordStep, step: &trace_step::Model) {
    run.tokens_used += input.tokens;
    run.cost_micros += input.cost_micros;
    run.step_count += 1;
    run.trace_head_hash = step.entry_hash.clone();
}

/// The decision on step `index` of `run` (the run as it is before the step).
fn check(
    snapshot: &CompiledSnapshot,
    run: &run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    recent: &[DateTime<Utc>],
) -> Evaluation {
    evaluate(
        snapshot,
        &RunState {
            run_id: &run.id,
            workflow_id: &run.workflow_id,
            agent: run.agent.as_deref(),
            started_at: run.started_at,
            tokens_used: run.tokens_used,
            cost_micros: run.cost_micros,
            step_count: run.step_count,
            is_synthetic: run.is_synthetic,
            metadata: run.metadata.as_ref(),
            recent_step_timestamps: recent,
        },
        &StepInput {
            index,
            step_type: input.step_type,
            tokens: input.tokens,
            cost_micros: input.cost_micros,
            tool_name: input.tool_name.as_deref(),
            content: ContentInput::Text(input.content.as_deref()),
            timestamp,
        },
    )
}

/// Write the step and its consequences in the caller's transaction (the caller commits).
async fn apply<C: ConnectionTrait>(
    txn: &C,
    run: run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    evaluation: Evaluation,
) -> CoreResult<Committed<StepRecord>> {
    let tenant_id = run.tenant_id.clone();
    let step = step_row(&run, index, input, timestamp, &evaluation);
    // Every column is written except the database-generated key.
    let mut active = trace_step::ActiveModel::from(step).reset_all();
    active.pk = sea_orm::ActiveValue::NotSet;
    let stored_step = active.insert(txn).await?;

    let at = now();
    let mut violations = Vec::with_capacity(evaluation.findings.len());
    let mut inflection: Option<(violation::Model, evidence::Model, &Finding)> = None;
    let mut events_out = Vec::new();
    for (i, finding) in evaluation.findings.iter().enumerate() {
        let violation = violation::ActiveModel {
            id: Set(new_id(prefix::VIOLATION)),
            tenant_id: Set(tenant_id.clone()),
            run_id: Set(run.id.clone()),
            policy_id: Set(finding.policy_id.clone()),
            policy_version: Set(finding.policy_version),
            policy_type: Set(finding.kind),
            violated_rule: Set(finding.violated_rule.clone()),
            evaluated_value: Set(finding.evaluated_value.clone()),
            threshold_condition: Set(finding.threshold_condition.clone()),
            severity: Set(finding.severity),
            severity_rank: Set(finding.severity.rank()),
            action: Set(finding.action),
            reason: Set(finding.reason.clone()),
            step_index: Set(index),
            snapshot_id: Set(run.policy_snapshot_id.clone()),
            timestamp: Set(timestamp),
            created_at: Set(at),
        }
        .insert(txn)
        .await?;
        let content = json!({
            "policyId": finding.policy_id,
            "stepIndex": index,
            "stepContentHash": stored_step.content_hash,
            "threshold": finding.threshold,
            "observed": finding.observed,
            "detail": finding.evidence,
        });
        let evidence = evidence::ActiveModel {
            id: Set(new_id(prefix::EVIDENCE)),
            tenant_id: Set(tenant_id.clone()),
            violation_id: Set(violation.id.clone()),
            run_id: Set(run.id.clone()),
            content_hash: Set(sha256_hex(crate::canonical::to_string(&content))),
            content: Set(content),
            created_at: Set(at),
        }
        .insert(txn)
        .await?;
        if finding.action == PolicyAction::Warn {
            enforcement(txn, &run, index, finding, EnforcementAction::Warned).await?;
        }
        if evaluation.inflection == Some(i) {
            inflection = Some((violation.clone(), evidence, finding));
        }
        violations.push(violation);
    }

    let mut active_run: run::ActiveModel = run.clone().into();
    active_run.tokens_used = Set(run.tokens_used + input.tokens);
    active_run.cost_micros = Set(run.cost_micros + input.cost_micros);
    active_run.step_count = Set(run.step_count + 1);
    active_run.trace_head_hash = Set(stored_step.entry_hash.clone());
    active_run.updated_at = Set(at);
    let mut incident_out = None;
    let mut follow_ups = Vec::new();
    if let Some((violation, evidence, finding)) = inflection {
        let termination = finding.termination_reason;
        active_run.status = Set(RunStatus::FailedPolicy);
        active_run.termination_reason = Set(Some(termination));
        active_run.completed_at = Set(Some(timestamp.max(run.started_at)));
        active_run.stopped_at_step = Set(Some(index));
        active_run.violation_policy_id = Set(Some(finding.policy_id.clone()));
        active_run.violation_step_index = Set(Some(index));
        active_run.violation_timestamp = Set(Some(timestamp));
        active_run.violation_reason = Set(Some(finding.reason.clone()));
        enforcement(txn, &run, index, finding, EnforcementAction::Stopped).await?;
        let incident = incident::ActiveModel {
            id: Set(new_id(prefix::INCIDENT)),
            tenant_id: Set(tenant_id.clone()),
            run_id: Set(run.id.clone()),
            violation_id: Set(violation.id.clone()),
            evidence_id: Set(Some(evidence.id.clone())),
            severity: Set(finding.severity),
            severity_rank: Set(finding.severity.rank()),
            title: Set(format!(
                "{} stopped run {} at step {index}",
                finding.policy_name, run.id
            )),
            status: Set(IncidentStatus::Open),
            note: Set(None),
            created_at: Set(at),
            detected_at: Set(at),
            acknowledged_at: Set(None),
            resolved_at: Set(None),
            updated_at: Set(at),
        }
        .insert(txn)
        .await?;
        follow_ups.push(FollowUp::RecordEvaluation {
            tenant_id: tenant_id.clone(),
            run_id: run.id.clone(),
        });
        incident_out = Some(incident);
    }
    let updated_run = active_run.update(txn).await?;
    if let Some(incident) = &incident_out {
        events_out.push(
            events::append(
                txn,
                &tenant_id,
                runs::run_event(EventKind::RunStopped, &updated_run),
            )
            .await?,
        );
        events_out.push(
            events::append(
                txn,
                &tenant_id,
                crate::incidents::incident_event(EventKind::IncidentCreated, incident),
            )
            .await?,
        );
    }
    let notice = StepNotice {
        tenant_id: tenant_id.clone(),
        run_id: updated_run.id.clone(),
        step_index: stored_step.step_index,
    };
    Ok(Committed {
        value: StepRecord {
            run: updated_run,
            step: stored_step,
            violations,
            incident: incident_out,
            replayed: false,
        },
        events: events_out,
        follow_ups,
        steps: vec![notice],
    })
}

async fn enforcement<C: ConnectionTrait>(
    conn: &C,
    run: &run::Model,
    index: i64,
    finding: &Finding,
    action: EnforcementAction,
) -> CoreResult<()> {
    policy_enforcement::ActiveModel {
        id: Set(new_id(prefix::ENFORCEMENT)),
        tenant_id: Set(run.tenant_id.clone()),
        policy_id: Set(Some(finding.policy_id.clone())),
        run_id: Set(run.id.clone()),
        step_index: Set(Some(index)),
        action_taken: Set(action),
        details: Set(json!({
            "policyVersion": finding.policy_version,
            "reason": finding.reason,
            "thresholdCondition": finding.threshold_condition,
            "evaluatedValue": finding.evaluated_value,
        })),
        created_at: Set(now()),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Steps written per transaction by [`load_synthetic`] (whole runs; a run larger than this is
/// written alone).
const SYNTHETIC_STEPS_PER_COMMIT: u64 = 50_000;

/// Load `runs_count` synthetic runs of `steps_per_run` clean steps each into `tenant_id`, for
/// benchmarks of a large store: each run is started as `startRun` starts it (against the
/// tenant's current snapshot), and each step is decided by the same check and written as the
/// same row, chained the same way, as a report would be. With `ended`, each run then ends as
/// `completeRun(SUCCEEDED)` ends it, event included; its evaluation-record job is the caller's
/// to enqueue (the runs are returned). Only the transactions are large: whole runs, up to
/// about 50,000 steps per commit. Runs are marked synthetic.
/// Refuses a snapshot that would not continue every step (the rows would then differ from
/// what the service writes). Returns the runs, in the order they were written.
pub async fn load_synthetic(
    store: &Store,
    cache: &SnapshotCache,
    tenant_id: &str,
    runs_count: u64,
    steps_per_run: u64,
    ended: bool,
) -> CoreResult<Vec<run::Model>> {
    let runs_per_commit = (SYNTHETIC_STEPS_PER_COMMIT / steps_per_run.max(1)).clamp(1, 1000);
    let mut loaded = Vec::with_capacity(runs_count as usize);
    while (loaded.len() as u64) < runs_count {
        let batch = runs_per_commit.min(runs_count - loaded.len() as u64);
        let txn = store.begin().await?;
        for _ in 0..batch {
            let run = synthetic_run(&*txn, cache, tenant_id, steps_per_run).await?;
            let run = if ended {
                runs::complete_in(&*txn, run, runs::Completion::Succeeded, None)
                    .await?
                    .value
            } else {
                run
            };
            loaded.push(run);
        }
        txn.commit().await?;
    }
    Ok(loaded)
}

/// One synthetic run of [`load_synthetic`], in the caller's transaction.
async fn synthetic_run<C: ConnectionTrait>(
    conn: &C,
    cache: &SnapshotCache,
    tenant_id: &str,
    steps_per_run: u64,
) -> CoreResult<run::Model> {
    let mut run = runs::start_in(
        conn,
        tenant_id,
        runs::StartRun {
            workflow_id: "synthetic-load".to_string(),
            agent: Some("governance seed".to_string()),
            triggered_by: None,
            is_synthetic: true,
            synthetic_scenario_id: Some("bench-growth".to_string()),
            metadata: None,
        },
    )
    .await?
    .value;
    let snapshot = compiled_snapshot(conn, cache, &run).await?;
    let started = run.started_at;
    let window = snapshot
        .max_rate_window_seconds()
        .map(chrono::Duration::seconds);
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(steps_per_run as usize);
    // The first step still inside the rate window (timestamps only grow).
    let mut in_window = 0;
    let mut rows = Vec::with_capacity(steps_per_run as usize);
    for i in 0..steps_per_run as i64 {
        // One step per millisecond from the run's start.
        let at = started + chrono::Duration::milliseconds(i);
        let input = RecordStep {
            run_id: run.id.clone(),
            step_index: Some(i),
            step_type: StepType::LlmCall,
            tokens: 100,
            cost_micros: 10,
            content: Some(format!("synthetic step {i}")),
            tool_name: None,
            timestamp: Some(at),
        };
        let recent: &[DateTime<Utc>] = match window {
            Some(window) => {
                while in_window < times.len() && times[in_window] <= at - window {
                    in_window += 1;
                }
                &times[in_window..]
            }
            None => &[],
        };
        let evaluation = check(&snapshot, &run, i, &input, at, recent);
        if !continues_cleanly(&evaluation) {
            return Err(CoreError::bad_field(
                "steps",
                format!(
                    "the tenant's policies do not let a synthetic step {i} continue ({}); load fewer steps or change the policies",
                    evaluation.reason
                ),
            ));
        }
        let step = step_row(&run, i, &input, at, &evaluation);
        times.push(at);
        count_clean_step(&mut run, &input, &step);
        rows.push(step);
    }
    if !rows.is_empty() {
        lane::insert_steps(conn, &rows).await?;
        run.updated_at = now();
        lane::update_run_totals(conn, &run).await?;
    }
    Ok(run)
}
