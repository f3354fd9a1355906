//! Pod volumes made real on the host: each volume becomes a directory (or host path)
//! that containers bind-mount at their `mountPath`. A `persistentVolumeClaim` is the
//! host path of its bound `hostPath` or `local` PersistentVolume (see [`crate::claims`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::claims;
use crate::error::{Error, Result};
use crate::fields::{field_value, resource_value};
use crate::refs::PodRefs;

/// A bind mount for one container.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Host path to bind.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
    /// Whether the mount is read-only.
    pub read_only: bool,
}

/// A pod volume on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVolume {
    /// The directory (or file) containers bind.
    pub path: PathBuf,
    /// Every mount of it is read-only (a `persistentVolumeClaim` with `readOnly`).
    pub read_only: bool,
}

/// What volume materialisation needs from the node.
pub struct VolumeContext<'a> {
    /// The API client, for service-account tokens and claims.
    pub client: &'a Client,
    /// ConfigMaps and Secrets the pod names.
    pub refs: &'a PodRefs,
    /// CPUs of the node (downward API fallback).
    pub node_cpu: u64,
    /// Memory of the node in bytes (downward API fallback).
    pub node_memory: u64,
}

/// Creates every volume of `pod` under `dir` and returns each by name.
pub async fn materialize(
    pod: &Pod,
    dir: &Path,
    ctx: &VolumeContext<'_>,
) -> Result<BTreeMap<String, HostVolume>> {
    let mut volumes = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = materialize_one(pod, volume, &dir.join(&volume.name), ctx).await?;
        let read_only = volume
            .persistent_volume_claim
            .as_ref()
            .and_then(|c| c.read_only)
            .unwrap_or(false);
        volumes.insert(volume.name.clone(), HostVolume { path, read_only });
    }
    Ok(volumes)
}

async fn materialize_one(
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    ctx: &VolumeContext<'_>,
) -> Result<PathBuf> {
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        host_path(&path, host.type_.as_deref())?;
        return Ok(path);
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let source = claims::resolve(ctx.client, namespace, &claim.claim_name).await?;
        if source.local && !source.path.exists() {
            return Err(Error::Config(format!(
                "local PersistentVolume {:?} (claim {:?}): path {} does not exist",
                source.volume,
                claim.claim_name,
                source.path.display()
            )));
        }
        host_path(&source.path, source.host_path_type.as_deref()).map_err(|e| {
            Error::Config(format!(
                "PersistentVolume {:?} (claim {:?}): {e}",
                source.volume, claim.claim_name
            ))
        })?;
        return Ok(source.path);
    }
    create_dir(dir)?;
    if volume.empty_dir.is_some() {
        return Ok(dir.to_owned());
    }
    let mut files: Vec<(String, Vec<u8>, Option<i32>)> = Vec::new();
    let default_mode;
    if let Some(cm) = &volume.config_map {
        default_mode = cm.default_mode;
        let entries = ctx.refs.config_map_entries(&cm.name);
        files.extend(select(entries, cm.items.as_deref(), cm.optional, &cm.name)?);
    } else if let Some(secret) = &volume.secret {
        default_mode = secret.default_mode;
        let name = secret.secret_name.clone().unwrap_or_default();
        let entries = ctx.refs.secret_entries(&name);
        files.extend(select(
            entries,
            secret.items.as_deref(),
            secret.optional,
            &name,
        )?);
    } else if let Some(downward) = &volume.downward_api {
        default_mode = downward.default_mode;
        files.extend(downward_files(pod, downward.items.iter().flatten(), ctx)?);
    } else if let Some(projected) = &volume.projected {
        default_mode = projected.default_mode;
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let entries = ctx.refs.config_map_entries(&cm.name);
                files.extend(select(entries, cm.items.as_deref(), cm.optional, &cm.name)?);
            }
            if let Some(secret) = &source.secret {
                let entries = ctx.refs.secret_entries(&secret.name);
                let items = secret.items.as_deref();
                files.extend(select(entries, items, secret.optional, &secret.name)?);
            }
            if let Some(downward) = &source.downward_api {
                files.extend(downward_files(pod, downward.items.iter().flatten(), ctx)?);
            }
            if let Some(token) = &source.service_account_token {
                let jwt = service_account_token(
                    pod,
                    ctx.client,
                    token.audience.clone(),
                    token.expiration_seconds,
                )
                .await?;
                files.push((token.path.clone(), jwt.into_bytes(), None));
            }
        }
    } else {
        return Err(Error::Config(format!(
            "volume {:?}: only emptyDir, configMap, secret, hostPath, downwardAPI, projected and persistentVolumeClaim are supported",
            volume.name
        )));
    }
    for (relative, content, mode) in files {
        let path = dir.join(safe_relative(&relative)?);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        write_file(
            &path,
            &content,
            mode.or(default_mode).unwrap_or(0o644) as u32,
        )?;
    }
    Ok(dir.to_owned())
}

