//! `DURATION_LIMIT` for silent runs: a run that stops reporting steps must still be stopped when
//! its time is up. The sweeper records a step on its behalf (type `OTHER`, no tokens, stamped
//! now) through the ordinary step path, so the stop has the same records as any other — the
//! decision in the hash chain, violation, evidence, incident, enforcement, event.
//!
//! Each run stores its deadline (`runs.deadline_at`, set when it starts), indexed with its status,
//! so a sweep reads only the running runs whose deadline has passed, whichever tenant they belong
//! to and however many other runs are running. A stored deadline is never later than the one its
//! snapshot gives, and the snapshot decides: a run read as due is checked against it, and either
//! stopped or given the deadline the snapshot gives (runs that were running before deadlines were
//! stored are given their start time as a deadline, and are corrected so on the first sweep).

use chrono::{DateTime, Duration, Utc};
use governance_entities::{
    enums::{RunStatus, StepType},
    run,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};

use crate::{
    error::CoreResult,
    outcome::Committed,
    policy::{CompiledSnapshot, elapsed_ms, past_duration_limit},
    steps::{self, RecordStep, Recorder, StepOutcome},
    time::now,
};

/// At most this many due runs are handled per sweep (the rest are next, oldest deadline first).
const BATCH: u64 = 500;

/// The deadline of a run started at `started_at` under a silent-run limit of `limit_seconds`
/// ([`CompiledSnapshot::silent_run_limit_seconds`]): none without a limit.
pub fn deadline(started_at: DateTime<Utc>, limit_seconds: Option<i64>) -> Option<DateTime<Utc>> {
    limit_seconds.map(|seconds| started_at + Duration::seconds(seconds))
}

/// What a sweep does with a run whose stored deadline has passed, by its snapshot at `at`.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    /// Past its limit: record the stop.
    Stop,
    /// Not yet: store this deadline instead (`None`: no limit can end it).
    Later(Option<DateTime<Utc>>),
}

fn judge(run: &run::Model, snapshot: &CompiledSnapshot, at: DateTime<Utc>) -> Due {
    match snapshot.silent_run_limit_seconds() {
        Some(limit) if past_duration_limit(elapsed_ms(run.started_at, at), limit) => Due::Stop,
        limit => Due::Later(deadline(run.started_at, limit)),
    }
}

/// Stop every running run past its duration limit. Returns what each stop committed. A run that
/// cannot be handled is logged and left for the next sweep; it does not hold up the others.
pub async fn stop_overdue(recorder: &Recorder) -> CoreResult<Vec<Committed<StepOutcome>>> {
    let store = recorder.store();
    let at = now();
    let due: Vec<run::Model> = run::Entity::find()
        .filter(run::Column::Status.eq(RunStatus::Running))
        .filter(run::Column::DeadlineAt.lt(at))
        .order_by_asc(run::Column::DeadlineAt)
        .limit(BATCH)
        .all(store.db())
        .await?;
    let mut stopped = Vec::new();
    for run in due {
        let run_id = run.id.clone();
        match stop_if_overdue(recorder, run, at).await {
            Ok(Some(committed)) => stopped.push(committed),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                run_id = %run_id,
                error = %err,
                "a run past its deadline could not be stopped; trying again next sweep"
            ),
        }
    }
    Ok(stopped)
}

