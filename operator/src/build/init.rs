//! The init containers that prepare a model folder before `sluice-server`
//! reads it, in serving pods and batch pods alike: the model's fetch (and,
//! with `spec.model.optimize`, the optimizer after it) and the reference
//! profile's fetch. Each returns its containers and the volumes they add.

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, Volume};

use super::fetch::{FetchSource, FetchTarget, fetch_container};
use super::optimize;
use super::pod::empty_dir;
use crate::crd::ModelSpec;
use crate::status::{FETCH_CONTAINER, PROFILE_FETCH_CONTAINER};

/// Where a model's `pvc://` claim is mounted (read-only) in its fetcher.
pub const PVC_MOUNT: &str = "/mnt/pvc";
/// The reference profile's folder inside the model's folder, as the server's
/// `config.yaml` names it (`monitoring.profile: monitoring/profile.json`).
pub const PROFILE_DIR: &str = "monitoring";
/// The file name the profile is fetched to.
pub const PROFILE_FILE: &str = "profile.json";
/// Where a profile's `pvc://` claim is mounted (read-only) in its fetcher.
pub const PROFILE_PVC_MOUNT: &str = "/mnt/profile-pvc";

/// Init containers, in order, and the volumes they add to the pod.
#[derive(Default)]
pub struct Init {
    /// The init containers.
    pub containers: Vec<Container>,
    /// Their volumes (besides the `model` and `tmp` scratch volumes every
    /// such pod has).
    pub volumes: Vec<Volume>,
}

/// The model's fetch into `version_dir` (the emptyDir volume `model` there);
/// with `model.optimize`, the fetch of the original aside and the optimizer,
/// which writes what the server loads into `version_dir`, on `threads` ONNX
/// Runtime threads. `credentials_secret` is the Secret the fetchers read.
pub fn model(
    model: &ModelSpec,
    credentials_secret: Option<&str>,
    version_dir: &str,
    threads: Option<u32>,
    image: &str,
    resources: &ResourceRequirements,
) -> Init {
    let mut init = Init::default();
    let optimize = model.optimize.as_ref();
    if optimize.is_some() {
        init.volumes.push(empty_dir(optimize::ORIGINAL_VOLUME));
    }
    let fetch = fetch_container(
        &FetchTarget {
            container: FETCH_CONTAINER,
            volume: optimize.map_or("model", |_| optimize::ORIGINAL_VOLUME),
            pvc_volume: "pvc",
            pvc_mount: PVC_MOUNT,
            dest: optimize.map_or(version_dir, |_| optimize::ORIGINAL_DIR),
            file_name: None,
        },
        &FetchSource {
            uri: &model.storage_uri,
            sha256: model.sha256.as_deref(),
            credentials_secret,
        },
        image,
        resources,
    );
    init.volumes.extend(fetch.pvc);
    init.containers.push(fetch.container);
    if let Some(optimize) = optimize {
        let parts = optimize::parts(
            optimize,
            credentials_secret,
            version_dir,
            threads,
            image,
            resources,
        );
        init.volumes.extend(parts.volumes);
        init.containers.extend(parts.containers);
    }
    init
}

/// The reference profile's fetch from `uri` into `dir` (the emptyDir volume
/// `profile`, which the server's container mounts there), as
/// [`PROFILE_FILE`].
pub fn profile(
    uri: &str,
    sha256: Option<&str>,
    credentials_secret: Option<&str>,
    dir: &str,
    image: &str,
    resources: &ResourceRequirements,
) -> Init {
    let fetch = fetch_container(
        &FetchTarget {
            container: PROFILE_FETCH_CONTAINER,
            volume: "profile",
            pvc_volume: "profile-pvc",
            pvc_mount: PROFILE_PVC_MOUNT,
            dest: dir,
            file_name: Some(PROFILE_FILE),
        },
        &FetchSource {
            uri,
            sha256,
            credentials_secret,
        },
        image,
        resources,
    );
    Init {
        containers: vec![fetch.container],
        volumes: [empty_dir("profile")]
            .into_iter()
            .chain(fetch.pvc)
            .collect(),
    }
}