/// Checks or creates a `hostPath` (of a volume or a PersistentVolume) per its `type`.
fn host_path(path: &Path, type_: Option<&str>) -> Result<()> {
    match type_.unwrap_or_default() {
        "DirectoryOrCreate" => create_dir(path)?,
        "FileOrCreate" if !path.exists() => {
            if let Some(parent) = path.parent() {
                create_dir(parent)?;
            }
            write_file(path, b"", 0o644)?;
        }
        "Directory" | "File" | "Socket" if !path.exists() => {
            return Err(Error::Config(format!(
                "hostPath {} does not exist",
                path.display()
            )));
        }
        _ => {}
    }
    Ok(())
}

type File = (String, Vec<u8>, Option<i32>);

/// The files of a ConfigMap or Secret: all keys, or only `items` at their paths.
fn select(
    entries: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    name: &str,
) -> Result<Vec<File>> {
    let Some(entries) = entries else {
        if optional == Some(true) {
            return Ok(Vec::new());
        }
        return Err(Error::Config(format!("volume source {name:?} not found")));
    };
    let Some(items) = items else {
        return Ok(entries.into_iter().map(|(k, v)| (k, v, None)).collect());
    };
    items
        .iter()
        .map(|item| match entries.get(&item.key) {
            Some(v) => Ok((item.path.clone(), v.clone(), item.mode)),
            None => Err(Error::Config(format!("key {:?} not in {name:?}", item.key))),
        })
        .collect()
}

fn downward_files<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    ctx: &VolumeContext<'_>,
) -> Result<Vec<File>> {
    let containers: Vec<&Container> = pod.spec.iter().flat_map(|s| &s.containers).collect();
    items
        .map(|item| {
            let text = if let Some(f) = &item.field_ref {
                field_value(pod, f)?
            } else if let Some(r) = &item.resource_field_ref {
                let wanted = r.container_name.as_deref();
                let container = containers
                    .iter()
                    .find(|c| Some(c.name.as_str()) == wanted)
                    .or(containers.first())
                    .ok_or_else(|| Error::Config("downwardAPI: pod has no containers".into()))?;
                resource_value(container, r, ctx.node_cpu, ctx.node_memory)?
            } else {
                String::new()
            };
            Ok((item.path.clone(), text.into_bytes(), item.mode))
        })
        .collect()
}

/// A bound token of the pod's service account, as the kubelet requests one.
async fn service_account_token(
    pod: &Pod,
    client: &Client,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration.unwrap_or(3607)),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let response = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await?;
    Ok(response.status.map(|s| s.token).unwrap_or_default())
}

/// The bind mounts of `container`, resolving `subPath` inside its volume; read-only
/// where the mount or its volume says so.
pub fn container_mounts(
    container: &Container,
    volumes: &BTreeMap<String, HostVolume>,
) -> Result<Vec<Mount>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let base = volumes.get(&m.name).ok_or_else(|| {
                Error::Config(format!("volumeMount {:?} names no volume", m.name))
            })?;
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => base.path.join(safe_relative(sub)?),
                None => base.path.clone(),
            };
            Ok(Mount {
                source,
                target: PathBuf::from(&m.mount_path),
                read_only: m.read_only.unwrap_or(false) || base.read_only,
            })
        })
        .collect()
}

