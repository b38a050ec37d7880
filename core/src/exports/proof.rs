//! The proof a bundle carries, so that anyone holding it can check it offline (`governance
//! verify`, or any implementation of `docs/verifying.md`) without trusting the service:
//!
//! - the run's record: the genesis, and every step's hashed document with its chain hashes;
//! - the anchor: the transparency-log leaf of the run's head, its inclusion proof, and the
//!   signed checkpoint it proves into, with the signing key's id and verifier key;
//! - the export signature: a signed note over the digest of each top-level section of the
//!   bundle, so that a section edited after export is named even where no record binds it.

use serde_json::{Map, Value, json};

use crate::{
    canonical, chain,
    error::{CoreError, CoreResult},
    hashing::sha256_hex,
    signing::{SigningKey, VerifierKey},
    transparency::InclusionProof,
};

use super::bundles::BundleInput;

/// The version of the `verification` object's layout.
pub const BUNDLE_PROOF_FORMAT: i64 = 1;
/// The first line of an export signature's signed text.
pub const EXPORT_SIGNATURE_HEADER: &str = "governance-export/v1";

/// How the record of a bundle is anchored: the leaf holding the run's head as the bundle shows
/// it, and the key that signed the checkpoint.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub inclusion: InclusionProof,
    pub key: Option<VerifierKey>,
}

/// The `verification` object of a bundle: the service's own check at export time, and
/// everything an offline verifier needs.
pub fn verification_object(input: &BundleInput) -> Value {
    let run = &input.run;
    let format = chain::RecordFormat::of(run);
    let genesis_hash = chain::genesis(run, &input.snapshot.content_hash);
    let genesis = match format {
        chain::RecordFormat::V1 => Value::Null,
        chain::RecordFormat::V2 => Value::String(canonical::to_string(&chain::genesis_document(
            run,
            &input.snapshot.content_hash,
        ))),
    };
    // Each step's entry, and right after a held step its approval's decision.
    let mut entries: Vec<Value> = Vec::with_capacity(input.steps.len() + input.decisions.len());
    for step in &input.steps {
        entries.push(json!({
            "document": chain::step_document(run, step),
            "prevHash": step.prev_hash,
            "entryHash": step.entry_hash,
        }));
        if let Some(decided) = input
            .decisions
            .iter()
            .find(|d| d.step_index == step.step_index)
        {
            entries.push(json!({
                "document": chain::approval_document(run, decided),
                "prevHash": decided.prev_hash,
                "entryHash": decided.entry_hash,
            }));
        }
    }
    let anchor = input.anchor.as_ref();
    let proof = anchor.map(|a| &a.inclusion);
    json!({
        "format": BUNDLE_PROOF_FORMAT,
        "intact": input.verification.intact,
        "reproduced": input.verification.reproduced,
        "headHash": run.trace_head_hash,
        "stepsChecked": input.verification.steps_checked,
        "mismatches": input.verification.mismatches.len(),
        "recordFormat": format.number(),
        "genesis": genesis,
        "genesisHash": genesis_hash,
        // Format 1's genesis is not a document: a verifier recomputes it from these two.
        "genesisParts": match format {
            chain::RecordFormat::V1 => json!({
                "runId": run.id,
                "snapshotContentHash": input.snapshot.content_hash,
            }),
            chain::RecordFormat::V2 => Value::Null,
        },
        "entries": entries,
        "leaf": proof.map(|p| json!({
            "index": p.leaf.leaf_index,
            "data": p.leaf.leaf_data,
            "hash": p.leaf.leaf_hash,
        })),
        "inclusionProof": proof.map(|p| json!({
            "leafIndex": p.leaf.leaf_index,
            "treeSize": p.checkpoint.tree_size,
            "hashes": p.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        })),
        "checkpoint": proof.map(|p| p.checkpoint.note.clone()),
        "keyId": proof.map(|p| p.checkpoint.key_id.clone()),
        "verifierKey": anchor.and_then(|a| a.key.as_ref()).map(VerifierKey::encoded),
    })
}

/// The digest of each top-level section of `bundle` that the export signature covers: every
/// key but `verification.exportSignature` itself, as `sha256(RFC 8785 form)` in hex.
pub fn section_digests(bundle: &Map<String, Value>) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = bundle
        .iter()
        .map(|(key, value)| {
            let digest = if key == "verification" {
                let mut value = value.clone();
                if let Some(object) = value.as_object_mut() {
                    object.remove("exportSignature");
                }
                sha256_hex(canonical::to_string(&value))
            } else {
                sha256_hex(canonical::to_string(value))
            };
            (key.clone(), digest)
        })
        .collect();
    sections.sort();
    sections
}

/// The text an export signature signs: the header, the export id, then one `<section>
/// <digest>` line per section in byte order of the names.
pub fn export_signature_text(export_id: &str, sections: &[(String, String)]) -> String {
    let mut text = format!("{EXPORT_SIGNATURE_HEADER}\n{export_id}\n");
    for (name, digest) in sections {
        text.push_str(name);
        text.push(' ');
        text.push_str(digest);
        text.push('\n');
    }
    text
}

/// Sign `bundle`: add `verification.exportSignature`, a signed note over its section digests.
pub fn seal(bundle: &mut Value, key: &SigningKey) -> CoreResult<()> {
    let not_object = || CoreError::Internal(anyhow::anyhow!("a bundle is a JSON object"));
    let object = bundle.as_object_mut().ok_or_else(not_object)?;
    let export_id = object
        .get("exportId")
        .and_then(Value::as_str)
        .ok_or_else(|| CoreError::Internal(anyhow::anyhow!("a bundle names its export")))?
        .to_string();
    let text = export_signature_text(&export_id, &section_digests(object));
    let note = key.sign_note(&text);
    object
        .get_mut("verification")
        .and_then(Value::as_object_mut)
        .ok_or_else(not_object)?
        .insert("exportSignature".to_string(), Value::String(note));
    Ok(())
}
