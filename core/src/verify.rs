//! `verifyRun`: check a run's record without trusting it. Recompute the snapshot's hash from its
//! stored texts, recompute the hash chain from the stored steps, and replay every step against
//! the snapshot, reporting each decision or record that cannot be reproduced. [`verify_anchored`]
//! also checks the run against the tenant's transparency log: its logged head must lie on the
//! recomputed chain, the leaf must be in the latest checkpoint, the checkpoint must be signed by
//! one of the deployment's keys, and the log must be consistent with the last witnessed
//! checkpoint. A run rewritten behind the service's back, however consistently, fails there.

use std::collections::BTreeSet;

use governance_entities::{enums::RunStatus, run, trace_step, violation};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use crate::{
    chain,
    decision_record::DecisionRecord,
    error::CoreResult,
    hashing::sha256_hex,
    merkle,
    policy::CompiledSnapshot,
    replay::{Replay, Totals},
    runs, signing,
    snapshot::snapshot_id_of,
    transparency::{self, CheckpointBody},
};

/// One thing that does not check out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// The step concerned; `None` for the snapshot or the run as a whole.
    pub step_index: Option<i64>,
    /// `SNAPSHOT_HASH`, `MISSING_STEP`, `PREV_HASH`, `ENTRY_HASH`, `HEAD_HASH`,
    /// `RECORD_FORMAT`, `LOG_LEAF` (the logged head is not on the recomputed chain),
    /// `LOG_INCLUSION`, `CHECKPOINT_SIGNATURE`, `LOG_CONSISTENCY` (the log is not an extension of
    /// the witnessed checkpoint), `DECISION`, `STATUS`, `FINDINGS`, `SHADOW_FINDINGS`, `DECISION_RECORD` (the
    /// recorded decision does not parse), `VIOLATION_RECORD`, `RUN_TOTALS`.
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
    /// The size of the checkpoint the run was checked against; `None` when the log does not
    /// hold the run yet (or the log was not checked).
    pub checkpoint_tree_size: Option<i64>,
}

/// What a run is checked against besides its own rows.
#[derive(Debug, Clone, Default)]
pub struct Anchors {
    /// Every key whose signature on a checkpoint is accepted.
    pub keys: Vec<crate::signing::VerifierKey>,
    /// The witness file the sequencer appends checkpoints to, if one is configured.
    pub witness_file: Option<std::path::PathBuf>,
}

const CHAIN_KINDS: &[&str] = &[
    "SNAPSHOT_HASH",
    "MISSING_STEP",
    "PREV_HASH",
    "ENTRY_HASH",
    "HEAD_HASH",
    "RECORD_FORMAT",
    "APPROVAL_ENTRY",
    "LOG_LEAF",
    "LOG_INCLUSION",
    "CHECKPOINT_SIGNATURE",
    "LOG_CONSISTENCY",
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

/// Verify one run of the tenant from its own rows (chain and replay; the log is not checked).
pub async fn verify<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Verification> {
    Ok(verify_rows(conn, tenant_id, run_id).await?.0)
}

/// Verify one run of the tenant from its rows and against the transparency log: see the module
/// documentation.
pub async fn verify_anchored<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    anchors: &Anchors,
) -> CoreResult<Verification> {
    let (mut verification, heads, status) = verify_rows(conn, tenant_id, run_id).await?;
    let (found, size) = log_mismatches(conn, tenant_id, run_id, &heads, status, anchors).await?;
    verification.mismatches.extend(found);
    verification.checkpoint_tree_size = size;
    verification.intact = !verification
        .mismatches
        .iter()
        .any(|m| CHAIN_KINDS.contains(&m.kind.as_str()));
    Ok(verification)
}

