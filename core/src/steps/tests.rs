//! Property: whatever the policies and the steps, the group-commit lane (several runs reported at
//! once, written in shared transactions) and the single path (one transaction per report) record
//! exactly what the pure decision says, step by step: the same answers, the same reasons, the
//! same rows and the same entry hashes as deciding the steps one after another in memory.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, PolicyAction, PolicyKind, RunStatus, Severity, StepType},
    run,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{
    EVALUATION_BUDGET, RecordStep, Recorder, StepOutcome, compiled_snapshot,
    decision::{Report, check, classify, count_clean_step, step_row},
};
use crate::{
    db,
    policies::{self, NewPolicy},
    policy::SnapshotCache,
    runs::{self, StartRun},
    store::Store,
    tenancy,
};

#[derive(Debug, Clone)]
struct StepSpec {
    step_type: StepType,
    tokens: i64,
    cost_micros: i64,
    tool: Option<&'static str>,
    content: Option<&'static str>,
    /// Milliseconds after the previous step (or the run's start).
    after_ms: i64,
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    (
        prop_oneof![
            Just(StepType::LlmCall),
            Just(StepType::ToolCall),
            Just(StepType::Retrieval)
        ],
        0..400i64,
        0..3_000i64,
        prop_oneof![Just(None), Just(Some("search")), Just(Some("rm_rf"))],
        prop_oneof![
            Just(None),
            Just(Some("hello")),
            Just(Some("my password is hunter2"))
        ],
        0..1_500i64,
    )
        .prop_map(
            |(step_type, tokens, cost_micros, tool, content, after_ms)| StepSpec {
                step_type,
                tokens,
                cost_micros,
                tool,
                content,
                after_ms,
            },
        )
}

fn action() -> impl Strategy<Value = PolicyAction> {
    prop_oneof![Just(PolicyAction::Block), Just(PolicyAction::Warn)]
}

/// Some of: a token budget, a cost budget, a step limit, a rate limit, a content rule, a tool
/// allow-list and an expression, with random thresholds and actions.
fn policy_set() -> impl Strategy<Value = Vec<(PolicyKind, Value, PolicyAction)>> {
    (
        (300..3_000i64, action())
            .prop_map(|(max, a)| (PolicyKind::TokenBudget, json!({ "maxTokens": max }), a)),
        (2_000..20_000i64, action())
            .prop_map(|(max, a)| (PolicyKind::CostBudget, json!({ "maxCostMicros": max }), a)),
        (3..12i64, action())
            .prop_map(|(max, a)| (PolicyKind::StepLimit, json!({ "maxSteps": max }), a)),
        (2..5i64, 1..3i64, action()).prop_map(|(max, window, a)| {
            (
                PolicyKind::RateLimit,
                json!({ "maxSteps": max, "windowSeconds": window }),
                a,
            )
        }),
        action().prop_map(|a| {
            (
                PolicyKind::ContentRule,
                json!({ "patterns": ["password"] }),
                a,
            )
        }),
        action().prop_map(|a| (PolicyKind::ToolAllowlist, json!({ "tools": ["search"] }), a)),
        (100..400i64, action()).prop_map(|(max, a)| {
            (
                PolicyKind::Expression,
                json!({ "expression": format!("step.tokens > {max}") }),
                a,
            )
        }),
        proptest::collection::vec(any::<bool>(), 7),
    )
        .prop_map(|(a, b, c, d, e, f, g, keep)| {
            [a, b, c, d, e, f, g]
                .into_iter()
                .zip(keep)
                .filter_map(|(policy, kept)| kept.then_some(policy))
                .collect()
        })
}

/// What a report was answered: the decision and its record, or the error code.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Recorded {
        action: DecisionAction,
        reason: String,
        entry_hash: String,
        run_status: RunStatus,
    },
    Refused(&'static str),
}

fn inputs(run: &run::Model, specs: &[StepSpec]) -> Vec<RecordStep> {
    let mut at = run.started_at;
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            at += chrono::Duration::milliseconds(spec.after_ms);
            RecordStep {
                run_id: run.id.clone(),
                step_index: Some(i as i64),
                step_type: spec.step_type,
                tokens: spec.tokens,
                cost_micros: spec.cost_micros,
                content: spec.content.map(str::to_string),
                tool_name: spec.tool.map(str::to_string),
                timestamp: Some(at),
            }
        })
        .collect()
}

/// Report every step of one run, in order, and collect the answers.
async fn report(recorder: Recorder, tenant_id: String, steps: Vec<RecordStep>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(steps.len());
    for step in steps {
        let answer = match recorder.record(&tenant_id, step).await {
            Ok(committed) => match committed.value {
                StepOutcome::Recorded(record) => Answer::Recorded {
                    action: record.step.decision,
                    reason: record.step.reason,
                    entry_hash: record.step.entry_hash,
                    run_status: record.run.status,
                },
                StepOutcome::FailClosed { reason, .. } => {
                    panic!("a step failed closed: {reason}")
                }
            },
            Err(err) => Answer::Refused(err.code()),
        };
        answers.push(answer);
    }
    answers
}