async fn stop_if_overdue(
    recorder: &Recorder,
    run: run::Model,
    at: DateTime<Utc>,
) -> CoreResult<Option<Committed<StepOutcome>>> {
    let store = recorder.store();
    let snapshot = steps::compiled_snapshot(store.db(), recorder.cache(), &run).await?;
    if let Due::Later(deadline_at) = judge(&run, &snapshot, at) {
        // A run read a fraction of a millisecond before its limit keeps its deadline, and is
        // stopped on the next sweep.
        if deadline_at != run.deadline_at {
            let txn = store.begin().await?;
            run::Entity::update_many()
                .col_expr(run::Column::DeadlineAt, Expr::value(deadline_at))
                .filter(run::Column::Id.eq(run.id.as_str()))
                .exec(&*txn)
                .await?;
            txn.commit().await?;
        }
        return Ok(None);
    }
    let outcome = recorder
        .record(
            &run.tenant_id,
            RecordStep {
                run_id: run.id.clone(),
                step_index: None,
                step_type: StepType::Other,
                tokens: 0,
                cost_micros: 0,
                content: None,
                tool_name: None,
                timestamp: Some(at),
            },
        )
        .await;
    match outcome {
        Ok(committed) => Ok(Some(committed)),
        // The run ended meanwhile (a step or completion got there first): nothing to do.
        Err(crate::CoreError::RunTerminated(_)) | Err(crate::CoreError::Conflict(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use governance_entities::enums::{PolicyAction, PolicyKind, PolicyMode, Severity};
    use serde_json::json;

    use super::*;
    use crate::{
        policies::{self, NewPolicy},
        policy::SnapshotCache,
        runs::{self, StartRun},
        steps::EVALUATION_BUDGET,
        test_support::{run_row, tenant_store},
    };

    /// A run starts with its snapshot's deadline. A run whose stored deadline is its start (as
    /// the migration leaves runs that were running before deadlines existed) is checked against
    /// its snapshot on the next sweep and given the deadline the snapshot gives, or none, with
    /// nothing recorded for it.
    #[tokio::test]
    async fn a_stored_deadline_is_set_at_start_and_corrected_from_the_snapshot() {
        let at = tenant_store().await;
        let (store, tenant) = (at.store.clone(), at.tenant_id.clone());
        let limit = |action, mode| NewPolicy {
            name: "one hour".into(),
            description: None,
            kind: PolicyKind::DurationLimit,
            rule: json!({ "maxSeconds": 3600 }),
            action,
            severity: Severity::High,
            workflow_id: Some("wf-limited".into()),
            enabled: true,
            mode,
        };
        policies::create(
            &store,
            &tenant,
            limit(PolicyAction::Block, PolicyMode::Enforce),
            None,
        )
        .await
        .expect("limit");
        policies::create(
            &store,
            &tenant,
            NewPolicy {
                workflow_id: Some("wf-warned".into()),
                ..limit(PolicyAction::Warn, PolicyMode::Enforce)
            },
            None,
        )
        .await
        .expect("warning");
        let start = |workflow: &'static str| {
            let (store, tenant) = (store.clone(), tenant.clone());
            async move {
                runs::start(&store, &tenant, StartRun::of_workflow(workflow))
                    .await
                    .expect("run")
                    .value
            }
        };
        let limited = start("wf-limited").await;
        let warned = start("wf-warned").await;
        let free = start("wf-free").await;
        let hour = |run: &run::Model| Some(run.started_at + Duration::seconds(3600));
        assert_eq!(limited.deadline_at, hour(&limited));
        assert_eq!(warned.deadline_at, None, "a WARN does not end a silent run");
        assert_eq!(free.deadline_at, None);

        // As the migration leaves runs started before deadlines were stored.
        run::Entity::update_many()
            .col_expr(run::Column::DeadlineAt, Expr::col(run::Column::StartedAt))
            .exec(store.db())
            .await
            .expect("backfilled");
        let recorder = Recorder::new(store.clone(), SnapshotCache::new(), EVALUATION_BUDGET);
        let stopped = stop_overdue(&recorder).await.expect("sweep");
        assert!(stopped.is_empty());
        for (run, deadline) in [(&limited, hour(&limited)), (&warned, None), (&free, None)] {
            let now = run_row(&store, &run.id).await;
            assert_eq!(now.deadline_at, deadline, "{}", run.workflow_id);
            assert_eq!(now.status, RunStatus::Running);
            assert_eq!(now.step_count, 0);
        }
        // Nothing is due any more.
        let again = run::Entity::find()
            .filter(run::Column::DeadlineAt.lt(now()))
            .all(store.db())
            .await
            .expect("due");
        assert!(again.is_empty());
    }
}
