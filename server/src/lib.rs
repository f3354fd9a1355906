//! Sluice's model server: ONNX Runtime behind the Open Inference Protocol
//! (REST and gRPC) with dynamic batching, warm-up and Prometheus metrics.

pub mod batcher;
pub mod cli;
pub mod config;
pub mod error;
pub mod fetch;
pub mod fuzz;
pub mod loadtest;
pub mod metrics;
pub mod model;
pub mod monitoring;
pub mod protocol;
pub mod repository;
pub mod runtime;
pub mod security;
pub mod serve;
pub mod tensor;
