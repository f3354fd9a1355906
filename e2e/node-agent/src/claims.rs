//! `persistentVolumeClaim` volumes, resolved as the kubelet resolves them: the claim in
//! the pod's namespace must be Bound to a PersistentVolume whose `claimRef` points back
//! at it. This node has no volume plugins, so that PersistentVolume must be one that is
//! already a directory here: `hostPath` or `local` (statically provisioned; nothing
//! provisions volumes dynamically on the local cluster).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::{Api, Client};

use crate::error::{Error, Result};

/// Where a claim's volume is on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimSource {
    /// The PersistentVolume the claim is bound to.
    pub volume: String,
    /// Its directory (or file) on the host.
    pub path: PathBuf,
    /// A `hostPath` volume's `type` (`DirectoryOrCreate`, ...); `None` for `local`.
    pub host_path_type: Option<String>,
    /// Whether it is a `local` volume, whose path must exist.
    pub local: bool,
}

/// Fetches claim `claim` of `namespace` and its PersistentVolume and returns where
/// the volume is. Fails while the claim is missing or unbound; the caller retries.
pub async fn resolve(client: &Client, namespace: &str, claim: &str) -> Result<ClaimSource> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims.get_opt(claim).await?;
    let volume = bound_volume(namespace, claim, pvc.as_ref())?;
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get_opt(volume).await?;
    // `bound_volume` succeeded, so the claim exists.
    let pvc = pvc.as_ref().expect("claim checked by bound_volume");
    host_source(namespace, claim, pvc, pv.as_ref())
}

/// The name of the PersistentVolume claim `claim` is bound to, or why it has none yet.
pub fn bound_volume<'a>(
    namespace: &str,
    claim: &str,
    pvc: Option<&'a PersistentVolumeClaim>,
) -> Result<&'a str> {
    let name = claim_name(namespace, claim);
    let Some(pvc) = pvc else {
        return Err(Error::Config(format!("{name} not found")));
    };
    if pvc.metadata.deletion_timestamp.is_some() {
        return Err(Error::Config(format!("{name} is being deleted")));
    }
    let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    match (phase, volume) {
        (Some("Bound"), Some(volume)) => Ok(volume),
        (Some("Lost"), volume) => Err(Error::Config(format!(
            "{name} is Lost: its PersistentVolume {:?} is gone",
            volume.unwrap_or_default()
        ))),
        (phase, volume) => Err(Error::Config(format!(
            "{name} is not bound yet (phase {}, volumeName {}); waiting for it to be bound to a PersistentVolume",
            phase.unwrap_or("unset"),
            volume.map_or("unset".to_string(), |v| format!("{v:?}")),
        ))),
    }
}

/// Where the volume of bound claim `pvc` is, given its PersistentVolume `pv`.
pub fn host_source(
    namespace: &str,
    claim: &str,
    pvc: &PersistentVolumeClaim,
    pv: Option<&PersistentVolume>,
) -> Result<ClaimSource> {
    let name = claim_name(namespace, claim);
    let volume = bound_volume(namespace, claim, Some(pvc))?;
    let Some(pv) = pv else {
        return Err(Error::Config(format!(
            "{name} is bound to PersistentVolume {volume:?}, which does not exist"
        )));
    };
    let spec = pv.spec.as_ref();
    // The kubelet's check: the volume must be bound to this very claim (same UID), not
    // to an earlier claim of the same name.
    let claim_ref = spec.and_then(|s| s.claim_ref.as_ref());
    let points_back = claim_ref.is_some_and(|r| {
        r.name.as_deref() == Some(claim)
            && r.namespace.as_deref() == Some(namespace)
            && r.uid.is_some()
            && r.uid == pvc.metadata.uid
    });
    if !points_back {
        let bound_to = claim_ref.map_or("nothing".to_string(), |r| {
            format!(
                "{}/{} (uid {})",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default(),
                r.uid.as_deref().unwrap_or("unset"),
            )
        });
        return Err(Error::Config(format!(
            "{name} (uid {}) is bound to PersistentVolume {volume:?}, but that volume's claimRef is {bound_to}",
            pvc.metadata.uid.as_deref().unwrap_or("unset"),
        )));
    }
    if let Some(mode) = spec
        .and_then(|s| s.volume_mode.as_deref())
        .filter(|m| *m != "Filesystem")
    {
        return Err(Error::Config(format!(
            "{name} is bound to PersistentVolume {volume:?} with volumeMode {mode}; this node mounts only Filesystem volumes"
        )));
    }
    if let Some(host) = spec.and_then(|s| s.host_path.as_ref()) {
        return Ok(ClaimSource {
            volume: volume.to_owned(),
            path: PathBuf::from(&host.path),
            host_path_type: host.type_.clone().filter(|t| !t.is_empty()),
            local: false,
        });
    }
    if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
        return Ok(ClaimSource {
            volume: volume.to_owned(),
            path: PathBuf::from(&local.path),
            host_path_type: None,
            local: true,
        });
    }
    Err(Error::Config(format!(
        "{name} is bound to PersistentVolume {volume:?} of type {}; this node mounts only hostPath and local PersistentVolumes",
        volume_type(pv)
    )))
}

