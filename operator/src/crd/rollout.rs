//! `spec.rollout` and `status.rollout`: how a new revision replaces the stable one,
//! the analysis that decides it, and the record of where it stands. Every spec field
//! has a default, so a bare spec gets a careful canary.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{ModelSpec, RuntimeSpec};

/// How new revisions roll out. Absent fields take the documented defaults.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `Canary` (default) or `BlueGreen`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Canary traffic steps and their length.
    #[serde(default)]
    pub canary: CanarySpec,
    /// Blue-green preview, switch and scale-down timing.
    #[serde(default)]
    pub blue_green: BlueGreenSpec,
    /// The checks against Prometheus that promote or roll back.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Finished rollouts kept in `status.history` (default 10).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
    /// Seconds a step may wait for the new revision's pods to be ready before the
    /// rollout fails (default 300).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 10, max = 86400))]
    pub progress_deadline_seconds: u32,
    /// A Gateway API HTTPRoute that the operator makes and owns (named like the
    /// InferenceService): its one rule sends traffic to the per-revision
    /// Services with the rollout's exact weights. Without it, traffic splits by
    /// replica ratio behind the InferenceService's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSpec>,
}

/// Rollout strategy.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Shift traffic to the new revision in steps, analysing each step.
    #[default]
    Canary,
    /// Run the new revision at full size as a preview, analyse it, switch all traffic,
    /// analyse again and switch back on failure.
    BlueGreen,
}

/// Canary steps.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.steps.all(s, s >= 1 && s <= 99)"
).message("spec.rollout.canary.steps must be traffic percentages between 1 and 99").field_path(".steps"))]
pub struct CanarySpec {
    /// Traffic percentages of the new revision, one per step, before full promotion
    /// (default `[25, 50]`). With replica-ratio splitting the share is rounded to
    /// whole pods (see docs/rollouts.md).
    #[serde(default = "default_steps")]
    #[schemars(length(max = 20))]
    pub steps: Vec<i32>,
    /// Seconds each step lasts once the new revision's pods are ready (default 30);
    /// a step passes when it has lasted this long and its latest analysis passed.
    #[serde(default = "default_step_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub step_seconds: u32,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            step_seconds: default_step_seconds(),
        }
    }
}

/// Blue-green timing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenSpec {
    /// Seconds of pre-promotion analysis of the preview (default 30). The preview
    /// gets traffic only through its own Service, `<name>-<revision>`.
    #[serde(default = "default_bg_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub preview_seconds: u32,
    /// Seconds of post-promotion analysis after the switch (default 30); a failure
    /// switches traffic back to the old revision.
    #[serde(default = "default_bg_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub post_promotion_seconds: u32,
    /// Seconds the old revision keeps its pods after promotion (default 30).
    #[serde(default = "default_bg_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: u32,
}

impl Default for BlueGreenSpec {
    fn default() -> Self {
        Self {
            preview_seconds: default_bg_seconds(),
            post_promotion_seconds: default_bg_seconds(),
            scale_down_delay_seconds: default_bg_seconds(),
        }
    }
}

/// Analysis of the new revision against Prometheus.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Seconds between analyses (default 10).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: u32,
    /// Range of every built-in query, in seconds (default 30).
    #[serde(default = "default_window")]
    #[schemars(range(min = 5, max = 86400))]
    pub window_seconds: u32,
    /// Consecutive failed analyses that roll back (default 2).
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,
    /// Consecutive analyses without data after which the rollout fails (default 12,
    /// two minutes at the default interval). No data holds the rollout until then.
    #[serde(default = "default_no_data_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub no_data_limit: u32,
    /// Fewest requests the new revision must have served in the window for the
    /// latency and error checks to count (default 10); fewer is no data.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_requests: u32,
    /// Most p99 latency of the new revision, in seconds; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_seconds: Option<f64>,
    /// Most p99 latency of the new revision relative to the stable one (default 2.0);
    /// the check fails only when it is also more than `latencyToleranceSeconds` above.
    #[serde(default = "default_latency_ratio")]
    pub max_p99_latency_ratio: f64,
    /// Absolute slack of the relative latency check, in seconds (default 0.02), so
    /// that sub-millisecond noise never rolls back.
    #[serde(default = "default_latency_tolerance")]
    pub latency_tolerance_seconds: f64,
    /// Most share of requests answered 5xx (or by the fallback) above the stable
    /// revision's over the same window (default 0.02): against a stable revision
    /// without errors, the bound itself.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Most error rate of the new revision relative to the stable one (default
    /// 2.0); the check fails only when it is also more than `maxErrorRate` above.
    #[serde(default = "default_error_rate_ratio")]
    pub max_error_rate_ratio: f64,
    /// Most `sluice_feature_drift_score` over all features and tests of the new
    /// revision; off when absent (drift needs a reference profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift_score: Option<f64>,
    /// The `prediction-agreement` check: the new revision's predictions must be
    /// distributed like the stable revision's over the same window. On by default;
    /// it needs no profile.
    #[serde(default)]
    pub prediction_agreement: PredictionAgreementSpec,
    /// The quality check from ground truth (`spec.monitoring.feedback`): the new
    /// revision's accuracy (or mean absolute error) against the stable revision's
    /// over the same window, once labels arrive.
    #[serde(default)]
    pub quality: QualitySpec,
    /// User checks: PromQL with `$isvc`, `$namespace`, `$revision`, `$stable` and
    /// `$window` substituted, compared with a bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub checks: Vec<CustomCheck>,
}

