//! EXPRESSION policies: CEL programs over two variables, `run` and `step`.
//!
//! A program is parsed once (when the policy is written, and again when its snapshot is
//! compiled), then run once per step against a context built once per step. The step's content
//! is deliberately not a variable: replaying a run must not need the text, which is not stored.
//!
//! What "checked" means here (cel-rust has no static type checker): the expression must parse;
//! every identifier must be `run`, `step`, a comprehension variable or a CEL type name; every
//! `run.x` / `step.x` must name a field that exists; and evaluated once against a sample run and
//! step, it must give a boolean. A missing map key (`run.metadata.team` on a run without that key)
//! is data-dependent, so it is not a reason to refuse the expression.

use crate::time::rfc3339;
use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, OnceLock},
};

use cel::{
    Context, Env, ExecutionError, Program,
    common::{
        ast::{EntryExpr, Expr, IdedEntryExpr, IdedExpr},
        traits::{Container, Indexer, Iterable, Iterator as CelIterator, Sizer},
        types::{
            CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
            Kind, MAP_TYPE, Type,
        },
        value::{CowVal, Val},
    },
    context::VariableResolver,
};
use chrono::{DateTime, Utc};
use governance_entities::enums::StepType;
use serde_json::{Value, json};

use super::{RunState, StepInput};

/// The fields of `run`, as the contract spells them.
pub(crate) const RUN_FIELDS: &[&str] = &[
    "workflowId",
    "agent",
    "tokensUsed",
    "costMicros",
    "stepCount",
    "elapsedSeconds",
    "isSynthetic",
    "metadata",
];

/// The fields of `step`, as the contract spells them.
pub(crate) const STEP_FIELDS: &[&str] = &[
    "index",
    "type",
    "tokens",
    "costMicros",
    "toolName",
    "timestamp",
];

/// Type names an expression may mention (`type(run.agent) == string`).
const TYPE_NAMES: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "dyn",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// Most comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) in one expression. Each
/// can copy what it iterates over, and chained ones can multiply what the next one copies.
const MAX_COMPREHENSIONS: usize = 3;

/// How deep an expression's syntax tree may be. cel-rust evaluates recursively, and a chain of
/// a hundred `+` (which its parser accepts) overflows a 2 MiB thread stack in a debug build: the
/// limit keeps evaluation well inside any worker thread's stack.
const MAX_DEPTH: usize = 24;

/// The standard environment, built once for the process (building it registers every overload).
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib()))
}

/// A parsed and checked CEL program.
pub(crate) struct CelProgram {
    program: Program,
    /// Whether the source mentions `metadata` at all: if no program of a snapshot does, the run's
    /// metadata is not converted for each step.
    pub(crate) uses_metadata: bool,
}

impl fmt::Debug for CelProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CelProgram")
            .field("uses_metadata", &self.uses_metadata)
            .finish_non_exhaustive()
    }
}

/// Parse `source` and check its identifiers and fields. The error is a sentence for the user.
pub(crate) fn parse(source: &str) -> Result<CelProgram, String> {
    let program = compile_with_big_stack(source)?;
    let mut problems = Problems::default();
    walk(
        program.expression(),
        1,
        &mut Vec::new(),
        Scope::Top,
        &mut problems,
    );
    problems.into_result()?;
    Ok(CelProgram {
        program,
        uses_metadata: source.contains("metadata"),
    })
}

/// The stack the parser runs on. The ANTLR-generated parser recurses deeply per nesting level
/// (brackets nested twenty deep overflow a 2 MiB stack in a debug build), so it runs on a thread
/// of its own rather than on the caller's (a request or job worker). Parsing happens when a
/// policy is written and when a snapshot is first compiled, never per step.
const PARSE_STACK_BYTES: usize = 64 << 20;

fn compile_with_big_stack(source: &str) -> Result<Program, String> {
    let owned = source.to_owned();
    let parsed = std::thread::Builder::new()
        .name("cel-parse".into())
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || env().compile(&owned).map_err(|err| err.to_string()))
        .map_err(|err| format!("could not be parsed: no parser thread ({err})"))?
        .join()
        .map_err(|_| "could not be parsed: the parser failed".to_string())?;
    parsed.map_err(|err| format!("is not a valid CEL expression: {err}"))
}

