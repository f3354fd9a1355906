//! The `fallback` and `circuit_breaker` sections of a model's `config.yaml`:
//! what answers when the model fails, and when to stop calling it. Both are
//! off unless the section is present (see docs/reliability.md for the
//! trade-offs).

use serde::{Deserialize, Deserializer};

use crate::tensor::NamedTensor;
use crate::wire::json::InputTensorJson;

/// `fallback` in a model's `config.yaml`: exactly one of `model` or `static`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// A second ONNX model, relative to the model's folder (the operator
    /// fetches it to `fallback/model.onnx`). It must take the same inputs as
    /// the primary and give at least the primary's outputs.
    #[serde(default)]
    pub model: Option<String>,
    /// A fixed answer: one row of every output of the model, in the
    /// protocol's JSON form (`name`, `datatype`, `shape`, `data`), repeated
    /// for every row of a request.
    #[serde(default, rename = "static", deserialize_with = "static_outputs")]
    pub static_outputs: Option<Vec<NamedTensor>>,
    /// How long the primary may take before the fallback answers, in
    /// milliseconds; absent, the model's `request_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// Which fallback a [`FallbackConfig`] names, once checked.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackSource<'a> {
    /// A second model at this path, relative to the model's folder.
    Model(&'a str),
    /// A fixed answer, one row per output.
    Static(&'a [NamedTensor]),
}

impl FallbackConfig {
    /// The one fallback this section names, or why it is not exactly one.
    pub fn source(&self) -> Result<FallbackSource<'_>, String> {
        match (&self.model, &self.static_outputs) {
            (Some(model), None) if !model.trim().is_empty() => Ok(FallbackSource::Model(model)),
            (None, Some(outputs)) if !outputs.is_empty() => Ok(FallbackSource::Static(outputs)),
            (Some(_), Some(_)) => Err("fallback takes either model or static, not both".into()),
            _ => Err("fallback needs a model path or a non-empty static answer".into()),
        }
    }
}

/// Decodes a static answer from the protocol's JSON form.
fn static_outputs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<NamedTensor>>, D::Error> {
    Vec::<serde_json::Value>::deserialize(deserializer)?
        .iter()
        .map(|value| {
            InputTensorJson::from_value(value).map_err(|e| {
                serde::de::Error::custom(format!("invalid fallback.static output: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `circuit_breaker` in a model's `config.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures or timeouts of the model that open the circuit.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long the circuit stays open before probe requests try the model
    /// again, in milliseconds.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// Requests let through at once while half-open; the first success closes
    /// the circuit and a failure opens it again.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_open_ms() -> u64 {
    30_000
}
fn default_half_open_probes() -> u32 {
    1
}

impl CircuitBreakerConfig {
    /// Checks the values that would make the breaker useless.
    pub fn check(&self) -> Result<(), String> {
        if self.failure_threshold == 0 {
            return Err("circuit_breaker.failure_threshold must be at least 1".into());
        }
        if self.open_ms == 0 {
            return Err("circuit_breaker.open_ms must be at least 1".into());
        }
        if self.half_open_probes == 0 {
            return Err("circuit_breaker.half_open_probes must be at least 1".into());
        }
        Ok(())
    }
}
