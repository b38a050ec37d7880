//! HTTP routes: `/graphql` (POST queries, GET GraphiQL or WebSocket), health, readiness, metrics.

use actix_web::{
    HttpRequest, HttpResponse, guard,
    http::{StatusCode, header},
    web,
};
use async_graphql::{BatchRequest, BatchResponse, ServerError};
use futures::StreamExt;
use serde_json::json;

use crate::graphql::{limits, loaders};
use crate::media::{self, ResponseMedia};
use crate::{auth, graphql::GovernanceSchema, state::AppState, ws};
use governance_core::tenancy::KeyCheck;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/graphql")
            .route(web::post().to(graphql))
            .route(
                web::get()
                    .guard(guard::Header("upgrade", "websocket"))
                    .to(ws::subscriptions),
            )
            .route(web::get().to(crate::graphiql::page)),
    )
    .configure(crate::graphiql::routes)
    .route("/exports/{id}/download", web::get().to(download_export))
    .route("/.well-known/governance-keys", web::get().to(signing_keys))
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/metrics", web::get().to(metrics));
}

/// Headers every response carries: no MIME sniffing, and no referrer (a signed download URL
/// must not leak through one). Pages add their own CSP (see [`graphiql`]).
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// The query of a signed download URL.
#[derive(serde::Deserialize)]
struct SignedQuery {
    expires: Option<i64>,
    signature: Option<String>,
}

/// `GET /exports/{id}/download`: the rendered bytes of a READY export, with its media type, a
/// file name, and the sha256 as `ETag` (a matching `If-None-Match` gets 304). Either the
/// caller's `Authorization: Bearer` key (another tenant's export is 404, like a missing one) or a
/// signed, expiring `downloadUrl` (403 when altered or expired). One not READY yet is 409.
async fn download_export(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<SignedQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            &format!("Export `{id}` was not found"),
            "NOT_FOUND",
        )
    };
    let found = match (&query.expires, &query.signature) {
        // A signed URL: the signature binds tenant, export and expiry.
        // The signature is checked before the export's content is loaded.
        (Some(expires), Some(signature)) => match governance_core::exports::signed_download_tenant(
            &state.db,
            &state.download_key,
            &id,
            *expires,
            signature,
        )
        .await
        {
            Ok(Some(tenant_id)) => governance_core::exports::get(&state.db, &tenant_id, &id).await,
            Ok(None) => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "the download link is invalid or has expired: fetch `downloadUrl` again",
                    "UNAUTHENTICATED",
                );
            }
            Err(err) => Err(err),
        },
        _ => match auth::from_request(&state.keys, &state.db, &req, KeyCheck::Now).await {
            Ok(principal) => {
                governance_core::exports::get(&state.db, &principal.tenant_id, &id).await
            }
            Err(err) => {
                let status = match err.code() {
                    "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                return error_response(status, &err.to_string(), err.code());
            }
        },
    };
    let export = match found {
        Ok(export) => export,
        Err(err) if err.code() == "NOT_FOUND" => return not_found(),
        Err(err) => {
            tracing::error!(error = %err, "cannot read an export");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read the export right now; retry",
                "INTERNAL",
            );
        }
    };
    let (Some(content), Some(sha256)) = (export.content, export.sha256) else {
        return error_response(
            StatusCode::CONFLICT,
            &format!(
                "export `{id}` is {}, not READY: follow it with `exportUpdates` or poll `export(id)`",
                export.status
            ),
            "CONFLICT",
        );
    };
    let etag = format!("\"{sha256}\"");
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    let extension = match export.format {
        governance_entities::enums::ExportFormat::Json => "json",
        governance_entities::enums::ExportFormat::Pdf => "pdf",
    };
    let file = format!(
        "{}-{}.{extension}",
        export.kind.as_str().to_lowercase().replace('_', "-"),
        export.id
    );
    HttpResponse::Ok()
        .content_type(
            export
                .content_type
                .unwrap_or_else(|| "application/octet-stream".to_string()),
        )
        .insert_header((header::ETAG, etag))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .insert_header(("x-content-sha256", sha256))
        // Evidence must not linger in shared or browser caches.
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(content)
}

/// A GraphQL-shaped error body for a failure before a request reaches the executor: a
/// request error, so it has no `data` entry.
fn error_response(status: StatusCode, message: &str, code: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "errors": [{ "message": message, "extensions": { "code": code } }],
    }))
}

/// A refusal by a documented limit, before anything ran (a request error: no `data`).
fn limit_response(refusal: ServerError, media: ResponseMedia) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type(media.content_type())
        .json(json!({ "errors": [refusal] }))
}

