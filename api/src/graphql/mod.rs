//! The GraphQL schema: one module per domain, merged into the root types. Resolvers stay thin:
//! they read the principal, translate arguments, and call `governance_core`.

pub mod approvals;
pub mod audits;
pub mod enums;
pub mod error;
pub mod explain;
pub mod exports;
pub mod halts;
pub mod incidents;
pub mod limits;
pub mod loaders;
pub mod node;
pub mod pagination;
pub mod parsed;
pub mod policies;
pub mod runs;
pub mod scalars;
pub mod signing;
pub mod simulations;
pub mod snapshots;
pub mod status;
pub mod steps;
pub mod tenancy;
pub mod transparency;
pub mod webhooks;

use async_graphql::{
    Context, MergedObject, MergedSubscription, SDLExportOptions, Schema, SchemaBuilder,
};
use governance_core::{CoreError, tenancy::Principal};

use crate::{config::Limits, state::AppState};

/// The root query.
#[derive(MergedObject, Default)]
pub struct Query(
    tenancy::TenancyQuery,
    node::NodeQuery,
    runs::RunQuery,
    policies::PolicyQuery,
    steps::StepQuery,
    snapshots::SnapshotQuery,
    incidents::IncidentQuery,
    exports::ExportQuery,
    status::StatusQuery,
    audits::AuditQuery,
    webhooks::WebhookQuery,
    signing::SigningQuery,
    transparency::TransparencyQuery,
    halts::HaltQuery,
    approvals::ApprovalQuery,
    simulations::SimulationQuery,
);

/// The root mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(
    runs::RunMutation,
    policies::PolicyMutation,
    steps::StepMutation,
    incidents::IncidentMutation,
    audits::AuditMutation,
    webhooks::WebhookMutation,
    exports::ExportMutation,
    halts::HaltMutation,
    approvals::ApprovalMutation,
    simulations::SimulationMutation,
);

/// The root subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscription(
    runs::RunSubscription,
    incidents::IncidentSubscription,
    exports::ExportSubscription,
    audits::AuditSubscription,
    transparency::TransparencySubscription,
    halts::HaltSubscription,
    approvals::ApprovalSubscription,
    simulations::SimulationSubscription,
);

pub type GovernanceSchema = Schema<Query, Mutation, Subscription>;

fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .register_output_type::<node::Node>()
}

/// The schema with its state and limits.
pub fn build_schema(state: AppState, limits: &Limits) -> GovernanceSchema {
    builder()
        .data(state)
        .extension(error::ErrorCodes)
        // Outside the limits: it keeps only documents that passed them.
        .extension(parsed::ParsedDocuments::default())
        // Depth and cost are checked by this extension (with messages that say by how much),
        // not by async-graphql's own limits.
        .extension(limits::OperationLimits(limits.clone()))
        .finish()
}

/// The SDL, sorted so it diffs cleanly (what `governance schema` prints and `schema.graphql` holds).
pub fn sdl() -> String {
    builder().finish().sdl_with_options(
        SDLExportOptions::new()
            .sorted_fields()
            .sorted_arguments()
            .sorted_enum_items(),
    )
}

/// The caller. Every request is authenticated before execution, so absence is a bug in wiring.
pub fn principal<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Principal> {
    ctx.data_opt::<Principal>().ok_or_else(|| {
        error::to_gql(CoreError::Unauthenticated(
            "no API key: send `Authorization: Bearer <key>`".to_string(),
        ))
    })
}

/// The caller, allowed to do what needs `capability` (else `FORBIDDEN`, naming the role).
pub fn authorized<'a>(
    ctx: &'a Context<'_>,
    capability: governance_core::roles::Capability,
) -> async_graphql::Result<&'a Principal> {
    let principal = principal(ctx)?;
    principal.authorize(capability).map_err(error::to_gql)?;
    Ok(principal)
}

/// Take one call of a rate-limited operation for the caller's tenant, or refuse it with
/// `RATE_LIMITED` before it runs.
pub fn rate_limit(
    ctx: &Context<'_>,
    op: governance_core::rate_limit::Costly,
) -> async_graphql::Result<()> {
    use error::GqlResultExt;
    let tenant_id = &principal(ctx)?.tenant_id;
    state(ctx).rate_limiter.check(tenant_id, op).gql()
}

/// The application state.
pub fn state<'a>(ctx: &'a Context<'_>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}
