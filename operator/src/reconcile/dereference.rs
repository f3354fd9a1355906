//! The `dereference` step: every read of one reconcile, from the API server (the
//! InferenceService itself, fresh, and the objects and pods it owns) and from
//! Prometheus (the autoscaler's signals and, when one is due, the rollout's
//! analysis). The steps after it decide from what it returns and read nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, Resource, ResourceExt};

use super::context::Context;
use crate::autoscale::{self, decision::Signals};
use crate::crd::rollout::{RolloutStatus, Strategy};
use crate::crd::{InferenceService, JobOutcome, ServingPolicy};
use crate::drift::decision::{ObservedJob, Reading};
use crate::drift::prometheus as drift_prometheus;
use crate::names::{HTTP_PORT, retraining_labels, revision, selector_string};
use crate::policy;
use crate::rollout::analysis::{self, Analysis, Target};
use crate::rollout::{control, machine, prometheus, traffic};
use crate::status::{self, Endpoints};
use crate::workload::Workload;
use crate::{Error, Result};

/// What the cluster and Prometheus hold for one InferenceService.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The InferenceService as the API server has it now.
    pub isvc: InferenceService,
    /// The objects it owns.
    pub objects: Objects,
    /// The autoscaler's signals; `None` when the operator has no Prometheus or does
    /// not scale this InferenceService (mode `External`).
    pub signals: Option<Signals>,
    /// The rollout's analysis, when one was due.
    pub analysis: Option<Analysis>,
    /// With `spec.monitoring`: the stable revision's drift and the newest
    /// retraining Job.
    pub drift: Option<DriftObserved>,
}

/// What drift monitoring reads.
#[derive(Clone, Debug)]
pub struct DriftObserved {
    /// The stable revision's drift; `None` before there is a stable revision.
    pub reading: Option<Reading>,
    /// The newest retraining Job the InferenceService owns.
    pub newest_job: Option<ObservedJob>,
}

/// The objects an InferenceService owns.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// The Deployments and DaemonSets of every revision.
    pub workloads: Vec<Workload>,
    /// The main Service and the per-revision ones.
    pub services: Vec<Service>,
    /// The PodDisruptionBudget.
    pub pdb: Option<PodDisruptionBudget>,
    /// The NetworkPolicy.
    pub network_policy: Option<NetworkPolicy>,
    /// `config.yaml` ConfigMaps of every revision still around.
    pub config_maps: Vec<ConfigMap>,
    /// Serving pods of every revision.
    pub pods: Vec<Pod>,
    /// The HTTPRoute named like the InferenceService, if any (it is the
    /// operator's only when owned: [`owned_by`]).
    pub route: Option<DynamicObject>,
    /// The main Service's endpoints: what kube-proxy routes to, so Ready
    /// waits for one.
    pub endpoints: Endpoints,
}

impl Objects {
    /// Ready pods per revision.
    pub fn ready(&self) -> BTreeMap<String, i32> {
        let mut ready = BTreeMap::new();
        for w in &self.workloads {
            if let Some(revision) = w.revision() {
                *ready.entry(revision.to_string()).or_default() += w.ready_pods();
            }
        }
        ready
    }

    /// The replica count in force: every revision runs at most the total (a canary
    /// less, a blue-green preview as much), so the largest Deployment carries it.
    pub fn running(&self) -> Option<i32> {
        self.workloads
            .iter()
            .filter_map(|w| w.deployment()?.spec.as_ref()?.replicas)
            .max()
    }

    /// The nodes that `revision`'s DaemonSet matches, else those of another
    /// revision's (the same placement, until the new one is counted); `None`
    /// before any DaemonSet was counted.
    pub fn matching_nodes(&self, revision: &str) -> Option<i32> {
        let own = self
            .workloads
            .iter()
            .filter(|w| w.revision() == Some(revision))
            .find_map(Workload::matching_nodes);
        own.or_else(|| {
            self.workloads
                .iter()
                .filter_map(Workload::matching_nodes)
                .max()
        })
    }
}

