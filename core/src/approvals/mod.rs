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

/// The step `run` is waiting for a person to decide, if it waits: its last step. The one rule
/// for "this run waits for that approval".
pub fn held_step(run: &governance_entities::run::Model) -> Option<i64> {
    (run.status == governance_entities::enums::RunStatus::AwaitingApproval)
        .then_some(run.step_count - 1)
}

/// What is wrong with an approval decision as recorded, if anything: its status must fit its
/// decision (GRANTED continues; DENIED and CANCELLED stop; EXPIRED does what the held step's
/// recorded `onTimeout` says), a person's decision names its key and the others name none, and
/// a STOP is the run's last entry. The one rule `verifyRun` and the offline verifier apply.
pub fn decision_problem(
    status: &str,
    decision: &str,
    decided_by: Option<&str>,
    recorded_on_timeout: Option<&str>,
    steps_after: bool,
) -> Option<String> {
    let expected = match (status, recorded_on_timeout) {
        ("GRANTED", _) | ("EXPIRED", Some("ALLOW")) => "CONTINUE",
        ("DENIED" | "CANCELLED", _) | ("EXPIRED", Some("DENY")) => "STOP",
        ("EXPIRED", _) => return Some("an EXPIRED decision of a step held without terms".into()),
        (other, _) => return Some(format!("`{other}` is not a decided approval's status")),
    };
    if decision != expected {
        return Some(format!(
            "a {status} approval decides {expected}, not {decision}"
        ));
    }
    let by_a_person = matches!(status, "GRANTED" | "DENIED");
    if by_a_person != decided_by.is_some() {
        return Some(match by_a_person {
            true => format!("a {status} approval names the key that decided it"),
            false => format!("an {status} approval was decided by no one"),
        });
    }
    if decision == "STOP" && steps_after {
        return Some("steps were recorded after the approval stopped the run".into());
    }
    None
}

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

#[cfg(test)]
mod tests {
    use super::decision_problem;

    #[test]
    fn a_decision_must_fit_its_status_its_decider_and_what_follows() {
        for (status, decision, by, on_timeout, after) in [
            ("GRANTED", "CONTINUE", Some("key_a"), None, true),
            ("DENIED", "STOP", Some("key_a"), None, false),
            ("EXPIRED", "CONTINUE", None, Some("ALLOW"), true),
            ("EXPIRED", "STOP", None, Some("DENY"), false),
            ("CANCELLED", "STOP", None, Some("ALLOW"), false),
        ] {
            assert_eq!(
                decision_problem(status, decision, by, on_timeout, after),
                None,
                "{status}"
            );
        }
        for (status, decision, by, on_timeout, after) in [
            ("GRANTED", "STOP", Some("key_a"), None, false),
            ("GRANTED", "CONTINUE", None, None, false),
            ("EXPIRED", "CONTINUE", None, Some("DENY"), false),
            ("EXPIRED", "STOP", Some("key_a"), Some("DENY"), false),
            ("EXPIRED", "STOP", None, None, false),
            ("DENIED", "STOP", Some("key_a"), None, true),
            ("PENDING", "CONTINUE", None, None, false),
        ] {
            assert!(
                decision_problem(status, decision, by, on_timeout, after).is_some(),
                "{status} {decision} {by:?} {on_timeout:?} {after}"
            );
        }
    }
}
