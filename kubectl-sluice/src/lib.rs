//! `kubectl sluice`: a kubectl plugin for Sluice's InferenceServices.
//!
//! Each command is a module with one job; each builds a plain view (a
//! serializable struct that is also the `-o json` document) from what it read,
//! and renders it as aligned text:
//!
//! - [`status`] shows revisions and their traffic, the rollout and its analysis, the
//!   autoscaler's decision, the Ready condition, a rollback in force.
//! - [`history`] lists `status.history`.
//! - [`commands`] sends `promote`, `abort`, `pause`, `resume`, `rollback` through the
//!   `serving.sluice.dev/rollout` annotation (never the spec).
//! - [`predict`] sends an Open Inference Protocol request through the API server's
//!   service proxy.
//! - [`profile`] writes a drift-monitoring reference profile of the served model,
//!   made by a local `sluice-server profile`.
//!
//! [`connect`] picks the cluster and namespace as kubectl does, [`cluster`]
//! holds the reads the commands share, [`table`] the text layout.

pub mod cluster;
pub mod commands;
pub mod connect;
pub mod error;
pub mod history;
pub mod predict;
pub mod profile;
pub mod status;
pub mod table;

pub use error::{Error, Result};

use serde::Serialize;

/// How a command prints its result (`-o`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Aligned text for people.
    #[default]
    Table,
    /// The command's JSON document, pretty-printed.
    Json,
}

/// A JSON document as `-o json` prints it (pretty, with a final newline).
pub fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| Error::json("output", e))
}

/// An enum of the CRD as it is written in the resource (`Progressing`, `Pass`).
pub(crate) fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}