/// Evaluate the program once against a sample run and step: it must give a boolean.
pub(crate) fn check_sample(program: &CelProgram) -> Result<(), String> {
    let metadata = json!({});
    let started_at = DateTime::<Utc>::UNIX_EPOCH;
    let timestamp = started_at + chrono::TimeDelta::seconds(1);
    let run = RunState {
        run_id: "run_sample",
        workflow_id: "sample-workflow",
        agent: Some("sample-agent"),
        started_at,
        tokens_used: 1,
        cost_micros: 1,
        step_count: 1,
        is_synthetic: false,
        metadata: Some(&metadata),
        recent_step_timestamps: &[],
    };
    let step = StepInput {
        index: 1,
        step_type: StepType::ToolCall,
        tokens: 1,
        cost_micros: 1,
        tool_name: Some("sample_tool"),
        content: super::ContentInput::Text(None),
        timestamp,
    };
    let vars = Vars::new(&run, &step, true);
    match program.program.execute(&vars.context()) {
        Ok(cel::Value::Bool(_)) => Ok(()),
        Ok(other) => Err(format!(
            "must evaluate to true or false, but on a sample step it gives a value of type {} \
             ({other:?}); compare it with something, e.g. `run.tokensUsed > 1000`",
            other.type_of()
        )),
        // A missing key is a fact about the data (metadata), not about the expression.
        Err(ExecutionError::NoSuchKey(_)) => Ok(()),
        Err(err) => Err(format!(
            "cannot be evaluated: {err} (checked against a sample run and step)"
        )),
    }
}

/// Run the program: `Ok(true)` when the policy is violated. The error is a sentence.
pub(crate) fn run(program: &CelProgram, context: &Context<'_, '_>) -> Result<bool, String> {
    match program.program.execute(context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "the expression gave a value of type {} instead of true or false",
            other.type_of()
        )),
        Err(err) => Err(err.to_string()),
    }
}

/// The run's counters after applying the step.
pub(crate) struct After {
    pub(crate) tokens_used: i64,
    pub(crate) cost_micros: i64,
    pub(crate) step_count: i64,
    pub(crate) elapsed_seconds: f64,
}

impl After {
    pub(crate) fn of(run: &RunState<'_>, step: &StepInput<'_>) -> After {
        let elapsed_ms =
            step.timestamp.timestamp_millis() as f64 - run.started_at.timestamp_millis() as f64;
        After {
            tokens_used: run.tokens_used.saturating_add(step.tokens),
            cost_micros: run.cost_micros.saturating_add(step.cost_micros),
            step_count: run.step_count.saturating_add(1),
            elapsed_seconds: elapsed_ms / 1000.0,
        }
    }
}

/// The CEL variables of one step: `run` and `step` as two records that lend out their fields
/// without copying, looked up by name through [`VariableResolver`]. Building them is a handful
/// of stores; the standard map type would hash and box every field on every step.
pub(crate) struct Vars<'v> {
    run: Record<'v, 8>,
    step: Record<'v, 6>,
}

impl<'v> Vars<'v> {
    pub(crate) fn new(run: &RunState<'v>, step: &StepInput<'v>, with_metadata: bool) -> Vars<'v> {
        let after = After::of(run, step);
        let metadata = match run.metadata {
            Some(value) if with_metadata => Field::Dyn(json_to_val(value)),
            _ => Field::Null(CelNull),
        };
        Vars {
            run: Record::new(
                RUN_NAMES,
                [
                    Field::Str(run.workflow_id.into()),
                    opt_str(run.agent),
                    Field::Int(after.tokens_used.into()),
                    Field::Int(after.cost_micros.into()),
                    Field::Int(after.step_count.into()),
                    Field::Double(after.elapsed_seconds.into()),
                    Field::Bool(run.is_synthetic.into()),
                    metadata,
                ],
            ),
            step: Record::new(
                STEP_NAMES,
                [
                    Field::Int(step.index.into()),
                    Field::Str(step.step_type.as_str().into()),
                    Field::Int(step.tokens.into()),
                    Field::Int(step.cost_micros.into()),
                    opt_str(step.tool_name),
                    Field::Str(rfc3339(step.timestamp).into()),
                ],
            ),
        }
    }

    /// A context whose `run` and `step` are these.
    pub(crate) fn context(&self) -> Context<'_, '_> {
        let mut context = Context::with_env(Arc::clone(env()));
        context.set_variable_resolver(self);
        context
    }
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "run" => Some(CowVal::Borrowed(&self.run)),
            "step" => Some(CowVal::Borrowed(&self.step)),
            _ => None,
        }
    }
}

const RUN_NAMES: [&str; 8] = [
    "workflowId",
    "agent",
    "tokensUsed",
    "costMicros",
    "stepCount",
    "elapsedSeconds",
    "isSynthetic",
    "metadata",
];

