//! One reconcile of one InferenceService:
//! `dereference -> validate -> build -> apply -> update_status`.
//!
//! Only `dereference` (reads), `apply` and `update_status` (writes) talk to the API
//! server; `validate`, `build` and the status computation are pure. A reconcile that
//! finds nothing to change writes nothing: applied objects carry the hash of what was
//! applied, status is written only when it differs, and Events mark transitions only.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::autoscale;
use crate::build::{
    self, APPLIED_HASH_ANNOTATION, Desired, ISVC_LABEL, REVISION_LABEL, applied_hash,
};
use crate::config::BuildConfig;
use crate::crd::InferenceService;
use crate::metrics::Metrics;
use crate::status::{self, Outcome};
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
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Prometheus, read by the autoscaler; without it the replica count holds.
    pub prometheus: Option<prometheus_http_query::Client>,
}

/// What the cluster holds for one InferenceService.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The serving Deployment.
    pub deployment: Option<Deployment>,
    /// The Service.
    pub service: Option<Service>,
    /// The PodDisruptionBudget.
    pub pdb: Option<PodDisruptionBudget>,
    /// `config.yaml` ConfigMaps of every revision still around.
    pub config_maps: Vec<ConfigMap>,
    /// Serving pods of every revision.
    pub pods: Vec<Pod>,
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

async fn serve(isvc: &InferenceService, ctx: &Context) -> Result<Action> {
    let observed = dereference(isvc, &ctx.client).await?;
    let outcome = match build::validate(isvc) {
        Err(message) => Outcome::Refused {
            reason: "InvalidSpec",
            message,
        },
        Ok(()) => {
            let running = observed
                .deployment
                .as_ref()
                .and_then(|d| d.spec.as_ref()?.replicas);
            let scale = autoscale::evaluate(
                isvc,
                &observed.pods,
                running,
                ctx.prometheus.as_ref(),
                Timestamp::now(),
            )
            .await;
            let desired = build::build(isvc, &ctx.config, scale.desired_replicas)?;
            if let Err(error) = apply(isvc, &desired, &observed, ctx).await {
                let outcome = Outcome::Refused {
                    reason: "ApplyFailed",
                    message: error.to_string(),
                };
                // The apply error is what matters; a status write failing too adds nothing.
                let _ = update_status(isvc, &outcome, &observed, ctx).await;
                return Err(error);
            }
            let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
            if let Some((from, to)) = autoscale::scaled(running, previous, &scale) {
                info!(isvc = %isvc.name_any(), from, to, reason = %scale.reason, "scaled");
                let note = format!("scaled from {from} to {to} replicas: {}", scale.reason);
                publish(ctx, isvc, EventType::Normal, "Scaled", note).await;
            }
            Outcome::Applied {
                revision: desired.revision,
                url: desired.url,
                autoscaling: scale,
            }
        }
    };
    let ready = update_status(isvc, &outcome, &observed, ctx).await?;
    let settled = match (&outcome, ready) {
        (Outcome::Refused { .. }, _) => return Ok(Action::await_change()),
        (_, true) => Duration::from_secs(300),
        (_, false) => Duration::from_secs(30),
    };
    // Metrics change without any object changing: re-evaluate while autoscaling.
    Ok(Action::requeue(
        autoscale::requeue_after(isvc, ctx.prometheus.is_some())
            .map_or(settled, |every| every.min(settled)),
    ))
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
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let (deployment, service, pdb, config_maps, pods) = futures::try_join!(
        deployments.get_opt(&name),
        services.get_opt(&name),
        pdbs.get_opt(&name),
        config_maps.list(&labelled),
        pods.list(&labelled),
    )?;
    Ok(Observed {
        deployment,
        service,
        pdb,
        config_maps: config_maps.items,
        pods: pods.items,
    })
}

