//! A model's optional `config.yaml`: batching, queueing, warm-up, threads, device
//! and input limits. Every field has a safe default, and unknown fields are
//! rejected so that a typo is reported instead of silently ignored.

pub mod monitoring;
pub mod resilience;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::tensor::NamedTensor;
use crate::wire::json::InputTensorJson;
use monitoring::MonitoringConfig;
use resilience::{CircuitBreakerConfig, FallbackConfig};

/// Where a model runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// The CUDA execution provider (needs the `onnxruntime-gpu` library).
    Cuda,
}

/// Per-model serving configuration, read from `DIR/<model>/config.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Largest number of rows combined into one run; 0 or 1 turns batching off.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a batch to fill. 0 (the
    /// default) dispatches at once and batches only what queued during a run.
    pub max_queue_delay_ms: u64,
    /// Requests waiting beyond this are refused at once (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    pub max_queue_size: usize,
    /// A request that has not finished after this long fails (HTTP 504, gRPC DEADLINE_EXCEEDED).
    pub request_timeout_ms: u64,
    /// Intra-op threads for ONNX Runtime; 0 lets ONNX Runtime choose.
    pub intra_op_threads: usize,
    /// Where runs happen: `auto` (the default) runs a model whose full-batch
    /// warm-up run takes at most a millisecond inline on the request runtime and a
    /// slower one on a thread of its own; `inline` and `thread` force one.
    pub runner: RunnerChoice,
    /// Execution device.
    pub device: Device,
    /// With `device: cuda`, run on the CPU instead of failing when CUDA is unavailable.
    pub cpu_fallback: bool,
    /// Warm-up runs before the model reports ready.
    pub warmup: WarmupConfig,
    /// Limits on what one request may carry.
    pub limits: InputLimits,
    /// Drift and quality monitoring against a reference profile.
    pub monitoring: Option<MonitoringConfig>,
    /// What answers when the model fails, times out or has its circuit open.
    pub fallback: Option<FallbackConfig>,
    /// When to stop calling a failing model for a while.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            max_batch_size: 32,
            max_queue_delay_ms: 0,
            max_queue_size: 1024,
            request_timeout_ms: 30_000,
            intra_op_threads: 0,
            runner: RunnerChoice::Auto,
            device: Device::Cpu,
            cpu_fallback: false,
            warmup: WarmupConfig::default(),
            limits: InputLimits::default(),
            monitoring: None,
            fallback: None,
            circuit_breaker: None,
        }
    }
}

/// Where a model's runs happen (see `runner` in [`ModelConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerChoice {
    /// Inline for fast models, a thread for slow ones, by the warm-up run time.
    Auto,
    /// Always on the request runtime.
    Inline,
    /// Always on a thread of the model version's own.
    Thread,
}

/// Warm-up: runs before readiness so that the first real request is not slow.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarmupConfig {
    /// Run warm-up at all.
    pub enabled: bool,
    /// How many times each warm-up input is run.
    pub iterations: usize,
    /// Explicit warm-up inputs, written in the protocol's JSON form (`name`,
    /// `datatype`, `shape`, `data`) and decoded when the file is read. When
    /// empty, inputs are synthesized from the model's metadata: zeros, one row
    /// and a full batch.
    #[serde(deserialize_with = "warmup_inputs")]
    pub inputs: Vec<NamedTensor>,
}

/// Decodes warm-up inputs from the protocol's JSON form.
fn warmup_inputs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<NamedTensor>, D::Error> {
    Vec::<serde_json::Value>::deserialize(deserializer)?
        .iter()
        .map(|value| {
            InputTensorJson::from_value(value)
                .map_err(|e| serde::de::Error::custom(format!("invalid warm-up input: {e}")))
        })
        .collect()
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig {
            enabled: true,
            iterations: 1,
            inputs: Vec::new(),
        }
    }
}

/// Limits that keep one request from exhausting the server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputLimits {
    /// Most elements in one input tensor.
    pub max_elements: usize,
    /// Most rows (first dimension) in one request.
    pub max_rows: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        InputLimits {
            max_elements: 16 * 1024 * 1024,
            max_rows: 4096,
        }
    }
}

/// Why a `config.yaml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    Invalid { path: String, message: String },
}

impl ModelConfig {
    /// Reads `config.yaml` in `model_dir`, or the defaults when there is none.
    pub fn load(model_dir: &Path) -> Result<ModelConfig, ConfigError> {
        let path = model_dir.join("config.yaml");
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => ModelConfig::parse(&text).map_err(|message| ConfigError::Invalid {
                path: shown,
                message,
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(ModelConfig::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: shown,
                source,
            }),
        }
    }

