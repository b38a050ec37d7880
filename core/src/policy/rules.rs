//! The rule of each policy kind: its keys, their types and bounds, parsed once into [`Rule`].
//!
//! The same parser serves two callers: [`validate_rule`](super::validate_rule) when a policy is
//! written (errors name the field, `input.rule.<key>`, and say what to send instead), and
//! [`CompiledSnapshot::compile`](super::CompiledSnapshot::compile) when a stored snapshot is
//! compiled, so a rule the service accepted is a rule it can evaluate.

use governance_entities::enums::PolicyKind;
use regex::RegexBuilder;
use serde_json::{Map, Value, json};

use crate::error::{CoreError, CoreResult};

/// The compiled size one content pattern may take (the `regex` crate's `size_limit`), so a
/// hostile pattern such as `(\w{100}){100}` is refused instead of taking the memory it asks for.
pub(crate) const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// The lazy DFA cache one content pattern may use while matching.
pub(crate) const PATTERN_DFA_SIZE_LIMIT: usize = 1 << 20;
/// At most this many patterns per CONTENT_RULE.
pub(crate) const MAX_PATTERNS: usize = 64;
/// At most this many characters per pattern.
pub(crate) const MAX_PATTERN_CHARS: usize = 2_000;
/// At most this many tools per TOOL_ALLOWLIST.
pub(crate) const MAX_TOOLS: usize = 1_000;
/// At most this many characters per CEL expression.
pub(crate) const MAX_EXPRESSION_CHARS: usize = 4_000;

/// A rule, parsed and checked for its kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    TokenBudget { max_tokens: i64 },
    CostBudget { max_cost_micros: i64 },
    StepLimit { max_steps: i64 },
    RateLimit { max_steps: i64, window_seconds: i64 },
    DurationLimit { max_seconds: i64 },
    Content { patterns: Vec<String> },
    ToolAllowlist { tools: Vec<String> },
    Expression { expression: String },
}

impl Rule {
    /// The rule as JSON, keys spelled as the contract spells them.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Rule::TokenBudget { max_tokens } => json!({ "maxTokens": max_tokens }),
            Rule::CostBudget { max_cost_micros } => json!({ "maxCostMicros": max_cost_micros }),
            Rule::StepLimit { max_steps } => json!({ "maxSteps": max_steps }),
            Rule::RateLimit {
                max_steps,
                window_seconds,
            } => json!({ "maxSteps": max_steps, "windowSeconds": window_seconds }),
            Rule::DurationLimit { max_seconds } => json!({ "maxSeconds": max_seconds }),
            Rule::Content { patterns } => json!({ "patterns": patterns }),
            Rule::ToolAllowlist { tools } => json!({ "tools": tools }),
            Rule::Expression { expression } => json!({ "expression": expression }),
        }
    }
}

/// The keys each kind takes, in the order they are listed in messages.
pub(crate) fn keys_of(kind: PolicyKind) -> &'static [&'static str] {
    match kind {
        PolicyKind::TokenBudget => &["maxTokens"],
        PolicyKind::CostBudget => &["maxCostMicros"],
        PolicyKind::StepLimit => &["maxSteps"],
        PolicyKind::RateLimit => &["maxSteps", "windowSeconds"],
        PolicyKind::DurationLimit => &["maxSeconds"],
        PolicyKind::ContentRule => &["patterns"],
        PolicyKind::ToolAllowlist => &["tools"],
        PolicyKind::Expression => &["expression"],
    }
}

/// An example rule of the kind, quoted in messages.
fn example_of(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::TokenBudget => r#"{"maxTokens": 100000}"#,
        PolicyKind::CostBudget => r#"{"maxCostMicros": 5000000}"#,
        PolicyKind::StepLimit => r#"{"maxSteps": 50}"#,
        PolicyKind::RateLimit => r#"{"maxSteps": 10, "windowSeconds": 60}"#,
        PolicyKind::DurationLimit => r#"{"maxSeconds": 600}"#,
        PolicyKind::ContentRule => r#"{"patterns": ["sk-[A-Za-z0-9]{20,}"]}"#,
        PolicyKind::ToolAllowlist => r#"{"tools": ["search", "read_file"]}"#,
        PolicyKind::Expression => {
            r#"{"expression": "run.tokensUsed > 1000 && step.type == 'TOOL_CALL'"}"#
        }
    }
}

