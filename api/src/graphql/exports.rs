//! Exports as the graph shows them: an incident's evidence, SOC2 or executive-debrief bundle
//! and where it stands.

use async_graphql::{Context, ID, Object};
use governance_core::CoreError;
use governance_entities::export;

use super::{
    enums::{ExportFormat, ExportKind, ExportStatus},
    error::GqlResultExt,
    incidents::Incident,
    loaders::{self, loader},
    runs::{Run, load_run},
    scalars::DateTime,
};

pub struct Export(pub export::Summary);

/// A bundle of an incident (evidence, SOC2, executive debrief) rendered as JSON or PDF.
#[Object]
impl Export {
    /// `exp_…`
    pub async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// Which bundle.
    async fn kind(&self) -> ExportKind {
        self.0.kind.into()
    }
    /// JSON or PDF.
    async fn format(&self) -> ExportFormat {
        self.0.format.into()
    }
    /// PENDING, RUNNING, then READY or FAILED.
    async fn status(&self) -> ExportStatus {
        self.0.status.into()
    }
    /// 0–100.
    async fn progress(&self) -> i32 {
        self.0.progress
    }
    /// Why it was requested.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// sha256 of the rendered bytes, hex (once READY).
    async fn sha256(&self) -> Option<&str> {
        self.0.sha256.as_deref()
    }
    /// Size of the rendered bytes (once READY).
    async fn size_bytes(&self) -> Option<i64> {
        self.0.size_bytes
    }
    /// Why it FAILED.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// When it was requested.
    async fn created_at(&self) -> DateTime {
        self.0.created_at.into()
    }
    /// When it became READY or FAILED.
    async fn completed_at(&self) -> Option<DateTime> {
        self.0.completed_at.map(Into::into)
    }
    /// The incident exported.
    async fn incident(&self, ctx: &Context<'_>) -> async_graphql::Result<Incident> {
        loader(ctx)?
            .load_one(loaders::IncidentId(self.0.incident_id.clone()))
            .await?
            .map(Incident)
            .ok_or_else(|| CoreError::not_found("Incident", self.0.incident_id.as_str()))
            .gql()
    }
    /// The run of the incident.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        load_run(ctx, &self.0.run_id).await
    }
}

#[derive(Default)]
pub struct ExportQuery;

#[Object]
impl ExportQuery {
    /// One export of the tenant (poll it until `status` is READY or FAILED).
    async fn export(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Export> {
        loader(ctx)?
            .load_one(loaders::ExportId(id.to_string()))
            .await?
            .map(Export)
            .ok_or_else(|| CoreError::not_found("Export", id.to_string()))
            .gql()
    }
}