/// How errors name a claim.
fn claim_name(namespace: &str, claim: &str) -> String {
    format!("persistentVolumeClaim \"{namespace}/{claim}\"")
}

/// The volume source field(s) set in a PersistentVolume's spec (`nfs`, `csi (driver
/// x)`, ...), by their API names.
fn volume_type(pv: &PersistentVolume) -> String {
    const NOT_SOURCES: [&str; 9] = [
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    let spec = serde_json::to_value(&pv.spec).unwrap_or_default();
    let kinds: Vec<String> = spec
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !NOT_SOURCES.contains(&key.as_str()))
        .map(
            |(key, value)| match value.get("driver").and_then(|d| d.as_str()) {
                Some(driver) => format!("{key} (driver {driver})"),
                None => key.clone(),
            },
        )
        .collect();
    if kinds.is_empty() {
        "none (no volume source)".into()
    } else {
        kinds.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(value: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(value).unwrap()
    }

    fn pv(value: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(value).unwrap()
    }

    fn bound_claim() -> PersistentVolumeClaim {
        pvc(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "batch", "uid": "u-1"},
            "spec": {"storageClassName": "", "volumeName": "pv-data",
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound"}
        }))
    }

    fn volume(source: serde_json::Value) -> PersistentVolume {
        let mut spec = json!({
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "batch",
                         "name": "data", "uid": "u-1"}
        });
        spec.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        pv(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-data"},
            "spec": spec
        }))
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_bound_claim_names_its_volume() {
        let claim = bound_claim();
        assert_eq!(
            bound_volume("batch", "data", Some(&claim)).unwrap(),
            "pv-data"
        );
    }

    #[test]
    fn a_missing_claim_is_named() {
        assert_eq!(
            message(bound_volume("batch", "data", None)),
            "persistentVolumeClaim \"batch/data\" not found"
        );
    }

    #[test]
    fn a_pending_claim_waits() {
        let claim = pvc(json!({
            "metadata": {"name": "data", "namespace": "batch", "uid": "u-1"},
            "spec": {"storageClassName": ""},
            "status": {"phase": "Pending"}
        }));
        assert_eq!(
            message(bound_volume("batch", "data", Some(&claim))),
            "persistentVolumeClaim \"batch/data\" is not bound yet (phase Pending, volumeName unset); \
             waiting for it to be bound to a PersistentVolume"
        );
        // Pre-bound (volumeName set) but the binder has not marked it Bound yet.
        let claim = pvc(json!({
            "metadata": {"name": "data", "namespace": "batch"},
            "spec": {"volumeName": "pv-data"},
        }));
        assert_eq!(
            message(bound_volume("batch", "data", Some(&claim))),
            "persistentVolumeClaim \"batch/data\" is not bound yet (phase unset, volumeName \"pv-data\"); \
             waiting for it to be bound to a PersistentVolume"
        );
    }

    #[test]
    fn a_lost_or_deleted_claim_is_refused() {
        let mut claim = bound_claim();
        claim.status.as_mut().unwrap().phase = Some("Lost".into());
        assert_eq!(
            message(bound_volume("batch", "data", Some(&claim))),
            "persistentVolumeClaim \"batch/data\" is Lost: its PersistentVolume \"pv-data\" is gone"
        );
        let mut claim = bound_claim();
        claim.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap());
        assert_eq!(
            message(bound_volume("batch", "data", Some(&claim))),
            "persistentVolumeClaim \"batch/data\" is being deleted"
        );
    }

    #[test]
    fn host_path_and_local_volumes_give_their_path() {
        let claim = bound_claim();
        let pv = volume(json!({"hostPath": {"path": "/srv/data", "type": "DirectoryOrCreate"}}));
        assert_eq!(
            host_source("batch", "data", &claim, Some(&pv)).unwrap(),
            ClaimSource {
                volume: "pv-data".into(),
                path: "/srv/data".into(),
                host_path_type: Some("DirectoryOrCreate".into()),
                local: false,
            }
        );
        let pv = volume(json!({
            "local": {"path": "/mnt/disks/a"},
            "volumeMode": "Filesystem",
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["sluice-node"]}
            ]}]}}
        }));
        assert_eq!(
            host_source("batch", "data", &claim, Some(&pv)).unwrap(),
            ClaimSource {
                volume: "pv-data".into(),
                path: "/mnt/disks/a".into(),
                host_path_type: None,
                local: true,
            }
        );
    }

    #[test]
    fn other_volume_types_are_refused_by_name() {
        let claim = bound_claim();
        let nfs = volume(json!({"nfs": {"server": "10.0.0.1", "path": "/exports"}}));
        assert_eq!(
            message(host_source("batch", "data", &claim, Some(&nfs))),
            "persistentVolumeClaim \"batch/data\" is bound to PersistentVolume \"pv-data\" of type nfs; \
             this node mounts only hostPath and local PersistentVolumes"
        );
        let csi = volume(json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"}}));
        assert!(
            message(host_source("batch", "data", &claim, Some(&csi)))
                .contains("of type csi (driver ebs.csi.aws.com);")
        );
        let block = volume(json!({"hostPath": {"path": "/dev/sdb"}, "volumeMode": "Block"}));
        assert_eq!(
            message(host_source("batch", "data", &claim, Some(&block))),
            "persistentVolumeClaim \"batch/data\" is bound to PersistentVolume \"pv-data\" with volumeMode Block; \
             this node mounts only Filesystem volumes"
        );
    }

    #[test]
    fn the_volume_must_exist_and_point_back_at_the_claim() {
        let claim = bound_claim();
        assert_eq!(
            message(host_source("batch", "data", &claim, None)),
            "persistentVolumeClaim \"batch/data\" is bound to PersistentVolume \"pv-data\", which does not exist"
        );
        // Bound to an earlier claim of the same name (another UID).
        let mut pv = volume(json!({"hostPath": {"path": "/srv/data"}}));
        let spec = pv.spec.as_mut().unwrap();
        spec.claim_ref.as_mut().unwrap().uid = Some("u-0".into());
        assert_eq!(
            message(host_source("batch", "data", &claim, Some(&pv))),
            "persistentVolumeClaim \"batch/data\" (uid u-1) is bound to PersistentVolume \"pv-data\", \
             but that volume's claimRef is batch/data (uid u-0)"
        );
        let spec = pv.spec.as_mut().unwrap();
        spec.claim_ref = None;
        assert!(
            message(host_source("batch", "data", &claim, Some(&pv)))
                .ends_with("but that volume's claimRef is nothing")
        );
    }
}

