//! The `build` step of the pipeline: turns a validated InferenceService into the
//! objects that serve it. Pure (same input, same output, no I/O), so it is tested
//! from YAML fixtures (`tests/build_fixtures.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::core::DynamicObject;
use serde::Serialize;
use serde_json::json;

pub mod fetch;
pub mod init;
pub mod optimize;
mod placement;
pub mod pod;
pub mod stream;

pub use fetch::StorageUri;
use fetch::{FetchSource, FetchTarget, fetch_container};
pub use init::{PROFILE_DIR, PROFILE_FILE, PROFILE_PVC_MOUNT, PVC_MOUNT};
use pod::{container_security, empty_dir, mount, pod_security, scrape_annotations};

use crate::config::BuildConfig;
use crate::crd::{Device, FeedbackTask, InferenceService, InferenceServiceSpec, StaticDatatype};
use crate::names::{
    APPLIED_HASH_ANNOTATION, GRPC_PORT, HTTP_PORT, ISVC_LABEL, REVISION_LABEL, config_map_name,
    revision, revision_object_name, revision_selector, selector, server_image, short_hash,
};
use crate::resources::{cpu_limit_threads, resources};
use crate::rollout::traffic;
use crate::security;
use crate::workload::Workload;
use crate::{Error, Result};

/// Where model repositories live inside the pod.
pub const MODEL_REPOSITORY: &str = "/models";
/// Where a fallback's `pvc://` claim is mounted (read-only) in its fetcher.
pub const FALLBACK_PVC_MOUNT: &str = "/mnt/fallback-pvc";
/// The fallback model's folder inside the model's folder, as the server's
/// `config.yaml` names it (`fallback.model: fallback/model.onnx`).
pub const FALLBACK_DIR: &str = "fallback";
/// Seconds the server keeps serving after SIGTERM while endpoints are removed.
pub const SHUTDOWN_DELAY_SECONDS: i64 = 5;
/// Seconds in-flight requests may take to finish after the listeners close.
pub const DRAIN_TIMEOUT_SECONDS: i64 = 20;
/// Seconds after which the server asks a client connection to reconnect
/// (`--max-connection-age-seconds`, ±10% per connection). kube-proxy balances
/// connections, not requests, so clients that keep connections open reach a
/// new canary only when they reconnect. At 10 s every busy connection has
/// reconnected, and been spread by kube-proxy, within 11 s of a step's pods
/// being ready, about a third of the default 30 s step and analysis window,
/// and each window then averages about three placements per connection. It
/// costs each client connection one TCP (or TLS) handshake per 10 s.
pub const MAX_CONNECTION_AGE_SECONDS: i64 = 10;
/// Everything that serves one InferenceService, as the operator wants it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// Hash of what defines the serving pods.
    pub revision: String,
    /// In-cluster base URL.
    pub url: String,
    /// The server's `config.yaml`, one immutable ConfigMap per revision.
    pub config_map: ConfigMap,
    /// Pods running `sluice-server` for this revision, `<name>-<revision>`: a
    /// Deployment, or a DaemonSet with `spec.placement.mode: PerNode`.
    #[serde(flatten)]
    pub workload: Workload,
    /// REST and gRPC in front of the ready pods of every revision (or of the
    /// active one during a blue-green rollout); per node, each node's own pods.
    pub service: Service,
    /// REST and gRPC in front of this revision's pods only, `<name>-<revision>`
    /// (blue-green previews, HTTPRoute backends, per-revision checks).
    pub revision_service: Service,
    /// Present when the total replicas allow a disruption (two or more), and
    /// never per node: a budget cannot cap a DaemonSet's unavailable pods (it
    /// has no scale), and a drain leaves them be.
    pub pdb: Option<PodDisruptionBudget>,
    /// Present when `spec.security.allowedSources` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicy>,
    /// The Gateway API HTTPRoute, present with `spec.rollout.route`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<DynamicObject>,
}

