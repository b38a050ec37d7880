//! `verifyRun`: check a run's record without trusting it. Recompute the snapshot's hash from its
//! stored texts, recompute the hash chain from the stored steps, and replay every step against
//! the snapshot, reporting each decision or record that cannot be reproduced.

use std::collections::BTreeSet;

use governance_entities::{run, trace_step, violation};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use crate::{
    chain,
    decision_record::DecisionRecord,
    error::CoreResult,
    hashing::sha256_hex,
    policy::{CompiledSnapshot, ContentInput, RunState, StepInput, evaluate},
    runs,
    snapshot::snapshot_id_of,
};

/// One thing that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// The step concerned; `None` for the snapshot or the run as a whole.
    pub step_index: Option<i64>,
    /// `SNAPSHOT_HASH`, `MISSING_STEP`, `PREV_HASH`, `ENTRY_HASH`, `HEAD_HASH`, `DECISION`,
    /// `STATUS`, `FINDINGS`, `DECISION_RECORD` (the recorded decision does not parse),
    /// `VIOLATION_RECORD`, `RUN_TOTALS`.
    pub kind: String,
    pub expected: String,
    pub found: String,
}

/// The result of verifying a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// The hashes check out: snapshot, every step's chain link, the head.
    pub intact: bool,
    /// Replaying every step against the snapshot gives the recorded decisions and records.
    pub reproduced: bool,
    pub head_hash: String,
    pub steps_checked: i64,
    pub mismatches: Vec<Mismatch>,
}

const CHAIN_KINDS: &[&str] = &[
    "SNAPSHOT_HASH",
    "MISSING_STEP",
    "PREV_HASH",
    "ENTRY_HASH",
    "HEAD_HASH",
];

