//! Records verifiable without trusting the service: the published signing keys, record format 2
//! (RFC 8785 documents and a genesis that binds the run's header), runs of format 1 still
//! verifying, and a database that cannot rewrite what the format binds.

use governance_core::signing::VerifierKey;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{run_cli, spawn_app};

const RUN: &str = "query($id: ID!) { run(id: $id) { id workflowId agent triggeredBy metadata \
    startedAt recordFormat policySnapshot { contentHash } \
    trace { headHash steps(first: 10) { nodes { stepIndex prevHash entryHash } } } } }";

const VERIFY: &str =
    "query($id: ID!) { verifyRun(id: $id) { intact reproduced stepsChecked mismatches { kind } } }";

fn sha256_hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(Sha256::digest(bytes.as_ref()))
}

/// The published keys: the same list over HTTP (no key needed) and GraphQL, each a verifier key
/// whose id matches; after a rotation the new key is ACTIVE and the old one stays, RETIRED.
#[tokio::test]
async fn signing_keys_are_published_and_a_rotation_keeps_the_old_one() {
    let app = spawn_app().await;
    let published = |app: &crate::helpers::TestApp| {
        let (http, url) = (app.http().clone(), app.url("/.well-known/governance-keys"));
        async move {
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()["keys"].clone()
        }
    };
    let keys = published(&app).await;
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys[0]["status"], "ACTIVE");
    assert_eq!(keys[0]["algorithm"], "Ed25519");
    let first = VerifierKey::parse(keys[0]["verifierKey"].as_str().unwrap()).unwrap();
    assert_eq!(first.key_id(), keys[0]["keyId"].as_str().unwrap());
    assert_eq!(first.public_key(), keys[0]["publicKey"].as_str().unwrap());

    let data = app
        .gql_ok(
            "{ signingKeys { keyId name algorithm publicKey verifierKey status } }",
            json!({}),
        )
        .await;
    assert_eq!(data["signingKeys"], keys, "GraphQL lists the same keys");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_file = app.env.data_dir().join("signing.key");
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );
    }

    let (ok, out, err) = run_cli(&app.env, &["signing-key", "rotate"]).await;
    assert!(ok, "rotate: {out}{err}");
    let app = app.restart(|_| {}).await;
    let keys = published(&app).await;
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "{keys}");
    assert_eq!(keys[0]["status"], "ACTIVE");
    assert_eq!(keys[1]["status"], "RETIRED");
    assert_eq!(
        keys[1]["verifierKey"],
        first.encoded(),
        "the old key stays published"
    );
    assert_ne!(keys[0]["keyId"], keys[1]["keyId"]);
    assert!(out.contains(keys[0]["verifierKey"].as_str().unwrap()));
}

