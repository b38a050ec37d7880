//! A snapshot compiled for evaluation: every regex, tool set and CEL program built once, and a
//! process-wide cache of compiled snapshots keyed by content hash.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    str::FromStr,
    sync::{Arc, Mutex},
};

use anyhow::anyhow;
use governance_entities::enums::{PolicyAction, PolicyKind, PolicyMode, Severity};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde_json::Value;

use super::{
    cel::{self, CelProgram},
    rules::{self, PATTERN_DFA_SIZE_LIMIT, PATTERN_SIZE_LIMIT, Rule},
};
use crate::error::{CoreError, CoreResult};

/// What one policy checks, in the form evaluation needs.
#[derive(Debug)]
pub(crate) enum Check {
    TokenBudget {
        max_tokens: i64,
    },
    CostBudget {
        max_cost_micros: i64,
    },
    StepLimit {
        max_steps: i64,
    },
    RateLimit {
        max_steps: i64,
        window_seconds: i64,
    },
    DurationLimit {
        max_seconds: i64,
    },
    /// The patterns themselves live in the snapshot's [`ContentIndex`]; these are the policy's
    /// own regexes, used only to find the match for the evidence once the set said it matched.
    ContentRule {
        patterns: Vec<String>,
        regexes: Vec<Regex>,
    },
    ToolAllowlist {
        tools: HashSet<String>,
    },
    Expression {
        source: String,
        program: CelProgram,
    },
}

/// One policy of a compiled snapshot.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub id: String,
    pub version: i32,
    pub name: String,
    pub kind: PolicyKind,
    pub action: PolicyAction,
    pub severity: Severity,
    /// SHADOW: evaluated and recorded, never enforced.
    pub mode: PolicyMode,
    /// The rule as stored in the snapshot: the thresholds in force.
    pub rule: Value,
    /// REQUIRE_APPROVAL: how a held step is decided when nobody decides it.
    pub approval: Option<super::ApprovalTerms>,
    pub(crate) check: Check,
}

/// Every CONTENT_RULE pattern of the snapshot in one set, so a step's content is scanned once
/// whatever the number of content policies.
#[derive(Debug)]
pub(crate) struct ContentIndex {
    pub(crate) set: RegexSet,
    /// For each pattern of the set: the index of its policy in the snapshot, and its index in
    /// that policy's `patterns`.
    pub(crate) owners: Vec<(usize, usize)>,
}

/// A snapshot's policies, compiled once.
#[derive(Debug)]
pub struct CompiledSnapshot {
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) content: Option<ContentIndex>,
    pub(crate) has_expressions: bool,
    pub(crate) uses_metadata: bool,
    max_rate_window_seconds: Option<i64>,
    silent_run_limit_seconds: Option<i64>,
}

fn bad_snapshot(message: String) -> CoreError {
    CoreError::Internal(anyhow!("the policy snapshot cannot be compiled: {message}"))
}

fn text<'a>(entry: &'a Value, key: &str, at: usize) -> CoreResult<&'a str> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad_snapshot(format!("policy #{at} has no string `{key}`")))
}

fn parsed<T: FromStr>(entry: &Value, key: &str, at: usize) -> CoreResult<T>
where
    T::Err: std::fmt::Display,
{
    let raw = text(entry, key, at)?;
    raw.parse()
        .map_err(|err| bad_snapshot(format!("policy #{at} `{key}`: {err}")))
}

/// A policy's mode: snapshots of enforcing policies carry none (their content predates modes).
fn mode_of(entry: &Value, at: usize) -> CoreResult<PolicyMode> {
    match entry.get("mode") {
        None => Ok(PolicyMode::Enforce),
        Some(_) => parsed(entry, "mode", at),
    }
}

/// A stored rule, parsed for its kind, and the approval terms it carries.
fn rule_of(
    id: &str,
    kind: PolicyKind,
    rule: &Value,
) -> CoreResult<(Rule, Option<super::ApprovalTerms>)> {
    let (own_rule, approval) = super::approval_terms::split(rule)
        .map_err(|err| bad_snapshot(format!("policy `{id}` has invalid approval terms: {err}")))?;
    let parsed = rules::parse_rule(kind, &own_rule)
        .map_err(|err| bad_snapshot(format!("policy `{id}` has an invalid {kind} rule: {err}")))?;
    Ok((parsed, approval))
}

/// Whether a DURATION_LIMIT with this mode and action ends a run that reports nothing more: only
/// an enforcing BLOCK does. A WARN, an approval or a shadow policy is for the run's next step.
fn ends_silent_runs(mode: PolicyMode, action: PolicyAction) -> bool {
    mode == PolicyMode::Enforce && action == PolicyAction::Block
}

