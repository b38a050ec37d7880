//! Exports as the graph shows them: an incident's evidence, SOC2 or executive-debrief bundle
//! and where it stands.

use async_graphql::{Context, ID, Object, Subscription};
use futures::{Stream, StreamExt};
use governance_core::roles::Capability;
use governance_core::{CoreError, events, exports};
use governance_entities::{enums as db, export};

use super::{
    enums::{ExportFormat, ExportKind, ExportStatus},
    error::GqlResultExt,
    incidents::Incident,
    loaders::{self, loader},
    principal,
    runs::{Run, load_run},
    scalars::DateTime,
    state,
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
    /// Where to download it once READY: a path signed for 15 minutes that needs no API key
    /// (fetch this field again for a fresh one). `GET /exports/{id}/download` with your
    /// `Authorization: Bearer` key works too.
    async fn download_url(&self, ctx: &Context<'_>) -> Option<String> {
        (self.0.status == db::ExportStatus::Ready).then(|| {
            let expires = (governance_core::time::now() + exports::DOWNLOAD_URL_TTL).timestamp();
            exports::signed_download_path(
                &state(ctx).download_key,
                &self.0.tenant_id,
                &self.0.id,
                expires,
            )
        })
    }
    /// The media type of the rendered bytes (once READY).
    async fn content_type(&self) -> Option<&str> {
        self.0.content_type.as_deref()
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

#[derive(Default)]
pub struct ExportMutation;

#[Object]
impl ExportMutation {
    /// Export an incident's bundle (EVIDENCE, SOC2 or EXECUTIVE_DEBRIEF). The export is answered
    /// PENDING and built by a job; follow it with `exportUpdates(id)` or poll `export(id)` until
    /// READY (then download it) or FAILED (`error` says why). `format` is JSON (the bundle
    /// itself) or PDF (rendered with Typst from the same bundle).
    #[graphql(complexity = 20)]
    async fn request_export(
        &self,
        ctx: &Context<'_>,
        incident_id: ID,
        kind: ExportKind,
        format: ExportFormat,
        reason: Option<String>,
    ) -> async_graphql::Result<Export> {
        super::rate_limit(ctx, governance_core::rate_limit::Costly::RequestExport)?;
        let principal = super::authorized(ctx, Capability::Read)?;
        let state = state(ctx);
        let committed = exports::request(
            &state.store,
            &principal.tenant_id,
            &incident_id,
            kind.into(),
            format.into(),
            reason,
            &principal.key_id,
        )
        .await
        .gql()?;
        let export = state.after_commit(committed).await;
        Ok(Export(export.into()))
    }
}

/// One state of an export, as a subscriber sees it change.
pub struct ExportUpdate {
    cursor: String,
    status: db::ExportStatus,
    progress: i32,
    sha256: Option<String>,
    error: Option<String>,
    occurred_at: chrono::DateTime<chrono::Utc>,
    export_id: String,
}

impl ExportUpdate {
    fn of_event(event: &governance_entities::event::Model) -> Option<Self> {
        let payload = &event.payload;
        Some(Self {
            cursor: event.seq.to_string(),
            status: payload.get("status")?.as_str()?.parse().ok()?,
            progress: payload.get("progress")?.as_i64()? as i32,
            sha256: payload
                .get("sha256")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            error: payload
                .get("error")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            occurred_at: event.created_at,
            export_id: event.subject_id.clone(),
        })
    }

    fn is_final(&self) -> bool {
        matches!(
            self.status,
            db::ExportStatus::Ready | db::ExportStatus::Failed
        )
    }
}

/// An export's status and progress at one moment.
#[Object]
impl ExportUpdate {
    /// The position in the tenant's event sequence.
    async fn cursor(&self) -> &str {
        &self.cursor
    }
    /// The status then.
    async fn status(&self) -> ExportStatus {
        self.status.into()
    }
    /// The progress then (0–100).
    async fn progress(&self) -> i32 {
        self.progress
    }
    /// sha256 of the rendered bytes, once READY.
    async fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }
    /// Why it FAILED.
    async fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    /// When the change was committed.
    async fn occurred_at(&self) -> DateTime {
        self.occurred_at.into()
    }
    /// The export as it is now.
    async fn export(&self, ctx: &Context<'_>) -> async_graphql::Result<Export> {
        loader(ctx)?
            .load_one(loaders::ExportId(self.export_id.clone()))
            .await?
            .map(Export)
            .ok_or_else(|| CoreError::not_found("Export", self.export_id.as_str()))
            .gql()
    }
}

#[derive(Default)]
pub struct ExportSubscription;

#[Subscription]
impl ExportSubscription {
    /// One export's status and progress: its state now, then every change in order until it
    /// is READY or FAILED, then the stream completes.
    async fn export_updates(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = ExportUpdate> + use<>> {
        let principal = principal(ctx)?.clone();
        let state = state(ctx).clone();
        // Live changes from the current end of the sequence, subscribed before the state is
        // read: a change in between shows up twice (harmless), never not at all.
        let from = events::latest_seq(&state.db, &principal.tenant_id)
            .await
            .gql()?;
        let export_id = id.to_string();
        let live = governance_workers::events::tenant_stream(
            state.db.clone(),
            &state.bus,
            principal.tenant_id.clone(),
            from,
        );
        let current = exports::get(&state.db, &principal.tenant_id, &export_id)
            .await
            .gql()?;
        let now = ExportUpdate {
            cursor: from.to_string(),
            status: current.status,
            progress: current.progress,
            sha256: current.sha256,
            error: current.error,
            occurred_at: current.updated_at,
            export_id: current.id,
        };
        let updates = live.filter_map(move |event| {
            let update = (event.kind == "EXPORT_UPDATED" && event.subject_id == export_id)
                .then(|| ExportUpdate::of_event(&event))
                .flatten();
            async move { update }
        });
        let stream = futures::stream::iter([now]).chain(updates).boxed();
        Ok(super::runs::until_inclusive(stream, ExportUpdate::is_final))
    }
}
