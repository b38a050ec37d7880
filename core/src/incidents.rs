//! The incident workflow: `OPEN` → `ACKNOWLEDGED` → `RESOLVED` (or `OPEN` → `RESOLVED` directly).
//! Each change is one transaction that updates the incident and appends its outbox event.
//! Repeating a change that is already recorded returns the incident unchanged, with no event, so
//! a retried request is harmless; a change that contradicts the record is a `CONFLICT`.

use crate::time::rfc3339;
use governance_entities::{enums::IncidentStatus, incident};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde_json::{Value, json};

use crate::{
    error::{CoreError, CoreResult},
    events::{self, EventKind, NewEvent},
    outcome::Committed,
    store::Store,
    time::now,
};

/// Longest accepted resolution note, in characters.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// What a caller asks of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action<'a> {
    Acknowledge,
    /// With the note, already trimmed and validated.
    Resolve(&'a str),
}

/// What the workflow does with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    /// Already in the requested state: return the incident as it is, with no event.
    Unchanged,
    /// Move to this status.
    To(IncidentStatus),
}

/// The workflow rule. Acknowledge: `OPEN` → `ACKNOWLEDGED`; again → unchanged; a resolved
/// incident cannot be acknowledged. Resolve: `OPEN`/`ACKNOWLEDGED` → `RESOLVED`; again with the
/// same note → unchanged; with another note → conflict (the recorded resolution stands).
fn next(incident: &incident::Model, action: Action<'_>) -> CoreResult<Transition> {
    match (incident.status, action) {
        (IncidentStatus::Open, Action::Acknowledge) => {
            Ok(Transition::To(IncidentStatus::Acknowledged))
        }
        (IncidentStatus::Acknowledged, Action::Acknowledge) => Ok(Transition::Unchanged),
        (IncidentStatus::Resolved, Action::Acknowledge) => Err(CoreError::Conflict(format!(
            "incident `{}` is already RESOLVED; a resolved incident cannot be acknowledged",
            incident.id
        ))),
        (IncidentStatus::Open | IncidentStatus::Acknowledged, Action::Resolve(_)) => {
            Ok(Transition::To(IncidentStatus::Resolved))
        }
        (IncidentStatus::Resolved, Action::Resolve(note)) => {
            if incident.note.as_deref() == Some(note) {
                Ok(Transition::Unchanged)
            } else {
                Err(CoreError::Conflict(format!(
                    "incident `{}` is already RESOLVED with a different note; its resolution cannot be changed",
                    incident.id
                )))
            }
        }
    }
}

/// The note trimmed; blank or longer than [`MAX_NOTE_CHARS`] characters is refused.
fn valid_note(note: &str) -> CoreResult<&str> {
    let note = note.trim();
    if note.is_empty() {
        return Err(CoreError::bad_field(
            "note",
            "`note` must not be empty: say how the incident was resolved",
        ));
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(CoreError::bad_field(
            "note",
            format!("`note` is longer than {MAX_NOTE_CHARS} characters"),
        ));
    }
    Ok(note)
}

/// The outbox event of an incident: the `INCIDENT_CREATED` payload shape (`incidentId`, `runId`,
/// `violationId`, `severity`, `status`, `title`), plus `acknowledgedAt` and `resolvedAt`
/// (RFC 3339, milliseconds) once they are set. A new incident therefore gets exactly the
/// `INCIDENT_CREATED` payload.
pub fn incident_event(kind: EventKind, incident: &incident::Model) -> NewEvent {
    let mut payload = json!({
        "incidentId": incident.id,
        "runId": incident.run_id,
        "violationId": incident.violation_id,
        "severity": incident.severity.as_str(),
        "status": incident.status.as_str(),
        "title": incident.title,
    });
    if let Value::Object(map) = &mut payload {
        if let Some(at) = incident.acknowledged_at {
            map.insert("acknowledgedAt".into(), Value::String(rfc3339(at)));
        }
        if let Some(at) = incident.resolved_at {
            map.insert("resolvedAt".into(), Value::String(rfc3339(at)));
        }
    }
    NewEvent {
        kind,
        subject_id: incident.id.clone(),
        run_id: Some(incident.run_id.clone()),
        severity_rank: Some(incident.severity_rank),
        payload,
    }
}

/// Load an incident of the tenant for update: on PostgreSQL the row is locked until the
/// transaction ends, so concurrent changes of one incident are serialised (SQLite has one
/// writer anyway). Another tenant's incident is `NOT_FOUND`.
async fn get_for_update<C: ConnectionTrait>(
    conn: &C,
    tenant_id: &str,
    incident_id: &str,
) -> CoreResult<incident::Model> {
    crate::store::one_for_update(
        conn,
        incident::Entity::find_by_id(incident_id.to_string())
            .filter(incident::Column::TenantId.eq(tenant_id)),
        || CoreError::not_found("Incident", incident_id),
    )
    .await
}

/// Acknowledge an incident: `OPEN` → `ACKNOWLEDGED` (sets `acknowledged_at`), with an
/// `INCIDENT_ACKNOWLEDGED` event. Acknowledging it again returns it unchanged; a `RESOLVED`
/// incident is a `CONFLICT`.
pub async fn acknowledge(
    store: &Store,
    tenant_id: &str,
    incident_id: &str,
) -> CoreResult<Committed<incident::Model>> {
    change(store, tenant_id, incident_id, Action::Acknowledge).await
}

