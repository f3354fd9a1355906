//! Fetch init containers: `sluice-server fetch` of a `storageUri` (the model,
//! the fallback model, the reference profile, calibration rows) into a volume,
//! with the read-only claim of a `pvc://` location.

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, ResourceRequirements, Volume,
};

use super::pod::{container_security, mount, secret_env, without_gpu};
use crate::crd::ModelSpec;

/// A parsed `storageUri`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUri {
    /// Fetched by the init container as given (`http(s)://`, `s3://`, `file://`).
    Remote(String),
    /// A path inside a PersistentVolumeClaim, mounted read-only.
    Pvc {
        /// Claim name.
        claim: String,
        /// Path inside the claim.
        path: String,
    },
}

impl StorageUri {
    /// Parses and checks the scheme and shape of a `storageUri`.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let (scheme, rest) = uri.split_once("://").ok_or_else(|| {
            format!("{uri:?} has no scheme; use http(s)://, s3://, pvc:// or file://")
        })?;
        match scheme {
            "http" | "https" | "s3" | "file" if !rest.is_empty() => {
                Ok(Self::Remote(uri.to_owned()))
            }
            "pvc" => match rest.split_once('/') {
                Some((claim, path)) if !claim.is_empty() && !path.is_empty() => Ok(Self::Pvc {
                    claim: claim.to_owned(),
                    path: path.trim_start_matches('/').to_owned(),
                }),
                _ => Err(format!("{uri:?} must be pvc://<claim-name>/<path>")),
            },
            "http" | "https" | "s3" | "file" => Err(format!("{uri:?} names no location")),
            other => Err(format!(
                "unsupported scheme {other:?}; use http(s)://, s3://, pvc:// or file://"
            )),
        }
    }
}

/// Where one fetch init container puts its model.
pub struct FetchTarget<'a> {
    /// The init container's name.
    pub container: &'a str,
    /// The emptyDir volume it writes to, mounted at `dest`.
    pub volume: &'a str,
    /// The volume a `pvc://` claim becomes, mounted read-only at `pvc_mount`.
    pub pvc_volume: &'a str,
    pub pvc_mount: &'a str,
    /// The folder the file is written to.
    pub dest: &'a str,
    /// The file's name in `dest`; the fetcher's default, `model.onnx`, when absent.
    pub file_name: Option<&'a str>,
}

/// What one fetch init container downloads, and with which credentials.
pub struct FetchSource<'a> {
    /// The location, in `storageUri` form.
    pub uri: &'a str,
    /// The expected SHA-256, when given.
    pub sha256: Option<&'a str>,
    /// A Secret whose keys become the fetcher's environment.
    pub credentials_secret: Option<&'a str>,
}

impl<'a> FetchSource<'a> {
    /// The model of `model`.
    pub fn model(model: &'a ModelSpec) -> Self {
        Self {
            uri: &model.storage_uri,
            sha256: model.sha256.as_deref(),
            credentials_secret: model.credentials_secret.as_deref(),
        }
    }
}

/// An init container that fetches a file (and checks its digest), with the
/// volume of its `pvc://` claim when it has one.
pub struct Fetch {
    /// The init container.
    pub container: Container,
    /// The claim's volume, for a `pvc://` location.
    pub pvc: Option<Volume>,
}

/// The init container that fetches `source` to `target`, with the server's
/// `server_resources` less its GPU.
pub fn fetch_container(
    target: &FetchTarget<'_>,
    source: &FetchSource<'_>,
    image: &str,
    server_resources: &ResourceRequirements,
) -> Fetch {
    let mut mounts = vec![
        mount(target.volume, target.dest, false, None),
        mount("tmp", "/tmp", false, None),
    ];
    let mut pvc = None;
    let uri = match StorageUri::parse(source.uri) {
        Ok(StorageUri::Pvc { claim, path }) => {
            pvc = Some(Volume {
                name: target.pvc_volume.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: Some(true),
                }),
                ..Volume::default()
            });
            mounts.push(mount(target.pvc_volume, target.pvc_mount, true, None));
            format!("file://{}/{path}", target.pvc_mount)
        }
        // `validate` ran first; an unparsable URI is passed through for the fetcher
        // to refuse with its own message.
        Ok(StorageUri::Remote(_)) | Err(_) => source.uri.to_string(),
    };
    let mut args = vec![
        "fetch".to_string(),
        "--uri".into(),
        uri,
        "--dest".into(),
        target.dest.to_string(),
    ];
    if let Some(file_name) = target.file_name {
        args.extend(["--file-name".into(), file_name.to_string()]);
    }
    if let Some(digest) = source.sha256 {
        args.extend(["--sha256".into(), digest.to_string()]);
    }
    let resources = without_gpu(server_resources);
    let container = Container {
        name: target.container.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env_from: source.credentials_secret.map(secret_env),
        resources: Some(resources),
        security_context: Some(container_security()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Fetch { container, pvc }
}