/// [`CompiledSnapshot::silent_run_limit_seconds`] read from a snapshot's `policies_json` without
/// compiling its other rules: a run's deadline is set from it when the run starts.
pub fn silent_run_limit_seconds(policies_json: &str) -> CoreResult<Option<i64>> {
    let entries: Vec<Value> = serde_json::from_str(policies_json)
        .map_err(|err| bad_snapshot(format!("policies_json is not a JSON array: {err}")))?;
    let mut smallest: Option<i64> = None;
    for (at, entry) in entries.iter().enumerate() {
        let kind: PolicyKind = parsed(entry, "kind", at)?;
        if kind != PolicyKind::DurationLimit
            || !ends_silent_runs(mode_of(entry, at)?, parsed(entry, "action", at)?)
        {
            continue;
        }
        let id = text(entry, "id", at)?;
        let rule = entry.get("rule").cloned().unwrap_or(Value::Null);
        if let (Rule::DurationLimit { max_seconds }, _) = rule_of(id, kind, &rule)? {
            smallest = Some(smallest.map_or(max_seconds, |s| s.min(max_seconds)));
        }
    }
    Ok(smallest)
}

impl CompiledSnapshot {
    /// Compile a snapshot's `policies_json` (the canonical array written by
    /// [`crate::snapshot::compose`]). A rule that no longer validates is an internal error: every
    /// rule was validated when it was written, so the stored snapshot is damaged.
    pub fn compile(policies_json: &str) -> CoreResult<CompiledSnapshot> {
        let entries: Vec<Value> = serde_json::from_str(policies_json)
            .map_err(|err| bad_snapshot(format!("policies_json is not a JSON array: {err}")))?;
        let mut policies = Vec::with_capacity(entries.len());
        let mut all_patterns: Vec<String> = Vec::new();
        let mut owners = Vec::new();
        for (at, entry) in entries.iter().enumerate() {
            let id = text(entry, "id", at)?.to_string();
            let version = entry
                .get("version")
                .and_then(Value::as_i64)
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| bad_snapshot(format!("policy `{id}` has no integer `version`")))?;
            let name = text(entry, "name", at)?.to_string();
            let kind: PolicyKind = parsed(entry, "kind", at)?;
            let action: PolicyAction = parsed(entry, "action", at)?;
            let severity: Severity = parsed(entry, "severity", at)?;
            let mode = mode_of(entry, at)?;
            let rule = entry.get("rule").cloned().unwrap_or(Value::Null);
            let (parsed_rule, approval) = rule_of(&id, kind, &rule)?;
            let approval = match action {
                PolicyAction::RequireApproval => Some(approval.unwrap_or_default()),
                _ => None,
            };
            let check = match parsed_rule {
                Rule::TokenBudget { max_tokens } => Check::TokenBudget { max_tokens },
                Rule::CostBudget { max_cost_micros } => Check::CostBudget { max_cost_micros },
                Rule::StepLimit { max_steps } => Check::StepLimit { max_steps },
                Rule::RateLimit {
                    max_steps,
                    window_seconds,
                } => Check::RateLimit {
                    max_steps,
                    window_seconds,
                },
                Rule::DurationLimit { max_seconds } => Check::DurationLimit { max_seconds },
                Rule::Content { patterns } => {
                    let regexes = patterns
                        .iter()
                        .map(|p| rules::compile_pattern(p))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|err| bad_snapshot(format!("policy `{id}`: pattern {err}")))?;
                    for (i, pattern) in patterns.iter().enumerate() {
                        all_patterns.push(pattern.clone());
                        owners.push((at, i));
                    }
                    Check::ContentRule { patterns, regexes }
                }
                Rule::ToolAllowlist { tools } => Check::ToolAllowlist {
                    tools: tools.into_iter().collect(),
                },
                Rule::Expression { expression } => {
                    let program = cel::parse(&expression)
                        .map_err(|err| bad_snapshot(format!("policy `{id}`: expression {err}")))?;
                    Check::Expression {
                        source: expression,
                        program,
                    }
                }
            };
            policies.push(CompiledPolicy {
                id,
                version,
                name,
                kind,
                action,
                severity,
                mode,
                rule,
                approval,
                check,
            });
        }
        let content = if all_patterns.is_empty() {
            None
        } else {
            let n = all_patterns.len();
            let set = RegexSetBuilder::new(&all_patterns)
                .size_limit(PATTERN_SIZE_LIMIT.saturating_mul(n))
                .dfa_size_limit(PATTERN_DFA_SIZE_LIMIT.saturating_mul(n))
                .build()
                .map_err(|err| bad_snapshot(format!("content patterns: {err}")))?;
            Some(ContentIndex { set, owners })
        };
        let has_expressions = policies
            .iter()
            .any(|p| matches!(p.check, Check::Expression { .. }));
        let uses_metadata = policies.iter().any(|p| match &p.check {
            Check::Expression { program, .. } => program.uses_metadata,
            _ => false,
        });
        let max_rate_window_seconds = policies
            .iter()
            .filter_map(|p| match p.check {
                Check::RateLimit { window_seconds, .. } => Some(window_seconds),
                _ => None,
            })
            .max();
        let silent_run_limit_seconds = policies
            .iter()
            .filter(|p| ends_silent_runs(p.mode, p.action))
            .filter_map(|p| match p.check {
                Check::DurationLimit { max_seconds } => Some(max_seconds),
                _ => None,
            })
            .min();
        Ok(CompiledSnapshot {
            policies,
            content,
            has_expressions,
            uses_metadata,
            max_rate_window_seconds,
            silent_run_limit_seconds,
        })
    }

    /// The policies, in snapshot order (sorted by id).
    pub fn policies(&self) -> &[CompiledPolicy] {
        &self.policies
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether any policy is an EXPRESSION (whose evaluation cost depends on run data).
    pub fn has_expressions(&self) -> bool {
        self.has_expressions
    }

    /// The longest RATE_LIMIT window in seconds, if the snapshot has a rate limit: the caller
    /// loads the timestamps of the run's earlier steps within that window.
    pub fn max_rate_window_seconds(&self) -> Option<i64> {
        self.max_rate_window_seconds
    }

    /// The smallest `maxSeconds` of the DURATION_LIMITs that end a silent run (see
    /// [`ends_silent_runs`]), if any: the sweeper stops a run that reports nothing past it.
    pub fn silent_run_limit_seconds(&self) -> Option<i64> {
        self.silent_run_limit_seconds
    }
}

