//! The kill switch. `halt` stops every running run of a scope (a workflow, an agent, both, or
//! the whole tenant) now, through the same terminal transition as `cancelRun` (`CANCELLED`,
//! `USER_ABORT`, its event and its evaluation record), with an `ABORTED` enforcement naming the
//! halt on each; and while the halt stands, `startRun` in its scope is refused (`CONFLICT`).
//! `resume` lifts it. Halts and resumptions are append-only records, each sent as an event
//! (`RUNS_HALTED`, `RUNS_RESUMED`).
//!
//! A halt and a run start cannot cross: both lock the tenant's row (a start shares it, a halt
//! takes it alone), so a run either started before the halt (and is stopped by it) or after
//! (and is refused). On SQLite the single writer already orders them.

use governance_entities::{
    enums::{EnforcementAction, RunStatus},
    halt, halt_resumption, policy_enforcement, run, tenant,
};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Select, Set, Statement,
    sea_query::{Expr, ExprTrait, SimpleExpr},
};
use serde_json::json;

use crate::{
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    ids::{new_id, prefix},
    outcome::Committed,
    runs,
    store::Store,
    time::now,
};

const MAX_REASON: usize = 2000;
const MAX_SCOPE: usize = 200;

/// Which runs a halt covers: those of `workflow_id` and/or `agent`; neither is the whole tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaltScope {
    pub workflow_id: Option<String>,
    pub agent: Option<String>,
}

impl HaltScope {
    fn normalized(self) -> CoreResult<Self> {
        let field = |name: &str, value: Option<String>| -> CoreResult<Option<String>> {
            match value.map(|v| v.trim().to_string()) {
                Some(v) if v.is_empty() => Err(CoreError::bad_field(
                    format!("scope.{name}"),
                    format!("`{name}` is empty: leave it out to halt every {name}"),
                )),
                Some(v) if v.chars().count() > MAX_SCOPE => Err(CoreError::bad_field(
                    format!("scope.{name}"),
                    format!("`{name}` is longer than {MAX_SCOPE} characters"),
                )),
                other => Ok(other),
            }
        };
        Ok(Self {
            workflow_id: field("workflowId", self.workflow_id)?,
            agent: field("agent", self.agent)?,
        })
    }

    /// Does the scope cover a run of `workflow_id` by `agent`?
    pub fn covers(&self, workflow_id: &str, agent: Option<&str>) -> bool {
        self.workflow_id.as_deref().is_none_or(|w| w == workflow_id)
            && self.agent.as_deref().is_none_or(|a| Some(a) == agent)
    }

    fn describe(&self) -> String {
        match (&self.workflow_id, &self.agent) {
            (None, None) => "every run of the tenant".to_string(),
            (Some(w), None) => format!("runs of workflow `{w}`"),
            (None, Some(a)) => format!("runs of agent `{a}`"),
            (Some(w), Some(a)) => format!("runs of workflow `{w}` by agent `{a}`"),
        }
    }
}

/// A halt and, once lifted, its resumption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    pub halt: halt::Model,
    pub resumption: Option<halt_resumption::Model>,
}

