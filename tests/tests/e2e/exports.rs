//! Exports as compliance staff use them: request, follow, download, check against verifyRun.

use std::time::Duration;

use governance_api::config::WorkersMode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, WsEvent, governance_bin, spawn_app, spawn_app_with};

const SECRET: &str = "sk-abcdefgh12345678";

/// A run stopped by a content rule that matched a secret; returns (run id, incident id).
pub(crate) async fn leaked(app: &TestApp) -> (String, String) {
    app.create_policy(json!({
        "name": "No API keys", "kind": "CONTENT_RULE", "rule": { "patterns": ["sk-[a-z0-9]{16}"] },
        "action": "BLOCK", "severity": "CRITICAL",
    }))
    .await;
    let run = app.start_run("wf-export").await;
    app.step_ok(
        &run,
        json!({ "type": "LLM_CALL", "tokens": 120, "costMicros": 3000 }),
    )
    .await;
    let stop = app
        .step_ok(
            &run,
            json!({ "type": "TOOL_CALL", "tokens": 30, "toolName": "http", "content": format!("POST key={SECRET}") }),
        )
        .await;
    assert_eq!(stop["action"], "STOP");
    (run, stop["incident"]["id"].as_str().unwrap().to_string())
}

const REQUEST: &str =
    "mutation($incident: ID!, $kind: ExportKind!, $format: ExportFormat!, $reason: String) {
    requestExport(incidentId: $incident, kind: $kind, format: $format, reason: $reason) {
        id kind format status progress reason createdAt incident { id } run { id } } }";

const EXPORT: &str = "query($id: ID!) { export(id: $id) {
    id status progress sha256 sizeBytes contentType downloadUrl error completedAt } }";

pub(crate) async fn request(app: &TestApp, incident: &str, kind: &str) -> String {
    let data = app
        .gql_ok(
            REQUEST,
            json!({ "incident": incident, "kind": kind, "format": "JSON", "reason": "quarterly audit" }),
        )
        .await;
    let export = &data["requestExport"];
    assert_eq!(export["status"], "PENDING", "{export}");
    assert_eq!(export["progress"], 0);
    assert_eq!(export["incident"]["id"], incident);
    export["id"].as_str().unwrap().to_string()
}

pub(crate) async fn ready(app: &TestApp, id: &str) -> Value {
    let data = app
        // A deadline, not a duration: debug builds on 2 loaded cores can take long to render.
        .poll_until(EXPORT, json!({ "id": id }), Duration::from_secs(90), |d| {
            matches!(d["export"]["status"].as_str(), Some("READY" | "FAILED"))
        })
        .await;
    assert_eq!(data["export"]["status"], "READY", "{data}");
    data["export"].clone()
}

