//! The `validate` step of a BatchInference: checks what the CRD schema cannot
//! (or an older CRD may not), resolves the model (its own, or the referenced
//! InferenceService's), and returns a typed [`ValidBatch`] that the later steps
//! take. Pure.

use k8s_openapi::api::core::v1::EnvVar;
use kube::ResourceExt;
use serde::Serialize;

use super::cron;
use crate::build::StorageUri;
use crate::crd::{BatchInference, Device, InferenceService, ModelSpec, RuntimeSpec};
use crate::names::{MAX_NAME_LENGTH, RERUN_ANNOTATION, short_hash};
use crate::reconcile::validate::{check_model, short_dns_label};

/// The environment variable that holds the run's name (its Job's), which the
/// output folder ends with.
pub const RUN_ENV: &str = "SLUICE_BATCH_RUN";
/// The environment variable the Job controller sets to a pod's shard.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The most shards a run may have.
pub const MAX_PARALLELISM: i32 = 1000;

/// A BatchInference that passed every check, with what the later steps need
/// worked out once.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidBatch<'a> {
    /// The resource as read from the API server.
    pub batch: &'a BatchInference,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `spec.input`, parsed.
    pub input: StorageUri,
    /// `spec.output`, parsed.
    pub output: StorageUri,
    /// The Job name of the one-time run of this spec, `<name>-<hash>`: a hash
    /// of everything that shapes a run (not `schedule`, `timeZone`, `suspend`
    /// or `historyLimit`) and of the rerun annotation.
    pub run: String,
    /// The model the runs use, or why there is none now.
    pub model: Resolved,
}

/// The model of a BatchInference as the runs use it.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// Everything a run's pod needs.
    Model(Box<ResolvedModel>),
    /// The referenced InferenceService is missing or has no usable model: no
    /// new run can be made (runs made already are kept).
    Unavailable(Invalid),
}

impl Resolved {
    /// The model, when there is one.
    pub fn model(&self) -> Option<&ResolvedModel> {
        match self {
            Self::Model(model) => Some(model),
            Self::Unavailable(_) => None,
        }
    }
}

/// A model with what runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedModel {
    /// Where the model is, its digest and optimization.
    pub model: ModelSpec,
    /// The Secret the model's (and profile's) fetchers read.
    pub credentials_secret: Option<String>,
    /// Image, device, resources, threads and environment (no `batching`).
    pub runtime: RuntimeSpec,
    /// The reference profile, with `inferenceServiceRef` to an
    /// InferenceService with `spec.monitoring`.
    pub profile: Option<Profile>,
    /// The InferenceService it comes from, if any.
    pub inference_service: Option<String>,
}

/// A reference profile to fetch beside the model.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// Its location.
    pub uri: String,
    /// Its expected SHA-256.
    pub sha256: Option<String>,
}

/// Why a BatchInference cannot run as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The spec itself is wrong; the message names the field.
    #[error("{0}")]
    Spec(String),
    /// `spec.inferenceServiceRef` names no InferenceService.
    #[error(
        "spec.inferenceServiceRef: InferenceService {name:?} not found in namespace {namespace}; no run starts until it exists"
    )]
    NotFound {
        /// The name referred to.
        name: String,
        /// The namespace it was looked up in.
        namespace: String,
    },
    /// The referenced InferenceService's model cannot be run.
    #[error("spec.inferenceServiceRef: InferenceService {name:?} cannot be used: {message}")]
    Reference {
        /// The InferenceService.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Invalid {
    /// The condition reason that reports it.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Spec(_) => "InvalidSpec",
            Self::NotFound { .. } => "InferenceServiceNotFound",
            Self::Reference { .. } => "InvalidReference",
        }
    }
}

