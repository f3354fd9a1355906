//! Small pieces of every pod the operator builds (serving pods and batch
//! pods alike): the pod's and the containers' locked-down security contexts, a
//! Secret as a container's environment, scratch volumes and their mounts, and
//! init containers' resources.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvFromSource, PodSecurityContext, ResourceRequirements,
    SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};

/// The user and group every container runs as (the image's non-root user).
pub const UID: i64 = 65532;

/// The security context of every pod: not root (UID and group [`UID`], which
/// also owns the volumes), the runtime's default seccomp profile.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(UID),
        run_as_group: Some(UID),
        fs_group: Some(UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// Every key of the Secret `name` as a container's environment (credentials:
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, ...). The container does not
/// start while the Secret is missing, and says so in its waiting reason.
pub fn secret_env(name: &str) -> Vec<EnvFromSource> {
    vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: name.to_string(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }]
}

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

/// The annotations that have Prometheus' pod discovery scrape `/metrics` on
/// `port`.
pub fn scrape_annotations(port: i32) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}
