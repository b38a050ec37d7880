//! Step evaluation: each policy of the snapshot against the run as it is after applying the step.
//!
//! The common case is a step that violates nothing, so the checks themselves compare integers,
//! look a tool up in a set, scan the content once with the snapshot's regex set and run CEL
//! programs against one context built per step; strings and JSON for a finding are only built
//! for a policy that is violated.

use crate::time::rfc3339;
use chrono::{DateTime, Utc};
use governance_entities::enums::{
    ApprovalOnTimeout, DecisionAction, PolicyAction, PolicyKind, PolicyMode, StepStatus, StepType,
    TerminationReason,
};
use regex::Regex;
use serde_json::{Value, json};

use super::{
    CompiledPolicy, CompiledSnapshot, ContentInput, Evaluation, Finding, RunState, StepInput, cel,
    compiled::Check, mask::mask,
};
use crate::hashing::sha256_hex;

/// The termination reason a violated policy of `kind` gives its run (DESIGN's table).
pub(crate) fn termination_reason_of(kind: PolicyKind) -> TerminationReason {
    match kind {
        PolicyKind::TokenBudget | PolicyKind::CostBudget => TerminationReason::BudgetExceeded,
        PolicyKind::RateLimit => TerminationReason::RateLimited,
        PolicyKind::DurationLimit => TerminationReason::Timeout,
        PolicyKind::StepLimit
        | PolicyKind::ContentRule
        | PolicyKind::ToolAllowlist
        | PolicyKind::Expression => TerminationReason::PolicyBlock,
    }
}

/// Which CONTENT_RULE policies the step's content matched.
enum ContentScan<'a> {
    /// No content, or no content policy matched.
    Nothing,
    /// Live: for each policy index, the first of its patterns that matched.
    Live {
        text: &'a str,
        first_match: Vec<Option<usize>>,
    },
    /// Replay: the ids recorded when the step was evaluated.
    Recorded(&'a [String]),
}

impl<'a> ContentScan<'a> {
    fn new(snapshot: &CompiledSnapshot, content: ContentInput<'a>) -> ContentScan<'a> {
        match content {
            ContentInput::Recorded(ids) => ContentScan::Recorded(ids),
            ContentInput::Text(None) => ContentScan::Nothing,
            ContentInput::Text(Some(text)) => {
                let Some(index) = &snapshot.content else {
                    return ContentScan::Nothing;
                };
                // One pass answers "anything at all?" without allocating.
                if !index.set.is_match(text) {
                    return ContentScan::Nothing;
                }
                let mut first_match = vec![None; snapshot.policies.len()];
                for pattern in index.set.matches(text).iter() {
                    if let Some(&(policy, own)) = index.owners.get(pattern)
                        && let Some(slot) = first_match.get_mut(policy)
                        && slot.is_none()
                    {
                        *slot = Some(own);
                    }
                }
                ContentScan::Live { text, first_match }
            }
        }
    }

    /// Did policy number `at` (with id `id`) match? Live: the index of its first matching pattern.
    fn matched(&self, at: usize, id: &str) -> Option<Option<usize>> {
        match self {
            ContentScan::Nothing => None,
            ContentScan::Live { first_match, .. } => {
                first_match.get(at).copied().flatten().map(Some)
            }
            ContentScan::Recorded(ids) => ids.iter().any(|r| r == id).then_some(None),
        }
    }
}

/// A violation, before its finding is written out: numbers and borrows from the policy.
enum Hit<'p> {
    Tokens {
        used: i128,
        max: i64,
    },
    Cost {
        cost: i128,
        max: i64,
    },
    Steps {
        steps: i128,
        max: i64,
    },
    Rate {
        in_window: usize,
        max_steps: i64,
        window_seconds: i64,
    },
    Duration {
        elapsed_ms: i128,
        max_seconds: i64,
    },
    Content {
        /// The index of the first matching pattern, when the text is at hand (live).
        pattern: Option<usize>,
        patterns: &'p [String],
        regexes: &'p [Regex],
    },
    Tool,
    Expression {
        source: &'p str,
        /// `Err`: the expression could not be evaluated (fail-closed: a violation).
        result: Result<(), String>,
    },
}

