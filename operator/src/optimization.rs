//! `spec.model.optimize` as the cluster shows it: the optimize init container's
//! summary, which `sluice-server optimize --summary` writes to the container's
//! termination message, read from the current revision's pods. Pure.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::ResourceExt;
use serde::Deserialize;

use crate::crd::OptimizationStatus;

/// Name of the init container that optimizes the model.
pub const OPTIMIZE_CONTAINER: &str = "optimize-model";
/// Where it writes its summary (its `terminationMessagePath`, on its scratch
/// volume).
pub const SUMMARY_PATH: &str = "/tmp/optimize-summary.json";

/// How the optimization of one revision stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Optimized {
    /// No pod of the revision has finished optimizing.
    Pending,
    /// A pod optimized the model; its figures.
    Done(Box<OptimizationStatus>),
    /// A pod's optimizer refused or failed. `below_agreement` when the model
    /// answered too differently, which no retry changes.
    Refused {
        /// The pod.
        pod: String,
        /// Whether the agreement check refused it.
        below_agreement: bool,
        /// The optimizer's message, first line.
        message: String,
    },
}

/// The optimizer's line on failure.
#[derive(Deserialize)]
struct FailureLine {
    error: String,
    kind: String,
}

/// How the optimization of `revision` stands on `pods` (the revision's own).
pub fn observe(pods: &[&Pod], revision: &str) -> Optimized {
    let mut done = None;
    for pod in pods {
        let Some(status) = pod
            .status
            .as_ref()
            .and_then(|s| s.init_container_statuses.as_ref())
            .and_then(|all| all.iter().find(|s| s.name == OPTIMIZE_CONTAINER))
        else {
            continue;
        };
        let current = status.state.as_ref().and_then(|s| s.terminated.as_ref());
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        match current.or(last) {
            Some(t) if t.exit_code == 0 => {
                done = done.or_else(|| figures(t, revision));
            }
            // A pod on its way out (a rollback deletes the canary's) has its
            // optimizer killed (exit 143, no message): that says nothing of
            // the model, and must not hide another pod's real refusal.
            Some(t) if pod.metadata.deletion_timestamp.is_none() => return refused(pod, t),
            Some(_) | None => {}
        }
    }
    done.map_or(Optimized::Pending, |figures| {
        Optimized::Done(Box::new(figures))
    })
}

fn figures(terminated: &ContainerStateTerminated, revision: &str) -> Option<OptimizationStatus> {
    let mut figures: OptimizationStatus =
        serde_json::from_str(terminated.message.as_deref()?.trim()).ok()?;
    figures.revision = revision.to_string();
    Some(figures)
}

fn refused(pod: &Pod, terminated: &ContainerStateTerminated) -> Optimized {
    let text = terminated.message.as_deref().unwrap_or_default().trim();
    let (message, below_agreement) = match serde_json::from_str::<FailureLine>(text) {
        Ok(line) => (line.error, line.kind == "BelowAgreement"),
        Err(_) => (
            format!(
                "exit code {}: {}",
                terminated.exit_code,
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no message")
            ),
            false,
        ),
    };
    Optimized::Refused {
        pod: pod.name_any(),
        below_agreement,
        message: message.lines().next().unwrap_or_default().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"initContainerStatuses": [{
                "name": OPTIMIZE_CONTAINER, "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn the_summary_becomes_the_status_of_the_revision() {
        let line = r#"{"mode":"int8-dynamic","sizeBytesBefore":4000,"sizeBytesAfter":1000,"sizeRatio":0.25,"latencyMsBatch1Before":0.1,"latencyMsBatch1After":0.06,"speedupBatch1":1.6,"batch":32,"speedupBatch":1.4,"agreement":[{"output":"logits","measure":"top-1","value":0.99}],"rows":1000,"nodesChanged":3,"nodesKept":0}"#;
        let Optimized::Done(figures) = observe(&[&pod(0, line)], "abc") else {
            panic!("not done");
        };
        assert_eq!(figures.revision, "abc");
        assert_eq!(figures.size_ratio, 0.25);
        assert_eq!(figures.agreement[0].output, "logits");
    }

    #[test]
    fn a_refusal_says_whether_the_agreement_check_made_it() {
        let below = r#"{"error":"the optimized model's agreement 0.9890 on output 'logits' is below --min-agreement 1; nothing was written\nint8-dynamic ...","kind":"BelowAgreement"}"#;
        assert_eq!(
            observe(&[&pod(1, below)], "abc"),
            Optimized::Refused {
                pod: "p".into(),
                below_agreement: true,
                message: "the optimized model's agreement 0.9890 on output 'logits' is below --min-agreement 1; nothing was written".into(),
            }
        );
        let Optimized::Refused {
            below_agreement,
            message,
            ..
        } = observe(&[&pod(2, "some log\nthread panicked\n")], "abc")
        else {
            panic!("not refused");
        };
        assert!(!below_agreement);
        assert_eq!(message, "exit code 2: thread panicked");
        assert_eq!(observe(&[], "abc"), Optimized::Pending);
    }

    #[test]
    fn a_deleted_pod_s_killed_optimizer_does_not_hide_a_refusal() {
        let mut killed = pod(143, "");
        killed.metadata.name = Some("killed".into());
        killed.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-12-01T10:20:35Z".parse().unwrap(),
            ));
        let below = r#"{"error":"below --min-agreement 1","kind":"BelowAgreement"}"#;
        let Optimized::Refused {
            pod: refused_by,
            below_agreement,
            ..
        } = observe(&[&killed, &pod(1, below)], "abc")
        else {
            panic!("not refused");
        };
        assert_eq!((refused_by.as_str(), below_agreement), ("p", true));
        assert_eq!(observe(&[&killed], "abc"), Optimized::Pending);
    }
}