/// How the new revision's predictions are compared with the stable revision's:
/// the distribution of `sluice_predictions_total` by output and bin (the predicted
/// class, label or value range) over the same window. A difference fails the check
/// when it is both large (population stability index above `maxPsi`) and not
/// chance (a chi-square test of homogeneity below `significance`); see
/// docs/rollouts.md.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictionAgreementSpec {
    /// Whether the check runs (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Largest population stability index between the two distributions (default
    /// 0.2, the usual boundary of a significant shift).
    #[serde(default = "default_max_psi")]
    #[schemars(range(min = 0.001, max = 10.0))]
    pub max_psi: f64,
    /// A difference counts only when the chi-square test's p-value is below this
    /// (default 0.001), so that too few rows never fail a rollout by chance.
    #[serde(default = "default_significance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub significance: f64,
    /// Fewest predictions each revision must have made in the window for the check
    /// to count (default 200); fewer is no data.
    #[serde(default = "default_min_rows")]
    #[schemars(range(min = 10, max = 10000000))]
    pub min_rows: u32,
    /// Range of the comparison, in seconds (default 120): longer than the other
    /// checks' window, so that a canary with a small share gathers `minRows`.
    #[serde(default = "default_agreement_window")]
    #[schemars(range(min = 5, max = 86400))]
    pub window_seconds: u32,
}

/// How the new revision's quality on labelled rows is held to the stable
/// revision's. It runs when `spec.monitoring.feedback` is set, and counts only
/// once both revisions have `minRows` labelled rows in the window: until then it
/// is `Waiting` and neither holds nor passes the rollout, since labels may come
/// late or never. See docs/rollouts.md.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QualitySpec {
    /// Whether the check runs when feedback is configured (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Classification: largest drop of accuracy below the stable revision's
    /// (default 0.05). It fails only when the drop is also not chance (a one-sided
    /// two-proportion test below `significance`).
    #[serde(default = "default_max_accuracy_drop")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_accuracy_drop: f64,
    /// Classification: the absolute floor of the new revision's accuracy; off
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_accuracy: Option<f64>,
    /// Regression: largest mean absolute error relative to the stable revision's
    /// (default 1.2).
    #[serde(default = "default_max_error_ratio")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub max_error_ratio: f64,
    /// Regression: the absolute ceiling of the new revision's mean absolute error;
    /// off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_mean_absolute_error: Option<f64>,
    /// A drop counts only when the test's p-value is below this (default 0.01).
    #[serde(default = "default_quality_significance")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub significance: f64,
    /// Labelled rows each revision needs in the window for the check to count
    /// (default 100).
    #[serde(default = "default_quality_min_rows")]
    #[schemars(range(min = 1, max = 10000000))]
    pub min_rows: u32,
    /// Range of the comparison, in seconds (default 600): labels come later than
    /// answers.
    #[serde(default = "default_quality_window")]
    #[schemars(range(min = 5, max = 86400))]
    pub window_seconds: u32,
}

impl Default for QualitySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_accuracy_drop: default_max_accuracy_drop(),
            min_accuracy: None,
            max_error_ratio: default_max_error_ratio(),
            max_mean_absolute_error: None,
            significance: default_quality_significance(),
            min_rows: default_quality_min_rows(),
            window_seconds: default_quality_window(),
        }
    }
}

fn default_max_accuracy_drop() -> f64 {
    0.05
}
fn default_max_error_ratio() -> f64 {
    1.2
}
fn default_quality_significance() -> f64 {
    0.01
}
fn default_quality_min_rows() -> u32 {
    100
}
fn default_quality_window() -> u32 {
    600
}

