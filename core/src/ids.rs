//! Public identifiers: a type prefix and a ULID (`run_01j…`). ULIDs sort by creation time, which
//! gives lists a stable order and keeps B-tree inserts at the right edge.

use ulid::Ulid;

/// Every prefix the service hands out, in one place so `node(id)` can dispatch on it.
pub mod prefix {
    pub const TENANT: &str = "ten";
    pub const API_KEY: &str = "key";
    pub const POLICY: &str = "pol";
    pub const POLICY_VERSION: &str = "pv";
    pub const RUN: &str = "run";
    pub const VIOLATION: &str = "vio";
    pub const EVIDENCE: &str = "evi";
    pub const INCIDENT: &str = "inc";
    pub const EVALUATION: &str = "eval";
    pub const ENFORCEMENT: &str = "enf";
    pub const AUDIT: &str = "aud";
    pub const AUDIT_CHECK: &str = "chk";
    pub const EXPORT: &str = "exp";
    pub const WEBHOOK: &str = "whk";
    pub const DELIVERY: &str = "dlv";
    pub const HALT: &str = "hlt";
    pub const SHADOW_FINDING: &str = "shf";
    pub const APPROVAL: &str = "apr";
    pub const SIMULATION: &str = "sim";
    /// Trace steps are named by their place: `stp_<run ulid>_<step index>`.
    pub const STEP: &str = "stp";
    /// Snapshots are named by content, not randomly: `SNAP-<12 hex of the content hash>`.
    pub const SNAPSHOT: &str = "SNAP";
}

/// A new id with the given prefix, e.g. `new_id(prefix::RUN)` → `run_01jd…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Ulid::new().to_string().to_lowercase())
}

/// The prefix of an id (`run` for `run_01…`, `SNAP` for `SNAP-abc…`), if it has one.
pub fn prefix_of(id: &str) -> Option<&str> {
    if let Some(rest) = id.strip_prefix("SNAP-") {
        return (!rest.is_empty()).then_some(prefix::SNAPSHOT);
    }
    let (prefix, rest) = id.split_once('_')?;
    (!prefix.is_empty() && !rest.is_empty()).then_some(prefix)
}

/// The global id of step `index` of run `run_id`: `stp_<run ulid>_<index>`.
pub fn step_id(run_id: &str, index: i64) -> String {
    let ulid = run_id.strip_prefix("run_").unwrap_or(run_id);
    format!("{}_{ulid}_{index}", prefix::STEP)
}

/// The run id and step index behind a step id, if it is one.
pub fn parse_step_id(id: &str) -> Option<(String, i64)> {
    let rest = id.strip_prefix("stp_")?;
    let (ulid, index) = rest.rsplit_once('_')?;
    let index = index.parse::<i64>().ok().filter(|i| *i >= 0)?;
    (!ulid.is_empty()).then(|| (format!("run_{ulid}"), index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_are_unique() {
        let a = new_id(prefix::RUN);
        let b = new_id(prefix::RUN);
        assert!(a.starts_with("run_"));
        assert_eq!(a.len(), 4 + 26);
        assert_ne!(a, b);
        assert_eq!(prefix_of(&a), Some("run"));
    }

    #[test]
    fn prefix_of_recognises_snapshots_and_rejects_garbage() {
        assert_eq!(prefix_of("SNAP-0123456789ab"), Some("SNAP"));
        assert_eq!(prefix_of("SNAP-"), None);
        assert_eq!(prefix_of("nounderscore"), None);
        assert_eq!(prefix_of("_x"), None);
        assert_eq!(prefix_of("run_"), None);
    }

    #[test]
    fn step_ids_round_trip() {
        let run = new_id(prefix::RUN);
        let id = step_id(&run, 7);
        assert_eq!(prefix_of(&id), Some(prefix::STEP));
        assert_eq!(parse_step_id(&id), Some((run, 7)));
        assert_eq!(parse_step_id("stp_abc_x"), None);
        assert_eq!(parse_step_id("stp_abc_-1"), None);
        assert_eq!(parse_step_id("stp__1"), None);
    }
}