const STEP_NAMES: [&str; 6] = [
    "index",
    "type",
    "tokens",
    "costMicros",
    "toolName",
    "timestamp",
];

fn opt_str(value: Option<&str>) -> Field<'_> {
    match value {
        Some(s) => Field::Str(s.into()),
        None => Field::Null(CelNull),
    }
}

/// A field value, typed so a record needs no boxing for the common ones.
#[derive(Debug, Clone)]
enum Field<'v> {
    Int(CelInt),
    Double(CelDouble),
    Bool(CelBool),
    Str(CelString<'v>),
    Null(CelNull),
    Dyn(Box<dyn Val + 'v>),
}

impl<'v> Field<'v> {
    fn as_val<'b>(&'b self) -> &'b (dyn Val + 'v) {
        match self {
            Field::Int(v) => v,
            Field::Double(v) => v,
            Field::Bool(v) => v,
            Field::Str(v) => v,
            Field::Null(v) => v,
            Field::Dyn(v) => v.as_ref(),
        }
    }
}

/// A CEL `map(string, dyn)` with fixed keys: indexing (`run.tokensUsed`, `run['agent']`),
/// `has()`, `in`, `size()`, comprehensions over the keys and equality behave as for a map.
#[derive(Debug, Clone)]
struct Record<'v, const N: usize> {
    keys: [CelString<'static>; N],
    values: [Field<'v>; N],
}

impl<'v, const N: usize> Record<'v, N> {
    fn new(names: [&'static str; N], values: [Field<'v>; N]) -> Self {
        Record {
            keys: names.map(CelString::from),
            values,
        }
    }

    fn find(&self, key: &dyn Val) -> Option<&(dyn Val + 'v)> {
        let name = key.downcast_ref::<CelString>()?.inner();
        self.keys
            .iter()
            .position(|k| k.inner() == name)
            .and_then(|i| self.values.get(i))
            .map(Field::as_val)
    }
}

/// Whether `key` can be a map key at all (a string, number or bool): looking such a key up in a
/// record is "no such key", anything else is a type error, as for the standard map.
fn is_key_type(key: &dyn Val) -> bool {
    matches!(
        key.get_type().kind(),
        Kind::String | Kind::Int | Kind::UInt | Kind::Double | Kind::Boolean
    )
}

fn key_name(key: &dyn Val) -> String {
    key.downcast_ref::<CelString>()
        .map(|s| s.inner().to_string())
        .unwrap_or_else(|| key.get_type().name().to_string())
}

impl<'v, const N: usize> Val for Record<'v, N> {
    fn get_type(&self) -> &Type {
        <Self as Val>::cel_type()
    }

    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        &MAP_TYPE
    }

    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }

    fn as_indexer<'b, 'w>(&'b self) -> Option<&'b (dyn Indexer + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn into_indexer<'w>(self: Box<Self>) -> Option<Box<dyn Indexer + 'w>>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_iterable<'b, 'w>(&'b self) -> Option<&'b (dyn Iterable + 'w)>
    where
        Self: 'w,
    {
        Some(self)
    }

    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }

    fn equals(&self, other: &dyn Val) -> bool {
        let (Some(sizer), Some(indexer)) = (other.as_sizer(), other.as_indexer()) else {
            return false;
        };
        other.get_type().kind() == Kind::Map
            && usize::try_from(*sizer.size().inner()).ok() == Some(N)
            && self.keys.iter().zip(&self.values).all(|(k, v)| {
                indexer
                    .get(k)
                    .is_ok_and(|theirs| v.as_val().equals(theirs.as_ref()))
            })
    }

    fn clone_as_boxed<'w>(&self) -> Box<dyn Val + 'w>
    where
        Self: 'w,
    {
        Box::new(self.clone())
    }
}

impl<const N: usize> Container for Record<'_, N> {
    fn contains(&self, key: &dyn Val) -> Result<bool, ExecutionError> {
        if self.find(key).is_some() {
            Ok(true)
        } else if is_key_type(key) {
            Ok(false)
        } else {
            Err(ExecutionError::UnexpectedType {
                got: key.get_type().name().to_owned(),
                want: "map key".to_owned(),
            })
        }
    }
}

impl<'v, const N: usize> Indexer for Record<'v, N> {
    fn get<'b, 'w>(&'b self, key: &dyn Val) -> Result<CowVal<'b, 'w>, ExecutionError>
    where
        Self: 'w,
    {
        match self.find(key) {
            Some(v) => Ok(CowVal::Borrowed(v)),
            None if is_key_type(key) => Err(ExecutionError::NoSuchKey(Arc::new(key_name(key)))),
            None => Err(ExecutionError::UnexpectedType {
                got: key.get_type().name().to_owned(),
                want: "map key".to_owned(),
            }),
        }
    }

    fn steal<'w>(self: Box<Self>, key: &dyn Val) -> Result<Box<dyn Val + 'w>, ExecutionError>
    where
        Self: 'w,
    {
        self.get(key).map(CowVal::into_owned)
    }
}

impl<const N: usize> Sizer for Record<'_, N> {
    fn size(&self) -> CelInt {
        CelInt::from(i64::try_from(N).unwrap_or(i64::MAX))
    }
}

impl<'v, const N: usize> Iterable for Record<'v, N> {
    fn iter<'b, 'w>(&'b self) -> Box<dyn CelIterator<'b, 'w> + 'b>
    where
        Self: 'w,
    {
        Box::new(Keys(self.keys.iter()))
    }
}

/// The keys of a record, lent out one by one.
struct Keys<'b>(std::slice::Iter<'b, CelString<'static>>);

impl<'b, 'w> CelIterator<'b, 'w> for Keys<'b> {
    fn next(&mut self) -> Option<&'b (dyn Val + 'w)> {
        self.0.next().map(|k| k as &(dyn Val + 'w))
    }
}

/// The variables as JSON, for the evidence of a violated EXPRESSION policy.
pub(crate) fn variables_json(run: &RunState<'_>, step: &StepInput<'_>) -> Value {
    let after = After::of(run, step);
    json!({
        "run": {
            "workflowId": run.workflow_id,
            "agent": run.agent,
            "tokensUsed": after.tokens_used,
            "costMicros": after.cost_micros,
            "stepCount": after.step_count,
            "elapsedSeconds": after.elapsed_seconds,
            "isSynthetic": run.is_synthetic,
            "metadata": run.metadata,
        },
        "step": {
            "index": step.index,
            "type": step.step_type.as_str(),
            "tokens": step.tokens,
            "costMicros": step.cost_micros,
            "toolName": step.tool_name,
            "timestamp": rfc3339(step.timestamp),
        },
    })
}

/// JSON as a CEL value, borrowing its strings.
fn json_to_val(value: &Value) -> Box<dyn Val + '_> {
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        Value::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// What is wrong with an expression's references, collected in a stable order.
#[derive(Default)]
struct Problems {
    too_deep: bool,
    unknown: BTreeSet<String>,
    fields: BTreeSet<String>,
    /// Shapes whose evaluation cost the run's data could make unbounded.
    unbounded: BTreeSet<String>,
    comprehensions: usize,
    other: BTreeSet<String>,
}

/// Where in an expression a node sits: inside a comprehension's body (its condition, step or
/// result), the work is repeated once per element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Top,
    Loop,
}

impl Problems {
    fn into_result(self) -> Result<(), String> {
        if self.too_deep {
            return Err(format!(
                "is nested too deeply (more than {MAX_DEPTH} levels, each operator of a chain \
                 such as `a + b + c` counting as one); simplify it or split it into several \
                 policies"
            ));
        }
        if !self.unknown.is_empty() {
            let names: Vec<String> = self.unknown.iter().map(|n| format!("`{n}`")).collect();
            return Err(format!(
                "may only use the variables `run` and `step`, but it references {}",
                names.join(", ")
            ));
        }
        if let Some(first) = self.fields.iter().next() {
            return Err(first.clone());
        }
        if let Some(first) = self.unbounded.iter().next() {
            return Err(first.clone());
        }
        if self.comprehensions > MAX_COMPREHENSIONS {
            return Err(format!(
                "uses {} comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`); at most \
                 {MAX_COMPREHENSIONS} are allowed in one expression, so its cost stays bounded \
                 whatever the run's metadata holds: split it into several policies",
                self.comprehensions
            ));
        }
        if let Some(first) = self.other.iter().next() {
            return Err(first.clone());
        }
        Ok(())
    }
}

fn walk(
    expr: &IdedExpr,
    depth: usize,
    bound: &mut Vec<String>,
    scope: Scope,
    problems: &mut Problems,
) {
    if depth > MAX_DEPTH {
        problems.too_deep = true;
        return;
    }
    let next = depth + 1;
    match &expr.expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Call(call) => {
            if call.func_name == "matches" {
                // `x.matches(p)` or `matches(x, p)`: the pattern is the last argument.
                let pattern = call.args.last();
                let literal = pattern.is_some_and(|p| matches!(p.expr, Expr::Literal(_)));
                if !literal {
                    problems.unbounded.insert(
                        "builds the pattern of `matches` from data; the pattern must be a string \
                         literal (a pattern made from run data would be compiled again on every \
                         step, at a cost the data decides)"
                            .to_string(),
                    );
                }
            }
            if let Some(target) = &call.target {
                walk(target, next, bound, scope, problems);
            }
            for arg in &call.args {
                walk(arg, next, bound, scope, problems);
            }
        }
        Expr::Comprehension(comp) => {
            problems.comprehensions += 1;
            if scope == Scope::Loop {
                problems.unbounded.insert(
                    "nests one comprehension (`all`, `exists`, `exists_one`, `map`, `filter`) \
                     inside another; its cost is the product of the two lists' sizes, which run \
                     data can make unbounded: compare against a literal list, or split it into \
                     several policies"
                        .to_string(),
                );
            }
            walk(&comp.iter_range, next, bound, scope, problems);
            walk(&comp.accu_init, next, bound, scope, problems);
            let outer = bound.len();
            bound.push(comp.iter_var.clone());
            if let Some(second) = &comp.iter_var2 {
                bound.push(second.clone());
            }
            bound.push(comp.accu_var.clone());
            walk(&comp.loop_cond, next, bound, Scope::Loop, problems);
            walk(&comp.loop_step, next, bound, Scope::Loop, problems);
            walk(&comp.result, next, bound, Scope::Loop, problems);
            bound.truncate(outer);
        }
        Expr::Ident(name) => {
            let name = name.trim_start_matches('.');
            let is_bound = bound.iter().any(|b| b == name);
            let known = name.starts_with('@')
                || is_bound
                || name == "run"
                || name == "step"
                || TYPE_NAMES.contains(&name);
            if !known {
                problems.unknown.insert(name.to_string());
            }
            // `run.<counter>` inside a loop is handled under Select; anything else reaching
            // `run` from a loop body (`run['metadata']`, `run` itself) copies or scans the
            // metadata once per element.
            if scope == Scope::Loop && !is_bound && name == "run" {
                problems.unbounded.insert(run_in_loop());
            }
        }
        Expr::List(list) => {
            for element in &list.elements {
                walk(element, next, bound, scope, problems);
            }
        }
        Expr::Map(map) => walk_entries(&map.entries, next, bound, scope, problems),
        Expr::Select(select) => {
            if let Expr::Ident(root) = &select.operand.expr {
                let root = root.trim_start_matches('.');
                if !bound.iter().any(|b| b == root) {
                    let fields = match root {
                        "run" => Some(RUN_FIELDS),
                        "step" => Some(STEP_FIELDS),
                        _ => None,
                    };
                    if let Some(fields) = fields
                        && !fields.contains(&select.field.as_str())
                    {
                        problems.fields.insert(format!(
                            "refers to `{root}.{}`, which does not exist; `{root}` has {}",
                            select.field,
                            fields.join(", ")
                        ));
                    }
                    if root == "run" {
                        // A counter of the run is one value, fine anywhere; its metadata is as
                        // large as the caller made it.
                        if scope == Scope::Loop && select.field == "metadata" {
                            problems.unbounded.insert(run_in_loop());
                        }
                        return;
                    }
                }
            }
            walk(&select.operand, next, bound, scope, problems);
        }
        Expr::Struct(s) => {
            problems.other.insert(format!(
                "builds a message `{}{{…}}`; no message types are available here",
                s.type_name
            ));
            walk_entries(&s.entries, next, bound, scope, problems);
        }
    }
}

fn run_in_loop() -> String {
    "reads `run.metadata` inside a comprehension (`all`, `exists`, `exists_one`, `map`, \
     `filter`); that repeats a scan of the whole metadata once per element, at a cost run data \
     can make unbounded: iterate over the metadata list itself and use the comprehension's \
     variable"
        .to_string()
}

fn walk_entries(
    entries: &[IdedEntryExpr],
    depth: usize,
    bound: &mut Vec<String>,
    scope: Scope,
    problems: &mut Problems,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(e) => {
                walk(&e.key, depth, bound, scope, problems);
                walk(&e.value, depth, bound, scope, problems);
            }
            EntryExpr::StructField(f) => walk(&f.value, depth, bound, scope, problems),
        }
    }
}
