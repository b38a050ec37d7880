//! The decision recorded with every step, as one typed structure. The step path writes it (as
//! the step's `decision_json`), the hash chain hashes it (as the `detail` of the step's
//! document), and `explain`, `verifyRun` and the exports read it back through this type; no one
//! reads it by string keys.
//!
//! Its JSON field names and value shapes are part of the record format: every entry hash of
//! every run depends on them, so they do not change (a new field would be a new format version).

use governance_entities::enums::{
    ApprovalOnTimeout, DecisionAction, PolicyAction, PolicyKind, Severity, TerminationReason,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{Evaluation, Finding};

/// What was decided on a step, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRecord {
    pub action: DecisionAction,
    /// Every policy the step violated, in snapshot order.
    pub findings: Vec<RecordedFinding>,
    /// The policy whose violation stopped the run (STOP only).
    #[serde(default)]
    pub inflection_policy_id: Option<String>,
    #[serde(default)]
    pub termination_reason: Option<TerminationReason>,
    /// The CONTENT_RULE policies the step's content matched (the content itself is not
    /// stored; a replay takes these as the content's verdicts).
    #[serde(default)]
    pub content_matches: Vec<String>,
    /// What the SHADOW policies of the snapshot would have done on this step: recorded (and
    /// hashed) with the decision, never part of it. Absent when there are none, so a record
    /// without shadow policies is byte for byte what it was before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow_findings: Vec<RecordedFinding>,
    /// HOLD only: the REQUIRE_APPROVAL policy that holds the step, and how the step is decided
    /// when nobody decides it. Absent otherwise, so records without approvals are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<RecordedHold>,
}

/// Why a step was held, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedHold {
    pub policy_id: String,
    pub timeout_seconds: i64,
    pub on_timeout: ApprovalOnTimeout,
}

/// One violated policy, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFinding {
    pub policy_id: String,
    pub policy_version: i32,
    pub policy_name: String,
    pub kind: PolicyKind,
    pub action: PolicyAction,
    pub severity: Severity,
    /// The rule key that was exceeded: `maxTokens`, `patterns`, …
    pub violated_rule: String,
    /// The value that exceeded it, as text.
    pub evaluated_value: String,
    /// The condition that was true: `tokensUsed > 1000`.
    pub threshold_condition: String,
    /// The policy's rule: the thresholds in force.
    pub threshold: Value,
    /// The observed value as JSON.
    pub observed: Value,
    pub reason: String,
}

impl From<&Finding> for RecordedFinding {
    fn from(f: &Finding) -> Self {
        Self {
            policy_id: f.policy_id.clone(),
            policy_version: f.policy_version,
            policy_name: f.policy_name.clone(),
            kind: f.kind,
            action: f.action,
            severity: f.severity,
            violated_rule: f.violated_rule.clone(),
            evaluated_value: f.evaluated_value.clone(),
            threshold_condition: f.threshold_condition.clone(),
            threshold: f.threshold.clone(),
            observed: f.observed.clone(),
            reason: f.reason.clone(),
        }
    }
}

impl From<&Evaluation> for DecisionRecord {
    fn from(evaluation: &Evaluation) -> Self {
        Self {
            action: evaluation.action,
            findings: evaluation
                .findings
                .iter()
                .map(RecordedFinding::from)
                .collect(),
            inflection_policy_id: evaluation.inflection_finding().map(|f| f.policy_id.clone()),
            termination_reason: evaluation.termination_reason(),
            content_matches: evaluation.content_matches.clone(),
            shadow_findings: evaluation
                .shadow_findings
                .iter()
                .map(RecordedFinding::from)
                .collect(),
            hold: evaluation.hold_finding().map(|held| {
                let terms = evaluation.approval.unwrap_or_default();
                RecordedHold {
                    policy_id: held.policy_id.clone(),
                    timeout_seconds: terms.timeout_seconds,
                    on_timeout: terms.on_timeout,
                }
            }),
        }
    }
}

