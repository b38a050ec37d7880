//! The transparency log's sequencer, run by the sweeper every tick: appends the run heads that
//! are due, signs a checkpoint of each tenant log that grew, publishes `CHECKPOINT_SIGNED`, and
//! writes each checkpoint to the witness file when one is configured (a file the database's
//! administrator does not control, against which a later log can be checked).

use std::{io::Write, path::PathBuf, sync::Arc};

use governance_core::{signing::KeyRing, transparency};
use serde_json::json;

use crate::{Dispatcher, WorkerDeps};

/// What the sequencer needs beside the store.
#[derive(Clone)]
pub struct LogDeps {
    pub keys: Arc<KeyRing>,
    pub settings: transparency::LogSettings,
    /// Append every checkpoint here (JSON lines), if set.
    pub witness_file: Option<PathBuf>,
}

/// One pass; returns how many checkpoints it signed.
pub async fn sequence_once(deps: &WorkerDeps) -> anyhow::Result<usize> {
    let signed = transparency::sequence(&deps.store, &deps.log.keys, &deps.log.settings).await?;
    let count = signed.len();
    let dispatcher = Dispatcher::new(deps.jobs.clone(), deps.bus.clone());
    for committed in signed {
        publish(&deps.log, &dispatcher, committed).await;
    }
    Ok(count)
}

/// Publish a committed checkpoint: write it to the witness file (when one is configured), then
/// deliver its `CHECKPOINT_SIGNED` event.
pub async fn publish(
    log: &LogDeps,
    dispatcher: &Dispatcher,
    committed: governance_core::outcome::Committed<governance_entities::log_checkpoint::Model>,
) {
    if let Some(path) = &log.witness_file
        && let Err(err) = witness(path, &committed.value)
    {
        tracing::error!(error = %err, path = %path.display(), "could not write a checkpoint to the witness file");
    }
    dispatcher.dispatch(committed).await;
}

/// Append `checkpoint` to the witness file as one JSON line, synced.
fn witness(
    path: &std::path::Path,
    checkpoint: &governance_entities::log_checkpoint::Model,
) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let line = json!({
        "tenantId": checkpoint.tenant_id,
        "treeSize": checkpoint.tree_size,
        "rootHash": checkpoint.root_hash,
        "keyId": checkpoint.key_id,
        "checkpoint": checkpoint.note,
    });
    writeln!(file, "{line}")?;
    file.sync_data()
}
