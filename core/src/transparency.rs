//! Each tenant's transparency log: an append-only RFC 6962 Merkle tree whose leaves are run
//! heads, and the signed checkpoints (C2SP `tlog-checkpoint`, as signed notes) that commit the
//! service to it. `docs/verifying.md` specifies every byte.
//!
//! - A run's head becomes a leaf when the run ends, and while it runs at most every
//!   `head_interval` (so a long run is anchored as it goes). A leaf's data is the RFC 8785
//!   document [`leaf_document`].
//! - [`sequence`] appends the heads that are due, stores the perfect subtrees they complete,
//!   and signs a checkpoint of each tenant's log that grew: all in one transaction per tenant,
//!   planned from reads made before it and sent as one request.
//!   Workers run it every few seconds.
//! - [`anchor`] appends one run's head as read, when no leaf holds it yet: an export anchors
//!   exactly the record it shows.
//! - Proofs are read from the stored subtrees: inclusion of a run's latest leaf in a checkpoint,
//!   and consistency between two sizes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use governance_entities::{
    approval_decision, enums::RunStatus, log_checkpoint, log_leaf, log_node, run, trace_step,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QueryResult, QuerySelect, QueryTrait, Set, Statement, sea_query::Expr,
};
use serde_json::json;

use crate::{
    canonical,
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    merkle::{self, Hash, NodeId, Range},
    outcome::Committed,
    placeholders::{placeholder, values_rows},
    signing::KeyRing,
    store::Store,
    time::now,
};

/// How the log is run.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Prefix of every tenant log's origin line: the origin is `<prefix>/<tenant id>`.
    pub origin_prefix: String,
    /// A running run's head is logged at most this often.
    pub head_interval: chrono::Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            origin_prefix: "governance".to_string(),
            head_interval: chrono::Duration::seconds(60),
        }
    }
}

/// The origin line of a tenant's log.
pub fn origin(prefix: &str, tenant_id: &str) -> String {
    format!("{prefix}/{tenant_id}")
}

/// The leaf data of a run head: what the leaf hash covers.
pub fn leaf_document(run: &run::Model) -> String {
    canonical::to_string(&json!({
        "format": 2,
        "type": "runHead",
        "tenantId": run.tenant_id,
        "runId": run.id,
        "recordFormat": run.record_format,
        "stepCount": run.step_count,
        "headHash": run.trace_head_hash,
        "status": run.status.as_str(),
    }))
}

/// A checkpoint's body: origin, tree size, base64 root hash, one per line.
pub fn checkpoint_text(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A checkpoint's body, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl CheckpointBody {
    pub fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let origin = lines.next()?.to_string();
        let size = lines.next()?.parse().ok()?;
        let root: Hash = B64.decode(lines.next()?).ok()?.try_into().ok()?;
        Some(Self { origin, size, root })
    }
}

fn hex_hash(hex_text: &str) -> CoreResult<Hash> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("a stored log hash is not 32 bytes of hex").into())
}

/// Runs whose head is due in the log, at most `limit`, ordered by tenant.
async fn due_runs<C: ConnectionTrait>(
    conn: &C,
    settings: &LogSettings,
    limit: u64,
) -> CoreResult<Vec<run::Model>> {
    let ended: Vec<RunStatus> = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::FailedPolicy,
        RunStatus::Cancelled,
    ]
    .into_iter()
    .filter(|s| s.is_terminal())
    .collect();
    let interval_ago = now() - settings.head_interval;
    Ok(run::Entity::find()
        // Spelled as the partial index `idx_runs_unlogged` is, so it is used.
        .filter(Expr::cust(
            "(logged_head_hash IS NULL OR logged_head_hash <> trace_head_hash)",
        ))
        .filter(
            Condition::any().add(run::Column::Status.is_in(ended)).add(
                Condition::any()
                    .add(run::Column::LoggedAt.lte(interval_ago))
                    .add(
                        Condition::all()
                            .add(run::Column::LoggedAt.is_null())
                            .add(run::Column::StartedAt.lte(interval_ago)),
                    ),
            ),
        )
        .order_by_asc(run::Column::TenantId)
        .limit(limit)
        .all(conn)
        .await?)
}

