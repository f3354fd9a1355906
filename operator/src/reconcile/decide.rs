//! The `decide` step: from the validated spec and what `dereference` observed, the
//! autoscaler's total and the rollout state machine's next state, and so where the
//! current revision's pods go. Pure: it reads nothing and writes nothing.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::dereference::Observed;
use super::validate::Validated;
use crate::autoscale;
use crate::build::Layout;
use crate::crd::AutoscalingStatus;
use crate::drift::decision::{self as drift, Input as DriftInput};
use crate::names::REVISION_LABEL;
use crate::optimization::{self, Optimized};
use crate::rollout::machine::{self, Decision, Input};

/// What this reconcile will make true.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The autoscaler's total across revisions, and why.
    pub scale: AutoscalingStatus,
    /// The rollout's next state: replicas per revision, weights, notes, history.
    pub rollout: Decision,
    /// Where the current spec's revision goes, for `build`.
    pub layout: Layout,
    /// With `spec.monitoring`: the `InputDrift` condition, `status.drift`, and a
    /// retraining Job to start.
    pub drift: Option<drift::Plan>,
}

/// Decides the total, then lets the rollout split it between the revisions.
pub fn decide(valid: &Validated, observed: &Observed, now: Timestamp) -> Plan {
    let isvc = valid.isvc;
    let spec = &isvc.spec;
    let status = isvc.status.clone().unwrap_or_default();
    let scale = autoscale::decide(
        isvc,
        observed.signals.as_ref(),
        observed.objects.running(),
        now,
    );
    let ready = observed.objects.ready();
    let unservable = unservable(&observed.objects.pods, &valid.revision);
    let rollout = machine::decide(&Input {
        spec: &spec.rollout,
        desired: &valid.revision,
        model: &spec.model,
        runtime: &spec.runtime,
        total: scale.desired_replicas,
        routed: spec.rollout.route.is_some(),
        previous: status.rollout.as_ref(),
        stable: status.stable_revision.as_deref(),
        history: &status.history,
        ready: &ready,
        unservable: unservable.as_deref(),
        analysis: observed.analysis.as_ref(),
        command: valid.command.command(),
        now,
    });
    let layout = Layout {
        replicas: rollout.replicas.get(&valid.revision).copied().unwrap_or(0),
        total: scale.desired_replicas,
        active: rollout.active.clone(),
    };
    let drift = match (&spec.monitoring, &observed.drift) {
        (Some(monitoring), Some(read)) => Some(drift::decide(&DriftInput {
            spec: monitoring,
            isvc: &valid.name,
            // The revision `dereference` read, even if this reconcile promotes another.
            revision: status.stable_revision.as_deref(),
            previous: status.drift.as_ref(),
            reading: read.reading.as_ref(),
            newest_job: read.newest_job.as_ref(),
            now,
        })),
        _ => None,
    };
    Plan {
        scale,
        rollout,
        layout,
        drift,
    }
}

/// Why `revision` can never serve, when one of its pods shows it: its optimized
/// model failed the agreement check, which no retry changes.
fn unservable(pods: &[Pod], revision: &str) -> Option<String> {
    let own: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision))
        .collect();
    match optimization::observe(&own, revision) {
        Optimized::Refused {
            below_agreement: true,
            message,
            ..
        } => Some(format!("its optimized model was refused: {message}")),
        _ => None,
    }
}
