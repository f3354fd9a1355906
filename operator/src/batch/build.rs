//! The `build` step of a BatchInference: the Job of a one-time run, or the
//! CronJob of a schedule, whose pods run `sluice-server batch` on one shard
//! each. Pure (same input, same output), so it is tested from YAML fixtures
//! (`tests/batch_fixtures.rs`).
//!
//! Each run is an Indexed Job (`completions` = `parallelism` = shards) whose
//! pods never restart in place (`restartPolicy: Never`): a shard that fails,
//! or whose pod is killed or its node lost, is replaced by the Job controller
//! with a new pod, up to `spec.retries` times per shard
//! (`backoffLimitPerIndex`), and only once the old pod has stopped
//! (`podReplacementPolicy: Failed`), so two pods never write one shard's
//! parts at once. The new pod goes on after the shard's last published part
//! (the server's manifest), and every attempt keeps its own termination
//! message, which status reads. Pods evicted, preempted or drained
//! (`DisruptionTarget`) are replaced without counting against the retries.
//! `restartPolicy: OnFailure` would restart the container in the same pod,
//! losing all but the last attempt's message, and the Job's per-shard
//! retries and failure policy need `Never`.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec, PodFailurePolicy,
    PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;

use super::decide::KEEP_FINISHED;
use super::summary::{BATCH_CONTAINER, SUMMARY_PATH};
use super::validate::{INDEX_ENV, RUN_ENV, ResolvedModel, ValidBatch};
use crate::build::pod::{
    container_security, empty_dir, mount, pod_security, scrape_annotations, secret_env,
};
use crate::build::{PROFILE_DIR, PROFILE_FILE, StorageUri, init, stamp};
use crate::config::BuildConfig;
use crate::crd::Device;
use crate::names::{
    JOB_NAME_LABEL, MODEL_ANNOTATION, OUTPUT_ANNOTATION, batch_labels, runtime_image,
};
use crate::resources::{cpu_limit_threads, with_defaults};
use crate::{Error, Result};

/// The model folder `sluice-server batch --model` reads: `1/model.onnx`, and
/// `config.yaml` and `monitoring/profile.json` when there is a profile or a GPU.
pub const MODEL_DIR: &str = "/models/model";
/// Where `pvc://` input and output claims are mounted: `/data/<claim>`.
pub const DATA_DIR: &str = "/data";
/// The port of the batch container's `/metrics` (`sluice_batch_rows_total`).
pub const METRICS_PORT: i32 = 8080;
/// Pod annotation holding the model's `config.yaml`, which a downward API
/// volume turns into the file (no ConfigMap to keep in step with the run).
pub const CONFIG_ANNOTATION: &str = "serving.sluice.dev/model-config";

/// What runs a BatchInference.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Desired {
    /// The Job of the one-time run (created once; Jobs do not change).
    Run(Box<Job>),
    /// The CronJob that makes a run per schedule (applied when it changed).
    Schedule(Box<CronJob>),
}

/// Builds what runs `valid` with `model`. Pure: same input, same output.
pub fn build(valid: &ValidBatch, model: &ResolvedModel, cfg: &BuildConfig) -> Result<Desired> {
    let batch = valid.batch;
    let spec = &batch.spec;
    let owner = batch
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let labels = batch_labels(&valid.name);
    let annotations = BTreeMap::from([
        (
            MODEL_ANNOTATION.to_string(),
            model.model.storage_uri.clone(),
        ),
        (OUTPUT_ANNOTATION.to_string(), spec.output.clone()),
    ]);
    let template = pod_template(valid, model, cfg)?;
    let job_spec = |suspend: Option<bool>| JobSpec {
        completion_mode: Some("Indexed".into()),
        completions: Some(spec.parallelism),
        parallelism: Some(spec.parallelism),
        backoff_limit_per_index: Some(spec.retries),
        pod_failure_policy: Some(PodFailurePolicy {
            rules: vec![PodFailurePolicyRule {
                action: "Ignore".into(),
                on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                    type_: "DisruptionTarget".into(),
                    status: Some("True".into()),
                }]),
                on_exit_codes: None,
            }],
        }),
        pod_replacement_policy: Some("Failed".into()),
        active_deadline_seconds: spec.active_deadline_seconds,
        suspend,
        template: template.clone(),
        ..JobSpec::default()
    };
    let meta = |name: &str, annotations: Option<BTreeMap<String, String>>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(valid.namespace.clone()),
        labels: Some(labels.clone()),
        annotations,
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    };
    Ok(match &spec.schedule {
        None => Desired::Run(Box::new(Job {
            metadata: meta(&valid.run, Some(annotations)),
            spec: Some(job_spec(Some(spec.suspend))),
            status: None,
        })),
        Some(schedule) => Desired::Schedule(Box::new(stamp(CronJob {
            metadata: meta(&valid.name, None),
            spec: Some(CronJobSpec {
                schedule: schedule.trim().to_string(),
                time_zone: spec.time_zone.clone(),
                suspend: Some(spec.suspend),
                concurrency_policy: Some("Forbid".into()),
                successful_jobs_history_limit: Some(KEEP_FINISHED),
                failed_jobs_history_limit: Some(KEEP_FINISHED),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(job_spec(None)),
                },
                starting_deadline_seconds: None,
            }),
            status: None,
        })?)),
    })
}

