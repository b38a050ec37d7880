//! Media types of GraphQL over HTTP (the GraphQL-over-HTTP specification): which request bodies
//! `POST /graphql` accepts, which response type a client asked for, and the status code and body
//! shape that type calls for.

use actix_web::http::header::HeaderMap;
use async_graphql::BatchResponse;

/// `application/graphql-response+json`: the specification's own response type.
pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
/// `application/json`: the legacy type, still the default when a client names no other.
pub const JSON: &str = "application/json; charset=utf-8";

/// The response type a request asked for with `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseMedia {
    /// Request errors (unparsable, invalid, bad variables) are 400, and carry no `data`.
    GraphqlResponseJson,
    /// Every well-formed request is 200, errors included (the legacy behaviour).
    Json,
}

impl ResponseMedia {
    /// The type `Accept` prefers: `application/graphql-response+json` when it is named with a
    /// weight at least that of `application/json`; `application/json` otherwise, and when
    /// `Accept` is absent, `*/*` or names neither (a client that cannot take JSON gets it anyway).
    pub fn from_accept(headers: &HeaderMap) -> Self {
        let mut graphql = None::<f32>;
        let mut json = None::<f32>;
        for value in headers.get_all(actix_web::http::header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let weight = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                let slot = match media.as_str() {
                    "application/graphql-response+json" => &mut graphql,
                    "application/json" => &mut json,
                    _ => continue,
                };
                *slot = Some(slot.map_or(weight, |w: f32| w.max(weight)));
            }
        }
        match (graphql, json) {
            (Some(g), j) if g > 0.0 && g >= j.unwrap_or(0.0) => Self::GraphqlResponseJson,
            _ => Self::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::GraphqlResponseJson => GRAPHQL_RESPONSE_JSON,
            Self::Json => JSON,
        }
    }

    /// The body of a request error (nothing executed: the document did not parse or validate,
    /// or the variables did not coerce) when this type answers it with 400 and no `data`
    /// (`application/graphql-response+json`); `None` when the response goes out as it is, with
    /// 200. Only that rare answer is rebuilt: every other response is serialised once, as is.
    pub fn request_error(self, response: &BatchResponse) -> Option<serde_json::Value> {
        let BatchResponse::Single(single) = response else {
            return None;
        };
        if self != Self::GraphqlResponseJson || !is_request_error(single) {
            return None;
        }
        let mut body = serde_json::json!({ "errors": single.errors });
        if !single.extensions.is_empty() {
            body["extensions"] = serde_json::json!(single.extensions);
        }
        Some(body)
    }
}

/// Nothing executed: no data, and no error came from a field (field errors carry a `path`).
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// Whether `Content-Type` names a body `POST /graphql` can read: JSON, in UTF-8 (the charset
/// may be omitted). Anything else is refused with 415 before the body is read.
pub fn accepts_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset_ok = parts.all(|p| {
        let p = p.trim().to_ascii_lowercase();
        match p.strip_prefix("charset=") {
            Some(charset) => matches!(charset.trim_matches('"'), "utf-8" | "utf8"),
            None => true,
        }
    });
    media == "application/json" && charset_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};

    fn headers(name: actix_web::http::header::HeaderName, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn accept_picks_the_preferred_json_type() {
        use ResponseMedia::*;
        assert_eq!(ResponseMedia::from_accept(&HeaderMap::new()), Json);
        for (accept, expected) in [
            ("application/json", Json),
            ("*/*", Json),
            ("text/html", Json),
            ("application/graphql-response+json", GraphqlResponseJson),
            (
                "application/graphql-response+json, application/json;q=0.9",
                GraphqlResponseJson,
            ),
            (
                "application/json, application/graphql-response+json;q=0.5",
                Json,
            ),
            ("application/graphql-response+json;q=0", Json),
        ] {
            assert_eq!(
                ResponseMedia::from_accept(&headers(ACCEPT, accept)),
                expected,
                "{accept}"
            );
        }
    }

    #[test]
    fn only_utf8_json_bodies_are_read() {
        assert!(!accepts_content_type(&HeaderMap::new()));
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
        ] {
            assert!(accepts_content_type(&headers(CONTENT_TYPE, ok)), "{ok}");
        }
        for refused in [
            "text/plain",
            "application/json; charset=latin1",
            "application/graphql",
        ] {
            assert!(
                !accepts_content_type(&headers(CONTENT_TYPE, refused)),
                "{refused}"
            );
        }
    }
}