/// Check one step against the snapshot. Pure and deterministic: same inputs, same Evaluation.
pub fn evaluate(
    snapshot: &CompiledSnapshot,
    run: &RunState<'_>,
    step: &StepInput<'_>,
) -> Evaluation {
    let content = ContentScan::new(snapshot, step.content);
    let vars = snapshot
        .has_expressions
        .then(|| cel::Vars::new(run, step, snapshot.uses_metadata));
    let context = vars.as_ref().map(cel::Vars::context);
    let mut shared = Shared::default();
    let mut findings: Vec<Finding> = Vec::new();
    let mut shadow_findings: Vec<Finding> = Vec::new();
    let mut content_matches: Vec<String> = Vec::new();

    for (at, policy) in snapshot.policies.iter().enumerate() {
        let hit = check(policy, at, run, step, &content, context.as_ref());
        let Some(hit) = hit else { continue };
        if let Hit::Content { .. } = hit {
            content_matches.push(policy.id.clone());
        }
        let found = finding(policy, hit, run, step, &content, &mut shared);
        // A shadow policy's finding is recorded beside the decision and never takes part in it.
        match policy.mode {
            PolicyMode::Enforce => findings.push(found),
            PolicyMode::Shadow => shadow_findings.push(found),
        }
    }
    let mut evaluation = decide(snapshot.policies.len(), findings, content_matches);
    // When several REQUIRE_APPROVAL policies hold the step, the strictest terms apply: the
    // shortest wait, and DENY if any of them says so.
    if evaluation.hold.is_some() {
        evaluation.approval = evaluation
            .findings
            .iter()
            .filter(|f| f.action == PolicyAction::RequireApproval)
            .filter_map(|f| snapshot.policies.iter().find(|p| p.id == f.policy_id))
            .filter_map(|p| p.approval)
            .reduce(|a, b| super::ApprovalTerms {
                timeout_seconds: a.timeout_seconds.min(b.timeout_seconds),
                on_timeout: match (a.on_timeout, b.on_timeout) {
                    (ApprovalOnTimeout::Allow, ApprovalOnTimeout::Allow) => {
                        ApprovalOnTimeout::Allow
                    }
                    _ => ApprovalOnTimeout::Deny,
                },
            });
    }
    evaluation.shadow_findings = shadow_findings;
    evaluation
}

/// Evidence parts that several findings of one step share, built once and only when needed.
#[derive(Default)]
struct Shared {
    content_sha256: Option<String>,
    variables: Option<Value>,
}

fn check<'p>(
    policy: &'p CompiledPolicy,
    at: usize,
    run: &RunState<'_>,
    step: &StepInput<'_>,
    content: &ContentScan<'_>,
    context: Option<&::cel::Context<'_, '_>>,
) -> Option<Hit<'p>> {
    match &policy.check {
        Check::TokenBudget { max_tokens } => {
            let used = i128::from(run.tokens_used) + i128::from(step.tokens);
            (used > i128::from(*max_tokens)).then_some(Hit::Tokens {
                used,
                max: *max_tokens,
            })
        }
        Check::CostBudget { max_cost_micros } => {
            let cost = i128::from(run.cost_micros) + i128::from(step.cost_micros);
            (cost > i128::from(*max_cost_micros)).then_some(Hit::Cost {
                cost,
                max: *max_cost_micros,
            })
        }
        Check::StepLimit { max_steps } => {
            let steps = i128::from(run.step_count) + 1;
            (steps > i128::from(*max_steps)).then_some(Hit::Steps {
                steps,
                max: *max_steps,
            })
        }
        Check::RateLimit {
            max_steps,
            window_seconds,
        } => {
            let in_window = steps_in_window(run, step, *window_seconds);
            (in_window as i128 > i128::from(*max_steps)).then_some(Hit::Rate {
                in_window,
                max_steps: *max_steps,
                window_seconds: *window_seconds,
            })
        }
        Check::DurationLimit { max_seconds } => {
            let elapsed_ms = elapsed_ms(run.started_at, step.timestamp);
            past_duration_limit(elapsed_ms, *max_seconds).then_some(Hit::Duration {
                elapsed_ms,
                max_seconds: *max_seconds,
            })
        }
        Check::ContentRule { patterns, regexes } => {
            content.matched(at, &policy.id).map(|pattern| Hit::Content {
                pattern,
                patterns,
                regexes,
            })
        }
        Check::ToolAllowlist { tools } => {
            let allowed = step.step_type != StepType::ToolCall
                || step.tool_name.is_some_and(|tool| tools.contains(tool));
            (!allowed).then_some(Hit::Tool)
        }
        Check::Expression { program, source } => {
            let context = context?;
            // Fail-closed: an expression that cannot be evaluated for this step (a runtime error,
            // or a result that is not a boolean) counts as violated. A policy the service cannot
            // check must not let a run continue as if it had passed; the finding says why.
            match cel::run(program, context) {
                Ok(false) => None,
                Ok(true) => Some(Hit::Expression {
                    source,
                    result: Ok(()),
                }),
                Err(err) => Some(Hit::Expression {
                    source,
                    result: Err(err),
                }),
            }
        }
    }
}

