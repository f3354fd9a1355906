//! `kubectl sluice status NAME`: what serves, how the rollout stands and why,
//! from the InferenceService's status (and its revisions' workloads for the
//! per-revision pod counts). [`StatusView`] is both the table's source and the
//! `-o json` document.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sluice_operator::crd::InferenceService;
use sluice_operator::crd::rollout::{RolloutStatus, Strategy};

use crate::cluster::{self, RevisionReplicas};
use crate::connect::Target;
use crate::table::{Fields, Table, number, or_dash};
use crate::{Result, word};

/// The `status` document (`-o json`). Every key is always present; what status
/// does not say is `null`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `status.observedGeneration`: below `generation`, status describes an
    /// older spec.
    pub observed_generation: Option<i64>,
    /// `status.url`, in-cluster.
    pub url: Option<String>,
    /// `status.phase`: `Pending`, `Progressing`, `Ready` or `Failed`.
    pub phase: Option<String>,
    /// `status.message`.
    pub message: Option<String>,
    /// The `Ready` condition.
    pub ready: Option<ConditionView>,
    /// Serving pods of all revisions.
    pub replicas: ReplicasView,
    /// Each revision that serves or has pods, stable first.
    pub revisions: Vec<RevisionView>,
    /// `status.rollout`: the rollout in progress, or the last one.
    pub rollout: Option<RolloutView>,
    /// `status.autoscaling`: the replica count decided and why.
    pub autoscaling: Option<AutoscalingView>,
    /// `status.rollback`: a `rollback` command in force.
    pub rollback: Option<RollbackView>,
}

/// A condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// Pod counts from `status.replicas`, `status.readyReplicas` and the
/// autoscaler's `desiredReplicas`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReplicasView {
    /// Serving pods that pass their readiness probe.
    pub ready: i32,
    /// Serving pods.
    pub total: i32,
    /// Pods the autoscaler wants in all (a rollout splits them by weight).
    pub desired: Option<i32>,
}

/// One revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// The revision hash (`<name>-<revision>` names its Deployment and Service).
    pub revision: String,
    /// `stable` (`status.stableRevision`), `canary` (`status.canaryRevision`,
    /// the revision being rolled out), `current` (`status.revision`, the spec's,
    /// when it is neither: not rolled out yet, or rolled back) or `previous` (a
    /// revision whose pods are still running, e.g. during blue-green's
    /// scale-down delay).
    pub role: String,
    /// Percent of traffic it is meant to get; `null` when status does not say.
    pub weight: Option<i32>,
    /// Ready pods of its workload; `null` when the workloads could not be read.
    pub ready_replicas: Option<i32>,
    /// Pods its workload wants; `null` when the workloads could not be read.
    pub replicas: Option<i32>,
}

/// `status.rollout`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// The revision rolled out.
    pub revision: String,
    /// The revision it replaces.
    pub stable: Option<String>,
    /// `Canary` or `BlueGreen`.
    pub strategy: String,
    /// `Progressing`, `Paused`, `Promoted`, `RolledBack` or `Aborted`.
    pub phase: String,
    /// `status.rollout.step` as the operator counts it.
    pub step: u32,
    /// The step in words: `step 1 of 2 (25%)` (the step's share from
    /// `spec.rollout.canary.steps`; `weight` is what the operator set),
    /// `all 2 steps passed: promoting`, `preview: ...` for blue-green; a finished
    /// rollout's starts with `ended at`.
    pub step_description: String,
    /// What the rollout is doing or why it ended.
    pub message: String,
    /// Consecutive failed analyses.
    pub failures: u32,
    /// Consecutive analyses without data.
    pub no_data: u32,
    /// When the latest analysis ran (RFC 3339).
    pub last_analysis: Option<String>,
    /// Each check of the latest analysis.
    pub checks: Vec<CheckView>,
}

/// One analysis check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckView {
    /// `error-rate`, `p99-latency-vs-stable`, `prediction-agreement`, ... or a
    /// user check's name.
    pub name: String,
    /// The measured value; `null` without data.
    pub value: Option<f64>,
    /// The bound, as the operator wrote it (`<= 0.0200 (...)`).
    pub threshold: String,
    /// `Pass`, `Fail`, `NoData`, `Error` or `Waiting`.
    pub verdict: String,
    /// Why, when the value does not say.
    pub detail: Option<String>,
    /// The PromQL that was run.
    pub query: String,
}

/// `status.autoscaling`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingView {
    /// `Sluice` or `External`.
    pub mode: String,
    /// Pods wanted across all revisions.
    pub desired_replicas: i32,
    /// The signal that decided (`RequestRate`, `Cpu`, `MinReplicas`, ...).
    pub signal: String,
    /// How, with the figures used.
    pub reason: String,
    /// When the count last changed (RFC 3339).
    pub last_scale_time: Option<String>,
}

