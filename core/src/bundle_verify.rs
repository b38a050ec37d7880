//! Verify an exported bundle (JSON) offline: no database, no network, nothing from the service
//! but the bundle and the keys the verifier trusts. `governance verify FILE [--key KEY]` prints
//! this; `docs/verifying.md` specifies every check so that anyone can do the same.
//!
//! 1. The export signature: a signed note by a trusted key over the digest of every top-level
//!    section. A section edited after export is named.
//! 2. The record: the genesis (bound to the run's header and snapshot as shown), each entry's
//!    document in canonical form, its chain link and entry hash, recomputed; each step, total,
//!    cumulative figure and hash the bundle shows is compared field by field with the entries.
//! 3. The anchor: the leaf holds the recomputed head; its hash, its inclusion proof, and the
//!    checkpoint signed by a trusted key. A record rewritten consistently (every later hash and
//!    the head recomputed) fails here: the signed checkpoint commits to the head as it was.
//!
//! Every failure names the bundle field it concerns, by path (`steps[3].tokens`,
//! `verification.entries[3].document`, `verification.checkpoint`).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    chain::{self, RecordFormat},
    exports::proof::{BUNDLE_PROOF_FORMAT, EXPORT_SIGNATURE_HEADER, section_digests},
    hashing::sha256_hex,
    merkle::{self, Hash},
    signing::{NoteError, VerifierKey, verify_note},
    transparency::CheckpointBody,
};

/// One check that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// `BUNDLE_FORMAT`, `EXPORT_SIGNATURE`, `SECTION_ALTERED`, `SECTION_ADDED`,
    /// `SECTION_MISSING`, `UNKNOWN_KEY`, `SERVICE_CHECK`, `RECORD_FORMAT`, `GENESIS`,
    /// `DOCUMENT_FORMAT`, `STEP_INDEX`, `PREV_HASH`, `ENTRY_HASH`, `RECORD` (a shown field
    /// differs from the record), `NOT_ANCHORED`, `LOG_LEAF`, `LEAF_HASH`, `INCLUSION_PROOF`,
    /// `CHECKPOINT`, `CHECKPOINT_SIGNATURE`.
    pub kind: &'static str,
    /// The bundle field concerned, as a path from the top (`steps[3].tokens`).
    pub path: String,
    pub message: String,
}

/// What verifying a bundle found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleReport {
    pub run_id: Option<String>,
    pub record_format: Option<i32>,
    /// Steps whose entries were checked.
    pub steps: usize,
    pub head_hash: Option<String>,
    /// The signed checkpoint's origin and size, when it parsed.
    pub checkpoint_origin: Option<String>,
    pub checkpoint_size: Option<u64>,
    /// The key id that verified the checkpoint.
    pub key_id: Option<String>,
    /// The keys were not given: the bundle's own `verification.verifierKey` was used, which
    /// proves integrity but not who signed.
    pub key_from_bundle: bool,
    pub failures: Vec<Failure>,
}

impl BundleReport {
    /// Every check held.
    pub fn verified(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The step fields a bundle shows, and the document field each is recorded under (`None`:
/// the entry's own hashes).
const STEP_FIELDS: &[(&str, &str)] = &[
    ("stepIndex", "stepIndex"),
    ("timestamp", "timestamp"),
    ("tokens", "tokens"),
    ("costMicros", "costMicros"),
    ("toolName", "toolName"),
    ("contentHash", "contentHash"),
    ("status", "status"),
    ("decision", "decision"),
    ("reason", "reason"),
    ("isInflection", "isInflection"),
];

struct Checker<'a> {
    bundle: &'a Map<String, Value>,
    failures: Vec<Failure>,
}

impl Checker<'_> {
    fn fail(&mut self, kind: &'static str, path: impl Into<String>, message: impl Into<String>) {
        self.failures.push(Failure {
            kind,
            path: path.into(),
            message: message.into(),
        });
    }

    /// The value at a dotted path of plain keys (no indices), if any.
    fn at(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.bundle.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        Some(value)
    }

    /// Compare a field the bundle shows (when it shows it) with what the record says.
    fn bound(&mut self, path: &str, recorded: &Value) {
        if let Some(shown) = self.at(path)
            && shown != recorded
        {
            let message = format!("shows {shown}, the record says {recorded}");
            self.fail("RECORD", path, message);
        }
    }
}

fn text(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str)
}