/// The answers the pure decision gives, deciding the steps one after another in memory, and the
/// run's totals after them.
fn expected(
    snapshot: &crate::policy::CompiledSnapshot,
    mut run: run::Model,
    steps: &[RecordStep],
) -> (Vec<Answer>, Totals) {
    let mut times: Vec<DateTime<Utc>> = Vec::new();
    let answers = steps
        .iter()
        .map(
            |input| match classify(&run, input).expect("indexes are in order") {
                Report::New { index, timestamp } => {
                    let evaluation = check(snapshot, &run, index, input, timestamp, &times);
                    let row = step_row(&run, index, input, timestamp, &evaluation);
                    count_clean_step(&mut run, input, &row);
                    if evaluation.action == DecisionAction::Stop {
                        run.status = RunStatus::FailedPolicy;
                    }
                    times.push(timestamp);
                    Answer::Recorded {
                        action: evaluation.action,
                        reason: evaluation.reason,
                        entry_hash: row.entry_hash,
                        run_status: run.status,
                    }
                }
                Report::AfterEnd => Answer::Refused("RUN_TERMINATED"),
                Report::Resent(_) => unreachable!("every index is new"),
            },
        )
        .collect();
    (answers, Totals::of(&run))
}

/// What a run's row must hold after its steps.
#[derive(Debug, PartialEq)]
struct Totals {
    tokens_used: i64,
    cost_micros: i64,
    step_count: i64,
    trace_head_hash: String,
}

impl Totals {
    fn of(run: &run::Model) -> Self {
        Self {
            tokens_used: run.tokens_used,
            cost_micros: run.cost_micros,
            step_count: run.step_count,
            trace_head_hash: run.trace_head_hash.clone(),
        }
    }
}

async fn check_paths(
    policies: Vec<(PolicyKind, Value, PolicyAction)>,
    runs_specs: Vec<Vec<StepSpec>>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = db::migrated_sqlite(dir.path()).await;
    let store = Store::new(db.clone());
    let cache = SnapshotCache::new();
    let tenant = tenancy::create_tenant(&store, "prop", &[crate::roles::KeyRole::Admin])
        .await
        .expect("tenant")
        .tenant_id;
    for (i, (kind, rule, action)) in policies.into_iter().enumerate() {
        policies::create(
            &store,
            &tenant,
            NewPolicy {
                name: format!("policy {i}"),
                description: None,
                kind,
                rule,
                action,
                severity: Severity::High,
                workflow_id: None,
                enabled: true,
                mode: governance_entities::enums::PolicyMode::Enforce,
            },
            None,
        )
        .await
        .expect("policy");
    }
    let batched = Recorder::new(store.clone(), cache.clone(), EVALUATION_BUDGET);
    let single = Recorder::unbatched(store.clone(), cache.clone(), EVALUATION_BUDGET);
    for recorder in [batched, single] {
        // Every run's steps are reported concurrently with the other runs' (so the lane
        // batches them), each run's in order.
        let mut reports = tokio::task::JoinSet::new();
        let mut wanted = Vec::new();
        for specs in &runs_specs {
            let run = runs::start(&store, &tenant, StartRun::of_workflow("prop"))
                .await
                .expect("run")
                .value;
            let steps = inputs(&run, specs);
            let snapshot = compiled_snapshot(store.db(), &cache, &run)
                .await
                .expect("snapshot");
            wanted.push((run.id.clone(), expected(&snapshot, run, &steps)));
            let recorder = recorder.clone();
            let tenant = tenant.clone();
            reports.spawn(async move {
                let run_id = steps[0].run_id.clone();
                (run_id, report(recorder, tenant, steps).await)
            });
        }
        let mut got = Vec::new();
        while let Some(done) = reports.join_next().await {
            got.push(done.expect("report task"));
        }
        for (run_id, want) in wanted {
            let answers = got
                .iter()
                .find(|(id, _)| *id == run_id)
                .map(|(_, answers)| answers)
                .expect("answers of every run");
            prop_assert_eq!(answers, &want.0, "run {}", run_id);
            let stored = runs::get(store.db(), &tenant, &run_id).await.expect("run");
            prop_assert_eq!(Totals::of(&stored), want.1, "run {} as stored", run_id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn the_lane_and_the_single_path_record_what_the_pure_decision_says(
        policies in policy_set(),
        runs_specs in proptest::collection::vec(proptest::collection::vec(step_spec(), 1..10), 1..5),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(check_paths(policies, runs_specs))?;
    }
}