/// One pass of the sequencer: append every head that is due and sign a checkpoint of each log
/// that grew. Returns the checkpoints, committed, with their `CHECKPOINT_SIGNED` events.
pub async fn sequence(
    store: &Store,
    keys: &KeyRing,
    settings: &LogSettings,
) -> CoreResult<Vec<Committed<log_checkpoint::Model>>> {
    let due = due_runs(store.db(), settings, 2_000).await?;
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in due {
        by_tenant.entry(run.tenant_id).or_default().push(run.id);
    }
    let mut signed = Vec::new();
    for (tenant_id, run_ids) in by_tenant {
        if let Some(checkpoint) =
            append_heads(store, keys, settings, &tenant_id, Heads::Due(&run_ids)).await?
        {
            signed.push(checkpoint);
        }
    }
    Ok(signed)
}

/// How many times an append is planned again when the log grew while it was planned.
const APPEND_ATTEMPTS: u32 = 3;

/// Which heads an append takes.
#[derive(Clone, Copy)]
enum Heads<'a> {
    /// Those of these runs still due (the sequencer).
    Due(&'a [String]),
    /// This run's head as read, unless a leaf holds it already (an export's anchor).
    AsRead(&'a run::Model),
}

/// Append `heads` to the tenant's log and sign the new head, if any head is to be appended.
///
/// Everything is read and vetted before the write, and the write is one request
/// ([`Store::commit_statements`]): on SQLite its transaction holds the database's one write
/// lock, which every step's commit waits for, and a pass of ~50 heads that read, vetted and
/// wrote inside it, statement by statement, held it for 6-16 ms once a second under step load.
/// Nothing read for the plan can go stale unnoticed: the log's size is read first and the new
/// leaves take the indexes after it, which are unique, so an append committed meanwhile by
/// another writer makes this one fail and be planned again; step rows and leaves are
/// immutable; a head is appended as read, and a run is marked logged only if its head is still
/// the one appended.
async fn append_heads(
    store: &Store,
    keys: &KeyRing,
    settings: &LogSettings,
    tenant_id: &str,
    heads: Heads<'_>,
) -> CoreResult<Option<Committed<log_checkpoint::Model>>> {
    let db = store.db();
    let mut attempt = 1;
    loop {
        let size = log_size(db, tenant_id).await?;
        let runs = match heads {
            Heads::Due(run_ids) => {
                let changed = unlogged_runs(db, tenant_id, run_ids).await?;
                runs_extending_log(db, tenant_id, changed).await?
            }
            Heads::AsRead(run) => {
                let logged = leaf_of_head(
                    db,
                    tenant_id,
                    &run.id,
                    &run.trace_head_hash,
                    run.status.as_str(),
                )
                .await?;
                if logged.is_some() {
                    return Ok(None);
                }
                runs_extending_log(db, tenant_id, vec![run.clone()]).await?
            }
        };
        if runs.is_empty() {
            return Ok(None);
        }
        let statements = append_statements(db, keys, settings, tenant_id, size, &runs).await?;
        match store.commit_statements(statements).await {
            Ok(rows) => return committed_checkpoint(rows).map(Some),
            Err(err) if attempt < APPEND_ATTEMPTS => {
                attempt += 1;
                tracing::info!(error = %err, tenant_id, "a log append did not commit (the log grew meanwhile?); planning it again");
            }
            Err(err) => return Err(err),
        }
    }
}

/// Those of `run_ids` whose head the log does not hold, as they stand.
async fn unlogged_runs<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_ids: &[String],
) -> CoreResult<Vec<run::Model>> {
    let mut changed = Vec::with_capacity(run_ids.len());
    for chunk in run_ids.chunks(500) {
        changed.extend(
            run::Entity::find()
                .filter(run::Column::TenantId.eq(tenant_id))
                .filter(run::Column::Id.is_in(chunk.iter().cloned()))
                .order_by_asc(run::Column::Id)
                .all(conn)
                .await?
                .into_iter()
                .filter(|r| r.logged_head_hash.as_deref() != Some(r.trace_head_hash.as_str())),
        );
    }
    Ok(changed)
}