/// A new run is recorded in format 2: its genesis is the sha256 of the RFC 8785 form of the
/// genesis document `docs/verifying.md` specifies, recomputed here from what the API shows;
/// `verifyRun` holds; and the header the genesis binds cannot be changed in the database.
#[tokio::test]
async fn a_run_is_recorded_in_format_2_and_its_header_cannot_change() {
    let app = spawn_app().await;
    let started = app
        .gql_ok(
            "mutation { startRun(input: { workflowId: \"wf-verify\", agent: \"billing-bot\", \
             triggeredBy: \"cron\", metadata: { ticket: \"T-1\", priority: 2 } }) { id } }",
            json!({}),
        )
        .await;
    let run = started["startRun"]["id"].as_str().unwrap().to_string();
    for tokens in [5, 7] {
        assert_eq!(
            app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
                .await["action"],
            "CONTINUE"
        );
    }
    let data = app.gql_ok(RUN, json!({ "id": run })).await;
    let r = &data["run"];
    assert_eq!(r["recordFormat"], 2);
    let tenant_id = app.tenant_id().await;
    let started_at = chrono::DateTime::parse_from_rfc3339(r["startedAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let metadata = serde_json_canonicalizer::to_string(&r["metadata"]).unwrap();
    let genesis = json!({
        "format": 2,
        "type": "genesis",
        "runId": run,
        "tenantId": tenant_id,
        "workflowId": "wf-verify",
        "agent": "billing-bot",
        "triggeredBy": "cron",
        "metadataHash": sha256_hex(metadata),
        "snapshotContentHash": r["policySnapshot"]["contentHash"],
        "startedAt": started_at,
    });
    let expected = sha256_hex(serde_json_canonicalizer::to_string(&genesis).unwrap());
    let steps = &r["trace"]["steps"]["nodes"];
    assert_eq!(
        steps[0]["prevHash"],
        expected.as_str(),
        "the genesis as specified"
    );
    assert_eq!(steps[1]["prevHash"], steps[0]["entryHash"]);
    assert_eq!(r["trace"]["headHash"], steps[1]["entryHash"]);

    let verified = app.gql_ok(VERIFY, json!({ "id": run })).await;
    assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["reproduced"], true, "{verified}");

    use sea_orm::ConnectionTrait;
    for change in [
        "agent = 'someone else'",
        "metadata = '{\"ticket\":\"T-2\"}'",
        "record_format = 1",
    ] {
        let refused = app
            .db
            .execute_unprepared(&format!("UPDATE runs SET {change} WHERE id = '{run}'"))
            .await;
        let message = refused.expect_err(change).to_string();
        assert!(
            message.contains("header is immutable"),
            "{change}: {message}"
        );
    }
}

/// A run recorded before format 2 (its row says format 1, its genesis is format 1's) keeps
/// recording and verifying under format 1.
#[tokio::test]
async fn a_run_of_format_1_keeps_recording_and_verifying_under_it() {
    use governance_core::{
        chain,
        ids::{new_id, prefix},
    };
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = spawn_app().await;
    let template = app.start_run("wf-legacy").await;
    let data = app.gql_ok(RUN, json!({ "id": template })).await;
    let snapshot_hash = data["run"]["policySnapshot"]["contentHash"]
        .as_str()
        .unwrap()
        .to_string();
    // A copy of the run as format 1 stored it: format 1's genesis binds run id and snapshot.
    let legacy = new_id(prefix::RUN);
    let genesis_v1 = {
        use sea_orm::EntityTrait;
        let mut stored = governance_entities::run::Entity::find_by_id(template.clone())
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        stored.id = legacy.clone();
        stored.record_format = chain::RecordFormat::V1.number();
        chain::genesis(&stored, &snapshot_hash)
    };
    let backend = app.db.get_database_backend();
    let placeholder = |n: usize| match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    };
    app.db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "INSERT INTO runs (id, tenant_id, workflow_id, agent, triggered_by, status, \
                 policy_snapshot_id, policy_set_version, tokens_used, cost_micros, step_count, \
                 is_synthetic, metadata, started_at, trace_head_hash, record_format, created_at, \
                 updated_at) SELECT {}, tenant_id, workflow_id, agent, triggered_by, status, \
                 policy_snapshot_id, policy_set_version, 0, 0, 0, is_synthetic, metadata, \
                 started_at, {}, 1, created_at, updated_at FROM runs WHERE id = {}",
                placeholder(1),
                placeholder(2),
                placeholder(3)
            ),
            [
                legacy.clone().into(),
                genesis_v1.clone().into(),
                template.into(),
            ],
        ))
        .await
        .unwrap();

    for tokens in [3, 4, 5] {
        assert_eq!(
            app.step_ok(&legacy, json!({ "type": "LLM_CALL", "tokens": tokens }))
                .await["action"],
            "CONTINUE"
        );
    }
    let data = app.gql_ok(RUN, json!({ "id": legacy })).await;
    assert_eq!(data["run"]["recordFormat"], 1);
    assert_eq!(
        data["run"]["trace"]["steps"]["nodes"][0]["prevHash"],
        genesis_v1.as_str()
    );
    let verified = app.gql_ok(VERIFY, json!({ "id": legacy })).await;
    assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["reproduced"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["stepsChecked"], 3);
}

const PROOF: &str = "query($id: ID!) { run(id: $id) { inclusionProof { leafIndex treeSize leaf \
    leafHash headHash hashes checkpoint { treeSize rootHash origin note keyId } } \
    trace { headHash } } }";

