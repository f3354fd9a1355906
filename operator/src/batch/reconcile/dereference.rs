//! The `dereference` step of a BatchInference: every read of one reconcile.
//! The BatchInference itself (fresh: status records which runs were made, and
//! the watch cache may not have seen the last status write), the
//! InferenceService it names, its CronJob, its runs' Jobs (its own and its
//! CronJob's, manual ones included) and their pods.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};

use crate::Result;
use crate::batch::decide::Observed;
use crate::crd::{BatchInference, InferenceService};
use crate::names::{BATCH_LABEL, JOB_NAME_LABEL};
use crate::reconcile::Context;
use crate::reconcile::dereference::owned_by;

/// Reads what one reconcile of `cached` needs; `None` when it is gone.
pub async fn dereference(
    cached: &BatchInference,
    ctx: &Context,
) -> Result<Option<(BatchInference, Observed)>> {
    let namespace = cached
        .namespace()
        .ok_or(crate::Error::MissingObjectKey("metadata.namespace"))?;
    let client = &ctx.client;
    let api: Api<BatchInference> = Api::namespaced(client.clone(), &namespace);
    let Some(batch) = api.get_opt(&cached.name_any()).await? else {
        return Ok(None);
    };
    let name = batch.name_any();
    let labelled = ListParams::default().labels(&format!("{BATCH_LABEL}={name}"));
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), &namespace);
    let cron_jobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let reference = batch.spec.inference_service_ref.as_ref();
    let (inference_service, cron_job, jobs) = futures::try_join!(
        async {
            match reference {
                Some(r) => isvcs.get_opt(&r.name).await,
                None => Ok(None),
            }
        },
        cron_jobs.get_opt(&name),
        jobs.list(&labelled),
    )?;
    // The pods after the Jobs: the Job controller ends a Job only once its
    // pods have ended, so a Job read as ended has its pods' final statuses
    // (and termination messages) in this later read. In the other order a
    // run could be recorded in the history without its last shards' figures.
    let pods = pods.list(&labelled).await?;
    let cron_job = cron_job.filter(|c| owned_by(c, &batch));
    let cron_uid = cron_job.as_ref().and_then(|c| c.meta().uid.clone());
    let jobs: Vec<Job> = jobs
        .items
        .into_iter()
        .filter(|job| {
            owned_by(job, &batch)
                || job
                    .owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == cron_uid.as_ref())
        })
        .collect();
    let pods = pods
        .items
        .into_iter()
        .filter(|pod| {
            pod.labels()
                .get(JOB_NAME_LABEL)
                .is_some_and(|job| jobs.iter().any(|j| &j.name_any() == job))
        })
        .collect();
    Ok(Some((
        batch,
        Observed {
            inference_service,
            cron_job,
            jobs,
            pods,
        },
    )))
}
