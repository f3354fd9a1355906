//! The `InferenceService` custom resource (`serving.sluice.dev/v1alpha1`).
//!
//! Field names follow KServe's where the concept is the same (`storageUri`,
//! `minReplicas`, `maxReplicas`). Validation lives in the schema (enums, bounds) and
//! in CEL rules, so the API server itself rejects a bad manifest with a message that
//! names the field.

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod autoscaling;
pub mod batch;
pub mod model;
pub mod monitoring;
pub mod optimize;
pub mod placement;
pub mod policy;
pub mod resilience;
pub mod rollout;
pub mod streaming;

pub use autoscaling::{AutoscalingMode, AutoscalingSpec, AutoscalingStatus};
pub use batch::{
    BatchInference, BatchInferenceSpec, BatchInferenceStatus, BatchPhase, BatchRun, DataFormat,
    InferenceServiceRef, ShardFailure,
};
pub use model::{BatchingSpec, Device, ModelFormat, ModelSpec, RuntimeSpec};
pub use monitoring::{
    DriftEpisode, DriftSpec, DriftStatus, FeedbackSpec, FeedbackTask, JobOutcome, MonitoringSpec,
    OnDriftSpec, RetrainingStatus,
};
pub use optimize::{OptimizationStatus, OptimizeSpec};
pub use placement::{PlacementMode, PlacementSpec};
pub use policy::{PolicyStatus, ServingDefaults, ServingPolicy, ServingPolicySpec};
pub use resilience::{CircuitBreakerSpec, FallbackSpec, StaticDatatype, StaticOutput};
pub use rollout::{HistoryEntry, RollbackStatus, RolloutSpec, RolloutStatus};
pub use streaming::{StreamDelivery, StreamingSpec};

/// API group of every Sluice resource.
pub const GROUP: &str = "serving.sluice.dev";

/// Desired state of an InferenceService: one ONNX model served by `sluice-server`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serving.sluice.dev",
    version = "v1alpha1",
    kind = "InferenceService",
    plural = "inferenceservices",
    shortname = "isvc",
    category = "sluice",
    namespaced,
    status = "InferenceServiceStatus",
    derive = "PartialEq",
    doc = "An ONNX model served by sluice-server over the Open Inference Protocol (REST and gRPC).",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","priority":1,"jsonPath":".status.stableRevision"}"#,
    printcolumn = r#"{"name":"Canary","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout.phase"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.autoscaling.desiredReplicas"}"#,
    printcolumn = r#"{"name":"Signal","type":"string","priority":1,"jsonPath":".status.autoscaling.signal"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas"
).message("spec.minReplicas must not be above spec.maxReplicas").field_path(".minReplicas"))]
#[x_kube(validation = Rule::new(
    "!has(self.placement) || self.placement.mode != 'PerNode' || (has(self.rollout) && self.rollout.strategy == 'BlueGreen')"
).message("spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen: every revision runs one pod on each matching node, so a canary step cannot give it a share of the traffic").field_path(".rollout"))]
#[x_kube(validation = Rule::new(
    "!has(self.streaming) || !has(self.placement) || self.placement.mode != 'PerNode'"
).message("spec.streaming needs spec.placement.mode Replicas: stream workers share a consumer group, whose size the autoscaler sets from the lag").field_path(".streaming"))]
#[x_kube(validation = Rule::new(
    "!has(self.streaming) || !has(self.rollout) || self.rollout.strategy != 'BlueGreen'"
).message("spec.streaming needs spec.rollout.strategy Canary: a new revision's workers join the consumer group and take their share of the partitions at once, so there is no idle preview to switch to").field_path(".rollout"))]
#[x_kube(validation = Rule::new(
    "!has(self.streaming) || !has(self.security) || (!has(self.security.tls) && !has(self.security.apiKeysSecret) && !has(self.security.jwt) && !has(self.security.rateLimit))"
).message("spec.streaming takes no spec.security.tls, apiKeysSecret, jwt or rateLimit: stream workers answer no requests (Kafka's TLS and SASL settings go in spec.streaming.credentialsSecret)").field_path(".security"))]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceSpec {
    /// The model to serve.
    pub model: ModelSpec,
    /// How the model server runs. Every field has a default.
    #[serde(default, skip_serializing_if = "RuntimeSpec::is_default")]
    pub runtime: RuntimeSpec,
    /// The fewest serving pods: the floor of every autoscaling mode. The default, 2,
    /// is the high-availability floor: one pod can be disrupted (a node drain, a
    /// rolling update) while another serves.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// The most serving pods an autoscaler may run; unbounded when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,
    /// How a new revision replaces the stable one: a careful canary by default.
    #[serde(default, skip_serializing_if = "RolloutSpec::is_default")]
    pub rollout: RolloutSpec,
    /// Serving pods wanted by an outside scaler: the scale subresource's field, so
    /// `kubectl scale`, an HPA or KEDA write it. Honoured (within `minReplicas` and
    /// `maxReplicas`) only when `autoscaling.mode` is `External`; ignored otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,
    /// How the number of serving pods follows the load. Every field has a default.
    #[serde(default, skip_serializing_if = "AutoscalingSpec::is_default")]
    pub autoscaling: AutoscalingSpec,
    /// Who may call the model, how fast, over what, and what is recorded. When
    /// absent the server accepts every caller over plain HTTP and gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// What answers when the model fails or times out (see docs/reliability.md).
    /// Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,
    /// Stop calling a failing model for a while. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    /// Drift and quality monitoring against a reference profile (see
    /// docs/monitoring.md). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
    /// Which nodes serve, and whether as a replica count or one pod per node
    /// (see docs/placement.md). Any node, a replica count, when absent.
    #[serde(default, skip_serializing_if = "PlacementSpec::is_default")]
    pub placement: PlacementSpec,
    /// Predict every record of a Kafka topic onto another instead of serving
    /// HTTP and gRPC (see docs/streaming.md). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<StreamingSpec>,
}

