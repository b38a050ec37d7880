//! One run replayed against a proposed snapshot, compared with what was recorded; and the
//! totals and hash of a whole simulation. Pure: the same run, steps and snapshots always give
//! the same result.
//!
//! Step content is not stored. A CONTENT_RULE policy whose compiled content (its patterns) is
//! the same in the run's own snapshot as in the proposal is judged by what it matched when the
//! step was recorded: the live verdict depended on nothing else, so reusing it is exact. Any
//! other content rule (new, or with other patterns) cannot be judged on past steps: it is
//! listed as not replayable for the run and treated as matching nothing, never guessed.

use std::collections::BTreeSet;

use governance_entities::{
    enums::{DecisionAction, PolicyKind, TerminationReason},
    run, trace_step,
};
use serde::{Deserialize, Serialize};

use crate::{
    canonical,
    decision_record::DecisionRecord,
    hashing::sha256_hex,
    policy::{CompiledSnapshot, Evaluation},
    replay::Replay,
};

/// What happened to a run, or would have: its most severe decision, and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// STOP if a step stopped the run, else WARN if a step warned, else CONTINUE.
    pub action: DecisionAction,
    pub stop_step: Option<i64>,
    pub termination_reason: Option<TerminationReason>,
    /// The policy that stopped the run (STOP), or first warned it (WARN).
    pub deciding_policy: Option<String>,
}

/// How the proposal changes a run's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Effect {
    /// Every replayed step is decided as recorded.
    Unchanged,
    /// Not stopped, would be.
    NewlyStopped,
    /// Stopped, would not be (a loosening).
    NoLongerStopped,
    /// Stopped, would be stopped at another step.
    StopMoved,
    /// Stopped (or not) at the same step, but decided otherwise on some step (another
    /// deciding policy, other warnings).
    Changed,
}

/// One run, recorded against simulated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulatedRun {
    pub run_id: String,
    pub recorded: Outcome,
    pub simulated: Outcome,
    /// The first step whose simulated decision differs from the recorded one (in action, or in
    /// the enforcing policies it violated).
    pub diverges_at_step: Option<i64>,
    /// Steps replayed (a simulated stop ends the replay: later steps would not have happened).
    pub steps_replayed: i64,
    /// Content rules of the proposal that cannot be judged on this run's recorded steps.
    pub not_replayable: Vec<String>,
    pub effect: Effect,
}

/// The totals of a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub runs_replayed: i64,
    pub newly_stopped: i64,
    pub no_longer_stopped: i64,
    pub stop_moved: i64,
}

/// Follows the decisions of a run step by step into its [`Outcome`]: the first step with the
/// most severe action decides it.
#[derive(Default)]
struct Tally {
    worst: Option<(i64, Outcome)>,
}

fn rank(action: DecisionAction) -> u8 {
    match action {
        DecisionAction::Continue => 0,
        DecisionAction::Warn => 1,
        DecisionAction::Hold => 2,
        DecisionAction::Stop => 3,
    }
}

impl Tally {
    /// Count step `index`, decided `action` (its record, when it has a readable one).
    fn add(&mut self, index: i64, action: DecisionAction, record: Option<&DecisionRecord>) {
        let more = self
            .worst
            .as_ref()
            .is_none_or(|(_, worst)| rank(action) > rank(worst.action));
        if more {
            let outcome = Outcome {
                action,
                stop_step: (action == DecisionAction::Stop).then_some(index),
                termination_reason: record.and_then(|r| r.termination_reason),
                deciding_policy: record
                    .and_then(|r| r.deciding_finding())
                    .map(|f| f.policy_id.clone()),
            };
            self.worst = Some((index, outcome));
        }
    }

    fn outcome(self) -> Outcome {
        self.worst.map_or(
            Outcome {
                action: DecisionAction::Continue,
                stop_step: None,
                termination_reason: None,
                deciding_policy: None,
            },
            |(_, outcome)| outcome,
        )
    }
}

fn enforced_ids(record: &DecisionRecord) -> BTreeSet<&str> {
    record
        .findings
        .iter()
        .map(|f| f.policy_id.as_str())
        .collect()
}

