//! Wires the reconcile into a kube-runtime Controller: the InferenceService watch,
//! watches on the objects it owns and on its pods, and the error policy.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::Error;
use crate::crd::InferenceService;
use crate::names::ISVC_LABEL;
use crate::reconcile::events::publish;
use crate::reconcile::{Context, reconcile};

/// Label selector of everything the operator creates.
const MANAGED: &str = "app.kubernetes.io/managed-by=sluice-operator";

/// Runs the controller over all namespaces until `shutdown` resolves, then lets
/// in-flight reconciles finish.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client: Client = ctx.client.clone();
    let managed = watcher::Config::default().labels(MANAGED);
    Controller::new(
        Api::<InferenceService>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .owns(Api::<Deployment>::all(client.clone()), managed.clone())
    .owns(Api::<DaemonSet>::all(client.clone()), managed.clone())
    .owns(Api::<Service>::all(client.clone()), managed.clone())
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        managed.clone(),
    )
    .owns(Api::<NetworkPolicy>::all(client.clone()), managed.clone())
    // A retraining Job that finishes updates status.drift at once.
    .owns(Api::<Job>::all(client.clone()), managed.clone())
    .watches(
        Api::<Pod>::all(client),
        watcher::Config::default().labels(ISVC_LABEL),
        |pod| {
            let name = pod.labels().get(ISVC_LABEL)?.clone();
            Some(ObjectRef::<InferenceService>::new(&name).within(&pod.namespace()?))
        },
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => {
                debug!(isvc = %object.name, namespace = ?object.namespace, "reconciled")
            }
            Err(error) => debug!(%error, "reconcile did not run"),
        }
    })
    .await;
}

/// Counts the failure, reports it as a Warning Event and retries after a pause.
fn error_policy(isvc: Arc<InferenceService>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&[error.metric_label()])
        .inc();
    warn!(isvc = %isvc.name_any(), namespace = ?isvc.namespace(), %error, "reconcile failed");
    let note = error.to_string();
    tokio::spawn(async move {
        publish(
            &ctx,
            isvc.as_ref(),
            EventType::Warning,
            "ReconcileFailed",
            note,
        )
        .await;
    });
    Action::requeue(Duration::from_secs(15))
}
