//! Rollouts: a new revision replaces the stable one by canary steps or blue-green,
//! decided by analysis against Prometheus.
//!
//! - [`spec`]: the `spec.rollout` section of the CRD.
//! - [`machine`]: the pure state machine (spec, observed state, analysis -> next
//!   state and actions), persisted in `status.rollout` so a restarted operator resumes.
//! - [`analysis`]: the PromQL of every check and how values become verdicts (pure).
//! - [`prometheus`]: the thin layer that runs those queries.
//! - [`traffic`]: replica counts per revision and HTTPRoute weights (pure).
//! - [`control`]: the `serving.sluice.dev/rollout` annotation (manual control).

pub mod analysis;
pub mod control;
pub mod machine;
pub mod prometheus;
pub mod spec;
pub mod traffic;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{ModelSpec, RuntimeSpec};
pub use spec::{RolloutSpec, Strategy};

/// The rollout in progress, or the last one, as kept in `status.rollout`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The revision being rolled out.
    pub revision: String,
    /// The revision it replaces; absent for the first revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    /// Strategy of this rollout.
    pub strategy: Strategy,
    /// Where the rollout stands.
    pub phase: RolloutPhase,
    /// Canary: index into `canary.steps`, `steps.len()` while promoting. Blue-green:
    /// 0 preview, 1 post-promotion analysis, 2 scale-down delay.
    pub step: u32,
    /// When the current step's pods were all ready (the step's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started: Option<Time>,
    /// When the current step began (for the progress deadline).
    pub step_entered: Time,
    /// When the latest analysis ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<Time>,
    /// Consecutive failed analyses.
    #[serde(default)]
    pub failures: u32,
    /// Consecutive analyses without data.
    #[serde(default)]
    pub no_data: u32,
    /// Results of the latest analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// What the rollout is doing or why it ended, for humans.
    pub message: String,
    /// The model of the revision being rolled out (copied to `status.history`).
    pub model: ModelRecord,
    /// The runtime of the revision being rolled out, unless it is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
}

/// Where a rollout stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutPhase {
    /// Steps are running.
    Progressing,
    /// Held by the `pause` annotation.
    Paused,
    /// Finished: the new revision is stable.
    Promoted,
    /// Finished: analysis failed and the stable revision serves alone.
    RolledBack,
    /// Finished: stopped by a person or superseded by a newer revision.
    Aborted,
}

impl RolloutPhase {
    /// Whether the rollout has ended.
    pub fn finished(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack | Self::Aborted)
    }
}

/// One check of one analysis.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `p99-latency`, `p99-latency-vs-stable`, `error-rate`, `drift` or a user check's name.
    pub name: String,
    /// The PromQL that was run.
    pub query: String,
    /// Its value; absent when there was no data or Prometheus failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The bound the value was held to, e.g. `<= 0.02`.
    pub threshold: String,
    /// The outcome.
    pub verdict: CheckVerdict,
    /// Why, when the value alone does not say (no data, a Prometheus error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Outcome of one check, or of a whole analysis.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckVerdict {
    /// Within bounds.
    Pass,
    /// Out of bounds.
    Fail,
    /// No samples (or too few requests): holds the rollout, never passes it.
    NoData,
    /// Prometheus could not answer: holds the rollout, never promotes.
    Error,
}

/// One finished rollout in `status.history`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The revision that was rolled out.
    pub revision: String,
    /// `Promoted`, `RolledBack` or `Aborted`.
    pub outcome: RolloutPhase,
    /// Why it ended.
    pub reason: String,
    /// When it ended.
    pub time: Time,
    /// The model of that revision; the `rollback` annotation restores it.
    pub model: ModelRecord,
    /// The runtime of that revision, unless it was the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
}

/// `spec.model` as recorded in status: the same fields, without the spec's
/// validation rules (which status does not need and whose cost the API server
/// limits).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRecord {
    /// `spec.model.storageUri`.
    pub storage_uri: String,
    /// `spec.model.version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `spec.model.sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `spec.model.credentialsSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

impl From<&ModelSpec> for ModelRecord {
    fn from(m: &ModelSpec) -> Self {
        Self {
            storage_uri: m.storage_uri.clone(),
            version: m.version.clone(),
            sha256: m.sha256.clone(),
            credentials_secret: m.credentials_secret.clone(),
        }
    }
}