fn hex_hash(text: &str) -> Option<Hash> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Verify a bundle file's bytes: they must be the bundle's canonical (RFC 8785) form, exactly
/// as exported, so that no reader can see anything but what was verified (a duplicate member
/// name, for one, is read differently by different JSON parsers), then [`verify_bundle`].
/// Returns the bundle as read, with the report.
pub fn verify_bundle_bytes(
    bytes: &[u8],
    keys: &[VerifierKey],
) -> Result<(Value, BundleReport), String> {
    let bundle: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut report = verify_bundle(&bundle, keys);
    if crate::canonical::to_string(&bundle).as_bytes() != bytes {
        report.failures.insert(
            0,
            Failure {
                kind: "BUNDLE_FORMAT",
                path: String::new(),
                message: "the file is not the bundle's canonical (RFC 8785) form as exported: it \
                          was edited or re-serialised (reformatted, reordered, or with a \
                          duplicate member name)"
                    .to_string(),
            },
        );
    }
    Ok((bundle, report))
}

/// Verify `bundle` against `keys`. With no keys, the bundle's own verifier key is used and the
/// report says so.
pub fn verify_bundle(bundle: &Value, keys: &[VerifierKey]) -> BundleReport {
    let mut report = BundleReport {
        run_id: None,
        record_format: None,
        steps: 0,
        head_hash: None,
        checkpoint_origin: None,
        checkpoint_size: None,
        key_id: None,
        key_from_bundle: false,
        failures: Vec::new(),
    };
    let Some(object) = bundle.as_object() else {
        report.failures.push(Failure {
            kind: "BUNDLE_FORMAT",
            path: String::new(),
            message: "a bundle is a JSON object".into(),
        });
        return report;
    };
    let mut check = Checker {
        bundle: object,
        failures: Vec::new(),
    };
    let empty = Map::new();
    let verification = match object.get("verification").and_then(Value::as_object) {
        Some(v) => v,
        None => {
            check.fail(
                "BUNDLE_FORMAT",
                "verification",
                "the bundle carries no verification object",
            );
            &empty
        }
    };
    if !verification.is_empty()
        && verification.get("format").and_then(Value::as_i64) != Some(BUNDLE_PROOF_FORMAT)
    {
        check.fail(
            "BUNDLE_FORMAT",
            "verification.format",
            format!("this verifier reads verification format {BUNDLE_PROOF_FORMAT}"),
        );
    }

    // The keys: those given, or the bundle's own.
    let mut keys = keys.to_vec();
    let bundle_key = text(verification.get("verifierKey")).map(VerifierKey::parse);
    if let Some(Err(err)) = &bundle_key {
        check.fail("BUNDLE_FORMAT", "verification.verifierKey", err.to_string());
    }
    if keys.is_empty() {
        match bundle_key {
            Some(Ok(key)) => {
                report.key_from_bundle = true;
                keys.push(key);
            }
            _ => check.fail(
                "UNKNOWN_KEY",
                "verification.verifierKey",
                "no key was given and the bundle names none",
            ),
        }
    }

    check_export_signature(&mut check, verification, &keys);
    check_service_check(&mut check, verification);
    let record = check_record(&mut check, verification);
    if let Some(record) = &record {
        report.run_id = Some(record.run_id.clone());
        report.record_format = Some(record.format.number());
        report.steps = record.entries.len();
        report.head_hash = Some(record.head.clone());
        check_shown(&mut check, record);
    }
    if let Some(anchor) = check_anchor(&mut check, verification, record.as_ref(), &keys) {
        report.checkpoint_origin = Some(anchor.origin);
        report.checkpoint_size = Some(anchor.size);
        report.key_id = anchor.key_id;
    }
    report.failures = check.failures;
    report
}

