//! The `decide` step of a BatchInference: from the validated spec and what
//! the cluster holds, which run to start, whether the CronJob stays, which
//! Jobs to suspend or resume, and which old Jobs go. Pure.
//!
//! - Without `schedule`, the spec runs once: one Job, named after a hash of
//!   what shapes the run ([`ValidBatch::run`]). A new spec (or a new value of
//!   the rerun annotation) is a new run; it waits while a run of an earlier
//!   spec is still going, like a CronJob's `Forbid`. A run that finished is
//!   never made again, even when its Job is deleted.
//! - With `schedule`, a CronJob makes the runs, and no one-time run is made.
//! - `suspend` suspends every unfinished run's Job (its pods stop; it goes on
//!   from its last published parts when resumed) and the CronJob.
//! - Finished one-time runs beyond the newest [`KEEP_FINISHED`] lose their
//!   Job (their figures stay in `status.history`), as a CronJob keeps its own.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::observe::finished;
use super::validate::{Invalid, Resolved, ValidBatch};
use crate::crd::{BatchInference, InferenceService};

/// Finished Jobs kept per kind: a CronJob's `successfulJobsHistoryLimit` and
/// `failedJobsHistoryLimit`, and the finished one-time runs kept besides the
/// current spec's.
pub const KEEP_FINISHED: i32 = 3;

/// What the cluster holds for one BatchInference (what `dereference` read).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The InferenceService `spec.inferenceServiceRef` names, if it exists.
    pub inference_service: Option<InferenceService>,
    /// The CronJob it owns, with a schedule.
    pub cron_job: Option<CronJob>,
    /// Its runs' Jobs: its own one-time runs and its CronJob's runs.
    pub jobs: Vec<Job>,
    /// The pods of those Jobs.
    pub pods: Vec<Pod>,
}

/// What this reconcile will make true.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Create the one-time run's Job ([`ValidBatch::run`]).
    pub create_run: bool,
    /// Apply the CronJob.
    pub apply_cron_job: bool,
    /// Delete this CronJob (the schedule was removed); its Jobs go with it.
    pub delete_cron_job: Option<String>,
    /// Unfinished Jobs whose `spec.suspend` must change, and to what.
    pub suspend: Vec<(String, bool)>,
    /// Finished one-time runs' Jobs to delete.
    pub delete_jobs: Vec<String>,
    /// Why the current spec's run has not started, when it waits.
    pub waiting: Option<String>,
    /// Why no run can be made now (the model is unavailable), when one should.
    pub blocked: Option<Invalid>,
}

/// Decides the round for `valid` from `observed`.
pub fn decide(valid: &ValidBatch, observed: &Observed) -> Plan {
    let batch = valid.batch;
    let spec = &batch.spec;
    let mut plan = Plan::default();
    let one_time: Vec<&Job> = observed
        .jobs
        .iter()
        .filter(|job| one_time_run(job, batch))
        .collect();
    let model = || match &valid.model {
        Resolved::Model(_) => Ok(()),
        Resolved::Unavailable(why) => Err(why.clone()),
    };
    match &spec.schedule {
        None => {
            plan.delete_cron_job = observed.cron_job.as_ref().map(ResourceExt::name_any);
            let exists = observed.jobs.iter().any(|job| job.name_any() == valid.run);
            if !exists && !recorded(batch, &valid.run) {
                if let Some(earlier) = one_time.iter().find(|job| !finished(job)) {
                    plan.waiting = Some(format!(
                        "the run of this spec starts when run {} (of an earlier spec) ends; delete Job {} to start it now",
                        earlier.name_any(),
                        earlier.name_any()
                    ));
                } else {
                    match model() {
                        Ok(()) => plan.create_run = true,
                        Err(why) => plan.blocked = Some(why),
                    }
                }
            }
        }
        Some(_) => match model() {
            Ok(()) => plan.apply_cron_job = true,
            Err(why) => plan.blocked = Some(why),
        },
    }
    plan.suspend = observed
        .jobs
        .iter()
        .filter(|job| !finished(job))
        .filter(|job| job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false) != spec.suspend)
        .map(|job| (job.name_any(), spec.suspend))
        .collect();
    let mut old: Vec<&Job> = one_time
        .into_iter()
        .filter(|job| finished(job) && job.name_any() != valid.run)
        .collect();
    old.sort_by_key(|job| std::cmp::Reverse(job.creation_timestamp()));
    plan.delete_jobs = old
        .into_iter()
        .skip(KEEP_FINISHED as usize)
        .map(ResourceExt::name_any)
        .collect();
    plan
}

