//! A BatchInference's status, computed from what the reconcile did and what
//! its runs' Jobs and pods show, and the transitions that become Events. Pure.
//!
//! A finished run is recorded in `status.history` once, with the figures its
//! pods reported, and stays there (oldest first, at most `historyLimit`) after
//! its Job and pods are gone.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::observe::observe;
use super::validate::Invalid;
use crate::crd::{BatchInference, BatchInferenceStatus, BatchPhase, BatchRun};
use crate::names::JOB_NAME_LABEL;
use crate::status::{Transition, Verdict, changed, condition, model_fetched};

/// Condition: the spec is valid, its model available, and its objects applied.
pub const RECONCILED: &str = "Reconciled";
/// Condition: the latest run's pods fetched and verified the model.
pub const MODEL_FETCHED: &str = "ModelFetched";
/// Condition: the latest run that ended succeeded.
pub const SUCCEEDED: &str = "Succeeded";

/// What the reconcile did before computing status.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Nothing was applied: the spec is invalid, or applying failed
    /// (`reason` `ApplyFailed`).
    Refused {
        /// CamelCase reason.
        reason: &'static str,
        /// Human message.
        message: String,
    },
    /// The plan was applied.
    Applied {
        /// The model the next run uses, when it is known.
        model: Option<String>,
        /// The run this reconcile created, if any.
        created: Option<String>,
        /// Why the current spec's run waits, if it does.
        waiting: Option<String>,
        /// Why no run can be made (the model is unavailable), if so.
        blocked: Option<Invalid>,
    },
}

/// Computes the status from `jobs` (the BatchInference's runs) and their
/// `pods`. `now` stamps conditions that changed; an unchanged world yields an
/// identical status.
pub fn compute(
    batch: &BatchInference,
    outcome: &Outcome,
    jobs: &[Job],
    pods: &[Pod],
    now: Time,
) -> BatchInferenceStatus {
    let old = batch.status.clone().unwrap_or_default();
    let spec = &batch.spec;
    let generation = batch.metadata.generation;
    let pods_of = |job: &str| -> Vec<&Pod> {
        pods.iter()
            .filter(|p| p.labels().get(JOB_NAME_LABEL).map(String::as_str) == Some(job))
            .collect()
    };
    let mut runs: Vec<(&Job, BatchRun)> = jobs
        .iter()
        .map(|job| (job, observe(job, &pods_of(&job.name_any()))))
        .collect();
    runs.sort_by_key(|(job, run)| (job.creation_timestamp(), run.job.clone()));

    // A run whose Job went away before it ended is recorded as failed.
    let vanished = old
        .latest_run
        .clone()
        .filter(|run| !run.phase.finished() && !runs.iter().any(|(_, r)| r.job == run.job))
        .map(|mut run| {
            run.phase = BatchPhase::Failed;
            run.completion_time = Some(now.clone());
            run.message = format!("its Job was deleted before the run ended; {}", run.message);
            run
        });
    let latest = runs
        .last()
        .map(|(_, run)| run.clone())
        .or(vanished.clone())
        .or(old.latest_run.clone());

    let mut history = old.history.clone();
    for run in runs
        .iter()
        .map(|(_, run)| run)
        .chain(vanished.as_ref())
        .filter(|run| run.phase.finished())
    {
        if !history.iter().any(|h| h.job == run.job) {
            history.push(run.clone());
        }
    }
    history.sort_by(|a, b| {
        (a.completion_time.as_ref().map(|t| t.0), &a.job)
            .cmp(&(b.completion_time.as_ref().map(|t| t.0), &b.job))
    });
    let keep = usize::try_from(spec.history_limit.max(1)).unwrap_or(1);
    if history.len() > keep {
        history.drain(..history.len() - keep);
    }

    let (reconciled, model) = match outcome {
        Outcome::Refused { reason, message } => (
            Verdict::new("False", reason, message.clone()),
            old.model.clone(),
        ),
        Outcome::Applied {
            blocked: Some(why), ..
        } => (
            Verdict::new("False", why.reason(), why.to_string()),
            old.model.clone(),
        ),
        Outcome::Applied { model, .. } => (
            Verdict::new(
                "True",
                "Applied",
                "the spec is valid and its objects are applied",
            ),
            model.clone().or(old.model.clone()),
        ),
    };
    let latest_pods = latest
        .as_ref()
        .map(|run| pods_of(&run.job))
        .unwrap_or_default();
    let fetched = if latest.is_some() {
        model_fetched(&latest_pods)
    } else {
        Verdict::new("Unknown", "NoRun", "no run has started yet")
    };
    let last_ended = latest
        .iter()
        .filter(|run| run.phase.finished())
        .chain(history.last())
        .next();
    let succeeded = match last_ended {
        Some(run) if run.phase == BatchPhase::Succeeded => Verdict::new(
            "True",
            "RunSucceeded",
            format!("run {}: {}", run.job, run.message),
        ),
        Some(run) => Verdict::new(
            "False",
            "RunFailed",
            format!("run {}: {}", run.job, run.message),
        ),
        None => Verdict::new("Unknown", "NoRunEnded", "no run has ended yet"),
    };

    let (phase, message) = phase(batch, outcome, &reconciled, latest.as_ref());
    let conditions = [
        (RECONCILED, &reconciled),
        (MODEL_FETCHED, &fetched),
        (SUCCEEDED, &succeeded),
    ]
    .into_iter()
    .map(|(type_, verdict)| condition(&old.conditions, type_, verdict, generation, &now))
    .collect();
    BatchInferenceStatus {
        observed_generation: generation,
        conditions,
        phase: Some(phase),
        message: Some(message),
        model,
        latest_run: latest,
        history,
    }
}