/// The export signature, and every section's digest against it.
fn check_export_signature(
    check: &mut Checker,
    verification: &Map<String, Value>,
    keys: &[VerifierKey],
) {
    let path = "verification.exportSignature";
    let Some(note) = text(verification.get("exportSignature")) else {
        check.fail("EXPORT_SIGNATURE", path, "the bundle is not signed");
        return;
    };
    let signed = match verify_note(note, keys) {
        Ok(verified) => verified.text,
        Err(err) => {
            let kind = match err {
                NoteError::UnknownKey(_) => "UNKNOWN_KEY",
                _ => "EXPORT_SIGNATURE",
            };
            check.fail(kind, path, err.to_string());
            return;
        }
    };
    let mut lines = signed.lines();
    if lines.next() != Some(EXPORT_SIGNATURE_HEADER) {
        check.fail(
            "EXPORT_SIGNATURE",
            path,
            format!("the signed text does not start with {EXPORT_SIGNATURE_HEADER}"),
        );
        return;
    }
    let signed_export = lines.next().unwrap_or_default();
    let mut signed_sections: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(' '))
        .map(|(name, digest)| (name.to_string(), digest.to_string()))
        .collect();
    signed_sections.sort();
    let shown = section_digests(check.bundle);
    let export_id = text(check.bundle.get("exportId")).unwrap_or_default();
    if signed_export != export_id {
        check.fail(
            "SECTION_ALTERED",
            "exportId",
            format!("signed for export {signed_export}, shows {export_id}"),
        );
    }
    for (name, digest) in &shown {
        match signed_sections.iter().find(|(n, _)| n == name) {
            None => check.fail(
                "SECTION_ADDED",
                name.as_str(),
                "this section was not in the bundle when it was signed",
            ),
            Some((_, signed)) if signed != digest && name != "exportId" => check.fail(
                "SECTION_ALTERED",
                name.as_str(),
                format!(
                    "altered after export: it hashes to {digest}, the signature covers {signed}"
                ),
            ),
            Some(_) => {}
        }
    }
    for (name, _) in &signed_sections {
        if !shown.iter().any(|(n, _)| n == name) {
            check.fail(
                "SECTION_MISSING",
                name.as_str(),
                "this signed section was removed",
            );
        }
    }
}

/// What the service itself found when it exported: it must have found the record intact.
fn check_service_check(check: &mut Checker, verification: &Map<String, Value>) {
    if verification.is_empty() {
        return;
    }
    for field in ["intact", "reproduced"] {
        if verification.get(field) != Some(&Value::Bool(true)) {
            check.fail(
                "SERVICE_CHECK",
                format!("verification.{field}"),
                format!("the service's own check at export time did not find the record {field}"),
            );
        }
    }
    if verification.get("mismatches").and_then(Value::as_i64) != Some(0) {
        check.fail(
            "SERVICE_CHECK",
            "verification.mismatches",
            "the service's own check at export time found mismatches",
        );
    }
}

/// The fields of an approval decision that the bundle's `approvals` shows as its entry records
/// them.
const APPROVAL_FIELDS: [&str; 7] = [
    "approvalId",
    "stepIndex",
    "status",
    "decision",
    "decidedBy",
    "note",
    "decidedAt",
];

/// Why a step entry at position `i` cannot follow the entries before it, if it cannot: the last
/// step was held and no approval decided it, or its approval stopped the run.
fn after_held(documents: &[Value], approvals: &[(usize, Value)], i: usize) -> Option<&'static str> {
    let held = documents
        .last()
        .is_some_and(|d| text(d.get("decision")) == Some("HOLD"));
    if !held {
        return None;
    }
    match approvals.last() {
        Some((at, decided)) if *at + 1 == i => (text(decided.get("decision")) == Some("STOP"))
            .then_some("a step was recorded after an approval stopped the run"),
        _ => Some("the run went on past a held step that no approval decided"),
    }
}

/// The record as recomputed from the entries.
struct Record {
    format: RecordFormat,
    run_id: String,
    tenant_id: Option<String>,
    /// Each step's parsed document, in step order.
    entries: Vec<Value>,
    /// Where each step's entry is in `verification.entries`.
    entry_at: Vec<usize>,
    /// Each approval decision's parsed document (an entry of type `approval`, right after the
    /// held step it decides), with its place in `verification.entries`.
    approvals: Vec<(usize, Value)>,
    head: String,
}

