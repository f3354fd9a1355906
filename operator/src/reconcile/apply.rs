//! The `apply` step: makes the cluster hold what `build` and `decide` want, with as
//! few writes as possible. Objects carry the hash of what was applied, so an
//! unchanged object is not written again.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use super::context::{Context, FIELD_MANAGER};
use super::dereference::{Objects, owned_by};
use super::events::publish;
use super::validate::Validated;
use crate::Result;
use crate::build::Desired;
use crate::crd::InferenceService;
use crate::names::{APPLIED_HASH_ANNOTATION, REVISION_LABEL, applied_hash};
use crate::rollout::machine::Decision;
use crate::rollout::traffic;
use crate::workload::Workload;

/// Server-side applies every desired object whose applied hash differs from what
/// the cluster holds, scales the other revisions as the rollout decided, deletes
/// revisions that no longer have pods (with their Service and ConfigMap), removes
/// a PodDisruptionBudget or NetworkPolicy no longer wanted, and sets the
/// HTTPRoute's weights. Returns how many writes it made.
pub async fn apply(
    valid: &Validated<'_>,
    desired: &Desired,
    decision: &Decision,
    observed: &Objects,
    ctx: &Context,
) -> Result<usize> {
    let isvc = valid.isvc;
    let namespace = &valid.namespace;
    let client = &ctx.client;
    let mut written = Vec::new();
    let runs = decision
        .replicas
        .get(&desired.revision)
        .copied()
        .unwrap_or(0)
        > 0;
    let mut note = |applied: bool, what: &str| {
        if applied {
            written.push(what.to_string());
        }
    };
    if runs {
        let applied = apply_listed(namespace, &desired.config_map, &observed.config_maps, ctx);
        note(applied.await?, "ConfigMap");
        let applied = apply_workload(namespace, &desired.workload, &observed.workloads, ctx);
        note(applied.await?, desired.workload.kind());
        let applied = apply_listed(
            namespace,
            &desired.revision_service,
            &observed.services,
            ctx,
        );
        note(applied.await?, "Service (revision)");
    }
    let applied = apply_listed(namespace, &desired.service, &observed.services, ctx);
    note(applied.await?, "Service");
    written
        .extend(apply_optional(namespace, desired.pdb.as_ref(), observed.pdb.as_ref(), ctx).await?);
    written.extend(
        apply_optional(
            namespace,
            desired.network_policy.as_ref(),
            observed.network_policy.as_ref(),
            ctx,
        )
        .await?,
    );

    // Other revisions: scaled as decided (a DaemonSet has one pod per node
    // whatever the count), or removed with their Service and ConfigMap.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams::background();
    for w in &observed.workloads {
        let Some(revision) = w.revision() else {
            continue;
        };
        if revision == desired.revision && runs {
            continue;
        }
        match (
            decision.replicas.get(revision).copied().filter(|n| *n > 0),
            w,
        ) {
            (Some(n), Workload::Deployment(d)) => {
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
            (Some(_), Workload::DaemonSet(_)) => {}
            (None, Workload::Deployment(d)) => {
                deployments.delete(&d.name_any(), &params).await?;
                ctx.metrics.write("Deployment", "delete");
                written.push("Deployment (deleted)".to_string());
            }
            (None, Workload::DaemonSet(d)) => {
                daemon_sets.delete(&d.name_any(), &params).await?;
                ctx.metrics.write("DaemonSet", "delete");
                written.push("DaemonSet (deleted)".to_string());
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
    delete_each(unused_services, namespace, &params, ctx).await?;
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
    delete_each(unused_config_maps, namespace, &params, ctx).await?;
    written.extend(
        apply_route(
            isvc,
            namespace,
            desired.route.as_ref(),
            observed.route.as_ref(),
            ctx,
        )
        .await?,
    );

    if !written.is_empty() {
        let (reason, note) = if observed.workloads.is_empty() {
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

/// Applies `desired` unless the object of its name in `current` (what the cluster
/// holds) already carries its hash. Returns whether it wrote.
async fn apply_listed<K>(namespace: &str, desired: &K, current: &[K], ctx: &Context) -> Result<bool>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let current = current
        .iter()
        .find(|o| o.meta().name == desired.meta().name);
    apply_one(namespace, desired, current, ctx).await
}

/// Applies a revision's Deployment or DaemonSet unless the one of its name in
/// `current` already carries its hash. Returns whether it wrote.
async fn apply_workload(
    namespace: &str,
    desired: &Workload,
    current: &[Workload],
    ctx: &Context,
) -> Result<bool> {
    let current = current
        .iter()
        .find(|w| w.metadata().name == desired.metadata().name);
    match desired {
        Workload::Deployment(d) => {
            apply_one(namespace, d, current.and_then(Workload::deployment), ctx).await
        }
        Workload::DaemonSet(d) => {
            apply_one(namespace, d, current.and_then(Workload::daemon_set), ctx).await
        }
    }
}

/// Server-side applies the HTTPRoute of `spec.rollout.route` when its hash
/// differs from the cluster's, or deletes the owned one the spec no longer
/// wants. A route of that name that the InferenceService does not own is left
/// alone, with a Warning Event. Returns what it wrote.
async fn apply_route(
    isvc: &InferenceService,
    namespace: &str,
    desired: Option<&DynamicObject>,
    current: Option<&DynamicObject>,
    ctx: &Context,
) -> Result<Option<String>> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        namespace,
        &traffic::http_route_resource(),
    );
    let ours = current.filter(|route| owned_by(*route, isvc));
    match (desired, current) {
        (Some(_), Some(other)) if ours.is_none() => {
            let name = other.name_any();
            publish(
                ctx,
                isvc,
                EventType::Warning,
                "RouteConflict",
                format!("spec.rollout.route: an HTTPRoute {name} that this InferenceService does not own exists in {namespace}; delete or rename it (traffic splits by replica ratio meanwhile)"),
            )
            .await;
            Ok(None)
        }
        (Some(route), _) => {
            if ours.and_then(|r| applied_hash(r)) == applied_hash(route) {
                return Ok(None);
            }
            api.patch(
                &route.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(route),
            )
            .await?;
            ctx.metrics.write("HTTPRoute", "apply");
            Ok(Some("HTTPRoute".to_string()))
        }
        (None, Some(route)) if ours.is_some() => {
            api.delete(&route.name_any(), &DeleteParams::background())
                .await?;
            ctx.metrics.write("HTTPRoute", "delete");
            Ok(Some("HTTPRoute (deleted)".to_string()))
        }
        (None, _) => Ok(None),
    }
}

/// Applies an object the spec may or may not want: applies it when wanted,
/// deletes the one the InferenceService owns (`current`) when not. Returns what it wrote,
/// e.g. `PodDisruptionBudget` or `NetworkPolicy (deleted)`.
async fn apply_optional<K>(
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
        (Some(desired), current) => Ok(apply_one(namespace, desired, current, ctx)
            .await?
            .then(|| K::kind(&()).into_owned())),
        (None, Some(current)) => {
            delete_each([current], namespace, &DeleteParams::default(), ctx).await?;
            Ok(Some(format!("{} (deleted)", K::kind(&()))))
        }
        (None, _) => Ok(None),
    }
}

/// Deletes every object of `objects`, counting each write in the metrics.
pub async fn delete_each<'a, K>(
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
pub async fn apply_one<K>(
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
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
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

/// Creates a Job (a retraining Job, a batch run). It is created once and left
/// to run: one that exists already (the same decision taken again after a lost
/// status write) is kept.
pub async fn create_job(job: &Job, ctx: &Context) -> Result<()> {
    let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match jobs.create(&PostParams::default(), job).await {
        Ok(_) => {
            ctx.metrics.write("Job", "create");
            info!(job = ?job.metadata.name, namespace, "created Job");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
