//! The `ServingPolicy` custom resource (cluster-scoped): a platform team's
//! guardrails for the InferenceServices of the namespaces it is bound to. The API
//! server enforces them itself, through the ValidatingAdmissionPolicy in
//! `config/policy` that takes a ServingPolicy as its parameter, so they hold even
//! while the operator is down.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Guardrails for InferenceServices. Every field is optional: an absent one
/// allows anything.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "serving.sluice.dev",
    version = "v1alpha1",
    kind = "ServingPolicy",
    plural = "servingpolicies",
    shortname = "sp",
    category = "sluice",
    derive = "PartialEq",
    doc = "Guardrails for InferenceServices, enforced by the API server through the sluice-guardrails ValidatingAdmissionPolicy (config/policy) in the namespaces its bindings select.",
    printcolumn = r#"{"name":"Max replicas","type":"integer","jsonPath":".spec.maxReplicas"}"#,
    printcolumn = r#"{"name":"Authentication","type":"boolean","jsonPath":".spec.requireAuthentication"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".spec.allowedStorageUriPrefixes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServingPolicySpec {
    /// Where models may come from: `spec.model.storageUri` (and a fallback
    /// model's) must start with one of these, e.g. `s3://models-approved/`.
    /// Empty or absent: anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub allowed_storage_uri_prefixes: Vec<String>,
    /// The most serving pods one InferenceService may ask for: its
    /// `maxReplicas` must be set and at most this, and so must `minReplicas`
    /// and `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<i32>,
    /// Requests must be authenticated: `spec.security.apiKeysSecret` or
    /// `spec.security.jwt` must be set (stream workers, which answer no
    /// requests, are exempt).
    #[serde(default)]
    pub require_authentication: bool,
}