fn check_record(check: &mut Checker, verification: &Map<String, Value>) -> Option<Record> {
    if verification.is_empty() {
        return None;
    }
    let number = verification.get("recordFormat").and_then(Value::as_i64);
    let Some(format) = number
        .and_then(|n| i32::try_from(n).ok())
        .and_then(RecordFormat::from_number)
    else {
        check.fail(
            "RECORD_FORMAT",
            "verification.recordFormat",
            "record format 1 or 2",
        );
        return None;
    };
    let recorded_genesis = text(verification.get("genesisHash")).unwrap_or_default();
    let entries = verification.get("entries").and_then(Value::as_array);
    let first_prev = entries
        .and_then(|e| e.first())
        .and_then(|e| text(e.get("prevHash")))
        .or_else(|| text(verification.get("headHash")));
    // The genesis as its document (or format 1's parts) gives it; when that differs from the
    // recorded `genesisHash`, the chain says which of the two was altered.
    let genesis_mismatch = |check: &mut Checker, computed: &str, document_path: &str| -> String {
        if computed == recorded_genesis {
            return computed.to_string();
        }
        if first_prev == Some(computed) {
            check.fail(
                "GENESIS",
                "verification.genesisHash",
                format!("altered: the genesis hashes to {computed}"),
            );
            computed.to_string()
        } else {
            check.fail(
                "GENESIS",
                document_path,
                format!("altered: it hashes to {computed}, not to the recorded {recorded_genesis}"),
            );
            recorded_genesis.to_string()
        }
    };
    // Each format carries its genesis its own way; the other way's field must be null.
    let (other_field, message) = match format {
        RecordFormat::V1 => (
            "genesis",
            "a format-1 record has no genesis document: the record format or this field was altered",
        ),
        RecordFormat::V2 => (
            "genesisParts",
            "a format-2 record carries its genesis as a document, not as parts",
        ),
    };
    if verification.get(other_field).is_some_and(|g| !g.is_null()) {
        let path = match format {
            RecordFormat::V1 => "verification.recordFormat".to_string(),
            RecordFormat::V2 => format!("verification.{other_field}"),
        };
        check.fail("RECORD_FORMAT", path, message);
        return None;
    }
    let (run_id, tenant_id, genesis_hash) = match format {
        RecordFormat::V2 => {
            let (run_id, tenant_id, computed) = check_genesis_v2(check, verification)?;
            let start = genesis_mismatch(check, &computed, "verification.genesis");
            (run_id, tenant_id, start)
        }
        RecordFormat::V1 => {
            let parts = verification.get("genesisParts");
            let (Some(run_id), Some(snapshot)) = (
                text(parts.and_then(|p| p.get("runId"))),
                text(parts.and_then(|p| p.get("snapshotContentHash"))),
            ) else {
                check.fail(
                    "BUNDLE_FORMAT",
                    "verification.genesisParts",
                    "a format-1 record carries its run id and snapshot hash",
                );
                return None;
            };
            let computed = chain::genesis_v1(run_id, snapshot);
            let start = genesis_mismatch(check, &computed, "verification.genesisParts");
            check.bound("run.id", &Value::String(run_id.to_string()));
            check.bound("snapshot.contentHash", &Value::String(snapshot.to_string()));
            (run_id.to_string(), None, start)
        }
    };

    let Some(entries) = entries else {
        check.fail("BUNDLE_FORMAT", "verification.entries", "no entries");
        return None;
    };
    let mut documents: Vec<Value> = Vec::with_capacity(entries.len());
    let mut entry_at = Vec::with_capacity(entries.len());
    let mut approvals = Vec::new();
    let mut chain_hash = genesis_hash;
    for (i, entry) in entries.iter().enumerate() {
        let path = format!("verification.entries[{i}]");
        let document_text = text(entry.get("document")).unwrap_or_default();
        let prev = text(entry.get("prevHash")).unwrap_or_default();
        let recorded = text(entry.get("entryHash")).unwrap_or_default();
        let document: Value = match serde_json::from_str(document_text) {
            Ok(document) => document,
            Err(_) => {
                check.fail("DOCUMENT_FORMAT", format!("{path}.document"), "not JSON");
                Value::Null
            }
        };
        if !document.is_null() && chain::canonical_form(format, &document) != document_text {
            check.fail(
                "DOCUMENT_FORMAT",
                format!("{path}.document"),
                "not in the record format's canonical form",
            );
        }
        // A step's entry records the next step; an approval's decides the step just before it,
        // which must have been held (and not decided already).
        let is_approval = text(document.get("type")) == Some("approval");
        let steps_so_far = documents.len() as i64;
        if is_approval {
            let held = documents.last().is_some_and(|d| {
                text(d.get("decision")) == Some("HOLD")
                    && approvals
                        .last()
                        .is_none_or(|(at, _): &(usize, Value)| *at + 1 != i)
            });
            let on_timeout = documents
                .last()
                .and_then(|d| d.pointer("/detail/hold/onTimeout"))
                .and_then(Value::as_str);
            if let Some(problem) = crate::approvals::decision_problem(
                text(document.get("status")).unwrap_or_default(),
                text(document.get("decision")).unwrap_or_default(),
                text(document.get("decidedBy")),
                on_timeout,
                false,
            ) {
                check.fail("APPROVAL_ENTRY", format!("{path}.document"), problem);
            }
            if !held || document.get("stepIndex").and_then(Value::as_i64) != Some(steps_so_far - 1)
            {
                check.fail(
                    "STEP_INDEX",
                    format!("{path}.document"),
                    format!(
                        "an approval entry must follow the held step it decides (step {})",
                        steps_so_far - 1
                    ),
                );
            }
        } else if let Some(problem) = after_held(&documents, &approvals, i) {
            check.fail("APPROVAL_ENTRY", format!("{path}.document"), problem);
        } else if document.get("stepIndex").and_then(Value::as_i64) != Some(steps_so_far) {
            check.fail(
                "STEP_INDEX",
                format!("{path}.document"),
                format!("entry {i} does not record step {steps_so_far}"),
            );
        }
        if text(document.get("runId")) != Some(run_id.as_str()) {
            check.fail(
                "RECORD",
                format!("{path}.document"),
                format!("the entry is not of run {run_id}"),
            );
        }
        if prev != chain_hash {
            check.fail(
                "PREV_HASH",
                format!("{path}.prevHash"),
                format!("the chain gives {chain_hash}"),
            );
        }
        let computed = chain::entry_hash(&chain_hash, document_text);
        if computed == recorded {
            chain_hash = computed;
        } else {
            // Which was altered: the hash (the chain goes on from what the document gives) or
            // the document (the chain goes on from the recorded hash).
            let next = entries
                .get(i + 1)
                .and_then(|e| text(e.get("prevHash")))
                .or_else(|| text(verification.get("headHash")));
            if next == Some(computed.as_str()) {
                check.fail(
                    "ENTRY_HASH",
                    format!("{path}.entryHash"),
                    format!("altered: the document hashes to {computed}"),
                );
                chain_hash = computed;
            } else {
                check.fail(
                    "ENTRY_HASH",
                    format!("{path}.document"),
                    format!("altered: it hashes to {computed}, not to the recorded {recorded}"),
                );
                chain_hash = recorded.to_string();
            }
        }
        if is_approval {
            approvals.push((i, document));
        } else {
            entry_at.push(i);
            documents.push(document);
        }
    }
    if text(verification.get("headHash")) != Some(chain_hash.as_str()) {
        check.fail(
            "RECORD",
            "verification.headHash",
            format!("the chain ends in {chain_hash}"),
        );
    }
    Some(Record {
        format,
        run_id,
        tenant_id,
        entries: documents,
        entry_at,
        approvals,
        head: chain_hash,
    })
}

