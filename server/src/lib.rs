//! Sluice's model server: ONNX Runtime behind the Open Inference Protocol
//! (REST and gRPC) with dynamic batching, warm-up and Prometheus metrics.
//!
//! The modules form layers, each using only those before it:
//! `tensor` and `error`; `wire` (bytes to tensors), `security` and `connection`
//! (accepting connections, rotating them after their maximum age, and how a
//! REST connection ends when its answer comes before the body is read); `config` and
//! `metrics`; then, with ONNX Runtime, `runtime`, `monitoring`, `batcher`,
//! `resilience` (circuit breaker and fallback), `model`, `repository`,
//! `request_log` (sampled requests and their responses mirrored to Kafka; it
//! reads librdkafka properties with `stream::client`, which uses nothing
//! after it), `protocol` (the handlers) and `serve`; `optimize` (INT8 copies
//! of models, measured on ONNX Runtime); `bundle` (the server, ONNX Runtime
//! and models in one archive that serves offline); and `batch` and `stream` (a
//! model over files, and between Kafka topics). The command line (`cli.rs`)
//! belongs to the binary.

// Without ONNX Runtime (feature `onnx` off): everything a request's bytes
// reach before a model runs, which is what `server/fuzz` fuzzes.
pub mod config;
pub mod connection;
pub mod error;
pub mod fetch;
pub mod fuzz;
pub mod loadtest;
pub mod metrics;
pub mod s3;
pub mod security;
pub mod tensor;
pub mod wire;

// With ONNX Runtime: loading and running models, and serving them.
#[cfg(feature = "onnx")]
pub mod batch;
#[cfg(feature = "onnx")]
pub mod batcher;
#[cfg(feature = "onnx")]
pub mod bundle;
#[cfg(feature = "onnx")]
pub mod model;
#[cfg(feature = "onnx")]
pub mod monitoring;
#[cfg(feature = "onnx")]
pub mod optimize;
#[cfg(feature = "onnx")]
pub mod protocol;
#[cfg(feature = "onnx")]
pub mod repository;
#[cfg(feature = "onnx")]
pub mod request_log;
#[cfg(feature = "onnx")]
pub mod resilience;
#[cfg(feature = "onnx")]
pub mod runtime;
#[cfg(feature = "onnx")]
pub mod serve;
#[cfg(feature = "onnx")]
pub mod stream;
