//! `kubectl sluice profile NAME`: the reference profile for drift monitoring,
//! computed from the model an InferenceService serves.
//!
//! The profile is `sluice-server profile`'s (docs/monitoring.md): this command
//! finds the model in the InferenceService (`status.rollback` when a rollback
//! is in force, else `spec.model`, or a revision from status with
//! `--revision`), downloads it on this machine with `sluice-server fetch`
//! (which checks `sha256`), and runs `sluice-server profile` on it with the
//! user's training data. Both run from a local `sluice-server` binary; nothing
//! runs in the cluster. A model this machine cannot read (`pvc://`, or a
//! `file://` path that exists only on the nodes) is refused with what to do
//! instead (`--model-file`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_operator::crd::InferenceService;
use sluice_operator::crd::rollout::ModelRecord;

use crate::{Error, Result};

/// The file `sluice-server fetch` writes in its `--dest` folder.
pub const MODEL_FILE: &str = "model.onnx";

/// The user's side of the profile: data and output, passed through to
/// `sluice-server profile`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileOptions {
    /// Training data: CSV with a header row, or a 2-D `.npy` array (`--data`).
    pub data: PathBuf,
    /// Where the profile (JSON) is written (`--output`).
    pub output: PathBuf,
    /// CSV column with the true label or value (`--label-column`).
    pub label_column: Option<String>,
    /// Features that are category codes (`--categorical`).
    pub categorical: Vec<String>,
    /// Most values kept per numeric column (`--sample-size`).
    pub sample_size: Option<usize>,
}

/// The model a profile is made for, and where status or spec recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelChoice {
    /// Its revision, when known.
    pub revision: Option<String>,
    /// `status.rollback`, `spec.model`, `status.rollout` or `status.history`.
    pub source: &'static str,
    /// The model.
    pub model: ModelRecord,
}

/// The model to profile: with `revision`, that revision's from status
/// (`status.rollout`, `status.rollback`, else its newest `status.history`
/// entry); without, the one in force (`status.rollback` while a rollback
/// holds, else `spec.model` at `status.revision`).
pub fn choose_model(isvc: &InferenceService, revision: Option<&str>) -> Result<ModelChoice> {
    let status = isvc.status.clone().unwrap_or_default();
    let Some(wanted) = revision else {
        return Ok(match &status.rollback {
            Some(r) => ModelChoice {
                revision: Some(r.revision.clone()),
                source: "status.rollback",
                model: r.model.clone(),
            },
            None => ModelChoice {
                revision: status.revision.clone(),
                source: "spec.model",
                model: ModelRecord::from(&isvc.spec.model),
            },
        });
    };
    let from_rollout = status
        .rollout
        .as_ref()
        .filter(|r| r.revision == wanted)
        .map(|r| (r.model.clone(), "status.rollout"));
    let from_rollback = status
        .rollback
        .as_ref()
        .filter(|r| r.revision == wanted)
        .map(|r| (r.model.clone(), "status.rollback"));
    let from_history = status
        .history
        .iter()
        .rev()
        .find(|e| e.revision == wanted)
        .map(|e| (e.model.clone(), "status.history"));
    match from_rollout.or(from_rollback).or(from_history) {
        Some((model, source)) => Ok(ModelChoice {
            revision: Some(wanted.to_string()),
            source,
            model,
        }),
        None => {
            let mut known: Vec<&str> = status
                .history
                .iter()
                .map(|e| e.revision.as_str())
                .chain(status.rollout.as_ref().map(|r| r.revision.as_str()))
                .collect();
            known.sort_unstable();
            known.dedup();
            Err(Error::UnknownRevision {
                revision: wanted.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            })
        }
    }
}

/// Where the profile's model comes from on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelLocation {
    /// A local file (`--model-file`), used as it is.
    File(PathBuf),
    /// A URI `sluice-server fetch` downloads (checking `sha256` when set).
    Fetch {
        /// `storageUri`.
        uri: String,
        /// Expected SHA-256.
        sha256: Option<String>,
    },
}

