//! Manual commands from the `serving.sluice.dev/rollout` annotation that write to
//! the InferenceService itself: removing the annotation once acted on, and
//! `rollback`, which records the previous stable revision in `status.rollback`.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::context::Context;
use super::events::publish;
use super::update_status::write_status;
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

/// The `rollback` command: records in `status.rollback` that the previous stable
/// revision's model and runtime serve in place of the spec's (the next reconcile
/// rolls out to it, see [`control::in_force`]) and removes the annotation. The
/// spec is never written, so a GitOps tool that owns it sees no drift; a revert
/// in Git, or a new model, ends the rollback.
pub async fn rollback(valid: &Validated<'_>, ctx: &Context) -> Result<()> {
    let isvc = valid.isvc;
    let mut status = isvc.status.clone().unwrap_or_default();
    let spec_revision = control::spec_revision(isvc, &ctx.config)?;
    let pinned = control::rollback(
        &status.history,
        status.stable_revision.as_deref(),
        spec_revision,
        Time(Timestamp::now()),
    );
    let pinned = match pinned {
        Ok(pinned) => pinned,
        Err(message) => {
            publish(ctx, isvc, EventType::Warning, "RollbackRefused", message).await;
            return clear(valid, ctx).await;
        }
    };
    let message = format!(
        "revision {} ({}) serves in place of the spec's until the spec changes; it rolls out like any new revision",
        pinned.revision, pinned.model.storage_uri
    );
    status.rollback = Some(pinned);
    write_status(isvc, &status, ctx).await?;
    clear(valid, ctx).await?;
    publish(ctx, isvc, EventType::Normal, "RollbackRequested", message).await;
    Ok(())
}

fn api(valid: &Validated<'_>, ctx: &Context) -> Api<InferenceService> {
    Api::namespaced(ctx.client.clone(), &valid.namespace)
}
