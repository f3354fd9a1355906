//! `spec.model.optimize` and `status.optimization`: a smaller or faster copy of
//! the model, made by an init container after the fetch and served only if it
//! answers like the original (docs/optimize.md).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The agreement an optimized model must reach when `minAgreement` is absent.
pub const DEFAULT_MIN_AGREEMENT: f64 = 0.99;

/// How the model is optimized before it is served.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizeSpec {
    /// `int8-dynamic` (INT8 weights of MatMul and Gemm), `int8-static` (INT8
    /// weights and activations, calibrated on `calibrationUri`) or `fp16` (FP16
    /// weights and compute; inputs and outputs stay FP32).
    pub mode: OptimizeMode,
    /// The revision is refused (condition `ModelOptimized` False, reason
    /// `AgreementBelowMinimum`) when the optimized model's agreement with the
    /// original on any output is below this share: top-1 for classes, 1 -
    /// relative error for values. Default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_agreement: Option<f64>,
    /// Rows the agreement is measured on, and that `int8-static` calibrates its
    /// activation ranges on (it requires them): CSV with a header row, or a 2-D
    /// `.npy` array, at a location of the same forms as `storageUri`, fetched
    /// with the model's credentials. 1,000 seeded random rows when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
        "self.matches('^(https?|s3|pvc|file)://.+')"
    ).message("calibrationUri must start with http://, https://, s3://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new(
        "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')"
    ).message("calibrationUri pvc:// must be pvc://<claim-name>/<path>"))]
    #[schemars(length(max = 2048))]
    pub calibration_uri: Option<String>,
    /// Expected SHA-256 of the calibration file, 64 lowercase hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')")
        .message("calibrationSha256 must be 64 lowercase hexadecimal digits"))]
    pub calibration_sha256: Option<String>,
    /// A CSV column of the calibration rows that is not a feature (a label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub label_column: Option<String>,
    /// Also save ONNX Runtime's graph optimizations into the file: `basic`
    /// (portable ONNX) or `extended` (ONNX Runtime's own fused operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_optimization: Option<GraphOptimization>,
    /// `fp16` only: operators kept in FP32 besides the built-in list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub keep_fp32: Vec<String>,
}

impl OptimizeSpec {
    /// `minAgreement`, or its default.
    pub fn min_agreement(&self) -> f64 {
        self.min_agreement.unwrap_or(DEFAULT_MIN_AGREEMENT)
    }
}

/// The optimizations `sluice-server optimize` makes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizeMode {
    /// INT8 weights of MatMul and Gemm, activations quantized at run time.
    Int8Dynamic,
    /// INT8 weights and activations, ranges calibrated on the calibration rows.
    Int8Static,
    /// FP16 weights and compute; inputs and outputs stay FP32.
    Fp16,
}

impl OptimizeMode {
    /// The mode as `sluice-server optimize --mode` takes it.
    pub fn as_arg(self) -> &'static str {
        match self {
            OptimizeMode::Int8Dynamic => "int8-dynamic",
            OptimizeMode::Int8Static => "int8-static",
            OptimizeMode::Fp16 => "fp16",
        }
    }
}

/// ONNX Runtime's graph optimization levels that can be saved into a file.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GraphOptimization {
    /// Constant folding and redundant-node removal.
    Basic,
    /// Also fusions into ONNX Runtime's own operators.
    Extended,
}

impl GraphOptimization {
    /// The level as `sluice-server optimize --graph-optimization` takes it.
    pub fn as_arg(self) -> &'static str {
        match self {
            GraphOptimization::Basic => "basic",
            GraphOptimization::Extended => "extended",
        }
    }
}

/// `status.optimization`: what the current revision's optimize init container
/// measured, copied from its summary (`sluice-server optimize --summary`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OptimizationStatus {
    /// The revision these figures are of.
    #[serde(default)]
    pub revision: String,
    /// `int8-dynamic` or `fp16`.
    pub mode: String,
    /// The original file's size in bytes.
    pub size_bytes_before: i64,
    /// The optimized file's size in bytes.
    pub size_bytes_after: i64,
    /// After over before.
    pub size_ratio: f64,
    /// Median milliseconds of one run at 1 row, original.
    pub latency_ms_batch1_before: f64,
    /// The same, optimized.
    pub latency_ms_batch1_after: f64,
    /// Original latency over optimized latency at 1 row.
    pub speedup_batch1: f64,
    /// The batch `speedupBatch` was measured at.
    pub batch: i64,
    /// Original latency over optimized latency at `batch` rows.
    pub speedup_batch: f64,
    /// Agreement with the original, per output.
    pub agreement: Vec<OutputAgreement>,
    /// Rows the agreement was measured on.
    pub rows: i64,
    /// Nodes the optimization changed.
    pub nodes_changed: i64,
    /// Nodes it kept as they were (the init container's log names them and why).
    pub nodes_kept: i64,
}

/// How closely one output of the optimized model answers like the original.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutputAgreement {
    /// The output.
    pub output: String,
    /// `top-1` (share of rows with the same class) or `relative-error`.
    pub measure: String,
    /// The share, or the relative error.
    pub value: f64,
}
