//! The model server container's resources (serving or batch): the spec's or
//! safe defaults, and the CPU figures the build (thread budget) and the
//! autoscaler (CPU trigger) read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::crd::{Device, InferenceServiceSpec};

/// Whole CPUs in the container's CPU limit, rounded up: a thread budget that does not
/// oversubscribe the limit.
pub fn cpu_limit_threads(resources: &ResourceRequirements) -> Option<u32> {
    let cores = cpu_cores(&resources.limits.as_ref()?.get("cpu")?.0)?;
    (cores > 0.0).then(|| cores.ceil().max(1.0) as u32)
}

/// Cores in a CPU quantity (`2`, `0.5`, `500m`).
pub fn cpu_cores(quantity: &str) -> Option<f64> {
    let quantity = quantity.trim();
    match quantity.strip_suffix('m') {
        Some(milli) => Some(milli.parse::<f64>().ok()? / 1000.0),
        None => quantity.parse::<f64>().ok(),
    }
}

/// The server container's resources: the spec's, else safe defaults; CUDA adds a GPU.
pub fn resources(spec: &InferenceServiceSpec) -> ResourceRequirements {
    with_defaults(spec.runtime.resources.as_ref(), spec.runtime.device)
}

/// `given`, else safe defaults (requests 500m CPU and 512Mi, a 2Gi memory
/// limit); `cuda` adds a `nvidia.com/gpu: 1` limit unless one is set. Serving
/// and batch containers alike.
pub fn with_defaults(given: Option<&ResourceRequirements>, device: Device) -> ResourceRequirements {
    let mut resources = given.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("500m".into())),
            ("memory".into(), Quantity("512Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("2Gi".into()))])),
        ..ResourceRequirements::default()
    });
    if device == Device::Cuda {
        resources
            .limits
            .get_or_insert_default()
            .entry("nvidia.com/gpu".into())
            .or_insert_with(|| Quantity("1".into()));
    }
    resources
}