fn field(key: &str) -> String {
    format!("input.rule.{key}")
}

/// "maxTokens" / "maxSteps and windowSeconds".
fn list_keys(keys: &[&str]) -> String {
    match keys {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A short description of a JSON value's type, for "got …" in messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string \"{s}\""),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Parse and check `rule` for `kind`; each regex is compiled (with the size limits) to check it.
/// A CEL expression is only checked for being a non-empty string here: `cel.rs` does the rest.
pub(crate) fn parse_rule(kind: PolicyKind, rule: &Value) -> CoreResult<Rule> {
    let Value::Object(map) = rule else {
        return Err(CoreError::bad_field(
            "input.rule",
            format!(
                "must be a JSON object; got {}. A {kind} rule looks like {}",
                describe(rule),
                example_of(kind)
            ),
        ));
    };
    let keys = keys_of(kind);
    // Unknown keys first, in sorted order, so the message does not depend on map order.
    let mut unknown: Vec<&String> = map.keys().filter(|k| !keys.contains(&k.as_str())).collect();
    unknown.sort();
    if let Some(key) = unknown.first() {
        return Err(CoreError::bad_field(
            field(key),
            format!(
                "unknown key; {kind} takes {} (e.g. {})",
                list_keys(keys),
                example_of(kind)
            ),
        ));
    }
    Ok(match kind {
        PolicyKind::TokenBudget => Rule::TokenBudget {
            max_tokens: int(map, kind, "maxTokens", 0)?,
        },
        PolicyKind::CostBudget => Rule::CostBudget {
            max_cost_micros: int(map, kind, "maxCostMicros", 0)?,
        },
        PolicyKind::StepLimit => Rule::StepLimit {
            max_steps: int(map, kind, "maxSteps", 0)?,
        },
        PolicyKind::RateLimit => Rule::RateLimit {
            max_steps: int(map, kind, "maxSteps", 1)?,
            window_seconds: int(map, kind, "windowSeconds", 1)?,
        },
        PolicyKind::DurationLimit => Rule::DurationLimit {
            max_seconds: int(map, kind, "maxSeconds", 1)?,
        },
        PolicyKind::ContentRule => Rule::Content {
            patterns: patterns(map, kind)?,
        },
        PolicyKind::ToolAllowlist => Rule::ToolAllowlist {
            tools: tools(map, kind)?,
        },
        PolicyKind::Expression => Rule::Expression {
            expression: expression(map, kind)?,
        },
    })
}

fn required<'m>(map: &'m Map<String, Value>, kind: PolicyKind, key: &str) -> CoreResult<&'m Value> {
    map.get(key).ok_or_else(|| {
        CoreError::bad_field(
            field(key),
            format!(
                "required: a {kind} rule needs {} (e.g. {})",
                list_keys(keys_of(kind)),
                example_of(kind)
            ),
        )
    })
}

/// An integer ≥ `min`. Floats (even `1.0`), strings and numbers beyond i64 are refused.
fn int(map: &Map<String, Value>, kind: PolicyKind, key: &str, min: i64) -> CoreResult<i64> {
    let value = required(map, kind, key)?;
    let bad = |what: String| CoreError::bad_field(field(key), what);
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(v) if v >= min => Ok(v),
            Some(v) => Err(bad(format!("must be an integer ≥ {min}; got {v}"))),
            None if n.is_u64() => Err(bad(format!(
                "must be an integer ≥ {min} and at most {}; got {n}",
                i64::MAX
            ))),
            None => Err(bad(format!(
                "must be a whole number (an integer ≥ {min}, without a decimal point); got {n}"
            ))),
        },
        other => Err(bad(format!(
            "must be an integer ≥ {min}; got {}",
            describe(other)
        ))),
    }
}