/// Where to read the model: `model_file` when given, else the model's URI if
/// this machine can reach it. `pvc://` is only mounted in pods, and a `file://`
/// path that does not exist here is a path on the cluster's nodes.
pub fn locate(choice: &ModelChoice, model_file: Option<&Path>) -> Result<ModelLocation> {
    if let Some(path) = model_file {
        return Ok(ModelLocation::File(path.to_path_buf()));
    }
    let uri = &choice.model.storage_uri;
    let unreachable = |reason: &str| Error::Unreachable {
        uri: uri.clone(),
        reason: reason.into(),
    };
    if uri.starts_with("pvc://") {
        return Err(unreachable(
            "pvc:// is a volume claim only pods mount; copy the file from the volume (or from where it was uploaded) and pass --model-file",
        ));
    }
    if let Some(path) = uri.strip_prefix("file://")
        && !Path::new(path).exists()
    {
        return Err(unreachable(
            "file:// names a path on the cluster's nodes, which does not exist here; copy the file to this machine and pass --model-file",
        ));
    }
    Ok(ModelLocation::Fetch {
        uri: uri.clone(),
        sha256: choice.model.sha256.clone(),
    })
}

/// A note when the download cannot use the InferenceService's credentials:
/// `credentialsSecret` lives in the cluster, and the plugin does not read
/// Secrets, so `sluice-server fetch` uses this machine's (`AWS_*` variables).
pub fn credentials_note(choice: &ModelChoice, location: &ModelLocation) -> Option<String> {
    let secret = choice.model.credentials_secret.as_ref()?;
    matches!(location, ModelLocation::Fetch { .. }).then(|| {
        format!(
            "the model's credentialsSecret {secret} is not read: the download uses this machine's credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL)"
        )
    })
}

/// `sluice-server fetch` arguments: download `uri` to `dest/model.onnx`.
pub fn fetch_args(uri: &str, dest: &Path, sha256: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["fetch".into(), "--uri".into(), uri.into()];
    args.extend(["--dest".into(), dest.into()]);
    if let Some(digest) = sha256 {
        args.extend(["--sha256".into(), digest.into()]);
    }
    args
}

/// `sluice-server profile` arguments for `model` and the user's options.
pub fn profile_args(model: &Path, options: &ProfileOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["profile".into(), "--model".into(), model.into()];
    args.extend(["--data".into(), options.data.clone().into()]);
    args.extend(["--output".into(), options.output.clone().into()]);
    if let Some(column) = &options.label_column {
        args.extend(["--label-column".into(), column.into()]);
    }
    if !options.categorical.is_empty() {
        args.extend(["--categorical".into(), options.categorical.join(",").into()]);
    }
    if let Some(n) = options.sample_size {
        args.extend(["--sample-size".into(), n.to_string().into()]);
    }
    args
}

/// The `sluice-server` to run: `explicit` (`--server-bin`, or
/// `SLUICE_SERVER_BIN`), else the first `sluice-server` on `PATH`.
pub fn server_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(Error::ServerBinary(format!(
                "--server-bin {}: no such file",
                path.display()
            )))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("sluice-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            Error::ServerBinary(
                "sluice-server is not on PATH: build it (`make build`, then target/release/sluice-server) and pass --server-bin".into(),
            )
        })
}

/// What `profile` did (`-o json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProfileReport {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The model's revision, when known.
    pub revision: Option<String>,
    /// Where the model was found: `spec.model`, `status.rollback`,
    /// `status.rollout`, `status.history`, or `--model-file`.
    pub model_source: String,
    /// The model's `storageUri` (or the local file).
    pub model: String,
    /// The training data.
    pub data: String,
    /// The profile written.
    pub output: String,
    /// Its SHA-256, for `spec.monitoring.profileSha256`.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Rows of training data it describes.
    pub rows: Option<u64>,
    /// Features it describes.
    pub features: Option<usize>,
    /// Model outputs it describes.
    pub outputs: Option<usize>,
}