/// Where the rollout puts the current spec's revision: its pod count, the total
/// count across revisions and which revision the main Service selects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Pods of the current spec's revision.
    pub replicas: i32,
    /// Serving pods needed in total (the autoscaler's decision, [`crate::autoscale`]).
    pub total: i32,
    /// The only revision the main Service selects; every revision when absent.
    pub active: Option<String>,
    /// With `spec.rollout.route`: each revision's percent of the route's
    /// traffic (none: the current revision takes it all).
    pub route_weights: Vec<(String, i32)>,
}

impl Layout {
    /// The current revision alone at `total` pods.
    pub fn alone(total: i32) -> Self {
        Self {
            replicas: total,
            total,
            active: None,
            route_weights: Vec::new(),
        }
    }
}

/// Builds every object that serves the current spec's revision of `isvc`, placed as
/// `layout` says. Pure: same input, same output.
pub fn build(isvc: &InferenceService, cfg: &BuildConfig, layout: &Layout) -> Result<Desired> {
    let name = isvc
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = isvc
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let owner = isvc
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let revision = revision(&isvc.spec, cfg)?;
    let labels = common_labels(&name);
    let meta = |object_name: String, extra: &[(&str, &str)]| {
        let mut labels = labels.clone();
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ObjectMeta {
            name: Some(object_name),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        }
    };

    let config_map = ConfigMap {
        metadata: meta(
            config_map_name(&name, &revision),
            &[(REVISION_LABEL, &revision)],
        ),
        data: Some(BTreeMap::from([(
            "config.yaml".to_string(),
            server_config(&isvc.spec)?,
        )])),
        immutable: Some(true),
        ..ConfigMap::default()
    };
    let mut workload_meta = meta(
        revision_object_name(&name, &revision),
        &[(REVISION_LABEL, &revision)],
    );
    workload_meta
        .annotations
        .get_or_insert_default()
        .insert(REVISION_LABEL.into(), revision.clone());
    let pods = LabelSelector {
        match_labels: Some(revision_selector(&name, &revision)),
        ..LabelSelector::default()
    };
    let template = pod_template(&name, &namespace, &revision, &isvc.spec, cfg);
    let placement = &isvc.spec.placement;
    let workload = if placement.per_node() {
        Workload::DaemonSet(stamp(DaemonSet {
            metadata: workload_meta,
            spec: Some(placement::daemon_set_spec(pods, template)),
            ..DaemonSet::default()
        })?)
    } else {
        Workload::Deployment(stamp(Deployment {
            metadata: workload_meta,
            spec: Some(deployment_spec(pods, template, layout.replicas)),
            ..Deployment::default()
        })?)
    };
    // Stream workers serve only metrics and probes, on the http port.
    let service_ports: Vec<ServicePort> = [
        Some(service_port("http", HTTP_PORT, "http")),
        isvc.spec
            .streaming
            .is_none()
            .then(|| service_port("grpc", GRPC_PORT, "kubernetes.io/h2c")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let service_for =
        |object_name: String, extra: &[(&str, &str)], selector, traffic_policy| Service {
            metadata: meta(object_name, extra),
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: Some(service_ports.clone()),
                internal_traffic_policy: traffic_policy,
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
    let service = service_for(
        name.clone(),
        &[],
        match &layout.active {
            Some(active) => revision_selector(&name, active),
            None => selector(&name),
        },
        placement::internal_traffic_policy(placement),
    );
    // The revision's own Service reaches its pods from any node (previews,
    // checks).
    let revision_service = service_for(
        revision_object_name(&name, &revision),
        &[(REVISION_LABEL, &revision)],
        revision_selector(&name, &revision),
        None,
    );
    let pdb = (layout.total >= 2 && !placement.per_node()).then(|| PodDisruptionBudget {
        metadata: meta(name.clone(), &[]),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    });

    let network_policy = isvc.spec.security.as_ref().and_then(|security| {
        security::network_policy(
            security,
            meta(name.clone(), &[]),
            selector(&name),
            &[HTTP_PORT, GRPC_PORT],
        )
    });

    let route = isvc.spec.rollout.route.as_ref().map(|route| {
        let weights = match layout.route_weights.as_slice() {
            [] => vec![(revision.clone(), 100)],
            weights => weights.to_vec(),
        };
        let mut object = DynamicObject::new(&name, &traffic::http_route_resource())
            .within(&namespace)
            .data(json!({"spec": traffic::http_route_spec(&name, route, &weights)}));
        object.metadata = meta(name.clone(), &[]);
        object
    });

    Ok(Desired {
        url: format!(
            "http://{name}.{namespace}.svc.{}:{HTTP_PORT}",
            cfg.cluster_domain
        ),
        config_map: stamp(config_map)?,
        workload,
        service: stamp(service)?,
        revision_service: stamp(revision_service)?,
        pdb: pdb.map(stamp).transpose()?,
        network_policy: network_policy.map(stamp).transpose()?,
        route: route.map(stamp).transpose()?,
        revision,
    })
}

fn common_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "sluice-server".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
        ("app.kubernetes.io/component".into(), "predictor".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "sluice-operator".into(),
        ),
        (ISVC_LABEL.into(), name.into()),
    ])
}

