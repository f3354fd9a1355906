//! Checks of `spec.placement`: label syntax the schema cannot express, and the
//! settings that cannot work with one pod per node.

use crate::crd::rollout::Strategy;
use crate::crd::{AutoscalingMode, InferenceServiceSpec};

/// Checks the placement and what it rules out; each message names the fields.
pub fn check(spec: &InferenceServiceSpec) -> Result<(), String> {
    let placement = &spec.placement;
    for (key, value) in &placement.node_selector {
        if !label_key(key) {
            return Err(format!(
                "spec.placement.nodeSelector: {key:?} is not a label key ([prefix/]name, the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            ));
        }
        if !(value.is_empty() || label_name(value)) {
            return Err(format!(
                "spec.placement.nodeSelector: the value {value:?} of {key} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
            ));
        }
    }
    if !placement.per_node() {
        return Ok(());
    }
    if spec.rollout.strategy != Strategy::BlueGreen {
        return Err("spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen (not Canary): every revision runs one pod on each matching node, so a canary step cannot give it a share of the traffic; a blue-green preview runs beside the stable pod on each node until the Service switches".into());
    }
    if spec.rollout.route.is_some() {
        return Err("spec.rollout.route cannot be used with spec.placement.mode PerNode: callers reach their own node's pod through the InferenceService's Service (internalTrafficPolicy Local), which an HTTPRoute would bypass".into());
    }
    if spec.autoscaling.mode != AutoscalingMode::Sluice {
        return Err("spec.autoscaling.mode External cannot be used with spec.placement.mode PerNode: one pod runs on each matching node, so nothing may scale it".into());
    }
    if let Some(max) = spec.max_replicas {
        return Err(format!(
            "spec.maxReplicas ({max}) cannot be used with spec.placement.mode PerNode: one pod runs on each matching node, however many match (narrow spec.placement instead)"
        ));
    }
    Ok(())
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
fn label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && label_name(name)
}

/// A label name or non-empty value.
fn label_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(name.chars().next())
        && edge(name.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> InferenceServiceSpec {
        let mut spec = json!({"model": {"storageUri": "s3://m/model.onnx"}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(spec).unwrap()
    }

    #[test]
    fn one_pod_per_node_refuses_what_cannot_work_and_names_the_fields() {
        let per_node = json!({"mode": "PerNode", "nodeSelector": {"sluice.dev/edge": "true"}});
        let blue_green = json!({"strategy": "BlueGreen"});
        assert_eq!(
            check(&spec(json!({"placement": per_node, "rollout": blue_green}))),
            Ok(())
        );
        let cases = [
            (
                json!({"placement": per_node}),
                "spec.placement.mode PerNode needs spec.rollout.strategy BlueGreen",
            ),
            (
                json!({"placement": per_node,
                    "rollout": {"strategy": "BlueGreen", "route": {"parentRefs": [{"name": "web"}]}}}),
                "spec.rollout.route cannot be used with spec.placement.mode PerNode",
            ),
            (
                json!({"placement": per_node, "rollout": blue_green,
                    "autoscaling": {"mode": "External"}}),
                "spec.autoscaling.mode External cannot be used with spec.placement.mode PerNode",
            ),
            (
                json!({"placement": per_node, "rollout": blue_green, "maxReplicas": 4}),
                "spec.maxReplicas (4) cannot be used with spec.placement.mode PerNode",
            ),
        ];
        for (extra, message) in cases {
            let error = check(&spec(extra.clone())).expect_err(message);
            assert!(error.starts_with(message), "{extra}: {error}");
        }
        // A replica count takes any rollout and scaler.
        assert_eq!(
            check(&spec(json!({"placement": {"nodeSelector": {"zone": "a"}},
                "autoscaling": {"mode": "External"}, "maxReplicas": 4}))),
            Ok(())
        );
    }

    #[test]
    fn node_selector_labels_must_be_labels() {
        for (key, value) in [
            ("sluice.dev/edge", "true"),
            ("node-role.kubernetes.io/edge", ""),
            ("zone", "store_12.a"),
        ] {
            let selector = json!({"placement": {"nodeSelector": {key: value}}});
            assert_eq!(check(&spec(selector)), Ok(()), "{key}={value}");
        }
        for (key, value, field) in [
            ("", "x", "is not a label key"),
            ("Sluice.dev/edge", "x", "is not a label key"),
            ("sluice.dev/", "x", "is not a label key"),
            ("-edge", "x", "is not a label key"),
            ("edge", "yes please", "is not a label value"),
            ("edge", &"x".repeat(64), "is not a label value"),
        ] {
            let selector = json!({"placement": {"nodeSelector": {key: value}}});
            let error = check(&spec(selector)).expect_err(field);
            assert!(
                error.starts_with("spec.placement.nodeSelector") && error.contains(field),
                "{key}={value}: {error}"
            );
        }
    }
}
