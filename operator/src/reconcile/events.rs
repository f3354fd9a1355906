//! Kubernetes Events about an InferenceService. A failure to publish is logged,
//! never fatal: Events explain, they are not state.

use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::decide::Plan;
use super::validate::Validated;
use crate::autoscale;
use crate::crd::InferenceService;

/// Longest Event note the API server keeps (it refuses longer ones).
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes an Event about `isvc` through the shared recorder, which folds
/// repeats of one reason into a series.
pub async fn publish(
    ctx: &Context,
    isvc: &InferenceService,
    type_: EventType,
    reason: &str,
    note: String,
) {
    publish_with(&ctx.recorder, ctx, isvc, type_, reason, note).await
}

/// Announces what `plan` changes: a scale change (from the `running` count) and
/// each note of the rollout, one Event each.
pub async fn announce(ctx: &Context, valid: &Validated<'_>, plan: &Plan, running: Option<i32>) {
    let isvc = valid.isvc;
    let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    if let Some((from, to)) = autoscale::scaled(running, previous, &plan.scale) {
        info!(isvc = %isvc.name_any(), from, to, reason = %plan.scale.reason, "scaled");
        let note = format!("scaled from {from} to {to} replicas: {}", plan.scale.reason);
        publish_fact(ctx, isvc, EventType::Normal, "Scaled", note).await;
    }
    for note in &plan.rollout.notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(isvc = %isvc.name_any(), reason = note.reason, message = %note.message, "rollout");
        publish_fact(ctx, isvc, type_, note.reason, note.message.clone()).await;
    }
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
        note: Some(truncate(note, MAX_NOTE_BYTES)),
        action: "Reconcile".into(),
        secondary: None,
    };
    match recorder.publish(&event, &isvc.object_ref(&())).await {
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
    use super::truncate;

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("ééé".into(), 3), "é");
        assert_eq!(truncate("abcdef".into(), 4), "abcd");
    }
}