/// A format-2 genesis: canonical and binding the run shown. Returns the run id, the tenant id
/// and the genesis's hash.
fn check_genesis_v2(
    check: &mut Checker,
    verification: &Map<String, Value>,
) -> Option<(String, Option<String>, String)> {
    let path = "verification.genesis";
    let Some(genesis_text) = text(verification.get("genesis")) else {
        check.fail(
            "BUNDLE_FORMAT",
            path,
            "a format-2 record carries its genesis",
        );
        return None;
    };
    let Ok(genesis) = serde_json::from_str::<Value>(genesis_text) else {
        check.fail("DOCUMENT_FORMAT", path, "not JSON");
        return None;
    };
    if chain::canonical_form(RecordFormat::V2, &genesis) != genesis_text {
        check.fail("DOCUMENT_FORMAT", path, "not in RFC 8785 canonical form");
    }
    if genesis.get("type").and_then(Value::as_str) != Some("genesis")
        || genesis.get("format").and_then(Value::as_i64) != Some(2)
    {
        check.fail("GENESIS", path, "not a format-2 genesis document");
    }
    for (shown, field) in [
        ("run.id", "runId"),
        ("run.workflowId", "workflowId"),
        ("run.agent", "agent"),
        ("run.triggeredBy", "triggeredBy"),
        ("run.startedAt", "startedAt"),
        ("snapshot.contentHash", "snapshotContentHash"),
        ("keyFacts.runId", "runId"),
    ] {
        let recorded = genesis.get(field).cloned().unwrap_or(Value::Null);
        check.bound(shown, &recorded);
    }
    let run_id = text(genesis.get("runId"))?.to_string();
    let tenant_id = text(genesis.get("tenantId")).map(str::to_string);
    Some((run_id, tenant_id, sha256_hex(genesis_text)))
}

