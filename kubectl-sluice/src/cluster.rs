//! The reads every command shares: the InferenceService, and the replica counts
//! of its revisions' workloads.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use sluice_operator::crd::InferenceService;
use sluice_operator::names::{REVISION_LABEL, selector_string};

use crate::connect::Target;
use crate::{Error, Result};

/// The InferenceService `name` in the target's namespace.
pub async fn inference_service(target: &Target, name: &str) -> Result<InferenceService> {
    api(target)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::NotFound {
            namespace: target.namespace.clone(),
            name: name.to_string(),
        })
}

/// The InferenceService API of the target's namespace.
pub fn api(target: &Target) -> Api<InferenceService> {
    Api::namespaced(target.client.clone(), &target.namespace)
}

/// Ready and desired pods of one revision's workload (its Deployment, or its
/// DaemonSet with one pod per node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionReplicas {
    /// The revision (the workload's `serving.sluice.dev/revision` label).
    pub revision: String,
    /// Pods that pass their readiness probe.
    pub ready: i32,
    /// Pods wanted.
    pub desired: i32,
}

/// The replica counts of every revision's workload, from the Deployments and
/// DaemonSets the operator labels with the InferenceService's name. `None` when
/// the caller may not list them (RBAC): status then shows only the totals.
pub async fn revision_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<RevisionReplicas>>> {
    let params = ListParams::default().labels(&selector_string(name));
    let revision =
        |labels: &std::collections::BTreeMap<String, String>| labels.get(REVISION_LABEL).cloned();
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&params)
        .await;
    let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .list(&params)
        .await;
    let (deployments, daemon_sets) = match (deployments, daemon_sets) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) | (_, Err(e)) if forbidden(&e) => return Ok(None),
        (Err(e), _) | (_, Err(e)) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for d in &deployments {
        let Some(revision) = revision(d.labels()) else {
            continue;
        };
        out.push(RevisionReplicas {
            revision,
            ready: d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        });
    }
    for s in &daemon_sets {
        let Some(revision) = revision(s.labels()) else {
            continue;
        };
        let status = s.status.as_ref();
        out.push(RevisionReplicas {
            revision,
            ready: status.map_or(0, |s| s.number_ready),
            desired: status.map_or(0, |s| s.desired_number_scheduled),
        });
    }
    Ok(Some(out))
}

fn forbidden(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 403)
}