/// Whether `job` is one of `batch`'s one-time runs (it owns it directly; a
/// CronJob owns the scheduled ones).
pub fn one_time_run(job: &Job, batch: &BatchInference) -> bool {
    let uid = batch.metadata.uid.as_deref();
    job.owner_references()
        .iter()
        .any(|o| Some(o.uid.as_str()) == uid && o.controller == Some(true))
}

/// Whether `batch`'s status has a record of the run `job`.
fn recorded(batch: &BatchInference, job: &str) -> bool {
    batch.status.as_ref().is_some_and(|status| {
        status
            .latest_run
            .iter()
            .chain(&status.history)
            .any(|run| run.job == job)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate::validate;
    use serde_json::{Value, json};

    fn batch(changes: Value, status: Value) -> BatchInference {
        let mut spec = json!({
            "model": {"storageUri": "s3://m/model.onnx"},
            "input": "s3://data/in/",
            "output": "s3://preds/",
        });
        for (key, value) in changes.as_object().unwrap() {
            if value.is_null() {
                spec.as_object_mut().unwrap().remove(key);
            } else {
                spec[key] = value.clone();
            }
        }
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "BatchInference",
            "metadata": {"name": "score", "namespace": "ml", "uid": "bi-uid"},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    /// A Job named `name`, owned by the BatchInference (`one_time`) or by its
    /// CronJob, created at second `created`, in `state`.
    fn job(name: &str, one_time: bool, created: i64, state: &str, suspend: bool) -> Job {
        let owner = if one_time {
            json!({"apiVersion": "serving.sluice.dev/v1alpha1", "kind": "BatchInference",
                   "name": "score", "uid": "bi-uid", "controller": true})
        } else {
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "score",
                   "uid": "cron-uid", "controller": true})
        };
        let conditions = match state {
            "done" => json!([{"type": "Complete", "status": "True"}]),
            "failed" => json!([{"type": "Failed", "status": "True"}]),
            _ => json!([]),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": [owner],
                         "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"suspend": suspend, "template": {"spec": {"containers": []}}},
            "status": {"active": if state == "running" { 1 } else { 0 }, "conditions": conditions},
        }))
        .unwrap()
    }

    fn plan(b: &BatchInference, jobs: Vec<Job>) -> Plan {
        let valid = validate(b, None).unwrap();
        decide(
            &valid,
            &Observed {
                jobs,
                ..Observed::default()
            },
        )
    }

    fn run_name(b: &BatchInference) -> String {
        validate(b, None).unwrap().run
    }

    #[test]
    fn a_one_time_spec_runs_once() {
        let b = batch(json!({}), json!(null));
        let run = run_name(&b);
        let first = plan(&b, vec![]);
        assert!(first.create_run && !first.apply_cron_job);
        assert_eq!(first.blocked, None);

        let again = plan(&b, vec![job(&run, true, 10, "running", false)]);
        assert!(!again.create_run, "its Job exists");
        assert_eq!(again, Plan::default());

        let recorded = batch(
            json!({}),
            json!({"history": [{"job": run, "phase": "Succeeded",
            "shards": 1, "shardsSucceeded": 1, "completions": "1/1", "output": "s3://preds/x"}]}),
        );
        assert!(
            !plan(&recorded, vec![]).create_run,
            "a finished run is not made again when its Job is deleted"
        );
    }

    #[test]
    fn a_new_spec_waits_for_the_run_of_the_earlier_one() {
        let b = batch(json!({"input": "s3://data/other/"}), json!(null));
        let waiting = plan(&b, vec![job("score-old", true, 10, "running", false)]);
        assert!(!waiting.create_run);
        assert!(waiting.waiting.as_deref().unwrap().starts_with(
            "the run of this spec starts when run score-old (of an earlier spec) ends"
        ));
        let next = plan(&b, vec![job("score-old", true, 10, "done", false)]);
        assert!(next.create_run && next.waiting.is_none());
    }

    #[test]
    fn a_schedule_makes_a_cron_job_and_removing_it_deletes_it() {
        let scheduled = batch(json!({"schedule": "0 2 * * *"}), json!(null));
        let p = plan(
            &scheduled,
            vec![job("score-29000000", false, 10, "running", false)],
        );
        assert!(p.apply_cron_job && !p.create_run);

        let b = batch(json!({}), json!(null));
        let valid = validate(&b, None).unwrap();
        let cron: CronJob = serde_json::from_value(json!({"metadata": {"name": "score"},
            "spec": {"schedule": "0 2 * * *", "jobTemplate": {}}}))
        .unwrap();
        let p = decide(
            &valid,
            &Observed {
                cron_job: Some(cron),
                ..Observed::default()
            },
        );
        assert_eq!(p.delete_cron_job.as_deref(), Some("score"));
        assert!(p.create_run, "without a schedule the spec runs once");
    }

    #[test]
    fn suspend_reaches_every_unfinished_run() {
        let b = batch(json!({"suspend": true, "schedule": "@hourly"}), json!(null));
        let p = plan(
            &b,
            vec![
                job("score-1", false, 10, "running", false),
                job("score-2", false, 20, "running", true),
                job("score-0", false, 5, "done", false),
            ],
        );
        assert_eq!(p.suspend, [("score-1".to_string(), true)]);
        let resumed = batch(json!({"schedule": "@hourly"}), json!(null));
        let p = plan(&resumed, vec![job("score-2", false, 20, "running", true)]);
        assert_eq!(p.suspend, [("score-2".to_string(), false)]);
    }

    #[test]
    fn old_one_time_runs_beyond_the_newest_three_lose_their_jobs() {
        let b = batch(json!({}), json!(null));
        let run = run_name(&b);
        let jobs = vec![
            job("score-a", true, 1, "done", false),
            job("score-b", true, 2, "failed", false),
            job("score-c", true, 3, "done", false),
            job("score-d", true, 4, "done", false),
            job("score-e", true, 5, "done", false),
            job("score-x", false, 6, "done", false),
            job(&run, true, 7, "done", false),
        ];
        assert_eq!(plan(&b, jobs).delete_jobs, ["score-b", "score-a"]);
    }

    #[test]
    fn a_missing_inference_service_blocks_new_runs_only() {
        let b = batch(
            json!({"model": null, "inferenceServiceRef": {"name": "fraud"}}),
            json!(null),
        );
        let run = run_name(&b);
        let blocked = plan(&b, vec![]);
        assert!(!blocked.create_run);
        assert_eq!(
            blocked.blocked.unwrap().reason(),
            "InferenceServiceNotFound"
        );
        let ran = plan(&b, vec![job(&run, true, 1, "done", false)]);
        assert_eq!(
            ran.blocked, None,
            "the run was made; nothing needs the model now"
        );
        let scheduled = batch(
            json!({"model": null, "inferenceServiceRef": {"name": "fraud"}, "schedule": "@daily"}),
            json!(null),
        );
        let p = plan(&scheduled, vec![]);
        assert!(!p.apply_cron_job && p.blocked.is_some() && p.delete_cron_job.is_none());
    }
}
