//! One reconcile of one InferenceService:
//! `dereference -> validate -> build -> apply -> update_status`.
//!
//! Only `dereference` (reads), `apply` and `update_status` (writes) talk to the API
//! server; `validate`, `build` and the status computation are pure. A reconcile that
//! finds nothing to change writes nothing: applied objects carry the hash of what was
//! applied, status is written only when it differs, and Events mark transitions only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{info, warn};

use crate::autoscale;
use crate::build::{self, APPLIED_HASH_ANNOTATION, Desired, Layout, REVISION_LABEL, applied_hash};
use crate::config::BuildConfig;
use crate::crd::InferenceService;
use crate::metrics::Metrics;
use crate::rollout::analysis::{self, Target};
use crate::rollout::control::{self, Command};
use crate::rollout::machine::{self, Decision, Input};
use crate::rollout::{prometheus, traffic};
use crate::status::{self, Outcome, RolloutView};
use crate::{Error, Result};

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";
/// Finalizer that deletes an InferenceService's objects before it goes away.
pub const FINALIZER: &str = "serving.sluice.dev/cleanup";

/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Defaults for built objects.
    pub config: BuildConfig,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Who publishes: rollout Events go through a fresh Recorder each, because a
    /// shared one folds Events of one reason into a series that keeps the first
    /// message, and every analysis must say its own values.
    pub reporter: Reporter,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Prometheus, for rollout analysis and the autoscaler; without it rollouts
    /// hold at their first analysis (never promote) until promoted by hand, and
    /// the replica count holds.
    pub prometheus: Option<prometheus_http_query::Client>,
}

/// What the cluster holds for one InferenceService.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The Deployments of every revision.
    pub deployments: Vec<Deployment>,
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
}

impl Observed {
    /// Ready pods per revision.
    pub fn ready(&self) -> BTreeMap<String, i32> {
        let mut ready = BTreeMap::new();
        for d in &self.deployments {
            if let Some(revision) = d.labels().get(REVISION_LABEL) {
                *ready.entry(revision.clone()).or_default() += status::ready_pods(d);
            }
        }
        ready
    }
}