    /// Parses the YAML text of a model configuration.
    pub fn parse(text: &str) -> Result<ModelConfig, String> {
        if text.trim().is_empty() {
            return Ok(ModelConfig::default());
        }
        let config: ModelConfig = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if config.max_queue_size == 0 {
            return Err("max_queue_size must be at least 1".to_string());
        }
        if config.request_timeout_ms == 0 {
            return Err("request_timeout_ms must be at least 1".to_string());
        }
        if let Some(fallback) = &config.fallback {
            fallback.source()?;
            if fallback.timeout_ms == Some(0) {
                return Err("fallback.timeout_ms must be at least 1".to_string());
            }
        }
        if let Some(breaker) = &config.circuit_breaker {
            breaker.check()?;
        }
        Ok(config)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// How long the model itself may take: the fallback's `timeout_ms` when a
    /// fallback is set, else the request timeout.
    pub fn primary_timeout(&self) -> Duration {
        self.fallback
            .as_ref()
            .and_then(|fallback| fallback.timeout_ms)
            .map_or_else(|| self.request_timeout(), Duration::from_millis)
    }

    /// The batching delay as a duration.
    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_millis(self.max_queue_delay_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_missing_fields_take_defaults() {
        assert_eq!(ModelConfig::parse("").unwrap(), ModelConfig::default());
        let config = ModelConfig::parse("max_batch_size: 8\n").unwrap();
        assert_eq!(config.max_batch_size, 8);
        assert_eq!(config.max_queue_size, 1024);
        assert!(config.warmup.enabled);
    }

    #[test]
    fn nested_sections_and_device_parse() {
        let config = ModelConfig::parse(
            "device: cuda\ncpu_fallback: true\nwarmup:\n  iterations: 3\nlimits:\n  max_rows: 10\n",
        )
        .unwrap();
        assert_eq!(config.device, Device::Cuda);
        assert!(config.cpu_fallback);
        assert_eq!(config.warmup.iterations, 3);
        assert_eq!(config.limits.max_rows, 10);
        assert_eq!(
            config.limits.max_elements,
            InputLimits::default().max_elements
        );
    }

    #[test]
    fn monitoring_takes_defaults_beside_its_profile() {
        let config = ModelConfig::parse(
            "monitoring:\n  profile: profile.json\n  feedback:\n    output: label\n    task: classification\n",
        )
        .unwrap();
        let monitoring = config.monitoring.unwrap();
        assert_eq!(monitoring.profile, "profile.json");
        assert_eq!(monitoring.window, 1000);
        let feedback = monitoring.feedback.unwrap();
        assert_eq!(feedback.retention, 10_000);
        assert!(
            ModelConfig::parse("monitoring:\n  window: 5\n").is_err(),
            "the profile is required"
        );
    }

    #[test]
    fn warmup_inputs_are_decoded_when_the_file_is_read() {
        let config = ModelConfig::parse(
            "warmup:\n  inputs:\n    - {name: x, datatype: INT32, shape: [1, 2], data: [[3, 4]]}\n",
        )
        .unwrap();
        let input = &config.warmup.inputs[0];
        assert_eq!(input.name, "x");
        assert_eq!(input.tensor.shape, vec![1, 2]);
        assert_eq!(
            input.tensor.data,
            crate::tensor::TensorData::Int32(vec![3, 4])
        );
        let error = ModelConfig::parse(
            "warmup:\n  inputs:\n    - {name: x, datatype: INT32, shape: [2], data: [1]}\n",
        )
        .unwrap_err();
        assert!(
            error.contains("invalid warm-up input: input 'x'"),
            "{error}"
        );
    }

    #[test]
    fn fallback_and_circuit_breaker_parse_with_defaults() {
        let config = ModelConfig::parse(
            "fallback:\n  static:\n    - {name: label, datatype: INT64, shape: [1], data: [0]}\n  timeout_ms: 50\ncircuit_breaker: {}\n",
        )
        .unwrap();
        let fallback = config.fallback.as_ref().unwrap();
        assert!(matches!(
            fallback.source(),
            Ok(resilience::FallbackSource::Static(outputs)) if outputs[0].name == "label"
        ));
        assert_eq!(config.primary_timeout(), Duration::from_millis(50));
        let breaker = config.circuit_breaker.unwrap();
        assert_eq!(
            (
                breaker.failure_threshold,
                breaker.open_ms,
                breaker.half_open_probes
            ),
            (5, 30_000, 1)
        );
        let config = ModelConfig::parse("fallback: {model: fallback/model.onnx}\n").unwrap();
        assert_eq!(config.primary_timeout(), config.request_timeout());
    }

    #[test]
    fn fallback_mistakes_are_named() {
        for (text, message) in [
            (
                "fallback: {}\n",
                "needs a model path or a non-empty static answer",
            ),
            (
                "fallback: {model: a.onnx, static: [{name: out, datatype: FP32, shape: [1], data: [0]}]}\n",
                "not both",
            ),
            (
                "fallback: {model: a.onnx, timeout_ms: 0}\n",
                "fallback.timeout_ms",
            ),
            (
                "fallback: {static: [{name: out, datatype: FP32, shape: [2], data: [0]}]}\n",
                "invalid fallback.static output",
            ),
            (
                "circuit_breaker: {failure_threshold: 0}\n",
                "failure_threshold",
            ),
            ("circuit_breaker: {open_ms: 0}\n", "open_ms"),
            (
                "circuit_breaker: {half_open_probes: 0}\n",
                "half_open_probes",
            ),
            ("circuit_breaker: {threshold: 3}\n", "threshold"),
        ] {
            let error = ModelConfig::parse(text).unwrap_err();
            assert!(error.contains(message), "{text}: {error}");
        }
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let error = ModelConfig::parse("max_bach_size: 8\n").unwrap_err();
        assert!(error.contains("max_bach_size"), "{error}");
        let error = ModelConfig::parse("device: tpu\n").unwrap_err();
        assert!(error.contains("tpu"), "{error}");
        let error = ModelConfig::parse("max_queue_size: 0\n").unwrap_err();
        assert!(error.contains("max_queue_size"), "{error}");
    }
}
