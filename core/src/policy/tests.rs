//! Tests of the policy engine: each kind's CONTINUE / WARN / STOP and its boundary, validation
//! errors with their field paths, masking, replay without the text, inflection choice, the cache.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use governance_entities::enums::{
    DecisionAction, PolicyAction, PolicyKind, Severity, StepStatus, StepType, TerminationReason,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::canonical;

// ---------------------------------------------------------------------------------------------
// Helpers

struct P {
    id: &'static str,
    kind: PolicyKind,
    action: PolicyAction,
    severity: Severity,
    rule: Value,
}

fn block(id: &'static str, kind: PolicyKind, rule: Value) -> P {
    P {
        id,
        kind,
        action: PolicyAction::Block,
        severity: Severity::High,
        rule,
    }
}

fn warn(id: &'static str, kind: PolicyKind, rule: Value) -> P {
    P {
        action: PolicyAction::Warn,
        ..block(id, kind, rule)
    }
}

impl P {
    fn severity(self, severity: Severity) -> P {
        P { severity, ..self }
    }
}

/// `policies_json` as `snapshot::compose` writes it.
fn policies_json(policies: &[P]) -> String {
    let mut entries: Vec<Value> = policies
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "version": 1,
                "name": format!("name of {}", p.id),
                "kind": p.kind.as_str(),
                "action": p.action.as_str(),
                "severity": p.severity.as_str(),
                "workflowId": null,
                "rule": p.rule,
            })
        })
        .collect();
    entries.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    canonical::to_string(&Value::Array(entries))
}

fn compile(policies: &[P]) -> CompiledSnapshot {
    CompiledSnapshot::compile(&policies_json(policies)).expect("snapshot compiles")
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00.000Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn run() -> RunState<'static> {
    RunState {
        run_id: "run_1",
        workflow_id: "wf",
        agent: Some("agent-7"),
        started_at: t0(),
        tokens_used: 0,
        cost_micros: 0,
        step_count: 0,
        is_synthetic: false,
        metadata: None,
        recent_step_timestamps: &[],
    }
}

fn step() -> StepInput<'static> {
    StepInput {
        index: 0,
        step_type: StepType::LlmCall,
        tokens: 10,
        cost_micros: 100,
        tool_name: None,
        content: ContentInput::Text(None),
        timestamp: t0() + TimeDelta::seconds(1),
    }
}

fn eval(policies: &[P], run: &RunState<'_>, step: &StepInput<'_>) -> Evaluation {
    evaluate(&compile(policies), run, step)
}

fn assert_continue(e: &Evaluation) {
    assert_eq!(e.action, DecisionAction::Continue, "{e:#?}");
    assert_eq!(e.status, StepStatus::Ok);
    assert!(e.findings.is_empty());
    assert_eq!(e.inflection, None);
    assert_eq!(e.termination_reason(), None);
}

fn assert_warn(e: &Evaluation) {
    assert_eq!(e.action, DecisionAction::Warn, "{e:#?}");
    assert_eq!(e.status, StepStatus::Warning);
    assert_eq!(e.findings.len(), 1);
    assert_eq!(e.inflection, None);
    assert_eq!(e.termination_reason(), None);
}

fn assert_stop(e: &Evaluation, reason: TerminationReason) -> &Finding {
    assert_eq!(e.action, DecisionAction::Stop, "{e:#?}");
    assert_eq!(e.status, StepStatus::Violation);
    assert_eq!(e.termination_reason(), Some(reason));
    let f = e.inflection_finding().expect("an inflection");
    assert_eq!(e.reason, f.reason);
    f
}