impl Default for PredictionAgreementSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_psi: default_max_psi(),
            significance: default_significance(),
            min_rows: default_min_rows(),
            window_seconds: default_agreement_window(),
        }
    }
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            interval_seconds: default_interval(),
            window_seconds: default_window(),
            failure_limit: default_failure_limit(),
            no_data_limit: default_no_data_limit(),
            min_requests: default_min_requests(),
            max_p99_latency_seconds: None,
            max_p99_latency_ratio: default_latency_ratio(),
            latency_tolerance_seconds: default_latency_tolerance(),
            max_error_rate: default_max_error_rate(),
            max_error_rate_ratio: default_error_rate_ratio(),
            max_drift_score: None,
            prediction_agreement: PredictionAgreementSpec::default(),
            quality: QualitySpec::default(),
            checks: Vec::new(),
        }
    }
}

/// A user PromQL check: the query's single value must lie within the bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.max) || has(self.min)")
    .message("an analysis check needs max or min"))]
pub struct CustomCheck {
    /// Name shown in status and Events.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// PromQL returning one sample; an empty result is no data.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// The value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// The HTTPRoute the operator makes for `spec.rollout.route`: where it attaches
/// and what it matches. The operator owns the route (a GitOps tool never sees
/// it change under its feet); its backendRefs are the per-revision Services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("size(self.parentRefs) >= 1")
    .message("spec.rollout.route.parentRefs needs at least one parent (a Gateway) for the route to attach to")
    .field_path(".parentRefs"))]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The route's `parentRefs` as the Gateway API writes them (at least one),
    /// e.g. `[{name: public, namespace: gateways}]`.
    #[schemars(schema_with = "gateway_objects")]
    pub parent_refs: Vec<serde_json::Value>,
    /// The route's `hostnames` (none: every hostname its parents accept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The `matches` of its one rule, as the Gateway API writes them (none:
    /// every request, the Gateway API's default of path prefix `/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "gateway_objects")]
    pub matches: Vec<serde_json::Value>,
}

/// A list of Gateway API objects, kept as written (the Gateway API's own
/// schema checks them on the HTTPRoute).
fn gateway_objects(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

fn default_history_limit() -> u32 {
    10
}
fn default_progress_deadline() -> u32 {
    300
}
fn default_steps() -> Vec<i32> {
    vec![25, 50]
}
fn default_step_seconds() -> u32 {
    30
}
fn default_bg_seconds() -> u32 {
    30
}
fn default_interval() -> u32 {
    10
}
fn default_window() -> u32 {
    30
}
fn default_failure_limit() -> u32 {
    2
}
fn default_no_data_limit() -> u32 {
    12
}
fn default_min_requests() -> u32 {
    10
}
fn default_latency_ratio() -> f64 {
    2.0
}
fn default_latency_tolerance() -> f64 {
    0.02
}
fn default_max_error_rate() -> f64 {
    0.02
}
fn default_error_rate_ratio() -> f64 {
    2.0
}
fn default_true() -> bool {
    true
}
fn default_max_psi() -> f64 {
    0.2
}
fn default_significance() -> f64 {
    0.001
}
fn default_min_rows() -> u32 {
    200
}
fn default_agreement_window() -> u32 {
    120
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            canary: CanarySpec::default(),
            blue_green: BlueGreenSpec::default(),
            analysis: AnalysisSpec::default(),
            history_limit: default_history_limit(),
            progress_deadline_seconds: default_progress_deadline(),
            route: None,
        }
    }
}

impl RolloutSpec {
    /// Whether every field has its default (the spec then omits the section).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

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
    /// Not judged yet, and not counted: the quality check before both revisions
    /// have enough labelled rows.
    Waiting,
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
    /// The model of that revision; the `rollback` command serves it again.
    pub model: ModelRecord,
    /// The runtime of that revision, unless it was the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
}

/// A `rollback` command in force (`status.rollback`): the revision it returned
/// to serves in place of the spec's model and runtime, without the spec being
/// written (a GitOps tool keeps owning it), until the spec changes: a revert in
/// Git, or a new model.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The revision of the spec when the command came; once the spec's revision
    /// differs, the rollback is over.
    pub spec_revision: String,
    /// The revision rolled back to, from `status.history`.
    pub revision: String,
    /// Its model, served in place of `spec.model`.
    pub model: ModelRecord,
    /// Its runtime, served in place of `spec.runtime` (none: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,
    /// When the command was acted on.
    pub time: Time,
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
