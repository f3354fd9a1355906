//! `spec.monitoring`: drift and model-quality monitoring against a reference
//! profile of the training data (see docs/monitoring.md). Off when absent; when
//! set it is part of the revision, so changing the profile rolls out like any
//! other change. Each field maps to the server's `monitoring` section of
//! `config.yaml` (docs/model-server.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
    /// When the stable revision's inputs count as drifting from the profile
    /// (condition `InputDrift`). Every field has a default. Read by the operator
    /// only: changing it starts no rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
    /// The retraining Job the operator runs when drift starts. None when absent.
    /// Read by the operator only: changing it starts no rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_drift: Option<OnDriftSpec>,
}

impl MonitoringSpec {
    /// The drift thresholds in force: `drift`, or the defaults.
    pub fn drift(&self) -> DriftSpec {
        self.drift.clone().unwrap_or_default()
    }

    /// What the serving pods see: everything but the operator's own fields
    /// (`drift`, `onDrift`), which therefore stay out of the revision hash.
    pub fn for_pods(&self) -> Self {
        Self {
            drift: None,
            on_drift: None,
            ..self.clone()
        }
    }
}

/// Per-test thresholds past which a feature of the stable revision drifts, and
/// how the operator watches them. Each statistic is the mean over the revision's
/// pods. A numeric feature drifts when its PSI or KS statistic is past its
/// maximum **and** the KS test says that is not chance (p-value below its share
/// of `significance`); a categorical one when its chi-squared p-value is below
/// that share. Large alone is not enough in small windows, and significant
/// alone is not enough in large ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Numeric features: population stability index above this drifts
    /// (default 0.25, the usual "major shift").
    #[serde(default = "default_max_psi")]
    #[schemars(range(min = 0.001, max = 100.0))]
    pub max_psi: f64,
    /// Numeric features: Kolmogorov-Smirnov statistic above this drifts
    /// (default 0.2: the cumulative distributions 20 points apart somewhere).
    #[serde(default = "default_max_ks")]
    #[schemars(range(min = 0.001, max = 1.0))]
    pub max_ks: f64,
    /// The chance of a false alarm per reading (default 0.001), shared among the
    /// features (Bonferroni): a feature's KS p-value (numeric) or chi-squared
    /// p-value (categorical) must be below `significance / features`.
    #[serde(default = "default_significance")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub significance: f64,
    /// Longest gap between the operator's readings of the stable revision's drift
    /// (default 30); it also reads at every reconcile.
    #[serde(default = "default_check_seconds")]
    #[schemars(range(min = 5, max = 3600))]
    pub check_seconds: u32,
    /// Seconds without any drifting feature before `InputDrift` clears and the
    /// drift episode ends (default 300).
    #[serde(default = "default_clear_after_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub clear_after_seconds: u32,
}

impl Default for DriftSpec {
    fn default() -> Self {
        Self {
            max_psi: default_max_psi(),
            max_ks: default_max_ks(),
            significance: default_significance(),
            check_seconds: default_check_seconds(),
            clear_after_seconds: default_clear_after_seconds(),
        }
    }
}

fn default_max_psi() -> f64 {
    0.25
}
fn default_max_ks() -> f64 {
    0.2
}
fn default_significance() -> f64 {
    0.001
}
fn default_check_seconds() -> u32 {
    30
}
fn default_clear_after_seconds() -> u32 {
    300
}

/// The retraining hook: a Job the operator creates when a drift episode starts.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OnDriftSpec {
    /// A `batch/v1` Job's `metadata` (labels, annotations) and `spec`, as in a
    /// CronJob's `jobTemplate`. The pod's `restartPolicy` must be `Never` or
    /// `OnFailure`. Every container gets `SLUICE_ISVC`, `SLUICE_NAMESPACE`,
    /// `SLUICE_REVISION`, `SLUICE_DRIFT_FEATURES`, `SLUICE_MODEL_URI` and
    /// `SLUICE_PROFILE_URI`. Kept as written and checked by the operator, so that
    /// a mistake is reported on the InferenceService (`InvalidSpec`).
    #[schemars(schema_with = "any_object")]
    pub job_template: serde_json::Value,
    /// Seconds after a retraining Job's creation before another may start, even
    /// for a new episode (default 86400: one a day).
    #[serde(default = "default_cooldown_seconds")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub cooldown_seconds: u32,
}

fn default_cooldown_seconds() -> u32 {
    86_400
}

/// An object whose fields the API server keeps as written.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// `status.drift`: the stable revision's drift episode and the last retraining Job.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The revision whose drift is read (the stable one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The drift episode in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<DriftEpisode>,
    /// The newest retraining Job, if one was ever created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining: Option<RetrainingStatus>,
}

/// A drift episode: from the first reading past a threshold until
/// `clearAfterSeconds` without one.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftEpisode {
    /// When the episode began.
    pub since: Time,
    /// The last reading with a feature past its threshold.
    pub last_detected: Time,
    /// The features past their thresholds at that reading, worst first.
    pub features: Vec<String>,
}

/// A retraining Job the operator created, and how it went.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RetrainingStatus {
    /// The Job's name (in the InferenceService's namespace).
    pub job: String,
    /// When the Job was created.
    pub created: Time,
    /// `Running`, `Succeeded`, `Failed` or `Missing` (deleted).
    pub outcome: JobOutcome,
}

/// Where a retraining Job stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Created and not finished.
    Running,
    /// Its `Complete` condition is true.
    Succeeded,
    /// Its `Failed` condition is true.
    Failed,
    /// The Job is gone (deleted, or removed by its `ttlSecondsAfterFinished`).
    Missing,
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
