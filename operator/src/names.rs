//! What the operator calls things: the labels and annotations it sets, the ports
//! its Services expose, the names of a revision's objects, and the revision itself
//! (a hash of what defines the serving pods). Every pipeline step agrees on these,
//! so they live apart from all of them.

use std::collections::BTreeMap;

use kube::Resource;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::config::BuildConfig;
use crate::crd::{Device, InferenceServiceSpec, RuntimeSpec};

/// Label on every object and pod of an InferenceService: its name.
pub const ISVC_LABEL: &str = "serving.sluice.dev/inferenceservice";
/// Label on pods and ConfigMaps: the revision they serve.
pub const REVISION_LABEL: &str = "serving.sluice.dev/revision";
/// Annotation holding the hash of the object as last applied; equal hashes mean
/// there is nothing to write.
pub const APPLIED_HASH_ANNOTATION: &str = "serving.sluice.dev/applied-hash";
/// Port of the Open Inference Protocol over REST (and `/metrics`).
pub const HTTP_PORT: i32 = 8080;
/// Port of the Open Inference Protocol over gRPC.
pub const GRPC_PORT: i32 = 8081;
/// Environment variables the operator sets itself; a spec may not override them.
pub const RESERVED_ENV: [&str; 2] = ["SLUICE_ISVC", "SLUICE_REVISION"];
/// Longest InferenceService name: `<name>-<revision>` (11 more characters) names
/// Services, which are DNS-1035 labels of at most 63.
pub const MAX_NAME_LENGTH: usize = 52;

/// Label on a BatchInference's Jobs, CronJob and pods: its name.
pub const BATCH_LABEL: &str = "serving.sluice.dev/batchinference";
/// Annotation on a BatchInference: a new value runs the same spec again (a
/// one-time BatchInference runs once per spec and value).
pub const RERUN_ANNOTATION: &str = "serving.sluice.dev/rerun";
/// Annotation on a batch run's Job: the `storageUri` of the model it runs.
pub const MODEL_ANNOTATION: &str = "serving.sluice.dev/model";
/// Annotation on a batch run's Job: the output location its run folder is
/// in (`<output>/<job>`).
pub const OUTPUT_ANNOTATION: &str = "serving.sluice.dev/output";
/// Label the Job controller puts on a Job's pods: the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Annotation the Job controller puts on an Indexed Job's pods: the index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// The labels of a BatchInference's CronJob, Jobs and pods.
pub fn batch_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "sluice-server".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/component".into(), "batch".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "sluice-operator".into(),
        ),
        (BATCH_LABEL.into(), name.into()),
    ])
}

/// Name of the ConfigMap holding a revision's `config.yaml`.
pub fn config_map_name(isvc: &str, revision: &str) -> String {
    revision_object_name(isvc, revision)
}

/// Name of a revision's Deployment and Service, `<name>-<revision>`.
pub fn revision_object_name(isvc: &str, revision: &str) -> String {
    format!("{isvc}-{revision}")
}

/// Labels selecting one revision's pods.
pub fn revision_selector(name: &str, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ISVC_LABEL.to_string(), name.to_string()),
        (REVISION_LABEL.to_string(), revision.to_string()),
    ])
}

/// Labels selecting every serving pod of an InferenceService (all revisions).
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ISVC_LABEL.to_string(), name.to_string())])
}

/// The labels of a retraining Job (besides the template's own), and so the
/// selector that lists an InferenceService's retraining Jobs.
pub fn retraining_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ISVC_LABEL.to_string(), name.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "retraining".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "sluice-operator".to_string(),
        ),
    ])
}

/// The selector as a `key=value` string.
pub fn selector_string(name: &str) -> String {
    format!("{ISVC_LABEL}={name}")
}

/// The hash `build` recorded in an object, if any.
pub fn applied_hash<K: Resource>(object: &K) -> Option<&str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(APPLIED_HASH_ANNOTATION)
        .map(String::as_str)
}

/// The revision: a short hash of everything that defines the serving pods (the
/// model, the runtime, the server image actually used, the fallback, the
/// circuit breaker, monitoring and placement).
pub fn revision(spec: &InferenceServiceSpec, cfg: &BuildConfig) -> Result<String> {
    let image = server_image(spec, cfg);
    let core = (&spec.model, &spec.runtime, image);
    let resilience = (&spec.fallback, &spec.circuit_breaker);
    // Fields added later join the hash only when set, so that upgrading the
    // operator does not roll out every InferenceService.
    let mut bytes = match (&spec.monitoring, resilience) {
        (None, (None, None)) => serde_json::to_vec(&core)?,
        (None, (fallback, breaker)) => {
            serde_json::to_vec(&(core.0, core.1, core.2, fallback, breaker))?
        }
        (Some(monitoring), (fallback, breaker)) => {
            let monitoring = monitoring.for_pods();
            serde_json::to_vec(&(core.0, core.1, core.2, fallback, breaker, monitoring))?
        }
    };
    // Placement picks the nodes and, per node, the kind of workload.
    if !spec.placement.is_default() {
        bytes.extend(serde_json::to_vec(&("placement", &spec.placement))?);
    }
    // A stream's topics, group and delivery are the workers' arguments.
    if let Some(streaming) = &spec.streaming {
        bytes.extend(serde_json::to_vec(&("streaming", streaming))?);
    }
    Ok(short_hash(&bytes))
}

/// The first ten hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// The server image a spec runs: its own, else the configured CPU or CUDA image.
pub fn server_image<'a>(spec: &'a InferenceServiceSpec, cfg: &'a BuildConfig) -> &'a str {
    runtime_image(&spec.runtime, cfg)
}

/// The server image `runtime` names, else the configured CPU or CUDA image.
pub fn runtime_image<'a>(runtime: &'a RuntimeSpec, cfg: &'a BuildConfig) -> &'a str {
    match (&runtime.image, runtime.device) {
        (Some(image), _) => image,
        (None, Device::Cpu) => &cfg.server_image,
        (None, Device::Cuda) => &cfg.server_cuda_image,
    }
}