/// Resolution against a real API server, with the objects a cluster admin would apply.
#[cfg(test)]
mod api_tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, Pod};
    use kube::api::{Patch, PatchParams, PostParams};
    use serde_json::json;

    use super::*;
    use crate::refs::PodRefs;
    use crate::test_api::ApiServer;
    use crate::volumes::{HostVolume, VolumeContext, container_mounts, materialize};

    /// A claim pre-bound to `volume` (`spec.volumeName`), as `kubectl apply` makes it.
    fn claim(name: &str, volume: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"storageClassName": "", "volumeName": volume,
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap()
    }

    /// A PersistentVolume with `source`, pre-bound to claim `pvc` (`spec.claimRef`).
    fn volume(
        name: &str,
        pvc: &PersistentVolumeClaim,
        source: serde_json::Value,
    ) -> PersistentVolume {
        let mut spec = json!({
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                         "namespace": "default", "name": pvc.metadata.name,
                         "uid": pvc.metadata.uid}
        });
        spec.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    }

    /// What the PersistentVolume controller does once both sides agree (none runs here).
    async fn mark_bound(claims: &Api<PersistentVolumeClaim>, name: &str) {
        let patch = json!({"status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"],
                                      "capacity": {"storage": "1Gi"}}});
        claims
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    fn error(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[tokio::test]
    #[ignore = "needs etcd and kube-apiserver: SLUICE_K8S_BIN=$(e2e/cluster/build-bins.sh --cached) cargo test -p sluice-node-agent -- --include-ignored"]
    async fn claims_resolve_through_the_api_server() {
        let server = ApiServer::start();
        let client = server.client().await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        let post = PostParams::default();

        assert_eq!(
            error(resolve(&client, "default", "data").await),
            "persistentVolumeClaim \"default/data\" not found"
        );

        // The claim first: the volume's claimRef carries its UID.
        let data = claims
            .create(&post, &claim("data", "pv-data"))
            .await
            .unwrap();
        let pending = error(resolve(&client, "default", "data").await);
        assert!(
            pending.starts_with("persistentVolumeClaim \"default/data\" is not bound yet ("),
            "{pending}"
        );
        let dir = server.scratch("pv-data");
        let source = json!({"hostPath": {"path": dir, "type": "DirectoryOrCreate"}});
        volumes
            .create(&post, &volume("pv-data", &data, source))
            .await
            .unwrap();
        assert!(
            error(resolve(&client, "default", "data").await).contains("is not bound yet"),
            "still Pending until the binder marks it Bound"
        );
        mark_bound(&claims, "data").await;
        assert_eq!(
            resolve(&client, "default", "data").await.unwrap(),
            ClaimSource {
                volume: "pv-data".into(),
                path: dir.clone(),
                host_path_type: Some("DirectoryOrCreate".into()),
                local: false,
            }
        );

        // Through the pod's volumes, as the worker makes them: the claim's readOnly
        // makes every mount of it read-only; DirectoryOrCreate creates the directory.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "batch", "namespace": "default", "uid": "p-1"},
            "spec": {
                "containers": [{"name": "main", "volumeMounts": [
                    {"name": "input", "mountPath": "/in", "subPath": "part-0"},
                    {"name": "output", "mountPath": "/out"}
                ]}],
                "volumes": [
                    {"name": "input", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}},
                    {"name": "output", "persistentVolumeClaim": {"claimName": "data"}}
                ]
            }
        }))
        .unwrap();
        let refs = PodRefs::default();
        let ctx = VolumeContext {
            client: &client,
            refs: &refs,
            node_cpu: 1,
            node_memory: 1 << 30,
        };
        let made = materialize(&pod, &server.scratch("pod"), &ctx)
            .await
            .unwrap();
        assert_eq!(
            made,
            BTreeMap::from([
                (
                    "input".to_string(),
                    HostVolume {
                        path: dir.clone(),
                        read_only: true
                    }
                ),
                (
                    "output".to_string(),
                    HostVolume {
                        path: dir.clone(),
                        read_only: false
                    }
                ),
            ])
        );
        assert!(dir.is_dir());
        let container: &Container = &pod.spec.as_ref().unwrap().containers[0];
        let mounts = container_mounts(container, &made).unwrap();
        assert_eq!(
            (mounts[0].source.clone(), mounts[0].read_only),
            (dir.join("part-0"), true)
        );
        assert_eq!(
            (mounts[1].source.clone(), mounts[1].read_only),
            (dir, false)
        );

        // A bound claim whose volume this node cannot mount.
        let remote = claims
            .create(&post, &claim("remote", "pv-nfs"))
            .await
            .unwrap();
        let nfs = json!({"nfs": {"server": "10.0.0.1", "path": "/exports/a"}});
        volumes
            .create(&post, &volume("pv-nfs", &remote, nfs))
            .await
            .unwrap();
        mark_bound(&claims, "remote").await;
        assert_eq!(
            error(resolve(&client, "default", "remote").await),
            "persistentVolumeClaim \"default/remote\" is bound to PersistentVolume \"pv-nfs\" of type nfs; \
             this node mounts only hostPath and local PersistentVolumes"
        );

        // A local volume whose path is missing on this node fails when the pod's
        // volumes are made.
        let disk = claims
            .create(&post, &claim("disk", "pv-local"))
            .await
            .unwrap();
        let missing = server.scratch("no-such-disk");
        let local = json!({
            "local": {"path": missing},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["sluice-node"]}
            ]}]}}
        });
        volumes
            .create(&post, &volume("pv-local", &disk, local))
            .await
            .unwrap();
        mark_bound(&claims, "disk").await;
        assert!(resolve(&client, "default", "disk").await.unwrap().local);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "disk", "namespace": "default"},
            "spec": {"containers": [{"name": "main"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "disk"}}]}
        }))
        .unwrap();
        assert_eq!(
            error(materialize(&pod, &server.scratch("pod2"), &ctx).await),
            format!(
                "local PersistentVolume \"pv-local\" (claim \"disk\"): path {} does not exist",
                missing.display()
            )
        );
    }
}
