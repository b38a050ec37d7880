//! A simulation's lifecycle: `request` resolves the proposal and picks the runs, and writes the
//! simulation `PENDING` (with a `SIMULATION_UPDATED` outbox event) and leaves its job; the job
//! ([`perform`]) moves it to `RUNNING`, replays run after run reporting progress, then writes it
//! `COMPLETED` with every run's result, the totals and the result hash (or `FAILED` with the
//! error), each change one transaction with its event. A completed simulation is never
//! changed again (the database refuses it), so a job run twice finds it done and writes nothing.

use std::{collections::HashMap, sync::Arc};

use governance_entities::{enums::SimulationStatus, simulation, trace_step};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
};
use serde_json::json;

use super::{
    compare::{self, SimulatedRun},
    proposal::{self, Proposal, ProposalSource},
};
use crate::{
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    ids::{new_id, prefix},
    outcome::{Committed, FollowUp},
    policy::CompiledSnapshot,
    run_filter::RunFilter,
    runs, snapshot,
    store::Store,
    time::now,
};

/// Runs replayed when the request names no limit.
pub const DEFAULT_RUNS: u64 = 100;
/// The most runs one simulation replays.
pub const MAX_RUNS: u64 = 1000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimulationRequest {
    pub source: ProposalSource,
    pub runs: RunFilter,
    /// The newest this many matching runs (default [`DEFAULT_RUNS`], at most [`MAX_RUNS`]).
    pub limit: Option<i64>,
}

/// The simulation's outbox event: its status and progress now.
pub fn update_event(sim: &simulation::Model) -> NewEvent {
    NewEvent {
        kind: EventKind::SimulationUpdated,
        subject_id: sim.id.clone(),
        run_id: None,
        severity_rank: None,
        payload: json!({
            "simulationId": sim.id,
            "status": sim.status.as_str(),
            "progress": sim.progress,
            "proposedSnapshotHash": sim.proposed_snapshot_hash,
            "resultHash": sim.result_hash,
            "error": sim.error,
        }),
    }
}

/// Request a simulation. The proposal is resolved and the runs are chosen now, so the job
/// replays exactly what was asked whatever changes meanwhile. Invalid input is refused before
/// anything is written.
pub async fn request(
    store: &Store,
    tenant_id: &str,
    request: SimulationRequest,
    requested_by: &str,
) -> CoreResult<Committed<simulation::Model>> {
    let limit = match request.limit {
        None => DEFAULT_RUNS,
        Some(n) if n >= 1 && (n as u64) <= MAX_RUNS => n as u64,
        Some(n) => {
            return Err(CoreError::limit(
                "simulation_runs",
                format!(
                    "`limit` is {n}: a simulation replays between 1 and {MAX_RUNS} runs; narrow the run filter or simulate in parts"
                ),
            ));
        }
    };
    let txn = store.begin().await?;
    let proposal = proposal::resolve(&*txn, tenant_id, request.source).await?;
    let run_ids = request.runs.newest_ids(&*txn, tenant_id, limit).await?;
    let at = now();
    let model = simulation::ActiveModel {
        id: Set(new_id(prefix::SIMULATION)),
        tenant_id: Set(tenant_id.to_string()),
        status: Set(SimulationStatus::Pending),
        progress: Set(0),
        proposed_snapshot_hash: Set(proposal.hash.clone()),
        proposal: Set(to_json(&proposal)?),
        run_filter: Set(to_json(&request.runs)?),
        run_ids: Set(to_json(&run_ids)?),
        runs_replayed: Set(0),
        newly_stopped: Set(0),
        no_longer_stopped: Set(0),
        stop_moved: Set(0),
        results: Set(None),
        result_hash: Set(None),
        error: Set(None),
        requested_by: Set(requested_by.to_string()),
        created_at: Set(at),
        updated_at: Set(at),
        completed_at: Set(None),
    }
    .insert(&*txn)
    .await?;
    let event = events::append(&*txn, tenant_id, update_event(&model)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(model);
    committed.events.push(event);
    committed.follow_ups.push(FollowUp::RunSimulation {
        tenant_id: tenant_id.to_string(),
        simulation_id: committed.value.id.clone(),
    });
    Ok(committed)
}

fn to_json<T: serde::Serialize>(value: &T) -> CoreResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| CoreError::Internal(e.into()))
}