fn default_min_replicas() -> i32 {
    2
}

/// Security of the serving path (see docs/security.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecuritySpec {
    /// A Secret in the same namespace whose `keys.yaml` lists API keys by their
    /// SHA-256 digest and the models each may call. Changes are picked up without
    /// restarting the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret: Option<String>,
    /// JWT bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// Serve `/metrics` without credentials (default true, so that Prometheus can
    /// scrape); metrics carry counts and latencies, never payloads.
    #[serde(default = "default_true")]
    pub open_metrics: bool,
    /// Token buckets and a concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Request size limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// TLS on REST and gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// One JSON audit line per request on the server's standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSpec>,
    /// When set, a NetworkPolicy admits traffic to the serving ports only from
    /// these peers (an empty list admits none). Include Prometheus if it scrapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_sources: Option<Vec<NetworkPolicyPeer>>,
}

fn default_true() -> bool {
    true
}

/// JWT validation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jwksUri) != has(self.jwksConfigMap)")
    .message("set exactly one of jwksUri and jwksConfigMap"))]
pub struct JwtSpec {
    /// Required `iss`.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// Required `aud`.
    #[schemars(length(min = 1))]
    pub audience: String,
    /// URL of the identity provider's JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// A ConfigMap in the same namespace whose `jwks.json` holds the JWKS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_config_map: Option<String>,
    /// The claim listing the models a token may call (default `models`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models_claim: Option<String>,
}

/// Rate and concurrency limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per second per client (per pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub requests_per_second: Option<f64>,
    /// Burst per client (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
    /// Sustained requests per second for the model from all clients (per pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.001))]
    pub model_requests_per_second: Option<f64>,
    /// Burst for the model (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub model_burst: Option<u32>,
    /// Most requests one client may have in flight (per pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_per_client: Option<u32>,
}

/// Request size limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest body (REST) or message (gRPC), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_body_bytes: Option<u64>,
    /// Most elements in one input tensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_tensor_elements: Option<u64>,
    /// Most rows per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_batch_rows: Option<u64>,
    /// Most bytes of request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_header_bytes: Option<u64>,
}

/// TLS from a `kubernetes.io/tls` Secret (for example one cert-manager keeps current).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret with `tls.crt` and `tls.key` (and `ca.crt` for client certificates).
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Require client certificates signed by the Secret's `ca.crt` (health probes excepted).
    #[serde(default)]
    pub client_certificates: bool,
}

/// Audit logging.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditSpec {
    /// Fraction of requests (0 to 1) whose payload is logged; 0, the default, never.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub payload_sample_rate: f64,
}

