//! `spec.placement`: which nodes the serving pods run on, and whether they run
//! as a replica count spread over those nodes (a Deployment per revision) or as
//! one pod on every one of them (a DaemonSet per revision, for edge nodes whose
//! callers should reach their own node's replica). See docs/placement.md.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the serving pods run. Everything is off by default: any node, one
/// Deployment per revision. Part of the revision, so a change rolls out.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// `Replicas` (default): the replica count the autoscaler decides, on any
    /// matching nodes. `PerNode`: one pod on every matching node, and the
    /// InferenceService's Service keeps each node's callers on that node's pod
    /// (`internalTrafficPolicy: Local`); the autoscaler then does not scale, and
    /// rollouts are blue-green (see docs/placement.md).
    #[serde(default)]
    pub mode: PlacementMode,
    /// Node labels the serving pods require (the pod's `nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the serving pods tolerate, for example those of dedicated edge
    /// nodes (the pod's `tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node affinity, pod affinity and anti-affinity (the pod's `affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

impl PlacementSpec {
    /// Whether every field has its default (the section is then left out).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the pods run one per matching node.
    pub fn per_node(&self) -> bool {
        self.mode == PlacementMode::PerNode
    }

    /// The constraints that pick nodes, in words, for status messages: e.g.
    /// `nodeSelector sluice.dev/edge=true, 1 toleration`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.node_selector.is_empty() {
            let labels: Vec<String> = self
                .node_selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            parts.push(format!("nodeSelector {}", labels.join(",")));
        }
        match self.tolerations.len() {
            0 => {}
            1 => parts.push("1 toleration".into()),
            n => parts.push(format!("{n} tolerations")),
        }
        if self.affinity.is_some() {
            parts.push("affinity".into());
        }
        if parts.is_empty() {
            "no constraint".into()
        } else {
            parts.join(", ")
        }
    }
}

/// How many serving pods run, and where.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlacementMode {
    /// A replica count (the autoscaler's) on any matching nodes: one
    /// Deployment per revision.
    #[default]
    Replicas,
    /// One pod on every matching node: one DaemonSet per revision.
    PerNode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_what_picks_the_nodes() {
        let placement: PlacementSpec = serde_json::from_value(serde_json::json!({
            "mode": "PerNode",
            "nodeSelector": {"sluice.dev/edge": "true", "zone": "store-12"},
            "tolerations": [{"key": "edge", "operator": "Exists", "effect": "NoSchedule"}],
        }))
        .unwrap();
        assert!(placement.per_node());
        assert_eq!(
            placement.describe(),
            "nodeSelector sluice.dev/edge=true,zone=store-12, 1 toleration"
        );
        assert_eq!(PlacementSpec::default().describe(), "no constraint");
        assert!(PlacementSpec::default().is_default());
    }
}
