//! The one place where domain errors become GraphQL errors. Every error a client sees carries
//! `extensions.code`, one of: UNAUTHENTICATED, NOT_FOUND, BAD_USER_INPUT, CONFLICT,
//! RUN_TERMINATED, RATE_LIMITED, FORBIDDEN, INTERNAL. A refusal by a documented limit is
//! BAD_USER_INPUT with `extensions.limit` naming the setting; RATE_LIMITED carries
//! `extensions.retryAfterMs`; FORBIDDEN carries `extensions.requiredRole`.

use std::sync::Arc;

use async_graphql::{
    ErrorExtensions, Response, ServerError,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextSubscribe},
};
use futures::{StreamExt, stream::BoxStream};
use governance_core::CoreError;

/// Convert a domain error. Internal errors are logged with a reference and shown without detail.
pub fn to_gql(err: CoreError) -> async_graphql::Error {
    let code = err.code();
    let error = match &err {
        CoreError::Internal(inner) => {
            let reference = governance_core::ids::new_id("err");
            tracing::error!(error = ?inner, reference = %reference, "internal error");
            async_graphql::Error::new(format!(
                "internal error; the server log has the details under reference {reference}"
            ))
        }
        other => async_graphql::Error::new(other.to_string()),
    };
    error.extend_with(|_, ext| {
        ext.set("code", code);
        match &err {
            CoreError::BadInput {
                field: Some(field), ..
            } => ext.set("field", field.as_str()),
            CoreError::Limit { limit, .. } => ext.set("limit", *limit),
            CoreError::RateLimited { retry_after_ms, .. } => {
                ext.set("retryAfterMs", *retry_after_ms)
            }
            CoreError::Forbidden { required_role, .. } => ext.set("requiredRole", *required_role),
            _ => {}
        }
    })
}

/// `result.gql()?` in resolvers: domain result → GraphQL result, with the code attached.
pub trait GqlResultExt<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResultExt<T> for Result<T, CoreError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_gql)
    }
}

/// Errors raised by async-graphql itself (parse, validation, limits) carry no code; give them
/// `BAD_USER_INPUT`, and give any other code-less error `INTERNAL`, so every error has one.
pub fn ensure_codes(errors: &mut [ServerError]) {
    for error in errors {
        let has_code = error
            .extensions
            .as_ref()
            .is_some_and(|ext| ext.get("code").is_some());
        if has_code {
            continue;
        }
        let code = if error.path.is_empty() {
            // No path: the request failed before execution (syntax, validation, limits).
            "BAD_USER_INPUT"
        } else {
            "INTERNAL"
        };
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

/// Gives every error of every response a code, over HTTP and WebSocket alike.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        ensure_codes(&mut response.errors);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                ensure_codes(&mut response.errors);
                response
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Value;

    fn code_of(err: &async_graphql::Error) -> Option<Value> {
        err.extensions.as_ref().and_then(|e| e.get("code")).cloned()
    }

    #[test]
    fn each_domain_error_maps_to_its_code() {
        let cases = [
            (CoreError::Unauthenticated("no".into()), "UNAUTHENTICATED"),
            (CoreError::not_found("Run", "run_x"), "NOT_FOUND"),
            (CoreError::bad_field("input.rule", "bad"), "BAD_USER_INPUT"),
            (CoreError::Conflict("dup".into()), "CONFLICT"),
            (CoreError::RunTerminated("ended".into()), "RUN_TERMINATED"),
            (
                CoreError::limit("limits.max_aliases", "too many"),
                "BAD_USER_INPUT",
            ),
            (
                CoreError::RateLimited {
                    message: "slow down".into(),
                    retry_after_ms: 250,
                },
                "RATE_LIMITED",
            ),
            (
                CoreError::Internal(anyhow::anyhow!("secret detail")),
                "INTERNAL",
            ),
        ];
        for (err, code) in cases {
            let gql = to_gql(err);
            assert_eq!(code_of(&gql), Some(Value::from(code)));
        }
    }

    #[test]
    fn internal_details_are_not_shown() {
        let gql = to_gql(CoreError::Internal(anyhow::anyhow!("password=hunter2")));
        assert!(!gql.message.contains("hunter2"));
        assert!(gql.message.contains("reference err_"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let gql = to_gql(CoreError::bad_field(
            "input.rule.maxTokens",
            "must be positive",
        ));
        let field = gql
            .extensions
            .as_ref()
            .and_then(|e| e.get("field"))
            .cloned();
        assert_eq!(field, Some(Value::from("input.rule.maxTokens")));
    }

    #[test]
    fn limits_and_rate_limits_say_which_and_when() {
        let gql = to_gql(CoreError::limit("limits.max_aliases", "too many aliases"));
        let limit = gql
            .extensions
            .as_ref()
            .and_then(|e| e.get("limit"))
            .cloned();
        assert_eq!(limit, Some(Value::from("limits.max_aliases")));
        let gql = to_gql(CoreError::RateLimited {
            message: "slow down".into(),
            retry_after_ms: 250,
        });
        let retry = gql
            .extensions
            .as_ref()
            .and_then(|e| e.get("retryAfterMs"))
            .cloned();
        assert_eq!(retry, Some(Value::from(250u64)));
    }

    #[test]
    fn codeless_errors_get_one() {
        let mut errors = vec![ServerError::new("Query is nested too deep.", None)];
        ensure_codes(&mut errors);
        let code = errors[0]
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .cloned();
        assert_eq!(code, Some(Value::from("BAD_USER_INPUT")));
    }
}