/// An ended run's head is logged, a signed checkpoint commits to it, and the proofs check out
/// with nothing but the published key. Then the run is rewritten behind the service's back,
/// consistently (a step altered, every later hash and the head recomputed, the totals fixed):
/// the rows alone still verify, but `verifyRun` catches the rewrite through the log.
#[tokio::test]
async fn a_logged_run_proves_its_head_and_a_consistent_rewrite_is_caught() {
    use governance_core::{merkle, signing};

    let witness = tempfile::NamedTempFile::new().unwrap();
    let witness_path = witness.path().to_path_buf();
    let app = crate::helpers::spawn_app_with(|c| {
        c.log.witness_file = Some(witness_path.clone());
    })
    .await;
    let key = active_key(&app).await;

    let run = app.start_run("wf-logged").await;
    for tokens in [5, 6, 7] {
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": tokens }))
            .await;
    }
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
        json!({ "id": run }),
    )
    .await;
    let data = logged(&app, &run).await;
    let proof = &data["run"]["inclusionProof"];
    assert_eq!(proof["headHash"], data["run"]["trace"]["headHash"]);
    let leaf: Value = serde_json::from_str(proof["leaf"].as_str().unwrap()).unwrap();
    assert_eq!(leaf["runId"], run.as_str());
    assert_eq!(leaf["stepCount"], 3);
    assert_eq!(leaf["status"], "SUCCEEDED");
    let leaf_hash = merkle::leaf_hash(proof["leaf"].as_str().unwrap().as_bytes());
    assert_eq!(proof["leafHash"], hex::encode(leaf_hash).as_str());

    // The checkpoint verifies with the published key alone, and the audit path leads from the
    // leaf to its signed root.
    let note = proof["checkpoint"]["note"].as_str().unwrap();
    let verified = signing::verify_note(note, std::slice::from_ref(&key)).expect("signed");
    let lines: Vec<&str> = verified.text.lines().collect();
    assert_eq!(lines.len(), 3, "origin, size, root: {}", verified.text);
    assert_eq!(lines[0], proof["checkpoint"]["origin"].as_str().unwrap());
    let (size, root) = size_and_root(&verified.text);
    assert_eq!(size as i64, proof["treeSize"].as_i64().unwrap());
    assert_eq!(proof["checkpoint"]["rootHash"], hex::encode(root).as_str());
    let path = hex_hashes(&proof["hashes"]);
    let index = proof["leafIndex"].as_u64().unwrap();
    merkle::verify_inclusion(index, size, &leaf_hash, &path, &root).expect("included");

    // A second, independent implementation of the note format reads it the same way, and
    // refuses it altered.
    let second_reader = |note: String| {
        let vkey = key.encoded();
        async move {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), note).unwrap();
            let output = tokio::process::Command::new("python3")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tools/verify_checkpoint.py"
                ))
                .arg(vkey)
                .arg(file.path())
                .output()
                .await
                .expect("python3 runs");
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };
    let (ok, out, err) = second_reader(note.to_string()).await;
    assert!(ok, "the independent reader refused the checkpoint: {err}");
    let read: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(read["size"], size);
    assert_eq!(read["root"], hex::encode(root).as_str());
    assert_eq!(read["origin"], lines[0]);
    let altered = note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
    let (ok, _, err) = second_reader(altered).await;
    assert!(!ok && err.contains("does not verify"), "{err}");

    let verified = app.gql_ok(VERIFY_LOGGED, json!({ "id": run })).await;
    assert_eq!(verified["verifyRun"]["intact"], true, "{verified}");
    assert_eq!(verified["verifyRun"]["checkpointTreeSize"], size);

    // A second run grows the log: the witness file holds both checkpoints, and the log proves
    // the later one an extension of the earlier.
    let second = app.start_run("wf-logged").await;
    app.gql_ok(
        "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
        json!({ "id": second }),
    )
    .await;
    logged(&app, &second).await;
    let witnessed: Vec<(u64, merkle::Hash)> = std::fs::read_to_string(witness.path())
        .unwrap()
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            let text = signing::verify_note(
                entry["checkpoint"].as_str().unwrap(),
                std::slice::from_ref(&key),
            )
            .expect("a witnessed checkpoint verifies")
            .text;
            size_and_root(&text)
        })
        .collect();
    assert!(witnessed.len() >= 2, "{witnessed:?}");
    let (old, new) = (witnessed[0], *witnessed.last().unwrap());
    let consistency = app
        .gql_ok(
            "query($from: Int!, $to: Int!) { consistencyProof(fromSize: $from, toSize: $to) { hashes } }",
            json!({ "from": old.0, "to": new.0 }),
        )
        .await;
    let hashes = hex_hashes(&consistency["consistencyProof"]["hashes"]);
    merkle::verify_consistency(old.0, new.0, &old.1, &new.1, &hashes).expect("consistent");
    let refused = app
        .gql(
            "query { consistencyProof(fromSize: 0, toSize: 1) { hashes } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.error_code().as_deref(), Some("BAD_USER_INPUT"));

    // The rewrite: as whoever administers the database could do it.
    rewrite_step_tokens(&app, &run, 1, 60).await;

    // The rows alone are consistent: no chain or replay mismatch...
    let rows = governance_core::verify::verify(&app.db, &app.tenant_id().await, &run)
        .await
        .unwrap();
    assert!(rows.intact && rows.reproduced, "{rows:?}");
    // ...but the log still holds the head the run really had.
    let caught = app.gql_ok(VERIFY_LOGGED, json!({ "id": run })).await;
    let v = &caught["verifyRun"];
    assert_eq!(v["intact"], false, "{caught}");
    let kinds: Vec<&str> = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"LOG_LEAF"), "{caught}");
    assert!(
        kinds.iter().all(|k| *k == "LOG_LEAF"),
        "only the log tells: {caught}"
    );
}