/// Runs `sluice-server` (fetch if needed, then profile) and reports the
/// profile. Its output goes to standard error, so `-o json` stays parseable.
pub fn run(
    server: &Path,
    name: &str,
    namespace: &str,
    choice: &ModelChoice,
    location: &ModelLocation,
    options: &ProfileOptions,
) -> Result<ProfileReport> {
    let scratch = tempfile::Builder::new()
        .prefix("kubectl-sluice-profile-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let (model_path, model, source) = match location {
        ModelLocation::File(path) => (
            path.clone(),
            path.display().to_string(),
            "--model-file".to_string(),
        ),
        ModelLocation::Fetch { uri, sha256 } => {
            execute(server, &fetch_args(uri, scratch.path(), sha256.as_deref()))?;
            (
                scratch.path().join(MODEL_FILE),
                uri.clone(),
                choice.source.to_string(),
            )
        }
    };
    execute(server, &profile_args(&model_path, options))?;
    let bytes = std::fs::read(&options.output).map_err(|e| Error::io(&options.output, e))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let profile: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::json(options.output.display().to_string(), e))?;
    let count = |key: &str| profile[key].as_array().map(Vec::len);
    Ok(ProfileReport {
        name: name.into(),
        namespace: namespace.into(),
        revision: choice.revision.clone(),
        model_source: source,
        model,
        data: options.data.display().to_string(),
        output: options.output.display().to_string(),
        sha256: digest,
        bytes: bytes.len() as u64,
        rows: profile["rows"].as_u64(),
        features: count("features"),
        outputs: count("outputs"),
    })
}

impl ProfileReport {
    /// The human-readable report, with the spec fields that use the profile.
    pub fn render(&self) -> String {
        let revision = self
            .revision
            .as_deref()
            .map(|r| format!(", revision {r}"))
            .unwrap_or_default();
        let mut described = Vec::new();
        if let Some(rows) = self.rows {
            described.push(format!("{rows} rows"));
        }
        if let Some(features) = self.features {
            described.push(format!("{features} features"));
        }
        if let Some(outputs) = self.outputs {
            described.push(format!("{outputs} outputs"));
        }
        format!(
            "profiled {}/{}: model {} (from {}{revision}), data {}\n\
             wrote {} ({}, {} bytes)\n\
             sha256 {}\n\
             \n\
             To monitor drift against it, store the file where the pods can fetch it\n\
             (beside the model) and set:\n\
             \n  spec:\n    monitoring:\n      profileUri: <where you stored {}>\n      profileSha256: {}\n",
            self.namespace,
            self.name,
            self.model,
            self.model_source,
            self.data,
            self.output,
            described.join(", "),
            self.bytes,
            self.sha256,
            Path::new(&self.output)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            self.sha256,
        )
    }
}