/// `status.rollback`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RollbackView {
    /// The revision that serves in place of the spec's.
    pub revision: String,
    /// Its model.
    pub storage_uri: String,
    /// Its model's version label.
    pub version: Option<String>,
    /// The spec's revision when the command came; a new spec ends the rollback.
    pub spec_revision: String,
    /// When the operator acted on the command (RFC 3339).
    pub time: String,
}

impl StatusView {
    /// The view of `isvc`; `workloads` gives per-revision pod counts when known.
    pub fn new(isvc: &InferenceService, workloads: Option<&[RevisionReplicas]>) -> Self {
        let status = isvc.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| ConditionView {
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.0.to_string(),
            });
        let rollout = status.rollout.as_ref().map(|r| RolloutView {
            revision: r.revision.clone(),
            stable: r.stable.clone(),
            strategy: word(&r.strategy),
            phase: word(&r.phase),
            step: r.step,
            step_description: step_description(r, &isvc.spec.rollout.canary.steps),
            message: r.message.clone(),
            failures: r.failures,
            no_data: r.no_data,
            last_analysis: r.last_analysis.as_ref().map(|t| t.0.to_string()),
            checks: r
                .checks
                .iter()
                .map(|c| CheckView {
                    name: c.name.clone(),
                    value: c.value,
                    threshold: c.threshold.clone(),
                    verdict: word(&c.verdict),
                    detail: c.detail.clone(),
                    query: c.query.clone(),
                })
                .collect(),
        });
        let autoscaling = status.autoscaling.as_ref().map(|a| AutoscalingView {
            mode: word(&a.mode),
            desired_replicas: a.desired_replicas,
            signal: word(&a.signal),
            reason: a.reason.clone(),
            last_scale_time: a.last_scale_time.as_ref().map(|t| t.0.to_string()),
        });
        let rollback = status.rollback.as_ref().map(|r| RollbackView {
            revision: r.revision.clone(),
            storage_uri: r.model.storage_uri.clone(),
            version: r.model.version.clone(),
            spec_revision: r.spec_revision.clone(),
            time: r.time.0.to_string(),
        });
        Self {
            name: isvc.metadata.name.clone().unwrap_or_default(),
            namespace: isvc.metadata.namespace.clone().unwrap_or_default(),
            generation: isvc.metadata.generation,
            observed_generation: status.observed_generation,
            url: status.url.clone(),
            phase: status.phase.as_ref().map(word),
            message: status.message.clone(),
            ready,
            replicas: ReplicasView {
                ready: status.ready_replicas,
                total: status.replicas,
                desired: status.autoscaling.as_ref().map(|a| a.desired_replicas),
            },
            revisions: revisions(&status, workloads),
            rollout,
            autoscaling,
            rollback,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut head = Fields::new();
        head.field("Name", &self.name)
            .field("Namespace", &self.namespace)
            .field("URL", or_dash(self.url.as_deref()))
            .field("Phase", or_dash(self.phase.as_deref()));
        // The Ready condition usually says the same; print it once.
        if let Some(message) = &self.message
            && self.ready.as_ref().is_none_or(|c| &c.message != message)
        {
            head.field("Message", message);
        }
        head.field(
            "Ready",
            match &self.ready {
                Some(c) => format!("{} ({}): {}", c.status, c.reason, c.message),
                None => "-".into(),
            },
        );
        let mut replicas = format!("{} of {} ready", self.replicas.ready, self.replicas.total);
        if let Some(desired) = self.replicas.desired {
            let _ = write!(replicas, ", {desired} wanted");
        }
        head.field("Replicas", replicas);
        if let Some(a) = &self.autoscaling {
            head.field(
                "Autoscaling",
                format!(
                    "{} wanted by signal {} (mode {}): {}",
                    a.desired_replicas, a.signal, a.mode, a.reason
                ),
            );
        }
        if let Some(r) = &self.rollback {
            head.field(
                "Rollback",
                format!(
                    "revision {} ({}{}) serves in place of the spec's revision {} since {}, until the spec changes",
                    r.revision,
                    r.storage_uri,
                    r.version
                        .as_deref()
                        .map(|v| format!(", version {v}"))
                        .unwrap_or_default(),
                    r.spec_revision,
                    r.time
                ),
            );
        }
        if let (Some(generation), Some(observed)) = (self.generation, self.observed_generation)
            && observed < generation
        {
            head.field(
                "Stale",
                format!(
                    "status describes generation {observed}; the spec is at {generation} (the operator has not caught up)"
                ),
            );
        }
        out.push_str(&head.to_string());

        out.push('\n');
        if self.revisions.is_empty() {
            out.push_str("Revisions: none yet\n");
        } else {
            let mut table = Table::new(["REVISION", "ROLE", "WEIGHT", "READY"]);
            for r in &self.revisions {
                let ready = match (r.ready_replicas, r.replicas) {
                    (Some(ready), Some(total)) => format!("{ready}/{total}"),
                    _ => "-".into(),
                };
                let weight = r.weight.map_or("-".into(), |w| format!("{w}%"));
                table.row([r.revision.clone(), r.role.clone(), weight, ready]);
            }
            out.push_str(&table.to_string());
        }

        out.push('\n');
        match &self.rollout {
            None => out.push_str("Rollout: none yet\n"),
            Some(r) => {
                let mut fields = Fields::new();
                let over = r
                    .stable
                    .as_deref()
                    .map(|s| format!(" replacing {s}"))
                    .unwrap_or_default();
                fields
                    .field(
                        "Rollout",
                        format!("{} {}{over}: {}", r.strategy, r.revision, r.phase),
                    )
                    .field("Step", &r.step_description)
                    .field("Message", &r.message);
                let analysis = match &r.last_analysis {
                    Some(at) => format!(
                        "last at {at}; {} failed and {} without data in a row",
                        r.failures, r.no_data
                    ),
                    None => "none recorded".into(),
                };
                fields.field("Analysis", analysis);
                out.push_str(&fields.to_string());
                if !r.checks.is_empty() {
                    out.push('\n');
                    let mut table =
                        Table::new(["CHECK", "VALUE", "THRESHOLD", "VERDICT", "DETAIL"]);
                    for c in &r.checks {
                        table.row([
                            c.name.clone(),
                            number(c.value),
                            c.threshold.clone(),
                            c.verdict.clone(),
                            c.detail.clone().unwrap_or_default(),
                        ]);
                    }
                    out.push_str(&table.to_string());
                }
            }
        }
        out
    }
}