/// Reconciles one InferenceService, behind the cleanup finalizer.
pub async fn reconcile(isvc: Arc<InferenceService>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let _timer = ctx.metrics.duration.start_timer();
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, isvc, |event| async {
        match event {
            Finalized::Apply(isvc) => serve(&isvc, &ctx).await,
            Finalized::Cleanup(isvc) => cleanup(&isvc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn serve(cached: &InferenceService, ctx: &Context) -> Result<Action> {
    // The rollout decides from status, so read it fresh: the watch cache may not
    // have seen this operator's last status write yet, and a decision taken from an
    // older status would repeat a step (or a rollback) that already happened.
    let api: Api<InferenceService> = Api::namespaced(
        ctx.client.clone(),
        &cached
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?,
    );
    let Some(fresh) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let isvc = &fresh;
    let observed = dereference(isvc, &ctx.client).await?;
    if let Err(message) = build::validate(isvc) {
        let outcome = Outcome::Refused {
            reason: "InvalidSpec",
            message,
        };
        update_status(isvc, &outcome, &observed, ctx).await?;
        return Ok(Action::await_change());
    }
    let command = match isvc.annotations().get(control::ANNOTATION) {
        None => None,
        Some(value) => match Command::parse(value) {
            Ok(command) => Some(command),
            Err(message) => {
                publish(ctx, isvc, EventType::Warning, "InvalidCommand", message).await;
                clear_command(isvc, ctx).await?;
                None
            }
        },
    };
    if command == Some(Command::Rollback) {
        rollback(isvc, ctx).await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // The count in force, fresh from the API server rather than from a status
    // that may lag: every revision runs at most the total (a canary less, a
    // blue-green preview as much), so the largest Deployment carries it.
    let running = observed
        .deployments
        .iter()
        .filter_map(|d| d.spec.as_ref()?.replicas)
        .max();
    let scale = autoscale::evaluate(
        isvc,
        &observed.pods,
        running,
        ctx.prometheus.as_ref(),
        Timestamp::now(),
    )
    .await;
    let decision = decide(isvc, ctx, &observed, command, scale.desired_replicas).await?;
    let layout = Layout {
        replicas: decision
            .replicas
            .get(&build::revision(&isvc.spec, &ctx.config)?)
            .copied()
            .unwrap_or(0),
        total: scale.desired_replicas,
        active: decision.active.clone(),
    };
    let desired = build::build(isvc, &ctx.config, &layout)?;
    if let Err(error) = apply(isvc, &desired, &decision, &observed, ctx).await {
        let outcome = Outcome::Refused {
            reason: "ApplyFailed",
            message: error.to_string(),
        };
        // The apply error is what matters; a status write failing too adds nothing.
        let _ = update_status(isvc, &outcome, &observed, ctx).await;
        return Err(error);
    }
    if command.is_some() {
        clear_command(isvc, ctx).await?;
    }
    let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    if let Some((from, to)) = autoscale::scaled(running, previous, &scale) {
        info!(isvc = %isvc.name_any(), from, to, reason = %scale.reason, "scaled");
        let note = format!("scaled from {from} to {to} replicas: {}", scale.reason);
        publish_fact(ctx, isvc, EventType::Normal, "Scaled", note).await;
    }
    for note in &decision.notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(isvc = %isvc.name_any(), reason = note.reason, message = %note.message, "rollout");
        publish_fact(ctx, isvc, type_, note.reason, note.message.clone()).await;
    }
    let outcome = Outcome::Applied {
        revision: desired.revision,
        url: desired.url,
        rollout: Box::new(RolloutView {
            stable: decision.stable,
            rollout: decision.rollout,
            canary_weight: decision.canary_weight,
            history: decision.history,
        }),
        autoscaling: scale,
    };
    let ready = update_status(isvc, &outcome, &observed, ctx).await?;
    let settled = if ready {
        decision.requeue
    } else {
        decision.requeue.min(Duration::from_secs(30))
    };
    // Metrics change without any object changing: re-evaluate while autoscaling.
    Ok(Action::requeue(
        autoscale::requeue_after(isvc, ctx.prometheus.is_some())
            .map_or(settled, |every| every.min(settled)),
    ))
}

/// Runs the analysis when one is due, then the rollout state machine, which
/// splits the `total` serving pods the autoscaler decided between the revisions.
async fn decide(
    isvc: &InferenceService,
    ctx: &Context,
    observed: &Observed,
    command: Option<Command>,
    total: i32,
) -> Result<Decision> {
    let spec = &isvc.spec;
    let revision = build::revision(spec, &ctx.config)?;
    let status = isvc.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let analysis = match &status.rollout {
        Some(r)
            if command.is_none()
                && machine::analysis_due(&spec.rollout, Some(r), &revision, now) =>
        {
            let namespace = isvc.namespace().unwrap_or_default();
            let name = isvc.name_any();
            let plan = analysis::plan(
                &spec.rollout.analysis,
                &Target {
                    isvc: &name,
                    namespace: &namespace,
                    revision: &r.revision,
                    stable: r.stable.as_deref().unwrap_or_default(),
                    stable_offset_seconds: (r.strategy == crate::rollout::Strategy::BlueGreen
                        && r.step == machine::BG_POST_PROMOTION)
                        .then(|| {
                            r.step_started
                                .as_ref()
                                .map(|t| now.duration_since(t.0).as_secs().max(0) as u64)
                        })
                        .flatten(),
                },
            );
            Some(prometheus::run(ctx.prometheus.as_ref(), &plan).await)
        }
        _ => None,
    };
    let ready = observed.ready();
    Ok(machine::decide(&Input {
        spec: &spec.rollout,
        desired: &revision,
        model: &spec.model,
        runtime: &spec.runtime,
        total,
        routed: spec.rollout.route.is_some(),
        previous: status.rollout.as_ref(),
        stable: status.stable_revision.as_deref(),
        history: &status.history,
        ready: &ready,
        analysis: analysis.as_ref(),
        command,
        now,
    }))
}

/// Removes the manual-command annotation once it was acted on.
async fn clear_command(isvc: &InferenceService, ctx: &Context) -> Result<()> {
    let api: Api<InferenceService> =
        Api::namespaced(ctx.client.clone(), &isvc.namespace().unwrap_or_default());
    api.patch(
        &isvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {control::ANNOTATION: null}}})),
    )
    .await?;
    ctx.metrics.write("InferenceService", "annotation");
    Ok(())
}

