//! What an API key may do. Each key has one or more roles; each operation needs a capability;
//! a call outside the key's roles is refused with `FORBIDDEN`, naming the role it needs. The
//! rule lives here once: adapters ask [`authorize`] before they act.
//!
//! | role | may |
//! |---|---|
//! | `INTEGRATOR` | start runs, report steps, complete and cancel runs; read |
//! | `APPROVER` | decide approvals, acknowledge and resolve incidents; read |
//! | `ADMIN` | everything: policies, webhooks, keys, halts, and all of the above |
//! | `READER` | read only |
//!
//! Reading includes requesting exports and audits: they derive an artefact from what is
//! recorded and change nothing recorded, which is what compliance staff with a READER key need.

use crate::error::{CoreError, CoreResult};

/// A role an API key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyRole {
    Integrator,
    Approver,
    Admin,
    Reader,
}

impl KeyRole {
    pub const ALL: [KeyRole; 4] = [
        KeyRole::Integrator,
        KeyRole::Approver,
        KeyRole::Admin,
        KeyRole::Reader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Integrator => "INTEGRATOR",
            KeyRole::Approver => "APPROVER",
            KeyRole::Admin => "ADMIN",
            KeyRole::Reader => "READER",
        }
    }

    /// Does this role grant `capability`?
    pub fn grants(self, capability: Capability) -> bool {
        matches!(
            (self, capability),
            (KeyRole::Admin, _)
                | (_, Capability::Read)
                | (KeyRole::Integrator, Capability::ReportRuns)
                | (KeyRole::Approver, Capability::Decide)
        )
    }
}

impl std::str::FromStr for KeyRole {
    type Err = CoreError;

    fn from_str(text: &str) -> CoreResult<Self> {
        KeyRole::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                CoreError::bad_field(
                    "role",
                    format!("`{text}` is not a role: use INTEGRATOR, APPROVER, ADMIN or READER"),
                )
            })
    }
}

/// What an operation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Read anything of the tenant (and request exports and audits).
    Read,
    /// Start runs, report steps, complete and cancel runs.
    ReportRuns,
    /// Decide approvals; acknowledge and resolve incidents.
    Decide,
    /// Policies, webhooks, keys, halts.
    Administer,
}

impl Capability {
    /// The least role that grants it: what a refusal names.
    pub fn required_role(self) -> KeyRole {
        match self {
            Capability::Read => KeyRole::Reader,
            Capability::ReportRuns => KeyRole::Integrator,
            Capability::Decide => KeyRole::Approver,
            Capability::Administer => KeyRole::Admin,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Capability::Read => "reading",
            Capability::ReportRuns => "starting runs, reporting steps and ending runs",
            Capability::Decide => "deciding approvals and incidents",
            Capability::Administer => "administering policies, webhooks, keys and halts",
        }
    }
}

/// Allow a key holding `roles` to do what needs `capability`, or refuse with `FORBIDDEN`.
pub fn authorize(roles: &[KeyRole], capability: Capability) -> CoreResult<()> {
    if roles.iter().any(|role| role.grants(capability)) {
        return Ok(());
    }
    let required = capability.required_role();
    Err(CoreError::Forbidden {
        required_role: required.as_str(),
        message: format!(
            "this API key may not do this: {} needs a key with the {} role (this key has {})",
            capability.describe(),
            required.as_str(),
            encode(roles).replace(',', ", ")
        ),
    })
}

/// Roles as stored: their names, sorted, comma-separated.
pub fn encode(roles: &[KeyRole]) -> String {
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Roles as stored, read back. A name this version does not know grants nothing.
pub fn decode(stored: &str) -> Vec<KeyRole> {
    stored
        .split(',')
        .filter_map(|name| name.parse().ok())
        .collect()
}

/// The roles asked for, checked: at least one; ADMIN when none are given is the caller's choice.
pub fn parse_all(names: &[String]) -> CoreResult<Vec<KeyRole>> {
    let mut roles = names
        .iter()
        .map(|n| n.parse())
        .collect::<CoreResult<Vec<KeyRole>>>()?;
    if roles.is_empty() {
        return Err(CoreError::bad_field(
            "role",
            "a key needs at least one role",
        ));
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_grants_exactly_its_capabilities() {
        use Capability::*;
        let table = [
            (KeyRole::Integrator, [true, true, false, false]),
            (KeyRole::Approver, [true, false, true, false]),
            (KeyRole::Admin, [true, true, true, true]),
            (KeyRole::Reader, [true, false, false, false]),
        ];
        for (role, expected) in table {
            let got = [Read, ReportRuns, Decide, Administer].map(|c| role.grants(c));
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_role_it_needs() {
        let err = authorize(&[KeyRole::Integrator], Capability::Administer).unwrap_err();
        assert_eq!(err.code(), "FORBIDDEN");
        match err {
            CoreError::Forbidden { required_role, .. } => assert_eq!(required_role, "ADMIN"),
            other => panic!("{other:?}"),
        }
        assert!(authorize(&[KeyRole::Reader, KeyRole::Approver], Capability::Decide).is_ok());
    }

    #[test]
    fn stored_roles_round_trip_and_unknown_names_grant_nothing() {
        let roles = [KeyRole::Reader, KeyRole::Integrator, KeyRole::Integrator];
        assert_eq!(encode(&roles), "INTEGRATOR,READER");
        assert_eq!(
            decode("INTEGRATOR,READER"),
            vec![KeyRole::Integrator, KeyRole::Reader]
        );
        assert_eq!(decode("SUPERUSER"), vec![]);
        assert!(parse_all(&[]).is_err());
        assert!(parse_all(&["root".into()]).is_err());
    }
}
