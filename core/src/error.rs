//! The one error type of the domain. Adapters map it to their wire format in exactly one place
//! (for GraphQL: `governance_api::graphql::error`).

use thiserror::Error;

/// What went wrong, phrased for the caller: each message says what to change.
#[derive(Debug, Error)]
pub enum CoreError {
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The object does not exist for this tenant (another tenant's objects are indistinguishable).
    #[error("{kind} `{id}` was not found")]
    NotFound { kind: &'static str, id: String },
    /// The input is invalid. `field` names where, when known (e.g. `input.rule.maxTokens`).
    #[error("{message}")]
    BadInput {
        message: String,
        field: Option<String>,
    },
    /// The request conflicts with what is already recorded.
    #[error("{0}")]
    Conflict(String),
    /// A step was reported for a run that has already ended.
    #[error("{0}")]
    RunTerminated(String),
    /// A documented limit refuses the request before anything runs or is written
    /// (`BAD_USER_INPUT`, with the limit's configuration name in `extensions.limit`).
    #[error("{message}")]
    Limit {
        /// The setting that sets the limit, e.g. `webhooks.max_per_tenant`.
        limit: &'static str,
        message: String,
    },
    /// Too many requests of one kind from the tenant; retry after `retry_after_ms`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_ms: u64,
    },
    /// The API key's roles do not allow the operation (`FORBIDDEN`, with the role it needs in
    /// `extensions.requiredRole`).
    #[error("{message}")]
    Forbidden {
        required_role: &'static str,
        message: String,
    },
    /// Anything else: a bug or an unavailable dependency. Details are logged, not shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl CoreError {
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        CoreError::NotFound {
            kind,
            id: id.into(),
        }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        CoreError::BadInput {
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::BadInput {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn limit(limit: &'static str, message: impl Into<String>) -> Self {
        CoreError::Limit {
            limit,
            message: message.into(),
        }
    }

    /// A stable SHOUTY_SNAKE code for the error, the same in every adapter.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::Unauthenticated(_) => "UNAUTHENTICATED",
            CoreError::NotFound { .. } => "NOT_FOUND",
            CoreError::BadInput { .. } | CoreError::Limit { .. } => "BAD_USER_INPUT",
            CoreError::RateLimited { .. } => "RATE_LIMITED",
            CoreError::Forbidden { .. } => "FORBIDDEN",
            CoreError::Conflict(_) => "CONFLICT",
            CoreError::RunTerminated(_) => "RUN_TERMINATED",
            CoreError::Internal(_) => "INTERNAL",
        }
    }
}

impl From<sea_orm::DbErr> for CoreError {
    fn from(err: sea_orm::DbErr) -> Self {
        CoreError::Internal(anyhow::Error::new(err))
    }
}

/// What the SQLite step batch, which drives its connection directly, meets.
impl From<sea_orm::sqlx::Error> for CoreError {
    fn from(err: sea_orm::sqlx::Error) -> Self {
        CoreError::Internal(anyhow::Error::new(err))
    }
}

impl From<sea_orm::TransactionError<CoreError>> for CoreError {
    fn from(err: sea_orm::TransactionError<CoreError>) -> Self {
        match err {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(core) => core,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        assert_eq!(
            CoreError::Unauthenticated("x".into()).code(),
            "UNAUTHENTICATED"
        );
        assert_eq!(CoreError::not_found("Run", "run_1").code(), "NOT_FOUND");
        assert_eq!(CoreError::bad_input("x").code(), "BAD_USER_INPUT");
        assert_eq!(CoreError::Conflict("x".into()).code(), "CONFLICT");
        assert_eq!(
            CoreError::RunTerminated("x".into()).code(),
            "RUN_TERMINATED"
        );
        assert_eq!(CoreError::limit("x", "y").code(), "BAD_USER_INPUT");
        assert_eq!(
            CoreError::RateLimited {
                message: "x".into(),
                retry_after_ms: 1
            }
            .code(),
            "RATE_LIMITED"
        );
        assert_eq!(
            CoreError::Internal(anyhow::anyhow!("boom")).code(),
            "INTERNAL"
        );
    }

    #[test]
    fn not_found_names_kind_and_id() {
        assert_eq!(
            CoreError::not_found("Run", "run_1").to_string(),
            "Run `run_1` was not found"
        );
    }
}