/// One simulation of the tenant.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    id: &str,
) -> CoreResult<simulation::Model> {
    simulation::Entity::find_by_id(id.to_string())
        .filter(simulation::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Simulation", id))
}

/// The tenant's simulations, as a query (for pagination).
pub fn of_tenant(tenant_id: &str) -> sea_orm::Select<simulation::Entity> {
    simulation::Entity::find().filter(simulation::Column::TenantId.eq(tenant_id))
}

/// The per-run results of a completed simulation, in run order.
pub fn results(sim: &simulation::Model) -> CoreResult<Vec<SimulatedRun>> {
    match &sim.results {
        None => Ok(Vec::new()),
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            CoreError::Internal(anyhow::anyhow!("simulation {} results: {e}", sim.id))
        }),
    }
}

/// The proposal a simulation replayed.
pub fn proposal_of(sim: &simulation::Model) -> CoreResult<Proposal> {
    serde_json::from_value(sim.proposal.clone())
        .map_err(|e| CoreError::Internal(anyhow::anyhow!("simulation {} proposal: {e}", sim.id)))
}

/// Simulations still `PENDING` that were requested before `before` (their job was lost
/// between the commit and the enqueue): the sweeper enqueues them again. Oldest first.
pub async fn pending_before<C: ConnectionTrait>(
    conn: &C,
    before: chrono::DateTime<chrono::Utc>,
    limit: u64,
) -> CoreResult<Vec<(String, String)>> {
    use sea_orm::QuerySelect;
    Ok(simulation::Entity::find()
        .select_only()
        .column(simulation::Column::TenantId)
        .column(simulation::Column::Id)
        .filter(simulation::Column::Status.eq(SimulationStatus::Pending))
        .filter(simulation::Column::CreatedAt.lt(before))
        .order_by_asc(simulation::Column::CreatedAt)
        .limit(limit)
        .into_tuple()
        .all(conn)
        .await?)
}

/// Apply `change` to an unfinished simulation and write its event, in one transaction.
/// `None` when it is already COMPLETED or FAILED (nothing is written).
async fn transition(
    store: &Store,
    tenant_id: &str,
    id: &str,
    change: impl FnOnce(&mut simulation::ActiveModel),
) -> CoreResult<Option<Committed<simulation::Model>>> {
    let txn = store.begin().await?;
    let current = crate::store::one_for_update(
        &*txn,
        simulation::Entity::find_by_id(id.to_string())
            .filter(simulation::Column::TenantId.eq(tenant_id)),
        || CoreError::not_found("Simulation", id),
    )
    .await?;
    if matches!(
        current.status,
        SimulationStatus::Completed | SimulationStatus::Failed
    ) {
        return Ok(None);
    }
    let mut active: simulation::ActiveModel = current.into();
    change(&mut active);
    active.updated_at = Set(now());
    let updated = active.update(&*txn).await?;
    let event = events::append(&*txn, tenant_id, update_event(&updated)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(updated);
    committed.events.push(event);
    Ok(Some(committed))
}

/// Compiled snapshots by content hash, for one job.
#[derive(Default)]
struct Compiled {
    by_hash: HashMap<String, Arc<CompiledSnapshot>>,
}

impl Compiled {
    fn get(
        &mut self,
        content_hash: &str,
        policies_json: &str,
    ) -> CoreResult<Arc<CompiledSnapshot>> {
        if let Some(hit) = self.by_hash.get(content_hash) {
            return Ok(hit.clone());
        }
        let compiled = Arc::new(CompiledSnapshot::compile(policies_json)?);
        self.by_hash
            .insert(content_hash.to_string(), compiled.clone());
        Ok(compiled)
    }
}

/// Replay one run against the proposal (composed for the run's workflow, as the run's own
/// snapshot was).
async fn replay_run<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    proposal: &Proposal,
    compiled: &mut Compiled,
) -> CoreResult<SimulatedRun> {
    let run = runs::get(conn, tenant_id, run_id).await?;
    let recorded = runs::snapshot_of(conn, &run).await?;
    let recorded = compiled.get(&recorded.content_hash, &recorded.policies_json)?;
    let applicable: Vec<_> = proposal
        .enabled()
        .into_iter()
        .filter(|p| snapshot::applies_to(p, &run.workflow_id))
        .collect();
    let proposed = snapshot::compose(&applicable);
    let proposed = compiled.get(&proposed.content_hash, &proposed.policies_json)?;
    let steps = trace_step::Entity::find()
        .filter(trace_step::Column::TenantId.eq(tenant_id))
        .filter(trace_step::Column::RunId.eq(run_id))
        .order_by_asc(trace_step::Column::StepIndex)
        .all(conn)
        .await?;
    Ok(compare::simulate_run(&run, &steps, &recorded, &proposed))
}

