//! Human approval of a step. A step that violates a REQUIRE_APPROVAL policy (and no BLOCK
//! policy) is recorded and chained as HOLD, its run waits (`AWAITING_APPROVAL`), and an approval
//! is opened ([`open`], in the step's transaction). An APPROVER key other than the one that
//! reported the step grants or denies it ([`decide`]); the sweeper applies the policy's
//! `onTimeout` to approvals nobody decided in time ([`expire_due`]). Either way the decision is
//! one transaction: a chained entry of the run's record after the held step, the run continuing
//! (CONTINUE) or stopped through the normal stop path (STOP), and its event.
//!
//! An integrator resumes by sending the held step again (same index, same content): the answer
//! is HOLD until the approval is decided, then the final decision, so the step proceeds exactly
//! once.
//!
//! - [`open`]: the approval of a step being held.
//! - [`decide`]: granting, denying, expiring.
//! - [`read`]: one approval, a step's approval, the tenant's approvals.

mod decide;
mod open;
mod read;

use governance_entities::{
    approval, approval_decision,
    enums::{ApprovalStatus, DecisionAction},
};
use serde_json::json;

use crate::events::{EventKind, NewEvent};

pub(crate) use decide::close_for_ending_run;
pub use decide::{Verdict, decide, expire_due};
pub(crate) use open::open;
pub use read::{ApprovalFilter, decisions_of_run, get, list, of_step};

/// Longest accepted note on a decision, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// An approval and, once decided, its decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalState {
    pub approval: approval::Model,
    pub decision: Option<approval_decision::Model>,
}

impl ApprovalState {
    /// PENDING until decided.
    pub fn status(&self) -> ApprovalStatus {
        self.decision
            .as_ref()
            .map_or(ApprovalStatus::Pending, |d| d.status)
    }

    /// The held step's final decision (CONTINUE or STOP); `None` while pending.
    pub fn final_decision(&self) -> Option<DecisionAction> {
        self.decision.as_ref().map(|d| d.decision)
    }
}

/// The outbox event of an approval's change (requested, granted, denied, expired).
pub(crate) fn approval_event(kind: EventKind, state: &ApprovalState) -> NewEvent {
    let a = &state.approval;
    let d = state.decision.as_ref();
    NewEvent {
        kind,
        subject_id: a.id.clone(),
        run_id: Some(a.run_id.clone()),
        severity_rank: None,
        payload: json!({
            "approvalId": a.id,
            "runId": a.run_id,
            "stepIndex": a.step_index,
            "policyId": a.policy_id,
            "status": state.status().as_str(),
            "requestedAt": crate::time::rfc3339(a.requested_at),
            "expiresAt": crate::time::rfc3339(a.expires_at),
            "decision": d.map(|d| d.decision.as_str()),
            "decidedBy": d.and_then(|d| d.decided_by_key.clone()),
            "note": d.and_then(|d| d.note.clone()),
        }),
    }
}
