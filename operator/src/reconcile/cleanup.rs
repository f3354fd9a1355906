//! What happens when an InferenceService is deleted: its objects go first, then
//! the finalizer lets it go. Owner references would remove them too, through the
//! garbage collector; deleting them here makes removal prompt and independent of it.

use kube::ResourceExt;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use tracing::info;

use super::apply::delete_each;
use super::context::Context;
use super::dereference::{namespace, objects};
use super::events::publish;
use crate::Result;
use crate::crd::InferenceService;
use crate::workload::Workload;

/// Deletes every object `isvc` owns.
pub async fn cleanup(isvc: &InferenceService, ctx: &Context) -> Result<Action> {
    let namespace = namespace(isvc)?;
    let name = isvc.name_any();
    let params = DeleteParams::background();
    let owned = objects(isvc, &ctx.client).await?;
    let deployments: Vec<_> = owned
        .workloads
        .iter()
        .filter_map(Workload::deployment)
        .collect();
    delete_each(deployments, &namespace, &params, ctx).await?;
    let daemon_sets: Vec<_> = owned
        .workloads
        .iter()
        .filter_map(Workload::daemon_set)
        .collect();
    delete_each(daemon_sets, &namespace, &params, ctx).await?;
    delete_each(&owned.services, &namespace, &params, ctx).await?;
    delete_each(&owned.pdb, &namespace, &params, ctx).await?;
    delete_each(&owned.network_policy, &namespace, &params, ctx).await?;
    delete_each(&owned.config_maps, &namespace, &params, ctx).await?;
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