/// The `rollback` command: puts the previous stable revision's model and runtime
/// back into the spec (which starts a rollout to it) and removes the annotation.
async fn rollback(isvc: &InferenceService, ctx: &Context) -> Result<()> {
    let status = isvc.status.clone().unwrap_or_default();
    let target = match control::rollback_target(&status.history, status.stable_revision.as_deref())
    {
        Ok(target) => target,
        Err(message) => {
            publish(ctx, isvc, EventType::Warning, "RollbackRefused", message).await;
            return clear_command(isvc, ctx).await;
        }
    };
    let api: Api<InferenceService> =
        Api::namespaced(ctx.client.clone(), &isvc.namespace().unwrap_or_default());
    let mut replacement = json!({
        "metadata": {"annotations": {control::ANNOTATION: null}},
        "spec": {"model": null, "runtime": null},
    });
    // A merge patch merges objects; null first, then the whole value, replaces them.
    api.patch(
        &isvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&replacement),
    )
    .await?;
    replacement["spec"]["model"] = serde_json::to_value(&target.model)?;
    replacement["spec"]["runtime"] =
        serde_json::to_value(target.runtime.clone().unwrap_or_default())?;
    replacement["metadata"] = json!({});
    api.patch(
        &isvc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&replacement),
    )
    .await?;
    ctx.metrics.write("InferenceService", "rollback");
    publish(
        ctx,
        isvc,
        EventType::Normal,
        "RollbackRequested",
        format!(
            "spec.model set back to revision {} ({}); it rolls out like any new revision",
            target.revision, target.model.storage_uri
        ),
    )
    .await;
    Ok(())
}

/// Reads what the cluster holds for `isvc`: its objects and its serving pods.
pub async fn dereference(isvc: &InferenceService, client: &Client) -> Result<Observed> {
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = isvc.name_any();
    let labelled = ListParams::default().labels(&build::selector_string(&name));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let network_policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let (deployments, services, pdb, network_policy, config_maps, pods) = futures::try_join!(
        deployments.list(&labelled),
        services.list(&labelled),
        pdbs.get_opt(&name),
        network_policies.get_opt(&name),
        config_maps.list(&labelled),
        pods.list(&labelled),
    )?;
    Ok(Observed {
        deployments: owned(deployments.items, isvc),
        services: owned(services.items, isvc),
        pdb,
        config_maps: owned(config_maps.items, isvc),
        network_policy,
        pods: pods.items,
    })
}

/// Server-side applies every desired object whose applied hash differs from what
/// the cluster holds, scales the other revisions as the rollout decided, deletes
/// revisions that no longer have pods (with their Service and ConfigMap), removes
/// a PodDisruptionBudget or NetworkPolicy no longer wanted, and sets the
/// HTTPRoute's weights. Returns how many writes it made.
pub async fn apply(
    isvc: &InferenceService,
    desired: &Desired,
    decision: &Decision,
    observed: &Observed,
    ctx: &Context,
) -> Result<usize> {
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let client = &ctx.client;
    let mut written = Vec::new();
    let runs = decision
        .replicas
        .get(&desired.revision)
        .copied()
        .unwrap_or(0)
        > 0;
    if runs {
        let config_map = by_name(&observed.config_maps, &desired.config_map);
        if apply_one(client, &namespace, &desired.config_map, config_map, ctx).await? {
            written.push("ConfigMap".to_string());
        }
        let deployment = by_name(&observed.deployments, &desired.deployment);
        if apply_one(client, &namespace, &desired.deployment, deployment, ctx).await? {
            written.push("Deployment".to_string());
        }
        let service = by_name(&observed.services, &desired.revision_service);
        if apply_one(client, &namespace, &desired.revision_service, service, ctx).await? {
            written.push("Service (revision)".to_string());
        }
    }
    let service = by_name(&observed.services, &desired.service);
    if apply_one(client, &namespace, &desired.service, service, ctx).await? {
        written.push("Service".to_string());
    }
    written.extend(
        apply_optional(
            isvc,
            &namespace,
            desired.pdb.as_ref(),
            observed.pdb.as_ref(),
            ctx,
        )
        .await?,
    );
    written.extend(
        apply_optional(
            isvc,
            &namespace,
            desired.network_policy.as_ref(),
            observed.network_policy.as_ref(),
            ctx,
        )
        .await?,
    );

    // Other revisions: scaled as decided, or removed with their Service and ConfigMap.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let params = DeleteParams::background();
    for d in &observed.deployments {
        let Some(revision) = d.labels().get(REVISION_LABEL) else {
            continue;
        };
        if revision == &desired.revision && runs {
            continue;
        }
        match decision.replicas.get(revision).copied().filter(|n| *n > 0) {
            Some(n) => {
                if d.spec.as_ref().and_then(|s| s.replicas) != Some(n) {
                    deployments
                        .patch(
                            &d.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"replicas": n}})),
                        )
                        .await?;
                    ctx.metrics.write("Deployment", "scale");
                    written.push("Deployment (scaled)".to_string());
                }
            }
            None => {
                deployments.delete(&d.name_any(), &params).await?;
                ctx.metrics.write("Deployment", "delete");
                written.push("Deployment (deleted)".to_string());
            }
        }
    }
    let keep = |revision: Option<&String>| {
        revision.is_none_or(|r| decision.replicas.get(r).copied().unwrap_or(0) > 0)
    };
    // Collected first: a lazy filter held across the awaits would make the
    // reconcile future lose its Send bound.
    let unused_services: Vec<&Service> = observed
        .services
        .iter()
        .filter(|service| !keep(service.labels().get(REVISION_LABEL)))
        .collect();
    delete_each(unused_services, &namespace, &params, ctx).await?;
    // A ConfigMap goes once no pod of its revision is left.
    let unused_config_maps: Vec<&ConfigMap> = observed
        .config_maps
        .iter()
        .filter(|cm| {
            let revision = cm.labels().get(REVISION_LABEL);
            let has_pods = observed
                .pods
                .iter()
                .any(|p| p.labels().get(REVISION_LABEL) == revision);
            !keep(revision) && !has_pods
        })
        .collect();
    delete_each(unused_config_maps, &namespace, &params, ctx).await?;
    if let Some(route) = &isvc.spec.rollout.route
        && set_route_weights(isvc, &namespace, &route.name, &decision.route_weights, ctx).await?
    {
        written.push("HTTPRoute".to_string());
    }

    if !written.is_empty() {
        let (reason, note) = if observed.deployments.is_empty() {
            (
                "Created",
                format!(
                    "created revision {}: {}",
                    desired.revision,
                    written.join(", ")
                ),
            )
        } else {
            ("Updated", format!("updated {}", written.join(", ")))
        };
        info!(isvc = %isvc.name_any(), %namespace, reason, note, "applied");
        publish(ctx, isvc, EventType::Normal, reason, note).await;
    }
    Ok(written.len())
}