fn mismatch(
    step: Option<i64>,
    kind: &str,
    expected: impl ToString,
    found: impl ToString,
) -> Mismatch {
    Mismatch {
        step_index: step,
        kind: kind.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// Verify one run of the tenant.
pub async fn verify<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Verification> {
    let run: run::Model = runs::get(conn, tenant_id, run_id).await?;
    let snap = runs::snapshot_of(conn, &run).await?;
    let steps = trace_step::Entity::find()
        .filter(trace_step::Column::TenantId.eq(tenant_id))
        .filter(trace_step::Column::RunId.eq(run_id))
        .order_by_asc(trace_step::Column::StepIndex)
        .all(conn)
        .await?;
    let recorded_violations = violation::Entity::find()
        .filter(violation::Column::TenantId.eq(tenant_id))
        .filter(violation::Column::RunId.eq(run_id))
        .all(conn)
        .await?;
    let mut mismatches = Vec::new();

    // The snapshot: its hash and id follow from its two texts.
    let recomputed = sha256_hex(format!("{}{}", snap.policies_json, snap.thresholds_json));
    if recomputed != snap.content_hash || snapshot_id_of(&recomputed) != run.policy_snapshot_id {
        mismatches.push(mismatch(
            None,
            "SNAPSHOT_HASH",
            &snap.content_hash,
            &recomputed,
        ));
    }
    // Replay against the snapshot as stored (compiled fresh: the cache is not evidence).
    let compiled = CompiledSnapshot::compile(&snap.policies_json);

    let mut prev = chain::genesis(&run.id, &snap.content_hash);
    let (mut tokens, mut cost) = (0i64, 0i64);
    let mut timestamps = Vec::with_capacity(steps.len());
    for (position, step) in steps.iter().enumerate() {
        let index = step.step_index;
        if index != position as i64 {
            mismatches.push(mismatch(
                Some(position as i64),
                "MISSING_STEP",
                position,
                index,
            ));
        }
        if step.prev_hash != prev {
            mismatches.push(mismatch(Some(index), "PREV_HASH", &prev, &step.prev_hash));
        }
        let entry = chain::entry_hash(&step.prev_hash, &chain::step_document(&run.id, step));
        if entry != step.entry_hash {
            mismatches.push(mismatch(
                Some(index),
                "ENTRY_HASH",
                &entry,
                &step.entry_hash,
            ));
        }
        prev = step.entry_hash.clone();

        let record = DecisionRecord::from_json(&step.decision_json);
        if let Err(err) = &record {
            mismatches.push(mismatch(
                Some(index),
                "DECISION_RECORD",
                "a decision record",
                format!("unreadable: {err}"),
            ));
        }
        let record = record.ok();
        if let Ok(compiled) = &compiled {
            let content_matches: Vec<String> = record
                .as_ref()
                .map(|r| r.content_matches.clone())
                .unwrap_or_default();
            let evaluation = evaluate(
                compiled,
                &RunState {
                    run_id: &run.id,
                    workflow_id: &run.workflow_id,
                    agent: run.agent.as_deref(),
                    started_at: run.started_at,
                    tokens_used: tokens,
                    cost_micros: cost,
                    step_count: position as i64,
                    is_synthetic: run.is_synthetic,
                    metadata: run.metadata.as_ref(),
                    recent_step_timestamps: &timestamps,
                },
                &StepInput {
                    index,
                    step_type: step.step_type,
                    tokens: step.tokens,
                    cost_micros: step.cost_micros,
                    tool_name: step.tool_name.as_deref(),
                    content: ContentInput::Recorded(&content_matches),
                    timestamp: step.timestamp,
                },
            );
            if evaluation.action != step.decision {
                mismatches.push(mismatch(
                    Some(index),
                    "DECISION",
                    evaluation.action,
                    step.decision,
                ));
            }
            if evaluation.status != step.status {
                mismatches.push(mismatch(
                    Some(index),
                    "STATUS",
                    evaluation.status,
                    step.status,
                ));
            }
            let replayed: BTreeSet<String> = evaluation
                .findings
                .iter()
                .map(|f| f.policy_id.clone())
                .collect();
            let in_decision: BTreeSet<String> = record
                .as_ref()
                .map(|r| r.findings.iter().map(|f| f.policy_id.clone()).collect())
                .unwrap_or_default();
            if replayed != in_decision {
                mismatches.push(mismatch(
                    Some(index),
                    "FINDINGS",
                    join(&replayed),
                    join(&in_decision),
                ));
            }
            let in_table: BTreeSet<String> = recorded_violations
                .iter()
                .filter(|v| v.step_index == index)
                .map(|v| v.policy_id.clone())
                .collect();
            if replayed != in_table {
                mismatches.push(mismatch(
                    Some(index),
                    "VIOLATION_RECORD",
                    join(&replayed),
                    join(&in_table),
                ));
            }
        }
        tokens += step.tokens;
        cost += step.cost_micros;
        timestamps.push(step.timestamp);
    }
    if let Err(err) = &compiled {
        mismatches.push(mismatch(
            None,
            "SNAPSHOT_COMPILE",
            "a compilable snapshot",
            err,
        ));
    }
    if run.trace_head_hash != prev {
        mismatches.push(mismatch(None, "HEAD_HASH", &prev, &run.trace_head_hash));
    }
    if run.tokens_used != tokens || run.cost_micros != cost || run.step_count != steps.len() as i64
    {
        mismatches.push(mismatch(
            None,
            "RUN_TOTALS",
            format!("tokens {tokens}, cost {cost}, steps {}", steps.len()),
            format!(
                "tokens {}, cost {}, steps {}",
                run.tokens_used, run.cost_micros, run.step_count
            ),
        ));
    }
    let intact = !mismatches
        .iter()
        .any(|m| CHAIN_KINDS.contains(&m.kind.as_str()));
    let reproduced = !mismatches
        .iter()
        .any(|m| !CHAIN_KINDS.contains(&m.kind.as_str()));
    Ok(Verification {
        intact,
        reproduced,
        head_hash: run.trace_head_hash,
        steps_checked: steps.len() as i64,
        mismatches,
    })
}

fn join(ids: &BTreeSet<String>) -> String {
    ids.iter().cloned().collect::<Vec<_>>().join(",")
}