/// The run checked from its rows, and its recomputed head after each number of steps.
async fn verify_rows<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<(Verification, Vec<Vec<String>>, RunStatus)> {
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

    if chain::RecordFormat::from_number(run.record_format).is_none() {
        mismatches.push(mismatch(None, "RECORD_FORMAT", "1 or 2", run.record_format));
    }
    // Approval decisions: chained entries after the steps they decide.
    let decisions = crate::approvals::decisions_of_run(conn, run_id).await?;
    let mut prev = chain::genesis(&run, &snap.content_hash);
    // The heads the chain has after each number of steps, as recomputed: heads[k] after k
    // steps (the step's entry, then its approval decision's when it was held and decided).
    let mut heads = vec![vec![prev.clone()]];
    let mut replay = Replay::new(&run);
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
        let entry = chain::entry_hash(&step.prev_hash, &chain::step_document(&run, step));
        if entry != step.entry_hash {
            mismatches.push(mismatch(
                Some(index),
                "ENTRY_HASH",
                &entry,
                &step.entry_hash,
            ));
        }
        prev = step.entry_hash.clone();
        heads.push(vec![entry.clone()]);
        let held = step.decision == governance_entities::enums::DecisionAction::Hold;
        match decisions.iter().find(|d| d.step_index == index) {
            Some(decided) => {
                if !held {
                    mismatches.push(mismatch(
                        Some(index),
                        "APPROVAL_ENTRY",
                        "no approval decision (the step was not held)",
                        &decided.approval_id,
                    ));
                }
                let on_timeout = DecisionRecord::from_json(&step.decision_json)
                    .ok()
                    .and_then(|r| r.hold)
                    .map(|h| h.on_timeout.as_str());
                if let Some(problem) = crate::approvals::decision_problem(
                    decided.status.as_str(),
                    decided.decision.as_str(),
                    decided.decided_by_key.as_deref(),
                    on_timeout,
                    position + 1 < steps.len(),
                ) {
                    mismatches.push(mismatch(
                        Some(index),
                        "APPROVAL_ENTRY",
                        "a consistent approval decision",
                        problem,
                    ));
                }
                if decided.prev_hash != prev {
                    mismatches.push(mismatch(
                        Some(index),
                        "PREV_HASH",
                        &prev,
                        &decided.prev_hash,
                    ));
                }
                let entry =
                    chain::entry_hash(&decided.prev_hash, &chain::approval_document(&run, decided));
                if entry != decided.entry_hash {
                    mismatches.push(mismatch(
                        Some(index),
                        "APPROVAL_ENTRY",
                        &entry,
                        &decided.entry_hash,
                    ));
                }
                prev = decided.entry_hash.clone();
                if let Some(after) = heads.last_mut() {
                    after.push(entry);
                }
            }
            // A held step is the run's last until its approval is decided.
            None if held && position + 1 < steps.len() => mismatches.push(mismatch(
                Some(index),
                "APPROVAL_ENTRY",
                "an approval decision before the next step",
                "none: the run went on past a held step",
            )),
            None => {}
        }
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
            let evaluation = replay.evaluate(compiled, step, &content_matches);
            if evaluation.action != step.decision {
                mismatches.push(mismatch(
                    Some(index),
                    "DECISION",
                    evaluation.action,
                    step.decision,
                ));
            }
            let replayed_hold = evaluation.hold_finding().map(|f| {
                let terms = evaluation.approval.unwrap_or_default();
                (f.policy_id.clone(), terms.timeout_seconds, terms.on_timeout)
            });
            let recorded_hold = record
                .as_ref()
                .and_then(|r| r.hold.as_ref())
                .map(|h| (h.policy_id.clone(), h.timeout_seconds, h.on_timeout));
            if replayed_hold != recorded_hold {
                mismatches.push(mismatch(
                    Some(index),
                    "HOLD",
                    format!("{replayed_hold:?}"),
                    format!("{recorded_hold:?}"),
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
            // What the shadow policies would have done must replay too.
            let replayed_shadow: BTreeSet<String> = evaluation
                .shadow_findings
                .iter()
                .map(|f| f.policy_id.clone())
                .collect();
            let recorded_shadow: BTreeSet<String> = record
                .as_ref()
                .map(|r| {
                    r.shadow_findings
                        .iter()
                        .map(|f| f.policy_id.clone())
                        .collect()
                })
                .unwrap_or_default();
            if replayed_shadow != recorded_shadow {
                mismatches.push(mismatch(
                    Some(index),
                    "SHADOW_FINDINGS",
                    join(&replayed_shadow),
                    join(&recorded_shadow),
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
        replay.advance(step);
    }
    for stray in decisions
        .iter()
        .filter(|d| !steps.iter().any(|s| s.step_index == d.step_index))
    {
        mismatches.push(mismatch(
            Some(stray.step_index),
            "APPROVAL_ENTRY",
            "a held step for the approval decision",
            format!(
                "{} decides a step the record does not have",
                stray.approval_id
            ),
        ));
    }
    if let Err(err) = &compiled {
        mismatches.push(mismatch(
            None,
            "SNAPSHOT_COMPILE",
            "a compilable snapshot",
            err,
        ));
    }
    let Totals {
        tokens,
        cost_micros: cost,
        ..
    } = replay.totals();
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
    Ok((
        Verification {
            intact,
            reproduced,
            head_hash: run.trace_head_hash,
            steps_checked: steps.len() as i64,
            mismatches,
            checkpoint_tree_size: None,
        },
        heads,
        run.status,
    ))
}

/// The run against the tenant's log; also the checkpoint size it was checked against, `None`
/// while the log does not hold the run.
async fn log_mismatches<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    heads: &[Vec<String>],
    status: RunStatus,
    anchors: &Anchors,
) -> CoreResult<(Vec<Mismatch>, Option<i64>)> {
    let Some(checkpoint) = transparency::latest_checkpoint(conn, tenant_id).await? else {
        return Ok((Vec::new(), None));
    };
    let leaves = transparency::run_leaves(conn, tenant_id, run_id, checkpoint.tree_size).await?;
    if leaves.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut found = Vec::new();
    let checkpoint = &checkpoint;
    // Every head the log holds for the run must be the head the chain has after that many
    // steps: a rewrite changes the chain, never what the log already holds.
    let mut leaf_hashes = Vec::with_capacity(leaves.len());
    for leaf in &leaves {
        let on_chain = usize::try_from(leaf.step_count)
            .ok()
            .and_then(|count| heads.get(count));
        if !on_chain.is_some_and(|held| held.contains(&leaf.head_hash)) {
            found.push(mismatch(
                Some(leaf.step_count),
                "LOG_LEAF",
                format!(
                    "head {} after {} steps (logged as leaf {})",
                    leaf.head_hash, leaf.step_count, leaf.leaf_index
                ),
                on_chain.map_or_else(
                    || format!("only {} steps", heads.len().saturating_sub(1)),
                    |held| format!("head {}", held.join(" or ")),
                ),
            ));
        }
        // An ended run's status is final: a terminal status the log holds must still be the
        // run's (a rewrite of the status alone leaves the chain as it was).
        let logged_terminal = leaf
            .status
            .parse::<RunStatus>()
            .ok()
            .filter(|s| s.is_terminal());
        if let Some(logged) = logged_terminal
            && logged != status
        {
            found.push(mismatch(
                None,
                "LOG_LEAF",
                format!("status {logged} (logged as leaf {})", leaf.leaf_index),
                format!("status {status}"),
            ));
        }
        let document: Option<serde_json::Value> = serde_json::from_str(&leaf.leaf_data).ok();
        let says = |field: &str| document.as_ref().and_then(|d| d.get(field)).cloned();
        let leaf_hash = merkle::leaf_hash(leaf.leaf_data.as_bytes());
        if hex::encode(leaf_hash) != leaf.leaf_hash
            || says("headHash") != Some(serde_json::json!(leaf.head_hash))
            || says("runId") != Some(serde_json::json!(run_id))
            || says("stepCount") != Some(serde_json::json!(leaf.step_count))
        {
            found.push(mismatch(
                None,
                "LOG_LEAF",
                "a leaf whose data and hash agree with its row",
                format!("leaf {}", leaf.leaf_index),
            ));
        }
        leaf_hashes.push(leaf_hash);
    }

    // The checkpoint: signed by a deployment key, and saying what its row says.
    let body = match signing::verify_note(&checkpoint.note, &anchors.keys) {
        Ok(verified) => CheckpointBody::parse(&verified.text),
        Err(err) => {
            found.push(mismatch(
                None,
                "CHECKPOINT_SIGNATURE",
                "a checkpoint signed by a published key",
                err.to_string(),
            ));
            None
        }
    };
    if let Some(body) = &body {
        if body.size != checkpoint.tree_size as u64
            || hex::encode(body.root) != checkpoint.root_hash
            || !body.origin.ends_with(&format!("/{tenant_id}"))
        {
            found.push(mismatch(
                None,
                "CHECKPOINT_SIGNATURE",
                "the signed size, root and origin",
                format!(
                    "tree size {}, root {}",
                    checkpoint.tree_size, checkpoint.root_hash
                ),
            ));
        }
        for (leaf, leaf_hash) in leaves.iter().zip(&leaf_hashes) {
            let path = transparency::inclusion_hashes(conn, leaf, checkpoint.tree_size).await?;
            if let Err(err) = merkle::verify_inclusion(
                leaf.leaf_index as u64,
                body.size,
                leaf_hash,
                &path,
                &body.root,
            ) {
                found.push(mismatch(
                    None,
                    "LOG_INCLUSION",
                    format!(
                        "leaf {} in the signed tree of {}",
                        leaf.leaf_index, body.size
                    ),
                    err.to_string(),
                ));
            }
        }
        if let Some(path) = &anchors.witness_file
            && let Some(witnessed) = witnessed(path, tenant_id, &anchors.keys)
            && let Err(why) = consistent(conn, tenant_id, &witnessed, body).await?
        {
            found.push(mismatch(
                None,
                "LOG_CONSISTENCY",
                format!(
                    "a log extending the witnessed checkpoint of {} leaves",
                    witnessed.size
                ),
                why,
            ));
        }
    }
    Ok((found, Some(checkpoint.tree_size)))
}

/// The last checkpoint of the tenant in the witness file whose signature verifies.
fn witnessed(
    path: &std::path::Path,
    tenant_id: &str,
    keys: &[signing::VerifierKey],
) -> Option<CheckpointBody> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        if entry.get("tenantId")?.as_str()? != tenant_id {
            return None;
        }
        let note = entry.get("checkpoint")?.as_str()?;
        let verified = signing::verify_note(note, keys).ok()?;
        CheckpointBody::parse(&verified.text)
    })
}

/// Is the log at `latest` an extension of the `witnessed` checkpoint? `Err` says why not.
async fn consistent<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    witnessed: &CheckpointBody,
    latest: &CheckpointBody,
) -> CoreResult<Result<(), String>> {
    if witnessed.size > latest.size {
        return Ok(Err(format!(
            "the log has {} leaves, fewer than the {} witnessed",
            latest.size, witnessed.size
        )));
    }
    if witnessed.size == 0 {
        return Ok(Ok(()));
    }
    let proof =
        transparency::consistency_proof(conn, tenant_id, witnessed.size, latest.size).await?;
    Ok(merkle::verify_consistency(
        witnessed.size,
        latest.size,
        &witnessed.root,
        &latest.root,
        &proof,
    )
    .map_err(|err| err.to_string()))
}

fn join(ids: &BTreeSet<String>) -> String {
    ids.iter().cloned().collect::<Vec<_>>().join(",")
}