/// Runs `server args...`, its standard output sent to our standard error.
fn execute(server: &Path, args: &[OsString]) -> Result<()> {
    let status = Command::new(server)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| Error::io(server, e))?;
    if status.success() {
        return Ok(());
    }
    let line: Vec<String> = std::iter::once(server.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Err(Error::Process {
        command: line.join(" "),
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn isvc(status: serde_json::Value) -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "fraud", "namespace": "ml"},
            "spec": {"model": {"storageUri": "s3://models/fraud/3/model.onnx", "sha256": "ab".repeat(32),
                               "credentialsSecret": "s3-creds"}},
            "status": status,
        }))
        .unwrap()
    }

    fn entry(revision: &str, uri: &str) -> serde_json::Value {
        json!({"revision": revision, "outcome": "Promoted", "reason": "r", "time": "2026-11-30T09:13:41Z",
               "model": {"storageUri": uri}})
    }

    #[test]
    fn the_model_in_force_is_the_specs_unless_a_rollback_holds() {
        let plain = isvc(json!({"revision": "r3"}));
        let choice = choose_model(&plain, None).unwrap();
        assert_eq!(
            (
                choice.source,
                choice.revision.as_deref(),
                choice.model.storage_uri.as_str()
            ),
            ("spec.model", Some("r3"), "s3://models/fraud/3/model.onnx")
        );
        let rolled = isvc(json!({"revision": "r2", "rollback": {
            "specRevision": "r3", "revision": "r2", "time": "2026-11-30T09:13:41Z",
            "model": {"storageUri": "s3://models/fraud/2/model.onnx"}}}));
        let choice = choose_model(&rolled, None).unwrap();
        assert_eq!(
            (choice.source, choice.model.storage_uri.as_str()),
            ("status.rollback", "s3://models/fraud/2/model.onnx")
        );
    }

    #[test]
    fn a_revision_is_looked_up_in_status() {
        let i = isvc(
            json!({"history": [entry("r1", "https://m/1.onnx"), entry("r2", "https://m/2.onnx")]}),
        );
        let choice = choose_model(&i, Some("r1")).unwrap();
        assert_eq!(
            (choice.source, choice.model.storage_uri.as_str()),
            ("status.history", "https://m/1.onnx")
        );
        let missing = choose_model(&i, Some("r9")).unwrap_err().to_string();
        assert_eq!(missing, "revision r9 is not in status (known: r1, r2)");
    }

    #[test]
    fn models_only_the_cluster_can_read_are_refused_with_what_to_do() {
        let choice = |uri: &str| ModelChoice {
            revision: None,
            source: "spec.model",
            model: serde_json::from_value(json!({"storageUri": uri})).unwrap(),
        };
        let pvc = locate(&choice("pvc://models/fraud.onnx"), None)
            .unwrap_err()
            .to_string();
        assert!(
            pvc.contains("only pods mount") && pvc.contains("--model-file"),
            "{pvc}"
        );
        let node = locate(&choice("file:///nowhere/on/this/machine.onnx"), None)
            .unwrap_err()
            .to_string();
        assert!(node.contains("cluster's nodes"), "{node}");
        // A local copy always works.
        assert_eq!(
            locate(
                &choice("pvc://models/fraud.onnx"),
                Some(Path::new("m.onnx"))
            )
            .unwrap(),
            ModelLocation::File("m.onnx".into())
        );
        // Downloads carry the expected digest, and say whose credentials they use.
        let s3 = choose_model(&isvc(json!({})), None).unwrap();
        let location = locate(&s3, None).unwrap();
        assert_eq!(
            location,
            ModelLocation::Fetch {
                uri: "s3://models/fraud/3/model.onnx".into(),
                sha256: Some("ab".repeat(32))
            }
        );
        assert!(
            credentials_note(&s3, &location)
                .unwrap()
                .contains("s3-creds is not read")
        );
    }

    #[test]
    fn arguments_pass_through_to_sluice_server() {
        let options = ProfileOptions {
            data: "train.csv".into(),
            output: "profile.json".into(),
            label_column: Some("target".into()),
            categorical: vec!["a".into(), "b".into()],
            sample_size: Some(500),
        };
        let args = profile_args(Path::new("/tmp/x/model.onnx"), &options);
        assert_eq!(
            args,
            [
                "profile",
                "--model",
                "/tmp/x/model.onnx",
                "--data",
                "train.csv",
                "--output",
                "profile.json",
                "--label-column",
                "target",
                "--categorical",
                "a,b",
                "--sample-size",
                "500"
            ]
        );
        assert_eq!(
            fetch_args("s3://b/k", Path::new("/tmp/x"), Some("cd")),
            [
                "fetch", "--uri", "s3://b/k", "--dest", "/tmp/x", "--sha256", "cd"
            ]
        );
        assert!(
            server_binary(Some(Path::new("/no/such/sluice-server")))
                .unwrap_err()
                .to_string()
                .contains("no such file")
        );
    }
}