/// Everything the bundle shows about the steps, against the entries.
fn check_shown(check: &mut Checker, record: &Record) {
    let step_type_field = match record.format {
        RecordFormat::V1 => "type",
        RecordFormat::V2 => "stepType",
    };
    let entries = record.entries.clone();
    let entry_at = record.entry_at.clone();
    let verification = check
        .bundle
        .get("verification")
        .cloned()
        .unwrap_or_default();
    let compare_step = |check: &mut Checker, shown: &Value, path: &str, i: usize| {
        let document = &entries[i];
        let mut fields: Vec<(&str, Value)> = STEP_FIELDS
            .iter()
            .map(|(s, d)| (*s, document.get(*d).cloned().unwrap_or(Value::Null)))
            .collect();
        fields.push((
            "type",
            document
                .get(step_type_field)
                .cloned()
                .unwrap_or(Value::Null),
        ));
        let entry = &verification["entries"][entry_at[i]];
        fields.push(("prevHash", entry["prevHash"].clone()));
        fields.push(("entryHash", entry["entryHash"].clone()));
        for (field, recorded) in fields {
            if let Some(value) = shown.get(field)
                && value != &recorded
            {
                check.fail(
                    "RECORD",
                    format!("{path}.{field}"),
                    format!("shows {value}, the record says {recorded}"),
                );
            }
        }
    };
    if let Some(steps) = check.bundle.get("steps").and_then(Value::as_array).cloned() {
        if steps.len() != entries.len() {
            check.fail(
                "RECORD",
                "steps",
                format!(
                    "shows {} steps, the record has {}",
                    steps.len(),
                    entries.len()
                ),
            );
        }
        for (i, step) in steps.iter().enumerate().take(entries.len()) {
            compare_step(check, step, &format!("steps[{i}]"), i);
        }
    }
    if let Some(shown) = check.bundle.get("inflectionStep").cloned()
        && !shown.is_null()
    {
        match entries
            .iter()
            .position(|d| d.get("isInflection") == Some(&Value::Bool(true)))
        {
            Some(i) => compare_step(check, &shown, "inflectionStep", i),
            None => check.fail(
                "RECORD",
                "inflectionStep",
                "the record has no inflection step",
            ),
        }
    }
    let number = |d: &Value, f: &str| d.get(f).and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = check
        .bundle
        .get("cumulative")
        .and_then(Value::as_array)
        .cloned()
    {
        if series.len() != entries.len() {
            check.fail("RECORD", "cumulative", "not one point per recorded step");
        }
        let (mut tokens, mut cost) = (0i64, 0i64);
        for (i, (point, document)) in series.iter().zip(&entries).enumerate() {
            tokens += number(document, "tokens");
            cost += number(document, "costMicros");
            for (field, recorded) in [
                ("stepIndex", Value::from(i as i64)),
                ("tokens", Value::from(tokens)),
                ("costMicros", Value::from(cost)),
            ] {
                if point.get(field) != Some(&recorded) {
                    check.fail(
                        "RECORD",
                        format!("cumulative[{i}].{field}"),
                        format!("the record gives {recorded}"),
                    );
                }
            }
        }
    }
    if let Some(shown) = check
        .bundle
        .get("approvals")
        .and_then(Value::as_array)
        .cloned()
    {
        if shown.len() != record.approvals.len() {
            check.fail(
                "RECORD",
                "approvals",
                format!(
                    "shows {} approval decisions, the record has {}",
                    shown.len(),
                    record.approvals.len()
                ),
            );
        }
        for (j, (approval, (at, document))) in shown.iter().zip(&record.approvals).enumerate() {
            let mut fields: Vec<(&str, Value)> = APPROVAL_FIELDS
                .iter()
                .map(|f| (*f, document.get(*f).cloned().unwrap_or(Value::Null)))
                .collect();
            fields.push((
                "entryHash",
                verification["entries"][*at]["entryHash"].clone(),
            ));
            for (field, recorded) in fields {
                if approval.get(field) != Some(&recorded) {
                    check.fail(
                        "RECORD",
                        format!("approvals[{j}].{field}"),
                        format!("the record says {recorded}"),
                    );
                }
            }
        }
    }
    let tokens: i64 = entries.iter().map(|d| number(d, "tokens")).sum();
    let cost: i64 = entries.iter().map(|d| number(d, "costMicros")).sum();
    check.bound("totals.steps", &Value::from(entries.len() as i64));
    check.bound("totals.tokens", &Value::from(tokens));
    check.bound("totals.costMicros", &Value::from(cost));
    let head = Value::String(record.head.clone());
    check.bound("traceHeadHash", &head);
    check.bound("keyFacts.traceHeadHash", &head);
}