/// Rejects absolute paths and `..` so volume files stay inside their volume.
fn safe_relative(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    let ok = p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok && !path.is_empty() {
        Ok(p)
    } else {
        Err(Error::Config(format!(
            "path {path:?} must be relative without '..'"
        )))
    }
}

fn create_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io(format!("creating {}", path.display())))
}

fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let context = || format!("writing {}", path.display());
    std::fs::write(path, content).map_err(Error::io(context()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io(context()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    #[test]
    fn rejects_escaping_paths() {
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("/etc").is_err());
        assert!(safe_relative("a/b.txt").is_ok());
    }

    #[test]
    fn selects_items_and_fails_on_missing_key() {
        let entries = Some(BTreeMap::from([("a".to_string(), b"1".to_vec())]));
        let item = |key: &str| KeyToPath {
            key: key.into(),
            path: "x/y".into(),
            mode: None,
        };
        let files = select(entries.clone(), Some(&[item("a")]), None, "cm").unwrap();
        assert_eq!(files, vec![("x/y".to_string(), b"1".to_vec(), None)]);
        assert!(select(entries, Some(&[item("b")]), None, "cm").is_err());
        assert!(select(None, None, Some(true), "cm").unwrap().is_empty());
        assert!(select(None, None, None, "cm").is_err());
    }

    #[test]
    fn mounts_resolve_sub_paths() {
        let volumes = BTreeMap::from([(
            "data".to_string(),
            HostVolume {
                path: PathBuf::from("/v/data"),
                read_only: false,
            },
        )]);
        let container = Container {
            volume_mounts: Some(vec![VolumeMount {
                name: "data".into(),
                mount_path: "/etc/app/conf.yaml".into(),
                sub_path: Some("conf.yaml".into()),
                read_only: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let mounts = container_mounts(&container, &volumes).unwrap();
        assert_eq!(mounts[0].source, PathBuf::from("/v/data/conf.yaml"));
        assert!(mounts[0].read_only);
    }

    #[test]
    fn a_read_only_volume_makes_every_mount_read_only() {
        let volumes = BTreeMap::from([
            (
                "input".to_string(),
                HostVolume {
                    path: PathBuf::from("/srv/in"),
                    read_only: true,
                },
            ),
            (
                "output".to_string(),
                HostVolume {
                    path: PathBuf::from("/srv/out"),
                    read_only: false,
                },
            ),
        ]);
        let mount = |name: &str, path: &str, sub_path: Option<&str>, read_only| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub_path.map(Into::into),
            read_only,
            ..Default::default()
        };
        let container = Container {
            volume_mounts: Some(vec![
                mount("input", "/in", None, Some(false)),
                mount("input", "/in-part", Some("part-0"), None),
                mount("output", "/out", Some("run-1"), None),
                mount("output", "/out-ro", None, Some(true)),
            ]),
            ..Default::default()
        };
        let mounts = container_mounts(&container, &volumes).unwrap();
        let got: Vec<(&str, &str, bool)> = mounts
            .iter()
            .map(|m| {
                (
                    m.source.to_str().unwrap(),
                    m.target.to_str().unwrap(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/srv/in", "/in", true),
                ("/srv/in/part-0", "/in-part", true),
                ("/srv/out/run-1", "/out", false),
                ("/srv/out", "/out-ro", true),
            ]
        );
    }

    #[test]
    fn host_path_types_are_checked_or_created() {
        let dir = std::env::temp_dir().join(format!("sluice-host-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let missing = dir.join("missing");
        assert_eq!(
            host_path(&missing, Some("Directory"))
                .unwrap_err()
                .to_string(),
            format!("hostPath {} does not exist", missing.display())
        );
        host_path(&missing, None).unwrap();
        host_path(&dir.join("a/b"), Some("DirectoryOrCreate")).unwrap();
        assert!(dir.join("a/b").is_dir());
        host_path(&dir.join("c/f"), Some("FileOrCreate")).unwrap();
        assert!(dir.join("c/f").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
