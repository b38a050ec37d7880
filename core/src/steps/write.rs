//! The write path of a step report: in the caller's transaction, the step and everything its
//! decision entails — run totals and status, the inflection, violation facts with masked
//! evidence, the incident (one per stop), enforcement rows and outbox events — or, for a re-sent
//! step, the recorded answer, and for a step after the end, the recorded refusal.
//!
//! Nothing here evaluates a policy: a new step arrives decided (see [`super::decision`]), and
//! its decision is written only while the run is still as it was decided on; otherwise the
//! answer is [`Written::Stale`] and the caller decides again on the newer state. So no
//! evaluation ever holds the write lock, the lane, or a row lock that other steps wait on.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, EnforcementAction, PolicyAction, RunStatus},
    evidence, incident, policy_enforcement, run, shadow_finding, trace_step, violation,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QueryTrait, Set, Statement,
};
use serde_json::json;

use super::{
    RecordStep, Reporter, StepRecord,
    decision::{Decided, Report, classify, same_step, step_row},
};
use crate::{
    approvals,
    error::{CoreError, CoreResult},
    hashing::sha256_hex,
    ids::{new_id, prefix},
    outcome::{Committed, StepNotice},
    placeholders::values_rows,
    policy::{Evaluation, Finding},
    runs,
    stops::{self, Stop},
    store::Store,
    tenancy,
    time::now,
};

/// Rows per multi-row INSERT (SQLite allows 32,766 bound values; a step has 19 columns).
const INSERT_CHUNK: usize = 512;

/// What the write path did with a report.
// Lives for one report; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Written {
    /// Committed (or, for a re-sent step, answered from the record).
    Done(Committed<StepRecord>),
    /// The run moved on since the step was decided (or it was not decided): nothing was
    /// written; decide again.
    Stale,
}

/// Write one report in its own transaction (refused, writing nothing, when its key was revoked).
pub(crate) async fn record_committed(
    store: &Store,
    reporter: Reporter<'_>,
    input: &RecordStep,
    decided: Option<&Decided>,
) -> CoreResult<Written> {
    let txn = store.begin_first().await?;
    if let Some(key_id) = reporter.key_id
        && tenancy::active_keys(&*txn, [key_id]).await?.is_empty()
    {
        return Err(tenancy::key_refused());
    }
    match record_in(&*txn, reporter, input, decided).await {
        Ok(Written::Done(committed)) => {
            // Only a committed decision is answered.
            txn.commit().await?;
            Ok(Written::Done(committed))
        }
        // Nothing was written.
        Ok(Written::Stale) => Ok(Written::Stale),
        // The refused attempt is on the record.
        Err(refused @ CoreError::RunTerminated(_)) => {
            txn.commit().await?;
            Err(refused)
        }
        // Anything else wrote nothing worth keeping; dropping the transaction rolls it back.
        Err(other) => Err(other),
    }
}

/// Write a report in the caller's transaction. Only `RunTerminated` (whose refusal is recorded)
/// and `Done` leave writes behind; other refusals, and `Stale`, are decided before anything is
/// written.
pub(crate) async fn record_in<C: ConnectionTrait>(
    txn: &C,
    reporter: Reporter<'_>,
    input: &RecordStep,
    decided: Option<&Decided>,
) -> CoreResult<Written> {
    let run = runs::get_for_update(txn, reporter.tenant_id, &input.run_id).await?;
    match classify(&run, input)? {
        Report::Resent(index) => answer_resent(txn, run, index, input).await,
        Report::AfterEnd => Err(refuse_after_end(txn, &run, input).await?),
        Report::New { index, .. } => match decided.and_then(|d| d.for_run(&run, index)) {
            Some(decided) => Ok(Written::Done(
                apply(
                    txn,
                    run,
                    index,
                    input,
                    decided.timestamp,
                    decided.evaluation.clone(),
                    reporter.key_id,
                )
                .await?,
            )),
            None => Ok(Written::Stale),
        },
    }
}

/// A re-sent index: the same step again gets the recorded decision; a different step under that
/// index is a conflict. Nothing is counted twice.
async fn answer_resent<C: ConnectionTrait>(
    txn: &C,
    run: run::Model,
    index: i64,
    input: &RecordStep,
) -> CoreResult<Written> {
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
    // A held step's answer is its approval as it stands: pending, or decided.
    let approval = match recorded.decision {
        DecisionAction::Hold => approvals::of_step(txn, &run.tenant_id, &run.id, index).await?,
        _ => None,
    };
    Ok(Written::Done(Committed::new(StepRecord {
        run,
        step: recorded,
        violations,
        incident,
        approval,
        replayed: true,
    })))
}