/// The checkpoint as read.
struct AnchorSeen {
    origin: String,
    size: u64,
    key_id: Option<String>,
}

fn check_anchor(
    check: &mut Checker,
    verification: &Map<String, Value>,
    record: Option<&Record>,
    keys: &[VerifierKey],
) -> Option<AnchorSeen> {
    if verification.is_empty() {
        return None;
    }
    let (Some(leaf), Some(proof), Some(note)) = (
        verification.get("leaf").filter(|v| v.is_object()),
        verification.get("inclusionProof").filter(|v| v.is_object()),
        text(verification.get("checkpoint")),
    ) else {
        check.fail(
            "NOT_ANCHORED",
            "verification.checkpoint",
            "the bundle carries no log leaf, inclusion proof and checkpoint",
        );
        return None;
    };

    // The checkpoint: signed by a trusted key; its body read even when it is not, so that a
    // broken proof is still named.
    // The body is the signed text when the signature verifies; else the text before the last
    // blank line (what a signature would cover), read so that a broken proof is still named.
    let (key_id, body_text) = match verify_note(note, keys) {
        Ok(verified) => (Some(verified.key_id), Some(verified.text)),
        Err(err) => {
            let kind = match err {
                NoteError::UnknownKey(_) => "UNKNOWN_KEY",
                _ => "CHECKPOINT_SIGNATURE",
            };
            check.fail(kind, "verification.checkpoint", err.to_string());
            (
                None,
                note.rfind("\n\n").map(|end| note[..end + 1].to_string()),
            )
        }
    };
    if let Some(id) = &key_id
        && text(verification.get("keyId")) != Some(id.as_str())
    {
        check.fail(
            "RECORD",
            "verification.keyId",
            format!("the checkpoint was signed by key {id}"),
        );
    }
    let Some(body) = body_text.as_deref().and_then(CheckpointBody::parse) else {
        check.fail(
            "CHECKPOINT",
            "verification.checkpoint",
            "not a checkpoint (origin, size, root hash)",
        );
        return None;
    };
    // The tenant: the genesis names it (format 2); format 1 binds none, so the leaf's is taken.
    let leaf_document: Option<Value> =
        text(leaf.get("data")).and_then(|d| serde_json::from_str(d).ok());
    let tenant = record.and_then(|r| r.tenant_id.clone()).or_else(|| {
        text(leaf_document.as_ref().and_then(|d| d.get("tenantId"))).map(str::to_string)
    });
    if let Some(tenant) = &tenant
        && !body.origin.ends_with(&format!("/{tenant}"))
    {
        check.fail(
            "CHECKPOINT",
            "verification.checkpoint",
            format!(
                "the checkpoint is of log {}, not of tenant {tenant}'s",
                body.origin
            ),
        );
    }

    // The leaf: its data holds the recomputed head, and hashes to its hash.
    let data = text(leaf.get("data")).unwrap_or_default();
    let computed = merkle::leaf_hash(data.as_bytes());
    let recorded_hash = text(leaf.get("hash")).unwrap_or_default();
    let index = leaf.get("index").and_then(Value::as_u64);
    match serde_json::from_str::<Value>(data) {
        Ok(document) => {
            if chain::canonical_form(RecordFormat::V2, &document) != data {
                check.fail(
                    "DOCUMENT_FORMAT",
                    "verification.leaf.data",
                    "not in RFC 8785 canonical form",
                );
            }
            if let Some(record) = record {
                let mut expected = vec![
                    ("type", Value::from("runHead")),
                    ("runId", Value::from(record.run_id.clone())),
                    ("recordFormat", Value::from(record.format.number())),
                    ("stepCount", Value::from(record.entries.len() as i64)),
                    ("headHash", Value::from(record.head.clone())),
                ];
                if let Some(tenant) = &tenant {
                    expected.push(("tenantId", Value::from(tenant.clone())));
                }
                for (field, value) in expected {
                    if document.get(field) != Some(&value) {
                        check.fail(
                            "LOG_LEAF",
                            "verification.leaf.data",
                            format!(
                                "the logged {field} is {}, the record gives {value}",
                                document.get(field).unwrap_or(&Value::Null)
                            ),
                        );
                    }
                }
            }
            check.bound("run.status", document.get("status").unwrap_or(&Value::Null));
        }
        Err(_) => check.fail("DOCUMENT_FORMAT", "verification.leaf.data", "not JSON"),
    }
    if hex::encode(computed) != recorded_hash {
        check.fail(
            "LEAF_HASH",
            "verification.leaf.hash",
            format!("the leaf data hashes to {}", hex::encode(computed)),
        );
    }

    // The inclusion proof, from the leaf data's own hash to the signed root, at the index the
    // proof gives; the leaf must say the same index.
    let proof_index = proof.get("leafIndex").and_then(Value::as_u64);
    if proof.get("treeSize").and_then(Value::as_u64) != Some(body.size) {
        check.fail(
            "INCLUSION_PROOF",
            "verification.inclusionProof.treeSize",
            format!("the checkpoint's tree has {} leaves", body.size),
        );
    }
    let hashes: Option<Vec<Hash>> = proof
        .get("hashes")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().map(|h| h.as_str().and_then(hex_hash)).collect());
    let Some(hashes) = hashes else {
        check.fail(
            "INCLUSION_PROOF",
            "verification.inclusionProof.hashes",
            "not a list of 32-byte hex hashes",
        );
        return Some(AnchorSeen {
            origin: body.origin,
            size: body.size,
            key_id,
        });
    };
    let proves = |at: Option<u64>| {
        at.map(|i| merkle::verify_inclusion(i, body.size, &computed, &hashes, &body.root))
    };
    match (proves(proof_index), index == proof_index) {
        (Some(Ok(())), true) => {}
        (Some(Ok(())), false) => check.fail(
            "INCLUSION_PROOF",
            "verification.leaf.index",
            "the leaf's index is not the one its inclusion proof proves",
        ),
        (_, false) if matches!(proves(index), Some(Ok(()))) => check.fail(
            "INCLUSION_PROOF",
            "verification.inclusionProof.leafIndex",
            "not the leaf's index",
        ),
        (result, _) => check.fail(
            "INCLUSION_PROOF",
            "verification.inclusionProof.hashes",
            match result {
                Some(Err(err)) => format!("the leaf is not in the signed tree: {err}"),
                _ => "the proof names no leaf index".to_string(),
            },
        ),
    }
    Some(AnchorSeen {
        origin: body.origin,
        size: body.size,
        key_id,
    })
}