fn by_name<'a, K: Resource>(list: &'a [K], desired: &K) -> Option<&'a K> {
    list.iter().find(|o| o.meta().name == desired.meta().name)
}

/// The Gateway API HTTPRoute kind.
fn http_route() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// Points every rule of the named HTTPRoute at the per-revision Services with the
/// rollout's weights. Returns whether it wrote.
async fn set_route_weights(
    isvc: &InferenceService,
    namespace: &str,
    route: &str,
    weights: &[(String, i32)],
    ctx: &Context,
) -> Result<bool> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &http_route());
    let Some(current) = api.get_opt(route).await? else {
        publish(
            ctx,
            isvc,
            EventType::Warning,
            "RouteNotFound",
            format!("spec.rollout.route: HTTPRoute {route} not found in {namespace}; traffic splits by replica ratio"),
        )
        .await;
        return Ok(false);
    };
    let Some(rules) = traffic::route_rules(&current.data, &isvc.name_any(), weights) else {
        return Ok(false);
    };
    api.patch(
        route,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"rules": rules}})),
    )
    .await?;
    ctx.metrics.write("HTTPRoute", "patch");
    Ok(true)
}

/// Applies an object the spec may or may not want: applies it when wanted,
/// deletes the one the InferenceService owns when not. Returns what it wrote,
/// e.g. `PodDisruptionBudget` or `NetworkPolicy (deleted)`.
async fn apply_optional<K>(
    isvc: &InferenceService,
    namespace: &str,
    desired: Option<&K>,
    current: Option<&K>,
    ctx: &Context,
) -> Result<Option<String>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    match (desired, current) {
        (Some(desired), current) => Ok(apply_one(&ctx.client, namespace, desired, current, ctx)
            .await?
            .then(|| K::kind(&()).into_owned())),
        (None, Some(current)) if owned_by(current, isvc) => {
            delete_each([current], namespace, &DeleteParams::default(), ctx).await?;
            Ok(Some(format!("{} (deleted)", K::kind(&()))))
        }
        (None, _) => Ok(None),
    }
}

/// Deletes every object of `objects`, counting each write in the metrics.
async fn delete_each<'a, K>(
    objects: impl IntoIterator<Item = &'a K>,
    namespace: &str,
    params: &DeleteParams,
    ctx: &Context,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + 'a,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    for object in objects {
        api.delete(&object.name_any(), params).await?;
        ctx.metrics.write(&K::kind(&()), "delete");
    }
    Ok(())
}

