//! The `monitoring` section of a model's `config.yaml`: which reference
//! profile drift is measured against, over which windows, and how ground-truth
//! feedback is scored.

use serde::Deserialize;

/// `monitoring` in a model's `config.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// The reference profile, relative to the model's folder.
    pub profile: String,
    /// Rows in each sliding window.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Rows needed before drift is reported.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// How often the statistics are recomputed, in milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Ground-truth feedback, when predictions can be checked later.
    #[serde(default)]
    pub feedback: Option<FeedbackConfig>,
}

fn default_window() -> usize {
    1000
}
fn default_min_rows() -> usize {
    100
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_feedback_window() -> usize {
    500
}
fn default_retention() -> usize {
    10_000
}

/// `monitoring.feedback`: which output is the prediction and how to score it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The output holding the prediction (for several float columns, their arg-max).
    pub output: String,
    /// Classification (accuracy) or regression (mean absolute error).
    pub task: Task,
    /// Feedback rows in the quality window.
    #[serde(default = "default_feedback_window")]
    pub window: usize,
    /// Requests whose predictions are kept for joining.
    #[serde(default = "default_retention")]
    pub retention: usize,
}

/// What kind of prediction the model makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Predicts a class: scored by accuracy.
    Classification,
    /// Predicts a value: scored by mean absolute error.
    Regression,
}