/// Replay `steps` (the run's recorded steps, in order) against `proposed`, and compare with
/// what was recorded. `recorded_snapshot` is the run's own snapshot: it tells which content
/// rules are unchanged (see the module documentation).
pub fn simulate_run(
    run: &run::Model,
    steps: &[trace_step::Model],
    recorded_snapshot: &CompiledSnapshot,
    proposed: &CompiledSnapshot,
) -> SimulatedRun {
    let content_rules = proposed
        .policies()
        .iter()
        .filter(|p| p.kind == PolicyKind::ContentRule);
    let (mut replayable, mut not_replayable) = (BTreeSet::new(), BTreeSet::new());
    for policy in content_rules {
        let unchanged = recorded_snapshot.policies().iter().any(|r| {
            r.id == policy.id && r.kind == PolicyKind::ContentRule && r.rule == policy.rule
        });
        if unchanged {
            replayable.insert(policy.id.clone());
        } else {
            not_replayable.insert(policy.id.clone());
        }
    }

    let mut recorded = Tally::default();
    let records: Vec<Option<DecisionRecord>> = steps
        .iter()
        .map(|s| DecisionRecord::from_json(&s.decision_json).ok())
        .collect();
    for (step, record) in steps.iter().zip(&records) {
        // A record that does not parse still has its action (verifyRun reports the record).
        recorded.add(step.step_index, step.decision, record.as_ref());
    }

    let mut replay = Replay::new(run);
    let mut simulated = Tally::default();
    let mut diverges_at_step = None;
    let mut steps_replayed = 0;
    for (step, record) in steps.iter().zip(&records) {
        let matches: Vec<String> = match record {
            Some(record) => record
                .content_matches
                .iter()
                .filter(|id| replayable.contains(*id))
                .cloned()
                .collect(),
            None => {
                // Without its record, not even an unchanged content rule can be judged.
                not_replayable.extend(std::mem::take(&mut replayable));
                Vec::new()
            }
        };
        let evaluation: Evaluation = replay.evaluate(proposed, step, &matches);
        let decided = DecisionRecord::from(&evaluation);
        let differs = decided.action != step.decision
            || record
                .as_ref()
                .is_none_or(|r| enforced_ids(r) != enforced_ids(&decided));
        if diverges_at_step.is_none() && differs {
            diverges_at_step = Some(step.step_index);
        }
        steps_replayed += 1;
        let stopped = decided.action == DecisionAction::Stop;
        simulated.add(step.step_index, decided.action, Some(&decided));
        replay.advance(step);
        if stopped {
            break;
        }
    }
    let recorded = recorded.outcome();
    let simulated = simulated.outcome();
    let effect = match (recorded.stop_step, simulated.stop_step) {
        (None, Some(_)) => Effect::NewlyStopped,
        (Some(_), None) => Effect::NoLongerStopped,
        (Some(a), Some(b)) if a != b => Effect::StopMoved,
        _ if diverges_at_step.is_some() => Effect::Changed,
        _ => Effect::Unchanged,
    };
    if steps.is_empty() {
        not_replayable.clear();
    }
    SimulatedRun {
        run_id: run.id.clone(),
        recorded,
        simulated,
        diverges_at_step,
        steps_replayed,
        not_replayable: not_replayable.into_iter().collect(),
        effect,
    }
}

/// The totals of `runs`.
pub fn totals(runs: &[SimulatedRun]) -> Totals {
    let count = |effect: Effect| runs.iter().filter(|r| r.effect == effect).count() as i64;
    Totals {
        runs_replayed: runs.len() as i64,
        newly_stopped: count(Effect::NewlyStopped),
        no_longer_stopped: count(Effect::NoLongerStopped),
        stop_moved: count(Effect::StopMoved),
    }
}