/// A shard's pod: the model's fetch (and optimizer, and profile fetch) as init
/// containers, then `sluice-server batch` on shard `$(JOB_COMPLETION_INDEX)`.
fn pod_template(
    valid: &ValidBatch,
    model: &ResolvedModel,
    cfg: &BuildConfig,
) -> Result<PodTemplateSpec> {
    let runtime = &model.runtime;
    let image = runtime_image(runtime, cfg).to_string();
    let resources = with_defaults(runtime.resources.as_ref(), runtime.device);
    let threads = runtime.threads.or_else(|| cpu_limit_threads(&resources));
    let version_dir = format!("{MODEL_DIR}/1");
    let credentials = model.credentials_secret.as_deref();

    let mut volumes = vec![empty_dir("model"), empty_dir("tmp")];
    let model_init = init::model(
        &model.model,
        credentials,
        &version_dir,
        runtime.threads,
        &image,
        &resources,
    );
    volumes.extend(model_init.volumes);
    let mut init_containers = model_init.containers;
    let mut mounts = vec![
        mount("model", &version_dir, true, None),
        mount("tmp", "/tmp", false, None),
    ];
    let profile_dir = format!("{MODEL_DIR}/{PROFILE_DIR}");
    if let Some(profile) = &model.profile {
        let profile_init = init::profile(
            &profile.uri,
            profile.sha256.as_deref(),
            credentials,
            &profile_dir,
            &image,
            &resources,
        );
        volumes.extend(profile_init.volumes);
        init_containers.extend(profile_init.containers);
        mounts.push(mount("profile", &profile_dir, true, None));
    }
    let mut annotations = scrape_annotations(METRICS_PORT);
    if let Some(config) = model_config(runtime.device, model.profile.is_some())? {
        annotations.insert(CONFIG_ANNOTATION.into(), config);
        volumes.push(Volume {
            name: "config".into(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![DownwardAPIVolumeFile {
                    path: "config.yaml".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: format!("metadata.annotations['{CONFIG_ANNOTATION}']"),
                        ..ObjectFieldSelector::default()
                    }),
                    ..DownwardAPIVolumeFile::default()
                }]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount(
            "config",
            &format!("{MODEL_DIR}/config.yaml"),
            true,
            Some("config.yaml"),
        ));
    }
    let data = data(&valid.input, &valid.output);
    volumes.extend(data.volumes);
    mounts.extend(data.mounts);

    let mut env = vec![EnvVar {
        name: RUN_ENV.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: format!("metadata.labels['{JOB_NAME_LABEL}']"),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    env.extend(runtime.env.iter().cloned());
    let batch = Container {
        name: BATCH_CONTAINER.into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args(valid, &data.input, &data.output, threads)),
        env: Some(env),
        env_from: valid
            .batch
            .spec
            .credentials_secret
            .as_deref()
            .map(secret_env),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources),
        security_context: Some(container_security()),
        termination_message_path: Some(SUMMARY_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(batch_labels(&valid.name)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: Some(init_containers),
            containers: vec![batch],
            volumes: Some(volumes),
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(pod_security()),
            ..PodSpec::default()
        }),
    })
}