/// Anchor `run` as it was read (its head after its `step_count` steps) in the tenant's log:
/// append that head as a leaf and sign a checkpoint, unless a leaf already holds it. An export
/// does this so its bundle carries a signed proof of exactly the steps it shows. Returns the new
/// checkpoint (to publish and witness), if one was signed.
pub async fn anchor(
    store: &Store,
    keys: &KeyRing,
    settings: &LogSettings,
    run: &run::Model,
) -> CoreResult<Option<Committed<log_checkpoint::Model>>> {
    append_heads(store, keys, settings, &run.tenant_id, Heads::AsRead(run)).await
}

/// The runs among `runs` whose head, as given, may be appended to the log: each must extend
/// what the log already holds for it. Whatever a database writer did to the row (its
/// `logged_head_hash` included), the run's latest leaf decides:
/// - the step at the logged count (or the genesis, for a head of no steps) must still carry
///   the logged hash (a rewrite of any logged step changes it);
/// - a head older than the logged one is a stale read, never appended after it;
/// - a run logged in a terminal status never gets another leaf (its head and status are final).
///
/// Refused runs are logged as errors: they mean a record rewritten behind the service's back.
async fn runs_extending_log<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    runs: Vec<run::Model>,
) -> CoreResult<Vec<run::Model>> {
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let mut latest: HashMap<String, log_leaf::Model> = HashMap::new();
    for chunk in ids.chunks(500) {
        // Only each run's latest leaf: a long run has one leaf per head interval, and reading
        // them all on every pass made the pass grow with the runs' age. Driven by the run ids,
        // each run's `MAX(leaf_index)` is one seek in `(tenant_id, run_id, leaf_index)`, and its
        // leaf one more in `(tenant_id, leaf_index)`, however many leaves the run has.
        let backend = conn.get_database_backend();
        let latest_of_each = Expr::cust_with_values(
            format!(
                "leaf_index IN (SELECT (SELECT MAX(mine.leaf_index) FROM log_leaves AS mine \
                 WHERE mine.tenant_id = {} AND mine.run_id = due.column1) \
                 FROM (VALUES {}) AS due)",
                placeholder(backend, 1),
                values_rows(backend, 2, chunk.len(), 1)
            ),
            std::iter::once(tenant_id.to_string()).chain(chunk.iter().cloned()),
        );
        for leaf in log_leaf::Entity::find()
            .filter(log_leaf::Column::TenantId.eq(tenant_id))
            .filter(latest_of_each)
            .all(conn)
            .await?
        {
            latest.insert(leaf.run_id.clone(), leaf);
        }
    }
    let mut ok = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(leaf) = latest.get(&run.id) else {
            ok.push(run);
            continue;
        };
        let terminal = leaf
            .status
            .parse::<RunStatus>()
            .map(|s| s.is_terminal())
            .unwrap_or(true);
        let why = if terminal {
            Some("it was logged as ended; an ended run's head and status are final")
        } else if run.step_count < leaf.step_count {
            Some("the log already holds a later head of it (a stale read)")
        } else if !heads_after(conn, &run, leaf.step_count)
            .await?
            .contains(&leaf.head_hash)
        {
            Some("its record no longer holds the head its log leaf holds: it was rewritten")
        } else {
            None
        };
        match why {
            None => ok.push(run),
            Some(why) => tracing::error!(
                tenant_id,
                run_id = %run.id,
                leaf_index = leaf.leaf_index,
                "not logging a run's head: {why}"
            ),
        }
    }
    Ok(ok)
}

/// The heads the run's record has held after its first `count` steps: the genesis for none;
/// else the entry hash of step `count - 1`, and, when that step was held and its approval
/// decided, the decision's entry hash after it.
async fn heads_after<C: ConnectionTrait>(
    conn: &C,
    run: &run::Model,
    count: i64,
) -> CoreResult<Vec<String>> {
    if count == 0 {
        let snapshot = crate::runs::snapshot_of(conn, run).await?;
        return Ok(vec![crate::chain::genesis(run, &snapshot.content_hash)]);
    }
    let step: Option<String> = trace_step::Entity::find()
        .select_only()
        .column(trace_step::Column::EntryHash)
        .filter(trace_step::Column::TenantId.eq(run.tenant_id.as_str()))
        .filter(trace_step::Column::RunId.eq(run.id.as_str()))
        .filter(trace_step::Column::StepIndex.eq(count - 1))
        .into_tuple()
        .one(conn)
        .await?;
    let decision: Option<String> = approval_decision::Entity::find()
        .select_only()
        .column(approval_decision::Column::EntryHash)
        .filter(approval_decision::Column::RunId.eq(run.id.as_str()))
        .filter(approval_decision::Column::StepIndex.eq(count - 1))
        .into_tuple()
        .one(conn)
        .await?;
    Ok(step.into_iter().chain(decision).collect())
}