/// Steps in the trailing window `(ts − window, ts]`, this one included.
fn steps_in_window(run: &RunState<'_>, step: &StepInput<'_>, window_seconds: i64) -> usize {
    let end = i128::from(step.timestamp.timestamp_millis());
    let start = end - i128::from(window_seconds) * 1000;
    let earlier = run
        .recent_step_timestamps
        .iter()
        .filter(|t| {
            let t = i128::from(t.timestamp_millis());
            t > start && t <= end
        })
        .count();
    earlier + 1
}

/// The milliseconds from a run's start to a step's time, as DURATION_LIMIT counts them.
pub(crate) fn elapsed_ms(started_at: DateTime<Utc>, at: DateTime<Utc>) -> i128 {
    i128::from(at.timestamp_millis()) - i128::from(started_at.timestamp_millis())
}

/// Whether `elapsed_ms` is past a DURATION_LIMIT of `max_seconds`.
pub(crate) fn past_duration_limit(elapsed_ms: i128, max_seconds: i64) -> bool {
    elapsed_ms > i128::from(max_seconds) * 1000
}

/// Micro-dollars as dollars: `$1.50`, or `$0.001234` when cents would hide the amount.
fn usd(micros: i128) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (whole, frac) = (abs / 1_000_000, abs % 1_000_000);
    if frac % 10_000 == 0 {
        format!("{sign}${whole}.{:02}", frac / 10_000)
    } else {
        format!("{sign}${whole}.{frac:06}")
    }
}

