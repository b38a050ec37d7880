//! Authentication at the edge: `Authorization: Bearer <key>` on HTTP, the same value in the
//! `connection_init` payload on WebSocket. Resolution itself is `governance_core::tenancy`.

use actix_web::HttpRequest;
use async_graphql::{
    BatchRequest,
    parser::types::{DocumentOperations, OperationType, Selection},
};
use governance_core::{
    CoreError, CoreResult,
    tenancy::{KeyCache, KeyCheck, Principal},
};
use sea_orm::DatabaseConnection;

fn missing() -> CoreError {
    CoreError::Unauthenticated(
        "no API key: send `Authorization: Bearer <key>` (the key `governance serve` printed on first start, or one from `governance tenant create`)"
            .to_string(),
    )
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn presented(req: &HttpRequest) -> CoreResult<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(missing)
}

/// The principal of an HTTP request, its key checked as `check` says.
pub async fn from_request(
    keys: &KeyCache,
    db: &DatabaseConnection,
    req: &HttpRequest,
    check: KeyCheck,
) -> CoreResult<Principal> {
    keys.authenticate(db, presented(req)?, check).await
}

/// A commit refused the request's key (it was revoked since it was cached): read it next time.
pub fn forget(keys: &KeyCache, req: &HttpRequest) {
    if let Ok(key) = presented(req) {
        keys.forget(key);
    }
}

/// How a GraphQL request's key must be checked: [`KeyCheck::AtCommit`] when all it does is
/// record steps (one operation, a mutation whose root fields are all `recordStep`; the step
/// writer checks the key as it commits), [`KeyCheck::Now`] for anything else. The document is
/// parsed here once and kept in the request for execution.
pub fn key_check(request: &mut BatchRequest) -> KeyCheck {
    let BatchRequest::Single(request) = request else {
        return KeyCheck::Now;
    };
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return KeyCheck::Now;
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations.get(name.as_str()) {
                Some(operation) => operation,
                None => return KeyCheck::Now,
            }
        }
        (DocumentOperations::Multiple(_), None) => return KeyCheck::Now,
    };
    let roots = &operation.node.selection_set.node.items;
    let steps_only = operation.node.ty == OperationType::Mutation
        && !roots.is_empty()
        && roots.iter().all(|item| {
            matches!(&item.node, Selection::Field(field) if field.node.name.node == "recordStep")
        });
    if steps_only {
        KeyCheck::AtCommit
    } else {
        KeyCheck::Now
    }
}

/// The key a WebSocket connection presents in `{"Authorization": "Bearer <key>"}`. The socket
/// keeps it, to re-check it while it is open.
pub fn connection_init_token(payload: &serde_json::Value) -> CoreResult<String> {
    payload
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .and_then(|(_, v)| v.as_str())
        })
        .and_then(bearer_token)
        .map(str::to_string)
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn parses_bearer_tokens() {
        assert_eq!(bearer_token("Bearer gov_abc"), Some("gov_abc"));
        assert_eq!(bearer_token("bearer   gov_abc "), Some("gov_abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("gov_abc"), None);
    }
}
