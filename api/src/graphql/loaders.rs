//! DataLoaders: every link of the graph is loaded in batches, so a page of N objects with their
//! links costs one statement per link, not one per object.
//!
//! One [`GraphLoader`] per request (per connection for WebSocket), bound to the caller's tenant:
//! every batch is scoped by it, so a link can never reach another tenant's rows. Each key type
//! below is one link; the loader caches nothing across batches (a subscription connection lives
//! long, and its events must see fresh rows).

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Context,
    dataloader::{DataLoader, Loader},
};
use governance_core::{CoreError, policies::TriggerStats};
use governance_entities::{
    evidence, export, incident, policy, policy_enforcement, policy_evaluation, policy_snapshot,
    policy_version, run, trace_step, violation,
};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};

use super::{
    error::to_gql,
    pagination::{self, Conn, PageArgs},
};

/// The batch loader of one caller.
pub struct GraphLoader {
    db: DatabaseConnection,
    tenant_id: String,
}

/// What resolvers reach through `loader(ctx)`.
pub type Loaders = Arc<DataLoader<GraphLoader>>;

/// A loader for `tenant_id` (one per request or connection).
pub fn for_tenant(db: DatabaseConnection, tenant_id: String) -> Loaders {
    Arc::new(DataLoader::new(
        GraphLoader { db, tenant_id },
        spawn_after_siblings,
    ))
}

/// How many scheduler turns a batch waits for its siblings (see [`spawn_after_siblings`]).
const SIBLING_TURNS: usize = 128;

/// Start a batch only after the resolvers that are still registering keys have had their turns.
///
/// A list is resolved by a `FuturesUnordered` that yields every 32 items, so a page of 100 runs
/// registers its keys over several scheduler turns. A batch started on a timer alone (the
/// DataLoader's 1 ms) can fire between two of those turns and split the batch: one statement
/// more, at random. Each actix worker runs a single-threaded runtime with a FIFO run queue, so
/// yielding once per turn lets every pending resolver turn run before the batch takes its keys;
/// a batch waits at most a few hundred microseconds this way.
fn spawn_after_siblings(batch: futures::future::BoxFuture<'static, ()>) {
    tokio::spawn(async move {
        for _ in 0..SIBLING_TURNS {
            tokio::task::yield_now().await;
        }
        batch.await;
    });
}

/// The caller's loader.
pub fn loader<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Loaders> {
    ctx.data::<Loaders>()
}

type LoadResult<K, V> = Result<HashMap<K, V>, async_graphql::Error>;

/// One page of the small per-object list that `key` loads (batched with the same list of the
/// object's siblings), paged in memory.
pub async fn page_of<K, T, N>(
    ctx: &Context<'_>,
    key: K,
    args: PageArgs,
    key_of: impl Fn(&T) -> String,
    wrap: impl Fn(T) -> N,
) -> async_graphql::Result<Conn<N>>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + 'static,
    GraphLoader: Loader<K, Value = Vec<T>, Error = async_graphql::Error>,
    T: Send + Sync + Clone + 'static,
    N: async_graphql::OutputType,
{
    let rows = loader(ctx)?.load_one(key).await?.unwrap_or_default();
    pagination::in_memory(ctx, rows, args, key_of, wrap)
}

fn db_error(err: sea_orm::DbErr) -> async_graphql::Error {
    to_gql(CoreError::from(err))
}

fn ids<K: AsRef<str>>(keys: &[K]) -> Vec<String> {
    keys.iter().map(|k| k.as_ref().to_string()).collect()
}

/// Keys: one newtype per link, so one loader serves them all.
macro_rules! key {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Debug)]
        pub struct $name(pub String);
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

