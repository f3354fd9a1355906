//! The `ServingPolicy` custom resource (cluster-scoped): a platform team's
//! guardrails and defaults for the InferenceServices of the namespaces that
//! select it (label `serving.sluice.dev/policy`, else the policy `default`). The
//! API server enforces the guardrails itself, through the
//! ValidatingAdmissionPolicy in `config/policy` that takes a ServingPolicy as its
//! parameter, so they hold even while the operator is down; the operator fills in
//! the defaults ([`crate::policy`]).

use k8s_openapi::api::core::v1::ResourceRequirements;
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
    /// `spec.security.jwt` must be set, or `defaults.apiKeysSecret` (stream
    /// workers, which answer no requests, are exempt).
    #[serde(default)]
    pub require_authentication: bool,
    /// What the operator fills in where an InferenceService leaves it out; the
    /// InferenceService's `status.policy` lists what it filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<ServingDefaults>,
}

/// Values the operator uses where an InferenceService sets none. They are part
/// of the revision, so a change rolls out like a change of the spec.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServingDefaults {
    /// `spec.runtime.image`: e.g. the platform's mirrored sluice-server build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_image: Option<String>,
    /// `spec.runtime.resources` of the server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `spec.security.apiKeysSecret`, when the spec sets neither API keys nor
    /// JWT (and is not a stream): a Secret of that name in each namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret: Option<String>,
}

/// `status.policy`: the ServingPolicy an InferenceService got and what it
/// filled in.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The ServingPolicy's name.
    pub name: String,
    /// The spec fields it filled in, e.g. `runtime.image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defaulted: Vec<String>,
}
