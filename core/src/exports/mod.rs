//! Exports: an incident's evidence, SOC2 or executive-debrief bundle, built from the stored
//! records only, rendered, and stored with its sha256.
//!
//! - [`lifecycle`]: requesting an export and its job's progress to `READY` or `FAILED`.
//! - [`bundles`]: what each kind of bundle holds, from the stored records.
//! - [`download`]: signed download links.

pub mod bundles;
pub mod download;
pub mod lifecycle;

pub use bundles::*;
pub use download::*;
pub use lifecycle::*;
