//! The worked examples of `docs/verifying.md`, recomputed: the document must show exactly what
//! the implementation computes, so a third party checking their verifier against it checks it
//! against the service.

use chrono::{DateTime, Utc};
use governance_entities::{
    enums::{DecisionAction, RunStatus, StepStatus, StepType},
    run, trace_step,
};
use serde_json::json;

use crate::{
    chain::{self, RecordFormat},
    merkle, signing, transparency,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

/// The example run (its header as the examples state it).
pub(crate) fn sample_run(format: RecordFormat) -> run::Model {
    let started = at("2026-11-30T12:00:00.123Z");
    run::Model {
        id: "run_01jdemo0000000000000000000".into(),
        tenant_id: "ten_01jdemo0000000000000000000".into(),
        workflow_id: "invoice-agent".into(),
        agent: Some("billing-bot".into()),
        triggered_by: Some("cron".into()),
        status: RunStatus::Running,
        termination_reason: None,
        error: None,
        policy_snapshot_id: "SNAP-000000000001".into(),
        policy_set_version: "1.0.0".into(),
        stopped_at_step: None,
        violation_policy_id: None,
        tokens_used: 0,
        cost_micros: 0,
        step_count: 0,
        is_synthetic: false,
        synthetic_scenario_id: None,
        metadata: Some(json!({"ticket": "T-1", "priority": 2})),
        started_at: started,
        completed_at: None,
        trace_head_hash: String::new(),
        violation_step_index: None,
        violation_timestamp: None,
        violation_reason: None,
        record_format: format.number(),
        logged_head_hash: None,
        logged_at: None,
        deadline_at: None,
        created_at: started,
        updated_at: started,
    }
}

pub(crate) const SNAPSHOT_HASH: &str =
    "5f1c2d8e9a0b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";

fn sample_step(run: &run::Model, prev_hash: &str) -> trace_step::Model {
    trace_step::Model {
        pk: 0,
        tenant_id: run.tenant_id.clone(),
        run_id: run.id.clone(),
        step_index: 0,
        timestamp: at("2026-11-30T12:00:01.500Z"),
        step_type: StepType::LlmCall,
        tokens: 120,
        cost_micros: 350,
        tool_name: None,
        content_hash: crate::hashing::sha256_hex("Summarise the invoice."),
        status: StepStatus::Ok,
        is_inflection: false,
        decision: DecisionAction::Continue,
        policies_checked: 2,
        reason: "within every policy".into(),
        decision_json: json!({
            "action": "CONTINUE",
            "findings": [],
            "inflectionPolicyId": null,
            "terminationReason": null,
            "contentMatches": [],
        }),
        prev_hash: prev_hash.to_string(),
        entry_hash: String::new(),
        created_at: at("2026-11-30T12:00:01.500Z"),
    }
}

/// The examples section, as the document must show it.
fn vectors() -> String {
    let mut run = sample_run(RecordFormat::V2);
    let genesis_doc = crate::canonical::to_string(&chain::genesis_document(&run, SNAPSHOT_HASH));
    let genesis = chain::genesis(&run, SNAPSHOT_HASH);
    let step = sample_step(&run, &genesis);
    let step_doc = chain::step_document(&run, &step);
    let entry = chain::entry_hash(&genesis, &step_doc);

    run.step_count = 1;
    run.trace_head_hash = entry.clone();
    run.status = RunStatus::Succeeded;
    let leaf = transparency::leaf_document(&run);
    let leaf_hash = merkle::leaf_hash(leaf.as_bytes());
    let key = signing::SigningKey::parse(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
    )
    .expect("the example key");
    // A log of one leaf: its head is the leaf hash.
    let body = transparency::checkpoint_text(
        &transparency::origin("governance", &run.tenant_id),
        1,
        &leaf_hash,
    );
    let note = key.sign_note(&body);
    let v1 = sample_run(RecordFormat::V1);
    let v1_genesis = chain::genesis(&v1, SNAPSHOT_HASH);

    format!(
        "The example run: id `{id}`, tenant `{tenant}`, workflow `invoice-agent`, agent \
`billing-bot`, triggered by `cron`, metadata `{{\"ticket\":\"T-1\",\"priority\":2}}`, started \
`2026-11-30T12:00:00.123Z`, snapshot content hash `{SNAPSHOT_HASH}`.

**Genesis, format 2.** `JCS(G)`:

```text
{genesis_doc}
```

genesis = `{genesis}`

**Step 0, format 2**: an `LLM_CALL` at `2026-11-30T12:00:01.500Z`, 120 tokens, 350 micro-dollars, \
content `Summarise the invoice.`, decided CONTINUE with 2 policies checked. `JCS(S(0))`:

```text
{step_doc}
```

entryHash(0) = `{entry}` (the run's head after 1 step)

**The run's head as a leaf** (after it ended, SUCCEEDED). `d`:

```text
{leaf}
```

leafHash(d) = `{leaf_hash}`, which is also the head of a log holding only this leaf.

**A checkpoint of that log**, signed with the example key of Go's `golang.org/x/mod/sumdb/note` \
(private key `PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz`, \
verifier key `{verifier}`; Ed25519 signatures are deterministic, so this note is reproducible):

```text
{note}```

**Format 1.** The same run recorded in format 1 has genesis `{v1_genesis}`.

**Merkle trees.** The RFC 6962 test vectors (the leaves `\"\"`, `00`, `10`, `2021`, `3031`, \
`40414243`, `5051525354555657`, `606162636465666768696a6b6c6d6e6f`, their heads for every size, \
inclusion and consistency proofs) are in `core/src/merkle.rs`; for example the head of all eight is \
`5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328`.
",
        id = run.id,
        tenant = run.tenant_id,
        leaf_hash = hex::encode(leaf_hash),
        verifier = key.verifier().encoded(),
    )
}

#[test]
fn the_document_shows_what_the_implementation_computes() {
    let doc = include_str!("../../docs/verifying.md");
    let expected = vectors();
    assert!(
        doc.contains(&expected),
        "docs/verifying.md must contain, under section 6, exactly:\n\n{expected}"
    );
}