/// Server-side applies every desired object whose applied hash differs from what
/// the cluster holds, removes a PodDisruptionBudget no longer wanted and ConfigMaps
/// of revisions no pod runs any more. Returns how many writes it made.
pub async fn apply(
    isvc: &InferenceService,
    desired: &Desired,
    observed: &Observed,
    ctx: &Context,
) -> Result<usize> {
    let namespace = isvc
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let client = &ctx.client;
    let mut written = Vec::new();

    let config_map = observed
        .config_maps
        .iter()
        .find(|c| c.metadata.name == desired.config_map.metadata.name);
    if apply_one(client, &namespace, &desired.config_map, config_map, ctx).await? {
        written.push("ConfigMap");
    }
    let previous_revision = observed
        .deployment
        .as_ref()
        .and_then(|d| d.annotations().get(REVISION_LABEL).cloned());
    if apply_one(
        client,
        &namespace,
        &desired.deployment,
        observed.deployment.as_ref(),
        ctx,
    )
    .await?
    {
        written.push("Deployment");
    }
    if apply_one(
        client,
        &namespace,
        &desired.service,
        observed.service.as_ref(),
        ctx,
    )
    .await?
    {
        written.push("Service");
    }
    match (&desired.pdb, &observed.pdb) {
        (Some(pdb), current) => {
            if apply_one(client, &namespace, pdb, current.as_ref(), ctx).await? {
                written.push("PodDisruptionBudget");
            }
        }
        (None, Some(current)) if owned_by(current, isvc) => {
            let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
            api.delete(&current.name_any(), &DeleteParams::default())
                .await?;
            ctx.metrics.write("PodDisruptionBudget", "delete");
            written.push("PodDisruptionBudget (deleted)");
        }
        (None, _) => {}
    }

    // Old revisions' ConfigMaps go once the Deployment runs only the current one.
    if status::rolled_out(observed.deployment.as_ref(), &desired.revision) {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
        for stale in observed.config_maps.iter().filter(|c| {
            c.labels().get(REVISION_LABEL) != Some(&desired.revision) && owned_by(*c, isvc)
        }) {
            api.delete(&stale.name_any(), &DeleteParams::default())
                .await?;
            ctx.metrics.write("ConfigMap", "delete");
        }
    }

    if !written.is_empty() {
        let (reason, note) = match previous_revision {
            Some(previous) if previous != desired.revision => (
                "RolloutStarted",
                format!("rolling out revision {} (was {previous})", desired.revision),
            ),
            None => (
                "Created",
                format!(
                    "created revision {}: {}",
                    desired.revision,
                    written.join(", ")
                ),
            ),
            Some(_) => ("Updated", format!("updated {}", written.join(", "))),
        };
        info!(isvc = %isvc.name_any(), %namespace, reason, note, "applied");
        publish(ctx, isvc, EventType::Normal, reason, note).await;
    }
    Ok(written.len())
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
        observed.deployment.as_ref(),
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
    delete_owned::<Deployment>(client, &namespace, &name, isvc, &params, ctx).await?;
    delete_owned::<Service>(client, &namespace, &name, isvc, &params, ctx).await?;
    delete_owned::<PodDisruptionBudget>(client, &namespace, &name, isvc, &params, ctx).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let labelled = ListParams::default().labels(&format!("{ISVC_LABEL}={name}"));
    for cm in config_maps
        .list(&labelled)
        .await?
        .items
        .iter()
        .filter(|c| owned_by(*c, isvc))
    {
        config_maps.delete(&cm.name_any(), &params).await?;
        ctx.metrics.write("ConfigMap", "delete");
    }
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

async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    isvc: &InferenceService,
    params: &DeleteParams,
    ctx: &Context,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if let Some(object) = api.get_opt(name).await?
        && owned_by(&object, isvc)
    {
        api.delete(name, params).await?;
        ctx.metrics.write(&K::kind(&()), "delete");
    }
    Ok(())
}

/// Publishes an Event about `isvc`; a failure to publish is logged, never fatal.
pub async fn publish(
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
    match ctx.recorder.publish(&event, &isvc.object_ref(&())).await {
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
