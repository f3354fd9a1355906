//! Small pieces of every pod the operator builds: the containers' locked-down
//! security context, scratch volumes and their mounts, and init containers'
//! resources.

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};

/// The security context of every container: no privilege, no capabilities, a
/// read-only root, not root.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// The server's resources for an init container: the same, less its GPU.
pub fn without_gpu(server_resources: &ResourceRequirements) -> ResourceRequirements {
    let mut resources = server_resources.clone();
    for list in [&mut resources.limits, &mut resources.requests]
        .into_iter()
        .flatten()
    {
        list.remove("nvidia.com/gpu");
    }
    resources
}

/// A mount of `volume` at `path`.
pub fn mount(volume: &str, path: &str, read_only: bool, sub_path: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        sub_path: sub_path.map(String::from),
        ..VolumeMount::default()
    }
}

/// A pod-lifetime scratch volume (`emptyDir`) named `name`.
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}
