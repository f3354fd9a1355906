//! `spec.model` and `spec.runtime`: what is served and how `sluice-server` runs it.
//! Both define a revision (see [`crate::names::revision`]).

use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::optimize::OptimizeSpec;

/// Where the model comes from and how to check it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Location of the ONNX file: `https://`, `http://`, `s3://bucket/key`,
    /// `pvc://<claim>/<path>` (mounted read-only) or, for local clusters, `file:///path`.
    #[x_kube(validation = Rule::new(
        "self.matches('^(https?|s3|pvc|file)://.+')"
    ).message("storageUri must start with http://, https://, s3://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new(
        "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')"
    ).message("storageUri pvc:// must be pvc://<claim-name>/<path>"))]
    #[schemars(length(max = 2048))]
    pub storage_uri: String,
    /// Serialization format of the model. Only `onnx` is supported.
    #[serde(default)]
    pub format: ModelFormat,
    /// A version label for humans and dashboards (for example a registry version or
    /// a git tag); it is part of the revision, so changing it rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
    /// Expected SHA-256 of the model file, 64 lowercase hex digits. The fetcher
    /// refuses a file whose digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')")
        .message("sha256 must be 64 lowercase hexadecimal digits"))]
    pub sha256: Option<String>,
    /// Name of a Secret in the same namespace whose keys become the model fetcher's
    /// environment (for example `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL` for `s3://`). Only the init container sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Optimize the model after the fetch: an init container runs
    /// `sluice-server optimize`, and the revision serves the optimized file only
    /// if it agrees with the original (docs/optimize.md). Part of the revision,
    /// so turning it on or changing it rolls out through the canary like a new
    /// model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimize: Option<OptimizeSpec>,
}

/// Serialization format of a model.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// ONNX, served through ONNX Runtime.
    #[default]
    Onnx,
}

/// How `sluice-server` runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// Server image; the operator's default (CPU or CUDA by `device`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where inference runs: `cpu` or `cuda` (requests one `nvidia.com/gpu`).
    #[serde(default)]
    pub device: Device,
    /// Compute resources of the server container. Defaults: requests 500m CPU and
    /// 512Mi memory, memory limit 2Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Dynamic batching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingSpec>,
    /// ONNX Runtime intra-op threads. When absent, the CPU limit (rounded up) if one
    /// is set, else ONNX Runtime's own choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub threads: Option<u32>,
    /// Extra environment variables of the server container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

impl RuntimeSpec {
    /// Whether every field has its default (the spec then omits the section).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Where inference runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider on one GPU.
    Cuda,
}

/// Dynamic batching settings of the model server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchingSpec {
    /// Most rows in one run; 0 or 1 turns batching off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65536))]
    pub max_batch_size: Option<u32>,
    /// How long the oldest request may wait for a batch to fill, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_queue_delay_ms: Option<u32>,
    /// Queued requests beyond this are refused at once (HTTP 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_queue_size: Option<u32>,
}
