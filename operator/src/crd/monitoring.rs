//! `spec.monitoring`: drift and model-quality monitoring against a reference
//! profile of the training data (see docs/monitoring.md). Off when absent; when
//! set it is part of the revision, so changing the profile rolls out like any
//! other change. Each field maps to the server's `monitoring` section of
//! `config.yaml` (docs/model-server.md).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Drift and quality monitoring of every revision against a reference profile
/// written by `sluice-server profile`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minRows <= self.windowRows")
    .message("spec.monitoring.minRows must not be above spec.monitoring.windowRows")
    .field_path(".minRows"))]
pub struct MonitoringSpec {
    /// Location of the profile (JSON): the same schemes as `spec.model.storageUri`
    /// (`https://`, `http://`, `s3://bucket/key`, `pvc://<claim>/<path>`,
    /// `file:///path`), fetched beside the model with the model's
    /// `credentialsSecret`. A profile that cannot be fetched keeps the revision
    /// from starting (condition `ProfileFetched`).
    #[x_kube(validation = Rule::new(
        "self.matches('^(https?|s3|pvc|file)://.+')"
    ).message("spec.monitoring.profileUri must start with http://, https://, s3://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new(
        "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')"
    ).message("spec.monitoring.profileUri pvc:// must be pvc://<claim-name>/<path>"))]
    #[schemars(length(max = 2048))]
    pub profile_uri: String,
    /// Expected SHA-256 of the profile, 64 lowercase hex digits. The fetcher
    /// refuses a file whose digest differs. Not checked when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')")
        .message("spec.monitoring.profileSha256 must be 64 lowercase hexadecimal digits"))]
    pub profile_sha256: Option<String>,
    /// Rows in each sliding window the drift tests compare with the profile,
    /// per pod (default 1000).
    #[serde(default = "default_window_rows")]
    #[schemars(range(min = 10, max = 100_000))]
    pub window_rows: u32,
    /// Rows a window needs before drift is reported (default 100); fewer rows
    /// export no drift series.
    #[serde(default = "default_min_rows")]
    #[schemars(range(min = 1, max = 100_000))]
    pub min_rows: u32,
    /// Seconds between recomputations of the drift statistics (default 1).
    #[serde(default = "default_interval_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Ground-truth feedback (`POST /v2/models/<name>/feedback`), scored into
    /// `sluice_model_accuracy` or `sluice_model_mean_absolute_error`. Off when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<FeedbackSpec>,
}

fn default_window_rows() -> u32 {
    1000
}
fn default_min_rows() -> u32 {
    100
}
fn default_interval_seconds() -> u32 {
    1
}

/// Which output is the prediction, how to score it, and how long predictions
/// are kept for late labels.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackSpec {
    /// The model output holding the prediction (for several float columns,
    /// their arg-max). The revision fails to load when the model lacks it.
    #[schemars(length(min = 1, max = 256))]
    pub output: String,
    /// `classification` (scored by accuracy) or `regression` (mean absolute error).
    pub task: FeedbackTask,
    /// Feedback rows in the quality window (default 500).
    #[serde(default = "default_feedback_window_rows")]
    #[schemars(range(min = 1, max = 100_000))]
    pub window_rows: u32,
    /// Requests with an id whose predictions each pod keeps for joining late
    /// labels (default 10000); feedback for an older request is refused (404).
    #[serde(default = "default_retention")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub retention: u32,
}

fn default_feedback_window_rows() -> u32 {
    500
}
fn default_retention() -> u32 {
    10_000
}

/// What kind of prediction the model makes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackTask {
    /// Predicts a class: scored by accuracy.
    Classification,
    /// Predicts a value: scored by mean absolute error.
    Regression,
}