/// The first leaf that logs `head_hash` as the run's head, with the run in `status`.
async fn leaf_of_head<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    head_hash: &str,
    status: &str,
) -> CoreResult<Option<log_leaf::Model>> {
    Ok(log_leaf::Entity::find()
        .filter(log_leaf::Column::TenantId.eq(tenant_id))
        .filter(log_leaf::Column::RunId.eq(run_id))
        .filter(log_leaf::Column::HeadHash.eq(head_hash))
        .filter(log_leaf::Column::Status.eq(status))
        .order_by_asc(log_leaf::Column::LeafIndex)
        .one(conn)
        .await?)
}

/// The statements that append the heads of `runs` (as given) to the tenant's log of `size`
/// leaves, store the subtrees they complete, mark the runs logged, and record the signed
/// checkpoint of the new head with its event. Reads the stored subtrees of the log as it is.
async fn append_statements<C: ConnectionTrait>(
    conn: &C,
    keys: &KeyRing,
    settings: &LogSettings,
    tenant_id: &str,
    size: u64,
    runs: &[run::Model],
) -> CoreResult<Vec<Statement>> {
    let backend = conn.get_database_backend();
    let mut nodes = stored_nodes(
        conn,
        tenant_id,
        merkle::nodes_of(Range {
            start: 0,
            end: size,
        }),
    )
    .await?;
    let at = now();
    let mut new_leaves = Vec::with_capacity(runs.len());
    let mut new_nodes: Vec<(NodeId, Hash)> = Vec::new();
    for (offset, run) in runs.iter().enumerate() {
        let index = size + offset as u64;
        let data = leaf_document(run);
        let leaf = merkle::leaf_hash(data.as_bytes());
        for node in merkle::completed_by(index) {
            let hash = if node.level == 0 {
                leaf
            } else {
                let child = |i: u64| {
                    nodes
                        .get(&NodeId {
                            level: node.level - 1,
                            index: i,
                        })
                        .copied()
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "log of {tenant_id}: node ({}, {i}) is missing",
                                node.level - 1
                            )
                        })
                };
                merkle::node_hash(&child(node.index * 2)?, &child(node.index * 2 + 1)?)
            };
            nodes.insert(node, hash);
            new_nodes.push((node, hash));
        }
        new_leaves.push(log_leaf::ActiveModel {
            tenant_id: Set(tenant_id.to_string()),
            leaf_index: Set(index as i64),
            run_id: Set(run.id.clone()),
            head_hash: Set(run.trace_head_hash.clone()),
            step_count: Set(run.step_count),
            status: Set(run.status.as_str().to_string()),
            leaf_data: Set(data),
            leaf_hash: Set(hex::encode(leaf)),
            created_at: Set(at),
            ..Default::default()
        });
    }
    let new_size = size + runs.len() as u64;
    let root = merkle::range_hash(
        Range {
            start: 0,
            end: new_size,
        },
        |n| nodes.get(&n).copied(),
    )
    .ok_or_else(|| anyhow::anyhow!("log of {tenant_id}: a node of the new head is missing"))?;
    let body = checkpoint_text(&origin(&settings.origin_prefix, tenant_id), new_size, &root);
    let note = keys.active.sign_note(&body);
    let key_id = keys.active.verifier().key_id();

    let mut statements = Vec::new();
    if backend == DbBackend::Postgres {
        // One appender per tenant log at a time, across replicas and workers (the unique leaf
        // indexes would refuse a second one anyway; this makes it wait instead).
        statements.push(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [format!("tlog:{tenant_id}").into()],
        ));
        // The runs' rows, locked in id order as every step batch locks them, so the two
        // cannot deadlock.
        for chunk in runs.chunks(500) {
            statements.push(
                run::Entity::find()
                    .select_only()
                    .column(run::Column::Id)
                    .filter(run::Column::Id.is_in(chunk.iter().map(|r| r.id.clone())))
                    .order_by_asc(run::Column::Id)
                    .lock_exclusive()
                    .build(backend),
            );
        }
    }
    // Leaf indexes are unique per tenant: if the log grew since `size` was read, this fails.
    let mut leaves = new_leaves.into_iter().peekable();
    while leaves.peek().is_some() {
        let chunk: Vec<_> = leaves.by_ref().take(500).collect();
        statements.push(log_leaf::Entity::insert_many(chunk).build(backend));
    }
    for chunk in new_nodes.chunks(500) {
        statements.push(
            log_node::Entity::insert_many(chunk.iter().map(|(node, hash)| log_node::ActiveModel {
                tenant_id: Set(tenant_id.to_string()),
                level: Set(node.level as i32),
                node_index: Set(node.index as i64),
                hash: Set(hex::encode(hash)),
                ..Default::default()
            }))
            .build(backend),
        );
    }
    // Each run appended is marked logged with the head appended, now: it is due again
    // `head_interval` later (or as soon as it ends), however many steps it took meanwhile. The
    // append used to mark only the runs still at the appended head, a test made when the plan
    // was read inside the write; since the plan is read before it, a run that took a step in
    // between stayed unmarked and was due on every pass. Under steady steps that was a leaf per
    // running run per pass instead of one per interval, and a pass that read every leaf of
    // every due run: a 10-minute soak grew the server by 350 MB and stalled steps for seconds.
    // An append that raced another writer's never commits (the leaf indexes are unique), so
    // the head written here is never older than one logged meanwhile.
    for chunk in runs.chunks(500) {
        let mut appended = sea_orm::sea_query::CaseStatement::new();
        for r in chunk {
            appended = appended.case(
                run::Column::Id.eq(r.id.clone()),
                Expr::value(r.trace_head_hash.clone()),
            );
        }
        statements.push(
            run::Entity::update_many()
                .col_expr(
                    run::Column::LoggedHeadHash,
                    appended
                        .finally(Expr::col(run::Column::LoggedHeadHash))
                        .into(),
                )
                .col_expr(run::Column::LoggedAt, Expr::value(at))
                .filter(run::Column::Id.is_in(chunk.iter().map(|r| r.id.clone())))
                .build(backend),
        );
    }
    let checkpoint = log_checkpoint::ActiveModel {
        tenant_id: Set(tenant_id.to_string()),
        tree_size: Set(new_size as i64),
        root_hash: Set(hex::encode(root)),
        note: Set(note.clone()),
        key_id: Set(key_id.clone()),
        created_at: Set(at),
        ..Default::default()
    };
    let mut insert = log_checkpoint::Entity::insert(checkpoint).into_query();
    insert.returning_all();
    statements.push(backend.build(&insert));
    statements.extend(events::append_statements(
        backend,
        tenant_id,
        NewEvent {
            kind: EventKind::CheckpointSigned,
            subject_id: format!("{new_size}"),
            run_id: None,
            severity_rank: None,
            payload: json!({
                "treeSize": new_size,
                "rootHash": hex::encode(root),
                "keyId": key_id,
                "checkpoint": note,
            }),
        },
    ));
    Ok(statements)
}

