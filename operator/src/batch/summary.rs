//! A batch shard as its pods show it: the summary that `sluice-server batch
//! --summary-file` writes to the batch container's termination message (its
//! rows, rejects and speed, or the error naming the file, the row and the
//! problem), the failures of the init containers before it, and what keeps a
//! pod from starting. Pure.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use kube::ResourceExt;
use serde::Deserialize;

use crate::names::COMPLETION_INDEX_ANNOTATION;
use crate::optimization::OPTIMIZE_CONTAINER;
use crate::status::{
    FETCH_CONTAINER, PROFILE_FETCH_CONTAINER, container_failure, error_line, unschedulable,
};

/// Name of the container that runs `sluice-server batch`.
pub const BATCH_CONTAINER: &str = "batch";
/// Where it writes its summary (its `terminationMessagePath`, on its scratch
/// volume).
pub const SUMMARY_PATH: &str = "/tmp/batch-summary.json";

/// The summary of one shard's run (the server's `--summary-file`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Summary {
    /// Rows predicted, over every part the shard published.
    pub rows: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Seconds this attempt took.
    pub seconds: f64,
    /// Why the shard failed.
    pub error: Option<String>,
    /// The kind of failure: `model`, `input`, `output`, `rejects`,
    /// `credentials` or `usage`.
    pub kind: Option<String>,
}

/// One attempt of one shard that ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The shard (the pod's completion index).
    pub shard: i32,
    /// The pod.
    pub pod: String,
    /// When its container ended.
    pub finished: Option<Timestamp>,
    /// How it ended.
    pub outcome: Outcome,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The shard finished; its summary, if it could be read.
    Succeeded(Option<Summary>),
    /// The shard failed.
    Failed {
        /// The kind of failure (the summary's, or the init container's).
        kind: String,
        /// The error.
        message: String,
        /// The counts so far, when the summary could be read.
        summary: Option<Summary>,
    },
}

impl Attempt {
    /// The counts it reported.
    pub fn summary(&self) -> Option<&Summary> {
        match &self.outcome {
            Outcome::Succeeded(summary) | Outcome::Failed { summary, .. } => summary.as_ref(),
        }
    }
}

/// The attempts that ended among `pods` (a run's), the newest attempt of each
/// shard last.
pub fn attempts(pods: &[&Pod]) -> Vec<Attempt> {
    let mut attempts: Vec<Attempt> = pods.iter().filter_map(|pod| attempt(pod)).collect();
    attempts.sort_by_key(|a| (a.shard, a.finished));
    attempts
}

/// The newest attempt of each shard, by shard.
pub fn latest(attempts: &[Attempt]) -> Vec<&Attempt> {
    let mut latest: Vec<&Attempt> = Vec::new();
    for attempt in attempts {
        match latest.last_mut() {
            Some(last) if last.shard == attempt.shard => *last = attempt,
            _ => latest.push(attempt),
        }
    }
    latest
}

/// The attempt `pod` made, if it ended: a failed init container, or the
/// batch container's end.
fn attempt(pod: &Pod) -> Option<Attempt> {
    let shard = pod
        .annotations()
        .get(COMPLETION_INDEX_ANNOTATION)?
        .parse()
        .ok()?;
    let status = pod.status.as_ref()?;
    let attempt = |finished: Option<Timestamp>, outcome| Attempt {
        shard,
        pod: pod.name_any(),
        finished,
        outcome,
    };
    for init in status.init_container_statuses.iter().flatten() {
        if let Some(message) = container_failure(init) {
            let kind = match init.name.as_str() {
                PROFILE_FETCH_CONTAINER => "profile",
                FETCH_CONTAINER | OPTIMIZE_CONTAINER => "model",
                _ => "unknown",
            };
            return Some(attempt(
                ended(init)
                    .and_then(|t| t.finished_at.as_ref())
                    .map(|t| t.0),
                Outcome::Failed {
                    kind: kind.into(),
                    message: format!("init container {}: {message}", init.name),
                    summary: None,
                },
            ));
        }
    }
    let batch = status
        .container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == BATCH_CONTAINER)?;
    let terminated = ended(batch)?;
    let finished = terminated.finished_at.as_ref().map(|t| t.0);
    let text = terminated.message.as_deref().unwrap_or_default().trim();
    let summary = serde_json::from_str::<Summary>(text).ok();
    if terminated.exit_code == 0 {
        return Some(attempt(finished, Outcome::Succeeded(summary)));
    }
    let (kind, message) = match &summary {
        Some(Summary {
            error: Some(error),
            kind,
            ..
        }) => (
            kind.clone().unwrap_or_else(|| "unknown".into()),
            error.clone(),
        ),
        _ => (
            "unknown".to_string(),
            container_failure(batch).unwrap_or_else(|| {
                format!(
                    "exit code {}: {}",
                    terminated.exit_code,
                    error_line(terminated.reason.as_deref().unwrap_or("no message"))
                )
            }),
        ),
    };
    Some(attempt(
        finished,
        Outcome::Failed {
            kind,
            message,
            summary,
        },
    ))
}

/// The container's end: the current state's, else the last one's.
fn ended(status: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    current.or(last)
}

