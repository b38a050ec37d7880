//! `governance verify FILE [--key KEY]…`: read the bundle and the keys, hand them to
//! [`governance_core::bundle_verify`], and print what it found. No configuration, database or
//! network is touched.

use std::path::Path;

use governance_core::{
    bundle_verify::{self, BundleReport},
    signing::{VerifierKey, keys_from_text},
};

/// Exit status: the bundle verified.
pub const VERIFIED: i32 = 0;
/// Exit status: it did not; every failure is printed.
pub const NOT_VERIFIED: i32 = 1;
/// Exit status: the file or a key could not be read.
pub const UNREADABLE: i32 = 2;
/// Exit status: no key was given, and everything checks out against the bundle's own key. That
/// shows the bundle is intact, not that the deployment signed it: anyone can make a key and
/// sign a bundle of their own with it. Never treat it as verified.
pub const INTEGRITY_ONLY: i32 = 3;

/// A `--key` value: a file of keys when such a file exists, else a verifier key itself.
fn read_keys(arg: &str) -> Result<Vec<VerifierKey>, String> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {arg}: {e}"))?;
        return keys_from_text(&text).map_err(|e| format!("{arg}: {e}"));
    }
    VerifierKey::parse(arg)
        .map(|key| vec![key])
        .map_err(|e| format!("--key {arg}: {e} (nor is it a file)"))
}

/// Verify `file` and print the report; returns the exit status.
pub fn run(file: &Path, key_args: &[String], json: bool) -> i32 {
    let mut keys = Vec::new();
    for arg in key_args {
        match read_keys(arg) {
            Ok(found) => keys.extend(found),
            Err(err) => {
                eprintln!("error: {err}");
                return UNREADABLE;
            }
        }
    }
    let read = std::fs::read(file)
        .map_err(|e| e.to_string())
        .and_then(|bytes| bundle_verify::verify_bundle_bytes(&bytes, &keys));
    let (bundle, report) = match read {
        Ok(read) => read,
        Err(err) => {
            eprintln!(
                "error: cannot read {} as a JSON bundle: {err} (PDF exports are not verifiable themselves: verify the JSON export of the same incident)",
                file.display()
            );
            return UNREADABLE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("error: {err}");
                return UNREADABLE;
            }
        }
    } else {
        print!("{}", describe(file, &bundle, &report));
    }
    match (report.verified(), report.key_from_bundle) {
        (true, false) => VERIFIED,
        (true, true) => INTEGRITY_ONLY,
        (false, _) => NOT_VERIFIED,
    }
}

/// The report as text for a person.
fn describe(file: &Path, bundle: &serde_json::Value, report: &BundleReport) -> String {
    let mut out = String::new();
    let kind = bundle["bundle"].as_str().unwrap_or("?");
    let export = bundle["exportId"].as_str().unwrap_or("?");
    out.push_str(&format!(
        "Bundle:     {} ({kind}, export {export})\n",
        file.display()
    ));
    if let Some(run) = &report.run_id {
        out.push_str(&format!(
            "Run:        {run}: {} steps, record format {}, head {}\n",
            report.steps,
            report.record_format.unwrap_or_default(),
            report.head_hash.as_deref().unwrap_or("?")
        ));
    }
    if let (Some(origin), Some(size)) = (&report.checkpoint_origin, report.checkpoint_size) {
        out.push_str(&format!(
            "Checkpoint: log {origin}, {size} leaves{}\n",
            report
                .key_id
                .as_ref()
                .map(|id| format!(", signed by key {id}"))
                .unwrap_or_default()
        ));
    }
    if report.key_from_bundle {
        out.push_str("Key:        taken from the bundle itself: this shows the bundle is intact, not who signed it. Pass --key with the keys from GET /.well-known/governance-keys to check that.\n");
    }
    if report.verified() && report.key_from_bundle {
        out.push_str("INTEGRITY ONLY: the bundle is consistent with the key it carries, but no trusted key was given, so this does not show who signed it. Pass --key.\n");
    } else if report.verified() {
        out.push_str("VERIFIED: the export signature, the record (every step, total and hash shown), and its anchor in the signed log all check out.\n");
    } else {
        out.push_str(&format!(
            "NOT VERIFIED: {} failure{}\n",
            report.failures.len(),
            if report.failures.len() == 1 { "" } else { "s" }
        ));
        for failure in &report.failures {
            out.push_str(&format!(
                "  {:<20} {}: {}\n",
                failure.kind,
                if failure.path.is_empty() {
                    "(the bundle)"
                } else {
                    &failure.path
                },
                failure.message
            ));
        }
    }
    out
}
