//! One step evaluated against a compiled 50-policy snapshot of mixed kinds. Goal: ≤ 5 µs.
//!
//! The mix: 10 token/cost budgets, 8 step/rate/duration limits, 16 content rules of 2–3 patterns,
//! 8 tool allowlists, 8 CEL expressions. Steps: one that violates nothing (the common case), a
//! typical stop (4 findings), a step that violates 18 policies at once, and the clean step
//! against the same snapshot with step limits instead of expressions (what CEL costs).

use std::hint::black_box;

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use governance_core::policy::{CompiledSnapshot, ContentInput, RunState, StepInput, evaluate};
use governance_entities::enums::{DecisionAction, StepType};
use serde_json::{Value, json};

fn policy(i: usize, kind: &str, action: &str, rule: Value) -> Value {
    let severity = ["LOW", "MEDIUM", "HIGH", "CRITICAL"][i % 4];
    json!({
        "id": format!("pol_{i:03}"),
        "version": 1,
        "name": format!("policy {i}"),
        "kind": kind,
        "action": action,
        "severity": severity,
        "workflowId": null,
        "rule": rule,
    })
}

fn content_patterns(n: usize) -> Vec<String> {
    let fixed: [&[&str]; 4] = [
        &["sk-[A-Za-z0-9]{20,}", "AKIA[0-9A-Z]{16}"],
        &["(?i)password\\s*[:=]\\s*\\S+", "(?i)passwd\\s*[:=]"],
        &["\\b\\d{3}-\\d{2}-\\d{4}\\b", "(?i)\\bssn\\b"],
        &[
            "-----BEGIN [A-Z ]*PRIVATE KEY-----",
            "(?i)drop\\s+table",
            "xox[baprs]-[0-9A-Za-z-]+",
        ],
    ];
    match fixed.get(n) {
        Some(patterns) => patterns.iter().map(|p| p.to_string()).collect(),
        None => {
            let mut patterns = vec![
                format!("(?i)internal-project-{n}\\b"),
                format!("ticket-{n}-[0-9]{{5}}"),
            ];
            if n % 2 == 1 {
                patterns.push(format!("(?i)codename\\s+zeta{n}"));
            }
            patterns
        }
    }
}

/// 50 policies: 10 token/cost budgets, 8 step/rate/duration limits, 16 content rules (2–3
/// patterns each), 8 tool allowlists, 8 expressions (or 8 more step limits without CEL).
fn mixed_snapshot(with_expressions: bool) -> String {
    let mut policies = Vec::new();
    let mut i = 0;
    let mut push = |kind: &str, action: &str, rule: Value| {
        policies.push(policy(i, kind, action, rule));
        i += 1;
    };
    for n in 0..5 {
        push(
            "TOKEN_BUDGET",
            "BLOCK",
            json!({"maxTokens": 50_000 + n * 20_000}),
        );
        push(
            "COST_BUDGET",
            "WARN",
            json!({"maxCostMicros": 5_000_000 + n * 1_000_000}),
        );
    }
    for n in 0..3 {
        push("STEP_LIMIT", "BLOCK", json!({"maxSteps": 500 + n}));
        push(
            "RATE_LIMIT",
            "BLOCK",
            json!({"maxSteps": 20 + n, "windowSeconds": 60}),
        );
    }
    push("DURATION_LIMIT", "BLOCK", json!({"maxSeconds": 3600}));
    push("DURATION_LIMIT", "WARN", json!({"maxSeconds": 1800}));
    for n in 0..16 {
        push(
            "CONTENT_RULE",
            if n % 2 == 0 { "BLOCK" } else { "WARN" },
            json!({"patterns": content_patterns(n)}),
        );
    }
    for n in 0..8 {
        let mut tools = vec!["search", "read_file", "write_file"];
        if n > 0 {
            tools.push("deploy");
        }
        push("TOOL_ALLOWLIST", "BLOCK", json!({"tools": tools}));
    }
    let expressions = [
        "run.tokensUsed > 400000 && step.type == 'LLM_CALL'",
        "step.tokens > 80000",
        "run.costMicros > 4000000 && run.stepCount > 100",
        "step.toolName == 'deploy' && !run.isSynthetic",
        "run.elapsedSeconds > 1200.0 && step.costMicros > 100000",
        "step.type == 'TOOL_CALL' && run.agent == 'untrusted'",
        "run.workflowId == 'payments' && step.tokens > 2000",
        "step.index > 400",
    ];
    for (n, e) in expressions.iter().enumerate() {
        if with_expressions {
            push(
                "EXPRESSION",
                if n % 2 == 0 { "BLOCK" } else { "WARN" },
                json!({"expression": e}),
            );
        } else {
            push("STEP_LIMIT", "BLOCK", json!({"maxSteps": 1000 + n}));
        }
    }
    assert_eq!(policies.len(), 50);
    serde_json::to_string(&policies).expect("serializes")
}