/// Applies `desired` unless `current` already carries its hash. Returns whether it wrote.
async fn apply_one<K>(
    client: &Client,
    namespace: &str,
    desired: &K,
    current: Option<&K>,
    ctx: &Context,
) -> Result<bool>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    if current
        .is_some_and(|c| applied_hash(c).is_some() && applied_hash(c) == applied_hash(desired))
    {
        return Ok(false);
    }
    debug_assert!(
        desired
            .meta()
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(APPLIED_HASH_ANNOTATION))
    );
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut object = serde_json::to_value(desired)?;
    object["apiVersion"] = K::api_version(&()).into();
    object["kind"] = K::kind(&()).into();
    api.patch(
        &desired.meta().name.clone().unwrap_or_default(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    ctx.metrics.write(&K::kind(&()), "apply");
    Ok(true)
}

fn owned<K: Resource>(items: Vec<K>, isvc: &InferenceService) -> Vec<K> {
    items.into_iter().filter(|o| owned_by(o, isvc)).collect()
}

fn owned_by<K: Resource>(object: &K, isvc: &InferenceService) -> bool {
    let uid = isvc.metadata.uid.as_deref();
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true))
}

/// Computes the status and writes it only when it changed; publishes an Event per
/// condition transition. Returns whether the InferenceService is Ready.
pub async fn update_status(
    isvc: &InferenceService,
    outcome: &Outcome,
    observed: &Observed,
    ctx: &Context,
) -> Result<bool> {
    let new = status::compute(
        isvc,
        outcome,
        &observed.deployments,
        &observed.pods,
        Time(Timestamp::now()),
    );
    let ready = new.phase == Some(crate::crd::Phase::Ready);
    if isvc.status.as_ref() == Some(&new) {
        return Ok(ready);
    }
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": InferenceService::api_version(&()),
        "kind": InferenceService::kind(&()),
        "status": new,
    });
    api.patch_status(
        &isvc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    ctx.metrics.write("InferenceService", "status");
    for (warning, reason, message) in status::transitions(isvc.status.as_ref(), &new) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, isvc, type_, &reason, message).await;
    }
    Ok(ready)
}

/// Deletes the objects of a deleted InferenceService (owner references would too,
/// through the garbage collector; deleting them here makes removal prompt and
/// independent of it), then lets the finalizer go.
async fn cleanup(isvc: &InferenceService, ctx: &Context) -> Result<Action> {
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = isvc.name_any();
    let client = &ctx.client;
    let params = DeleteParams::background();
    let observed = dereference(isvc, client).await?;
    delete_each(&observed.deployments, &namespace, &params, ctx).await?;
    delete_each(&observed.services, &namespace, &params, ctx).await?;
    delete_each(
        observed.pdb.as_ref().filter(|p| owned_by(*p, isvc)),
        &namespace,
        &params,
        ctx,
    )
    .await?;
    delete_each(
        observed
            .network_policy
            .as_ref()
            .filter(|p| owned_by(*p, isvc)),
        &namespace,
        &params,
        ctx,
    )
    .await?;
    delete_each(&observed.config_maps, &namespace, &params, ctx).await?;
    info!(isvc = %name, %namespace, "deleted");
    publish(
        ctx,
        isvc,
        EventType::Normal,
        "Deleted",
        format!("deleted the objects of {name}"),
    )
    .await;
    Ok(Action::await_change())
}

/// Publishes an Event about `isvc`; a failure to publish is logged, never fatal.
pub async fn publish(
    ctx: &Context,
    isvc: &InferenceService,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_with(&ctx.recorder, ctx, isvc, type_, reason, note).await
}

/// Publishes an Event that must stay its own Event: the shared recorder folds
/// Events of the same reason into one series that keeps the first note, which
/// would hide every later analysis result or scale change.
async fn publish_fact(
    ctx: &Context,
    isvc: &InferenceService,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish_with(&recorder, ctx, isvc, type_, reason, note).await
}

async fn publish_with(
    recorder: &Recorder,
    ctx: &Context,
    isvc: &InferenceService,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match recorder.publish(&event, &isvc.object_ref(&())).await {
        Ok(()) => ctx.metrics.write("Event", "create"),
        Err(error) => warn!(%error, reason, "could not publish event"),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
