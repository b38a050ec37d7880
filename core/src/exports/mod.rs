//! Exports: an incident's evidence, SOC2 or executive-debrief bundle, built from the stored
//! records only, rendered, and stored with its sha256.
//!
//! - [`lifecycle`]: requesting an export and its job's progress to `READY` or `FAILED`.
//! - [`bundles`]: what each kind of bundle holds, from the stored records.
//! - [`proof`]: the proof a bundle carries, checked offline by [`crate::bundle_verify`].
//! - [`download`]: signed download links.

pub mod bundles;
pub mod download;
pub mod lifecycle;
pub mod proof;

pub use bundles::*;
pub use download::*;
pub use lifecycle::*;