/// The committed checkpoint and its event, from the rows an append's statements returned.
fn committed_checkpoint(rows: Vec<QueryResult>) -> CoreResult<Committed<log_checkpoint::Model>> {
    let mut checkpoint = None;
    let mut event = None;
    for row in &rows {
        if let Ok(model) = log_checkpoint::Model::from_query_result(row, "") {
            checkpoint = Some(model);
        } else if let Ok(model) = governance_entities::event::Model::from_query_result(row, "") {
            event = Some(model);
        }
    }
    let (Some(checkpoint), Some(event)) = (checkpoint, event) else {
        return Err(anyhow::anyhow!(
            "a committed log append did not return its checkpoint and event"
        )
        .into());
    };
    let mut committed = Committed::new(checkpoint);
    committed.events.push(event);
    Ok(committed)
}

/// How many leaves the tenant's log holds.
async fn log_size<C: ConnectionTrait>(conn: &C, tenant_id: &str) -> CoreResult<u64> {
    let last: Option<i64> = log_leaf::Entity::find()
        .select_only()
        .column(log_leaf::Column::LeafIndex)
        .filter(log_leaf::Column::TenantId.eq(tenant_id))
        .order_by_desc(log_leaf::Column::LeafIndex)
        .limit(1)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(last.map_or(0, |i| i as u64 + 1))
}