/// The result's hash: sha256 of the canonical JSON of the proposal hash and every run's
/// result, in run order. Ids and times of the simulation itself are not part of it, so the
/// same inputs give the same hash.
pub fn result_hash(proposal_hash: &str, runs: &[SimulatedRun]) -> String {
    let document = serde_json::json!({
        "proposedSnapshotHash": proposal_hash,
        "runs": runs,
    });
    sha256_hex(canonical::to_string(&document))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, Utc};
    use governance_entities::enums::{
        DecisionAction, PolicyAction, PolicyKind, PolicyMode, RunStatus, Severity, StepType,
    };
    use serde_json::json;

    use super::*;
    use crate::{policy::evaluate, replay::Replay, snapshot};

    fn policy(
        id: &str,
        kind: PolicyKind,
        rule: serde_json::Value,
    ) -> governance_entities::policy::Model {
        governance_entities::policy::Model {
            id: id.into(),
            tenant_id: "ten_1".into(),
            name: id.into(),
            description: None,
            kind,
            rule,
            action: PolicyAction::Block,
            severity: Severity::High,
            workflow_id: None,
            enabled: true,
            mode: PolicyMode::Enforce,
            version: 1,
            current_version_id: "pv".into(),
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    fn compiled(policies: &[governance_entities::policy::Model]) -> CompiledSnapshot {
        CompiledSnapshot::compile(&snapshot::compose(policies).policies_json).expect("compiles")
    }

    fn run() -> run::Model {
        let t0 = DateTime::<Utc>::UNIX_EPOCH;
        run::Model {
            id: "run_1".into(),
            tenant_id: "ten_1".into(),
            workflow_id: "wf".into(),
            agent: None,
            triggered_by: None,
            status: RunStatus::Running,
            termination_reason: None,
            error: None,
            policy_snapshot_id: "SNAP-abcdefabcdef".into(),
            policy_set_version: "1.0.0".into(),
            stopped_at_step: None,
            violation_policy_id: None,
            tokens_used: 0,
            cost_micros: 0,
            step_count: 0,
            is_synthetic: false,
            synthetic_scenario_id: None,
            metadata: None,
            started_at: t0,
            completed_at: None,
            trace_head_hash: "genesis".into(),
            violation_step_index: None,
            violation_timestamp: None,
            violation_reason: None,
            record_format: 2,
            logged_head_hash: None,
            logged_at: None,
            deadline_at: None,
            created_at: t0,
            updated_at: t0,
        }
    }

    /// Steps as the live path would have recorded them against `live`: each decided on the
    /// run as it stood, with `content` matched live (the text itself is then dropped).
    fn record(
        live: &CompiledSnapshot,
        run: &run::Model,
        steps: &[(i64, Option<&str>)],
    ) -> Vec<trace_step::Model> {
        let mut replay = Replay::new(run);
        let mut recorded = Vec::new();
        for (index, (tokens, content)) in steps.iter().enumerate() {
            let timestamp = DateTime::<Utc>::UNIX_EPOCH + Duration::seconds(index as i64);
            let evaluation = evaluate(
                live,
                &crate::replay::run_state(run, replay.totals(), &[]),
                &crate::policy::StepInput {
                    index: index as i64,
                    step_type: StepType::LlmCall,
                    tokens: *tokens,
                    cost_micros: 0,
                    tool_name: None,
                    content: crate::policy::ContentInput::Text(*content),
                    timestamp,
                },
            );
            let step = trace_step::Model {
                pk: index as i64,
                tenant_id: "ten_1".into(),
                run_id: run.id.clone(),
                step_index: index as i64,
                timestamp,
                step_type: StepType::LlmCall,
                tokens: *tokens,
                cost_micros: 0,
                tool_name: None,
                content_hash: String::new(),
                status: evaluation.status,
                is_inflection: evaluation.action == DecisionAction::Stop,
                decision: evaluation.action,
                policies_checked: evaluation.policies_checked,
                reason: evaluation.reason.clone(),
                decision_json: DecisionRecord::from(&evaluation).to_json(),
                prev_hash: String::new(),
                entry_hash: String::new(),
                created_at: timestamp,
            };
            replay.advance(&step);
            let stop = step.decision == DecisionAction::Stop;
            recorded.push(step);
            if stop {
                break;
            }
        }
        recorded
    }

    #[test]
    fn replaying_the_recorded_snapshot_changes_nothing_and_a_proposal_diverges_where_it_decides_otherwise()
     {
        let secrets = policy(
            "pol_c",
            PolicyKind::ContentRule,
            json!({ "patterns": ["secret"] }),
        );
        let live = compiled(&[
            policy(
                "pol_b",
                PolicyKind::TokenBudget,
                json!({ "maxTokens": 100 }),
            ),
            secrets.clone(),
        ]);
        let run = run();
        let steps = record(&live, &run, &[(30, None), (30, Some("no")), (30, None)]);
        assert!(steps.iter().all(|s| s.decision == DecisionAction::Continue));

        let same = simulate_run(&run, &steps, &live, &live);
        assert_eq!(same.effect, Effect::Unchanged);
        assert_eq!(same.diverges_at_step, None);
        assert!(same.not_replayable.is_empty());

        let tighter = compiled(&[
            policy("pol_b", PolicyKind::TokenBudget, json!({ "maxTokens": 50 })),
            secrets,
            policy(
                "new:0",
                PolicyKind::ContentRule,
                json!({ "patterns": ["no"] }),
            ),
        ]);
        let first = simulate_run(&run, &steps, &live, &tighter);
        assert_eq!(first.effect, Effect::NewlyStopped);
        assert_eq!(first.diverges_at_step, Some(1));
        assert_eq!(first.simulated.stop_step, Some(1));
        assert_eq!(first.simulated.deciding_policy.as_deref(), Some("pol_b"));
        assert_eq!(first.steps_replayed, 2);
        // The new content rule would match step 1's text, but the text is gone: it is said to
        // be not replayable, not guessed.
        assert_eq!(first.not_replayable, vec!["new:0".to_string()]);
        // Deterministic: the same inputs, the same result and hash.
        let again = simulate_run(&run, &steps, &live, &tighter);
        assert_eq!(first, again);
        assert_eq!(
            result_hash("h", std::slice::from_ref(&first)),
            result_hash("h", &[again])
        );
        assert_ne!(
            result_hash("h", std::slice::from_ref(&first)),
            result_hash("other", &[first])
        );
    }
}
