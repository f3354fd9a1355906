//! One batch run as the cluster shows it: its Job's status (phase, shards
//! done and failed, times) and its pods' summaries (rows, rejects, speed, and
//! each failed shard's error), as a [`BatchRun`]. Pure.

use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::summary::{self, Outcome};
use crate::crd::{BatchPhase, BatchRun, ShardFailure};
use crate::names::{MODEL_ANNOTATION, OUTPUT_ANNOTATION};

/// The most failed shards a run's status lists.
pub const MAX_FAILURES: usize = 5;
/// The longest error message a run's status keeps per shard.
const MAX_MESSAGE: usize = 1000;

/// The run `job` is, from its status and its `pods`.
pub fn observe(job: &Job, pods: &[&Pod]) -> BatchRun {
    let name = job.name_any();
    let status = job.status.clone().unwrap_or_default();
    let shards = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(1);
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed_indexes.as_deref().map_or(0, count_indexes);
    let ready = status.ready.unwrap_or(0);
    let starting = status.active.unwrap_or(0) - ready;
    let phase = phase(job);
    let attempts = summary::attempts(pods);
    let latest = summary::latest(&attempts);
    let reported: Vec<_> = latest.iter().filter_map(|a| a.summary()).collect();
    let rows: u64 = reported.iter().map(|s| s.rows).sum();
    let rejected: u64 = reported.iter().map(|s| s.rejected).sum();
    let longest = reported.iter().map(|s| s.seconds).fold(0.0, f64::max);
    let rows_per_second = (rows > 0 && longest > 0.0).then(|| round(rows as f64 / longest));
    let failures: Vec<ShardFailure> = latest
        .iter()
        .filter_map(|a| match &a.outcome {
            Outcome::Failed { kind, message, .. } => Some(ShardFailure {
                shard: a.shard,
                kind: kind.clone(),
                message: cut(message),
                pod: a.pod.clone(),
            }),
            Outcome::Succeeded(_) => None,
        })
        .take(MAX_FAILURES)
        .collect();
    let output = job
        .annotations()
        .get(OUTPUT_ANNOTATION)
        .map(|base| output_folder(base, &name))
        .unwrap_or_default();
    let first_failure = failures
        .first()
        .map(|f| format!("shard {} ({}): {}", f.shard, f.kind, f.message));
    let speed = rows_per_second
        .map(|r| format!(" at {r} rows/s"))
        .unwrap_or_default();
    let message = match phase {
        BatchPhase::Succeeded => format!(
            "{rows} rows predicted and {rejected} rejected by {shards} shard{}{speed}; predictions in {output}",
            plural(shards)
        ),
        BatchPhase::Failed => {
            let why = ended(job, &["Failed", "FailureTarget"])
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.as_deref().unwrap_or("Failed"),
                        c.message.as_deref().unwrap_or("the Job failed")
                    )
                })
                .unwrap_or_else(|| "the Job failed".into());
            let mut message = format!("{succeeded} of {shards} shards finished; {why}");
            if let Some(failure) = &first_failure {
                message.push_str(&format!("; {failure}"));
            }
            message
        }
        BatchPhase::Running => {
            let mut message = format!("{succeeded} of {shards} shards finished, {ready} running");
            if starting > 0 {
                message.push_str(&format!(", {starting} starting"));
            }
            if let Some(failure) = &first_failure {
                message.push_str(&format!("; failed: {failure}"));
            }
            if let Some(stuck) = summary::stuck(pods) {
                message.push_str(&format!("; {stuck}"));
            }
            message
        }
        BatchPhase::Pending => summary::stuck(pods).unwrap_or_else(|| match starting {
            0 => "waiting for the Job controller to start the run's pods".into(),
            n => format!("{n} of {shards} shards starting"),
        }),
        BatchPhase::Suspended => format!(
            "suspended with {succeeded} of {shards} shards finished; the others go on from their last published part when resumed"
        ),
    };
    let completion_time = status.completion_time.clone().or_else(|| {
        ended(job, &["Failed", "FailureTarget"]).and_then(|c| c.last_transition_time.clone())
    });
    BatchRun {
        job: name,
        phase,
        start_time: status.start_time.clone(),
        completion_time: completion_time.filter(|_| phase.finished()),
        shards,
        shards_succeeded: succeeded,
        shards_failed: failed,
        completions: format!("{succeeded}/{shards}"),
        rows,
        rejected,
        rows_per_second,
        output,
        model: job.annotations().get(MODEL_ANNOTATION).cloned(),
        message,
        failures,
    }
}