/// Read the body up to the configured limit, refusing more with 413 and a GraphQL error.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
                "BAD_USER_INPUT",
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than the limit of {limit} bytes"),
                "BAD_USER_INPUT",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `POST /graphql`: every request needs a valid API key. The body is JSON (415 otherwise);
/// the response is `application/graphql-response+json` when `Accept` prefers it, else
/// `application/json` (see [`media`]).
async fn graphql(
    req: HttpRequest,
    payload: web::Payload,
    schema: web::Data<GovernanceSchema>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let media = ResponseMedia::from_accept(req.headers());
    if !media::accepts_content_type(req.headers()) {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the GraphQL request as JSON with `Content-Type: application/json`",
            "BAD_USER_INPUT",
        );
    }
    let body = match read_body(payload, state.config.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    // The body is read before the key is checked: a request that only records steps has its
    // key checked by the step writer as it commits, not by a read of its own here.
    let mut parsed = serde_json::from_slice::<BatchRequest>(&body);
    let check = match &mut parsed {
        Ok(request) => auth::key_check(request),
        Err(_) => KeyCheck::Now,
    };
    let principal = match auth::from_request(&state.keys, &state.db, &req, check).await {
        Ok(principal) => principal,
        Err(err) => {
            state
                .metrics
                .graphql_errors
                .with_label_values(&[err.code()])
                .inc();
            let status = match err.code() {
                "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let message = match &err {
                governance_core::CoreError::Internal(inner) => {
                    tracing::error!(error = ?inner, "authentication failed");
                    "cannot check the API key right now; retry".to_string()
                }
                other => other.to_string(),
            };
            return error_response(status, &message, err.code());
        }
    };
    let request: BatchRequest = match parsed {
        Ok(request) => request,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body is not a GraphQL request (JSON with `query`, `variables`, `operationName`): {e}"
                ),
                "BAD_USER_INPUT",
            );
        }
    };
    if request
        .iter()
        .any(|operation| operation.query.trim().is_empty())
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the body is not a GraphQL request: it has no `query` (a string holding the document)",
            "BAD_USER_INPUT",
        );
    }
    if let BatchRequest::Batch(operations) = &request {
        let max = state.config.limits.max_batch;
        if operations.len() > max {
            let refusal = if max == 0 {
                limits::refusal(
                    "limits.max_batch",
                    "batched requests (a JSON array of operations) are turned off here (limits.max_batch = 0): send one operation per request".to_string(),
                )
            } else {
                limits::over_limit(
                    "limits.max_batch",
                    format!("the batch holds {} operations", operations.len()),
                    operations.len(),
                    max,
                    ": send smaller batches",
                )
            };
            return limit_response(refusal, media);
        }
    }
    let loader = loaders::for_tenant(state.db.clone(), principal.tenant_id.clone());
    let response = schema
        .execute_batch(request.data(principal).data(loader))
        .await;
    let errors: Vec<&ServerError> = match &response {
        BatchResponse::Single(r) => r.errors.iter().collect(),
        BatchResponse::Batch(rs) => rs.iter().flat_map(|r| r.errors.iter()).collect(),
    };
    let mut unauthenticated = false;
    for error in errors {
        if let Some(code) = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(|v| match v {
                async_graphql::Value::String(s) => Some(s.clone()),
                _ => None,
            })
        {
            unauthenticated |= code == "UNAUTHENTICATED";
            state
                .metrics
                .graphql_errors
                .with_label_values(&[&code])
                .inc();
        }
    }
    // A key checked at commit and refused there was revoked after it was cached: the request
    // is answered as one refused at the door would be, and the key is read again next time.
    let request_error = media.request_error(&response);
    let status = if check == KeyCheck::AtCommit && unauthenticated {
        auth::forget(&state.keys, &req);
        StatusCode::UNAUTHORIZED
    } else if request_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut answer = HttpResponse::build(status);
    answer.content_type(media.content_type());
    match request_error {
        Some(body) => answer.json(body),
        None => answer.json(response),
    }
}

/// `GET /.well-known/governance-keys`: the public keys that sign this deployment's records, the
/// active one first, then the retired ones (still valid for what they signed). No key needed:
/// anyone checking a record must be able to fetch them.
async fn signing_keys(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .json(json!({ "keys": state.signing.published() }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database and the job queue both answer.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = governance_core::db::ping(&state.db).await;
    let queue = state.jobs.ping().await;
    let describe = |r: &anyhow::Result<()>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(format!("unavailable: {e:#}")),
    };
    let body = json!({
        "status": if database.is_ok() && queue.is_ok() { "ready" } else { "unavailable" },
        "database": describe(&database),
        "queue": describe(&queue),
    });
    if database.is_ok() && queue.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.read_queues(&state.jobs).await;
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(state.metrics.render())
}
