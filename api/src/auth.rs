//! Authentication at the edge: `Authorization: Bearer <key>` on HTTP, the same value in the
//! `connection_init` payload on WebSocket. Resolution itself is `governance_core::tenancy`.

use actix_web::HttpRequest;
use governance_core::{
    CoreError, CoreResult,
    tenancy::{self, Principal},
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

/// The principal of an HTTP request.
pub async fn from_request(db: &DatabaseConnection, req: &HttpRequest) -> CoreResult<Principal> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(missing)?;
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(missing)?;
    tenancy::authenticate(db, token).await
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