/// The `sluice-server batch` arguments, in the order its `--help` lists them.
/// What the user wrote is escaped (`$` as `$$`), so that only the operator's
/// `$(SLUICE_BATCH_RUN)` and `$(JOB_COMPLETION_INDEX)` are expanded.
fn args(valid: &ValidBatch, input: &str, output: &str, threads: Option<u32>) -> Vec<String> {
    let spec = &valid.batch.spec;
    let escape = |text: &str| text.replace('$', "$$");
    let mut args: Vec<String> = vec![
        "batch".into(),
        "--model".into(),
        MODEL_DIR.into(),
        "--input".into(),
        escape(input),
        "--output".into(),
        format!("{}/$({RUN_ENV})", escape(output.trim_end_matches('/'))),
    ];
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    if let Some(format) = spec.format {
        flag("format", format.as_arg().into());
    }
    if let Some(format) = spec.output_format {
        flag("output-format", format.as_arg().into());
    }
    if let Some(size) = spec.batch_size {
        flag("batch-size", size.to_string());
    }
    flag("shard", format!("$({INDEX_ENV})"));
    flag("shards", spec.parallelism.to_string());
    if let Some(column) = &spec.id_column {
        flag("id-column", escape(column));
    }
    if let Some(rows) = spec.rows_per_part {
        flag("rows-per-part", rows.to_string());
    }
    if let Some(ratio) = spec.max_reject_ratio {
        flag("max-reject-ratio", ratio.to_string());
    }
    if let Some(threads) = threads {
        flag("threads", threads.to_string());
    }
    flag("summary-file", SUMMARY_PATH.into());
    flag("metrics-address", format!("0.0.0.0:{METRICS_PORT}"));
    args
}

/// The model's `config.yaml`, when it has something to say: the device (with a
/// GPU) and the reference profile.
fn model_config(device: Device, profile: bool) -> Result<Option<String>> {
    #[derive(Serialize)]
    struct Config {
        device: Device,
        #[serde(skip_serializing_if = "Option::is_none")]
        monitoring: Option<Monitoring>,
    }
    #[derive(Serialize)]
    struct Monitoring {
        profile: String,
    }
    if device == Device::Cpu && !profile {
        return Ok(None);
    }
    let config = Config {
        device,
        monitoring: profile.then(|| Monitoring {
            profile: format!("{PROFILE_DIR}/{PROFILE_FILE}"),
        }),
    };
    serde_saphyr::to_string(&config)
        .map(Some)
        .map_err(|e| Error::ConfigYaml(e.to_string()))
}

/// The claims of `pvc://` input and output, mounted at `/data/<claim>` (one
/// volume per claim, read-only unless the output is on it), and the paths
/// the server is given.
struct Data {
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    input: String,
    output: String,
}

fn data(input: &StorageUri, output: &StorageUri) -> Data {
    let mut claims: Vec<(&str, bool)> = Vec::new();
    for (uri, writes) in [(input, false), (output, true)] {
        if let StorageUri::Pvc { claim, .. } = uri {
            match claims.iter_mut().find(|(c, _)| c == claim) {
                Some((_, writable)) => *writable |= writes,
                None => claims.push((claim, writes)),
            }
        }
    }
    let local = |uri: &StorageUri| match uri {
        StorageUri::Remote(uri) => uri.clone(),
        StorageUri::Pvc { claim, path } => format!("{DATA_DIR}/{claim}/{path}"),
    };
    Data {
        volumes: claims
            .iter()
            .enumerate()
            .map(|(index, (claim, writable))| Volume {
                name: format!("data-{index}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.to_string(),
                    read_only: (!writable).then_some(true),
                }),
                ..Volume::default()
            })
            .collect(),
        mounts: claims
            .iter()
            .enumerate()
            .map(|(index, (claim, writable))| {
                mount(
                    &format!("data-{index}"),
                    &format!("{DATA_DIR}/{claim}"),
                    !writable,
                    None,
                )
            })
            .collect(),
        input: local(input),
        output: local(output),
    }
}
