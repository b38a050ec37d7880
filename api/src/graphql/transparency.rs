//! The tenant's transparency log: its latest signed checkpoint, inclusion proofs of runs,
//! consistency proofs between sizes, and the stream of new checkpoints. Hashes are lowercase hex
//! here; the checkpoint note itself carries its root in base64, as the checkpoint format says.

use async_graphql::{Context, Object, SimpleObject};
use governance_core::{
    merkle::Hash,
    transparency::{self, CheckpointBody},
};
use governance_entities::log_checkpoint;

use super::{error::GqlResultExt, principal, scalars::DateTime, state};

pub struct Checkpoint(pub log_checkpoint::Model);

/// A signed tree head of the tenant's log (C2SP `tlog-checkpoint`, as a signed note).
#[Object]
impl Checkpoint {
    /// Leaves in the log at this checkpoint.
    async fn tree_size(&self) -> i64 {
        self.0.tree_size
    }
    /// The RFC 6962 tree head, hex.
    async fn root_hash(&self) -> &str {
        &self.0.root_hash
    }
    /// The log's origin line (`<prefix>/<tenant id>`).
    async fn origin(&self) -> Option<String> {
        CheckpointBody::parse(&self.0.note).map(|b| b.origin)
    }
    /// The signed note, byte for byte: origin, size and base64 root, a blank line, and the
    /// signature line. Verify it with the key `keyId` names (`signingKeys`).
    async fn note(&self) -> &str {
        &self.0.note
    }
    /// The id of the key that signed it.
    async fn key_id(&self) -> &str {
        &self.0.key_id
    }
    /// When it was signed.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
}

pub struct TransparencyLog(Option<log_checkpoint::Model>);

/// The tenant's transparency log now.
#[Object]
impl TransparencyLog {
    /// Leaves in the log at its latest checkpoint (0 before the first).
    async fn size(&self) -> i64 {
        self.0.as_ref().map_or(0, |c| c.tree_size)
    }
    /// The latest signed checkpoint; null before the first.
    async fn checkpoint(&self) -> Option<Checkpoint> {
        self.0.clone().map(Checkpoint)
    }
}

pub struct InclusionProof(pub transparency::InclusionProof);

/// A run's latest logged head and the RFC 6962 proof that it is in a signed checkpoint.
#[Object]
impl InclusionProof {
    /// The leaf's position in the log (0-based).
    async fn leaf_index(&self) -> i64 {
        self.0.leaf.leaf_index
    }
    /// The size of the tree the proof is for (the checkpoint's).
    async fn tree_size(&self) -> i64 {
        self.0.checkpoint.tree_size
    }
    /// The leaf's data: the RFC 8785 run-head document `docs/verifying.md` specifies.
    async fn leaf(&self) -> &str {
        &self.0.leaf.leaf_data
    }
    /// `SHA-256(0x00 ‖ leaf)`, hex.
    async fn leaf_hash(&self) -> &str {
        &self.0.leaf.leaf_hash
    }
    /// The run head the leaf holds.
    async fn head_hash(&self) -> &str {
        &self.0.leaf.head_hash
    }
    /// The RFC 6962 audit path, leaf side first, hex.
    async fn hashes(&self) -> Vec<String> {
        hex_all(&self.0.hashes)
    }
    /// The signed checkpoint whose root the path leads to.
    async fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.0.checkpoint.clone())
    }
}

/// The RFC 6962 proof that the log at `fromSize` leaves is a prefix of the log at `toSize`.
#[derive(SimpleObject)]
pub struct ConsistencyProof {
    /// The earlier size.
    pub from_size: i64,
    /// The later size.
    pub to_size: i64,
    /// The proof's hashes, hex, in RFC 6962 order.
    pub hashes: Vec<String>,
}

fn hex_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

#[derive(Default)]
pub struct TransparencyQuery;

#[Object]
impl TransparencyQuery {
    /// The tenant's transparency log: its size and latest signed checkpoint.
    async fn transparency_log(&self, ctx: &Context<'_>) -> async_graphql::Result<TransparencyLog> {
        let principal = principal(ctx)?;
        let latest = transparency::latest_checkpoint(&state(ctx).db, &principal.tenant_id)
            .await
            .gql()?;
        Ok(TransparencyLog(latest))
    }

    /// The proof that the tenant's log at `fromSize` leaves is a prefix of it at `toSize`
    /// (`0 < fromSize ≤ toSize ≤` the latest checkpoint's size, else `BAD_USER_INPUT`).
    async fn consistency_proof(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The earlier size (at least 1).")] from_size: i64,
        #[graphql(desc = "The later size (at most the latest checkpoint's).")] to_size: i64,
    ) -> async_graphql::Result<ConsistencyProof> {
        let principal = principal(ctx)?;
        let (from, to) = (from_size.max(0) as u64, to_size.max(0) as u64);
        let hashes =
            transparency::consistency_proof(&state(ctx).db, &principal.tenant_id, from, to)
                .await
                .gql()?;
        Ok(ConsistencyProof {
            from_size,
            to_size,
            hashes: hex_all(&hashes),
        })
    }
}

pub struct CheckpointEvent {
    event: governance_entities::event::Model,
    checkpoint: Option<log_checkpoint::Model>,
}

/// A checkpoint the tenant's log was signed at, from the outbox (`CHECKPOINT_SIGNED`). Keep
/// them: a later log that is not an extension of one you hold is detectable
/// (`consistencyProof`). Resume after `cursor` to lose nothing.
#[Object]
impl CheckpointEvent {
    /// The position in the tenant's event sequence: pass it as `after` to resume.
    async fn cursor(&self) -> String {
        self.event.seq.to_string()
    }
    /// The signed checkpoint.
    async fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint.clone().map(Checkpoint)
    }
    /// When it was committed.
    async fn occurred_at(&self) -> DateTime {
        self.event.created_at.into()
    }
}

#[derive(Default)]
pub struct TransparencySubscription;

#[async_graphql::Subscription]
impl TransparencySubscription {
    /// Every checkpoint the tenant's log is signed at: first those stored after `after` (from
    /// the beginning when omitted), then live, in order, with no gap and no duplicate.
    async fn checkpoint_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> async_graphql::Result<impl futures::Stream<Item = CheckpointEvent> + use<>> {
        use futures::StreamExt;
        let (stream, db, tenant_id) =
            super::incidents::tenant_events_of(ctx, after.as_deref(), &["CHECKPOINT_SIGNED"])?;
        let stream = stream.then(move |event| {
            let (db, tenant_id) = (db.clone(), tenant_id.clone());
            async move {
                let size = event.subject_id.parse::<i64>().unwrap_or(-1);
                let checkpoint = transparency::checkpoint_at(&db, &tenant_id, size)
                    .await
                    .unwrap_or_else(|err| {
                        tracing::error!(error = %err, "could not read a signed checkpoint");
                        None
                    });
                CheckpointEvent { event, checkpoint }
            }
        });
        Ok(stream)
    }
}
