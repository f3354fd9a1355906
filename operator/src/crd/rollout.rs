//! `spec.rollout`: how a new revision replaces the stable one, and the analysis
//! that decides it. Every field has a default, so a bare spec gets a careful canary.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// A Gateway API HTTPRoute (same namespace) whose rules' backendRefs the
    /// operator sets to the per-revision Services with the rollout's weights. Without
    /// it, traffic splits by replica ratio behind the InferenceService's Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteRef>,
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
    /// Most share of requests answered 5xx (default 0.02).
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// Most `sluice_feature_drift_score` over all features and tests of the new
    /// revision; off when absent (drift needs a reference profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift_score: Option<f64>,
    /// User checks: PromQL with `$isvc`, `$namespace`, `$revision`, `$stable` and
    /// `$window` substituted, compared with a bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub checks: Vec<CustomCheck>,
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
            max_drift_score: None,
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

/// A Gateway API HTTPRoute in the InferenceService's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct RouteRef {
    /// Name of the HTTPRoute.
    pub name: String,
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

/// Checks what the schema cannot: steps strictly increasing, finite thresholds.
pub fn validate(spec: &RolloutSpec) -> Result<(), String> {
    let steps = &spec.canary.steps;
    if let Some(bad) = steps.iter().find(|s| !(1..=99).contains(*s)) {
        return Err(format!(
            "spec.rollout.canary.steps: {bad} is not a traffic percentage between 1 and 99"
        ));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "spec.rollout.canary.steps {steps:?} must be strictly increasing"
        ));
    }
    let a = &spec.analysis;
    let bounds = [
        ("maxP99LatencySeconds", a.max_p99_latency_seconds),
        ("maxP99LatencyRatio", Some(a.max_p99_latency_ratio)),
        ("latencyToleranceSeconds", Some(a.latency_tolerance_seconds)),
        ("maxErrorRate", Some(a.max_error_rate)),
        ("maxDriftScore", a.max_drift_score),
    ];
    if let Some((field, value)) = bounds
        .iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_finite() || v < 0.0))
    {
        return Err(format!(
            "spec.rollout.analysis.{field} must be a finite number >= 0, not {}",
            value.unwrap_or_default()
        ));
    }
    for check in &a.checks {
        if check.max.is_none() && check.min.is_none() {
            return Err(format!(
                "spec.rollout.analysis.checks[{}] needs max or min",
                check.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_spec_is_a_careful_canary() {
        let spec: RolloutSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.strategy, Strategy::Canary);
        assert_eq!(spec.canary.steps, [25, 50]);
        assert_eq!(spec.analysis.failure_limit, 2);
        assert!(spec.is_default());
        assert_eq!(validate(&spec), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        let mut spec = RolloutSpec::default();
        spec.canary.steps = vec![50, 25];
        assert!(validate(&spec).unwrap_err().contains("strictly increasing"));
        spec.canary.steps = vec![0];
        assert!(validate(&spec).unwrap_err().contains("canary.steps"));
        spec.canary.steps = vec![10];
        spec.analysis.max_error_rate = f64::NAN;
        assert!(validate(&spec).unwrap_err().contains("maxErrorRate"));
        spec.analysis.max_error_rate = 0.1;
        spec.analysis.checks = vec![CustomCheck {
            name: "q".into(),
            query: "1".into(),
            max: None,
            min: None,
        }];
        assert!(validate(&spec).unwrap_err().contains("checks[q]"));
    }
}