/// Checks `batch` and resolves its model; `inference_service` is the one
/// `spec.inferenceServiceRef` names, as read (`None` when it names none, or
/// none exists).
pub fn validate<'a>(
    batch: &'a BatchInference,
    inference_service: Option<&InferenceService>,
) -> Result<ValidBatch<'a>, Invalid> {
    let spec = &batch.spec;
    let name = batch.name_any();
    if !short_dns_label(&name) {
        return Err(Invalid::Spec(format!(
            "metadata.name {name:?} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} lowercase letters, digits and '-', starting with a letter, because it names the CronJob and the runs' Jobs (`<name>-<run>` must fit 63)"
        )));
    }
    let namespace = batch
        .namespace()
        .ok_or_else(|| Invalid::Spec("metadata.namespace is missing".into()))?;
    check(batch).map_err(Invalid::Spec)?;
    let input = data_uri("spec.input", &spec.input).map_err(Invalid::Spec)?;
    let output = data_uri("spec.output", &spec.output).map_err(Invalid::Spec)?;
    if inside(&spec.output, &spec.input) {
        return Err(Invalid::Spec(format!(
            "spec.output {:?} is inside spec.input {:?}: the predictions would be read as input by the next run",
            spec.output, spec.input
        )));
    }
    let model = match (&spec.model, &spec.inference_service_ref) {
        (Some(model), None) => {
            check_model(model).map_err(Invalid::Spec)?;
            Resolved::Model(Box::new(ResolvedModel {
                credentials_secret: model
                    .credentials_secret
                    .clone()
                    .or_else(|| spec.credentials_secret.clone()),
                model: model.clone(),
                runtime: spec.runtime.clone(),
                profile: None,
                inference_service: None,
            }))
        }
        (None, Some(reference)) => match inference_service {
            None => Resolved::Unavailable(Invalid::NotFound {
                name: reference.name.clone(),
                namespace: namespace.clone(),
            }),
            Some(isvc) => referenced(isvc, &spec.runtime),
        },
        _ => {
            return Err(Invalid::Spec(
                "set exactly one of spec.model (the model's storageUri) and spec.inferenceServiceRef".into(),
            ));
        }
    };
    if let Some(model) = model.model() {
        check_env(&model.runtime.env).map_err(Invalid::Spec)?;
    }
    Ok(ValidBatch {
        run: run_name(batch),
        batch,
        name,
        namespace,
        input,
        output,
        model,
    })
}

/// The checks of the fields the schema bounds (an older CRD may not), the
/// schedule and the runtime.
fn check(batch: &BatchInference) -> Result<(), String> {
    let spec = &batch.spec;
    if !(1..=MAX_PARALLELISM).contains(&spec.parallelism) {
        return Err(format!(
            "spec.parallelism must be between 1 and {MAX_PARALLELISM} (the shards of a run, one pod each), not {}",
            spec.parallelism
        ));
    }
    if !(0..=20).contains(&spec.retries) {
        return Err(format!(
            "spec.retries must be between 0 and 20, not {}",
            spec.retries
        ));
    }
    if !(1..=100).contains(&spec.history_limit) {
        return Err(format!(
            "spec.historyLimit must be between 1 and 100, not {}",
            spec.history_limit
        ));
    }
    if spec.active_deadline_seconds.is_some_and(|s| s < 1) {
        return Err("spec.activeDeadlineSeconds must be at least 1".into());
    }
    if spec.batch_size == Some(0) || spec.rows_per_part == Some(0) {
        return Err("spec.batchSize and spec.rowsPerPart must be at least 1".into());
    }
    if let Some(ratio) = spec.max_reject_ratio
        && !(0.0..=1.0).contains(&ratio)
    {
        return Err(format!(
            "spec.maxRejectRatio must be between 0 and 1, not {ratio}"
        ));
    }
    if spec.id_column.as_deref().is_some_and(str::is_empty) {
        return Err("spec.idColumn must not be empty".into());
    }
    match (&spec.schedule, &spec.time_zone) {
        (Some(schedule), _) => {
            cron::check(schedule).map_err(|e| format!("spec.schedule {schedule:?}: {e}"))?
        }
        (None, Some(_)) => return Err("spec.timeZone needs spec.schedule".into()),
        (None, None) => {}
    }
    if spec.runtime.batching.is_some() {
        return Err(
            "spec.runtime.batching is for serving; a batch run sets its rows per run with spec.batchSize"
                .into(),
        );
    }
    Ok(())
}