/// A step after the run ended: refused, and the attempt is on the record. Returns the refusal.
async fn refuse_after_end<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    input: &RecordStep,
) -> CoreResult<CoreError> {
    policy_enforcement::ActiveModel {
        id: Set(new_id(prefix::ENFORCEMENT)),
        tenant_id: Set(run.tenant_id.clone()),
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
    Ok(CoreError::RunTerminated(format!(
        "run `{}` has ended ({}{}); the step was not added to the trace",
        run.id,
        run.status,
        run.termination_reason
            .map(|r| format!(", {r}"))
            .unwrap_or_default()
    )))
}

/// Write the step and its consequences in the caller's transaction (the caller commits).
pub(crate) async fn apply<C: ConnectionTrait>(
    txn: &C,
    run: run::Model,
    index: i64,
    input: &RecordStep,
    timestamp: DateTime<Utc>,
    evaluation: Evaluation,
    reported_by: Option<&str>,
) -> CoreResult<Committed<StepRecord>> {
    let tenant_id = run.tenant_id.clone();
    let step = step_row(&run, index, input, timestamp, &evaluation);
    // Every column is written except the database-generated key.
    let mut active = trace_step::ActiveModel::from(step).reset_all();
    active.pk = sea_orm::ActiveValue::NotSet;
    let stored_step = active.insert(txn).await?;

    let at = now();
    // What the shadow policies would have done: recorded, never enforced.
    if !evaluation.shadow_findings.is_empty() {
        shadow_finding::Entity::insert_many(evaluation.shadow_findings.iter().map(|f| {
            shadow_finding::ActiveModel {
                id: Set(new_id(prefix::SHADOW_FINDING)),
                tenant_id: Set(tenant_id.clone()),
                policy_id: Set(f.policy_id.clone()),
                policy_version: Set(f.policy_version),
                run_id: Set(run.id.clone()),
                step_index: Set(index),
                would_stop: Set(f.action == PolicyAction::Block),
                reason: Set(f.reason.clone()),
                observed_value: Set(f.evaluated_value.clone()),
                threshold: Set(f.threshold_condition.clone()),
                timestamp: Set(timestamp),
                created_at: Set(at),
            }
        }))
        .exec_without_returning(txn)
        .await?;
    }
    let mut violations = Vec::with_capacity(evaluation.findings.len());
    let mut inflection: Option<(violation::Model, evidence::Model, &Finding)> = None;
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
    let mut stop_incident = None;
    if let Some((violation, evidence, finding)) = inflection {
        let stop = Stop {
            step_index: index,
            at: timestamp,
            policy_id: &finding.policy_id,
            title: format!(
                "{} stopped run {} at step {index}",
                finding.policy_name, run.id
            ),
            severity: finding.severity,
            termination_reason: finding.termination_reason,
            reason: finding.reason.clone(),
            violation_id: &violation.id,
            evidence_id: Some(&evidence.id),
            details: enforcement_details(finding),
        };
        stop_incident = Some(stops::stop_in(txn, &run, &mut active_run, &stop).await?);
    }
    let held = evaluation.hold_finding();
    if held.is_some() {
        active_run.status = Set(RunStatus::AwaitingApproval);
    }
    let updated_run = active_run.update(txn).await?;
    let mut committed = Committed::new(());
    let mut approval_out = None;
    if let Some(finding) = held {
        let terms = evaluation.approval.unwrap_or_default();
        let (state, event) =
            approvals::open(txn, &updated_run, index, finding, terms, reported_by, at).await?;
        committed.events.push(event);
        approval_out = Some(state);
    }
    if let Some(incident) = &stop_incident {
        stops::announce(txn, &updated_run, incident, &mut committed).await?;
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
            incident: stop_incident,
            approval: approval_out,
            replayed: false,
        },
        events: committed.events,
        follow_ups: committed.follow_ups,
        steps: vec![notice],
    })
}