/// Reads everything one reconcile of `cached` needs; `None` when it is gone.
/// The namespace's ServingPolicy defaults ([`policy::apply`]) and a rollback in
/// force ([`control::in_force`]) are applied to the spec read.
///
/// The InferenceService is read fresh: the rollout decides from its status, and the
/// watch cache may not have seen this operator's last status write yet, so a
/// decision taken from it would repeat a step (or a rollback) that already happened.
pub async fn dereference(
    cached: &InferenceService,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<Observed>> {
    let namespace = namespace(cached)?;
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(isvc) = api.get_opt(&cached.name_any()).await? else {
        return Ok(None);
    };
    let policy = if ctx.scope.applies_serving_policies() {
        serving_policy(&namespace, &ctx.client).await?
    } else {
        None
    };
    let isvc = policy::apply(isvc, policy.as_ref());
    let isvc = control::in_force(isvc, &ctx.config)?;
    let mut objects = objects(&isvc, &ctx.client).await?;
    // Until Ready, ask kube-proxy itself whether the Service is routed yet.
    let ready = isvc.status.as_ref().is_some_and(status::is_ready);
    if objects.endpoints.ready > 0
        && !ready
        && let Some(service) = main_service(&objects.services, &isvc)
    {
        objects.endpoints.routed = routed(service).await;
    }
    let signals = match (&ctx.prometheus, autoscale::queries(&isvc, &objects.pods)) {
        (Some(client), Some(queries)) => Some(autoscale::signals::read(client, &queries).await),
        _ => None,
    };
    let analysis = match due_analysis(&isvc, ctx, now)? {
        Some(plan) => Some(prometheus::run(ctx.prometheus.as_ref(), &plan).await),
        None => None,
    };
    let drift = drift(&isvc, ctx).await?;
    Ok(Some(Observed {
        isvc,
        objects,
        signals,
        analysis,
        drift,
    }))
}

/// The ServingPolicy that `namespace` selects ([`policy::selected`]), if it
/// exists; none as well where its CRD is not installed.
async fn serving_policy(namespace: &str, client: &Client) -> Result<Option<ServingPolicy>> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels = namespaces
        .get_opt(namespace)
        .await?
        .map(|n| n.metadata.labels);
    let name = policy::selected(labels.flatten().as_ref()).to_string();
    match Api::<ServingPolicy>::all(client.clone())
        .get_opt(&name)
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        other => Ok(other?),
    }
}

/// The stable revision's drift and the newest retraining Job, for an
/// InferenceService with `spec.monitoring`. Jobs are listed only when it has a
/// retraining hook or had a Job.
async fn drift(isvc: &InferenceService, ctx: &Context) -> Result<Option<DriftObserved>> {
    let Some(monitoring) = &isvc.spec.monitoring else {
        return Ok(None);
    };
    let namespace = namespace(isvc)?;
    let name = isvc.name_any();
    let status = isvc.status.as_ref();
    let reading = match status.and_then(|s| s.stable_revision.as_deref()) {
        Some(stable) => {
            let queries = drift_prometheus::queries(&namespace, &name, stable);
            Some(drift_prometheus::read(ctx.prometheus.as_ref(), &queries).await)
        }
        None => None,
    };
    let had_job = status
        .and_then(|s| s.drift.as_ref())
        .is_some_and(|d| d.retraining.is_some());
    let newest_job = if monitoring.on_drift.is_some() || had_job {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        let selector = retraining_labels(&name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let listed = jobs.list(&ListParams::default().labels(&selector)).await?;
        owned(listed.items, isvc)
            .iter()
            .filter_map(observed_job)
            .max_by_key(|job| job.created)
    } else {
        None
    };
    Ok(Some(DriftObserved {
        reading,
        newest_job,
    }))
}

/// A Job's name, creation time and outcome.
fn observed_job(job: &Job) -> Option<ObservedJob> {
    let condition = |type_: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
    };
    let outcome = if condition("Complete") {
        JobOutcome::Succeeded
    } else if condition("Failed") {
        JobOutcome::Failed
    } else {
        JobOutcome::Running
    };
    Some(ObservedJob {
        name: job.metadata.name.clone()?,
        created: job.metadata.creation_timestamp.as_ref()?.0,
        outcome,
    })
}

/// The analysis plan when the rollout in `status.rollout` is due for one. A pending
/// manual command decides this round instead.
fn due_analysis(
    isvc: &InferenceService,
    ctx: &Context,
    now: Timestamp,
) -> Result<Option<analysis::Plan>> {
    let Some(rollout) = isvc.status.as_ref().and_then(|s| s.rollout.as_ref()) else {
        return Ok(None);
    };
    let desired = revision(&isvc.spec, &ctx.config)?;
    let commanded = isvc.annotations().contains_key(control::ANNOTATION);
    if commanded || !machine::analysis_due(&isvc.spec.rollout, Some(rollout), &desired, now) {
        return Ok(None);
    }
    let namespace = namespace(isvc)?;
    let name = isvc.name_any();
    Ok(Some(analysis::plan(
        &isvc.spec.rollout.analysis,
        &Target {
            isvc: &name,
            namespace: &namespace,
            revision: &rollout.revision,
            stable: rollout.stable.as_deref().unwrap_or_default(),
            stable_offset_seconds: stable_offset_seconds(rollout, now),
            role: match rollout.strategy {
                Strategy::Canary => "canary",
                Strategy::BlueGreen => "preview",
            },
            streaming: isvc.spec.streaming.is_some(),
        },
        isvc.spec
            .monitoring
            .as_ref()
            .and_then(|m| m.feedback.as_ref())
            .map(|f| f.task),
    )))
}