/// The model, runtime and profile of `isvc`, with `own` (the BatchInference's
/// `spec.runtime`) replacing what it sets.
fn referenced(isvc: &InferenceService, own: &RuntimeSpec) -> Resolved {
    let name = isvc.name_any();
    if let Err(message) = check_model(&isvc.spec.model) {
        return Resolved::Unavailable(Invalid::Reference { name, message });
    }
    let mut runtime = isvc.spec.runtime.clone();
    runtime.batching = None;
    if own.image.is_some() {
        runtime.image = own.image.clone();
    }
    if own.resources.is_some() {
        runtime.resources = own.resources.clone();
    }
    if own.threads.is_some() {
        runtime.threads = own.threads;
    }
    if own.device == Device::Cuda {
        runtime.device = Device::Cuda;
    }
    runtime
        .env
        .retain(|e| !own.env.iter().any(|mine| mine.name == e.name));
    runtime.env.extend(own.env.iter().cloned());
    Resolved::Model(Box::new(ResolvedModel {
        credentials_secret: isvc.spec.model.credentials_secret.clone(),
        model: isvc.spec.model.clone(),
        runtime,
        profile: isvc.spec.monitoring.as_ref().map(|m| Profile {
            uri: m.profile_uri.clone(),
            sha256: m.profile_sha256.clone(),
        }),
        inference_service: Some(name),
    }))
}

/// Refuses environment variables the operator sets itself.
fn check_env(env: &[EnvVar]) -> Result<(), String> {
    match env
        .iter()
        .find(|e| [RUN_ENV, INDEX_ENV].contains(&e.name.as_str()))
    {
        Some(e) => Err(format!(
            "spec.runtime.env: {} is set by the operator and the Job controller",
            e.name
        )),
        None => Ok(()),
    }
}

/// `uri` as input or output: `s3://`, `pvc://` or `file://`.
fn data_uri(field: &str, uri: &str) -> Result<StorageUri, String> {
    let parsed = StorageUri::parse(uri).map_err(|e| format!("{field}: {e}"))?;
    match &parsed {
        StorageUri::Remote(remote) if remote.starts_with("http") => Err(format!(
            "{field}: {uri:?}: batch reads and writes s3://, pvc:// or file:// locations, not http(s)://"
        )),
        _ => Ok(parsed),
    }
}

/// Whether `output` is `input` or a folder inside it.
fn inside(output: &str, input: &str) -> bool {
    let folder = |uri: &str| format!("{}/", uri.trim_end_matches('/'));
    folder(output).starts_with(&folder(input))
}

