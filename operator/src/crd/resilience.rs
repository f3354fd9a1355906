//! `spec.fallback` and `spec.circuitBreaker`: degraded mode when the model
//! fails. Both are off when absent, and both are part of the revision, so
//! turning them on or changing them rolls out like any other change.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::ModelSpec;

/// What answers when the model fails, times out or has its circuit open.
/// Exactly one of `model` and `static`. Answers from the fallback carry the
/// response parameters `sluice_fallback` and `sluice_fallback_reason`, and
/// count as errors in a rollout's error-rate check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.model) != has(self.static)")
    .message("spec.fallback takes exactly one of model and static"))]
#[serde(rename_all = "camelCase")]
pub struct FallbackSpec {
    /// A second model (an older, smaller or simpler one), fetched beside the
    /// primary and loaded in the same server. It must take the same inputs
    /// and give at least the primary's outputs, or the revision fails to load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// A fixed answer: one row of every output of the model, repeated for
    /// each row of a request.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub static_outputs: Option<Vec<StaticOutput>>,
    /// How long the model may take before the fallback answers, in
    /// milliseconds. Default: the server's request timeout (30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600_000))]
    pub timeout_ms: Option<u32>,
}

/// One row of one output, in the Open Inference Protocol's tensor form.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StaticOutput {
    /// The output's name, as the model declares it.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Its datatype; numeric and boolean types only.
    pub datatype: StaticDatatype,
    /// Its shape, first dimension 1 when the model's is dynamic (for example
    /// `[1, 3]` for three class probabilities).
    #[schemars(length(min = 1, max = 8))]
    pub shape: Vec<i64>,
    /// The values, flattened in row-major order.
    #[schemars(length(min = 1, max = 4096))]
    pub data: Vec<f64>,
}

/// A datatype a static answer can carry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs, reason = "the Open Inference Protocol's datatype names")]
pub enum StaticDatatype {
    BOOL,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    INT8,
    INT16,
    INT32,
    INT64,
    FP16,
    FP32,
    FP64,
}

impl StaticDatatype {
    /// Whether values of this type are whole numbers (booleans are 0 or 1).
    pub fn is_integral(self) -> bool {
        !matches!(
            self,
            StaticDatatype::FP16 | StaticDatatype::FP32 | StaticDatatype::FP64
        )
    }

    /// `value` as the protocol's JSON writes this type: a boolean, an
    /// integer or a number. Integral types take values `validate` checked.
    pub fn json_value(self, value: f64) -> serde_json::Value {
        match self {
            StaticDatatype::BOOL => serde_json::Value::Bool(value != 0.0),
            StaticDatatype::FP16 | StaticDatatype::FP32 | StaticDatatype::FP64 => {
                serde_json::json!(value)
            }
            _ => serde_json::json!(value as i64),
        }
    }
}

/// A per-model circuit breaker: after `failureThreshold` consecutive failures
/// or timeouts of the model it opens, and for `openSeconds` requests go to
/// the fallback (or get a fast 503 with Retry-After when there is none); then
/// `halfOpenProbes` requests test the model, and the first success closes it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Consecutive failures or timeouts that open the circuit. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub failure_threshold: Option<u32>,
    /// Seconds the circuit stays open before probing. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub open_seconds: Option<u32>,
    /// Probe requests let through at once while half-open. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub half_open_probes: Option<u32>,
}
