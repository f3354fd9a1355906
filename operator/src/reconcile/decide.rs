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
        observed.objects.matching_nodes(&valid.revision),
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
        streaming: spec.streaming.is_some(),
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
        route_weights: rollout.route_weights.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::decision::Signals;
    use crate::crd::InferenceService;
    use crate::crd::autoscaling::Signal;
    use crate::reconcile::dereference::Objects;
    use crate::reconcile::validate::Requested;
    use crate::rollout::control::Command;
    use crate::workload::Workload;
    use serde_json::json;

    /// An edge InferenceService, one pod per node, whose stable revision is
    /// `stable` (none yet when `None`).
    fn edge(stable: Option<&str>) -> InferenceService {
        let mut isvc: InferenceService = serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "detector", "namespace": "edge", "generation": 1},
            "spec": {"model": {"storageUri": "s3://m/model.onnx"},
                     "placement": {"mode": "PerNode", "nodeSelector": {"sluice.dev/edge": "true"}},
                     "rollout": {"strategy": "BlueGreen"}},
        }))
        .unwrap();
        isvc.status = stable.map(|s| crate::crd::InferenceServiceStatus {
            revision: Some(s.into()),
            stable_revision: Some(s.into()),
            ..Default::default()
        });
        isvc
    }

    /// A revision's DaemonSet over `nodes` matching nodes, `ready` of them ready.
    fn daemon_set(revision: &str, nodes: i32, ready: i32) -> Workload {
        Workload::DaemonSet(
            serde_json::from_value(json!({
                "metadata": {"name": format!("detector-{revision}"), "generation": 1,
                             "labels": {crate::names::REVISION_LABEL: revision}},
                "status": {"observedGeneration": 1, "desiredNumberScheduled": nodes,
                           "currentNumberScheduled": nodes, "numberReady": ready,
                           "numberMisscheduled": 0, "updatedNumberScheduled": nodes},
            }))
            .unwrap(),
        )
    }

    fn plan(isvc: &InferenceService, revision: &str, workloads: Vec<Workload>) -> Plan {
        plan_with(isvc, revision, workloads, Requested::Nothing)
    }

    fn plan_with(
        isvc: &InferenceService,
        revision: &str,
        workloads: Vec<Workload>,
        command: Requested,
    ) -> Plan {
        let valid = Validated {
            isvc,
            name: "detector".into(),
            namespace: "edge".into(),
            revision: revision.into(),
            command,
        };
        let observed = Observed {
            isvc: isvc.clone(),
            objects: Objects {
                workloads,
                ..Objects::default()
            },
            // Busy pods: a replica count would scale up; one per node does not.
            signals: Some(Signals {
                peak_rps: Some(1e6),
                latest_rps: Some(1e6),
                ..Signals::default()
            }),
            analysis: None,
            drift: None,
        };
        decide(&valid, &observed, Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn per_node_the_nodes_set_the_count_and_the_autoscaler_says_it_does_not_scale() {
        let isvc = edge(None);
        let first = plan(&isvc, "r1", Vec::new());
        assert_eq!(
            (first.scale.signal, first.scale.desired_replicas),
            (Signal::PerNode, 1),
            "before the DaemonSet counts the nodes, one pod is wanted"
        );
        assert_eq!(
            first.rollout.replicas.get("r1"),
            Some(&1),
            "its DaemonSet is kept"
        );

        let three = plan(&isvc, "r1", vec![daemon_set("r1", 3, 3)]);
        assert_eq!(
            (three.scale.signal, three.scale.desired_replicas),
            (Signal::PerNode, 3)
        );
        assert_eq!(
            three.scale.reason,
            "one pod on each of the 3 matching nodes (spec.placement.mode PerNode); the autoscaler does not scale"
        );
        assert_eq!(
            three.rollout.stable.as_deref(),
            Some("r1"),
            "ready on every matching node: the first revision is stable"
        );

        let none = plan(&isvc, "r1", vec![daemon_set("r1", 0, 0)]);
        assert_eq!(none.scale.desired_replicas, 1);
        assert!(
            none.scale
                .reason
                .starts_with("no node matches spec.placement yet")
        );
        assert_eq!(
            none.rollout.stable, None,
            "nothing serves, nothing is promoted"
        );
        assert_eq!(none.rollout.replicas.get("r1"), Some(&1));
    }

    #[test]
    fn per_node_a_new_revision_previews_on_every_node_beside_the_stable_one() {
        let isvc = edge(Some("r1"));
        let preview = plan(
            &isvc,
            "r2",
            vec![daemon_set("r1", 2, 2), daemon_set("r2", 2, 2)],
        );
        assert_eq!(
            preview.rollout.replicas,
            [("r1".to_string(), 2), ("r2".to_string(), 2)].into(),
            "both DaemonSets run, one pod each per node"
        );
        assert_eq!(
            preview.layout.active.as_deref(),
            Some("r1"),
            "the Service stays on the stable revision during the preview"
        );
        assert_eq!(preview.rollout.canary_weight, Some(0));

        // A node matched by the new placement alone is waited for: the new
        // revision must be ready on each of its own matching nodes.
        let waiting = plan(
            &isvc,
            "r2",
            vec![daemon_set("r1", 2, 2), daemon_set("r2", 3, 2)],
        );
        assert!(
            waiting
                .rollout
                .rollout
                .as_ref()
                .unwrap()
                .message
                .contains("waiting for 1 of 3 pods of revision r2"),
            "{:?}",
            waiting.rollout.rollout
        );

        let mut previewing = isvc.clone();
        previewing.status.as_mut().unwrap().rollout = preview.rollout.rollout.clone();
        let promoted = plan_with(
            &previewing,
            "r2",
            vec![daemon_set("r1", 2, 2), daemon_set("r2", 2, 2)],
            Requested::Command(Command::Promote),
        );
        assert_eq!(
            promoted.layout.active.as_deref(),
            Some("r2"),
            "promoted: the Service switches on every node at once"
        );
    }
}
