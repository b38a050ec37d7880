//! GraphQL over HTTP conformance: every MUST of the graphql-http server audit
//! (graphql/graphql-http, `src/audits/server.ts`), and the SHOULDs we implement, each sent as the
//! audit sends it, with an API key (every request needs one here).

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// What one audit sends.
struct Audit {
    id: &'static str,
    accept: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Option<String>,
}

impl Audit {
    /// A JSON POST, as most audits send.
    fn json(id: &'static str, accept: Option<&'static str>, body: Option<String>) -> Self {
        Audit {
            id,
            accept,
            content_type: JSON,
            body,
        }
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

fn body(value: Value) -> Option<String> {
    Some(value.to_string())
}

async fn send(app: &TestApp, audit: &Audit) -> Answer {
    let mut request = app.http().post(app.url("/graphql")).bearer_auth(&app.key);
    if let Some(accept) = audit.accept {
        request = request.header("accept", accept);
    }
    if let Some(content_type) = audit.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(body) = &audit.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = response.bytes().await.unwrap();
    // 82A3: the response is UTF-8.
    let text = String::from_utf8(bytes.to_vec())
        .unwrap_or_else(|_| panic!("{}: the response is not UTF-8", audit.id));
    Answer {
        status,
        content_type,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

const JSON: Option<&str> = Some("application/json");
const GRAPHQL_RESPONSE: Option<&str> = Some("application/graphql-response+json");

fn typename() -> Option<String> {
    body(json!({ "query": "{ __typename }" }))
}

#[tokio::test]
async fn every_must_of_the_graphql_http_audit_holds() {
    let app = spawn_app().await;
    // (audit, expected content type) — each must answer 200 without errors.
    let musts = [
        (
            // 4655: MUST accept application/json and match the content-type.
            Audit::json("4655", JSON, typename()),
            "application/json",
        ),
        (
            // 22EB: SHOULD accept application/graphql-response+json and match the content-type.
            Audit::json("22EB", GRAPHQL_RESPONSE, typename()),
            "application/graphql-response+json",
        ),
        (
            // 47DE: SHOULD accept */* and use application/json.
            Audit::json("47DE", Some("*/*"), typename()),
            "application/json",
        ),
        (
            // 80D8 / 82A3 / 78D5 / 2C94 / 03D4: no Accept is application/json; POST works;
            // UTF-8 is assumed when no charset is given.
            Audit::json("80D8", None, typename()),
            "application/json",
        ),
        (
            // BF61: MUST accept utf-8 encoded request.
            Audit {
                id: "BF61",
                accept: None,
                content_type: Some("application/json; charset=utf-8"),
                body: body(json!({ "query": "{ __type(name: \"Run🏃Swim🏊\") { name } }" })),
            },
            "application/json",
        ),
        (
            // 13EE: MUST allow string {query} when accepting application/json.
            Audit::json("13EE", JSON, typename()),
            "application/json",
        ),
        (
            // B8B3: MUST allow string {operationName}.
            Audit::json(
                "B8B3",
                JSON,
                body(json!({ "operationName": "Query", "query": "query Query { __typename }" })),
            ),
            "application/json",
        ),
        (
            // 28B9: MUST allow map {variables}.
            Audit::json(
                "28B9",
                JSON,
                body(json!({
                    "query": "query Type($name: String!) { __type(name: $name) { name } }",
                    "variables": { "name": "sometype" },
                })),
            ),
            "application/json",
        ),
        (
            // 1B7A: MUST allow map {extensions}.
            Audit::json(
                "1B7A",
                JSON,
                body(json!({ "query": "{ __typename }", "extensions": { "some": "value" } })),
            ),
            "application/json",
        ),
    ];
    for (audit, expected) in &musts {
        let answer = send(&app, audit).await;
        assert_eq!(answer.status, 200, "{}: {}", audit.id, answer.body);
        assert!(
            answer.content_type.starts_with(expected),
            "{}: content-type {}",
            audit.id,
            answer.content_type
        );
        assert!(
            answer.body.get("errors").is_none(),
            "{}: {}",
            audit.id,
            answer.body
        );
        assert!(
            answer.body["data"].is_object(),
            "{}: {}",
            audit.id,
            answer.body
        );
    }
    // 0220 / 0221 / 0222 (MUST) and 94B0-2 (SHOULD): null variables, operationName, extensions.
    for parameter in ["variables", "operationName", "extensions"] {
        for accept in [JSON, GRAPHQL_RESPONSE] {
            let mut request = json!({ "query": "{ __typename }" });
            request[parameter] = Value::Null;
            let audit = Audit::json("022x", accept, body(request));
            let answer = send(&app, &audit).await;
            assert_eq!(
                answer.status, 200,
                "null {parameter}, {accept:?}: {}",
                answer.body
            );
            assert!(
                answer.body.get("errors").is_none(),
                "null {parameter}: {}",
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn request_errors_follow_the_accepted_media_type() {
    let app = spawn_app().await;
    let unparsable = body(json!({ "query": "{" }));
    let invalid = body(json!({ "query": "{ notAField }" }));
    let uncoercible = body(json!({
        "query": "query CoerceMe($id: ID!) { run(id: $id) { id } }",
        "variables": { "id": { "not": "an id" } },
    }));
    for (what, request) in [
        ("parse", &unparsable),
        ("validation", &invalid),
        ("coercion", &uncoercible),
    ] {
        // 572B / FDE2 / 7B9B: application/json answers 200 with the errors.
        let legacy = send(&app, &Audit::json(what, JSON, request.clone())).await;
        assert_eq!(legacy.status, 200, "{what}: {}", legacy.body);
        assert!(legacy.body["errors"].is_array(), "{what}: {}", legacy.body);
        // 556A / 74FF / 86EE: application/graphql-response+json answers 400, and
        // D586 / 5E5B: without a `data` entry.
        let modern = send(&app, &Audit::json(what, GRAPHQL_RESPONSE, request.clone())).await;
        assert_eq!(modern.status, 400, "{what}: {}", modern.body);
        assert!(
            modern
                .content_type
                .starts_with("application/graphql-response+json")
        );
        assert!(modern.body["errors"].is_array(), "{what}: {}", modern.body);
        assert!(modern.body.get("data").is_none(), "{what}: {}", modern.body);
    }
    // A field error is not a request error: the operation executed, so it is 200 with data.
    let executed = send(
        &app,
        &Audit::json(
            "EE52",
            GRAPHQL_RESPONSE,
            body(json!({ "query": "{ run(id: \"run_missing\") { id } }" })),
        ),
    )
    .await;
    assert_eq!(executed.status, 200, "{}", executed.body);
    assert!(executed.body.get("data").is_some(), "{}", executed.body);

    // BCF8 / B7N8: unparsable JSON is 400 whatever the client accepts.
    for accept in [JSON, GRAPHQL_RESPONSE] {
        let answer = send(
            &app,
            &Audit::json("BCF8", accept, Some("{ \"not a JSON".into())),
        )
        .await;
        assert_eq!(answer.status, 400, "{accept:?}: {}", answer.body);
        assert_eq!(
            answer.body["errors"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
    }
    // 423L / LKJ0-3 / 6C00-3 / 4760-3 / 58B0-3 / 3E3A: wrongly typed or missing parameters are 400.
    for request in [
        json!({ "notquery": "{ __typename }" }),
        json!({ "query": { "obj": "ect" } }),
        json!({ "query": 0 }),
        json!({ "query": false }),
        json!({ "query": ["array"] }),
        json!({ "query": "{ __typename }", "operationName": 0 }),
        json!({ "query": "{ __typename }", "variables": "string" }),
        json!({ "query": "{ __typename }", "variables": ["array"] }),
        json!({ "query": "{ __typename }", "extensions": "string" }),
    ] {
        let answer = send(&app, &Audit::json("400", None, body(request.clone()))).await;
        assert_eq!(answer.status, 400, "{request}: {}", answer.body);
    }
    // 9ABE: a POST without a content type is 415, as is one that is not JSON.
    for content_type in [None, Some("text/plain")] {
        let answer = send(
            &app,
            &Audit {
                id: "9ABE",
                accept: None,
                content_type,
                body: typename(),
            },
        )
        .await;
        assert_eq!(answer.status, 415, "{content_type:?}: {}", answer.body);
        assert_eq!(
            answer.body["errors"][0]["extensions"]["code"],
            "BAD_USER_INPUT"
        );
    }
    // A400 (MAY): a missing body is 400.
    let answer = send(&app, &Audit::json("A5BF", None, None)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}
