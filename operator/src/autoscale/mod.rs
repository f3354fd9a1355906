//! Autoscaling: how many serving pods an InferenceService runs in total.
//!
//! - [`spec`]: the `spec.autoscaling` and `status.autoscaling` sections.
//! - [`decision`]: the pure decision (formula, triggers, burst mode, windows,
//!   missing data), table-tested.
//! - [`signals`]: the PromQL that feeds it, and the thin layer that runs it.
//!
//! The reconcile calls [`evaluate`] before `build`; the total it returns is the one
//! replica input of `build`. During a rollout the rollout splits that total between
//! the revisions by weight; the autoscaler itself never looks at revisions.

pub mod decision;
pub mod signals;
pub mod spec;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::build;
use crate::crd::{Device, InferenceService};
use decision::Input;
use spec::{AutoscalingMode, AutoscalingStatus};

/// Decides the total replica count of `isvc` now: in mode `External` from
/// `spec.replicas`, in mode `Sluice` from the signals Prometheus gives, or
/// `minReplicas` when the operator has no Prometheus at all (`prometheus` is `None`).
/// `pods` are its serving pods; `running` is the replica count its Deployments
/// have now (read from the API server, so fresher than a cached status).
pub async fn evaluate(
    isvc: &InferenceService,
    pods: &[Pod],
    running: Option<i32>,
    prometheus: Option<&prometheus_http_query::Client>,
    now: Timestamp,
) -> AutoscalingStatus {
    let spec = &isvc.spec;
    let previous = isvc.status.as_ref().and_then(|s| s.autoscaling.as_ref());
    match spec.autoscaling.mode {
        AutoscalingMode::External => decision::external(
            spec.replicas,
            spec.min_replicas,
            spec.max_replicas,
            previous,
            now,
        ),
        AutoscalingMode::Sluice => {
            let Some(client) = prometheus else {
                return decision::unmeasured(spec.min_replicas, spec.max_replicas, previous, now);
            };
            let gpu = spec.runtime.device == Device::Cuda;
            let names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
            let queries = signals::queries(
                &isvc.namespace().unwrap_or_default(),
                &isvc.name_any(),
                &spec.autoscaling,
                &names,
                gpu,
            );
            let signals = signals::read(client, &queries).await;
            decision::decide(&Input {
                spec: &spec.autoscaling,
                min_replicas: spec.min_replicas,
                max_replicas: spec.max_replicas,
                cpu_request_cores: cpu_request_cores(isvc),
                gpu,
                current: current(running, previous).unwrap_or(spec.min_replicas),
                previous,
                signals: &signals,
                now,
            })
        }
    }
}

/// The server container's CPU request, else its CPU limit, in cores.
fn cpu_request_cores(isvc: &InferenceService) -> Option<f64> {
    let resources = build::resources(&isvc.spec);
    [resources.requests, resources.limits]
        .into_iter()
        .flatten()
        .find_map(|list| build::cpu_cores(&list.get("cpu")?.0))
}

/// How soon to evaluate again: the interval while the operator scales (mode
/// `Sluice` with a Prometheus to read).
pub fn requeue_after(isvc: &InferenceService, has_prometheus: bool) -> Option<Duration> {
    let autoscaling = &isvc.spec.autoscaling;
    (has_prometheus && autoscaling.mode == AutoscalingMode::Sluice)
        .then(|| Duration::from_secs(autoscaling.interval_seconds.max(1).into()))
}

/// Checks the autoscaling settings the schema cannot (or an older CRD may not);
/// each message names the field.
pub fn validate(isvc: &InferenceService) -> Result<(), String> {
    let a = &isvc.spec.autoscaling;
    if let Some(t) = a.throughput_per_replica
        && !(t.is_finite() && t > 0.0)
    {
        return Err(format!(
            "spec.autoscaling.throughputPerReplica must be a positive number of requests per second, not {t}"
        ));
    }
    if !(a.headroom.is_finite() && (1.0..=10.0).contains(&a.headroom)) {
        return Err(format!(
            "spec.autoscaling.headroom must be between 1 and 10, not {}",
            a.headroom
        ));
    }
    let burst = a.burst.threshold;
    if !(burst == 0.0 || (burst.is_finite() && (1.0..=100.0).contains(&burst))) {
        return Err(format!(
            "spec.autoscaling.burst.threshold must be 0 (off) or between 1 and 100, not {burst}"
        ));
    }
    if a.rate_window_seconds < 2 {
        return Err("spec.autoscaling.rateWindowSeconds must be at least 2".into());
    }
    if a.peak_window_seconds < a.rate_window_seconds {
        return Err(format!(
            "spec.autoscaling.peakWindowSeconds ({}) must be at least rateWindowSeconds ({})",
            a.peak_window_seconds, a.rate_window_seconds
        ));
    }
    if a.interval_seconds == 0 {
        return Err("spec.autoscaling.intervalSeconds must be at least 1".into());
    }
    if let Some(r) = isvc.spec.replicas
        && r < 0
    {
        return Err(format!("spec.replicas must not be negative, not {r}"));
    }
    Ok(())
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