/// The stored hashes of `ids` (those that exist).
async fn stored_nodes<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    ids: impl IntoIterator<Item = NodeId>,
) -> CoreResult<HashMap<NodeId, Hash>> {
    let ids: BTreeSet<NodeId> = ids.into_iter().collect();
    let mut found = HashMap::with_capacity(ids.len());
    let list: Vec<NodeId> = ids.into_iter().collect();
    for chunk in list.chunks(200) {
        let mut any = Condition::any();
        for id in chunk {
            any = any.add(
                Condition::all()
                    .add(log_node::Column::Level.eq(id.level as i32))
                    .add(log_node::Column::NodeIndex.eq(id.index as i64)),
            );
        }
        for node in log_node::Entity::find()
            .filter(log_node::Column::TenantId.eq(tenant_id))
            .filter(any)
            .all(conn)
            .await?
        {
            found.insert(
                NodeId {
                    level: node.level as u32,
                    index: node.node_index as u64,
                },
                hex_hash(&node.hash)?,
            );
        }
    }
    Ok(found)
}

/// The hashes of `ranges`, folded from the stored subtrees.
async fn range_hashes<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    ranges: &[Range],
) -> CoreResult<Vec<Hash>> {
    let nodes = stored_nodes(
        conn,
        tenant_id,
        ranges.iter().flat_map(|r| merkle::nodes_of(*r)),
    )
    .await?;
    ranges
        .iter()
        .map(|r| {
            merkle::range_hash(*r, |n| nodes.get(&n).copied()).ok_or_else(|| {
                anyhow::anyhow!("log of {tenant_id}: a node of a proof is missing").into()
            })
        })
        .collect()
}

/// The tenant's latest checkpoint.
pub async fn latest_checkpoint<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
) -> CoreResult<Option<log_checkpoint::Model>> {
    Ok(log_checkpoint::Entity::find()
        .filter(log_checkpoint::Column::TenantId.eq(tenant_id))
        .order_by_desc(log_checkpoint::Column::TreeSize)
        .one(conn)
        .await?)
}

/// The tenant's checkpoint of `size` leaves, if the log was ever signed at that size.
pub async fn checkpoint_at<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    size: i64,
) -> CoreResult<Option<log_checkpoint::Model>> {
    Ok(log_checkpoint::Entity::find()
        .filter(log_checkpoint::Column::TenantId.eq(tenant_id))
        .filter(log_checkpoint::Column::TreeSize.eq(size))
        .one(conn)
        .await?)
}

/// A run's latest leaf, its inclusion proof, and the checkpoint it proves into.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub leaf: log_leaf::Model,
    pub hashes: Vec<Hash>,
    pub checkpoint: log_checkpoint::Model,
}

/// The inclusion proof of the run's latest logged head in the tenant's latest checkpoint, or
/// `None` while the run has no leaf in a checkpoint yet.
pub async fn inclusion_proof<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
) -> CoreResult<Option<InclusionProof>> {
    let Some(checkpoint) = latest_checkpoint(conn, tenant_id).await? else {
        return Ok(None);
    };
    let Some(leaf) = run_leaves(conn, tenant_id, run_id, checkpoint.tree_size)
        .await?
        .pop()
    else {
        return Ok(None);
    };
    proof_of(conn, leaf, checkpoint).await.map(Some)
}

/// The inclusion proof of `leaf` in `checkpoint`.
async fn proof_of<C: ConnectionTrait>(
    conn: &C,
    leaf: log_leaf::Model,
    checkpoint: log_checkpoint::Model,
) -> CoreResult<InclusionProof> {
    let hashes = inclusion_hashes(conn, &leaf, checkpoint.tree_size).await?;
    Ok(InclusionProof {
        leaf,
        hashes,
        checkpoint,
    })
}