/// The revisions as [`RevisionView::role`] documents them: stable, canary,
/// the spec's own when it is neither, then any other revision with a workload.
fn revisions(
    status: &sluice_operator::crd::InferenceServiceStatus,
    workloads: Option<&[RevisionReplicas]>,
) -> Vec<RevisionView> {
    let canary_weight = status.canary_revision.as_ref().and(status.canary_weight);
    let mut rows: Vec<(String, &str, Option<i32>)> = Vec::new();
    if let Some(stable) = &status.stable_revision {
        let weight = match (&status.canary_revision, canary_weight) {
            (None, _) => Some(100),
            (Some(_), Some(w)) => Some(100 - w),
            (Some(_), None) => None,
        };
        rows.push((stable.clone(), "stable", weight));
    }
    if let Some(canary) = &status.canary_revision
        && Some(canary) != status.stable_revision.as_ref()
    {
        rows.push((canary.clone(), "canary", canary_weight));
    }
    if let Some(current) = &status.revision
        && !rows.iter().any(|(r, _, _)| r == current)
    {
        // Without a stable revision the spec's is the only one there is.
        let weight = if status.stable_revision.is_none() {
            100
        } else {
            0
        };
        rows.push((current.clone(), "current", Some(weight)));
    }
    for w in workloads.unwrap_or_default() {
        if !rows.iter().any(|(r, _, _)| *r == w.revision) {
            rows.push((w.revision.clone(), "previous", Some(0)));
        }
    }
    rows.into_iter()
        .map(|(revision, role, weight)| {
            let workload = workloads.map(|ws| ws.iter().find(|w| w.revision == revision));
            RevisionView {
                role: role.into(),
                weight,
                ready_replicas: workload.map(|w| w.map_or(0, |w| w.ready)),
                replicas: workload.map(|w| w.map_or(0, |w| w.desired)),
                revision,
            }
        })
        .collect()
}

/// `status.rollout.step` in words: canary steps count from 1 with their share
/// of traffic (from `spec.rollout.canary.steps`); blue-green has three phases.
/// A finished rollout says where it ended.
pub fn step_description(rollout: &RolloutStatus, canary_steps: &[i32]) -> String {
    let step = rollout.step as usize;
    let ended = rollout.phase.finished();
    let described = match rollout.strategy {
        Strategy::Canary => match canary_steps.get(step) {
            Some(percent) => format!("step {} of {} ({percent}%)", step + 1, canary_steps.len()),
            None if ended => format!("all {} steps passed", canary_steps.len()),
            None => format!("all {} steps passed: promoting", canary_steps.len()),
        },
        Strategy::BlueGreen => match step {
            0 => "preview: the new revision is analysed on its own Service".into(),
            1 => "post-promotion analysis: the new revision takes all traffic".into(),
            _ => "scale-down delay: the old revision keeps its pods a while".into(),
        },
    };
    if ended && !described.starts_with("all") {
        format!("ended at {described}")
    } else {
        described
    }
}

/// Reads the InferenceService and its workloads and builds the view.
pub async fn load(target: &Target, name: &str) -> Result<StatusView> {
    let isvc = cluster::inference_service(target, name).await?;
    let workloads = cluster::revision_replicas(&target.client, &target.namespace, name).await?;
    Ok(StatusView::new(&isvc, workloads.as_deref()))
}
