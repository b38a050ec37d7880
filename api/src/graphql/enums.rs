//! GraphQL enums of the contract. They mirror the persistence enums of `governance-entities`
//! (which must not carry GraphQL derives) and convert both ways.

use async_graphql::Enum;
use governance_entities::enums as db;

macro_rules! mirror {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
        #[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl From<db::$name> for $name {
            fn from(v: db::$name) -> Self {
                match v { $(db::$name::$variant => $name::$variant),+ }
            }
        }

        impl From<$name> for db::$name {
            fn from(v: $name) -> Self {
                match v { $($name::$variant => db::$name::$variant),+ }
            }
        }
    };
}

mirror!(
    /// Where a run is in its life.
    RunStatus {
        /// Accepted, not started.
        Queued,
        /// Executing; steps are being checked.
        Running,
        /// Ended normally.
        Succeeded,
        /// Ended with an error reported by the integrator.
        Failed,
        /// Stopped by governance at the step that violated a BLOCK policy.
        FailedPolicy,
        /// Aborted by a user.
        Cancelled,
    }
);

mirror!(
    /// Why a run ended.
    TerminationReason {
        Completed,
        PolicyBlock,
        BudgetExceeded,
        RateLimited,
        UserAbort,
        SystemFailure,
        Timeout,
    }
);

mirror!(
    /// The outcome of a run's evaluation record.
    EvaluationOutcome {
        /// Policies applied and none was violated.
        NoViolation,
        /// The run was stopped by a BLOCK policy.
        Violation,
        /// Only WARN policies fired: a candidate for a draft policy change.
        Advisory,
        /// No policy applied to the run.
        NotApplicable,
    }
);