/// The proof that `run`'s head (and status), as read, is in the tenant's log: its first leaf,
/// the audit path, and the latest checkpoint. `None` while no checkpoint holds that head.
pub async fn head_proof<C: ConnectionTrait>(
    conn: &C,
    run: &run::Model,
) -> CoreResult<Option<InclusionProof>> {
    let tenant_id = run.tenant_id.as_str();
    let Some(checkpoint) = latest_checkpoint(conn, tenant_id).await? else {
        return Ok(None);
    };
    let Some(leaf) = leaf_of_head(
        conn,
        tenant_id,
        &run.id,
        &run.trace_head_hash,
        run.status.as_str(),
    )
    .await?
    .filter(|leaf| leaf.leaf_index < checkpoint.tree_size) else {
        return Ok(None);
    };
    proof_of(conn, leaf, checkpoint).await.map(Some)
}

/// Every leaf of the run below `size`, in log order.
pub async fn run_leaves<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    run_id: &str,
    size: i64,
) -> CoreResult<Vec<log_leaf::Model>> {
    Ok(log_leaf::Entity::find()
        .filter(log_leaf::Column::TenantId.eq(tenant_id))
        .filter(log_leaf::Column::RunId.eq(run_id))
        .filter(log_leaf::Column::LeafIndex.lt(size))
        .order_by_asc(log_leaf::Column::LeafIndex)
        .all(conn)
        .await?)
}

/// The audit path of `leaf` in the tree of `size` leaves.
pub async fn inclusion_hashes<C: ConnectionTrait>(
    conn: &C,
    leaf: &log_leaf::Model,
    size: i64,
) -> CoreResult<Vec<Hash>> {
    let ranges = merkle::inclusion_ranges(leaf.leaf_index as u64, size as u64)
        .ok_or_else(|| anyhow::anyhow!("leaf {} is beyond a tree of {size}", leaf.leaf_index))?;
    range_hashes(conn, &leaf.tenant_id, &ranges).await
}

/// The consistency proof between the tenant's log at `from` and at `to` leaves (`0 < from ≤ to
/// ≤` the latest checkpoint's size).
pub async fn consistency_proof<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    from: u64,
    to: u64,
) -> CoreResult<Vec<Hash>> {
    let size = latest_checkpoint(conn, tenant_id)
        .await?
        .map_or(0, |c| c.tree_size as u64);
    if from == 0 || from > to || to > size {
        return Err(CoreError::bad_field(
            "fromSize",
            format!(
                "a consistency proof needs 0 < fromSize ≤ toSize ≤ {size} (the latest checkpoint's size)"
            ),
        ));
    }
    let ranges = merkle::consistency_ranges(from, to)
        .ok_or_else(|| anyhow::anyhow!("consistency sizes checked above"))?;
    range_hashes(conn, tenant_id, &ranges).await
}

/// The tree head at `size` leaves, from the stored subtrees.
pub async fn root_at<C: ConnectionTrait>(conn: &C, tenant_id: &str, size: u64) -> CoreResult<Hash> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    Ok(range_hashes(
        conn,
        tenant_id,
        &[Range {
            start: 0,
            end: size,
        }],
    )
    .await?[0])
}

#[cfg(test)]
mod tests {
    use governance_entities::enums::StepType;

    use super::*;
    use crate::{
        policy::SnapshotCache,
        runs::{self, StartRun},
        steps::{EVALUATION_BUDGET, RecordStep, Recorder},
        test_support::{TenantStore, run_row, tenant_store},
    };

    /// A tenant's store, the log's signing keys, and a recorder of steps.
    struct Log {
        store: Store,
        tenant: String,
        keys: KeyRing,
        recorder: Recorder,
        _at: TenantStore,
    }

    async fn log() -> Log {
        let at = tenant_store().await;
        let (keys, _) =
            KeyRing::load_or_create(&at.dir.path().join("log.key"), "gov").expect("signing key");
        Log {
            store: at.store.clone(),
            tenant: at.tenant_id.clone(),
            keys,
            recorder: Recorder::new(at.store.clone(), SnapshotCache::new(), EVALUATION_BUDGET),
            _at: at,
        }
    }

    impl Log {
        async fn start(&self) -> String {
            runs::start(&self.store, &self.tenant, StartRun::of_workflow("wf"))
                .await
                .expect("run")
                .value
                .id
        }