/// Records the hash of `object` (without the hash itself) in its annotations,
/// so that `apply` writes it only when it changed.
pub fn stamp<K: Resource + Serialize>(mut object: K) -> Result<K> {
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .remove(APPLIED_HASH_ANNOTATION);
    let hash = short_hash(&serde_json::to_vec(&object)?);
    object
        .meta_mut()
        .annotations
        .get_or_insert_default()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    Ok(object)
}

fn service_port(name: &str, port: i32, app_protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(app_protocol.into()),
        ..ServicePort::default()
    }
}

/// The model server's `config.yaml` (see docs/model-server.md).
fn server_config(spec: &InferenceServiceSpec) -> Result<String> {
    #[derive(Serialize)]
    struct ServerConfig<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        max_batch_size: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_queue_delay_ms: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_queue_size: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        intra_op_threads: Option<u32>,
        device: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback: Option<FallbackConfig<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        circuit_breaker: Option<CircuitBreakerConfig>,
        #[serde(skip_serializing_if = "Option::is_none")]
        monitoring: Option<MonitoringConfig<'a>>,
    }
    #[derive(Serialize)]
    struct MonitoringConfig<'a> {
        profile: String,
        window: u32,
        min_rows: u32,
        interval_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        feedback: Option<FeedbackConfig<'a>>,
    }
    #[derive(Serialize)]
    struct FeedbackConfig<'a> {
        output: &'a str,
        task: FeedbackTask,
        window: u32,
        retention: u32,
    }
    #[derive(Serialize)]
    struct FallbackConfig<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(rename = "static", skip_serializing_if = "Option::is_none")]
        static_outputs: Option<Vec<StaticOutputConfig<'a>>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u32>,
    }
    #[derive(Serialize)]
    struct StaticOutputConfig<'a> {
        name: &'a str,
        datatype: StaticDatatype,
        shape: &'a [i64],
        data: Vec<serde_json::Value>,
    }
    #[derive(Serialize)]
    struct CircuitBreakerConfig {
        #[serde(skip_serializing_if = "Option::is_none")]
        failure_threshold: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        open_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        half_open_probes: Option<u32>,
    }
    let batching = spec.runtime.batching.clone().unwrap_or_default();
    let config = ServerConfig {
        max_batch_size: batching.max_batch_size,
        max_queue_delay_ms: batching.max_queue_delay_ms,
        max_queue_size: batching.max_queue_size,
        intra_op_threads: spec
            .runtime
            .threads
            .or_else(|| cpu_limit_threads(&resources(spec))),
        device: match spec.runtime.device {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        },
        fallback: spec.fallback.as_ref().map(|fallback| FallbackConfig {
            model: fallback
                .model
                .as_ref()
                .map(|_| format!("{FALLBACK_DIR}/model.onnx")),
            static_outputs: fallback.static_outputs.as_ref().map(|outputs| {
                outputs
                    .iter()
                    .map(|output| StaticOutputConfig {
                        name: &output.name,
                        datatype: output.datatype,
                        shape: &output.shape,
                        data: output
                            .data
                            .iter()
                            .map(|&value| output.datatype.json_value(value))
                            .collect(),
                    })
                    .collect()
            }),
            timeout_ms: fallback.timeout_ms,
        }),
        circuit_breaker: spec
            .circuit_breaker
            .as_ref()
            .map(|breaker| CircuitBreakerConfig {
                failure_threshold: breaker.failure_threshold,
                open_ms: breaker.open_seconds.map(|s| u64::from(s) * 1000),
                half_open_probes: breaker.half_open_probes,
            }),
        monitoring: spec.monitoring.as_ref().map(|monitoring| MonitoringConfig {
            profile: format!("{PROFILE_DIR}/{PROFILE_FILE}"),
            window: monitoring.window_rows,
            min_rows: monitoring.min_rows,
            interval_ms: u64::from(monitoring.interval_seconds) * 1000,
            feedback: monitoring.feedback.as_ref().map(|feedback| FeedbackConfig {
                output: &feedback.output,
                task: feedback.task,
                window: feedback.window_rows,
                retention: feedback.retention,
            }),
        }),
    };
    serde_saphyr::to_string(&config).map_err(|e| Error::ConfigYaml(e.to_string()))
}