/// The run's phase from its Job: ended (the Job's terminal conditions, or the
/// targets it sets first), suspended, running (a shard's pod ready, or a shard
/// ended), or pending. The Job counts a pod that no node took, or whose model
/// is still being fetched, as active: that run has not started yet.
pub fn phase(job: &Job) -> BatchPhase {
    let status = job.status.as_ref();
    if ended(job, &["Complete", "SuccessCriteriaMet"]).is_some() {
        BatchPhase::Succeeded
    } else if ended(job, &["Failed", "FailureTarget"]).is_some() {
        BatchPhase::Failed
    } else if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        BatchPhase::Suspended
    } else if status.is_some_and(|s| {
        s.ready.unwrap_or(0) > 0 || s.succeeded.unwrap_or(0) > 0 || s.failed.unwrap_or(0) > 0
    }) {
        BatchPhase::Running
    } else {
        BatchPhase::Pending
    }
}

/// Whether the run `job` has ended.
pub fn finished(job: &Job) -> bool {
    phase(job).finished()
}

/// The run's output folder: `<base>/<job>`.
pub fn output_folder(base: &str, job: &str) -> String {
    format!("{}/{job}", base.trim_end_matches('/'))
}

/// The first of `types` among the Job's conditions that is `True`.
fn ended<'a>(job: &'a Job, types: &[&str]) -> Option<&'a JobCondition> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    types.iter().find_map(|type_| {
        conditions
            .iter()
            .find(|c| c.type_ == *type_ && c.status == "True")
    })
}

