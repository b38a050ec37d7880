//! The entities under short names (`Run`, `TraceStep`, …) and the shared enums.

pub use crate::api_key::Entity as ApiKey;
pub use crate::audit::Entity as Audit;
pub use crate::audit_check::Entity as AuditCheck;
pub use crate::enums::*;
pub use crate::event::Entity as Event;
pub use crate::evidence::Entity as Evidence;
pub use crate::export::Entity as Export;
pub use crate::incident::Entity as Incident;
pub use crate::policy::Entity as Policy;
pub use crate::policy_enforcement::Entity as PolicyEnforcement;
pub use crate::policy_evaluation::Entity as PolicyEvaluation;
pub use crate::policy_snapshot::Entity as PolicySnapshot;
pub use crate::policy_version::Entity as PolicyVersion;
pub use crate::run::Entity as Run;
pub use crate::tenant::Entity as Tenant;
pub use crate::trace_step::Entity as TraceStep;
pub use crate::violation::Entity as Violation;
pub use crate::webhook::Entity as Webhook;
pub use crate::webhook_delivery::Entity as WebhookDelivery;