/// Reasons a container waits that need someone to act (a missing Secret, an
/// image that cannot be pulled).
const STUCK: [&str; 5] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// What keeps one of `pods` from running, if anything does: a container that
/// cannot start, or a pod no node takes.
pub fn stuck(pods: &[&Pod]) -> Option<String> {
    pods.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let waiting = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .find_map(|s| {
                let waiting = s.state.as_ref()?.waiting.as_ref()?;
                let reason = waiting.reason.as_deref()?;
                STUCK.contains(&reason).then(|| {
                    format!(
                        "pod {} container {} cannot start: {reason}: {}",
                        pod.name_any(),
                        s.name,
                        waiting.message.as_deref().unwrap_or("no message")
                    )
                })
            });
        waiting.or_else(|| unschedulable(pod))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A shard's pod whose batch container ended with `exit_code` and `message`.
    fn pod(name: &str, shard: i32, exit_code: i32, message: &str, at: &str) -> Pod {
        pod_with(
            name,
            shard,
            json!([]),
            json!([{
                "name": BATCH_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message, "finishedAt": at}},
            }]),
        )
    }

    fn pod_with(name: &str, shard: i32, init: Value, containers: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {COMPLETION_INDEX_ANNOTATION: shard.to_string()}},
            "status": {
                "initContainerStatuses": init,
                "containerStatuses": containers,
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_finished_shard_reports_its_summary() {
        let line = r#"{"shard":1,"shards":4,"files":3,"rows":120000,"rejected":2,"parts":2,"resumedParts":1,"seconds":1.8,"rowsPerSecond":66666.7,"output":"s3://p/run-1/"}"#;
        let p = pod("run-1-x", 1, 0, line, "2026-01-01T00:00:10Z");
        let attempts = attempts(&[&p]);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].shard, 1);
        let summary = attempts[0].summary().unwrap();
        assert_eq!(
            (summary.rows, summary.rejected, summary.seconds),
            (120000, 2, 1.8)
        );
    }

    #[test]
    fn a_failed_shard_says_what_failed_and_where() {
        let line = r#"{"shard":0,"shards":1,"files":1,"rows":16,"rejected":0,"parts":0,"resumedParts":0,"seconds":0.2,"rowsPerSecond":80,"output":"file:///out/run","error":"file:///in/b.csv: row 17: expected 4 columns, found 3","kind":"input"}"#;
        let p = pod("run-0-a", 0, 1, line, "2026-01-01T00:00:10Z");
        let Outcome::Failed {
            kind,
            message,
            summary,
        } = &attempts(&[&p])[0].outcome
        else {
            panic!("not failed");
        };
        assert_eq!(kind, "input");
        assert_eq!(
            message,
            "file:///in/b.csv: row 17: expected 4 columns, found 3"
        );
        assert_eq!(summary.as_ref().unwrap().rows, 16);

        // No summary (a panic, a kill): the log's last line, as the kubelet kept it.
        let p = pod(
            "run-0-b",
            0,
            137,
            "loading\nKilled\n",
            "2026-01-01T00:00:20Z",
        );
        let Outcome::Failed { kind, message, .. } = &attempts(&[&p])[0].outcome else {
            panic!("not failed");
        };
        assert_eq!(
            (kind.as_str(), message.as_str()),
            ("unknown", "exit code 137: Killed")
        );
    }

    #[test]
    fn a_failed_fetch_is_the_attempts_failure_and_the_newest_attempt_counts() {
        let init = json!([{
            "name": FETCH_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "message": "fetching s3://m/model.onnx: 403 Forbidden", "finishedAt": "2026-01-01T00:00:05Z"}},
        }]);
        let failed = pod_with("run-0-a", 0, init, json!([]));
        let retried = pod("run-0-b", 0, 0, r#"{"rows":5}"#, "2026-01-01T00:01:00Z");
        let other = pod("run-1-a", 1, 0, r#"{"rows":7}"#, "2026-01-01T00:00:30Z");
        let all = attempts(&[&retried, &failed, &other]);
        let Outcome::Failed { kind, message, .. } = &all[0].outcome else {
            panic!("the fetch failure comes first");
        };
        assert_eq!(kind, "model");
        assert_eq!(
            message,
            "init container fetch-model: exit code 1: fetching s3://m/model.onnx: 403 Forbidden"
        );
        let newest: Vec<(i32, &str)> = latest(&all)
            .iter()
            .map(|a| (a.shard, a.pod.as_str()))
            .collect();
        assert_eq!(newest, [(0, "run-0-b"), (1, "run-1-a")]);
    }

    #[test]
    fn a_missing_secret_keeps_a_pod_from_starting_and_says_so() {
        let p = pod_with(
            "run-0-a",
            0,
            json!([]),
            json!([{
                "name": BATCH_CONTAINER, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"s3\" not found"}},
            }]),
        );
        assert_eq!(
            stuck(&[&p]).as_deref(),
            Some(
                "pod run-0-a container batch cannot start: CreateContainerConfigError: secret \"s3\" not found"
            )
        );
        assert!(
            attempts(&[&p]).is_empty(),
            "a pod that never ran made no attempt"
        );
    }
}
