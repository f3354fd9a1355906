//! Kubernetes Events about an InferenceService (or any resource the operator
//! reconciles, such as a BatchInference). A failure to publish is logged, never
//! fatal: Events explain, they are not state.

use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::decide::Plan;
use super::validate::Validated;
use crate::autoscale;
use crate::crd::InferenceService;
use crate::names::short_hash;

/// Longest Event note the API server keeps (it refuses longer ones).
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes an Event about `object` through the shared recorder, which folds
/// repeats of one reason into a series.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_with(&ctx.recorder, ctx, object, type_, reason, note).await
}

/// Announces what `plan` changes: a scale change (from the `running` count), each
/// note of the rollout and each of drift monitoring (a retraining Job started,
/// deferred or finished), one Event each.
pub async fn announce(ctx: &Context, valid: &Validated<'_>, plan: &Plan, running: Option<i32>) {
    let isvc = valid.isvc;
    let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    if let Some((from, to)) = autoscale::scaled(running, previous, &plan.scale) {
        info!(isvc = %isvc.name_any(), from, to, reason = %plan.scale.reason, "scaled");
        let note = format!("scaled from {from} to {to} replicas: {}", plan.scale.reason);
        publish_fact(ctx, isvc, EventType::Normal, "Scaled", note).await;
    }
    for (index, note) in plan.rollout.notes.iter().enumerate() {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(isvc = %isvc.name_any(), reason = note.reason, message = %note.message, "rollout");
        let name = transition_event_name(isvc, index, note.reason);
        publish_once(ctx, isvc, name, type_, note.reason, note.message.clone()).await;
    }
    for note in plan.drift.iter().flat_map(|d| &d.notes) {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(isvc = %isvc.name_any(), reason = note.reason, message = %note.message, "drift");
        publish_fact(ctx, isvc, type_, note.reason, note.message.clone()).await;
    }
}

/// The name of the Event for the `index`th note of the rollout transition that
/// starts from `isvc`'s current `status.rollout`. Events are published before
/// the status write that records the transition, so an operator that dies in
/// between decides the same transition again from the same status when it
/// restarts; the same name then makes the API server refuse the repeat, and
/// each transition has exactly one Event however often the operator restarts.
pub fn transition_event_name(isvc: &InferenceService, index: usize, reason: &str) -> String {
    let origin = isvc.status.as_ref().and_then(|s| s.rollout.as_ref());
    let key = serde_json::to_vec(&(isvc.uid(), origin, index, reason))
        .expect("a status and plain values always serialize");
    format!("{}.rollout-{}", isvc.name_any(), short_hash(&key))
}

/// Creates the Event `name` unless it exists already (see
/// [`transition_event_name`]).
async fn publish_once(
    ctx: &Context,
    isvc: &InferenceService,
    name: String,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let Some(namespace) = isvc.namespace() else {
        return;
    };
    let event = K8sEvent {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        action: Some("Reconcile".into()),
        event_time: Some(MicroTime(Timestamp::now())),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        reason: Some(reason.into()),
        regarding: Some(isvc.object_ref(&())),
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: Some(
            ctx.reporter
                .instance
                .clone()
                .unwrap_or_else(|| ctx.reporter.controller.clone()),
        ),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..K8sEvent::default()
    };
    let events: Api<K8sEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => ctx.metrics.write("Event", "create"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            debug!(
                reason,
                "event already published before a restart; not repeated"
            )
        }
        Err(error) => warn!(%error, reason, "could not publish event"),
    }
}

/// Publishes an Event that must stay its own Event: the shared recorder folds
/// Events of the same reason into one series that keeps the first note, which
/// would hide every later analysis result, scale change or batch run.
pub async fn publish_fact<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    publish_with(&recorder, ctx, object, type_, reason, note).await
}

async fn publish_with<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match recorder.publish(&event, &object.object_ref(&())).await {
        Ok(()) => ctx.metrics.write("Event", "create"),
        Err(error) => warn!(%error, reason, "could not publish event"),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
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

#[cfg(test)]
mod tests {
    use super::{transition_event_name, truncate};
    use crate::crd::InferenceService;

    #[test]
    fn a_transition_has_one_event_name_per_origin_state_and_note() {
        let mut isvc: InferenceService = serde_saphyr::from_str(
            "apiVersion: serving.sluice.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: fraud, namespace: ml, uid: u-1}\nspec:\n  model: {storageUri: s3://m/f.onnx}\n",
        )
        .unwrap();
        let first = transition_event_name(&isvc, 0, "Promoted");
        assert!(first.starts_with("fraud.rollout-"), "{first}");
        assert_eq!(
            first,
            transition_event_name(&isvc, 0, "Promoted"),
            "decided again after a restart"
        );
        assert_ne!(first, transition_event_name(&isvc, 1, "Promoted"));
        assert_ne!(first, transition_event_name(&isvc, 0, "RolledBack"));
        isvc.metadata.uid = Some("u-2".into());
        assert_ne!(
            first,
            transition_event_name(&isvc, 0, "Promoted"),
            "a re-created object"
        );
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abcdef".into(), 4), "abcd");
    }
}