/// How often progress is reported: about every tenth of the runs.
fn report_every(runs: usize) -> usize {
    (runs / 10).max(1)
}

/// Run the simulation: RUNNING, progress as runs are replayed, then COMPLETED with the result
/// (or FAILED with the error). Each change is committed with its event and handed to `report`
/// (which publishes it). Nothing is done for a simulation already COMPLETED or FAILED.
pub async fn perform<F, Fut>(
    store: &Store,
    tenant_id: &str,
    id: &str,
    mut report: F,
) -> CoreResult<Option<simulation::Model>>
where
    F: FnMut(Committed<simulation::Model>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(running) = transition(store, tenant_id, id, |s| {
        s.status = Set(SimulationStatus::Running);
        s.progress = Set(0);
    })
    .await?
    else {
        return Ok(None);
    };
    let sim = running.value.clone();
    report(running).await;
    let replayed = async {
        let proposal = proposal_of(&sim)?;
        let run_ids: Vec<String> = serde_json::from_value(sim.run_ids.clone()).map_err(|e| {
            CoreError::Internal(anyhow::anyhow!("simulation {} run ids: {e}", sim.id))
        })?;
        let mut compiled = Compiled::default();
        let mut results = Vec::with_capacity(run_ids.len());
        let every = report_every(run_ids.len());
        for (done, run_id) in run_ids.iter().enumerate() {
            results
                .push(replay_run(store.db(), tenant_id, run_id, &proposal, &mut compiled).await?);
            let done = done + 1;
            if done % every == 0 && done < run_ids.len() {
                let progress = (done * 100 / run_ids.len()) as i32;
                if let Some(step) = transition(store, tenant_id, id, |s| {
                    s.progress = Set(progress);
                })
                .await?
                {
                    report(step).await;
                }
            }
        }
        Ok::<_, CoreError>(results)
    }
    .await;
    let finished = match replayed {
        Ok(results) => {
            let totals = compare::totals(&results);
            let hash = compare::result_hash(&sim.proposed_snapshot_hash, &results);
            let results = to_json(&results)?;
            transition(store, tenant_id, id, move |s| {
                s.status = Set(SimulationStatus::Completed);
                s.progress = Set(100);
                s.runs_replayed = Set(totals.runs_replayed);
                s.newly_stopped = Set(totals.newly_stopped);
                s.no_longer_stopped = Set(totals.no_longer_stopped);
                s.stop_moved = Set(totals.stop_moved);
                s.results = Set(Some(results));
                s.result_hash = Set(Some(hash));
                s.completed_at = Set(Some(now()));
            })
            .await?
        }
        Err(err) => {
            // The tenant sees what went wrong, never internal error chains: those are logged
            // under a reference the message names.
            let message = match &err {
                CoreError::Internal(inner) => {
                    let reference = new_id("err");
                    tracing::error!(error = ?inner, reference = %reference, simulation_id = %id, "simulation failed");
                    format!(
                        "the simulation could not be completed; the server log has the details under reference {reference}"
                    )
                }
                other => other.to_string(),
            };
            transition(store, tenant_id, id, move |s| {
                s.status = Set(SimulationStatus::Failed);
                s.error = Set(Some(message));
                s.completed_at = Set(Some(now()));
            })
            .await?
        }
    };
    let value = finished.as_ref().map(|c| c.value.clone());
    if let Some(finished) = finished {
        report(finished).await;
    }
    Ok(value)
}