key! {
    /// A run by id.
    RunId;
    /// A snapshot by `SNAP-…` id.
    SnapshotId;
    /// A policy by id.
    PolicyId;
    /// A violation by id.
    ViolationId;
    /// An incident by id.
    IncidentId;
    /// Evidence by id.
    EvidenceId;
    /// An export by id.
    ExportId;
    /// The violations of a run (step order).
    ViolationsOfRun;
    /// The incident of a run.
    IncidentOfRun;
    /// The incident a violation opened.
    IncidentOfViolation;
    /// The evaluation record of a run.
    EvaluationOfRun;
    /// The enforcement log of a run (oldest first).
    EnforcementsOfRun;
    /// The evidence of a violation.
    EvidenceOfViolation;
    /// The exports of a run (oldest first).
    ExportsOfRun;
    /// The exports of an incident (oldest first).
    ExportsOfIncident;
    /// Every version of a policy (newest first).
    HistoryOfPolicy;
    /// How often a policy fired in the last 30 days, and when it last did.
    TriggerStatsOfPolicy;
}

/// The row of `$entity` whose `$column` (model field `$field`) is each key.
macro_rules! one_each {
    ($key:ident => $entity:ident :: $column:ident / $field:ident) => {
        impl Loader<$key> for GraphLoader {
            type Value = $entity::Model;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> LoadResult<$key, $entity::Model> {
                let rows = $entity::Entity::find()
                    .filter($entity::Column::TenantId.eq(self.tenant_id.as_str()))
                    .filter($entity::Column::$column.is_in(ids(keys)))
                    .all(&self.db)
                    .await
                    .map_err(db_error)?;
                Ok(rows
                    .into_iter()
                    .map(|row| ($key(row.$field.clone()), row))
                    .collect())
            }
        }
    };
}

/// Every row of `$entity` per key of `$column` (model field `$field`), ordered by `$order`
/// ascending then `$then` (`desc` flips both).
macro_rules! many_each {
    ($key:ident => $entity:ident :: $column:ident / $field:ident, $dir:ident [$($order:ident),+]) => {
        impl Loader<$key> for GraphLoader {
            type Value = Vec<$entity::Model>;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> LoadResult<$key, Vec<$entity::Model>> {
                let rows = $entity::Entity::find()
                    .filter($entity::Column::TenantId.eq(self.tenant_id.as_str()))
                    .filter($entity::Column::$column.is_in(ids(keys)))
                    $(.$dir($entity::Column::$order))+
                    .all(&self.db)
                    .await
                    .map_err(db_error)?;
                let mut grouped: HashMap<$key, Vec<$entity::Model>> =
                    keys.iter().map(|k| (k.clone(), Vec::new())).collect();
                for row in rows {
                    grouped.entry($key(row.$field.clone())).or_default().push(row);
                }
                Ok(grouped)
            }
        }
    };
}

one_each!(RunId => run::Id / id);
one_each!(SnapshotId => policy_snapshot::SnapshotId / snapshot_id);
one_each!(PolicyId => policy::Id / id);
one_each!(ViolationId => violation::Id / id);
one_each!(IncidentId => incident::Id / id);
one_each!(EvidenceId => evidence::Id / id);
one_each!(IncidentOfRun => incident::RunId / run_id);
one_each!(IncidentOfViolation => incident::ViolationId / violation_id);
one_each!(EvaluationOfRun => policy_evaluation::RunId / run_id);
one_each!(EvidenceOfViolation => evidence::ViolationId / violation_id);
many_each!(ViolationsOfRun => violation::RunId / run_id, order_by_asc [StepIndex, Id]);
many_each!(EnforcementsOfRun => policy_enforcement::RunId / run_id, order_by_asc [CreatedAt, Id]);
many_each!(HistoryOfPolicy => policy_version::PolicyId / policy_id, order_by_desc [Version]);

/// A page of a run's steps: indexes `start..end`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StepsOfRun {
    pub run_id: String,
    pub start: i64,
    pub end: i64,
}

impl Loader<StepsOfRun> for GraphLoader {
    type Value = Vec<trace_step::Model>;
    type Error = async_graphql::Error;

