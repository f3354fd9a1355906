//! A namespace's ServingPolicy, applied (pure): which policy a namespace selects,
//! and the InferenceService with the policy's defaults filled in where its spec
//! leaves them out. The spec itself is never written (a GitOps tool owns it);
//! `status.policy` says what was filled.

use std::collections::BTreeMap;

use crate::crd::{InferenceService, PolicyStatus, SecuritySpec, ServingPolicy};

/// The namespace label that names its ServingPolicy (the same one the
/// `sluice-guardrails` admission policy's bindings select on).
pub const POLICY_LABEL: &str = "serving.sluice.dev/policy";

/// The ServingPolicy of namespaces without the label.
pub const DEFAULT_POLICY: &str = "default";

/// The ServingPolicy a namespace with `labels` selects.
pub fn selected(labels: Option<&BTreeMap<String, String>>) -> &str {
    labels
        .and_then(|l| l.get(POLICY_LABEL))
        .map_or(DEFAULT_POLICY, String::as_str)
}

/// `isvc` with `policy`'s defaults where its spec sets nothing, and
/// `status.policy` naming the policy and what it filled (none without a policy).
pub fn apply(mut isvc: InferenceService, policy: Option<&ServingPolicy>) -> InferenceService {
    let applied = policy.map(|policy| {
        let mut defaulted = Vec::new();
        if let Some(defaults) = &policy.spec.defaults {
            let runtime = &mut isvc.spec.runtime;
            if runtime.image.is_none() && defaults.runtime_image.is_some() {
                runtime.image = defaults.runtime_image.clone();
                defaulted.push("runtime.image".to_string());
            }
            if runtime.resources.is_none() && defaults.resources.is_some() {
                runtime.resources = defaults.resources.clone();
                defaulted.push("runtime.resources".to_string());
            }
            let authenticated = isvc
                .spec
                .security
                .as_ref()
                .is_some_and(|s| s.api_keys_secret.is_some() || s.jwt.is_some());
            if let Some(secret) = &defaults.api_keys_secret
                && !authenticated
                && isvc.spec.streaming.is_none()
            {
                isvc.spec
                    .security
                    .get_or_insert_with(unset_security)
                    .api_keys_secret = Some(secret.clone());
                defaulted.push("security.apiKeysSecret".to_string());
            }
        }
        PolicyStatus {
            name: policy.metadata.name.clone().unwrap_or_default(),
            defaulted,
        }
    });
    isvc.status.get_or_insert_with(Default::default).policy = applied;
    isvc
}

/// A `spec.security` as an empty section reads: serde's defaults (open
/// metrics), which the derived `Default` does not give.
fn unset_security() -> SecuritySpec {
    serde_json::from_value(serde_json::json!({}))
        .expect("every field of spec.security has a default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isvc(spec: serde_json::Value) -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "team-a"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn policy() -> ServingPolicy {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "ServingPolicy",
            "metadata": {"name": "default"},
            "spec": {"defaults": {
                "runtimeImage": "registry.internal/sluice-server:1.4",
                "resources": {"requests": {"cpu": "250m"}},
                "apiKeysSecret": "team-keys",
            }},
        }))
        .unwrap()
    }

    #[test]
    fn defaults_fill_only_what_the_spec_leaves_out_and_are_listed() {
        let bare = apply(
            isvc(json!({"model": {"storageUri": "s3://m/1.onnx"}})),
            Some(&policy()),
        );
        assert_eq!(
            bare.spec.runtime.image.as_deref(),
            Some("registry.internal/sluice-server:1.4")
        );
        assert!(bare.spec.runtime.resources.is_some());
        let security = bare.spec.security.as_ref().unwrap();
        assert_eq!(security.api_keys_secret.as_deref(), Some("team-keys"));
        assert!(security.open_metrics, "Prometheus still scrapes");
        let status = bare.status.unwrap().policy.unwrap();
        assert_eq!(status.name, "default");
        assert_eq!(
            status.defaulted,
            [
                "runtime.image",
                "runtime.resources",
                "security.apiKeysSecret"
            ]
        );

        // What the spec sets wins; JWT counts as authentication; streams get no keys.
        let own = apply(
            isvc(json!({"model": {"storageUri": "s3://m/1.onnx"},
                "runtime": {"image": "mine:2"},
                "security": {"jwt": {"issuer": "i", "audience": "a", "jwksUri": "https://i/jwks"}}})),
            Some(&policy()),
        );
        assert_eq!(own.spec.runtime.image.as_deref(), Some("mine:2"));
        assert!(own.spec.security.unwrap().api_keys_secret.is_none());
        assert_eq!(
            own.status.unwrap().policy.unwrap().defaulted,
            ["runtime.resources"]
        );

        let none = apply(
            isvc(json!({"model": {"storageUri": "s3://m/1.onnx"}})),
            None,
        );
        assert!(none.spec.runtime.image.is_none());
        assert_eq!(none.status.unwrap().policy, None);
    }

    #[test]
    fn a_namespace_selects_its_policy_by_label_else_the_default() {
        let labelled = BTreeMap::from([(POLICY_LABEL.to_string(), "restricted".to_string())]);
        assert_eq!(selected(Some(&labelled)), "restricted");
        assert_eq!(selected(Some(&BTreeMap::new())), DEFAULT_POLICY);
        assert_eq!(selected(None), DEFAULT_POLICY);
    }
}