/// What an enforcement because of `finding` records.
fn enforcement_details(finding: &Finding) -> serde_json::Value {
    json!({
        "policyVersion": finding.policy_version,
        "reason": finding.reason,
        "thresholdCondition": finding.threshold_condition,
        "evaluatedValue": finding.evaluated_value,
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
        details: Set(enforcement_details(finding)),
        created_at: Set(now()),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// The violations and incident a recorded step produced.
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

/// The multi-row INSERTs of `steps`, [`INSERT_CHUNK`] rows each (none for no steps).
pub(crate) fn insert_steps_statements(
    backend: DbBackend,
    steps: &[trace_step::Model],
) -> Vec<Statement> {
    steps
        .chunks(INSERT_CHUNK)
        .map(|chunk| {
            let rows = chunk.iter().map(|step| {
                let mut active = trace_step::ActiveModel::from(step.clone()).reset_all();
                active.pk = sea_orm::ActiveValue::NotSet;
                active
            });
            trace_step::Entity::insert_many(rows).build(backend)
        })
        .collect()
}

/// Write clean steps and what they change on their runs (totals, step count, chain head): the
/// multi-row inserts, then ONE update for all the runs. On PostgreSQL the update and the last
/// insert are one statement (`WITH steps AS (INSERT …) UPDATE runs …`), which saves the step
/// lane a round trip per batch; SQLite has no data-modifying `WITH` and writes them one after
/// the other.
pub(crate) async fn write_clean_steps<C: ConnectionTrait>(
    conn: &C,
    steps: &[trace_step::Model],
    runs: &[&run::Model],
) -> CoreResult<()> {
    let backend = conn.get_database_backend();
    let mut inserts = insert_steps_statements(backend, steps);
    let last = match backend {
        DbBackend::Postgres => inserts.pop(),
        _ => None,
    };
    for statement in inserts {
        conn.execute_raw(statement).await?;
    }
    let update = match last {
        Some(insert) => Some(with_insert(insert, runs)),
        None => run_totals_statement(backend, runs),
    };
    let Some(update) = update else {
        return Ok(());
    };
    let updated = conn.execute_raw(update).await?;
    if updated.rows_affected() != runs.len() as u64 {
        return Err(anyhow::anyhow!(
            "{} of {} runs could be updated",
            updated.rows_affected(),
            runs.len()
        )
        .into());
    }
    Ok(())
}

/// PostgreSQL: `insert` run as part of the update of `runs`' totals (a data-modifying `WITH`
/// runs to completion whether or not the statement reads it; the statement reports the rows the
/// update changed).
fn with_insert(insert: Statement, runs: &[&run::Model]) -> Statement {
    let mut values = insert.values.map(|v| v.0).unwrap_or_default();
    let mut sql = format!("WITH steps AS ({}) ", insert.sql);
    if let Some(update) = run_totals_from(DbBackend::Postgres, runs, values.len() + 1) {
        sql.push_str(&update.sql);
        values.extend(update.values.map(|v| v.0).unwrap_or_default());
    } else {
        sql.push_str("SELECT 1 WHERE false");
    }
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The one statement that writes the totals of `runs` (`None` for no runs): `UPDATE … FROM
/// (VALUES …)`, which SQLite and PostgreSQL both read the same way (the values' columns are
/// `column1`, `column2`, …).
pub(crate) fn run_totals_statement(backend: DbBackend, runs: &[&run::Model]) -> Option<Statement> {
    run_totals_from(backend, runs, 1)
}

/// A run's row in a totals update's `VALUES`: `column1` to `column6` are its id, tokens, cost,
/// step count, chain head and update time.
pub(super) fn totals_row(run: &run::Model) -> [sea_orm::Value; 6] {
    [
        run.id.clone().into(),
        run.tokens_used.into(),
        run.cost_micros.into(),
        run.step_count.into(),
        run.trace_head_hash.clone().into(),
        run.updated_at.into(),
    ]
}

/// [`run_totals_statement`] with its placeholders numbered from `first`.
fn run_totals_from(backend: DbBackend, runs: &[&run::Model], first: usize) -> Option<Statement> {
    if runs.is_empty() {
        return None;
    }
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(runs.len() * 6);
    for run in runs {
        values.extend(totals_row(run));
    }
    let sql = format!(
        "UPDATE runs SET tokens_used = v.column2, cost_micros = v.column3, step_count = v.column4, \
         trace_head_hash = v.column5, updated_at = v.column6 \
         FROM (VALUES {}) AS v WHERE runs.id = v.column1",
        values_rows(backend, first, runs.len(), 6)
    );
    Some(Statement::from_sql_and_values(backend, sql, values))
}