fn bad(kind: PolicyKind, rule: Value) -> (String, String) {
    match validate_rule(kind, PolicyAction::Block, &rule) {
        Err(CoreError::BadInput {
            message,
            field: Some(field),
        }) => (field, message),
        other => panic!("expected a bad field for {rule}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TOKEN_BUDGET

fn token_budget(action: PolicyAction) -> P {
    P {
        action,
        ..block(
            "pol_tok",
            PolicyKind::TokenBudget,
            json!({"maxTokens": 1000}),
        )
    }
}

#[test]
fn token_budget_continue_boundary_warn_stop() {
    let before = RunState {
        tokens_used: 900,
        ..run()
    };
    // 900 + 100 = 1000: exactly at the budget is not over it.
    let at = StepInput {
        tokens: 100,
        ..step()
    };
    assert_continue(&eval(&[token_budget(PolicyAction::Block)], &before, &at));
    let over = StepInput {
        tokens: 101,
        ..step()
    };
    assert_warn(&eval(&[token_budget(PolicyAction::Warn)], &before, &over));
    let e = eval(&[token_budget(PolicyAction::Block)], &before, &over);
    let f = assert_stop(&e, TerminationReason::BudgetExceeded);
    assert_eq!(f.violated_rule, "maxTokens");
    assert_eq!(f.evaluated_value, "1001");
    assert_eq!(f.threshold_condition, "tokensUsed > 1000");
    assert_eq!(f.threshold, json!({"maxTokens": 1000}));
    assert_eq!(f.observed, json!(1001));
    assert_eq!(
        f.reason,
        "Run used 1001 tokens, over the budget of 1000 (policy `name of pol_tok`)."
    );
}

#[test]
fn token_budget_validation() {
    let kind = PolicyKind::TokenBudget;
    assert_eq!(
        validate_rule(kind, PolicyAction::Block, &json!({"maxTokens": 0})).ok(),
        Some(json!({"maxTokens": 0}))
    );
    let (field, message) = bad(kind, json!({"maxTokens": -1}));
    assert_eq!(field, "input.rule.maxTokens");
    assert!(message.contains("≥ 0"), "{message}");
    let (field, message) = bad(kind, json!({"maxTokens": 1.5}));
    assert_eq!(field, "input.rule.maxTokens");
    assert!(message.contains("whole number"), "{message}");
    let (field, _) = bad(kind, json!({"maxTokens": "1000"}));
    assert_eq!(field, "input.rule.maxTokens");
    let (field, message) = bad(kind, json!({}));
    assert_eq!(field, "input.rule.maxTokens");
    assert!(message.starts_with("required"), "{message}");
    let (field, message) = bad(kind, json!({"maxTokens": 10, "maxtokens": 5}));
    assert_eq!(field, "input.rule.maxtokens");
    assert_eq!(
        message,
        "unknown key; TOKEN_BUDGET takes maxTokens (e.g. {\"maxTokens\": 100000})"
    );
    let (field, _) = bad(kind, json!([1000]));
    assert_eq!(field, "input.rule");
    let (field, message) = bad(kind, json!({"maxTokens": u64::MAX}));
    assert_eq!(field, "input.rule.maxTokens");
    assert!(message.contains("at most"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// COST_BUDGET

#[test]
fn cost_budget_continue_boundary_warn_stop() {
    let rule = json!({"maxCostMicros": 1_000_000});
    let before = RunState {
        cost_micros: 999_900,
        ..run()
    };
    let at = StepInput {
        cost_micros: 100,
        ..step()
    };
    let over = StepInput {
        cost_micros: 600_100,
        ..step()
    };
    assert_continue(&eval(
        &[block("pol_c", PolicyKind::CostBudget, rule.clone())],
        &before,
        &at,
    ));
    assert_warn(&eval(
        &[warn("pol_c", PolicyKind::CostBudget, rule.clone())],
        &before,
        &over,
    ));
    let e = eval(
        &[block("pol_c", PolicyKind::CostBudget, rule)],
        &before,
        &over,
    );
    let f = assert_stop(&e, TerminationReason::BudgetExceeded);
    assert_eq!(f.violated_rule, "maxCostMicros");
    assert_eq!(f.evaluated_value, "1600000");
    assert_eq!(f.threshold_condition, "costMicros > 1000000");
    assert!(f.reason.contains("$1.60"), "{}", f.reason);
    assert!(f.reason.contains("$1.00"), "{}", f.reason);
}

#[test]
fn cost_budget_validation() {
    let (field, _) = bad(PolicyKind::CostBudget, json!({"maxCostMicros": -5}));
    assert_eq!(field, "input.rule.maxCostMicros");
    let (field, _) = bad(PolicyKind::CostBudget, json!({"maxCost": 5}));
    assert_eq!(field, "input.rule.maxCost");
}

// ---------------------------------------------------------------------------------------------
// STEP_LIMIT

#[test]
fn step_limit_continue_boundary_warn_stop() {
    let rule = json!({"maxSteps": 3});
    let at = RunState {
        step_count: 2,
        ..run()
    };
    let over = RunState {
        step_count: 3,
        ..run()
    };
    assert_continue(&eval(
        &[block("pol_s", PolicyKind::StepLimit, rule.clone())],
        &at,
        &step(),
    ));
    assert_warn(&eval(
        &[warn("pol_s", PolicyKind::StepLimit, rule.clone())],
        &over,
        &step(),
    ));
    let e = eval(
        &[block("pol_s", PolicyKind::StepLimit, rule)],
        &over,
        &step(),
    );
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.evaluated_value, "4");
    assert_eq!(f.threshold_condition, "stepCount > 3");
}

#[test]
fn step_limit_validation() {
    let (field, message) = bad(PolicyKind::StepLimit, json!({"max_steps": 3}));
    assert_eq!(field, "input.rule.max_steps");
    assert!(message.contains("STEP_LIMIT takes maxSteps"), "{message}");
    assert!(
        validate_rule(
            PolicyKind::StepLimit,
            PolicyAction::Block,
            &json!({"maxSteps": 0})
        )
        .is_ok()
    );
}

// ---------------------------------------------------------------------------------------------
// RATE_LIMIT

#[test]
fn rate_limit_counts_the_trailing_window() {
    let rule = json!({"maxSteps": 2, "windowSeconds": 10});
    let now = t0() + TimeDelta::seconds(100);
    let this = StepInput {
        timestamp: now,
        ..step()
    };
    // Exactly `window` ago is outside (ts − window, ts]; older ones are ignored.
    let within = [
        now - TimeDelta::seconds(50),
        now - TimeDelta::seconds(10),
        now - TimeDelta::seconds(5),
    ];
    let at = RunState {
        recent_step_timestamps: &within,
        ..run()
    };
    assert_continue(&eval(
        &[block("pol_r", PolicyKind::RateLimit, rule.clone())],
        &at,
        &this,
    ));
    let crowded = [
        now - TimeDelta::seconds(10),
        now - TimeDelta::milliseconds(9_999),
        now - TimeDelta::seconds(5),
    ];
    let over = RunState {
        recent_step_timestamps: &crowded,
        ..run()
    };
    assert_warn(&eval(
        &[warn("pol_r", PolicyKind::RateLimit, rule.clone())],
        &over,
        &this,
    ));
    let e = eval(&[block("pol_r", PolicyKind::RateLimit, rule)], &over, &this);
    let f = assert_stop(&e, TerminationReason::RateLimited);
    assert_eq!(f.evaluated_value, "3");
    assert_eq!(f.threshold_condition, "stepsInWindow(10s) > 2");
    assert_eq!(f.observed, json!(3));
}

#[test]
fn rate_limit_validation() {
    let (field, _) = bad(
        PolicyKind::RateLimit,
        json!({"maxSteps": 0, "windowSeconds": 10}),
    );
    assert_eq!(field, "input.rule.maxSteps");
    let (field, _) = bad(
        PolicyKind::RateLimit,
        json!({"maxSteps": 5, "windowSeconds": 0}),
    );
    assert_eq!(field, "input.rule.windowSeconds");
    let (field, message) = bad(PolicyKind::RateLimit, json!({"maxSteps": 5}));
    assert_eq!(field, "input.rule.windowSeconds");
    assert!(message.contains("maxSteps and windowSeconds"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// DURATION_LIMIT

#[test]
fn duration_limit_compares_milliseconds() {
    let rule = json!({"maxSeconds": 60});
    let at = StepInput {
        timestamp: t0() + TimeDelta::seconds(60),
        ..step()
    };
    let over = StepInput {
        timestamp: t0() + TimeDelta::milliseconds(60_001),
        ..step()
    };
    assert_continue(&eval(
        &[block("pol_d", PolicyKind::DurationLimit, rule.clone())],
        &run(),
        &at,
    ));
    assert_warn(&eval(
        &[warn("pol_d", PolicyKind::DurationLimit, rule.clone())],
        &run(),
        &over,
    ));
    let e = eval(
        &[block("pol_d", PolicyKind::DurationLimit, rule)],
        &run(),
        &over,
    );
    let f = assert_stop(&e, TerminationReason::Timeout);
    assert_eq!(f.evaluated_value, "60.001");
    assert_eq!(f.threshold_condition, "elapsedSeconds > 60");
    assert_eq!(f.observed, json!(60.001));
}

#[test]
fn duration_limit_validation() {
    let (field, _) = bad(PolicyKind::DurationLimit, json!({"maxSeconds": 0}));
    assert_eq!(field, "input.rule.maxSeconds");
    let (field, _) = bad(PolicyKind::DurationLimit, json!({"maxSeconds": null}));
    assert_eq!(field, "input.rule.maxSeconds");
}

// ---------------------------------------------------------------------------------------------
// CONTENT_RULE

const SECRET: &str = "sk-live0123456789abcdef";

fn content_rule(action: PolicyAction) -> P {
    P {
        action,
        ..block(
            "pol_content",
            PolicyKind::ContentRule,
            json!({"patterns": ["password=\\S+", "sk-[a-z0-9]{8,}"]}),
        )
    }
}

fn with_content(text: &'static str) -> StepInput<'static> {
    StepInput {
        content: ContentInput::Text(Some(text)),
        ..step()
    }
}

#[test]
fn content_rule_continue_warn_stop() {
    let block_rule = [content_rule(PolicyAction::Block)];
    assert_continue(&eval(&block_rule, &run(), &step()));
    assert_continue(&eval(&block_rule, &run(), &with_content("all quiet")));
    // Boundary: seven characters after `sk-` do not match `{8,}`.
    assert_continue(&eval(&block_rule, &run(), &with_content("sk-abcdefg")));
    let text = "here is the key: sk-live0123456789abcdef, use it";
    assert_warn(&eval(
        &[content_rule(PolicyAction::Warn)],
        &run(),
        &with_content(text),
    ));
    let e = eval(&block_rule, &run(), &with_content(text));
    assert_eq!(e.content_matches, vec!["pol_content".to_string()]);
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.violated_rule, "patterns");
    assert_eq!(f.evidence["patternIndex"], json!(1));
    assert_eq!(f.evidence["pattern"], json!("sk-[a-z0-9]{8,}"));
    assert_eq!(f.evidence["matchLength"], json!(SECRET.len()));
    assert_eq!(f.evidence["maskedMatch"], json!(mask::mask(SECRET)));
    assert_eq!(
        f.evidence["contentSha256"],
        json!(crate::hashing::sha256_hex(text))
    );
}

#[test]
fn a_matched_secret_never_appears_in_the_evaluation() {
    let text = format!("token {SECRET} and password=hunter2hunter2");
    let e = evaluate(
        &compile(&[content_rule(PolicyAction::Block)]),
        &run(),
        &StepInput {
            content: ContentInput::Text(Some(&text)),
            ..step()
        },
    );
    assert_eq!(e.action, DecisionAction::Stop);
    let serialized = serde_json::to_string(&e).expect("serializes");
    assert!(!serialized.contains(SECRET), "{serialized}");
    assert!(!serialized.contains("hunter2"), "{serialized}");
    assert!(!serialized.contains(&text), "{serialized}");
    // The first pattern that matched is the one shown, masked.
    assert!(
        serialized.contains(&mask::mask("password=hunter2hunter2")),
        "{serialized}"
    );
}

#[test]
fn a_single_pattern_is_named_in_the_finding() {
    let e = eval(
        &[block(
            "pol_one",
            PolicyKind::ContentRule,
            json!({"patterns": ["sk-[a-z0-9]+"]}),
        )],
        &run(),
        &with_content("sk-abc"),
    );
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.violated_rule, "patterns[0]");
    assert_eq!(f.evaluated_value, "content matched pattern `sk-[a-z0-9]+`");
    assert_eq!(f.evidence["maskedMatch"], json!("******"));
}

#[test]
fn content_rule_validation() {
    let kind = PolicyKind::ContentRule;
    let (field, _) = bad(kind, json!({"patterns": []}));
    assert_eq!(field, "input.rule.patterns");
    let (field, _) = bad(kind, json!({"patterns": "sk-.*"}));
    assert_eq!(field, "input.rule.patterns");
    let (field, message) = bad(kind, json!({"patterns": ["ok", "fine", "(unclosed"]}));
    assert_eq!(field, "input.rule.patterns[2]");
    assert!(
        message.contains("not a valid regular expression"),
        "{message}"
    );
    assert!(message.contains("unclosed"), "{message}");
    let (field, _) = bad(kind, json!({"patterns": ["ok", 5]}));
    assert_eq!(field, "input.rule.patterns[1]");
    let (field, _) = bad(kind, json!({"patterns": [""]}));
    assert_eq!(field, "input.rule.patterns[0]");
    // A pattern that would compile to a huge automaton is refused, not built.
    let (field, message) = bad(kind, json!({"patterns": ["(\\w{100}){100}"]}));
    assert_eq!(field, "input.rule.patterns[0]");
    assert!(message.contains("compiles to more than"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// TOOL_ALLOWLIST

fn tool_step(tool: Option<&'static str>) -> StepInput<'static> {
    StepInput {
        step_type: StepType::ToolCall,
        tool_name: tool,
        ..step()
    }
}

#[test]
fn tool_allowlist_continue_warn_stop() {
    let rule = json!({"tools": ["search", "read_file"]});
    let policies = [block("pol_t", PolicyKind::ToolAllowlist, rule.clone())];
    assert_continue(&eval(&policies, &run(), &tool_step(Some("search"))));
    // Only TOOL_CALL steps are checked.
    let llm = StepInput {
        tool_name: Some("rm_rf"),
        ..step()
    };
    assert_continue(&eval(&policies, &run(), &llm));
    // Names are matched exactly.
    let e = eval(&policies, &run(), &tool_step(Some("Search")));
    assert_eq!(e.action, DecisionAction::Stop);
    assert_warn(&eval(
        &[warn("pol_t", PolicyKind::ToolAllowlist, rule)],
        &run(),
        &tool_step(Some("rm_rf")),
    ));
    let e = eval(&policies, &run(), &tool_step(Some("rm_rf")));
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.violated_rule, "tools");
    assert_eq!(f.evaluated_value, "tool `rm_rf`");
    assert_eq!(f.observed, json!("rm_rf"));
    let e = eval(&policies, &run(), &tool_step(None));
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.evaluated_value, "no tool name");
}

#[test]
fn tool_allowlist_validation() {
    let kind = PolicyKind::ToolAllowlist;
    let (field, _) = bad(kind, json!({"tools": []}));
    assert_eq!(field, "input.rule.tools");
    let (field, _) = bad(kind, json!({"tools": ["search", ""]}));
    assert_eq!(field, "input.rule.tools[1]");
    let (field, _) = bad(kind, json!({"tools": ["search", null]}));
    assert_eq!(field, "input.rule.tools[1]");
    let (field, _) = bad(kind, json!({"tool": ["search"]}));
    assert_eq!(field, "input.rule.tool");
}

// ---------------------------------------------------------------------------------------------
// EXPRESSION

fn expression(action: PolicyAction, source: &str) -> P {
    P {
        action,
        ..block(
            "pol_x",
            PolicyKind::Expression,
            json!({ "expression": source }),
        )
    }
}

#[test]
fn expression_continue_boundary_warn_stop() {
    let source = "run.tokensUsed > 100 && step.type == 'TOOL_CALL'";
    let before = RunState {
        tokens_used: 90,
        ..run()
    };
    // 90 + 10 = 100 after the step: not over.
    let at = tool_step(Some("search"));
    assert_continue(&eval(
        &[expression(PolicyAction::Block, source)],
        &before,
        &at,
    ));
    let over = StepInput {
        tokens: 11,
        ..tool_step(Some("search"))
    };
    assert_warn(&eval(
        &[expression(PolicyAction::Warn, source)],
        &before,
        &over,
    ));
    let e = eval(&[expression(PolicyAction::Block, source)], &before, &over);
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert_eq!(f.violated_rule, "expression");
    assert_eq!(f.evaluated_value, "true");
    assert_eq!(f.threshold_condition, source);
    assert_eq!(f.evidence["variables"]["run"]["tokensUsed"], json!(101));
}

#[test]
fn expression_sees_every_variable() {
    let metadata = json!({"env": "prod", "limits": [1, 2, 3]});
    let before = RunState {
        metadata: Some(&metadata),
        step_count: 4,
        cost_micros: 50,
        is_synthetic: true,
        ..run()
    };
    let this = StepInput {
        index: 4,
        timestamp: t0() + TimeDelta::milliseconds(2_500),
        ..tool_step(Some("search"))
    };
    let source = "run.workflowId == 'wf' && run.agent == 'agent-7' && run.stepCount == 5 \
        && run.costMicros == 150 && run.elapsedSeconds == 2.5 && run.isSynthetic \
        && run.metadata.env == 'prod' && size(run.metadata.limits) == 3 \
        && step.index == 4 && step.tokens == 10 && step.costMicros == 100 \
        && step.toolName == 'search' && step.timestamp == '2026-03-01T12:00:02.500Z' \
        && run.metadata.limits.exists(x, x == 3)";
    assert!(
        validate_rule(
            PolicyKind::Expression,
            PolicyAction::Block,
            &json!({ "expression": source })
        )
        .is_ok()
    );
    let e = eval(&[expression(PolicyAction::Block, source)], &before, &this);
    assert_eq!(e.action, DecisionAction::Stop, "{e:#?}");
    assert_eq!(e.findings[0].evaluated_value, "true");
}

#[test]
fn run_and_step_behave_as_maps() {
    let metadata = json!({"team": "core"});
    let before = RunState {
        metadata: Some(&metadata),
        agent: None,
        ..run()
    };
    for source in [
        "size(run) == 8 && step.size() == 6",
        "'agent' in run && !('content' in step)",
        "has(run.agent) && !has(run.metadata.other) && run.agent == null",
        "run['tokensUsed'] == 10 && step['type'] == 'LLM_CALL'",
        "run.exists(k, k == 'metadata') && step.all(k, k != 'content')",
        "run.metadata == {'team': 'core'} && {'team': 'core'} == run.metadata",
        "type(run) == map && type(run.elapsedSeconds) == double",
        "step.toolName == null && run.isSynthetic == false",
    ] {
        assert!(
            validate_rule(
                PolicyKind::Expression,
                PolicyAction::Block,
                &json!({ "expression": source })
            )
            .is_ok(),
            "{source}"
        );
        let e = eval(&[expression(PolicyAction::Block, source)], &before, &step());
        assert_eq!(e.findings.len(), 1, "{source}");
        assert_eq!(e.findings[0].evaluated_value, "true", "{source}: {e:#?}");
    }
    // A missing key is an evaluation error (so, fail-closed), not a silent false.
    let e = eval(
        &[expression(PolicyAction::Block, "run['nope'] == 1")],
        &before,
        &step(),
    );
    assert!(
        e.findings[0]
            .evaluated_value
            .starts_with("evaluation error")
    );
}

#[test]
fn an_expression_that_cannot_be_evaluated_fails_closed() {
    // Valid at write time (the sample run has an agent), but this run has none.
    let source = "run.agent.startsWith('batch-')";
    assert!(
        validate_rule(
            PolicyKind::Expression,
            PolicyAction::Block,
            &json!({ "expression": source })
        )
        .is_ok()
    );
    let anonymous = RunState {
        agent: None,
        ..run()
    };
    let e = eval(
        &[expression(PolicyAction::Block, source)],
        &anonymous,
        &step(),
    );
    let f = assert_stop(&e, TerminationReason::PolicyBlock);
    assert!(
        f.evaluated_value.starts_with("evaluation error: "),
        "{}",
        f.evaluated_value
    );
    assert!(f.reason.contains("counts as violated"), "{}", f.reason);
}

#[test]
fn expression_validation() {
    let kind = PolicyKind::Expression;
    let check = |source: &str| bad(kind, json!({ "expression": source }));
    let (field, message) = check("run.tokensUsed >");
    assert_eq!(field, "input.rule.expression");
    assert!(message.contains("not a valid CEL expression"), "{message}");
    let (_, message) = check("content.contains('x') || tokens > 5 || run.stepCount > 1");
    assert_eq!(
        message,
        "may only use the variables `run` and `step`, but it references `content`, `tokens`"
    );
    let (_, message) = check("run.tokenUsed > 1");
    assert!(
        message.contains("`run.tokenUsed`, which does not exist"),
        "{message}"
    );
    let (_, message) = check("step.content == 'x'");
    assert!(message.contains("`step.content`"), "{message}");
    let (_, message) = check("run.tokensUsed + 1");
    assert!(message.contains("true or false"), "{message}");
    let (_, message) = check("run.tokensUsed > 'many'");
    assert!(message.contains("cannot be evaluated"), "{message}");
    let (_, message) = check("nosuchfunction(run.tokensUsed)");
    assert!(message.contains("cannot be evaluated"), "{message}");
    let (field, _) = bad(kind, json!({ "expression": "" }));
    assert_eq!(field, "input.rule.expression");
    let (field, _) = bad(kind, json!({ "expression": true }));
    assert_eq!(field, "input.rule.expression");
    // Comprehension variables, type names and metadata keys are fine.
    for ok in [
        "[1, 2].exists(x, x > run.stepCount)",
        "type(run.agent) == string",
        "run.metadata.team == 'core'",
        "has(run.metadata.team) && step.toolName in ['a', 'b']",
        "step.toolName.matches('^rm_')",
    ] {
        assert!(
            validate_rule(kind, PolicyAction::Block, &json!({ "expression": ok })).is_ok(),
            "{ok}: {:?}",
            validate_rule(kind, PolicyAction::Block, &json!({ "expression": ok }))
        );
    }
}

#[test]
fn expressions_whose_cost_run_data_could_make_unbounded_are_refused() {
    let kind = PolicyKind::Expression;
    let refused = |expression: &str| -> String {
        let err = validate_rule(
            kind,
            PolicyAction::Block,
            &json!({ "expression": expression }),
        )
        .expect_err(expression);
        err.to_string()
    };
    // The stall reported against the service: quadratic in a list the caller sends.
    let message = refused("run.metadata.l.map(a, run.metadata.l.map(b, a + b)).size() > 0");
    assert!(message.contains("nests one comprehension"), "{message}");
    let message = refused("[1, 2].exists(x, [3].exists(y, x == y))");
    assert!(message.contains("nests one comprehension"), "{message}");
    let message = refused("run.metadata.l.exists(a, a in run.metadata.l)");
    assert!(message.contains("reads `run.metadata` inside"), "{message}");
    let message = refused("run.metadata.l.exists(a, run['metadata'].size() > 1)");
    assert!(message.contains("reads `run.metadata` inside"), "{message}");
    let message = refused("step.toolName.matches(run.metadata.pattern)");
    assert!(message.contains("must be a string literal"), "{message}");
    let message = refused(
        "run.metadata.a.all(x, x > 0) && run.metadata.b.all(x, x > 0) \
         && run.metadata.c.all(x, x > 0) && run.metadata.d.all(x, x > 0)",
    );
    assert!(message.contains("uses 4 comprehensions"), "{message}");
    // Linear shapes stay allowed: one pass over the metadata, counters and step fields inside.
    for ok in [
        "run.metadata.allowed.exists(t, t == step.toolName)",
        "run.metadata.limits.all(l, run.tokensUsed <= l)",
        "run.metadata.l.map(a, a + 1).filter(b, b > 2).size() > 0",
        "matches(step.toolName, '^rm_')",
    ] {
        assert!(
            validate_rule(kind, PolicyAction::Block, &json!({ "expression": ok })).is_ok(),
            "{ok}: {:?}",
            validate_rule(kind, PolicyAction::Block, &json!({ "expression": ok }))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Decision, inflection, shape, compile, cache

#[test]
fn every_violation_is_a_finding_and_the_most_severe_block_is_the_inflection() {
    let policies = [
        block("pol_a", PolicyKind::StepLimit, json!({"maxSteps": 0})).severity(Severity::Medium),
        warn("pol_b", PolicyKind::TokenBudget, json!({"maxTokens": 0}))
            .severity(Severity::Critical),
        block("pol_c", PolicyKind::CostBudget, json!({"maxCostMicros": 0}))
            .severity(Severity::High),
        block(
            "pol_d",
            PolicyKind::DurationLimit,
            json!({"maxSeconds": 1000}),
        ),
        block("pol_e", PolicyKind::TokenBudget, json!({"maxTokens": 1})).severity(Severity::High),
    ];
    let e = eval(&policies, &run(), &step());
    let ids: Vec<&str> = e.findings.iter().map(|f| f.policy_id.as_str()).collect();
    assert_eq!(ids, ["pol_a", "pol_b", "pol_c", "pol_e"]);
    assert_eq!(e.policies_checked, 5);
    // A CRITICAL WARN does not stop anything; of the two HIGH blocks the first wins.
    assert_eq!(e.inflection, Some(2));
    assert_eq!(
        e.termination_reason(),
        Some(TerminationReason::BudgetExceeded)
    );
    assert!(e.reason.contains("Also violated"), "{}", e.reason);
    assert_eq!(e, eval(&policies, &run(), &step()));
}

#[test]
fn warnings_only_continue_with_a_reason() {
    let e = eval(
        &[
            warn("pol_a", PolicyKind::TokenBudget, json!({"maxTokens": 0})),
            warn("pol_b", PolicyKind::StepLimit, json!({"maxSteps": 0})),
            block("pol_c", PolicyKind::StepLimit, json!({"maxSteps": 10})),
        ],
        &run(),
        &step(),
    );
    assert_eq!(e.action, DecisionAction::Warn);
    assert_eq!(e.findings.len(), 2);
    assert!(
        e.reason
            .starts_with("Continued with 2 warnings (3 policies checked): "),
        "{}",
        e.reason
    );
}

#[test]
fn an_empty_snapshot_continues() {
    let e = eval(&[], &run(), &step());
    assert_continue(&e);
    assert_eq!(e.policies_checked, 0);
    let one = eval(
        &[block(
            "pol_a",
            PolicyKind::StepLimit,
            json!({"maxSteps": 10}),
        )],
        &run(),
        &step(),
    );
    assert_eq!(one.reason, "1 policy checked; none violated.");
}

#[test]
fn rule_shape_is_the_sorted_keys() {
    assert_eq!(
        rule_shape(&json!({"windowSeconds": 1, "maxSteps": 2})),
        ["maxSteps", "windowSeconds"]
    );
    assert!(rule_shape(&json!(null)).is_empty());
}

#[test]
fn validation_returns_the_rule_as_given() {
    for (kind, rule) in [
        (
            PolicyKind::RateLimit,
            json!({"maxSteps": 5, "windowSeconds": 60}),
        ),
        (PolicyKind::ContentRule, json!({"patterns": ["a+", "b"]})),
        (PolicyKind::ToolAllowlist, json!({"tools": ["x"]})),
        (
            PolicyKind::Expression,
            json!({"expression": "step.tokens > 5"}),
        ),
    ] {
        assert_eq!(
            validate_rule(kind, PolicyAction::Block, &rule).ok(),
            Some(rule)
        );
    }
}

#[test]
fn compile_reports_limits_and_refuses_damaged_snapshots() {
    let snapshot = compile(&[
        block(
            "pol_a",
            PolicyKind::RateLimit,
            json!({"maxSteps": 5, "windowSeconds": 60}),
        ),
        block(
            "pol_b",
            PolicyKind::RateLimit,
            json!({"maxSteps": 5, "windowSeconds": 600}),
        ),
        block(
            "pol_c",
            PolicyKind::DurationLimit,
            json!({"maxSeconds": 300}),
        ),
        warn(
            "pol_d",
            PolicyKind::DurationLimit,
            json!({"maxSeconds": 30}),
        ),
    ]);
    assert_eq!(snapshot.len(), 4);
    assert!(!snapshot.is_empty());
    assert_eq!(snapshot.max_rate_window_seconds(), Some(600));
    // The WARN's 30 s does not end a silent run; the BLOCK's 300 s does.
    assert_eq!(snapshot.silent_run_limit_seconds(), Some(300));
    assert_eq!(snapshot.policies()[0].id, "pol_a");
    let empty = compile(&[]);
    assert_eq!(empty.max_rate_window_seconds(), None);
    assert_eq!(empty.silent_run_limit_seconds(), None);

    for damaged in [
        "not json",
        "{}",
        r#"[{"id":"pol_a"}]"#,
        &policies_json(&[block(
            "pol_a",
            PolicyKind::TokenBudget,
            json!({"maxTokens": -1}),
        )]),
    ] {
        let err = CompiledSnapshot::compile(damaged).expect_err(damaged);
        assert_eq!(err.code(), "INTERNAL", "{damaged}");
    }
}

#[test]
fn the_cache_returns_the_same_compiled_snapshot_for_a_hash() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SnapshotCache>();
    assert_send_sync::<CompiledSnapshot>();

    let cache = SnapshotCache::new();
    let json = policies_json(&[token_budget(PolicyAction::Block)]);
    let a = cache.get_or_compile("hash-a", &json).expect("compiles");
    let again = cache
        .clone()
        .get_or_compile("hash-a", "ignored on a hit")
        .expect("hit");
    assert!(Arc::ptr_eq(&a, &again));
    let b = cache.get_or_compile("hash-b", &json).expect("compiles");
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(cache.get_or_compile("hash-c", "not json").is_err());
    for i in 0..300 {
        cache
            .get_or_compile(&format!("h{i}"), "[]")
            .expect("compiles");
    }
    assert!(cache.len() <= 256);
    // The oldest went first; the newest is still there.
    let newest = cache.get_or_compile("h299", "[]").expect("hit");
    assert!(Arc::ptr_eq(
        &newest,
        &cache.get_or_compile("h299", "[]").expect("hit")
    ));
}

// ---------------------------------------------------------------------------------------------
// Replay without the text

fn mixed_policies() -> Vec<P> {
    vec![
        block("pol_01", PolicyKind::TokenBudget, json!({"maxTokens": 500})),
        warn("pol_02", PolicyKind::TokenBudget, json!({"maxTokens": 200})),
        block(
            "pol_03",
            PolicyKind::CostBudget,
            json!({"maxCostMicros": 50_000}),
        ),
        block("pol_04", PolicyKind::StepLimit, json!({"maxSteps": 8})),
        block(
            "pol_05",
            PolicyKind::RateLimit,
            json!({"maxSteps": 3, "windowSeconds": 10}),
        ),
        warn(
            "pol_06",
            PolicyKind::DurationLimit,
            json!({"maxSeconds": 30}),
        ),
        block(
            "pol_07",
            PolicyKind::ContentRule,
            json!({"patterns": ["sk-[a-z0-9]{8,}"]}),
        )
        .severity(Severity::Critical),
        warn(
            "pol_08",
            PolicyKind::ContentRule,
            json!({"patterns": ["(?i)password", "ssn:\\d+"]}),
        ),
        block(
            "pol_09",
            PolicyKind::ToolAllowlist,
            json!({"tools": ["search", "read"]}),
        ),
        block(
            "pol_10",
            PolicyKind::Expression,
            json!({"expression": "step.tokens > 150 && run.stepCount > 2"}),
        )
        .severity(Severity::Low),
        warn(
            "pol_11",
            PolicyKind::Expression,
            json!({"expression": "run.agent.startsWith('x')"}),
        ),
    ]
}

const PIECES: &[&str] = &[
    "hello ",
    "sk-abcdef123456 ",
    "PassWord ",
    "ssn:123 ",
    "sk-short ",
    "nothing ",
];

proptest! {
    /// Replaying a step from the recorded content matches decides exactly as the live
    /// evaluation did; only a content finding's evidence (masked match, hash) needs the text.
    #[test]
    fn replay_without_the_text_reproduces_the_decision(
        tokens_before in 0i64..600,
        cost_before in 0i64..60_000,
        step_count in 0i64..10,
        step_tokens in 0i64..200,
        step_cost in 0i64..10_000,
        elapsed_ms in 0i64..40_000,
        gaps in proptest::collection::vec(0i64..8_000, 0..5),
        step_type in prop::sample::select(StepType::ALL.to_vec()),
        tool in prop::option::of(prop::sample::select(vec!["search", "read", "rm_rf"])),
        agent in prop::option::of(prop::sample::select(vec!["xavier", "bot"])),
        content in prop::option::of(proptest::collection::vec(prop::sample::select(PIECES.to_vec()), 0..4)),
    ) {
        let snapshot = compile(&mixed_policies());
        let timestamp = t0() + TimeDelta::milliseconds(elapsed_ms);
        let recent: Vec<DateTime<Utc>> =
            gaps.iter().map(|g| timestamp - TimeDelta::milliseconds(*g)).collect();
        let run = RunState {
            agent,
            tokens_used: tokens_before,
            cost_micros: cost_before,
            step_count,
            recent_step_timestamps: &recent,
            ..run()
        };
        let text = content.map(|pieces| pieces.concat());
        let live_step = StepInput {
            index: step_count,
            step_type,
            tokens: step_tokens,
            cost_micros: step_cost,
            tool_name: tool,
            content: ContentInput::Text(text.as_deref()),
            timestamp,
        };
        let live = evaluate(&snapshot, &run, &live_step);
        let replay_step = StepInput {
            content: ContentInput::Recorded(&live.content_matches),
            ..live_step
        };
        let replayed = evaluate(&snapshot, &run, &replay_step);
        prop_assert!(replayed.same_decision(&live), "live {live:#?}\nreplayed {replayed:#?}");
        for (a, b) in live.findings.iter().zip(&replayed.findings) {
            if a.kind != PolicyKind::ContentRule {
                prop_assert_eq!(a, b);
            }
        }
        if live.content_matches.is_empty() {
            prop_assert_eq!(&replayed, &live);
        }
        // Deterministic: the same inputs give the same evaluation.
        prop_assert_eq!(&evaluate(&snapshot, &run, &live_step), &live);
        let serialized = serde_json::to_string(&live).expect("serializes");
        prop_assert!(!serialized.contains("sk-abcdef123456"));
    }
}

#[test]
fn hostile_expressions_are_refused_without_exhausting_the_stack() {
    let kind = PolicyKind::Expression;
    // Deep brackets: the parser (on its own big stack) refuses them.
    let brackets = format!("{}true{} == [true]", "[".repeat(200), "]".repeat(200));
    let (field, _) = bad(kind, json!({ "expression": brackets }));
    assert_eq!(field, "input.rule.expression");
    // A long left-deep chain parses, but would recurse too deep when evaluated.
    let chain = format!("run.tokensUsed{} > 0", " + 1".repeat(900));
    let (_, message) = bad(kind, json!({ "expression": chain }));
    assert!(message.contains("nested too deeply"), "{message}");
    // Long `&&` chains are balanced by the parser and stay fine.
    let conjunction = format!("run.tokensUsed > 0{}", " && step.tokens >= 0".repeat(60));
    assert!(
        validate_rule(
            kind,
            PolicyAction::Block,
            &json!({ "expression": conjunction })
        )
        .is_ok()
    );
    // The deepest accepted chain evaluates within half a worker thread's stack.
    let deepest = format!("run.tokensUsed{} > 0", " + 1".repeat(20));
    let program = cel::parse(&deepest).expect("accepted");
    let evaluated = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || cel::check_sample(&program))
        .expect("spawns")
        .join()
        .expect("no overflow");
    assert_eq!(evaluated, Ok(()));
}

// ---------------------------------------------------------------------------------------------
// Shadow policies

/// `policies` with those named in `shadow` marked SHADOW, as `snapshot::compose` writes them.
/// `policies_json` with the policies named in `shadow` in SHADOW mode.
fn shadow_json(policies: &[P], shadow: &[&str]) -> String {
    let mut entries: Vec<Value> = serde_json::from_str(&policies_json(policies)).unwrap();
    for entry in &mut entries {
        if shadow.contains(&entry["id"].as_str().unwrap()) {
            entry["mode"] = json!("SHADOW");
        }
    }
    canonical::to_string(&Value::Array(entries))
}

fn with_shadow(policies: &[P], shadow: &[&str]) -> CompiledSnapshot {
    CompiledSnapshot::compile(&shadow_json(policies, shadow)).unwrap()
}

#[test]
fn a_shadow_finding_is_recorded_beside_the_decision_and_never_decides() {
    let policies = [
        block("pol_a", PolicyKind::TokenBudget, json!({ "maxTokens": 5 })),
        warn("pol_b", PolicyKind::StepLimit, json!({ "maxSteps": 0 })),
    ];
    let live = evaluate(&compile(&policies), &run(), &step());
    assert_eq!(live.action, DecisionAction::Stop);

    let shadowed = with_shadow(&policies, &["pol_a", "pol_b"]);
    let e = evaluate(&shadowed, &run(), &step());
    assert_continue(&e);
    assert_eq!(e.policies_checked, 2);
    let ids: Vec<&str> = e
        .shadow_findings
        .iter()
        .map(|f| f.policy_id.as_str())
        .collect();
    assert_eq!(ids, ["pol_a", "pol_b"]);
    // The shadow findings are the findings the policies give when enforced.
    assert!(same_findings(&e.shadow_findings, &live.findings));

    // One enforced, one shadow: only the enforced one decides.
    let mixed = with_shadow(&policies, &["pol_a"]);
    let e = evaluate(&mixed, &run(), &step());
    assert_warn(&e);
    assert_eq!(e.findings[0].policy_id, "pol_b");
    assert_eq!(e.shadow_findings.len(), 1);
    assert_eq!(e.shadow_findings[0].policy_id, "pol_a");
}

#[test]
fn a_shadow_duration_limit_does_not_end_silent_runs() {
    let policies = [block(
        "pol_d",
        PolicyKind::DurationLimit,
        json!({ "maxSeconds": 30 }),
    )];
    assert_eq!(compile(&policies).silent_run_limit_seconds(), Some(30));
    assert_eq!(
        with_shadow(&policies, &["pol_d"]).silent_run_limit_seconds(),
        None
    );
}

#[test]
fn only_an_enforcing_block_duration_limit_ends_silent_runs_read_alike_from_the_text() {
    let duration = |id, seconds: i64| {
        block(
            id,
            PolicyKind::DurationLimit,
            json!({ "maxSeconds": seconds }),
        )
    };
    let policies = [
        duration("pol_a", 300),
        P {
            action: PolicyAction::Warn,
            ..duration("pol_b", 30)
        },
        P {
            action: PolicyAction::RequireApproval,
            ..duration("pol_c", 20)
        },
        duration("pol_d", 10),
        duration("pol_e", 600),
        block("pol_f", PolicyKind::StepLimit, json!({ "maxSteps": 5 })),
    ];
    // pol_d is a shadow; the WARN and the approval are for the next step, not a silent run.
    let text = shadow_json(&policies, &["pol_d"]);
    let compiled = CompiledSnapshot::compile(&text).unwrap();
    assert_eq!(compiled.silent_run_limit_seconds(), Some(300));
    assert_eq!(silent_run_limit_seconds(&text).unwrap(), Some(300));

    let none = policies_json(&policies[1..3]);
    assert_eq!(compile(&policies[1..3]).silent_run_limit_seconds(), None);
    assert_eq!(silent_run_limit_seconds(&none).unwrap(), None);
    assert_eq!(silent_run_limit_seconds("[]").unwrap(), None);
    assert!(silent_run_limit_seconds("not json").is_err());
}

// ---------------------------------------------------------------------------------------------
// REQUIRE_APPROVAL

fn approve(id: &'static str, kind: PolicyKind, rule: Value) -> P {
    P {
        action: PolicyAction::RequireApproval,
        ..block(id, kind, rule)
    }
}

#[test]
fn a_require_approval_violation_holds_the_step_with_its_terms() {
    let policies = [
        approve(
            "pol_a",
            PolicyKind::TokenBudget,
            json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 90, "onTimeout": "ALLOW" } }),
        ),
        warn("pol_w", PolicyKind::TokenBudget, json!({ "maxTokens": 5 })),
    ];
    let e = eval(&policies, &run(), &step());
    assert_eq!(e.action, DecisionAction::Hold, "{e:#?}");
    assert_eq!(e.status, StepStatus::Warning);
    assert_eq!(e.inflection, None);
    assert_eq!(e.termination_reason(), None);
    assert_eq!(
        e.hold_finding().map(|f| f.policy_id.as_str()),
        Some("pol_a")
    );
    assert_eq!(
        e.approval,
        Some(ApprovalTerms {
            timeout_seconds: 90,
            on_timeout: governance_entities::enums::ApprovalOnTimeout::Allow,
        })
    );
    assert!(e.reason.starts_with("Held for approval"), "{}", e.reason);
    assert!(e.reason.contains("name of pol_w"), "{}", e.reason);
    // The record carries the hold; a replay from it decides the same.
    let record = crate::decision_record::DecisionRecord::from(&e);
    assert_eq!(record.hold.as_ref().map(|h| h.timeout_seconds), Some(90));
    assert_eq!(
        record.deciding_finding().map(|f| f.policy_id.as_str()),
        Some("pol_a")
    );
}

#[test]
fn a_block_violation_outranks_a_hold() {
    let policies = [
        approve("pol_a", PolicyKind::TokenBudget, json!({ "maxTokens": 5 })),
        block("pol_b", PolicyKind::TokenBudget, json!({ "maxTokens": 8 })).severity(Severity::Low),
    ];
    let e = eval(&policies, &run(), &step());
    assert_eq!(e.action, DecisionAction::Stop, "{e:#?}");
    assert_eq!(e.hold, None);
    assert_eq!(e.approval, None);
    assert_eq!(
        e.inflection_finding().map(|f| f.policy_id.as_str()),
        Some("pol_b")
    );
}

#[test]
fn approval_terms_are_validated_and_normalised() {
    let rule = json!({ "maxTokens": 5 });
    assert_eq!(
        validate_rule(
            PolicyKind::TokenBudget,
            PolicyAction::RequireApproval,
            &rule
        )
        .ok(),
        Some(
            json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 3600, "onTimeout": "DENY" } })
        )
    );
    for (action, rule, field) in [
        (
            PolicyAction::Warn,
            json!({ "maxTokens": 5, "approval": {} }),
            "input.rule.approval",
        ),
        (
            PolicyAction::RequireApproval,
            json!({ "maxTokens": 5, "approval": { "timeoutSeconds": MAX_TIMEOUT_SECONDS + 1 } }),
            "input.rule.approval.timeoutSeconds",
        ),
        (
            PolicyAction::RequireApproval,
            json!({ "maxTokens": 5, "approval": { "onTimeout": "deny" } }),
            "input.rule.approval.onTimeout",
        ),
        (
            PolicyAction::RequireApproval,
            json!({ "maxTokens": 5, "approval": { "after": 3 } }),
            "input.rule.approval.after",
        ),
    ] {
        match validate_rule(PolicyKind::TokenBudget, action, &rule) {
            Err(CoreError::BadInput { field: Some(f), .. }) => assert_eq!(f, field, "{rule}"),
            other => panic!("{rule}: {other:?}"),
        }
    }
    // The terms follow the action when only the action changes.
    let held = json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 60, "onTimeout": "DENY" } });
    assert_eq!(
        rule_for_action(PolicyKind::TokenBudget, PolicyAction::Block, &held).ok(),
        Some(json!({ "maxTokens": 5 }))
    );
}

#[test]
fn several_holds_take_the_strictest_terms() {
    let policies = [
        approve(
            "pol_a",
            PolicyKind::TokenBudget,
            json!({ "maxTokens": 5, "approval": { "timeoutSeconds": 600, "onTimeout": "ALLOW" } }),
        ),
        approve(
            "pol_b",
            PolicyKind::CostBudget,
            json!({ "maxCostMicros": 5, "approval": { "timeoutSeconds": 900, "onTimeout": "DENY" } }),
        )
        .severity(Severity::Low),
    ];
    let e = eval(&policies, &run(), &step());
    assert_eq!(e.action, DecisionAction::Hold, "{e:#?}");
    assert_eq!(
        e.hold_finding().map(|f| f.policy_id.as_str()),
        Some("pol_a")
    );
    assert_eq!(
        e.approval,
        Some(ApprovalTerms {
            timeout_seconds: 600,
            on_timeout: governance_entities::enums::ApprovalOnTimeout::Deny,
        })
    );
}
