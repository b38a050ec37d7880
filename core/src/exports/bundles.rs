//! The bundles an export renders: an incident's evidence, SOC2 or executive-debrief bundle,
//! built from the stored records only (never from live policies).

use chrono::{DateTime, SecondsFormat, Utc};
use governance_entities::{
    approval_decision,
    enums::{ExportFormat, ExportKind},
    evidence, export, incident, policy_snapshot, run, trace_step, violation,
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::{
    approvals, canonical,
    compare::snapshot_policies,
    error::{CoreError, CoreResult},
    records, runs,
    time::now,
    verify::{self, Verification},
};

use super::proof::{Anchor, verification_object};

/// Everything a bundle is built from, as stored.
#[derive(Debug, Clone)]
pub struct BundleInput {
    pub export: export::Model,
    pub run: run::Model,
    pub incident: incident::Model,
    pub violation: violation::Model,
    pub evidence: Option<evidence::Model>,
    pub violations: Vec<violation::Model>,
    pub snapshot: policy_snapshot::Model,
    pub steps: Vec<trace_step::Model>,
    /// The decisions of the run's approvals among those steps (chained after the steps they
    /// decide).
    pub decisions: Vec<approval_decision::Model>,
    pub verification: Verification,
    /// The run's head as loaded, in the tenant's transparency log (set once anchored).
    pub anchor: Option<Anchor>,
    pub exported_at: DateTime<Utc>,
}

/// Load the stored records of an export's incident. The steps and violations are those of the
/// run as read (its first `step_count` steps): a run still going on is shown, and proven, as
/// of that head.
///
/// The service's own check (`verification`) is [`verify::verify_anchored`] against `anchors`:
/// a record rewritten after its head was logged is reported there, and is not anchored anew.
pub async fn load<C: ConnectionTrait>(
    conn: &C,
    export: &export::Model,
    anchors: &verify::Anchors,
) -> CoreResult<BundleInput> {
    let tenant = export.tenant_id.as_str();
    let incident = records::incident(conn, tenant, &export.incident_id).await?;
    let violation = records::violation(conn, tenant, &incident.violation_id).await?;
    let run = runs::get(conn, tenant, &incident.run_id).await?;
    let snapshot = runs::snapshot_of(conn, &run).await?;
    let evidence = match &incident.evidence_id {
        Some(id) => {
            evidence::Entity::find_by_id(id.clone())
                .filter(evidence::Column::TenantId.eq(tenant))
                .one(conn)
                .await?
        }
        None => None,
    };
    let violations = violation::Entity::find()
        .filter(violation::Column::TenantId.eq(tenant))
        .filter(violation::Column::RunId.eq(run.id.as_str()))
        .filter(violation::Column::StepIndex.lt(run.step_count))
        .order_by_asc(violation::Column::StepIndex)
        .order_by_asc(violation::Column::Id)
        .all(conn)
        .await?;
    let mut steps = records::steps_after(conn, tenant, &run.id, -1).await?;
    steps.truncate(usize::try_from(run.step_count).unwrap_or(0));
    // A decision belongs to the run as read when a later step follows it, or it is the head.
    let decisions = approvals::decisions_of_run(conn, &run.id)
        .await?
        .into_iter()
        .filter(|d| d.step_index + 1 < run.step_count || d.entry_hash == run.trace_head_hash)
        .collect();
    let verification = verify::verify_anchored(conn, tenant, &run.id, anchors).await?;
    Ok(BundleInput {
        export: export.clone(),
        run,
        incident,
        violation,
        evidence,
        violations,
        snapshot,
        steps,
        decisions,
        verification,
        anchor: None,
        exported_at: now(),
    })
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn step_json(step: &trace_step::Model) -> Value {
    json!({
        "stepIndex": step.step_index,
        "timestamp": ts(step.timestamp),
        "type": step.step_type.as_str(),
        "tokens": step.tokens,
        "costMicros": step.cost_micros,
        "toolName": step.tool_name,
        "contentHash": step.content_hash,
        "status": step.status.as_str(),
        "decision": step.decision.as_str(),
        "reason": step.reason,
        "isInflection": step.is_inflection,
        "prevHash": step.prev_hash,
        "entryHash": step.entry_hash,
    })
}

/// The evidence bundle: what was decided, on what, and the proof.
pub fn evidence_bundle(input: &BundleInput) -> CoreResult<Value> {
    let run = &input.run;
    let violation = &input.violation;
    let policy = snapshot_policies(&input.snapshot)?
        .into_iter()
        .find(|p| p.id == violation.policy_id);
    let inflection = input.steps.iter().find(|s| s.is_inflection);
    let mut cumulative_tokens = 0i64;
    let mut cumulative_cost = 0i64;
    let series: Vec<Value> = input
        .steps
        .iter()
        .map(|s| {
            cumulative_tokens += s.tokens;
            cumulative_cost += s.cost_micros;
            json!({ "stepIndex": s.step_index, "tokens": cumulative_tokens, "costMicros": cumulative_cost })
        })
        .collect();
    Ok(json!({
        "bundle": "EVIDENCE",
        "exportId": input.export.id,
        "exportedAt": ts(input.exported_at),
        "exportedBy": input.export.requested_by,
        "reason": input.export.reason,
        "run": {
            "id": run.id,
            "workflowId": run.workflow_id,
            "agent": run.agent,
            "triggeredBy": run.triggered_by,
            "status": run.status.as_str(),
            "terminationReason": run.termination_reason.map(|r| r.as_str()),
            "startedAt": ts(run.started_at),
            "completedAt": run.completed_at.map(ts),
            "isSynthetic": run.is_synthetic,
        },
        "incident": {
            "id": input.incident.id,
            "title": input.incident.title,
            "severity": input.incident.severity.as_str(),
            "status": input.incident.status.as_str(),
            "detectedAt": ts(input.incident.detected_at),
            "acknowledgedAt": input.incident.acknowledged_at.map(ts),
            "resolvedAt": input.incident.resolved_at.map(ts),
            "note": input.incident.note,
        },
        "snapshot": {
            "id": input.snapshot.snapshot_id,
            "contentHash": input.snapshot.content_hash,
            "version": input.snapshot.version,
            "policyCount": input.snapshot.policy_count,
        },
        "violatedPolicy": {
            "id": violation.policy_id,
            "version": violation.policy_version,
            "name": policy.as_ref().map(|p| p.name.clone()),
            "kind": violation.policy_type.as_str(),
            "action": violation.action.as_str(),
            "severity": violation.severity.as_str(),
            "threshold": policy.as_ref().map(|p| p.rule.clone()),
            "thresholdCondition": violation.threshold_condition,
            "violatedRule": violation.violated_rule,
            "evaluatedValue": violation.evaluated_value,
            "reason": violation.reason,
        },
        "evidence": input.evidence.as_ref().map(|e| json!({
            "id": e.id,
            "content": e.content,
            "contentHash": e.content_hash,
        })),
        "violations": input.violations.iter().map(|v| json!({
            "id": v.id,
            "policyId": v.policy_id,
            "action": v.action.as_str(),
            "severity": v.severity.as_str(),
            "stepIndex": v.step_index,
            "reason": v.reason,
        })).collect::<Vec<_>>(),
        "inflectionStep": inflection.map(step_json),
        "steps": input.steps.iter().map(step_json).collect::<Vec<_>>(),
        "approvals": input.decisions.iter().map(|d| json!({
            "approvalId": d.approval_id,
            "stepIndex": d.step_index,
            "status": d.status.as_str(),
            "decision": d.decision.as_str(),
            "decidedBy": d.decided_by_key,
            "note": d.note,
            "decidedAt": ts(d.decided_at),
            "entryHash": d.entry_hash,
        })).collect::<Vec<_>>(),
        "cumulative": series,
        "totals": {
            "steps": run.step_count,
            "tokens": run.tokens_used,
            "costMicros": run.cost_micros,
            "durationMs": run.completed_at.map(|end| (end - run.started_at).num_milliseconds()),
        },
        "traceHeadHash": run.trace_head_hash,
        "verification": verification_object(input),
    }))
}

/// The SOC2 bundle: the evidence plus what an auditor maps it to.
pub fn soc2_bundle(input: &BundleInput) -> CoreResult<Value> {
    let mut bundle = evidence_bundle(input)?;
    let run = &input.run;
    let period_start = run.started_at;
    let period_end = run.completed_at.unwrap_or(input.exported_at);
    let obj = bundle.as_object_mut().ok_or_else(|| {
        CoreError::Internal(anyhow::anyhow!("the evidence bundle is not an object"))
    })?;
    obj.insert("bundle".into(), json!("SOC2"));
    obj.insert(
        "controlObjectives".into(),
        json!([
            { "id": "CC6.1", "objective": "Logical access to protected operations is restricted by policy.",
              "evidence": format!("run {} was checked at every step against snapshot {}", run.id, input.snapshot.snapshot_id) },
            { "id": "CC7.2", "objective": "Anomalies are detected and evaluated.",
              "evidence": format!("policy {} detected the violation at step {}", input.violation.policy_id, input.violation.step_index) },
            { "id": "CC7.3", "objective": "Security events are responded to.",
              "evidence": format!("the run was stopped ({}) and incident {} opened", run.termination_reason.map(|r| r.as_str()).unwrap_or("-"), input.incident.id) },
            { "id": "CC8.1", "objective": "Changes to controls are authorised and recorded.",
              "evidence": format!("the policy set is content-addressed ({}); every decision is hash-chained (head {})", input.snapshot.content_hash, run.trace_head_hash) },
        ]),
    );
    obj.insert(
        "attestation".into(),
        json!(format!(
            "The governance service recorded each of the {} steps of run {} in a hash chain ending in {}; recomputing the chain and replaying every decision against snapshot {} {}.",
            run.step_count,
            run.id,
            run.trace_head_hash,
            input.snapshot.snapshot_id,
            if input.verification.intact && input.verification.reproduced {
                "reproduced every recorded decision"
            } else {
                "found mismatches (see verification)"
            }
        )),
    );
    obj.insert(
        "compliancePeriod".into(),
        json!({ "start": ts(period_start), "end": ts(period_end) }),
    );
    obj.insert(
        "auditorNotes".into(),
        json!(
            input
                .incident
                .note
                .clone()
                .unwrap_or_else(|| "No resolution note yet.".to_string())
        ),
    );
    Ok(bundle)
}

/// A recorded reason as plain language for the debrief: without the `(policy `…`)` reference
/// (the debrief names the policy itself), code quotes turned into plain ones, starting in lower
/// case and without its final full stop, so it reads inside a sentence. The recorded reason
/// itself is evidence and is shown verbatim elsewhere.
fn plain_reason(reason: &str) -> String {
    let mut text = reason.to_string();
    if let Some(start) = text.find(" (policy `")
        && let Some(len) = text[start..].find("`)")
    {
        text.replace_range(start..start + len + 2, "");
    }
    let text = text.replace('`', "\"");
    let text = text.trim().trim_end_matches('.').trim_end();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The executive debrief: the same facts in plain language.
pub fn executive_debrief(input: &BundleInput) -> CoreResult<Value> {
    let run = &input.run;
    let violation = &input.violation;
    let policy_name = snapshot_policies(&input.snapshot)?
        .into_iter()
        .find(|p| p.id == violation.policy_id)
        .map(|p| p.name)
        .unwrap_or_else(|| violation.policy_id.clone());
    let time_to_detect_ms = (input.incident.detected_at - violation.timestamp).num_milliseconds();
    let cost_usd = run.cost_micros as f64 / 1_000_000.0;
    let risk = input.incident.severity.as_str();
    let remediation = match input.incident.status.as_str() {
        "RESOLVED" => "Resolved",
        "ACKNOWLEDGED" => "In progress",
        _ => "Not started",
    };
    // The facts the debrief's chart and header are drawn from, as in the evidence bundle.
    let evidence = evidence_bundle(input)?;
    let mut debrief = json!({
        "bundle": "EXECUTIVE_DEBRIEF",
        "exportId": input.export.id,
        "exportedAt": ts(input.exported_at),
        "exportedBy": input.export.requested_by,
        "reason": input.export.reason,
        "summary": format!(
            "The {} agent run {} was stopped at step {} because it broke the policy \"{}\": {}. Nothing after that step was executed.",
            run.workflow_id, run.id, violation.step_index, policy_name, plain_reason(&violation.reason)
        ),
        "businessImpact": format!(
            "The run used {} tokens and cost ${:.4} before it was stopped; the violating step was contained at the moment it happened.",
            run.tokens_used, cost_usd
        ),
        "riskLevel": risk,
        "keyFacts": {
            "runId": run.id,
            "incidentId": input.incident.id,
            "policy": policy_name,
            // Plain quotes for plain language; the evidence keeps the recorded text.
            "threshold": violation.threshold_condition.replace('`', "\""),
            "observed": violation.evaluated_value.replace('`', "\""),
            "stoppedAtStep": run.stopped_at_step,
            "snapshotId": input.snapshot.snapshot_id,
            "traceHeadHash": run.trace_head_hash,
            "verified": input.verification.intact && input.verification.reproduced,
        },
        "timeToDetectMs": time_to_detect_ms,
        "costIncurredMicros": run.cost_micros,
        "recommendedActions": [
            format!("Review why the {} workflow reached the \"{}\" limit.", run.workflow_id, policy_name),
            "Confirm the threshold still matches the business intent, or tighten it.".to_string(),
            "Resolve the incident with a note so the audit trail is complete.".to_string(),
        ],
        "remediationStatus": remediation,
        "traceHeadHash": run.trace_head_hash,
    });
    if let (Some(debrief), Some(evidence)) = (debrief.as_object_mut(), evidence.as_object()) {
        for key in [
            "run",
            "incident",
            "violatedPolicy",
            "inflectionStep",
            "cumulative",
            "totals",
            "verification",
        ] {
            if let Some(value) = evidence.get(key) {
                debrief.insert(key.to_string(), value.clone());
            }
        }
    }
    Ok(debrief)
}

/// The bundle of `input`'s kind.
pub fn bundle(input: &BundleInput) -> CoreResult<Value> {
    match input.export.kind {
        ExportKind::Evidence => evidence_bundle(input),
        ExportKind::Soc2 => soc2_bundle(input),
        ExportKind::ExecutiveDebrief => executive_debrief(input),
    }
}

/// The JSON rendering of a bundle: canonical JSON (sorted keys), so equal bundles are equal
/// bytes.
pub fn render_json(bundle: &Value) -> Vec<u8> {
    canonical::to_string(bundle).into_bytes()
}

/// The Typst template (in `templates/`) of a bundle kind.
pub fn template_of(kind: ExportKind) -> &'static str {
    match kind {
        ExportKind::Evidence => "evidence.typ",
        ExportKind::Soc2 => "soc2.typ",
        ExportKind::ExecutiveDebrief => "executive-debrief.typ",
    }
}

/// The media type of a format.
pub fn content_type_of(format: ExportFormat) -> &'static str {
    match format {
        ExportFormat::Json => "application/json",
        ExportFormat::Pdf => "application/pdf",
    }
}

#[cfg(test)]
mod plain_tests {
    use super::plain_reason;

    #[test]
    fn debrief_reasons_read_as_plain_language() {
        assert_eq!(
            plain_reason("Run used 4370 tokens, over the budget of 4000 (policy `Token budget`)."),
            "run used 4370 tokens, over the budget of 4000"
        );
        assert_eq!(
            plain_reason(
                "Step called tool `shell`, which is not on the allowlist (policy `Tools`)."
            ),
            "step called tool \"shell\", which is not on the allowlist"
        );
        assert_eq!(
            plain_reason(
                "Step content matched a forbidden pattern (policy `No keys`); the match is not shown."
            ),
            "step content matched a forbidden pattern; the match is not shown"
        );
    }
}