impl DecisionRecord {
    /// The record as stored with the step.
    pub fn to_json(&self) -> Value {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The record stored with a step. A record that does not parse is reported, not guessed.
    pub fn from_json(value: &Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// The finding that decided the step: for STOP the inflection's; for WARN the first WARN
    /// finding (else the first); for CONTINUE none.
    pub fn deciding_finding(&self) -> Option<&RecordedFinding> {
        match self.action {
            DecisionAction::Continue => None,
            DecisionAction::Stop => {
                let inflection = self.inflection_policy_id.as_deref()?;
                self.findings.iter().find(|f| f.policy_id == inflection)
            }
            DecisionAction::Hold => {
                let held = &self.hold.as_ref()?.policy_id;
                self.findings.iter().find(|f| &f.policy_id == held)
            }
            DecisionAction::Warn => self
                .findings
                .iter()
                .find(|f| f.action == PolicyAction::Warn)
                .or_else(|| self.findings.first()),
        }
    }
}

impl RecordedFinding {
    /// What the policy observed, as text: a JSON string as is, anything else as JSON; else the
    /// evaluated value.
    pub fn observed_text(&self) -> String {
        match &self.observed {
            Value::String(s) => s.clone(),
            Value::Null => self.evaluated_value.clone(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use governance_entities::enums::StepStatus;
    use serde_json::json;

    use super::*;

    fn finding(id: &str, action: PolicyAction) -> Finding {
        Finding {
            policy_id: id.into(),
            policy_version: 2,
            policy_name: format!("policy {id}"),
            kind: PolicyKind::TokenBudget,
            action,
            severity: Severity::High,
            violated_rule: "maxTokens".into(),
            evaluated_value: "120".into(),
            threshold_condition: "tokensUsed > 100".into(),
            reason: "over budget".into(),
            termination_reason: TerminationReason::BudgetExceeded,
            threshold: json!({ "maxTokens": 100 }),
            observed: json!(120),
            evidence: json!({ "not": "recorded here" }),
        }
    }

    /// The JSON every recorded step so far carries (the shape the step path wrote before this
    /// type existed): the record must serialise to exactly it, or old entry hashes would break.
    #[test]
    fn the_record_keeps_the_recorded_format() {
        let evaluation = Evaluation {
            action: DecisionAction::Stop,
            status: StepStatus::Violation,
            reason: "stopped".into(),
            policies_checked: 3,
            findings: vec![
                finding("pol_w", PolicyAction::Warn),
                finding("pol_b", PolicyAction::Block),
            ],
            inflection: Some(1),
            hold: None,
            approval: None,
            content_matches: vec!["pol_c".into()],
            shadow_findings: Vec::new(),
        };
        let record = DecisionRecord::from(&evaluation);
        let shape = |f: &Finding| {
            json!({
                "policyId": f.policy_id,
                "policyVersion": f.policy_version,
                "policyName": f.policy_name,
                "kind": f.kind.as_str(),
                "action": f.action.as_str(),
                "severity": f.severity.as_str(),
                "violatedRule": f.violated_rule,
                "evaluatedValue": f.evaluated_value,
                "thresholdCondition": f.threshold_condition,
                "threshold": f.threshold,
                "observed": f.observed,
                "reason": f.reason,
            })
        };
        let recorded = json!({
            "action": "STOP",
            "findings": evaluation.findings.iter().map(shape).collect::<Vec<_>>(),
            "inflectionPolicyId": "pol_b",
            "terminationReason": "BUDGET_EXCEEDED",
            "contentMatches": ["pol_c"],
        });
        assert_eq!(record.to_json(), recorded);
        assert_eq!(
            crate::canonical::to_string(&record.to_json()),
            crate::canonical::to_string(&recorded)
        );
        assert_eq!(
            DecisionRecord::from_json(&recorded).ok(),
            Some(record.clone())
        );
        assert_eq!(
            record.deciding_finding().map(|f| f.policy_id.as_str()),
            Some("pol_b")
        );
        // A clean step records nulls, not missing keys.
        let clean = DecisionRecord::from(&Evaluation {
            action: DecisionAction::Continue,
            status: StepStatus::Ok,
            reason: "ok".into(),
            policies_checked: 3,
            findings: Vec::new(),
            inflection: None,
            hold: None,
            approval: None,
            content_matches: Vec::new(),
            shadow_findings: Vec::new(),
        });
        assert_eq!(
            clean.to_json(),
            json!({ "action": "CONTINUE", "findings": [], "inflectionPolicyId": null, "terminationReason": null, "contentMatches": [] })
        );
    }
}
