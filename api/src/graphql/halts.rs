//! The kill switch: `haltRuns` stops every running run of a scope and refuses new ones there
//! until `resumeRuns`; `halts` lists them; `haltEvents` streams `RUNS_HALTED` and
//! `RUNS_RESUMED`.

use async_graphql::{Context, ID, InputObject, Object};
use governance_core::{
    halts::{self, HaltScope},
    roles::Capability,
};

use super::{
    error::GqlResultExt,
    pagination::{self, Conn, PageArgs},
    principal,
    scalars::DateTime,
    state,
};

/// Halts a tenant keeps listed (far more than anyone sets).
const MAX_LISTED: u64 = 10_000;

/// Which runs a halt covers. Both fields left out: every run of the tenant.
#[derive(InputObject)]
pub struct HaltScopeInput {
    /// Only runs of this workflow.
    pub workflow_id: Option<String>,
    /// Only runs of this agent.
    pub agent: Option<String>,
}

pub struct Halt(pub halts::Halt);

/// A halt of the kill switch: the running runs of its scope were stopped when it was set, and
/// no run starts in its scope while it stands.
#[Object]
impl Halt {
    /// `hlt_…`
    async fn id(&self) -> ID {
        ID(self.0.halt.id.clone())
    }
    /// The workflow it covers; null for every workflow.
    async fn workflow_id(&self) -> Option<&str> {
        self.0.halt.workflow_id.as_deref()
    }
    /// The agent it covers; null for every agent.
    async fn agent(&self) -> Option<&str> {
        self.0.halt.agent.as_deref()
    }
    /// Why, as given; also recorded as the error of every run it stopped.
    async fn reason(&self) -> &str {
        &self.0.halt.reason
    }
    /// How many running runs it stopped.
    async fn runs_stopped(&self) -> i64 {
        self.0.halt.runs_stopped
    }
    /// The API key (`key_…`) that set it.
    async fn halted_by(&self) -> &str {
        &self.0.halt.halted_by
    }
    /// When it was set.
    async fn created_at(&self) -> DateTime {
        self.0.halt.created_at.into()
    }
    /// Whether it still stands (not resumed).
    async fn active(&self) -> bool {
        self.0.is_active()
    }
    /// When it was resumed.
    async fn resumed_at(&self) -> Option<DateTime> {
        self.0.resumption.as_ref().map(|r| r.resumed_at.into())
    }
    /// The API key that resumed it.
    async fn resumed_by(&self) -> Option<&str> {
        self.0.resumption.as_ref().map(|r| r.resumed_by.as_str())
    }
}

#[derive(Default)]
pub struct HaltQuery;

#[Object]
impl HaltQuery {
    /// The tenant's halts, newest first; only those still standing with `active: true`.
    #[graphql(complexity = "crate::graphql::pagination::page_cost(first, last, child_complexity)")]
    async fn halts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = false, desc = "Only halts that still stand.")] active: bool,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Conn<Halt>> {
        let principal = principal(ctx)?;
        let all = halts::list(&state(ctx).db, &principal.tenant_id, active, MAX_LISTED)
            .await
            .gql()?;
        pagination::in_memory(
            ctx,
            all,
            PageArgs::new(first, after, last, before),
            |h| h.halt.id.clone(),
            Halt,
        )
    }

    /// One halt of the tenant.
    async fn halt(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Halt> {
        let principal = principal(ctx)?;
        let found = halts::get(&state(ctx).db, &principal.tenant_id, &id)
            .await
            .gql()?;
        Ok(Halt(found))
    }
}

#[derive(Default)]
pub struct HaltMutation;

#[Object]
impl HaltMutation {
    /// Stop every running run of the scope now (each `CANCELLED` with `USER_ABORT`, an `ABORTED`
    /// enforcement naming the halt, its event and evaluation record; no incident), and refuse
    /// `startRun` in the scope (`CONFLICT`) until `resumeRuns`. ADMIN only.
    async fn halt_runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which runs; leave both fields out for the whole tenant.")]
        scope: HaltScopeInput,
        #[graphql(desc = "Why: recorded on the halt and on every run it stops.")] reason: String,
    ) -> async_graphql::Result<Halt> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let state = state(ctx);
        let committed = halts::halt(
            &state.store,
            &principal.tenant_id,
            &principal.key_id,
            HaltScope {
                workflow_id: scope.workflow_id,
                agent: scope.agent,
            },
            &reason,
        )
        .await
        .gql()?;
        Ok(Halt(state.after_commit(committed).await))
    }

    /// Lift a halt: runs of its scope may start again. A halt is resumed once (`CONFLICT`
    /// after). ADMIN only.
    async fn resume_runs(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Halt> {
        let principal = super::authorized(ctx, Capability::Administer)?;
        let state = state(ctx);
        let committed = halts::resume(&state.store, &principal.tenant_id, &principal.key_id, &id)
            .await
            .gql()?;
        Ok(Halt(state.after_commit(committed).await))
    }
}

pub struct HaltEvent {
    event: governance_entities::event::Model,
    halt: Option<halts::Halt>,
}

/// A halt set (`RUNS_HALTED`) or lifted (`RUNS_RESUMED`), from the outbox. Resume after
/// `cursor` to lose nothing.
#[Object]
impl HaltEvent {
    /// The position in the tenant's event sequence: pass it as `after` to resume.
    async fn cursor(&self) -> String {
        self.event.seq.to_string()
    }
    /// `RUNS_HALTED` or `RUNS_RESUMED`.
    async fn kind(&self) -> &str {
        &self.event.kind
    }
    /// The halt, as it is now.
    async fn halt(&self) -> Option<Halt> {
        self.halt.clone().map(Halt)
    }
    /// When it was committed.
    async fn occurred_at(&self) -> DateTime {
        self.event.created_at.into()
    }
}

#[derive(Default)]
pub struct HaltSubscription;

#[async_graphql::Subscription]
impl HaltSubscription {
    /// Halts set and lifted: first those stored after `after` (from the beginning when
    /// omitted), then live, in order, with no gap and no duplicate.
    async fn halt_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> async_graphql::Result<impl futures::Stream<Item = HaltEvent> + use<>> {
        use futures::StreamExt;
        let (stream, db, tenant_id) = super::incidents::tenant_events_of(
            ctx,
            after.as_deref(),
            &["RUNS_HALTED", "RUNS_RESUMED"],
        )?;
        let stream = stream.then(move |event| {
            let (db, tenant_id) = (db.clone(), tenant_id.clone());
            async move {
                let halt = halts::get(&db, &tenant_id, &event.subject_id)
                    .await
                    .map_err(|err| tracing::error!(error = %err, "could not read a halt"))
                    .ok();
                HaltEvent { event, halt }
            }
        });
        Ok(stream)
    }
}
