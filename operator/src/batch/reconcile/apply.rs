//! The `apply` step of a BatchInference: creates the one-time run's Job,
//! applies the CronJob when it changed (its applied hash), deletes a CronJob
//! no longer scheduled, suspends or resumes unfinished runs, and deletes the
//! Jobs of old one-time runs, as `decide` planned.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use crate::Result;
use crate::batch::build::Desired;
use crate::batch::decide::{Observed, Plan};
use crate::batch::validate::ValidBatch;
use crate::reconcile::Context;
use crate::reconcile::apply::{apply_one, create_job};
use crate::reconcile::events::publish;

/// Makes the cluster hold what `plan` and `desired` say. Returns what it wrote.
pub async fn apply(
    valid: &ValidBatch<'_>,
    plan: &Plan,
    desired: Option<&Desired>,
    observed: &Observed,
    ctx: &Context,
) -> Result<Vec<String>> {
    let namespace = &valid.namespace;
    let mut written = Vec::new();
    match desired {
        Some(Desired::Run(job)) if plan.create_run => {
            create_job(job, ctx).await?;
            written.push(format!("created Job {}", job.name_any()));
        }
        Some(Desired::Schedule(cron_job))
            if plan.apply_cron_job
                && apply_one(
                    namespace,
                    cron_job.as_ref(),
                    observed.cron_job.as_ref(),
                    ctx,
                )
                .await? =>
        {
            let verb = match observed.cron_job {
                Some(_) => "updated",
                None => "created",
            };
            written.push(format!("{verb} CronJob {}", cron_job.name_any()));
        }
        _ => {}
    }
    let background = DeleteParams::background();
    if let Some(name) = &plan.delete_cron_job {
        let cron_jobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), namespace);
        gone_is_fine(cron_jobs.delete(name, &background).await.map(|_| ()))?;
        ctx.metrics.write("CronJob", "delete");
        written.push(format!(
            "deleted CronJob {name} (spec.schedule was removed)"
        ));
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    for (name, suspend) in &plan.suspend {
        let patch = json!({"spec": {"suspend": suspend}});
        gone_is_fine(
            jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )?;
        ctx.metrics.write("Job", "patch");
        let verb = if *suspend { "suspended" } else { "resumed" };
        written.push(format!("{verb} Job {name}"));
    }
    for name in &plan.delete_jobs {
        gone_is_fine(jobs.delete(name, &background).await.map(|_| ()))?;
        ctx.metrics.write("Job", "delete");
        written.push(format!(
            "deleted Job {name} (an old run, kept in status.history)"
        ));
    }
    if !written.is_empty() {
        let note = written.join(", ");
        let reason = if written.iter().any(|w| w.starts_with("created")) {
            "Created"
        } else {
            "Updated"
        };
        info!(batch = %valid.name, %namespace, reason, note, "applied");
        publish(ctx, valid.batch, EventType::Normal, reason, note).await;
    }
    Ok(written)
}

/// A write to an object someone else deleted meanwhile is no failure.
fn gone_is_fine(result: kube::Result<()>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => Ok(other?),
    }
}