/// Resolve an incident with a note (trimmed; 1 to 10 000 characters): `OPEN` or `ACKNOWLEDGED` →
/// `RESOLVED` (sets `resolved_at` and, if it was never acknowledged, `acknowledged_at` to the same
/// instant), with an `INCIDENT_RESOLVED` event. Resolving it again with the same note returns it
/// unchanged; with another note it is a `CONFLICT`.
pub async fn resolve(
    store: &Store,
    tenant_id: &str,
    incident_id: &str,
    note: &str,
) -> CoreResult<Committed<incident::Model>> {
    let note = valid_note(note)?;
    change(store, tenant_id, incident_id, Action::Resolve(note)).await
}

/// Lock the incident, apply the rule, write the change and its event, commit.
async fn change(
    store: &Store,
    tenant_id: &str,
    incident_id: &str,
    action: Action<'_>,
) -> CoreResult<Committed<incident::Model>> {
    let txn = store.begin().await?;
    let current = get_for_update(&*txn, tenant_id, incident_id).await?;
    if next(&current, action)? == Transition::Unchanged {
        return Ok(Committed::new(current));
    }
    let at = now();
    let kind = match action {
        Action::Acknowledge => EventKind::IncidentAcknowledged,
        Action::Resolve(_) => EventKind::IncidentResolved,
    };
    let mut active: incident::ActiveModel = current.clone().into();
    active.updated_at = Set(at);
    match action {
        Action::Acknowledge => {
            active.status = Set(IncidentStatus::Acknowledged);
            active.acknowledged_at = Set(Some(at));
        }
        Action::Resolve(note) => {
            active.status = Set(IncidentStatus::Resolved);
            active.resolved_at = Set(Some(at));
            active.note = Set(Some(note.to_string()));
            active.acknowledged_at = Set(Some(current.acknowledged_at.unwrap_or(at)));
        }
    }
    let updated = active.update(&*txn).await?;
    let event = events::append(&*txn, tenant_id, incident_event(kind, &updated)).await?;
    txn.commit().await?;
    let mut committed = Committed::new(updated);
    committed.events.push(event);
    Ok(committed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use governance_entities::enums::Severity;

    fn incident(status: IncidentStatus, note: Option<&str>) -> incident::Model {
        let at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        incident::Model {
            id: "inc_1".into(),
            tenant_id: "ten_1".into(),
            run_id: "run_1".into(),
            violation_id: "vio_1".into(),
            evidence_id: Some("evi_1".into()),
            severity: Severity::High,
            severity_rank: Severity::High.rank(),
            title: "budget stopped run run_1 at step 2".into(),
            status,
            note: note.map(str::to_string),
            created_at: at,
            detected_at: at,
            acknowledged_at: None,
            resolved_at: None,
            updated_at: at,
        }
    }

    #[test]
    fn acknowledge_moves_open_and_repeats_harmlessly() {
        use IncidentStatus::*;
        assert_eq!(
            next(&incident(Open, None), Action::Acknowledge).unwrap(),
            Transition::To(Acknowledged)
        );
        assert_eq!(
            next(&incident(Acknowledged, None), Action::Acknowledge).unwrap(),
            Transition::Unchanged
        );
        let err = next(&incident(Resolved, Some("done")), Action::Acknowledge).unwrap_err();
        assert_eq!(err.code(), "CONFLICT");
        assert!(err.to_string().contains("already RESOLVED"));
    }

    #[test]
    fn resolve_moves_open_or_acknowledged_and_keeps_its_note() {
        use IncidentStatus::*;
        for status in [Open, Acknowledged] {
            assert_eq!(
                next(&incident(status, None), Action::Resolve("done")).unwrap(),
                Transition::To(Resolved)
            );
        }
        assert_eq!(
            next(&incident(Resolved, Some("done")), Action::Resolve("done")).unwrap(),
            Transition::Unchanged
        );
        let err = next(&incident(Resolved, Some("done")), Action::Resolve("other")).unwrap_err();
        assert_eq!(err.code(), "CONFLICT");
    }

    #[test]
    fn note_is_trimmed_and_bounded() {
        assert_eq!(
            valid_note("  fixed the budget \n").unwrap(),
            "fixed the budget"
        );
        for bad in ["", "   \n\t"] {
            match valid_note(bad).unwrap_err() {
                CoreError::BadInput { field, .. } => assert_eq!(field.as_deref(), Some("note")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(valid_note(&"é".repeat(MAX_NOTE_CHARS)).is_ok());
        assert_eq!(
            valid_note(&"x".repeat(MAX_NOTE_CHARS + 1))
                .unwrap_err()
                .code(),
            "BAD_USER_INPUT"
        );
    }

    #[test]
    fn event_mirrors_the_created_payload_and_adds_timestamps() {
        let open = incident(IncidentStatus::Open, None);
        let created = incident_event(EventKind::IncidentCreated, &open);
        assert_eq!(
            created.payload,
            json!({
                "incidentId": "inc_1",
                "runId": "run_1",
                "violationId": "vio_1",
                "severity": "HIGH",
                "status": "OPEN",
                "title": "budget stopped run run_1 at step 2",
            })
        );
        assert_eq!(created.subject_id, "inc_1");
        assert_eq!(created.run_id.as_deref(), Some("run_1"));
        assert_eq!(created.severity_rank, Some(3));

        let mut resolved = incident(IncidentStatus::Resolved, Some("done"));
        let at = Utc.timestamp_millis_opt(1_700_000_123_456).unwrap();
        resolved.acknowledged_at = Some(at);
        resolved.resolved_at = Some(at);
        let event = incident_event(EventKind::IncidentResolved, &resolved);
        assert_eq!(event.kind, EventKind::IncidentResolved);
        assert_eq!(event.payload["status"], "RESOLVED");
        assert_eq!(event.payload["acknowledgedAt"], "2023-11-14T22:15:23.456Z");
        assert_eq!(event.payload["resolvedAt"], "2023-11-14T22:15:23.456Z");
    }
}