/// Milliseconds as seconds without trailing zeros: `125.4`, `61`.
fn seconds(ms: i128) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let (whole, frac) = (abs / 1000, abs % 1000);
    if frac == 0 {
        format!("{sign}{whole}")
    } else {
        let frac = format!("{frac:03}");
        format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

/// `evidence` with the CEL variables moved in (`json!` would serialize the tree again).
fn with_variables(mut evidence: Value, variables: Value) -> Value {
    if let Value::Object(map) = &mut evidence {
        map.insert("variables".to_string(), variables);
    }
    evidence
}

/// An i128 counter as JSON can carry it (counters are sums of two i64s).
fn saturate(n: i128) -> i64 {
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

fn plural(n: impl Into<i128>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn finding(
    policy: &CompiledPolicy,
    hit: Hit<'_>,
    run: &RunState<'_>,
    step: &StepInput<'_>,
    content: &ContentScan<'_>,
    shared: &mut Shared,
) -> Finding {
    let name = &policy.name;
    let (violated_rule, evaluated_value, condition, reason, observed, evidence): (
        String,
        String,
        String,
        String,
        Value,
        Value,
    ) = match hit {
        Hit::Tokens {
            used,
            max: max_tokens,
        } => (
            "maxTokens".into(),
            used.to_string(),
            format!("tokensUsed > {max_tokens}"),
            format!(
                "Run used {}, over the budget of {max_tokens} (policy `{name}`).",
                plural(used, "token", "tokens")
            ),
            json!(saturate(used)),
            json!({
                "tokensBefore": run.tokens_used,
                "stepTokens": step.tokens,
                "tokensUsed": saturate(used),
                "maxTokens": max_tokens,
            }),
        ),
        Hit::Cost {
            cost,
            max: max_cost_micros,
        } => (
            "maxCostMicros".into(),
            cost.to_string(),
            format!("costMicros > {max_cost_micros}"),
            format!(
                "Run cost {} ({cost} micro-dollars), over the budget of {} ({max_cost_micros}) \
                 (policy `{name}`).",
                usd(cost),
                usd(i128::from(max_cost_micros))
            ),
            json!(saturate(cost)),
            json!({
                "costMicrosBefore": run.cost_micros,
                "stepCostMicros": step.cost_micros,
                "costMicros": saturate(cost),
                "maxCostMicros": max_cost_micros,
            }),
        ),
        Hit::Steps {
            steps,
            max: max_steps,
        } => (
            "maxSteps".into(),
            steps.to_string(),
            format!("stepCount > {max_steps}"),
            format!(
                "Run reached {}, over the limit of {max_steps} (policy `{name}`).",
                plural(steps, "step", "steps")
            ),
            json!(saturate(steps)),
            json!({ "stepCountBefore": run.step_count, "stepIndex": step.index, "maxSteps": max_steps }),
        ),
        Hit::Rate {
            in_window,
            max_steps,
            window_seconds,
        } => {
            let end_ms = step.timestamp.timestamp_millis();
            let start = end_ms
                .checked_sub(window_seconds.saturating_mul(1000))
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(rfc3339);
            (
                "maxSteps".into(),
                in_window.to_string(),
                format!("stepsInWindow({window_seconds}s) > {max_steps}"),
                format!(
                    "Run made {} within {}, over the limit of {max_steps} (policy `{name}`).",
                    plural(in_window as i128, "step", "steps"),
                    plural(window_seconds, "second", "seconds")
                ),
                json!(in_window),
                json!({
                    "stepsInWindow": in_window,
                    "windowSeconds": window_seconds,
                    "windowStartExclusive": start,
                    "windowEnd": rfc3339(step.timestamp),
                    "maxSteps": max_steps,
                }),
            )
        }
        Hit::Duration {
            elapsed_ms,
            max_seconds,
        } => (
            "maxSeconds".into(),
            seconds(elapsed_ms),
            format!("elapsedSeconds > {max_seconds}"),
            format!(
                "Run has been running {} seconds, over the limit of {max_seconds} (policy `{name}`).",
                seconds(elapsed_ms)
            ),
            json!(elapsed_ms as f64 / 1000.0),
            json!({
                "startedAt": rfc3339(run.started_at),
                "stepTimestamp": rfc3339(step.timestamp),
                "elapsedMs": saturate(elapsed_ms),
                "maxSeconds": max_seconds,
            }),
        ),
        Hit::Content {
            pattern,
            patterns,
            regexes,
        } => {
            // Everything but the evidence is said without the text, so replay says the same.
            let (violated_rule, evaluated_value, condition) = match patterns {
                [only] => (
                    "patterns[0]".to_string(),
                    format!("content matched pattern `{only}`"),
                    format!("content matches `{only}`"),
                ),
                _ => (
                    "patterns".to_string(),
                    format!("content matched one of {} patterns", patterns.len()),
                    format!("content matches any of {} patterns", patterns.len()),
                ),
            };
            let evidence = match (content, pattern) {
                (ContentScan::Live { text, .. }, Some(i)) => {
                    let sha = shared
                        .content_sha256
                        .get_or_insert_with(|| sha256_hex(text));
                    let found = regexes.get(i).and_then(|r| r.find(text));
                    json!({
                        "pattern": patterns.get(i),
                        "patternIndex": i,
                        "maskedMatch": found.map(|m| mask(m.as_str())),
                        "matchLength": found.map(|m| m.as_str().chars().count()),
                        "matchOffset": found.map(|m| m.start()),
                        "contentSha256": sha.as_str(),
                        "contentBytes": text.len(),
                    })
                }
                _ => json!({
                    "patterns": patterns,
                    "contentAvailable": false,
                    "note": "The step's content is not stored; the match was recorded when the \
                             step was evaluated.",
                }),
            };
            (
                violated_rule,
                evaluated_value,
                condition,
                format!(
                    "Step content matched a forbidden pattern (policy `{name}`); the match is \
                     masked in the evidence."
                ),
                json!(true),
                evidence,
            )
        }
        Hit::Tool => match step.tool_name {
            Some(tool) => (
                "tools".into(),
                format!("tool `{tool}`"),
                format!("toolName `{tool}` not in tools"),
                format!(
                    "Step called tool `{tool}`, which is not on the allowlist (policy `{name}`)."
                ),
                json!(tool),
                json!({ "toolName": tool, "stepType": step.step_type.as_str() }),
            ),
            None => (
                "tools".into(),
                "no tool name".into(),
                "toolName missing".into(),
                format!(
                    "Tool call named no tool, so it cannot be checked against the allowlist \
                         (policy `{name}`)."
                ),
                Value::Null,
                json!({ "toolName": null, "stepType": step.step_type.as_str() }),
            ),
        },
        Hit::Expression { source, result } => {
            let variables = shared
                .variables
                .get_or_insert_with(|| cel::variables_json(run, step))
                .clone();
            match result {
                Ok(()) => (
                    "expression".into(),
                    "true".into(),
                    source.to_string(),
                    format!("Expression `{source}` is true for this step (policy `{name}`)."),
                    json!(true),
                    with_variables(json!({ "expression": source, "result": true }), variables),
                ),
                Err(err) => (
                    "expression".into(),
                    format!("evaluation error: {err}"),
                    source.to_string(),
                    format!(
                        "Expression `{source}` could not be evaluated for this step ({err}); a \
                         policy that cannot be checked counts as violated (policy `{name}`)."
                    ),
                    json!({ "error": err }),
                    with_variables(json!({ "expression": source, "error": err }), variables),
                ),
            }
        }
    };
    Finding {
        policy_id: policy.id.clone(),
        policy_version: policy.version,
        policy_name: policy.name.clone(),
        kind: policy.kind,
        action: policy.action,
        severity: policy.severity,
        violated_rule,
        evaluated_value,
        threshold_condition: condition,
        reason,
        termination_reason: termination_reason_of(policy.kind),
        threshold: policy.rule.clone(),
        observed,
        evidence,
    }
}

/// The decision from the findings.
fn decide(checked: usize, findings: Vec<Finding>, content_matches: Vec<String>) -> Evaluation {
    let policies_checked = i32::try_from(checked).unwrap_or(i32::MAX);
    // Most severe BLOCK finding; `max_by_key` keeps the last of equals, so scan in reverse to
    // keep the first in snapshot order.
    let inflection = findings
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, f)| f.action == PolicyAction::Block)
        .max_by_key(|(_, f)| f.severity)
        .map(|(i, _)| i);
    // The REQUIRE_APPROVAL finding that holds the step, when nothing stops it: chosen as the
    // inflection is.
    let hold = inflection.is_none().then(|| {
        findings
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, f)| f.action == PolicyAction::RequireApproval)
            .max_by_key(|(_, f)| f.severity)
            .map(|(i, _)| i)
    });
    let hold = hold.flatten();
    let warnings = findings
        .iter()
        .filter(|f| f.action == PolicyAction::Warn)
        .count();
    let (action, status, reason) = if let Some(i) = inflection {
        let others: Vec<String> = findings
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| format!("`{}`", f.policy_name))
            .collect();
        let mut reason = findings
            .get(i)
            .map(|f| f.reason.clone())
            .unwrap_or_default();
        if !others.is_empty() {
            reason.push_str(&format!(" Also violated: {}.", others.join(", ")));
        }
        (DecisionAction::Stop, StepStatus::Violation, reason)
    } else if let Some(i) = hold {
        let others: Vec<String> = findings
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| format!("`{}`", f.policy_name))
            .collect();
        let mut reason = findings
            .get(i)
            .map(|f| format!("Held for approval: {}", f.reason))
            .unwrap_or_default();
        if !others.is_empty() {
            reason.push_str(&format!(" Also violated: {}.", others.join(", ")));
        }
        (DecisionAction::Hold, StepStatus::Warning, reason)
    } else if warnings > 0 {
        let reasons: Vec<&str> = findings.iter().map(|f| f.reason.as_str()).collect();
        (
            DecisionAction::Warn,
            StepStatus::Warning,
            format!(
                "Continued with {} ({} checked): {}",
                plural(warnings as i128, "warning", "warnings"),
                plural(policies_checked, "policy", "policies"),
                reasons.join(" ")
            ),
        )
    } else {
        (
            DecisionAction::Continue,
            StepStatus::Ok,
            format!(
                "{} checked; none violated.",
                plural(policies_checked, "policy", "policies")
            ),
        )
    };
    Evaluation {
        action,
        status,
        reason,
        policies_checked,
        findings,
        inflection,
        hold,
        approval: None,
        content_matches,
        shadow_findings: Vec::new(),
    }
}
