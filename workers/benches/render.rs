//! The SOC2 PDF of a 1,000-step incident: how long Typst takes to render it.
//!
//! `cargo bench -p governance-workers --bench render`

use criterion::{Criterion, criterion_group, criterion_main};
use governance_workers::render::{Renderer, Templates};
use serde_json::{Value, json};

/// A SOC2 bundle with `n` steps, the last one stopping the run (the shape `core::exports`
/// builds).
fn soc2_bundle(n: usize) -> Value {
    let hash = |i: usize| format!("{:064x}", i * 7919 + 1);
    let steps: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "stepIndex": i, "timestamp": "2026-11-21T10:00:00.000Z", "type": "LLM_CALL",
                "tokens": 10, "costMicros": 150, "toolName": null, "contentHash": hash(i),
                "status": if i + 1 == n { "VIOLATION" } else { "OK" },
                "decision": if i + 1 == n { "STOP" } else { "CONTINUE" },
                "reason": "1 policy checked; none violated.", "isInflection": i + 1 == n,
                "prevHash": hash(i), "entryHash": hash(i + 1),
            })
        })
        .collect();
    let cumulative: Vec<Value> = (0..n)
        .map(|i| json!({ "stepIndex": i, "tokens": (i + 1) * 10, "costMicros": (i + 1) * 150 }))
        .collect();
    json!({
        "bundle": "SOC2", "exportId": "exp_bench", "exportedAt": "2026-11-21T10:00:00.000Z",
        "exportedBy": "key_bench", "reason": "benchmark",
        "run": { "id": "run_bench", "workflowId": "wf", "agent": "a", "triggeredBy": null,
                 "status": "FAILED_POLICY", "terminationReason": "BUDGET_EXCEEDED",
                 "startedAt": "2026-11-21T10:00:00.000Z", "completedAt": "2026-11-21T10:10:00.000Z", "isSynthetic": false },
        "incident": { "id": "inc_bench", "title": "Token budget stopped run_bench", "severity": "HIGH",
                      "status": "OPEN", "detectedAt": "2026-11-21T10:10:00.000Z",
                      "acknowledgedAt": null, "resolvedAt": null, "note": null },
        "snapshot": { "id": "SNAP-000000000000", "contentHash": hash(0), "version": "0.1.0", "policyCount": 1 },
        "violatedPolicy": { "id": "pol_bench", "version": 1, "name": "Token budget", "kind": "TOKEN_BUDGET",
                            "action": "BLOCK", "severity": "HIGH", "threshold": { "maxTokens": n * 10 - 5 },
                            "thresholdCondition": "tokensUsed > budget", "violatedRule": "token budget",
                            "evaluatedValue": (n * 10).to_string(), "reason": "over budget" },
        "evidence": null, "violations": [],
        "inflectionStep": steps.last().cloned(),
        "steps": steps, "cumulative": cumulative,
        "totals": { "steps": n, "tokens": n * 10, "costMicros": n * 150, "durationMs": 600000 },
        "traceHeadHash": hash(n),
        "verification": { "intact": true, "reproduced": true, "headHash": hash(n), "stepsChecked": n, "mismatches": 0 },
        "controlObjectives": [ { "id": "CC7.2", "objective": "Anomalies are detected.", "evidence": "stopped" } ],
        "attestation": "Every step was recorded and reproduced.",
        "compliancePeriod": { "start": "2026-11-21T10:00:00.000Z", "end": "2026-11-21T10:10:00.000Z" },
        "auditorNotes": "None.",
    })
}

fn render(c: &mut Criterion) {
    let renderer = Renderer::new(Templates::Embedded);
    let bundle = soc2_bundle(1000);
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 21).unwrap_or_default();
    // The first render is cold (Typst memoizes across compilations of the same input, which the
    // measured iterations then benefit from): report it too. It also fails loudly if the bundle
    // does not render at all.
    let started = std::time::Instant::now();
    let pdf = renderer
        .render("soc2.typ", &bundle, today)
        .expect("renders");
    eprintln!(
        "cold render of the 1,000-step SOC2 PDF: {:?} ({} bytes)",
        started.elapsed(),
        pdf.len()
    );
    assert!(pdf.starts_with(b"%PDF-"));
    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    group.bench_function("soc2 pdf, 1,000 steps", |b| {
        b.iter(|| renderer.render("soc2.typ", &bundle, today).map(|p| p.len()))
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
