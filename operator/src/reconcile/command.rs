//! Manual commands from the `serving.sluice.dev/rollout` annotation that write to
//! the InferenceService itself: removing the annotation once acted on, and
//! `rollback`, which puts the previous stable revision back into the spec.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::context::Context;
use super::events::publish;
use super::validate::Validated;
use crate::Result;
use crate::crd::InferenceService;
use crate::rollout::control;

/// Removes the manual-command annotation once it was acted on.
pub async fn clear(valid: &Validated<'_>, ctx: &Context) -> Result<()> {
    api(valid, ctx)
        .patch(
            &valid.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {control::ANNOTATION: null}}})),
        )
        .await?;
    ctx.metrics.write("InferenceService", "annotation");
    Ok(())
}

/// The `rollback` command: puts the previous stable revision's model and runtime
/// back into the spec (which starts a rollout to it) and removes the annotation.
pub async fn rollback(valid: &Validated<'_>, ctx: &Context) -> Result<()> {
    let isvc = valid.isvc;
    let status = isvc.status.clone().unwrap_or_default();
    let target = match control::rollback_target(&status.history, status.stable_revision.as_deref())
    {
        Ok(target) => target,
        Err(message) => {
            publish(ctx, isvc, EventType::Warning, "RollbackRefused", message).await;
            return clear(valid, ctx).await;
        }
    };
    let api = api(valid, ctx);
    let mut replacement = json!({
        "metadata": {"annotations": {control::ANNOTATION: null}},
        "spec": {"model": null, "runtime": null},
    });
    // A merge patch merges objects; null first, then the whole value, replaces them.
    api.patch(
        &valid.name,
        &PatchParams::default(),
        &Patch::Merge(&replacement),
    )
    .await?;
    replacement["spec"]["model"] = serde_json::to_value(&target.model)?;
    replacement["spec"]["runtime"] =
        serde_json::to_value(target.runtime.clone().unwrap_or_default())?;
    replacement["metadata"] = json!({});
    api.patch(
        &valid.name,
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

fn api(valid: &Validated<'_>, ctx: &Context) -> Api<InferenceService> {
    Api::namespaced(ctx.client.clone(), &valid.namespace)
}