/// How many compiled snapshots the cache keeps.
const CACHE_CAPACITY: usize = 256;

#[derive(Default)]
struct CacheInner {
    map: HashMap<String, Arc<CompiledSnapshot>>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
    /// (tenant, snapshot id) → content hash. Snapshot rows are immutable (a trigger refuses
    /// changes), so an id once read never names other content.
    ids: HashMap<(String, String), String>,
}

/// Bound on remembered snapshot ids (cleared when exceeded; they are re-read on a miss).
const ID_CAPACITY: usize = 16 * 1024;

/// Compiled snapshots by content hash. Cheap to clone (the clones share one cache); bounded to
/// 256 snapshots, evicting the oldest inserted.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    inner: Arc<Mutex<CacheInner>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache").finish_non_exhaustive()
    }
}

impl SnapshotCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled snapshot of `content_hash`, compiling `policies_json` on a miss. The same
    /// hash gives the same `Arc` for as long as it stays cached.
    pub fn get_or_compile(
        &self,
        content_hash: &str,
        policies_json: &str,
    ) -> CoreResult<Arc<CompiledSnapshot>> {
        if let Some(hit) = self.lock().map.get(content_hash) {
            return Ok(Arc::clone(hit));
        }
        // Compile outside the lock: other snapshots stay available meanwhile.
        let compiled = Arc::new(CompiledSnapshot::compile(policies_json)?);
        let mut inner = self.lock();
        if let Some(raced) = inner.map.get(content_hash) {
            return Ok(Arc::clone(raced));
        }
        while inner.map.len() >= CACHE_CAPACITY {
            match inner.order.pop_front() {
                Some(oldest) => {
                    inner.map.remove(&oldest);
                }
                None => break,
            }
        }
        inner
            .map
            .insert(content_hash.to_string(), Arc::clone(&compiled));
        inner.order.push_back(content_hash.to_string());
        Ok(compiled)
    }

    /// The compiled snapshot `snapshot_id` of `tenant_id`, if it was seen and is still cached.
    pub fn get_by_id(&self, tenant_id: &str, snapshot_id: &str) -> Option<Arc<CompiledSnapshot>> {
        let inner = self.lock();
        let hash = inner
            .ids
            .get(&(tenant_id.to_string(), snapshot_id.to_string()))?;
        inner.map.get(hash).cloned()
    }

    /// Remember that snapshot `snapshot_id` of `tenant_id` has `content_hash`.
    pub fn remember_id(&self, tenant_id: &str, snapshot_id: &str, content_hash: &str) {
        let mut inner = self.lock();
        if inner.ids.len() >= ID_CAPACITY {
            inner.ids.clear();
        }
        inner.ids.insert(
            (tenant_id.to_string(), snapshot_id.to_string()),
            content_hash.to_string(),
        );
    }

    /// How many snapshots are cached.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (entries are immutable), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
