//! Where the serving pods run (`spec.placement`): the pod's node constraints,
//! and in mode `PerNode` the DaemonSet that runs one pod on every matching node
//! and the Service policy that keeps each node's callers on that node's pod.
//!
//! Placement applies to the serving pods only, init containers included (the
//! fetcher and the optimizer run in the pod). Retraining Jobs run from the
//! user's own template, and the operator where its own Deployment puts it.

use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::PlacementSpec;

/// Puts the placement's node selector, tolerations and affinity on `pod`.
pub fn place(pod: &mut PodSpec, placement: &PlacementSpec) {
    pod.node_selector =
        (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone());
    pod.tolerations = (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone());
    pod.affinity = placement.affinity.clone();
}

/// A revision's DaemonSet: one pod of `template` on every node it matches.
/// A revision's pod template changes in place only for what is not part of the
/// revision (security settings); each node then starts the new pod before its
/// old one stops, so its callers always have a local replica.
pub fn daemon_set_spec(selector: LabelSelector, template: PodTemplateSpec) -> DaemonSetSpec {
    DaemonSetSpec {
        selector,
        template,
        revision_history_limit: Some(1),
        update_strategy: Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        }),
        ..DaemonSetSpec::default()
    }
}

/// The InferenceService's Service's `internalTrafficPolicy`: `Local` per node,
/// so that a caller reaches the pod on its own node; the cluster default
/// otherwise.
pub fn internal_traffic_policy(placement: &PlacementSpec) -> Option<String> {
    placement.per_node().then(|| "Local".to_string())
}
