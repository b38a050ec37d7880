//! The per-run hash chain, in the record format `docs/verifying.md` specifies byte for byte.
//!
//! Every trace step's `entry_hash` is `sha256(prev_hash ‖ document)`: the previous entry's hash
//! (64 lowercase hex characters) followed by the step and its decision as canonical JSON. The
//! first `prev_hash` is the run's genesis. A run keeps the format it started in
//! ([`RecordFormat`], stored with it and immutable), so runs recorded before format 2 stay
//! verifiable exactly as they were written.
//!
//! - Format 1: genesis = `sha256` over the length-prefixed parts `governance/trace/v1/genesis`,
//!   run id and snapshot content hash; documents in [`canonical::v1`] form.
//! - Format 2: genesis = `sha256` of the RFC 8785 form of the genesis document, which binds the
//!   run's header (tenant, workflow, agent, triggeredBy, a hash of its metadata, its start) and
//!   its snapshot; documents in RFC 8785 form, carrying `"format": 2`.

use governance_entities::{approval_decision, run, trace_step};
use serde_json::{Value, json};

use crate::{
    canonical,
    hashing::{sha256_hex, sha256_parts},
};

/// Domain separation tag of format 1's genesis.
const GENESIS_TAG_V1: &[u8] = b"governance/trace/v1/genesis";

/// The version of the record format a run's chain is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    V1 = 1,
    V2 = 2,
}

impl RecordFormat {
    /// What new runs are recorded in.
    pub const CURRENT: Self = Self::V2;

    /// The stored number's format, if it is one.
    pub fn from_number(number: i32) -> Option<Self> {
        match number {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }

    /// The format `run` is recorded in. An unknown number (which only a write behind the
    /// service's back can store) reads as format 1; `verifyRun` reports it.
    pub fn of(run: &run::Model) -> Self {
        Self::from_number(run.record_format).unwrap_or(Self::V1)
    }

    pub fn number(self) -> i32 {
        self as i32
    }
}

/// Timestamps in hashed documents: RFC 3339, UTC, milliseconds, `Z`.
use crate::time::rfc3339 as instant;

/// The genesis document of a format-2 run: everything about the run that is fixed when it starts.
pub fn genesis_document(run: &run::Model, snapshot_content_hash: &str) -> Value {
    json!({
        "format": RecordFormat::V2.number(),
        "type": "genesis",
        "runId": run.id,
        "tenantId": run.tenant_id,
        "workflowId": run.workflow_id,
        "agent": run.agent,
        "triggeredBy": run.triggered_by,
        "metadataHash": run.metadata.as_ref().map(|m| sha256_hex(canonical::to_string(m))),
        "snapshotContentHash": snapshot_content_hash,
        "startedAt": instant(run.started_at),
    })
}

/// The genesis of a format-1 run: it binds the run id and the snapshot only.
pub fn genesis_v1(run_id: &str, snapshot_content_hash: &str) -> String {
    sha256_parts(&[
        GENESIS_TAG_V1,
        run_id.as_bytes(),
        snapshot_content_hash.as_bytes(),
    ])
}

/// A hashed document's canonical form in `format`.
pub fn canonical_form(format: RecordFormat, document: &Value) -> String {
    match format {
        RecordFormat::V1 => canonical::v1(document),
        RecordFormat::V2 => canonical::to_string(document),
    }
}

/// The `prev_hash` of step 0 (and a run's head hash before any step), in the run's format.
pub fn genesis(run: &run::Model, snapshot_content_hash: &str) -> String {
    match RecordFormat::of(run) {
        RecordFormat::V1 => genesis_v1(&run.id, snapshot_content_hash),
        RecordFormat::V2 => sha256_hex(canonical::to_string(&genesis_document(
            run,
            snapshot_content_hash,
        ))),
    }
}

/// The canonical document of a recorded step and its decision, in its run's format: what
/// `entry_hash` covers. Built from the stored row, so `verifyRun` recomputes it from the
/// database alone.
pub fn step_document(run: &run::Model, step: &trace_step::Model) -> String {
    let mut doc = json!({
        "runId": run.id,
        "stepIndex": step.step_index,
        "timestamp": instant(step.timestamp),
        "tokens": step.tokens,
        "costMicros": step.cost_micros,
        "toolName": step.tool_name,
        "contentHash": step.content_hash,
        "status": step.status.as_str(),
        "isInflection": step.is_inflection,
        "decision": step.decision.as_str(),
        "policiesChecked": step.policies_checked,
        "reason": step.reason,
        "detail": step.decision_json,
    });
    let format = RecordFormat::of(run);
    match format {
        RecordFormat::V1 => doc["type"] = json!(step.step_type.as_str()),
        RecordFormat::V2 => {
            doc["format"] = json!(RecordFormat::V2.number());
            doc["type"] = json!("step");
            doc["stepType"] = json!(step.step_type.as_str());
        }
    }
    canonical_form(format, &doc)
}

/// The canonical document of an approval's decision: the chained entry that follows a held step
/// (type `approval`), in its run's format. Built from the stored row, as [`step_document`] is.
pub fn approval_document(run: &run::Model, decision: &approval_decision::Model) -> String {
    let format = RecordFormat::of(run);
    let doc = json!({
        "format": format.number(),
        "type": "approval",
        "runId": run.id,
        "stepIndex": decision.step_index,
        "approvalId": decision.approval_id,
        "status": decision.status.as_str(),
        "decision": decision.decision.as_str(),
        "decidedBy": decision.decided_by_key,
        "note": decision.note,
        "decidedAt": instant(decision.decided_at),
    });
    canonical_form(format, &doc)
}

/// `entry_hash = sha256(prev_hash ‖ document)`.
pub fn entry_hash(prev_hash: &str, document: &str) -> String {
    sha256_hex(format!("{prev_hash}{document}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: RecordFormat) -> run::Model {
        crate::verifying_vectors::sample_run(format)
    }

    #[test]
    fn format_1_genesis_binds_run_and_snapshot_only() {
        let a = run(RecordFormat::V1);
        let g = genesis(&a, "h1");
        assert_eq!(g.len(), 64);
        assert_ne!(g, genesis(&a, "h2"));
        let mut other = a.clone();
        other.id = "run_b".into();
        assert_ne!(g, genesis(&other, "h1"));
        let mut agent = a.clone();
        agent.agent = Some("someone else".into());
        assert_eq!(g, genesis(&agent, "h1"), "format 1 never bound the header");
    }

    #[test]
    fn format_2_genesis_binds_the_header() {
        let a = run(RecordFormat::V2);
        let g = genesis(&a, "h1");
        assert_ne!(g, genesis(&run(RecordFormat::V1), "h1"));
        let changes: [fn(&mut run::Model); 7] = [
            |r| r.tenant_id = "ten_x".into(),
            |r| r.workflow_id = "wf_x".into(),
            |r| r.agent = None,
            |r| r.triggered_by = Some("api".into()),
            |r| r.metadata = Some(json!({"ticket": "T-2", "priority": 2})),
            |r| r.started_at += chrono::Duration::milliseconds(1),
            |r| r.id = "run_x".into(),
        ];
        for change in changes {
            let mut changed = a.clone();
            change(&mut changed);
            assert_ne!(g, genesis(&changed, "h1"));
        }
        assert_ne!(g, genesis(&a, "h2"));
        // Metadata is hashed in canonical form: key order does not matter.
        let mut reordered = a.clone();
        reordered.metadata =
            Some(serde_json::from_str(r#"{"priority":2,"ticket":"T-1"}"#).expect("json"));
        assert_eq!(g, genesis(&reordered, "h1"));
    }
}