/// After a blue-green promotion the stable revision's pods are gone; its latency is
/// read from before the switch, this many seconds back.
fn stable_offset_seconds(rollout: &RolloutStatus, now: Timestamp) -> Option<u64> {
    if rollout.strategy != Strategy::BlueGreen || rollout.step != machine::BG_POST_PROMOTION {
        return None;
    }
    let started = rollout.step_started.as_ref()?;
    Some(now.duration_since(started.0).as_secs().max(0) as u64)
}

/// Reads the objects and serving pods `isvc` owns.
pub async fn objects(isvc: &InferenceService, client: &Client) -> Result<Objects> {
    let namespace = namespace(isvc)?;
    let name = isvc.name_any();
    let labelled = ListParams::default().labels(&selector_string(&name));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let network_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let endpoint_slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &traffic::http_route_resource());
    let of_main_service = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name}"));
    let (deployments, daemon_sets, services, pdb, network_policy, config_maps, pods, slices, route) =
        futures::try_join!(
            deployments.list(&labelled),
            daemon_sets.list(&labelled),
            services.list(&labelled),
            pdbs.get_opt(&name),
            network_policies.get_opt(&name),
            config_maps.list(&labelled),
            pods.list(&labelled),
            endpoint_slices.list(&of_main_service),
            http_route(&routes, &name),
        )?;
    let isvc_services = owned(services.items, isvc);
    Ok(Objects {
        endpoints: endpoints(&isvc_services, &slices.items, &pods.items, isvc),
        workloads: owned(deployments.items, isvc)
            .into_iter()
            .map(Workload::Deployment)
            .chain(
                owned(daemon_sets.items, isvc)
                    .into_iter()
                    .map(Workload::DaemonSet),
            )
            .collect(),
        services: isvc_services,
        pdb: pdb.filter(|p| owned_by(p, isvc)),
        network_policy: network_policy.filter(|p| owned_by(p, isvc)),
        config_maps: owned(config_maps.items, isvc),
        pods: pods.items,
        route,
    })
}

/// The HTTPRoute `name`; none as well where the Gateway API is not installed.
async fn http_route(
    routes: &Api<DynamicObject>,
    name: &str,
) -> kube::Result<Option<DynamicObject>> {
    match routes.get_opt(name).await {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        other => other,
    }
}

/// The label by which an EndpointSlice names its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The ready endpoints of the main Service that are pods of this
/// InferenceService, and when its slices were last written. Only the slices
/// the Service owns count (not a deleted namesake's), and only pods created
/// since the InferenceService was (not those of a deleted namesake, which
/// carry the same labels until they are gone).
fn endpoints(
    services: &[Service],
    slices: &[EndpointSlice],
    pods: &[Pod],
    isvc: &InferenceService,
) -> Endpoints {
    let Some(service_uid) = main_service(services, isvc).and_then(|s| s.metadata.uid.as_deref())
    else {
        return Endpoints::default();
    };
    let created = isvc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let current: Vec<&str> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0) >= created)
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    let slices: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|slice| {
            slice
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == service_uid)
        })
        .collect();
    let ready = slices
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter(|e| {
            e.target_ref
                .as_ref()
                .and_then(|r| r.uid.as_deref())
                .is_some_and(|uid| current.contains(&uid))
        })
        .count();
    // A slice's last write: its newest managed-fields entry, else its creation.
    let changed = slices
        .iter()
        .filter_map(|slice| {
            let meta = &slice.metadata;
            meta.managed_fields
                .iter()
                .flatten()
                .filter_map(|m| m.time.as_ref())
                .chain(meta.creation_timestamp.as_ref())
                .map(|t| t.0)
                .max()
        })
        .max();
    Endpoints {
        ready,
        changed,
        routed: None,
    }
}

/// The InferenceService's main Service (named like it) among `services`.
fn main_service<'a>(services: &'a [Service], isvc: &InferenceService) -> Option<&'a Service> {
    let name = isvc.metadata.name.as_deref()?;
    services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
}

/// How long the ClusterIP probe waits for an answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// Whether kube-proxy routes `service`'s ClusterIP (HTTP port) from here: a TCP
/// connection that opens (`Some(true)`) or is refused (`Some(false)`: the rule
/// that rejects a Service without endpoints is still in place), else `None`
/// (no route from where the operator runs, a policy that drops it, a timeout).
async fn routed(service: &Service) -> Option<bool> {
    let ip: std::net::IpAddr = service.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()?;
    let connect = tokio::net::TcpStream::connect((ip, HTTP_PORT as u16));
    match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(false),
        _ => None,
    }
}

/// `metadata.namespace`, which every namespaced object has.
pub fn namespace(isvc: &InferenceService) -> Result<String> {
    isvc.namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))
}

fn owned<K: Resource>(items: Vec<K>, isvc: &InferenceService) -> Vec<K> {
    items.into_iter().filter(|o| owned_by(o, isvc)).collect()
}

/// Whether `owner` (an InferenceService, a BatchInference) is the controller
/// owner of `object`.
pub fn owned_by<K: Resource, O: Resource>(object: &K, owner: &O) -> bool {
    let uid = owner.meta().uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true))
}
