//! `DURATION_LIMIT` for silent runs: a run that stops reporting steps must still be stopped when
//! its time is up. The sweeper records a step on its behalf (type `OTHER`, no tokens, stamped
//! now) through the ordinary step path, so the stop has the same records as any other — the
//! decision in the hash chain, violation, evidence, incident, enforcement, event.

use governance_entities::{
    enums::{PolicyAction, PolicyKind, RunStatus, StepType},
    run,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::{
    error::CoreResult,
    outcome::Committed,
    policy::CompiledSnapshot,
    steps::{self, RecordStep, Recorder, StepOutcome},
    time::now,
};

/// At most this many running runs are looked at per sweep.
const BATCH: u64 = 500;

/// The smallest `maxSeconds` of the snapshot's BLOCK duration limits.
fn blocking_duration_limit(snapshot: &CompiledSnapshot) -> Option<i64> {
    snapshot
        .policies()
        .iter()
        .filter(|p| p.kind == PolicyKind::DurationLimit && p.action == PolicyAction::Block)
        .filter_map(|p| p.rule.get("maxSeconds").and_then(|v| v.as_i64()))
        .min()
}

/// Stop every running run past its duration limit. Returns what each stop committed.
pub async fn stop_overdue(recorder: &Recorder) -> CoreResult<Vec<Committed<StepOutcome>>> {
    let (store, cache) = (recorder.store(), recorder.cache());
    let running: Vec<run::Model> = run::Entity::find()
        .filter(run::Column::Status.eq(RunStatus::Running))
        .order_by_asc(run::Column::StartedAt)
        .limit(BATCH)
        .all(store.db())
        .await?;
    let at = now();
    let mut stopped = Vec::new();
    for run in running {
        let snapshot = steps::compiled_snapshot(store.db(), cache, &run).await?;
        let Some(limit) = blocking_duration_limit(&snapshot) else {
            continue;
        };
        if (at - run.started_at).num_milliseconds() <= limit * 1000 {
            continue;
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
            Ok(committed) => stopped.push(committed),
            // The run ended meanwhile (a step or completion got there first): nothing to do.
            Err(crate::CoreError::RunTerminated(_)) | Err(crate::CoreError::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(stopped)
}