/// A revision's Deployment: `replicas` pods of `template`, updated in place
/// (for what is not part of the revision) one surge pod at a time.
fn deployment_spec(
    selector: LabelSelector,
    template: PodTemplateSpec,
    replicas: i32,
) -> DeploymentSpec {
    DeploymentSpec {
        replicas: Some(replicas),
        revision_history_limit: Some(1),
        selector,
        strategy: Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }),
        template,
        ..DeploymentSpec::default()
    }
}

/// The serving pod of a revision: fetchers (and the optimizer) as init
/// containers, `sluice-server`, placed as `spec.placement` says.
fn pod_template(
    name: &str,
    namespace: &str,
    revision: &str,
    spec: &InferenceServiceSpec,
    cfg: &BuildConfig,
) -> PodTemplateSpec {
    let mut pod_labels = common_labels(name);
    pod_labels.insert(REVISION_LABEL.into(), revision.into());
    // Stream workers serve no requests: no TLS on their metrics and probes.
    let tls = security::tls_scheme(spec.security.as_ref()).filter(|_| spec.streaming.is_none());
    let mut pod_annotations = scrape_annotations(HTTP_PORT);
    if let Some(scheme) = tls {
        pod_annotations.insert("prometheus.io/scheme".into(), scheme.to_lowercase());
    }
    let version_dir = format!("{MODEL_REPOSITORY}/{name}/1");
    let image = server_image(spec, cfg).to_string();
    let resources = resources(spec);

    let mut volumes = vec![
        empty_dir("model"),
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(name, revision),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        empty_dir("tmp"),
    ];
    let (security_volumes, mut security_mounts) = spec
        .security
        .as_ref()
        .map(security::volumes)
        .unwrap_or_default();
    volumes.extend(security_volumes);
    // An optimized model is fetched aside, and the optimizer writes what the
    // server loads.
    let model_init = init::model(
        &spec.model,
        spec.model.credentials_secret.as_deref(),
        &version_dir,
        spec.runtime.threads,
        &image,
        &resources,
    );
    volumes.extend(model_init.volumes);
    let mut init_containers = model_init.containers;
    let fallback_dir = format!("{MODEL_REPOSITORY}/{name}/{FALLBACK_DIR}");
    let fallback_model = spec.fallback.as_ref().and_then(|f| f.model.as_ref());
    if let Some(model) = fallback_model {
        volumes.push(empty_dir("fallback"));
        let fallback_fetch = fetch_container(
            &FetchTarget {
                container: "fetch-fallback",
                volume: "fallback",
                pvc_volume: "fallback-pvc",
                pvc_mount: FALLBACK_PVC_MOUNT,
                dest: &fallback_dir,
                file_name: None,
            },
            &FetchSource::model(model),
            &image,
            &resources,
        );
        volumes.extend(fallback_fetch.pvc);
        init_containers.push(fallback_fetch.container);
    }
    let profile_dir = format!("{MODEL_REPOSITORY}/{name}/{PROFILE_DIR}");
    if let Some(monitoring) = &spec.monitoring {
        let profile_init = init::profile(
            &monitoring.profile_uri,
            monitoring.profile_sha256.as_deref(),
            spec.model.credentials_secret.as_deref(),
            &profile_dir,
            &image,
            &resources,
        );
        volumes.extend(profile_init.volumes);
        init_containers.extend(profile_init.containers);
    }

    let mut env = vec![
        env_var("SLUICE_ISVC", name),
        env_var("SLUICE_REVISION", revision),
    ];
    // A stream worker serves only its metrics and probes, over plain HTTP.
    let (args, ports, readiness_path) = match &spec.streaming {
        Some(streaming) => {
            let group = streaming.group_or_default(namespace, name);
            env.extend(stream::env(&group));
            if let Some((volume, credentials)) = stream::credentials(streaming) {
                volumes.push(volume);
                security_mounts.push(credentials);
            }
            (
                stream::args(
                    streaming,
                    &group,
                    &format!("{MODEL_REPOSITORY}/{name}"),
                    HTTP_PORT,
                ),
                vec![container_port("http", HTTP_PORT)],
                "/v2/health/ready".to_string(),
            )
        }
        None => (
            server_args(spec),
            vec![
                container_port("http", HTTP_PORT),
                container_port("grpc", GRPC_PORT),
            ],
            format!("/v2/models/{name}/ready"),
        ),
    };
    env.extend(spec.runtime.env.iter().cloned());
    let probe = |path: String, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path),
            port: IntOrString::String("http".into()),
            scheme: tls.map(String::from),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let server = Container {
        name: "server".into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(probe(readiness_path, 5, 3)),
        liveness_probe: Some(probe("/v2/health/live".into(), 10, 3)),
        resources: Some(resources),
        security_context: Some(container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(
            [
                mount("model", &version_dir, true, None),
                mount(
                    "config",
                    &format!("{MODEL_REPOSITORY}/{name}/config.yaml"),
                    true,
                    Some("config.yaml"),
                ),
                mount("tmp", "/tmp", false, None),
            ]
            .into_iter()
            .chain(fallback_model.map(|_| mount("fallback", &fallback_dir, true, None)))
            .chain(
                spec.monitoring
                    .as_ref()
                    .map(|_| mount("profile", &profile_dir, true, None)),
            )
            .chain(security_mounts)
            .collect(),
        ),
        ..Container::default()
    };

    let mut pod = PodSpec {
        init_containers: Some(init_containers),
        containers: vec![server],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(SHUTDOWN_DELAY_SECONDS + DRAIN_TIMEOUT_SECONDS + 5),
        security_context: Some(pod_security()),
        ..PodSpec::default()
    };
    placement::place(&mut pod, &spec.placement);
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    }
}

/// `sluice-server serve`'s arguments: the model repository, the ports, the
/// graceful-shutdown timings and `spec.security`'s flags.
fn server_args(spec: &InferenceServiceSpec) -> Vec<String> {
    [
        "serve",
        "--model-repository",
        MODEL_REPOSITORY,
        "--http-port",
        &HTTP_PORT.to_string(),
        "--grpc-port",
        &GRPC_PORT.to_string(),
        "--shutdown-delay-seconds",
        &SHUTDOWN_DELAY_SECONDS.to_string(),
        "--drain-timeout-seconds",
        &DRAIN_TIMEOUT_SECONDS.to_string(),
        "--max-connection-age-seconds",
        &MAX_CONNECTION_AGE_SECONDS.to_string(),
        "--log-format",
        "json",
    ]
    .map(String::from)
    .into_iter()
    .chain(spec.security.iter().flat_map(security::server_args))
    .collect()
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}