fn bench(c: &mut Criterion) {
    let snapshot = CompiledSnapshot::compile(&mixed_snapshot(true)).expect("compiles");
    let without_cel = CompiledSnapshot::compile(&mixed_snapshot(false)).expect("compiles");
    let started: DateTime<Utc> = DateTime::UNIX_EPOCH + TimeDelta::days(20_000);
    let now = started + TimeDelta::seconds(120);
    let recent: Vec<DateTime<Utc>> = (1..=10).map(|s| now - TimeDelta::seconds(s * 3)).collect();
    let run = RunState {
        run_id: "run_bench",
        workflow_id: "support-bot",
        agent: Some("agent-7"),
        started_at: started,
        tokens_used: 12_000,
        cost_micros: 340_000,
        step_count: 40,
        is_synthetic: false,
        metadata: None,
        recent_step_timestamps: &recent,
    };
    // The common case: nothing violated.
    let clean = StepInput {
        index: 40,
        step_type: StepType::ToolCall,
        tokens: 850,
        cost_micros: 12_000,
        tool_name: Some("search"),
        content: ContentInput::Text(Some(
            "Searching the knowledge base for the customer's refund policy question; \
             found 3 articles about refunds within 30 days of purchase.",
        )),
        timestamp: now,
    };
    // A typical stop: a token budget, a content rule (an API key), an allowlist (BLOCK) and an
    // expression (WARN) — 4 findings.
    let violating = StepInput {
        tokens: 45_000,
        tool_name: Some("deploy"),
        content: ContentInput::Text(Some(
            "Deploying with the key sk-ABCDEFGHIJKLMNOPQRSTUVWX0123 as requested.",
        )),
        ..clean
    };
    // Everything at once: 5 budgets, 8 allowlists, 4 content rules, 1 expression — 18 findings.
    let many = StepInput {
        tokens: 200_000,
        tool_name: Some("shell"),
        content: ContentInput::Text(Some(
            "key sk-ABCDEFGHIJKLMNOPQRSTUVWX0123, password: hunter22, ssn 123-45-6789, \
             internal-project-5",
        )),
        ..clean
    };
    let count = |step: &StepInput<'_>| evaluate(&snapshot, &run, step).findings.len();
    assert_eq!(
        evaluate(&snapshot, &run, &clean).action,
        DecisionAction::Continue
    );
    assert_eq!(
        evaluate(&snapshot, &run, &violating).action,
        DecisionAction::Stop
    );
    assert_eq!(count(&violating), 4);
    assert_eq!(count(&many), 18);

    let mut group = c.benchmark_group("evaluate_50_policies");
    group.bench_function("clean_step", |b| {
        b.iter(|| evaluate(black_box(&snapshot), black_box(&run), black_box(&clean)))
    });
    group.bench_function("violating_step_4_findings", |b| {
        b.iter(|| evaluate(black_box(&snapshot), black_box(&run), black_box(&violating)))
    });
    group.bench_function("violating_step_18_findings", |b| {
        b.iter(|| evaluate(black_box(&snapshot), black_box(&run), black_box(&many)))
    });
    group.bench_function("clean_step_no_expressions", |b| {
        b.iter(|| evaluate(black_box(&without_cel), black_box(&run), black_box(&clean)))
    });
    group.finish();
    c.bench_function("compile_50_policies", |b| {
        let json = mixed_snapshot(true);
        b.iter(|| CompiledSnapshot::compile(black_box(&json)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