/// How many indexes a Job's `failedIndexes` (`1,3-5`) lists.
fn count_indexes(text: &str) -> i32 {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('-') {
            Some((low, high)) => match (low.trim().parse::<i32>(), high.trim().parse::<i32>()) {
                (Ok(low), Ok(high)) if high >= low => high - low + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

fn plural(n: i32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `value` to one decimal, as status shows speeds.
fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `message` cut to [`MAX_MESSAGE`] bytes, on a character boundary.
fn cut(message: &str) -> String {
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::summary::BATCH_CONTAINER;
    use crate::names::COMPLETION_INDEX_ANNOTATION;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::{Value, json};

    fn time(text: &str) -> Option<Time> {
        text.parse().ok().map(Time)
    }

    fn job(status: Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "score-abc", "annotations": {
                OUTPUT_ANNOTATION: "s3://preds/fraud/", MODEL_ANNOTATION: "s3://m/model.onnx"}},
            "spec": {"completions": 3, "parallelism": 3, "completionMode": "Indexed",
                     "template": {"spec": {"containers": []}}},
            "status": status,
        }))
        .unwrap()
    }

    fn pod(name: &str, shard: i32, exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {COMPLETION_INDEX_ANNOTATION: shard.to_string()}},
            "status": {"containerStatuses": [{
                "name": BATCH_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message,
                                         "finishedAt": "2026-01-01T00:01:00Z"}},
            }]},
        }))
        .unwrap()
    }

    fn done(rows: u64, rejected: u64, seconds: f64) -> String {
        json!({"rows": rows, "rejected": rejected, "seconds": seconds}).to_string()
    }

    #[test]
    fn a_succeeded_run_adds_up_its_shards() {
        let j = job(json!({
            "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
            "succeeded": 3, "completedIndexes": "0-2",
            "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}],
        }));
        let pods = [
            pod("a", 0, 0, &done(100, 1, 2.0)),
            pod("b", 1, 0, &done(200, 0, 4.0)),
            pod("c", 2, 0, &done(100, 1, 1.0)),
        ];
        let run = observe(&j, &pods.iter().collect::<Vec<_>>());
        assert_eq!(run.phase, BatchPhase::Succeeded);
        assert_eq!((run.rows, run.rejected), (400, 2));
        assert_eq!(
            run.rows_per_second,
            Some(100.0),
            "400 rows over the longest shard's 4 s"
        );
        assert_eq!(run.completions, "3/3");
        assert_eq!(run.output, "s3://preds/fraud/score-abc");
        assert_eq!(run.model.as_deref(), Some("s3://m/model.onnx"));
        assert_eq!(run.completion_time, time("2026-01-01T00:01:00Z"));
        assert_eq!(
            run.message,
            "400 rows predicted and 2 rejected by 3 shards at 100 rows/s; predictions in s3://preds/fraud/score-abc"
        );
    }

    #[test]
    fn a_failed_run_names_the_shard_the_file_and_the_row() {
        let error = json!({"rows": 16, "rejected": 0, "seconds": 0.5, "kind": "input",
            "error": "s3://data/in/b.csv: row 17: expected 4 columns, found 3"})
        .to_string();
        let j = job(json!({
            "startTime": "2026-01-01T00:00:00Z", "succeeded": 2, "failed": 4, "failedIndexes": "1",
            "conditions": [{"type": "Failed", "status": "True", "reason": "FailedIndexes",
                            "message": "Job has failed indexes", "lastTransitionTime": "2026-01-01T00:02:00Z"}],
        }));
        let pods = [
            pod("a", 0, 0, &done(100, 0, 1.0)),
            pod("b", 1, 1, &error),
            pod("c", 2, 0, &done(100, 0, 1.0)),
        ];
        let run = observe(&j, &pods.iter().collect::<Vec<_>>());
        assert_eq!(run.phase, BatchPhase::Failed);
        assert_eq!((run.shards_succeeded, run.shards_failed), (2, 1));
        assert_eq!(run.rows, 216, "a failed shard's published rows count");
        assert_eq!(run.completion_time, time("2026-01-01T00:02:00Z"));
        assert_eq!(
            run.failures,
            [ShardFailure {
                shard: 1,
                kind: "input".into(),
                message: "s3://data/in/b.csv: row 17: expected 4 columns, found 3".into(),
                pod: "b".into(),
            }]
        );
        assert_eq!(
            run.message,
            "2 of 3 shards finished; FailedIndexes: Job has failed indexes; shard 1 (input): s3://data/in/b.csv: row 17: expected 4 columns, found 3"
        );
    }

    #[test]
    fn phases_follow_the_job() {
        let phase_of = |status: Value, suspend: bool| {
            let mut j = job(status);
            j.spec.as_mut().unwrap().suspend = Some(suspend);
            phase(&j)
        };
        assert_eq!(phase_of(json!({}), false), BatchPhase::Pending);
        assert_eq!(
            phase_of(json!({"active": 2, "ready": 0}), false),
            BatchPhase::Pending,
            "pods no node took, or fetching the model, are active but not ready"
        );
        assert_eq!(
            phase_of(json!({"active": 2, "ready": 1}), false),
            BatchPhase::Running
        );
        assert_eq!(
            phase_of(json!({"active": 0, "succeeded": 1}), true),
            BatchPhase::Suspended
        );
        assert_eq!(
            phase_of(
                json!({"conditions": [{"type": "FailureTarget", "status": "True"}]}),
                false
            ),
            BatchPhase::Failed,
            "failing: the Job has decided, its pods are stopping"
        );
        assert_eq!(count_indexes("1,3-5,9"), 5);
        assert_eq!(count_indexes(""), 0);
        assert_eq!(output_folder("file:///out", "r"), "file:///out/r");
    }
}
