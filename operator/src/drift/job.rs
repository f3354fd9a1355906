//! The retraining Job: `spec.monitoring.onDrift.jobTemplate` checked, and the Job
//! built from it for one drift episode. Pure.

use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::decision::Launch;
use crate::crd::{InferenceService, OnDriftSpec};
use crate::names::retraining_labels;

/// The template as a typed Job template, or what is wrong with it (the message
/// names the field).
pub fn template(on_drift: &OnDriftSpec) -> Result<JobTemplateSpec, String> {
    const FIELD: &str = "spec.monitoring.onDrift.jobTemplate";
    let template: JobTemplateSpec = serde_json::from_value(on_drift.job_template.clone())
        .map_err(|e| format!("{FIELD} is not a Job template: {e}"))?;
    let pod = template
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| {
            format!("{FIELD}.spec.template.spec is missing: it is the retraining pod")
        })?;
    if pod.containers.is_empty() {
        return Err(format!(
            "{FIELD}.spec.template.spec.containers is empty: name at least one container"
        ));
    }
    for (index, container) in pod.containers.iter().enumerate() {
        if container.image.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "{FIELD}.spec.template.spec.containers[{index}].image is missing"
            ));
        }
    }
    match pod.restart_policy.as_deref() {
        Some("Never" | "OnFailure") => Ok(template),
        other => Err(format!(
            "{FIELD}.spec.template.spec.restartPolicy must be Never or OnFailure (a Job's pods end), not {}",
            other.unwrap_or("unset (Always)")
        )),
    }
}

/// The Job `launch` asks for, for `isvc` (its owner: deleting the
/// InferenceService deletes its Jobs). Its containers get the facts of the drift
/// as environment variables, which replace any of the same name in the template.
pub fn build(isvc: &InferenceService, launch: &Launch) -> Result<Job, String> {
    let name = isvc.name_any();
    let namespace = isvc
        .namespace()
        .ok_or("the InferenceService has no namespace")?;
    let owner = isvc
        .controller_owner_ref(&())
        .ok_or("the InferenceService has no uid")?;
    let monitoring = isvc
        .spec
        .monitoring
        .as_ref()
        .ok_or("spec.monitoring is not set")?;
    let on_drift = monitoring
        .on_drift
        .as_ref()
        .ok_or("spec.monitoring.onDrift is not set")?;
    let template = template(on_drift)?;
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.extend(retraining_labels(&name));
    let mut spec = template.spec.unwrap_or_default();
    let facts = [
        ("SLUICE_ISVC", name.as_str()),
        ("SLUICE_NAMESPACE", namespace.as_str()),
        ("SLUICE_REVISION", launch.revision.as_str()),
        ("SLUICE_DRIFT_FEATURES", &launch.features.join(",")),
        ("SLUICE_MODEL_URI", &isvc.spec.model.storage_uri),
        ("SLUICE_PROFILE_URI", &monitoring.profile_uri),
    ];
    for container in spec
        .template
        .spec
        .iter_mut()
        .flat_map(|pod| pod.containers.iter_mut())
    {
        let env = container.env.get_or_insert_default();
        env.retain(|e| !facts.iter().any(|(name, _)| e.name == *name));
        env.extend(facts.iter().map(|(name, value)| EnvVar {
            name: name.to_string(),
            value: Some(value.to_string()),
            ..EnvVar::default()
        }));
    }
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(launch.name.clone()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: template.metadata.and_then(|m| m.annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn on_drift(template: serde_json::Value) -> OnDriftSpec {
        serde_json::from_value(json!({"jobTemplate": template})).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "metadata": {"labels": {"team": "fraud"}, "annotations": {"owner": "ml"}},
            "spec": {"backoffLimit": 1, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "train", "image": "registry.example/train:1",
                                "env": [{"name": "SLUICE_REVISION", "value": "mine"},
                                        {"name": "EPOCHS", "value": "3"}]}]}}}
        })
    }

    #[test]
    fn each_mistake_in_the_template_names_its_field() {
        assert!(template(&on_drift(good())).is_ok());
        let cases = [
            (json!({"spec": "x"}), "is not a Job template"),
            (
                json!({"spec": {"template": {}}}),
                "spec.template.spec is missing",
            ),
            (
                json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": []}}}}),
                "containers is empty",
            ),
            (
                json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "a"}]}}}}),
                "containers[0].image is missing",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i"}]}}}}),
                "restartPolicy must be Never or OnFailure (a Job's pods end), not unset (Always)",
            ),
        ];
        for (bad, expected) in cases {
            let error = template(&on_drift(bad.clone())).unwrap_err();
            assert!(
                error.starts_with("spec.monitoring.onDrift.jobTemplate")
                    && error.contains(expected),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn the_job_keeps_the_template_and_tells_its_containers_the_drift() {
        let isvc: InferenceService = serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {"storageUri": "s3://m/model.onnx"},
                "monitoring": {"profileUri": "s3://m/profile.json", "onDrift": {"jobTemplate": good()}},
            },
        }))
        .unwrap();
        let launch = Launch {
            name: "fraud-retrain-1764000000".into(),
            revision: "abc".into(),
            features: vec!["amount".into(), "age".into()],
        };
        let job = build(&isvc, &launch).unwrap();
        let meta = &job.metadata;
        assert_eq!(meta.name.as_deref(), Some("fraud-retrain-1764000000"));
        assert_eq!(meta.namespace.as_deref(), Some("ml"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "fraud");
        assert_eq!(labels["app.kubernetes.io/component"], "retraining");
        assert_eq!(labels["serving.sluice.dev/inferenceservice"], "fraud");
        assert_eq!(meta.annotations.as_ref().unwrap()["owner"], "ml");
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "u1");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        let env: Vec<(String, String)> = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        let value = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(value("EPOCHS"), Some("3"));
        assert_eq!(
            value("SLUICE_REVISION"),
            Some("abc"),
            "the operator's facts win"
        );
        assert_eq!(
            env.iter().filter(|(n, _)| n == "SLUICE_REVISION").count(),
            1
        );
        assert_eq!(value("SLUICE_DRIFT_FEATURES"), Some("amount,age"));
        assert_eq!(value("SLUICE_MODEL_URI"), Some("s3://m/model.onnx"));
        assert_eq!(value("SLUICE_PROFILE_URI"), Some("s3://m/profile.json"));
        assert_eq!(value("SLUICE_NAMESPACE"), Some("ml"));
    }
}
