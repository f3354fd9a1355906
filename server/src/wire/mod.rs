//! How the Open Inference Protocol spells requests and responses: JSON bodies
//! with the binary tensor extension, gRPC messages, and what a REST path names.
//!
//! Everything here turns untrusted bytes into tensors (or back) and nothing
//! more: it knows no model, runtime or server state, so it builds without ONNX
//! Runtime, which is what lets the fuzz target (`server/fuzz`) reach every
//! parser without linking it.

pub mod grpc;
pub mod json;
pub mod nonfinite;
pub mod paths;
pub mod tensor_json;
