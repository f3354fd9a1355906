//! Autoscaling: how many serving pods an InferenceService runs in total.
//!
//! - [`decision`]: the pure decision (formula, triggers, burst mode, windows,
//!   missing data), table-tested.
//! - [`signals`]: the PromQL that feeds it, and the thin layer that runs it.
//!
//! The `spec.autoscaling` and `status.autoscaling` types live with the CRD
//! ([`crate::crd::autoscaling`]). The reconcile's `dereference` step reads the
//! signals of [`queries`]; its `decide` step calls [`decide`], whose total is the one
//! replica input of `build`. During a rollout the rollout splits that total between
//! the revisions by weight; the autoscaler itself never looks at revisions.

pub mod decision;
pub mod signals;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::autoscaling::{AutoscalingMode, AutoscalingStatus};
use crate::crd::{Device, InferenceService};
use crate::resources::{cpu_cores, resources};
use decision::{Input, Signals};
use signals::Queries;

/// The PromQL to read for `isvc` (its serving `pods` by name), or `None` when the
/// operator does not scale it (mode `External`, or one pod per node).
pub fn queries(isvc: &InferenceService, pods: &[Pod]) -> Option<Queries> {
    let spec = &isvc.spec;
    scales(isvc).then(|| {
        let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        signals::queries(
            &isvc.namespace().unwrap_or_default(),
            &isvc.name_any(),
            &spec.autoscaling,
            &names,
            signals::PodKind {
                gpu: spec.runtime.device == Device::Cuda,
                streaming: spec.streaming.is_some(),
            },
        )
    })
}

/// Decides the total replica count of `isvc` now: with one pod per node, the
/// `nodes` its placement matches (the autoscaler does not scale); in mode
/// `External` from `spec.replicas`, in mode `Sluice` from the `signals`
/// Prometheus gave, or `minReplicas` when the operator has no Prometheus at all
/// (`signals` is `None`). `running` is the replica count its Deployments have now
/// (read from the API server, so fresher than a cached status). Pure.
pub fn decide(
    isvc: &InferenceService,
    signals: Option<&Signals>,
    running: Option<i32>,
    nodes: Option<i32>,
    now: Timestamp,
) -> AutoscalingStatus {
    let spec = &isvc.spec;
    let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    if spec.placement.per_node() {
        return decision::per_node(spec.autoscaling.mode, nodes, previous, now);
    }
    match (spec.autoscaling.mode, signals) {
        (AutoscalingMode::External, _) => decision::external(
            spec.replicas,
            spec.min_replicas,
            spec.max_replicas,
            previous,
            now,
        ),
        (AutoscalingMode::Sluice, None) => {
            decision::unmeasured(spec.min_replicas, spec.max_replicas, previous, now)
        }
        (AutoscalingMode::Sluice, Some(signals)) => decision::decide(&Input {
            spec: &spec.autoscaling,
            min_replicas: spec.min_replicas,
            max_replicas: spec.max_replicas,
            cpu_request_cores: cpu_request_cores(isvc),
            gpu: spec.runtime.device == Device::Cuda,
            streaming: spec.streaming.is_some(),
            current: current(running, previous).unwrap_or(spec.min_replicas),
            previous,
            signals,
            now,
        }),
    }
}

/// The server container's CPU request, else its CPU limit, in cores.
fn cpu_request_cores(isvc: &InferenceService) -> Option<f64> {
    let resources = resources(&isvc.spec);
    [resources.requests, resources.limits]
        .into_iter()
        .flatten()
        .find_map(|list| cpu_cores(&list.get("cpu")?.0))
}

/// How soon to evaluate again: the interval while the operator scales (mode
/// `Sluice` with a Prometheus to read).
pub fn requeue_after(isvc: &InferenceService, has_prometheus: bool) -> Option<Duration> {
    let autoscaling = &isvc.spec.autoscaling;
    (has_prometheus && scales(isvc))
        .then(|| Duration::from_secs(autoscaling.interval_seconds.max(1).into()))
}

/// Whether the operator scales `isvc` from metrics: mode `Sluice`, and a
/// replica count rather than one pod per node.
fn scales(isvc: &InferenceService) -> bool {
    isvc.spec.autoscaling.mode == AutoscalingMode::Sluice && !isvc.spec.placement.per_node()
}

/// The count now: what the Deployments run, else the last decision.
fn current(running: Option<i32>, previous: Option<&AutoscalingStatus>) -> Option<i32> {
    running.or(previous.map(|p| p.desired_replicas))
}

/// Whether the decision changes the count, for an Event: `(from, to)`. A reconcile
/// that reads a status not yet updated by the previous one still sees the
/// Deployments' count, so one change makes one Event.
pub fn scaled(
    running: Option<i32>,
    previous: Option<&AutoscalingStatus>,
    new: &AutoscalingStatus,
) -> Option<(i32, i32)> {
    let from = current(running, previous)?;
    (from != new.desired_replicas).then_some((from, new.desired_replicas))
}