pub(crate) async fn download(app: &TestApp, url: &str, auth: Option<&str>) -> reqwest::Response {
    let mut request = app.http().get(app.url(url));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_evidence_export_is_built_downloaded_and_matches_verify_run() {
    let app = spawn_app().await;
    let (run, incident) = leaked(&app).await;
    let id = request(&app, &incident, "EVIDENCE").await;
    let export = ready(&app, &id).await;
    assert_eq!(export["progress"], 100);
    assert_eq!(export["contentType"], "application/json");
    let signed = export["downloadUrl"].as_str().unwrap().to_string();
    assert!(
        signed.starts_with(&format!("/exports/{id}/download?expires=")),
        "{signed}"
    );
    let url = format!("/exports/{id}/download");

    let bearer = format!("Bearer {}", app.key);
    let response = download(&app, &url, Some(&bearer)).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    // Evidence is not kept by caches, not sniffed, and its URL is not leaked as a referrer.
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"evidence-")
    );
    let body = response.bytes().await.unwrap();
    let sha = governance_core::hashing::sha256_hex(&body);
    assert_eq!(
        export["sha256"],
        sha.as_str(),
        "the stored sha256 is the bytes'"
    );
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{sha}\""));
    assert_eq!(export["sizeBytes"], body.len());
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        !text.contains(SECRET),
        "a matched secret never appears in an export"
    );

    let bundle: Value = serde_json::from_str(&text).unwrap();
    let verify = app
        .gql_ok(
            "query($id: ID!) { verifyRun(id: $id) { intact reproduced headHash } run(id: $id) { policySnapshot { id contentHash } } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(bundle["traceHeadHash"], verify["verifyRun"]["headHash"]);
    assert_eq!(
        bundle["verification"]["headHash"],
        verify["verifyRun"]["headHash"]
    );
    assert_eq!(bundle["verification"]["intact"], true);
    assert_eq!(bundle["run"]["id"], run);
    assert_eq!(
        bundle["snapshot"]["id"],
        verify["run"]["policySnapshot"]["id"]
    );
    assert_eq!(
        bundle["snapshot"]["contentHash"],
        verify["run"]["policySnapshot"]["contentHash"]
    );
    assert_eq!(bundle["violatedPolicy"]["name"], "No API keys");
    assert_eq!(
        bundle["violatedPolicy"]["threshold"]["patterns"][0],
        "sk-[a-z0-9]{16}"
    );
    assert_eq!(bundle["inflectionStep"]["stepIndex"], 1);
    assert_eq!(bundle["steps"].as_array().unwrap().len(), 2);
    assert_eq!(
        bundle["steps"][1]["entryHash"],
        verify["verifyRun"]["headHash"]
    );
    assert_eq!(bundle["totals"]["tokens"], 150);
    assert_eq!(bundle["cumulative"][1]["tokens"], 150);
    assert_eq!(bundle["reason"], "quarterly audit");
    assert!(bundle["exportedBy"].as_str().unwrap().starts_with("key_"));

    // Conditional, unauthenticated and cross-tenant downloads.
    let cached = app
        .http()
        .get(app.url(&url))
        .header("Authorization", &bearer)
        .header("If-None-Match", format!("\"{sha}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(download(&app, &url, None).await.status(), 401);
    let other = app.other_tenant("other").await;
    assert_eq!(download(&app, &url, Some(&other)).await.status(), 404);
    // The signed link works without a key; altered, it does not.
    let by_link = download(&app, &signed, None).await;
    assert_eq!(by_link.status(), 200);
    assert_eq!(by_link.bytes().await.unwrap(), body);
    let tampered = signed.replace("signature=", "signature=0");
    assert_eq!(download(&app, &tampered, None).await.status(), 403);
    // A signature for another export id is refused like a wrong one, whether or not that
    // export exists.
    let elsewhere = signed.replace(&format!("/exports/{id}/"), "/exports/exp_nosuchexport/");
    assert_eq!(download(&app, &elsewhere, None).await.status(), 403);
    let later = signed.replace("expires=", "expires=9");
    assert_eq!(
        download(&app, &later, None).await.status(),
        403,
        "the expiry is signed too"
    );
    let theirs = app
        .gql_auth(Some(&other), EXPORT, json!({ "id": id }))
        .await;
    assert_eq!(theirs.error_code().as_deref(), Some("NOT_FOUND"));

    // Exports are stored durably: after a restart the same bytes come back.
    let app = app.restart(|_| {}).await;
    let again = download(&app, &url, Some(&bearer)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn soc2_and_executive_bundles_carry_their_own_sections() {
    let app = spawn_app().await;
    let (run, incident) = leaked(&app).await;
    let bearer = format!("Bearer {}", app.key);
    let soc2 = ready(&app, &request(&app, &incident, "SOC2").await).await;
    let body: Value = download(&app, soc2["downloadUrl"].as_str().unwrap(), Some(&bearer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["bundle"], "SOC2");
    assert!(body["controlObjectives"].as_array().unwrap().len() >= 3);
    assert!(body["attestation"].as_str().unwrap().contains(&run));
    assert!(body["compliancePeriod"]["start"].is_string());
    assert!(body["auditorNotes"].is_string());
    assert_eq!(body["traceHeadHash"], body["verification"]["headHash"]);

    let debrief = ready(&app, &request(&app, &incident, "EXECUTIVE_DEBRIEF").await).await;
    let body: Value = download(
        &app,
        debrief["downloadUrl"].as_str().unwrap(),
        Some(&bearer),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(body["bundle"], "EXECUTIVE_DEBRIEF");
    assert!(body["summary"].as_str().unwrap().contains("No API keys"));
    assert_eq!(body["riskLevel"], "CRITICAL");
    assert!(body["timeToDetectMs"].is_i64());
    assert_eq!(body["costIncurredMicros"], 3000);
    assert!(!body["recommendedActions"].as_array().unwrap().is_empty());
    assert_eq!(body["remediationStatus"], "Not started");
    assert!(!body.to_string().contains(SECRET));

    // Exports show on the incident and the run.
    let links = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { exports { totalCount } incident { exports { nodes { kind status } } } } }",
            json!({ "id": run }),
        )
        .await;
    assert_eq!(links["run"]["exports"]["totalCount"], 2);

    // Refused: an unknown incident, a reason that is too long; nothing is stored.
    let long = app
        .gql(
            REQUEST,
            json!({ "incident": incident, "kind": "SOC2", "format": "JSON", "reason": "x".repeat(2001) }),
        )
        .await;
    assert_eq!(long.error_code().as_deref(), Some("BAD_USER_INPUT"));
    let missing = app
        .gql(REQUEST, json!({ "incident": "inc_01jx0000000000000000000000", "kind": "SOC2", "format": "JSON" }))
        .await;
    assert_eq!(missing.error_code().as_deref(), Some("NOT_FOUND"));
}

#[tokio::test]
async fn export_updates_follow_an_export_from_pending_to_ready() {
    // Without workers the export waits PENDING; a separate worker process then builds it.
    let app = spawn_app_with(|c| c.workers = WorkersMode::Off).await;
    let (_run, incident) = leaked(&app).await;
    let id = request(&app, &incident, "EVIDENCE").await;
    let mut ws = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    ws.expect_ack().await;
    ws.subscribe(
        "1",
        "subscription($id: ID!) { exportUpdates(id: $id) { cursor status progress sha256 export { id } } }",
        json!({ "id": id }),
    )
    .await;
    let first = ws.next_data("1").await;
    assert_eq!(first["exportUpdates"]["status"], "PENDING");

    let mut args = vec!["worker".to_string()];
    args.extend(app.env.cli_args());
    let _worker = tokio::process::Command::new(governance_bin())
        .args(&args)
        .env("GOVERNANCE_NAMESPACE", &app.env.namespace)
        .kill_on_drop(true)
        .spawn()
        .expect("start governance worker");

    let mut seen = vec![first["exportUpdates"].clone()];
    loop {
        match ws.next(Duration::from_secs(60)).await {
            WsEvent::Json(v) if v["type"] == "next" => {
                seen.push(v["payload"]["data"]["exportUpdates"].clone())
            }
            WsEvent::Json(v) if v["type"] == "complete" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let statuses: Vec<&str> = seen.iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"PENDING"));
    assert_eq!(statuses.last(), Some(&"READY"), "{statuses:?}");
    assert!(
        statuses.contains(&"RUNNING"),
        "progress is reported: {statuses:?}"
    );
    let progress: Vec<i64> = seen
        .iter()
        .map(|e| e["progress"].as_i64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&100));
    assert!(seen.last().unwrap()["sha256"].is_string());
}

/// The text of a PDF, through poppler's `pdftotext`.
pub(crate) async fn pdf_text(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.pdf");
    std::fs::write(&path, bytes).unwrap();
    let output = tokio::process::Command::new("pdftotext")
        .args(["-layout", path.to_str().unwrap(), "-"])
        .output()
        .await
        .expect("pdftotext (apt-get install poppler-utils)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) async fn request_pdf(app: &TestApp, incident: &str, kind: &str) -> String {
    let data = app
        .gql_ok(
            REQUEST,
            json!({ "incident": incident, "kind": kind, "format": "PDF", "reason": "board review" }),
        )
        .await;
    data["requestExport"]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn pdfs_are_rendered_by_typst_with_the_facts_an_auditor_checks() {
    let app = spawn_app().await;
    let (run, incident) = leaked(&app).await;
    let facts = app
        .gql_ok(
            "query($id: ID!) { run(id: $id) { policySnapshot { id } trace { headHash } } }",
            json!({ "id": run }),
        )
        .await;
    let snapshot = facts["run"]["policySnapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let head = facts["run"]["trace"]["headHash"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = format!("Bearer {}", app.key);
    for kind in ["EVIDENCE", "SOC2", "EXECUTIVE_DEBRIEF"] {
        let export = ready(&app, &request_pdf(&app, &incident, kind).await).await;
        assert_eq!(export["contentType"], "application/pdf", "{kind}");
        let response = download(&app, export["downloadUrl"].as_str().unwrap(), Some(&bearer)).await;
        assert_eq!(response.headers()["content-type"], "application/pdf");
        let bytes = response.bytes().await.unwrap();
        assert!(bytes.starts_with(b"%PDF-"), "{kind}");
        assert_eq!(
            export["sha256"],
            governance_core::hashing::sha256_hex(&bytes).as_str()
        );
        let text = pdf_text(&bytes).await;
        // Long hashes may wrap; the ids and the policy must be there as written.
        for needle in [run.as_str(), snapshot.as_str(), "No API keys"] {
            assert!(
                text.contains(needle),
                "{kind}: `{needle}` missing from:\n{text}"
            );
        }
        assert!(
            text.replace(['\n', ' '], "").contains(&head),
            "{kind}: the trace head hash is printed"
        );
        assert!(!text.contains(SECRET), "{kind}: the secret never appears");
        assert!(
            text.contains("x: step number") && text.contains("y: cumulative tokens"),
            "{kind}: the chart's axes are labelled:\n{text}"
        );
        if kind == "EXECUTIVE_DEBRIEF" {
            // Plain language: no code quotes, no doubled punctuation.
            assert!(!text.contains('`') && !text.contains(").)"), "{text}");
        }
        if kind != "EXECUTIVE_DEBRIEF" {
            assert!(
                text.contains("sk-[a-z0-9]{16}"),
                "{kind}: the threshold (pattern) is printed"
            );
        }
    }
}

#[tokio::test]
async fn a_template_error_fails_the_export_with_the_error() {
    let templates = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("common.typ", "#let setup(title, data, body) = body"),
        (
            "evidence.typ",
            "#import \"common.typ\": *\n#let data = json(\"/bundle.json\")\n#data.no.such.field",
        ),
        ("soc2.typ", "ok"),
        ("executive-debrief.typ", "ok"),
    ] {
        std::fs::write(templates.path().join(name), text).unwrap();
    }
    let dir = templates.path().to_path_buf();
    let app = spawn_app_with(move |c| c.templates_dir = Some(dir)).await;
    let (_run, incident) = leaked(&app).await;
    let id = request_pdf(&app, &incident, "EVIDENCE").await;
    let data = app
        .poll_until(EXPORT, json!({ "id": id }), Duration::from_secs(60), |d| {
            matches!(d["export"]["status"].as_str(), Some("READY" | "FAILED"))
        })
        .await;
    assert_eq!(data["export"]["status"], "FAILED", "{data}");
    let error = data["export"]["error"].as_str().unwrap();
    assert!(error.contains("evidence.typ"), "{error}");
    assert!(data["export"]["downloadUrl"].is_null());
    drop(templates);
}

#[tokio::test]
async fn a_thousand_step_incident_renders_and_paginates() {
    let app = spawn_app().await;
    app.create_policy(json!({
        "name": "Token budget", "kind": "TOKEN_BUDGET", "rule": { "maxTokens": 9995 },
        "action": "BLOCK", "severity": "HIGH",
    }))
    .await;
    let run = app.start_run("wf-long").await;
    let mut incident = None;
    for i in 0..1000 {
        let d = app
            .step_ok(
                &run,
                json!({ "stepIndex": i, "type": "LLM_CALL", "tokens": 10 }),
            )
            .await;
        if d["action"] == "STOP" {
            incident = d["incident"]["id"].as_str().map(str::to_string);
            assert_eq!(i, 999, "the budget is crossed at the last step");
        }
    }
    let incident = incident.expect("stopped");
    let data = app
        .gql_ok(
            REQUEST,
            json!({ "incident": incident, "kind": "SOC2", "format": "PDF" }),
        )
        .await;
    let id = data["requestExport"]["id"].as_str().unwrap().to_string();
    let export = app
        .poll_until(EXPORT, json!({ "id": id }), Duration::from_secs(180), |d| {
            matches!(d["export"]["status"].as_str(), Some("READY" | "FAILED"))
        })
        .await["export"]
        .clone();
    assert_eq!(export["status"], "READY", "{export}");
    let bytes = download(
        &app,
        export["downloadUrl"].as_str().unwrap(),
        Some(&format!("Bearer {}", app.key)),
    )
    .await
    .bytes()
    .await
    .unwrap();
    let text = pdf_text(&bytes).await;
    // pdftotext ends every page with a form feed.
    let pages = text.matches('\u{c}').count();
    assert!(pages >= 15, "1,000 steps paginate: {pages} pages");
    assert!(
        text.contains(&format!("page 1 of {pages}")),
        "numbered pages"
    );
    assert!(text.contains("999"), "the last step is in the trace table");
}

#[tokio::test]
async fn the_demo_drives_a_run_into_a_stop_and_writes_three_pdfs() {
    let out = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(governance_bin())
        .args(["demo", "--out", out.path().to_str().unwrap()])
        .output()
        .await
        .expect("run governance demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("→ STOP"), "{stdout}");
    assert!(stdout.contains("intact=true reproduced=true"), "{stdout}");
    for file in ["evidence.pdf", "soc2.pdf", "executive-debrief.pdf"] {
        let bytes = std::fs::read(out.path().join(file)).unwrap();
        assert!(bytes.starts_with(b"%PDF-"), "{file}");
        let text = pdf_text(&bytes).await;
        assert!(text.contains("Token budget"), "{file}: {text}");
    }
}

#[tokio::test]
async fn the_evidence_bundle_keeps_its_shape() {
    let app = spawn_app().await;
    let (_run, incident) = leaked(&app).await;
    let export = ready(&app, &request(&app, &incident, "EVIDENCE").await).await;
    let bundle: Value = download(&app, export["downloadUrl"].as_str().unwrap(), None)
        .await
        .json()
        .await
        .unwrap();
    // Ids, hashes that cover ids, and times differ per run; everything else is the contract.
    insta::assert_json_snapshot!("evidence_bundle", bundle, {
        ".exportId" => "[id]",
        ".exportedAt" => "[time]",
        ".exportedBy" => "[key id]",
        ".run.id" => "[id]",
        ".run.startedAt" => "[time]",
        ".run.completedAt" => "[time]",
        ".incident.id" => "[id]",
        ".incident.title" => "[title with run id]",
        ".incident.detectedAt" => "[time]",
        ".snapshot.id" => "[snapshot id]",
        ".snapshot.contentHash" => "[hash]",
        ".violatedPolicy.id" => "[id]",
        ".evidence" => "[evidence: masked content, checked elsewhere]",
        ".violations[].id" => "[id]",
        ".violations[].policyId" => "[id]",
        ".inflectionStep.timestamp" => "[time]",
        ".inflectionStep.prevHash" => "[hash]",
        ".inflectionStep.entryHash" => "[hash]",
        ".steps[].timestamp" => "[time]",
        ".steps[].prevHash" => "[hash]",
        ".steps[].entryHash" => "[hash]",
        ".traceHeadHash" => "[hash]",
        ".verification.headHash" => "[hash]",
        ".verification.genesis" => "[genesis document: covers ids and times]",
        ".verification.genesisHash" => "[hash]",
        ".verification.entries[].document" => "[step document: covers ids and times]",
        ".verification.entries[].prevHash" => "[hash]",
        ".verification.entries[].entryHash" => "[hash]",
        ".verification.leaf.data" => "[leaf document: covers ids and hashes]",
        ".verification.leaf.hash" => "[hash]",
        ".verification.inclusionProof.hashes[]" => "[hash]",
        ".verification.checkpoint" => "[signed note: covers the tenant and hashes]",
        ".verification.keyId" => "[key id]",
        ".verification.verifierKey" => "[verifier key]",
        ".verification.exportSignature" => "[signed note: covers every section]",
        ".totals.durationMs" => "[duration]",
    });
}

#[tokio::test]
async fn metrics_show_the_work_the_service_did() {
    let app = spawn_app().await;
    let (_run, incident) = leaked(&app).await;
    let export = request(&app, &incident, "EVIDENCE").await;
    ready(&app, &export).await;
    let mut socket = app
        .ws_connect(json!({ "Authorization": format!("Bearer {}", app.key) }))
        .await;
    socket
        .subscribe(
            "1",
            "subscription { incidentEvents { cursor kind } }",
            json!({}),
        )
        .await;
    // Worker metrics are per process (tests share one), so only at least what this test did.
    for (series, at_least) in [
        ("governance_steps_total{decision=\"STOP\"}", 1.0),
        ("governance_events_total{kind=\"INCIDENT_CREATED\"}", 1.0),
        (
            "governance_jobs_total{outcome=\"done\",queue=\"export\"}",
            1.0,
        ),
        (
            "governance_job_duration_seconds_count{queue=\"export\"}",
            1.0,
        ),
        ("governance_job_wait_seconds_count{queue=\"export\"}", 1.0),
        (
            "governance_export_render_seconds_count{format=\"JSON\"}",
            1.0,
        ),
        ("governance_jobs_readable", 1.0),
    ] {
        let value = app.metric(series).await;
        assert!(value >= at_least, "{series} = {value}");
    }
    // Read from the queues at the scrape: nothing waits or failed here.
    for state in ["pending", "dead"] {
        let series = format!("governance_jobs{{queue=\"export\",state=\"{state}\"}}");
        assert_eq!(app.metric(&series).await, 0.0, "{series}");
    }
    // This server's own gauges are exact.
    app.poll_metric_until("governance_subscriptions", |v| v == 1.0)
        .await;
    socket
        .send_json(json!({ "type": "complete", "id": "1" }))
        .await;
    app.poll_metric_until("governance_subscriptions", |v| v == 0.0)
        .await;
}