/// Rewrite step `index` of `run` to `tokens` behind the service's back, as whoever
/// administers the database could: the append-only triggers dropped, every later hash, the
/// head and the totals recomputed, so the rows are consistent with themselves.
async fn rewrite_step_tokens(app: &crate::helpers::TestApp, run: &str, index: usize, tokens: i64) {
    use governance_core::chain;
    use governance_entities::{run as run_entity, trace_step};
    use sea_orm::{
        ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
        QueryOrder, Set,
    };
    let backend = app.db.get_database_backend();
    let unguard = match backend {
        DbBackend::Postgres => vec!["ALTER TABLE trace_steps DISABLE TRIGGER USER"],
        _ => vec!["DROP TRIGGER IF EXISTS trace_steps_no_update"],
    };
    for sql in unguard {
        app.db.execute_unprepared(sql).await.unwrap();
    }
    let stored_run = run_entity::Entity::find_by_id(run.to_string())
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let mut steps = trace_step::Entity::find()
        .filter(trace_step::Column::RunId.eq(run))
        .order_by_asc(trace_step::Column::StepIndex)
        .all(&app.db)
        .await
        .unwrap();
    let delta = tokens - steps[index].tokens;
    steps[index].tokens = tokens;
    for i in index..steps.len() {
        if i > 0 {
            steps[i].prev_hash = steps[i - 1].entry_hash.clone();
        }
        steps[i].entry_hash = chain::entry_hash(
            &steps[i].prev_hash,
            &chain::step_document(&stored_run, &steps[i]),
        );
        let mut row: trace_step::ActiveModel = steps[i].clone().into();
        row.tokens = Set(steps[i].tokens);
        row.prev_hash = Set(steps[i].prev_hash.clone());
        row.entry_hash = Set(steps[i].entry_hash.clone());
        row.update(&app.db).await.unwrap();
    }
    let mut rewritten: run_entity::ActiveModel = stored_run.clone().into();
    rewritten.trace_head_hash = Set(steps.last().unwrap().entry_hash.clone());
    rewritten.tokens_used = Set(stored_run.tokens_used + delta);
    rewritten.update(&app.db).await.unwrap();
}

