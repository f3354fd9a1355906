//! The `update_status` step: computes the status ([`status::compute`], pure) and
//! writes it only when it changed, with an Event per condition transition.

use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::{Context, FIELD_MANAGER};
use super::dereference::Objects;
use super::events::publish;
use crate::crd::{InferenceService, Phase};
use crate::status::{self, Outcome};
use crate::{Error, Result};

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
        &observed.endpoints,
        Time(Timestamp::now()),
    );
    let ready = new.phase == Some(Phase::Ready);
    if isvc.status.as_ref() == Some(&new) {
        return Ok(ready);
    }
    write_status(isvc, &new, ctx).await?;
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

/// Writes `status` as `object`'s whole status, server-side applied by the
/// operator's field manager (InferenceServices and BatchInferences alike).
pub async fn write_status<K, S>(object: &K, status: &S, ctx: &Context) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
    S: Serialize,
{
    let namespace = object
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    ctx.metrics.write(&K::kind(&()), "status");
    Ok(())
}