    /// One statement for every page asked: runs asking the same range (the usual case: a list
    /// of runs with `steps(first: N)`) share one `run_id IN (…)` term.
    async fn load(&self, keys: &[StepsOfRun]) -> LoadResult<StepsOfRun, Vec<trace_step::Model>> {
        let mut ranges: HashMap<(i64, i64), Vec<String>> = HashMap::new();
        for key in keys {
            ranges
                .entry((key.start, key.end))
                .or_default()
                .push(key.run_id.clone());
        }
        let mut any = Condition::any();
        for ((start, end), runs) in ranges {
            any = any.add(
                Condition::all()
                    .add(trace_step::Column::RunId.is_in(runs))
                    .add(trace_step::Column::StepIndex.gte(start))
                    .add(trace_step::Column::StepIndex.lt(end)),
            );
        }
        let rows = trace_step::Entity::find()
            .filter(trace_step::Column::TenantId.eq(self.tenant_id.as_str()))
            .filter(any)
            .order_by_asc(trace_step::Column::RunId)
            .order_by_asc(trace_step::Column::StepIndex)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut by_run: HashMap<String, Vec<trace_step::Model>> = HashMap::new();
        for row in rows {
            by_run.entry(row.run_id.clone()).or_default().push(row);
        }
        Ok(keys
            .iter()
            .map(|key| {
                let page = by_run
                    .get(&key.run_id)
                    .map(|steps| {
                        steps
                            .iter()
                            .filter(|s| (key.start..key.end).contains(&s.step_index))
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (key.clone(), page)
            })
            .collect())
    }
}

/// Exports are loaded without their content (the rendered bytes): lists never need it.
async fn exports_where(
    loader: &GraphLoader,
    column: export::Column,
    keys: Vec<String>,
) -> Result<Vec<export::Summary>, async_graphql::Error> {
    export::Entity::find()
        .filter(export::Column::TenantId.eq(loader.tenant_id.as_str()))
        .filter(column.is_in(keys))
        .order_by_asc(export::Column::Id)
        .into_partial_model::<export::Summary>()
        .all(&loader.db)
        .await
        .map_err(db_error)
}

impl Loader<ExportId> for GraphLoader {
    type Value = export::Summary;
    type Error = async_graphql::Error;

    async fn load(&self, keys: &[ExportId]) -> LoadResult<ExportId, export::Summary> {
        let rows = exports_where(self, export::Column::Id, ids(keys)).await?;
        Ok(rows
            .into_iter()
            .map(|e| (ExportId(e.id.clone()), e))
            .collect())
    }
}

macro_rules! exports_of {
    ($key:ident, $column:ident, $field:ident) => {
        impl Loader<$key> for GraphLoader {
            type Value = Vec<export::Summary>;
            type Error = async_graphql::Error;

            async fn load(&self, keys: &[$key]) -> LoadResult<$key, Vec<export::Summary>> {
                let rows = exports_where(self, export::Column::$column, ids(keys)).await?;
                let mut grouped: HashMap<$key, Vec<export::Summary>> =
                    keys.iter().map(|k| (k.clone(), Vec::new())).collect();
                for row in rows {
                    grouped
                        .entry($key(row.$field.clone()))
                        .or_default()
                        .push(row);
                }
                Ok(grouped)
            }
        }
    };
}

exports_of!(ExportsOfRun, RunId, run_id);
exports_of!(ExportsOfIncident, IncidentId, incident_id);

impl Loader<TriggerStatsOfPolicy> for GraphLoader {
    type Value = TriggerStats;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[TriggerStatsOfPolicy],
    ) -> LoadResult<TriggerStatsOfPolicy, TriggerStats> {
        let since = governance_core::time::now() - chrono::Duration::days(30);
        let stats =
            governance_core::policies::trigger_stats(&self.db, &self.tenant_id, &ids(keys), since)
                .await
                .map_err(to_gql)?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), stats.get(&k.0).copied().unwrap_or_default()))
            .collect())
    }
}
