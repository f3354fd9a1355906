//! The `update_status` step: computes the status ([`status::compute`], pure) and
//! writes it only when it changed, with an Event per condition transition.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::context::{Context, FIELD_MANAGER};
use super::dereference::{Objects, namespace};
use super::events::publish;
use crate::Result;
use crate::crd::{InferenceService, Phase};
use crate::status::{self, Outcome};

/// Writes the status `outcome` and `observed` give, when it differs from the one
/// `isvc` has. Returns whether the InferenceService is Ready.
pub async fn update_status(
    isvc: &InferenceService,
    outcome: &Outcome,
    observed: &Objects,
    ctx: &Context,
) -> Result<bool> {
    let new = status::compute(
        isvc,
        outcome,
        &observed.workloads,
        &observed.pods,
        Time(Timestamp::now()),
    );
    let ready = new.phase == Some(Phase::Ready);
    if isvc.status.as_ref() == Some(&new) {
        return Ok(ready);
    }
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &namespace(isvc)?);
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
