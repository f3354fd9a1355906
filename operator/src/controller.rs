//! Wires the reconciles into kube-runtime Controllers, both in this process:
//! InferenceService (its watch, watches on the objects it owns and on its pods)
//! and BatchInference (its watch, its CronJob, its runs' Jobs and pods, and the
//! InferenceServices it names), each with its error policy. A cluster-wide
//! operator runs one of each over all namespaces; a namespace-scoped one runs a
//! pair per listed namespace, whose watches a Role in that namespace allows.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use crate::Error;
use crate::batch;
use crate::crd::{BatchInference, InferenceService, ServingPolicy};
use crate::names::{BATCH_LABEL, ISVC_LABEL};
use crate::policy::POLICY_LABEL;
use crate::reconcile::events::publish;
use crate::reconcile::{Context, reconcile};

/// Label selector of everything the operator creates.
const MANAGED: &str = "app.kubernetes.io/managed-by=sluice-operator";

/// Runs both controllers over the namespaces of `ctx.scope` until `shutdown`
/// resolves, then lets in-flight reconciles finish.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = shutdown.shared();
    let pairs = ctx.scope.namespaces().into_iter().map(|namespace| {
        futures::future::join(
            inference_services(ctx.clone(), namespace, shutdown.clone()),
            batch_inferences(ctx.clone(), namespace, shutdown.clone()),
        )
    });
    futures::future::join_all(pairs).await;
}

/// Watches `K` in `namespace`, or in all namespaces for `None`.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The InferenceService controller of `namespace` (all for `None`).
async fn inference_services(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let managed = watcher::Config::default().labels(MANAGED);
    let controller = Controller::new(
        api::<InferenceService>(&client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .owns(api::<Deployment>(&client, namespace), managed.clone())
    .owns(api::<DaemonSet>(&client, namespace), managed.clone())
    .owns(api::<Service>(&client, namespace), managed.clone())
    .owns(
        api::<PodDisruptionBudget>(&client, namespace),
        managed.clone(),
    )
    .owns(api::<NetworkPolicy>(&client, namespace), managed.clone())
    // A retraining Job that finishes updates status.drift at once.
    .owns(api::<Job>(&client, namespace), managed.clone())
    .watches(
        api::<Pod>(&client, namespace),
        watcher::Config::default().labels(ISVC_LABEL),
        labelled_owner,
    )
    // Ready waits for the Service's EndpointSlices, which carry its labels.
    .watches(
        api::<EndpointSlice>(&client, namespace),
        watcher::Config::default().labels(ISVC_LABEL),
        labelled_owner,
    );
    let controller = if ctx.scope.applies_serving_policies() {
        with_serving_policies(controller, &client)
    } else {
        controller
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(logged)
        .await;
}

/// `controller`, reconciling every InferenceService at once when a ServingPolicy
/// changes or a namespace gains, changes or drops its policy label, instead of at
/// their next requeue. Every one, because policies change rarely and which
/// namespaces select a policy is known only from their labels. These watches
/// retry on their own backoff and their errors are only logged, so a missing
/// ServingPolicy CRD or permission never holds up the controller's other triggers.
fn with_serving_policies(
    controller: Controller<InferenceService>,
    client: &Client,
) -> Controller<InferenceService> {
    let policies = watcher(
        Api::<ServingPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|change| change.map(drop));
    let labels = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default().labels(POLICY_LABEL),
    )
    .default_backoff()
    .touched_objects()
    .map(|change| change.map(drop));
    let changes = futures::stream::select(policies, labels).filter_map(|change| async move {
        change
            .inspect_err(
                |error| warn!(%error, "watching ServingPolicies and namespace policy labels"),
            )
            .ok()
    });
    controller.reconcile_all_on(changes)
}

/// The InferenceService that `object` (a serving pod, an EndpointSlice) names
/// in its label.
fn labelled_owner<K: Resource>(object: K) -> Option<ObjectRef<InferenceService>> {
    let name = object.labels().get(ISVC_LABEL)?;
    Some(ObjectRef::new(name).within(object.meta().namespace.as_deref()?))
}

/// Logs one reconcile's result.
async fn logged<K: Resource, E: std::fmt::Display>(result: Result<(ObjectRef<K>, Action), E>) {
    match result {
        Ok((object, _)) => {
            debug!(kind = %K::kind(&object.dyntype), name = %object.name, namespace = ?object.namespace, "reconciled")
        }
        Err(error) => debug!(%error, "reconcile did not run"),
    }
}

/// Counts the failure, reports it as a Warning Event and retries after a pause.
fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    warn!(kind = %K::kind(&()), name = %object.name_any(), namespace = ?object.namespace(), %error, "reconcile failed");
    let note = error.to_string();
    tokio::spawn(async move {
        publish(
            &ctx,
            object.as_ref(),
            EventType::Warning,
            "ReconcileFailed",
            note,
        )
        .await;
    });
    Action::requeue(Duration::from_secs(15))
}

/// The BatchInference controller of `namespace` (all for `None`). Its Jobs and
/// pods are found by label (a CronJob's Jobs are owned by the CronJob), and an
/// InferenceService's change reaches every BatchInference that names it (the
/// next run uses its model).
async fn batch_inferences(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let labelled = watcher::Config::default().labels(BATCH_LABEL);
    let controller = Controller::new(
        api::<BatchInference>(&client, namespace),
        watcher::Config::default().any_semantic(),
    );
    let batches = controller.store();
    controller
        .owns(
            api::<CronJob>(&client, namespace),
            watcher::Config::default().labels(MANAGED),
        )
        .watches(api::<Job>(&client, namespace), labelled.clone(), |job| {
            labelled_batch(&job)
        })
        .watches(api::<Pod>(&client, namespace), labelled, |pod| {
            labelled_batch(&pod)
        })
        .watches(
            api::<InferenceService>(&client, namespace),
            watcher::Config::default().any_semantic(),
            move |isvc| {
                let (name, namespace) = (isvc.name_any(), isvc.namespace());
                batches
                    .state()
                    .into_iter()
                    .filter(|b| {
                        b.namespace() == namespace
                            && b.spec
                                .inference_service_ref
                                .as_ref()
                                .is_some_and(|r| r.name == name)
                    })
                    .map(|b| ObjectRef::from_obj(b.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(batch::reconcile::reconcile, error_policy, ctx)
        .for_each(logged)
        .await;
}

/// The BatchInference that `object`'s label names.
fn labelled_batch<K: ResourceExt>(object: &K) -> Option<ObjectRef<BatchInference>> {
    let name = object.labels().get(BATCH_LABEL)?;
    Some(ObjectRef::new(name).within(&object.namespace()?))
}