/// The BatchInference's phase and message: a refusal fails it; otherwise the
/// latest run's, unless the spec holds the runs (suspended), cannot make one
/// (blocked), or has not made one yet.
fn phase(
    batch: &BatchInference,
    outcome: &Outcome,
    reconciled: &Verdict,
    latest: Option<&BatchRun>,
) -> (BatchPhase, String) {
    let spec = &batch.spec;
    let active = latest.filter(|run| !run.phase.finished());
    let (created, waiting) = match outcome {
        Outcome::Refused { .. } => return (BatchPhase::Failed, reconciled.message.clone()),
        Outcome::Applied {
            created, waiting, ..
        } => (created, waiting),
    };
    if let Some(run) = active {
        return (run.phase, format!("run {}: {}", run.job, run.message));
    }
    if spec.suspend {
        return (
            BatchPhase::Suspended,
            "spec.suspend holds the runs: none starts until it is false".into(),
        );
    }
    if reconciled.status == "False" {
        return (BatchPhase::Failed, reconciled.message.clone());
    }
    if let Some(run) = created {
        return (BatchPhase::Pending, format!("run {run} created"));
    }
    if let Some(waiting) = waiting {
        return (BatchPhase::Pending, waiting.clone());
    }
    match (latest, &spec.schedule) {
        (Some(run), Some(schedule)) => (
            run.phase,
            format!(
                "run {}: {}; the next run follows the schedule {schedule:?}",
                run.job, run.message
            ),
        ),
        (Some(run), None) => (run.phase, format!("run {}: {}", run.job, run.message)),
        (None, Some(schedule)) => (
            BatchPhase::Pending,
            format!("waiting for the first run on the schedule {schedule:?}"),
        ),
        (None, None) => (BatchPhase::Pending, "the run is being created".into()),
    }
}