/// The deployment's active key, as `GET /.well-known/governance-keys` publishes it.
async fn active_key(app: &crate::helpers::TestApp) -> VerifierKey {
    let keys: Value = app
        .http()
        .get(app.url("/.well-known/governance-keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    VerifierKey::parse(keys["keys"][0]["verifierKey"].as_str().unwrap()).unwrap()
}

/// `PROOF` of `run` once the log holds its head (a deadline, not a wait).
async fn logged(app: &crate::helpers::TestApp, run: &str) -> Value {
    app.poll_until(
        PROOF,
        json!({ "id": run }),
        std::time::Duration::from_secs(20),
        |d| !d["run"]["inclusionProof"].is_null(),
    )
    .await
}

const VERIFY_LOGGED: &str = "query($id: ID!) { verifyRun(id: $id) { intact reproduced \
    checkpointTreeSize mismatches { kind stepIndex expected found } } }";

/// The tree size and root a checkpoint body states (its second and third lines), read as the
/// checkpoint format says: decimal, and base64.
fn size_and_root(text: &str) -> (u64, governance_core::merkle::Hash) {
    use base64::Engine;
    let lines: Vec<&str> = text.lines().collect();
    let root = base64::engine::general_purpose::STANDARD
        .decode(lines[2])
        .unwrap()
        .try_into()
        .unwrap();
    (lines[1].parse().unwrap(), root)
}

/// A JSON array of hex hashes.
fn hex_hashes(value: &Value) -> Vec<governance_core::merkle::Hash> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect()
}

/// `governance verify FILE [--key KEY]…` run as a user would: the binary alone, no
/// configuration, database or network. Returns (exit code, stdout).
pub(crate) async fn verify_cli(file: &std::path::Path, keys: &[&str]) -> (i32, String) {
    let mut args = vec!["verify".to_string(), file.display().to_string()];
    for key in keys {
        args.push("--key".into());
        args.push(key.to_string());
    }
    let output = tokio::process::Command::new(crate::helpers::governance_bin())
        .args(&args)
        .env_remove("GOVERNANCE_DATABASE_URL")
        .output()
        .await
        .expect("run governance verify");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

/// An incident's evidence bundle (JSON, as downloaded) and the published keys (JSON, as
/// served), each written to a file.
pub(crate) async fn exported_bundle(
    app: &crate::helpers::TestApp,
    incident: &str,
    dir: &std::path::Path,
) -> (Value, std::path::PathBuf, std::path::PathBuf) {
    use crate::exports::{download, ready, request};
    let export = ready(app, &request(app, incident, "EVIDENCE").await).await;
    let bytes = download(app, export["downloadUrl"].as_str().unwrap(), None)
        .await
        .bytes()
        .await
        .unwrap();
    let bundle: Value = serde_json::from_slice(&bytes).unwrap();
    let bundle_file = dir.join("bundle.json");
    std::fs::write(&bundle_file, &bytes).unwrap();
    let keys = app
        .http()
        .get(app.url("/.well-known/governance-keys"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let keys_file = dir.join("keys.json");
    std::fs::write(&keys_file, &keys).unwrap();
    (bundle, bundle_file, keys_file)
}

/// Every scalar in `value`, by its path as the verifier names paths (`a.b[2].c`).
fn scalar_paths(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let next = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                scalar_paths(child, next, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                scalar_paths(child, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path),
    }
}

/// The value at a path `scalar_paths` gave.
fn at_path<'a>(value: &'a mut Value, path: &str) -> &'a mut Value {
    let mut current = value;
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        current = &mut current[key];
        for index in indices
            .split(['[', ']'])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().unwrap())
        {
            current = &mut current[index];
        }
    }
    current
}

/// A different value of the same kind.
fn altered(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(format!("{s}x")),
        Value::Number(n) => match n.as_i64() {
            Some(i) => json!(i + 1),
            None => json!(n.as_f64().unwrap_or(0.0) + 1.0),
        },
        Value::Bool(b) => Value::Bool(!b),
        Value::Null => json!("x"),
        other => other.clone(),
    }
}

/// Whether `named` is `path` or a field or element that contains it.
fn names(named: &str, path: &str) -> bool {
    path == named
        || (path.starts_with(named)
            && matches!(path.as_bytes().get(named.len()), Some(b'.' | b'[')))
}

