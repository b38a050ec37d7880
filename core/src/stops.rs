//! Stopping a run at a step because of a policy: the run's stop fields, the STOPPED
//! enforcement, the incident that names the violation, and the two events (`RUN_STOPPED`,
//! `INCIDENT_CREATED`), all in the caller's transaction, with the evaluation record to follow.
//! A BLOCK policy stops a run this way when the step is recorded; a denied (or expired) approval
//! stops it this way when it is decided. Nothing else stops a run for a policy.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{EnforcementAction, IncidentStatus, RunStatus, Severity, TerminationReason},
    incident, policy_enforcement, run,
};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::Value;

use crate::{
    error::CoreResult,
    events::{self, EventKind},
    ids::{new_id, prefix},
    incidents::incident_event,
    outcome::{Committed, FollowUp},
    runs,
    time::now,
};

/// Why and where a run stops.
#[derive(Debug, Clone)]
pub(crate) struct Stop<'a> {
    pub step_index: i64,
    /// When it stopped (the step's time, or when the approval was decided).
    pub at: DateTime<Utc>,
    pub policy_id: &'a str,
    /// The incident's title.
    pub title: String,
    pub severity: Severity,
    pub termination_reason: TerminationReason,
    pub reason: String,
    /// The violation the incident is about, and its evidence.
    pub violation_id: &'a str,
    pub evidence_id: Option<&'a str>,
    /// The STOPPED enforcement's details.
    pub details: Value,
}

/// Mark `active` (the run `run` as it is being updated) as stopped by `stop`, and write the
/// enforcement and the incident. The caller writes the run, then [`announce`]s the stop.
pub(crate) async fn stop_in<C: ConnectionTrait>(
    txn: &C,
    run: &run::Model,
    active: &mut run::ActiveModel,
    stop: &Stop<'_>,
) -> CoreResult<incident::Model> {
    let at = now();
    active.status = Set(RunStatus::FailedPolicy);
    active.termination_reason = Set(Some(stop.termination_reason));
    active.completed_at = Set(Some(stop.at.max(run.started_at)));
    active.stopped_at_step = Set(Some(stop.step_index));
    active.violation_policy_id = Set(Some(stop.policy_id.to_string()));
    active.violation_step_index = Set(Some(stop.step_index));
    active.violation_timestamp = Set(Some(stop.at));
    active.violation_reason = Set(Some(stop.reason.clone()));
    active.updated_at = Set(at);
    policy_enforcement::ActiveModel {
        id: Set(new_id(prefix::ENFORCEMENT)),
        tenant_id: Set(run.tenant_id.clone()),
        policy_id: Set(Some(stop.policy_id.to_string())),
        run_id: Set(run.id.clone()),
        step_index: Set(Some(stop.step_index)),
        action_taken: Set(EnforcementAction::Stopped),
        details: Set(stop.details.clone()),
        created_at: Set(at),
    }
    .insert(txn)
    .await?;
    Ok(incident::ActiveModel {
        id: Set(new_id(prefix::INCIDENT)),
        tenant_id: Set(run.tenant_id.clone()),
        run_id: Set(run.id.clone()),
        violation_id: Set(stop.violation_id.to_string()),
        evidence_id: Set(stop.evidence_id.map(str::to_string)),
        severity: Set(stop.severity),
        severity_rank: Set(stop.severity.rank()),
        title: Set(stop.title.clone()),
        status: Set(IncidentStatus::Open),
        note: Set(None),
        created_at: Set(at),
        detected_at: Set(at),
        acknowledged_at: Set(None),
        resolved_at: Set(None),
        updated_at: Set(at),
    }
    .insert(txn)
    .await?)
}

/// The events of a stop written by [`stop_in`] (the run as stored after it), and its follow-up:
/// appended to `committed`.
pub(crate) async fn announce<C: ConnectionTrait, T>(
    txn: &C,
    stopped: &run::Model,
    incident: &incident::Model,
    committed: &mut Committed<T>,
) -> CoreResult<()> {
    committed.events.push(
        events::append(
            txn,
            &stopped.tenant_id,
            runs::run_event(EventKind::RunStopped, stopped),
        )
        .await?,
    );
    committed.events.push(
        events::append(
            txn,
            &stopped.tenant_id,
            incident_event(EventKind::IncidentCreated, incident),
        )
        .await?,
    );
    committed.follow_ups.push(FollowUp::RecordEvaluation {
        tenant_id: stopped.tenant_id.clone(),
        run_id: stopped.id.clone(),
    });
    Ok(())
}