/// What changed between `old` and `new` that deserves an Event: each run that
/// started or ended (`RunStarted`, `RunSucceeded`, `RunFailed`), suspension
/// and resumption, and each condition that changed (its reason; warnings for
/// `False`), except `Succeeded`, which the run Events say.
pub fn transitions(
    old: Option<&BatchInferenceStatus>,
    new: &BatchInferenceStatus,
) -> Vec<Transition> {
    let mut events = Vec::new();
    let old_latest = old.and_then(|s| s.latest_run.as_ref());
    if let Some(run) = &new.latest_run
        && old_latest.is_none_or(|o| o.job != run.job)
        && !run.phase.finished()
    {
        events.push((
            false,
            "RunStarted".to_string(),
            format!(
                "run {} started: {} shard{}, model {}, predictions in {}",
                run.job,
                run.shards,
                if run.shards == 1 { "" } else { "s" },
                run.model.as_deref().unwrap_or("?"),
                run.output
            ),
        ));
    }
    let old_history = old.map(|s| s.history.as_slice()).unwrap_or_default();
    for run in &new.history {
        if old_history.iter().any(|h| h.job == run.job) {
            continue;
        }
        let (warning, reason) = match run.phase {
            BatchPhase::Succeeded => (false, "RunSucceeded"),
            _ => (true, "RunFailed"),
        };
        events.push((
            warning,
            reason.to_string(),
            format!("run {}: {}", run.job, run.message),
        ));
    }
    let was = old.and_then(|s| s.phase);
    match (was, new.phase) {
        (Some(was), Some(BatchPhase::Suspended)) if was != BatchPhase::Suspended => events.push((
            false,
            "Suspended".into(),
            new.message.clone().unwrap_or_default(),
        )),
        (Some(BatchPhase::Suspended), Some(now)) if now != BatchPhase::Suspended => events.push((
            false,
            "Resumed".into(),
            new.message.clone().unwrap_or_default(),
        )),
        _ => {}
    }
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    events.extend(
        changed(old_conditions, &new.conditions)
            .filter(|c| c.type_ != SUCCEEDED)
            .map(|c| (c.status == "False", c.reason.clone(), c.message.clone())),
    );
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{COMPLETION_INDEX_ANNOTATION, MODEL_ANNOTATION, OUTPUT_ANNOTATION};
    use jiff::Timestamp;
    use serde_json::{Value, json};

    fn now() -> Time {
        Time(Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn batch(spec: Value, status: Value) -> BatchInference {
        let mut full = json!({
            "model": {"storageUri": "s3://m/model.onnx"},
            "input": "s3://data/in/",
            "output": "s3://preds",
        });
        for (key, value) in spec.as_object().unwrap() {
            full[key] = value.clone();
        }
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "BatchInference",
            "metadata": {"name": "score", "namespace": "ml", "uid": "u", "generation": 2},
            "spec": full,
            "status": status,
        }))
        .unwrap()
    }

    fn job(name: &str, created: i64, status: Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": Timestamp::from_second(created).unwrap().to_string(),
                         "annotations": {OUTPUT_ANNOTATION: "s3://preds", MODEL_ANNOTATION: "s3://m/model.onnx"}},
            "spec": {"completions": 2, "template": {"spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    fn shard_pod(job: &str, shard: i32, rows: u64) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-{shard}"), "labels": {JOB_NAME_LABEL: job},
                         "annotations": {COMPLETION_INDEX_ANNOTATION: shard.to_string()}},
            "status": {
                "initContainerStatuses": [{"name": "fetch-model", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [{"name": "batch", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 0,
                    "message": json!({"rows": rows, "rejected": 0, "seconds": 1.0}).to_string(),
                    "finishedAt": "2027-01-15T08:00:00Z"}}}],
            },
        }))
        .unwrap()
    }

    fn applied() -> Outcome {
        Outcome::Applied {
            model: Some("s3://m/model.onnx".into()),
            created: None,
            waiting: None,
            blocked: None,
        }
    }

    fn done() -> Value {
        json!({"startTime": "2027-01-15T07:59:00Z", "completionTime": "2027-01-15T08:00:00Z",
               "succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]})
    }

    #[test]
    fn a_run_goes_from_started_to_succeeded_with_an_event_each() {
        let b = batch(json!({}), json!(null));
        let created = compute(
            &b,
            &Outcome::Applied {
                model: Some("s3://m/model.onnx".into()),
                created: Some("score-r1".into()),
                waiting: None,
                blocked: None,
            },
            &[],
            &[],
            now(),
        );
        assert_eq!(created.phase, Some(BatchPhase::Pending));
        assert_eq!(created.message.as_deref(), Some("run score-r1 created"));

        let b = batch(json!({}), serde_json::to_value(&created).unwrap());
        let running = compute(
            &b,
            &applied(),
            &[job("score-r1", 1, json!({"active": 2, "ready": 2}))],
            &[],
            now(),
        );
        assert_eq!(running.phase, Some(BatchPhase::Running));
        let events = transitions(Some(&created), &running);
        assert_eq!(events[0].1, "RunStarted");
        assert!(
            events[0]
                .2
                .contains("2 shards, model s3://m/model.onnx, predictions in s3://preds/score-r1")
        );

        let b = batch(json!({}), serde_json::to_value(&running).unwrap());
        let pods = [shard_pod("score-r1", 0, 30), shard_pod("score-r1", 1, 12)];
        let finished = compute(&b, &applied(), &[job("score-r1", 1, done())], &pods, now());
        assert_eq!(finished.phase, Some(BatchPhase::Succeeded));
        let run = finished.latest_run.as_ref().unwrap();
        assert_eq!((run.rows, run.completions.as_str()), (42, "2/2"));
        assert_eq!(finished.history.len(), 1);
        let conditions: Vec<(&str, &str, &str)> = finished
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            conditions,
            [
                ("Reconciled", "True", "Applied"),
                ("ModelFetched", "True", "Fetched"),
                ("Succeeded", "True", "RunSucceeded")
            ]
        );
        let events: Vec<String> = transitions(Some(&running), &finished)
            .into_iter()
            .map(|(_, reason, _)| reason)
            .collect();
        assert_eq!(events, ["RunSucceeded", "Fetched"]);

        // Nothing changed: the same status, no Event.
        let b = batch(json!({}), serde_json::to_value(&finished).unwrap());
        let again = compute(&b, &applied(), &[job("score-r1", 1, done())], &pods, now());
        assert_eq!(again, finished);
        assert!(transitions(Some(&finished), &again).is_empty());
    }

    #[test]
    fn history_outlives_jobs_and_keeps_the_newest_runs() {
        let run = |job: &str, second: i64| {
            json!({"job": job, "phase": "Succeeded", "shards": 1, "shardsSucceeded": 1,
                   "completions": "1/1", "output": "s3://preds", "message": "",
                   "completionTime": Timestamp::from_second(second).unwrap().to_string()})
        };
        let b = batch(
            json!({"historyLimit": 2, "schedule": "@daily"}),
            json!({"latestRun": run("score-2", 2), "history": [run("score-1", 1), run("score-2", 2)]}),
        );
        let status = compute(&b, &applied(), &[job("score-3", 3, done())], &[], now());
        let kept: Vec<&str> = status.history.iter().map(|r| r.job.as_str()).collect();
        assert_eq!(
            kept,
            ["score-2", "score-3"],
            "Jobs 1 and 2 are gone; 1 fell out"
        );
        assert_eq!(status.latest_run.unwrap().job, "score-3");
        assert!(
            status
                .message
                .unwrap()
                .ends_with("the next run follows the schedule \"@daily\"")
        );
    }

    #[test]
    fn a_refusal_or_a_missing_model_fails_it_and_says_why() {
        let b = batch(json!({}), json!(null));
        let refused = compute(
            &b,
            &Outcome::Refused {
                reason: "InvalidSpec",
                message: "spec.schedule \"x\": expected 5 fields".into(),
            },
            &[],
            &[],
            now(),
        );
        assert_eq!(refused.phase, Some(BatchPhase::Failed));
        assert_eq!(refused.conditions[0].reason, "InvalidSpec");
        assert_eq!(refused.conditions[0].observed_generation, Some(2));
        let events = transitions(None, &refused);
        assert_eq!(
            events,
            [(
                true,
                "InvalidSpec".to_string(),
                "spec.schedule \"x\": expected 5 fields".to_string()
            )]
        );

        let blocked = compute(
            &b,
            &Outcome::Applied {
                model: None,
                created: None,
                waiting: None,
                blocked: Some(Invalid::NotFound {
                    name: "fraud".into(),
                    namespace: "ml".into(),
                }),
            },
            &[],
            &[],
            now(),
        );
        assert_eq!(blocked.phase, Some(BatchPhase::Failed));
        assert!(
            blocked
                .message
                .unwrap()
                .contains("InferenceService \"fraud\" not found")
        );
        assert_eq!(blocked.conditions[0].reason, "InferenceServiceNotFound");
    }

    #[test]
    fn a_deleted_running_job_is_a_failed_run_and_suspension_is_its_own_phase() {
        let b = batch(json!({}), json!(null));
        let running = compute(
            &b,
            &applied(),
            &[job("score-r1", 1, json!({"active": 1, "ready": 1}))],
            &[],
            now(),
        );
        let b = batch(json!({}), serde_json::to_value(&running).unwrap());
        let gone = compute(&b, &applied(), &[], &[], now());
        let run = gone.latest_run.as_ref().unwrap();
        assert_eq!(run.phase, BatchPhase::Failed);
        assert!(
            run.message
                .starts_with("its Job was deleted before the run ended")
        );
        assert_eq!(gone.history.len(), 1);

        let suspended = batch(
            json!({"suspend": true}),
            serde_json::to_value(&gone).unwrap(),
        );
        let status = compute(&suspended, &applied(), &[], &[], now());
        assert_eq!(status.phase, Some(BatchPhase::Suspended));
        assert!(
            transitions(Some(&gone), &status)
                .iter()
                .any(|(_, reason, _)| reason == "Suspended")
        );
    }
}