        async fn step(&self, run_id: &str) {
            let report = RecordStep {
                run_id: run_id.to_string(),
                step_index: None,
                step_type: StepType::LlmCall,
                tokens: 1,
                cost_micros: 0,
                content: None,
                tool_name: None,
                timestamp: None,
            };
            self.recorder
                .record(&self.tenant, report)
                .await
                .expect("step");
        }
    }

    /// A head interval of zero: every changed run is due on every pass.
    fn every_pass() -> LogSettings {
        LogSettings {
            head_interval: chrono::Duration::zero(),
            ..LogSettings::default()
        }
    }

    async fn due(store: &Store, settings: &LogSettings) -> usize {
        due_runs(store.db(), settings, 10).await.expect("due").len()
    }

    /// A run that takes a step between the sequencer's plan and its write is still marked
    /// logged, with the head appended and the time: it is due again only once the head
    /// interval has passed (or it ends), not on every pass; and the next append extends the log
    /// from that head.
    #[tokio::test]
    async fn a_run_that_moved_on_during_an_append_waits_for_the_interval_and_extends_the_log() {
        let log = log().await;
        let (store, tenant, keys) = (log.store.clone(), log.tenant.clone(), &log.keys);
        let run_id = log.start().await;
        log.step(&run_id).await;

        // The plan reads the run at step 1; a step is recorded before the append is written.
        let planned = run_row(&store, &run_id).await;
        let size = log_size(store.db(), &tenant).await.expect("size");
        let every_pass = every_pass();
        let statements = append_statements(
            store.db(),
            keys,
            &every_pass,
            &tenant,
            size,
            std::slice::from_ref(&planned),
        )
        .await
        .expect("plan");
        log.step(&run_id).await;
        store.commit_statements(statements).await.expect("append");

        let after = run_row(&store, &run_id).await;
        assert_ne!(after.trace_head_hash, planned.trace_head_hash);
        assert_eq!(
            after.logged_head_hash.as_deref(),
            Some(planned.trace_head_hash.as_str())
        );
        assert!(after.logged_at.is_some());
        let hourly = LogSettings {
            head_interval: chrono::Duration::hours(1),
            ..LogSettings::default()
        };
        assert_eq!(
            due(&store, &hourly).await,
            0,
            "logged a moment ago: not due for an hour"
        );
        assert_eq!(
            due(&store, &every_pass).await,
            1,
            "its newer head is due once the interval has passed"
        );

        // The newer head extends the log from the one appended.
        let signed = sequence(&store, keys, &every_pass).await.expect("sequence");
        assert_eq!(signed.len(), 1);
        assert_eq!(signed[0].value.tree_size, 2);
        let logged = run_row(&store, &run_id).await;
        assert_eq!(
            logged.logged_head_hash.as_deref(),
            Some(logged.trace_head_hash.as_str())
        );
        assert_eq!(due(&store, &every_pass).await, 0);
    }

    /// A run due for a new leaf is vetted against its latest leaf, among several, and a run not
    /// yet logged against none: a stale read of a run logged since is refused, its current read
    /// and a run never logged pass.
    #[tokio::test]
    async fn a_due_run_is_vetted_against_its_latest_leaf() {
        let log = log().await;
        let (store, tenant) = (&log.store, log.tenant.as_str());
        let logged = log.start().await;
        let mut stale = None;
        for at in 0..3 {
            log.step(&logged).await;
            sequence(store, &log.keys, &every_pass())
                .await
                .expect("sequence");
            if at == 0 {
                stale = Some(run_row(store, &logged).await);
            }
        }
        assert_eq!(log_size(store.db(), tenant).await.expect("size"), 3);
        let never_logged = log.start().await;

        let current = run_row(store, &logged).await;
        let stale = stale.expect("read after the first leaf");
        assert_eq!((stale.step_count, current.step_count), (1, 3));
        let vetted = runs_extending_log(
            store.db(),
            tenant,
            vec![stale, current, run_row(store, &never_logged).await],
        )
        .await
        .expect("vetted");
        let passed: Vec<(&str, i64)> = vetted
            .iter()
            .map(|r| (r.id.as_str(), r.step_count))
            .collect();
        assert_eq!(passed, [(logged.as_str(), 3), (never_logged.as_str(), 0)]);
    }
}
