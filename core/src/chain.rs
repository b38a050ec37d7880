//! The per-run hash chain. Every trace step's `entry_hash` is
//! `sha256(prev_hash ‖ canonical step and decision)`; the first `prev_hash` (the genesis) binds
//! the run id and its snapshot's content hash, so a trace cannot be moved to another run or
//! snapshot without breaking the chain.

use crate::hashing::sha256_parts;

/// Domain separation tag, versioned so the construction can evolve.
const GENESIS_TAG: &[u8] = b"governance/trace/v1/genesis";

/// The `prev_hash` of step 0 (and a run's head hash before any step).
pub fn genesis(run_id: &str, snapshot_content_hash: &str) -> String {
    sha256_parts(&[
        GENESIS_TAG,
        run_id.as_bytes(),
        snapshot_content_hash.as_bytes(),
    ])
}

/// The canonical document of a recorded step and its decision: what `entry_hash` covers.
/// Built from the stored row, so `verifyRun` recomputes it from the database alone.
pub fn step_document(run_id: &str, step: &governance_entities::trace_step::Model) -> String {
    let doc = serde_json::json!({
        "runId": run_id,
        "stepIndex": step.step_index,
        "timestamp": step.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "type": step.step_type.as_str(),
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
    crate::canonical::to_string(&doc)
}

/// `entry_hash = sha256(prev_hash ‖ canonical step and decision)`.
pub fn entry_hash(prev_hash: &str, document: &str) -> String {
    crate::hashing::sha256_hex(format!("{prev_hash}{document}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_binds_run_and_snapshot() {
        let a = genesis("run_a", "h1");
        assert_eq!(a.len(), 64);
        assert_ne!(a, genesis("run_b", "h1"));
        assert_ne!(a, genesis("run_a", "h2"));
        assert_eq!(a, genesis("run_a", "h1"));
    }
}
