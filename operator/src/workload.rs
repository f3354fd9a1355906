//! What runs one revision's pods: a Deployment (`spec.placement.mode:
//! Replicas`, the default) or a DaemonSet (`PerNode`: one pod on every
//! matching node). `build` makes one, `dereference` lists both kinds, and
//! `decide`, `apply`, `cleanup` and the status read either through
//! [`Workload`]. Pure.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::names::REVISION_LABEL;

/// The object that runs a revision's pods.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Workload {
    /// A replica count, set by the autoscaler and the rollout.
    Deployment(Deployment),
    /// One pod on every node that the placement matches.
    DaemonSet(DaemonSet),
}

impl Workload {
    /// Its metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Deployment(d) => &d.metadata,
            Self::DaemonSet(d) => &d.metadata,
        }
    }

    /// `Deployment` or `DaemonSet`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deployment(_) => "Deployment",
            Self::DaemonSet(_) => "DaemonSet",
        }
    }

    /// The revision its pods serve (its revision label).
    pub fn revision(&self) -> Option<&str> {
        self.metadata()
            .labels
            .as_ref()?
            .get(REVISION_LABEL)
            .map(String::as_str)
    }

    /// The Deployment, in mode `Replicas`.
    pub fn deployment(&self) -> Option<&Deployment> {
        match self {
            Self::Deployment(d) => Some(d),
            Self::DaemonSet(_) => None,
        }
    }

    /// The DaemonSet, in mode `PerNode`.
    pub fn daemon_set(&self) -> Option<&DaemonSet> {
        match self {
            Self::Deployment(_) => None,
            Self::DaemonSet(d) => Some(d),
        }
    }

    /// Pods it runs now and how many of them are ready, whatever spec they run.
    pub fn counts(&self) -> (i32, i32) {
        match self {
            Self::Deployment(d) => d.status.as_ref().map_or((0, 0), |s| {
                (s.replicas.unwrap_or(0), s.ready_replicas.unwrap_or(0))
            }),
            Self::DaemonSet(d) => d
                .status
                .as_ref()
                .map_or((0, 0), |s| (s.current_number_scheduled, s.number_ready)),
        }
    }

    /// Ready pods of its latest spec, counted only once its controller has seen
    /// that spec (what a rollout step waits for).
    pub fn ready_pods(&self) -> i32 {
        let seen = |observed: Option<i64>, meta: &ObjectMeta| observed >= meta.generation;
        match self {
            Self::Deployment(d) => d
                .status
                .as_ref()
                .filter(|s| seen(s.observed_generation, &d.metadata))
                .map_or(0, |s| {
                    s.ready_replicas
                        .unwrap_or(0)
                        .min(s.updated_replicas.unwrap_or(0))
                }),
            Self::DaemonSet(d) => d
                .status
                .as_ref()
                .filter(|s| seen(s.observed_generation, &d.metadata))
                .map_or(0, |s| {
                    s.number_ready.min(s.updated_number_scheduled.unwrap_or(0))
                }),
        }
    }

    /// The nodes a DaemonSet's placement matches (`desiredNumberScheduled`),
    /// once its controller has seen its latest spec; `None` for a Deployment.
    pub fn matching_nodes(&self) -> Option<i32> {
        let d = self.daemon_set()?;
        d.status
            .as_ref()
            .filter(|s| s.observed_generation >= d.metadata.generation)
            .map(|s| s.desired_number_scheduled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(kind: &str, status: serde_json::Value) -> Workload {
        let object = json!({"metadata": {"name": "fraud-r1", "generation": 2,
            "labels": {REVISION_LABEL: "r1"}}, "status": status});
        match kind {
            "Deployment" => Workload::Deployment(serde_json::from_value(object).unwrap()),
            _ => Workload::DaemonSet(serde_json::from_value(object).unwrap()),
        }
    }

    #[test]
    fn ready_pods_wait_for_the_latest_spec() {
        let d = |observed: i64, updated: i32| {
            workload(
                "Deployment",
                json!({"observedGeneration": observed, "replicas": 3,
                "readyReplicas": 3, "updatedReplicas": updated}),
            )
        };
        assert_eq!(d(2, 3).ready_pods(), 3);
        assert_eq!(
            d(1, 3).ready_pods(),
            0,
            "the controller has not seen generation 2 yet"
        );
        assert_eq!(
            d(2, 1).ready_pods(),
            1,
            "only pods of the latest spec count"
        );
        assert_eq!(
            d(2, 1).counts(),
            (3, 3),
            "availability counts every ready pod"
        );
        assert_eq!(d(2, 3).revision(), Some("r1"));
        assert_eq!(d(2, 3).matching_nodes(), None);
    }

    #[test]
    fn a_daemon_set_counts_its_nodes() {
        let ds = |observed: i64, desired: i32, ready: i32, updated: i32| {
            workload(
                "DaemonSet",
                json!({"observedGeneration": observed, "desiredNumberScheduled": desired,
                "currentNumberScheduled": desired, "numberReady": ready,
                "numberMisscheduled": 0, "updatedNumberScheduled": updated}),
            )
        };
        assert_eq!(ds(2, 3, 3, 3).ready_pods(), 3);
        assert_eq!(ds(2, 3, 3, 1).ready_pods(), 1, "only updated pods count");
        assert_eq!(ds(1, 3, 3, 3).ready_pods(), 0, "generation 2 not seen yet");
        assert_eq!(ds(2, 3, 2, 3).counts(), (3, 2));
        assert_eq!(ds(2, 0, 0, 0).matching_nodes(), Some(0), "no node matches");
        assert_eq!(ds(1, 3, 3, 3).matching_nodes(), None, "not counted yet");
        assert!(ds(2, 3, 3, 3).deployment().is_none());
    }
}