/// The one-time run's Job name: `<name>-<hash>` of what shapes a run.
///
/// The hash covers the spec as stored, defaults included. A field added to the
/// spec later must join it only when set (as `names::revision` does for
/// InferenceService), or every one-time BatchInference would run again after
/// the operator's upgrade.
fn run_name(batch: &BatchInference) -> String {
    #[derive(Serialize)]
    struct RunKey<'a> {
        spec: &'a crate::crd::BatchInferenceSpec,
        rerun: Option<&'a String>,
    }
    let mut spec = batch.spec.clone();
    spec.schedule = None;
    spec.time_zone = None;
    spec.suspend = false;
    spec.history_limit = 0;
    let key = RunKey {
        spec: &spec,
        rerun: batch.annotations().get(RERUN_ANNOTATION),
    };
    let bytes = serde_json::to_vec(&key).expect("a spec and a string always serialize");
    format!("{}-{}", batch.name_any(), short_hash(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn batch(spec: Value) -> BatchInference {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "BatchInference",
            "metadata": {"name": "score", "namespace": "ml"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn base() -> Value {
        json!({
            "model": {"storageUri": "s3://models/fraud/model.onnx"},
            "input": "s3://data/in/",
            "output": "s3://data/out",
        })
    }

    fn with(changes: Value) -> Value {
        let mut spec = base();
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                spec.as_object_mut().unwrap().remove(key);
            } else {
                spec[key] = value.clone();
            }
        }
        spec
    }

    fn isvc(spec: Value) -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "ml"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_bad_spec_is_refused_with_the_field_named() {
        let cases = [
            (
                json!({"parallelism": 0}),
                "spec.parallelism must be between 1 and 1000",
            ),
            (
                json!({"parallelism": 1001}),
                "spec.parallelism must be between 1 and 1000",
            ),
            (json!({"retries": -1}), "spec.retries"),
            (json!({"historyLimit": 0}), "spec.historyLimit"),
            (
                json!({"activeDeadlineSeconds": 0}),
                "spec.activeDeadlineSeconds",
            ),
            (json!({"maxRejectRatio": 1.5}), "spec.maxRejectRatio"),
            (json!({"batchSize": 0}), "spec.batchSize"),
            (json!({"idColumn": ""}), "spec.idColumn"),
            (
                json!({"schedule": "0 25 * * *"}),
                "spec.schedule \"0 25 * * *\": hour field",
            ),
            (json!({"schedule": "every day"}), "expected 5 fields"),
            (
                json!({"timeZone": "Europe/Paris"}),
                "spec.timeZone needs spec.schedule",
            ),
            (
                json!({"input": "https://data/in.csv"}),
                "spec.input: \"https://data/in.csv\": batch reads and writes s3://",
            ),
            (
                json!({"input": "ftp://data/in.csv"}),
                "spec.input: unsupported scheme \"ftp\"",
            ),
            (
                json!({"output": "/data/out"}),
                "spec.output: \"/data/out\" has no scheme",
            ),
            (
                json!({"output": "pvc://claim"}),
                "spec.output: \"pvc://claim\" must be pvc://<claim-name>/<path>",
            ),
            (
                json!({"output": "s3://data/in/preds"}),
                "spec.output \"s3://data/in/preds\" is inside spec.input",
            ),
            (json!({"output": "s3://data/in"}), "is inside spec.input"),
            (json!({"model": null}), "set exactly one of spec.model"),
            (
                json!({"inferenceServiceRef": {"name": "fraud"}}),
                "set exactly one of spec.model",
            ),
            (
                json!({"model": {"storageUri": "gs://m/model.onnx"}}),
                "spec.model.storageUri: unsupported scheme",
            ),
            (
                json!({"model": {"storageUri": "s3://m/model.onnx", "sha256": "ABC"}}),
                "spec.model.sha256",
            ),
            (
                json!({"runtime": {"batching": {"maxBatchSize": 8}}}),
                "spec.runtime.batching is for serving",
            ),
            (
                json!({"runtime": {"env": [{"name": "SLUICE_BATCH_RUN", "value": "x"}]}}),
                "spec.runtime.env: SLUICE_BATCH_RUN is set by the operator",
            ),
            (
                json!({"runtime": {"env": [{"name": "JOB_COMPLETION_INDEX", "value": "0"}]}}),
                "JOB_COMPLETION_INDEX",
            ),
        ];
        for (changes, expected) in cases {
            let b = batch(with(changes.clone()));
            let error = validate(&b, None).unwrap_err();
            assert_eq!(error.reason(), "InvalidSpec", "{changes}");
            assert!(error.to_string().contains(expected), "{changes}: {error}");
        }
        let mut long = batch(base());
        long.metadata.name = Some("a".repeat(53));
        assert!(
            validate(&long, None)
                .unwrap_err()
                .to_string()
                .contains("metadata.name")
        );
    }

    #[test]
    fn a_good_spec_resolves_its_own_model_and_names_its_run() {
        let b = batch(with(json!({
            "credentialsSecret": "s3",
            "input": "pvc://data/in",
            "output": "pvc://data/out",
            "schedule": "@daily",
        })));
        let valid = validate(&b, None).unwrap();
        assert_eq!(
            valid.input,
            StorageUri::Pvc {
                claim: "data".into(),
                path: "in".into()
            }
        );
        let model = valid.model.model().unwrap();
        assert_eq!(model.model.storage_uri, "s3://models/fraud/model.onnx");
        assert_eq!(
            model.credentials_secret.as_deref(),
            Some("s3"),
            "the data's Secret fetches the model too when the model names none"
        );
        assert!(valid.run.starts_with("score-") && valid.run.len() == "score-".len() + 10);
    }

    #[test]
    fn the_run_name_follows_what_shapes_a_run_and_the_rerun_annotation() {
        let run = |spec: Value, rerun: Option<&str>| {
            let mut b = batch(spec);
            if let Some(rerun) = rerun {
                b.metadata.annotations =
                    Some([(RERUN_ANNOTATION.to_string(), rerun.to_string())].into());
            }
            validate(&b, None).unwrap().run
        };
        let first = run(base(), None);
        assert_eq!(first, run(base(), None));
        assert_eq!(
            first,
            run(with(json!({"suspend": true, "historyLimit": 3})), None),
            "suspending or keeping more history is not a new run"
        );
        assert_ne!(first, run(with(json!({"input": "s3://data/other/"})), None));
        assert_ne!(first, run(with(json!({"parallelism": 2})), None));
        assert_ne!(first, run(base(), Some("1")), "a rerun");
        assert_ne!(run(base(), Some("1")), run(base(), Some("2")));
    }

    #[test]
    fn a_reference_reuses_the_inference_services_model_runtime_and_profile() {
        let b = batch(with(json!({
            "model": null,
            "inferenceServiceRef": {"name": "fraud"},
            "credentialsSecret": "data",
            "runtime": {"threads": 2, "env": [{"name": "A", "value": "mine"}]},
        })));
        let missing = validate(&b, None).unwrap();
        let Resolved::Unavailable(why) = &missing.model else {
            panic!("resolved without the InferenceService");
        };
        assert_eq!(why.reason(), "InferenceServiceNotFound");
        assert!(
            why.to_string()
                .contains("InferenceService \"fraud\" not found in namespace ml")
        );

        let served = isvc(json!({
            "model": {"storageUri": "s3://models/fraud/3/model.onnx", "credentialsSecret": "models",
                      "optimize": {"mode": "int8-dynamic"}},
            "runtime": {"device": "cuda", "image": "sluice-server:gpu", "threads": 8,
                        "batching": {"maxBatchSize": 16},
                        "env": [{"name": "A", "value": "theirs"}, {"name": "B", "value": "theirs"}]},
            "monitoring": {"profileUri": "s3://models/fraud/3/profile.json"},
        }));
        let valid = validate(&b, Some(&served)).unwrap();
        let model = valid.model.model().unwrap();
        assert_eq!(model.model.storage_uri, "s3://models/fraud/3/model.onnx");
        assert!(model.model.optimize.is_some());
        assert_eq!(model.credentials_secret.as_deref(), Some("models"));
        assert_eq!(model.runtime.device, Device::Cuda);
        assert_eq!(model.runtime.image.as_deref(), Some("sluice-server:gpu"));
        assert_eq!(
            model.runtime.threads,
            Some(2),
            "the BatchInference's own wins"
        );
        assert_eq!(model.runtime.batching, None);
        let env: Vec<(&str, &str)> = model
            .runtime
            .env
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
            .collect();
        assert_eq!(env, [("B", "theirs"), ("A", "mine")]);
        assert_eq!(
            model.profile.as_ref().unwrap().uri,
            "s3://models/fraud/3/profile.json"
        );
        assert_eq!(model.inference_service.as_deref(), Some("fraud"));
        assert_eq!(
            valid.run, missing.run,
            "the run does not depend on the InferenceService"
        );

        let broken = isvc(json!({"model": {"storageUri": "gs://m/model.onnx"}}));
        let Resolved::Unavailable(why) = validate(&b, Some(&broken)).unwrap().model else {
            panic!("a broken reference resolved");
        };
        assert_eq!(why.reason(), "InvalidReference");
    }
}