impl Halt {
    pub fn scope(&self) -> HaltScope {
        HaltScope {
            workflow_id: self.halt.workflow_id.clone(),
            agent: self.halt.agent.clone(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.resumption.is_none()
    }
}

fn halt_event(kind: EventKind, halt: &Halt) -> NewEvent {
    NewEvent {
        kind,
        subject_id: halt.halt.id.clone(),
        run_id: None,
        severity_rank: None,
        payload: json!({
            "haltId": halt.halt.id,
            "workflowId": halt.halt.workflow_id,
            "agent": halt.halt.agent,
            "reason": halt.halt.reason,
            "runsStopped": halt.halt.runs_stopped,
            "haltedBy": halt.halt.halted_by,
            "resumedBy": halt.resumption.as_ref().map(|r| r.resumed_by.clone()),
            "resumedAt": halt.resumption.as_ref().map(|r| r.resumed_at),
        }),
    }
}

/// Lock the tenant's row: `exclusive` for a halt, shared for a run start (PostgreSQL; SQLite's
/// single writer already orders them).
pub(crate) async fn lock_tenant<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    exclusive: bool,
) -> CoreResult<()> {
    if let Some(lock) = lock_tenant_statement(conn.get_database_backend(), tenant_id, exclusive) {
        conn.query_all_raw(lock).await?;
    }
    Ok(())
}

/// [`lock_tenant`] as a statement, for a transaction sent as statements; `None` on SQLite.
pub(crate) fn lock_tenant_statement(
    backend: DbBackend,
    tenant_id: &str,
    exclusive: bool,
) -> Option<Statement> {
    if backend != DbBackend::Postgres {
        return None;
    }
    let query = tenant::Entity::find_by_id(tenant_id.to_string());
    let query = if exclusive {
        query.lock_exclusive()
    } else {
        query.lock_shared()
    };
    Some(query.build(backend))
}

/// Stop every running run in `scope` now and refuse new ones until the halt is resumed: one
/// transaction for the halt, every stop, their enforcements and events.
pub async fn halt(
    store: &Store,
    tenant_id: &str,
    key_id: &str,
    scope: HaltScope,
    reason: &str,
) -> CoreResult<Committed<Halt>> {
    let scope = scope.normalized()?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(CoreError::bad_field(
            "reason",
            "a halt needs a reason (it is recorded and shown on every stopped run)",
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(CoreError::bad_field(
            "reason",
            format!("the reason is longer than {MAX_REASON} characters"),
        ));
    }
    let txn = store.begin().await?;
    let conn = &*txn;
    lock_tenant(conn, tenant_id, true).await?;
    let id = new_id(prefix::HALT);
    let mut query = run::Entity::find()
        .filter(run::Column::TenantId.eq(tenant_id))
        .filter(run::Column::Status.is_in([RunStatus::Running, RunStatus::AwaitingApproval]));
    if let Some(workflow) = &scope.workflow_id {
        query = query.filter(run::Column::WorkflowId.eq(workflow.as_str()));
    }
    if let Some(agent) = &scope.agent {
        query = query.filter(run::Column::Agent.eq(agent.as_str()));
    }
    if conn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let running = query.order_by_asc(run::Column::Id).all(conn).await?;
    let at = now();
    let detail = format!("halted by {id}: {reason}");
    let mut committed_runs = Vec::with_capacity(running.len());
    for run in running {
        policy_enforcement::ActiveModel {
            id: Set(new_id(prefix::ENFORCEMENT)),
            tenant_id: Set(tenant_id.to_string()),
            policy_id: Set(None),
            run_id: Set(run.id.clone()),
            step_index: Set(None),
            action_taken: Set(EnforcementAction::Aborted),
            details: Set(json!({
                "reason": "halted",
                "haltId": id,
                "haltReason": reason,
                "stepsRecorded": run.step_count,
            })),
            created_at: Set(at),
        }
        .insert(conn)
        .await?;
        committed_runs.push(runs::abort_in(conn, run, detail.clone()).await?);
    }
    let model = halt::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id.to_string()),
        workflow_id: Set(scope.workflow_id.clone()),
        agent: Set(scope.agent.clone()),
        reason: Set(reason.to_string()),
        halted_by: Set(key_id.to_string()),
        runs_stopped: Set(committed_runs.len() as i64),
        created_at: Set(at),
    }
    .insert(conn)
    .await?;
    let halt = Halt {
        halt: model,
        resumption: None,
    };
    let event = events::append(conn, tenant_id, halt_event(EventKind::RunsHalted, &halt)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(halt);
    for run in committed_runs {
        committed.events.extend(run.events);
        committed.follow_ups.extend(run.follow_ups);
    }
    committed.events.push(event);
    Ok(committed)
}

/// Lift a halt: runs in its scope may start again. A halt is resumed once (`CONFLICT` after).
pub async fn resume(
    store: &Store,
    tenant_id: &str,
    key_id: &str,
    halt_id: &str,
) -> CoreResult<Committed<Halt>> {
    let txn = store.begin().await?;
    let conn = &*txn;
    lock_tenant(conn, tenant_id, true).await?;
    let found = get(conn, tenant_id, halt_id).await?;
    if let Some(resumption) = &found.resumption {
        return Err(CoreError::Conflict(format!(
            "halt `{halt_id}` was already resumed at {} by {}",
            resumption.resumed_at.to_rfc3339(),
            resumption.resumed_by
        )));
    }
    let resumption = halt_resumption::ActiveModel {
        halt_id: Set(halt_id.to_string()),
        tenant_id: Set(tenant_id.to_string()),
        resumed_by: Set(key_id.to_string()),
        resumed_at: Set(now()),
    }
    .insert(conn)
    .await?;
    let halt = Halt {
        halt: found.halt,
        resumption: Some(resumption),
    };
    let event = events::append(conn, tenant_id, halt_event(EventKind::RunsResumed, &halt)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(halt);
    committed.events.push(event);
    Ok(committed)
}

/// One halt of the tenant.
pub async fn get<C: ConnectionTrait>(conn: &C, tenant_id: &str, id: &str) -> CoreResult<Halt> {
    let halt = halt::Entity::find_by_id(id.to_string())
        .filter(halt::Column::TenantId.eq(tenant_id))
        .one(conn)
        .await?
        .ok_or_else(|| CoreError::not_found("Halt", id))?;
    let resumption = halt_resumption::Entity::find_by_id(id.to_string())
        .one(conn)
        .await?;
    Ok(Halt { halt, resumption })
}

/// The tenant's halts, newest first: all of them, or only those still standing; at most
/// `limit`.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    active_only: bool,
    limit: u64,
) -> CoreResult<Vec<Halt>> {
    let query = halt::Entity::find().filter(halt::Column::TenantId.eq(tenant_id));
    let mut out = Vec::new();
    let mut offset = 0;
    // Read in pages until `limit` halts pass the filter (resumed ones are skipped when asked).
    loop {
        let page = query
            .clone()
            .order_by_desc(halt::Column::CreatedAt)
            .order_by_desc(halt::Column::Id)
            .offset(offset)
            .limit(200)
            .all(conn)
            .await?;
        if page.is_empty() {
            break;
        }
        offset += page.len() as u64;
        let ids: Vec<String> = page.iter().map(|h| h.id.clone()).collect();
        let resumptions = halt_resumption::Entity::find()
            .filter(halt_resumption::Column::HaltId.is_in(ids))
            .all(conn)
            .await?;
        for halt in page {
            let resumption = resumptions.iter().find(|r| r.halt_id == halt.id).cloned();
            if active_only && resumption.is_some() {
                continue;
            }
            out.push(Halt { halt, resumption });
            if out.len() as u64 >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Refuse a run start in the scope of a standing halt (`CONFLICT`, naming the halt and how to
/// lift it). Called in the start's transaction, after [`lock_tenant`] shared.
pub async fn refuse_start_if_halted<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    workflow_id: &str,
    agent: Option<&str>,
) -> CoreResult<()> {
    lock_tenant(conn, tenant_id, false).await?;
    refuse_start_under(standing_halt(conn, tenant_id, workflow_id, agent).await?)
}

/// The earliest halt standing over a run of `workflow_id` by `agent`, if any.
pub(crate) async fn standing_halt<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    workflow_id: &str,
    agent: Option<&str>,
) -> CoreResult<Option<halt::Model>> {
    Ok(standing_halts(tenant_id, workflow_id, agent)
        .order_by_asc(halt::Column::CreatedAt)
        .one(conn)
        .await?)
}

/// `NOT EXISTS` a halt standing over a run of `workflow_id` by `agent`: the guard of a start
/// planned before its transaction, so a halt committed meanwhile still refuses it.
pub(crate) fn no_standing_halt(
    tenant_id: &str,
    workflow_id: &str,
    agent: Option<&str>,
) -> SimpleExpr {
    Expr::exists(
        standing_halts(tenant_id, workflow_id, agent)
            .select_only()
            .expr(Expr::val(1))
            .into_query(),
    )
    .not()
}

/// The halts not resumed whose scope covers runs of `workflow_id` by `agent`.
fn standing_halts(tenant_id: &str, workflow_id: &str, agent: Option<&str>) -> Select<halt::Entity> {
    let agent_matches = match agent {
        Some(agent) => Condition::any()
            .add(halt::Column::Agent.is_null())
            .add(halt::Column::Agent.eq(agent)),
        None => Condition::all().add(halt::Column::Agent.is_null()),
    };
    halt::Entity::find()
        .filter(halt::Column::TenantId.eq(tenant_id))
        .filter(
            Condition::any()
                .add(halt::Column::WorkflowId.is_null())
                .add(halt::Column::WorkflowId.eq(workflow_id)),
        )
        .filter(agent_matches)
        .filter(
            halt::Column::Id.not_in_subquery(
                sea_orm::sea_query::Query::select()
                    .column(halt_resumption::Column::HaltId)
                    .from(halt_resumption::Entity)
                    .and_where(halt_resumption::Column::TenantId.eq(tenant_id))
                    .to_owned(),
            ),
        )
}

/// `CONFLICT` naming `standing` and how to lift it; nothing when no halt stands.
pub(crate) fn refuse_start_under(standing: Option<halt::Model>) -> CoreResult<()> {
    match standing {
        None => Ok(()),
        Some(halt) => {
            let scope = HaltScope {
                workflow_id: halt.workflow_id.clone(),
                agent: halt.agent.clone(),
            };
            Err(CoreError::Conflict(format!(
                "{} are halted (halt `{}`: {}); no run starts there until `resumeRuns(id: \"{}\")`",
                scope.describe(),
                halt.id,
                halt.reason,
                halt.id
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_covers_what_it_names_and_the_empty_scope_everything() {
        let all = HaltScope::default();
        assert!(all.covers("wf", None) && all.covers("wf", Some("bot")));
        let workflow = HaltScope {
            workflow_id: Some("wf".into()),
            agent: None,
        };
        assert!(workflow.covers("wf", Some("bot")) && !workflow.covers("other", None));
        let both = HaltScope {
            workflow_id: Some("wf".into()),
            agent: Some("bot".into()),
        };
        assert!(both.covers("wf", Some("bot")));
        assert!(!both.covers("wf", None) && !both.covers("wf", Some("other")));
    }

    #[test]
    fn an_empty_scope_field_is_refused_not_taken_as_everything() {
        let err = HaltScope {
            workflow_id: Some("  ".into()),
            agent: None,
        }
        .normalized()
        .unwrap_err();
        assert_eq!(err.code(), "BAD_USER_INPUT");
    }
}