/// Observed state of an InferenceService.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` plus the finer `Reconciled`, `ModelFetched` and `Available`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Progressing`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Why the service is in its phase, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// In-cluster base URL; clients call `POST <url>/v2/models/<name>/infer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Hash of everything that defines the serving pods of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The last revision that was fully rolled out and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// The revision being rolled out, while a rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Percent of traffic on `canaryRevision`, while a rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,
    /// The rollout in progress, or the last one: step, counters and the latest
    /// analysis (each check's query, value, threshold and verdict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// One entry per finished rollout, oldest first, at most `spec.rollout.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// A `rollback` command in force: which revision serves in place of the
    /// spec's, until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
    /// The ServingPolicy of its namespace, and the spec fields it filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
    /// Serving pods (all revisions).
    #[serde(default)]
    pub replicas: i32,
    /// Serving pods that pass their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the serving pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The replica count decided, by which signal, and the autoscaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
    /// With `spec.monitoring`: the stable revision's drift episode and the last
    /// retraining Job (condition `InputDrift` says it in words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// With `spec.model.optimize`: the current revision's optimized model, as
    /// its init container measured it (condition `ModelOptimized` says it in
    /// words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization: Option<OptimizationStatus>,
}

/// Coarse lifecycle phase of an InferenceService.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Objects are being created; no pod has been observed yet.
    Pending,
    /// Pods of the current revision are starting or rolling out.
    Progressing,
    /// The current revision serves on enough ready pods.
    Ready,
    /// The spec cannot be served, or pods fail (fetch errors, crash loops).
    Failed,
}

/// Every CustomResourceDefinition of Sluice, as `crdgen` writes them to `crds/`.
pub fn all() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![
        InferenceService::crd(),
        BatchInference::crd(),
        ServingPolicy::crd(),
    ]
}

/// The file a CRD is checked in as under `crds/`: `<group>_<plural>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Renders a CRD as the YAML checked in under `crds/`, with a header saying how it
/// was made.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated by `make crdgen` (cargo run -p sluice-operator --bin crdgen); do not edit.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn minimal_manifest_from_design_is_valid_and_defaults_safely() {
        let yaml = r#"
apiVersion: serving.sluice.dev/v1alpha1
kind: InferenceService
metadata: {name: fraud, namespace: ml}
spec:
  model:
    storageUri: s3://models/fraud/3/model.onnx
"#;
        let isvc: InferenceService = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(isvc.spec.min_replicas, 2);
        assert_eq!(isvc.spec.max_replicas, None);
        assert_eq!(isvc.spec.model.format, ModelFormat::Onnx);
        assert_eq!(isvc.spec.runtime, RuntimeSpec::default());
    }

    #[test]
    fn checked_in_crds_are_current() {
        let names: Vec<String> = all().iter().map(file_name).collect();
        assert_eq!(
            names,
            [
                "serving.sluice.dev_inferenceservices.yaml",
                "serving.sluice.dev_batchinferences.yaml",
                "serving.sluice.dev_servingpolicies.yaml"
            ]
        );
        for crd in all() {
            let path = format!("{}/../crds/{}", env!("CARGO_MANIFEST_DIR"), file_name(&crd));
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                checked_in == crd_yaml(&crd).unwrap(),
                "{path} is stale: run `make crdgen` and commit the result"
            );
        }
    }

    #[test]
    fn crd_names_and_subresources() {
        let crd = InferenceService::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("inferenceservices.serving.sluice.dev")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["isvc".to_string()]));
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some());
        assert_eq!(
            sub.scale.as_ref().unwrap().spec_replicas_path,
            ".spec.replicas"
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            [
                "Ready", "URL", "Revision", "Stable", "Canary", "Rollout", "Replicas", "Desired",
                "Signal", "Age", "Reason"
            ]
        );
    }

    #[test]
    fn schema_carries_cel_rules_that_name_fields() {
        let json = serde_json::to_string(&InferenceService::crd()).unwrap();
        for message in [
            "spec.minReplicas must not be above spec.maxReplicas",
            "storageUri must start with",
            "sha256 must be 64 lowercase hexadecimal digits",
            "spec.monitoring.profileUri must start with",
            "spec.monitoring.profileSha256 must be 64 lowercase hexadecimal digits",
            "spec.monitoring.minRows must not be above spec.monitoring.windowRows",
            "spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen",
            "spec.streaming needs spec.placement.mode Replicas",
            "spec.streaming needs spec.rollout.strategy Canary",
            "spec.streaming takes no spec.security.tls",
            "spec.streaming.outputTopic must differ from inputTopic",
            "spec.streaming.deadLetterTopic must differ from inputTopic and outputTopic",
        ] {
            assert!(json.contains(message), "missing rule message {message:?}");
        }
    }
}