fn patterns(map: &Map<String, Value>, kind: PolicyKind) -> CoreResult<Vec<String>> {
    let value = required(map, kind, "patterns")?;
    let Value::Array(items) = value else {
        return Err(CoreError::bad_field(
            field("patterns"),
            format!(
                "must be an array of regular expressions (strings); got {}",
                describe(value)
            ),
        ));
    };
    if items.is_empty() {
        return Err(CoreError::bad_field(
            field("patterns"),
            "must list at least one regular expression, e.g. [\"sk-[A-Za-z0-9]{20,}\"]",
        ));
    }
    if items.len() > MAX_PATTERNS {
        return Err(CoreError::bad_field(
            field("patterns"),
            format!(
                "lists {} patterns; at most {MAX_PATTERNS} are allowed (combine them with `|`, or split the policy)",
                items.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("input.rule.patterns[{i}]");
        let Value::String(pattern) = item else {
            return Err(CoreError::bad_field(
                at,
                format!(
                    "must be a regular expression (a string); got {}",
                    describe(item)
                ),
            ));
        };
        if pattern.is_empty() {
            return Err(CoreError::bad_field(
                at,
                "must not be empty: an empty pattern matches every step",
            ));
        }
        if pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(CoreError::bad_field(
                at,
                format!("is longer than {MAX_PATTERN_CHARS} characters; shorten it"),
            ));
        }
        compile_pattern(pattern).map_err(|err| CoreError::bad_field(at, err))?;
        out.push(pattern.clone());
    }
    Ok(out)
}

/// Compile one content pattern with the size limits; the error is the regex crate's message.
pub(crate) fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_DFA_SIZE_LIMIT)
        .build()
        .map_err(|err| match err {
            regex::Error::CompiledTooBig(limit) => format!(
                "is not a usable regular expression: it compiles to more than {limit} bytes; \
                 simplify it (smaller repetition counts, fewer alternatives)"
            ),
            other => format!("is not a valid regular expression: {other}"),
        })
}

fn tools(map: &Map<String, Value>, kind: PolicyKind) -> CoreResult<Vec<String>> {
    let value = required(map, kind, "tools")?;
    let Value::Array(items) = value else {
        return Err(CoreError::bad_field(
            field("tools"),
            format!(
                "must be an array of tool names (strings); got {}",
                describe(value)
            ),
        ));
    };
    if items.is_empty() {
        return Err(CoreError::bad_field(
            field("tools"),
            "must list at least one tool name, e.g. [\"search\"]; to forbid every tool use an \
             EXPRESSION policy such as `step.type == 'TOOL_CALL'`",
        ));
    }
    if items.len() > MAX_TOOLS {
        return Err(CoreError::bad_field(
            field("tools"),
            format!(
                "lists {} tools; at most {MAX_TOOLS} are allowed",
                items.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("input.rule.tools[{i}]");
        match item {
            Value::String(tool) if !tool.trim().is_empty() => out.push(tool.clone()),
            Value::String(_) => {
                return Err(CoreError::bad_field(
                    at,
                    "must be a tool name, not an empty string",
                ));
            }
            other => {
                return Err(CoreError::bad_field(
                    at,
                    format!("must be a tool name (a string); got {}", describe(other)),
                ));
            }
        }
    }
    Ok(out)
}

fn expression(map: &Map<String, Value>, kind: PolicyKind) -> CoreResult<String> {
    let value = required(map, kind, "expression")?;
    match value {
        Value::String(s) if s.trim().is_empty() => Err(CoreError::bad_field(
            field("expression"),
            format!(
                "must not be empty: write a CEL condition over `run` and `step` that is true when \
                 the step should be flagged, e.g. {}",
                example_of(kind)
            ),
        )),
        Value::String(s) if s.chars().count() > MAX_EXPRESSION_CHARS => Err(CoreError::bad_field(
            field("expression"),
            format!("is longer than {MAX_EXPRESSION_CHARS} characters; shorten it"),
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(CoreError::bad_field(
            field("expression"),
            format!(
                "must be a CEL expression (a string); got {}",
                describe(other)
            ),
        )),
    }
}

/// The rule's shape: its keys, sorted. A change of shape is a MAJOR policy-set change.
pub fn rule_shape(rule: &Value) -> Vec<String> {
    let mut keys: Vec<String> = match rule {
        // A REQUIRE_APPROVAL policy's terms are not part of what it checks.
        Value::Object(map) => map
            .keys()
            .filter(|k| k.as_str() != super::approval_terms::KEY)
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    keys.sort();
    keys
}