/// An exported evidence bundle verifies offline with the published keys and nothing else. Each
/// of its fields altered in turn fails verification, and the failure names the field (fields
/// the record binds by their own path; the rest by their signed section). An unknown key, a
/// consistent rewrite of the bundle, and missing keys are each reported as what they are.
#[tokio::test]
async fn an_exported_bundle_verifies_offline_and_names_every_altered_field() {
    use governance_core::{bundle_verify::verify_bundle, canonical, chain, merkle, signing};

    let app = spawn_app().await;
    // Other runs logged first, so the inclusion proof has hashes to alter.
    for _ in 0..3 {
        let run = app.start_run("wf-before").await;
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 1 }))
            .await;
        app.gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
            json!({ "id": run }),
        )
        .await;
        logged(&app, &run).await;
    }
    let (_run, incident) = crate::exports::leaked(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let (bundle, bundle_file, keys_file) = exported_bundle(&app, &incident, dir.path()).await;
    let keys_arg = keys_file.display().to_string();
    assert!(
        !bundle["verification"]["inclusionProof"]["hashes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        bundle["verification"]
    );

    let (code, out) = verify_cli(&bundle_file, &[&keys_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("VERIFIED"), "{out}");
    assert!(out.contains("2 steps, record format 2"), "{out}");
    let v = &bundle["verification"];
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["checkpoint"].as_str().unwrap().contains("\n\n— "), "{v}");

    // Without a key the bundle's own is used: never "verified" (anyone can sign a bundle of
    // their own with a key of their own), and the report says so.
    let (code, out) = verify_cli(&bundle_file, &[]).await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("INTEGRITY ONLY"), "{out}");
    assert!(!out.contains("VERIFIED"), "{out}");

    // Only the bytes as exported: a reformatted file, or one with a member twice (which JSON
    // readers resolve differently), is refused whatever it says.
    let pretty = dir.path().join("pretty.json");
    std::fs::write(&pretty, serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
    let (code, out) = verify_cli(&pretty, &[&keys_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BUNDLE_FORMAT"), "{out}");
    let exported = std::fs::read_to_string(&bundle_file).unwrap();
    let twice = exported.replacen("{", "{\"traceHeadHash\":\"forged\",", 1);
    let duplicated = dir.path().join("duplicated.json");
    std::fs::write(&duplicated, twice).unwrap();
    let (code, out) = verify_cli(&duplicated, &[&keys_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BUNDLE_FORMAT"), "{out}");

    // A key the deployment never had: nothing it signed verifies.
    let stranger = signing::SigningKey::generate("stranger")
        .unwrap()
        .verifier()
        .encoded();
    let (code, out) = verify_cli(&bundle_file, &[&stranger]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("UNKNOWN_KEY"), "{out}");

    // Unreadable input is its own exit status.
    let (code, out) = verify_cli(&dir.path().join("missing.json"), &[&keys_arg]).await;
    assert_eq!(code, 2, "{out}");

    // Every field in turn.
    let keys = signing::keys_from_text(&std::fs::read_to_string(&keys_file).unwrap()).unwrap();
    assert!(verify_bundle(&bundle, &keys).verified());
    let mut paths = Vec::new();
    scalar_paths(&bundle, String::new(), &mut paths);
    assert!(paths.len() > 100, "{}", paths.len());
    let bound = |path: &str| {
        [
            "steps",
            "cumulative",
            "inflectionStep",
            "totals.steps",
            "totals.tokens",
            "totals.costMicros",
            "traceHeadHash",
            "run.id",
            "run.workflowId",
            "run.agent",
            "run.triggeredBy",
            "run.startedAt",
            "run.status",
            "snapshot.contentHash",
            "verification",
        ]
        .iter()
        .any(|b| names(b, path))
            && path != "verification.stepsChecked"
    };
    for path in &paths {
        let mut copy = bundle.clone();
        let field = at_path(&mut copy, path);
        *field = altered(field);
        let report = verify_bundle(&copy, &keys);
        assert!(!report.verified(), "{path} altered and still verified");
        let best = report
            .failures
            .iter()
            .filter(|f| names(&f.path, path))
            .max_by_key(|f| f.path.len());
        let Some(best) = best else {
            panic!("{path} altered: no failure names it: {:?}", report.failures);
        };
        if bound(path) {
            assert!(
                best.path.contains(['.', '[']) || best.path == *path,
                "{path} is bound by the record, yet only its section is named: {:?}",
                report.failures
            );
        }
    }
    // Through the CLI too, for one recorded figure.
    let mut copy = bundle.clone();
    copy["steps"][1]["tokens"] = json!(3);
    std::fs::write(&bundle_file, canonical::to_string(&copy)).unwrap();
    let (code, out) = verify_cli(&bundle_file, &[&keys_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("steps[1].tokens"), "{out}");

    // A consistent rewrite of the bundle: step 0's tokens changed in its document, every hash
    // after it, the head, the shown figures and the leaf recomputed. Only the signatures,
    // which need the deployment's private key, still tell.
    let mut forged = bundle.clone();
    let f = &mut forged["verification"];
    let mut document: Value =
        serde_json::from_str(f["entries"][0]["document"].as_str().unwrap()).unwrap();
    document["tokens"] = json!(12);
    f["entries"][0]["document"] = json!(canonical::to_string(&document));
    let mut prev = f["genesisHash"].as_str().unwrap().to_string();
    for entry in f["entries"].as_array_mut().unwrap() {
        entry["prevHash"] = json!(prev);
        prev = chain::entry_hash(&prev, entry["document"].as_str().unwrap());
        entry["entryHash"] = json!(prev);
    }
    f["headHash"] = json!(prev);
    let mut leaf: Value = serde_json::from_str(f["leaf"]["data"].as_str().unwrap()).unwrap();
    leaf["headHash"] = json!(prev);
    let leaf_data = canonical::to_string(&leaf);
    f["leaf"]["hash"] = json!(hex::encode(merkle::leaf_hash(leaf_data.as_bytes())));
    f["leaf"]["data"] = json!(leaf_data);
    let entries = forged["verification"]["entries"].clone();
    for (i, step) in forged["steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        step["prevHash"] = entries[i]["prevHash"].clone();
        step["entryHash"] = entries[i]["entryHash"].clone();
    }
    forged["steps"][0]["tokens"] = json!(12);
    forged["inflectionStep"]["prevHash"] = entries[1]["prevHash"].clone();
    forged["inflectionStep"]["entryHash"] = entries[1]["entryHash"].clone();
    forged["cumulative"][0]["tokens"] = json!(12);
    forged["cumulative"][1]["tokens"] = json!(42);
    forged["totals"]["tokens"] = json!(42);
    forged["traceHeadHash"] = json!(prev);
    let report = verify_bundle(&forged, &keys);
    let kinds: Vec<&str> = report.failures.iter().map(|f| f.kind).collect();
    assert!(
        kinds
            .iter()
            .all(|k| ["INCLUSION_PROOF", "SECTION_ALTERED"].contains(k)),
        "the record is consistent with itself; only the signed parts tell: {:?}",
        report.failures
    );
    assert!(kinds.contains(&"INCLUSION_PROOF"), "{:?}", report.failures);
    std::fs::write(&bundle_file, canonical::to_string(&forged)).unwrap();
    let (code, out) = verify_cli(&bundle_file, &[&keys_arg]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INCLUSION_PROOF"), "{out}");
}

/// A run rewritten in the database after its head was logged: `verifyRun` names the log leaf,
/// the export of its incident is not anchored anew (the forged head is never signed), and
/// `governance verify` refuses the bundle.
#[tokio::test]
async fn a_database_rewrite_is_caught_by_verify_run_and_by_the_offline_verifier() {
    let app = spawn_app().await;
    let (run, incident) = crate::exports::leaked(&app).await;
    logged(&app, &run).await;
    let size_before = app.gql_ok("{ transparencyLog { size } }", json!({})).await;
    rewrite_step_tokens(&app, &run, 0, 12).await;
    // The writer also clears what the row says the log holds, so the run looks due.
    use sea_orm::ConnectionTrait;
    app.db
        .execute_unprepared(&format!(
            "UPDATE runs SET logged_head_hash = NULL, logged_at = NULL WHERE id = '{run}'"
        ))
        .await
        .unwrap();
    // A pass of the sequencer (the workers' own function, run here so the test knows it ran)
    // does not log the forged head: the run's latest leaf decides, not the row.
    let keys =
        governance_core::signing::KeyRing::load(&app.env.data_dir().join("signing.key")).unwrap();
    governance_core::transparency::sequence(
        &app.store,
        &keys,
        &governance_core::transparency::LogSettings::default(),
    )
    .await
    .unwrap();
    let size_after = app.gql_ok("{ transparencyLog { size } }", json!({})).await;
    assert_eq!(size_after, size_before, "the forged head is not logged");

    let caught = app.gql_ok(VERIFY_LOGGED, json!({ "id": run })).await;
    assert_eq!(caught["verifyRun"]["intact"], false, "{caught}");
    assert!(caught.to_string().contains("LOG_LEAF"), "{caught}");

    let dir = tempfile::tempdir().unwrap();
    let (bundle, bundle_file, keys_file) = exported_bundle(&app, &incident, dir.path()).await;
    assert_eq!(bundle["verification"]["intact"], false, "{bundle}");
    assert!(
        bundle["verification"]["checkpoint"].is_null(),
        "a forged head is never anchored: {}",
        bundle["verification"]
    );
    let (code, out) = verify_cli(&bundle_file, &[&keys_file.display().to_string()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SERVICE_CHECK"), "{out}");
    assert!(out.contains("NOT_ANCHORED"), "{out}");
}

/// Witnesses follow the log over a subscription: each checkpoint as it is signed (verifiable
/// with the published key alone), and from the start again on reconnecting, in order.
#[tokio::test]
async fn checkpoints_stream_to_subscribers_and_replay_from_a_cursor() {
    use governance_core::signing::verify_note;
    const SUBSCRIBE: &str = "subscription($after: String) { checkpointEvents(after: $after) { \
        cursor occurredAt checkpoint { treeSize rootHash keyId note } } }";
    let app = spawn_app().await;
    let key = active_key(&app).await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe("1", SUBSCRIBE, json!({})).await;

    let mut seen = Vec::new();
    for _ in 0..2 {
        let run = app.start_run("wf-witnessed").await;
        app.step_ok(&run, json!({ "type": "LLM_CALL", "tokens": 3 }))
            .await;
        app.gql_ok(
            "mutation($id: ID!) { completeRun(id: $id, status: SUCCEEDED) { id } }",
            json!({ "id": run }),
        )
        .await;
        let event = ws.next_data("1").await["checkpointEvents"].clone();
        let checkpoint = &event["checkpoint"];
        let note = checkpoint["note"].as_str().unwrap();
        let verified = verify_note(note, std::slice::from_ref(&key)).expect("signed");
        let (size, root) = size_and_root(&verified.text);
        assert_eq!(checkpoint["treeSize"], size as i64, "{event}");
        assert_eq!(checkpoint["rootHash"], hex::encode(root).as_str());
        assert_eq!(checkpoint["keyId"], key.key_id().as_str());
        seen.push(event);
    }
    assert!(
        seen[1]["checkpoint"]["treeSize"].as_i64() > seen[0]["checkpoint"]["treeSize"].as_i64(),
        "{seen:?}"
    );

    // A witness that reconnects from the beginning gets the same checkpoints first, in order;
    // from the first cursor, only what came after it.
    let mut again = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    again.expect_ack().await;
    again.subscribe("2", SUBSCRIBE, json!({})).await;
    for event in &seen {
        assert_eq!(&again.next_data("2").await["checkpointEvents"], event);
    }
    again
        .subscribe("3", SUBSCRIBE, json!({ "after": seen[0]["cursor"] }))
        .await;
    assert_eq!(again.next_data("3").await["checkpointEvents"], seen[1]);
}

/// An ended run's status rewritten alone (the chain untouched): the log holds the status it
/// ended with, so verifyRun names it, and the export is not anchored anew.
#[tokio::test]
async fn a_rewritten_status_of_an_ended_run_is_caught_through_the_log() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    let (run, incident) = crate::exports::leaked(&app).await;
    logged(&app, &run).await;
    app.db
        .execute_unprepared(&format!(
            "UPDATE runs SET status = 'SUCCEEDED', termination_reason = 'COMPLETED' WHERE id = '{run}'"
        ))
        .await
        .unwrap();
    let caught = app.gql_ok(VERIFY_LOGGED, json!({ "id": run })).await;
    assert_eq!(caught["verifyRun"]["intact"], false, "{caught}");
    assert!(
        caught.to_string().contains("status FAILED_POLICY"),
        "{caught}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (bundle, bundle_file, keys_file) = exported_bundle(&app, &incident, dir.path()).await;
    assert!(
        bundle["verification"]["checkpoint"].is_null(),
        "{}",
        bundle["verification"]
    );
    let (code, out) = verify_cli(&bundle_file, &[&keys_file.display().to_string()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT_ANCHORED"), "{out}");
}
