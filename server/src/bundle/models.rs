//! What `--model` names, found and checked before anything is packed.
//!
//! A `--model` is one of:
//! - an ONNX file: one model, version 1, with the default configuration;
//! - a folder holding `model.onnx` (what `sluice-server fetch` writes): the
//!   same, with the folder's `config.yaml` if it has one;
//! - a model folder, `<n>/model.onnx` for each version and an optional
//!   `config.yaml`: the model with every version;
//! - a model repository (`<model>/<n>/model.onnx`, as `serve` reads it): every
//!   model in it, skipping entries `serve` skips;
//! - a `file://`, `http://`, `https://` or `s3://` URI of one ONNX file, fetched
//!   as `sluice-server fetch` fetches it.
//!
//! `NAME=...` serves a file, a `model.onnx` folder, a model folder or a URI
//! as `NAME`; otherwise a model is named after its file or folder (for a
//! `model.onnx`, the folder above it, numbered version folders skipped).
//! Every model file, fallback models included, is decoded and loaded by ONNX
//! Runtime, and every `config.yaml` is read as `serve` reads it, so that a
//! bundle never carries a model its server would refuse.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::config::ModelConfig;
use crate::config::resilience::FallbackSource;
use crate::fetch::{FetchRequest, MODEL_FILE, fetch};
use crate::optimize::{OptimizeError, onnx};
use crate::runtime::{OnnxModel, RuntimeError};

use super::BundleError;

/// The configuration file of a model's folder.
pub const CONFIG_FILE: &str = "config.yaml";

/// One model as the bundle serves it.
#[derive(Debug, Clone)]
pub struct Model {
    /// The name it is served under (its folder in the bundle's repository).
    pub name: String,
    /// The `--model` it came from.
    pub from: String,
    /// The URI it was downloaded from, for a remote model.
    pub uri: Option<String>,
    /// Each version's ONNX file.
    pub versions: BTreeMap<u64, PathBuf>,
    /// The other files of its folder that the server reads: `config.yaml` and
    /// what it names (a drift profile, a fallback model), by their path
    /// relative to the folder.
    pub files: BTreeMap<String, PathBuf>,
}

/// Finds every model that `specs` name, fetching remote ones into `downloads`,
/// and checks them. Names must be distinct.
pub fn resolve(
    specs: &[String],
    downloads: &Path,
    timeout: Duration,
) -> Result<Vec<Model>, BundleError> {
    let mut models: Vec<Model> = Vec::new();
    for spec in specs {
        for mut model in resolve_one(spec, downloads, timeout)? {
            if models.iter().any(|m| m.name == model.name) {
                return Err(BundleError::DuplicateName(model.name));
            }
            check(&mut model)?;
            models.push(model);
        }
    }
    Ok(models)
}

/// The models one `--model` names.
fn resolve_one(spec: &str, downloads: &Path, timeout: Duration) -> Result<Vec<Model>, BundleError> {
    let invalid = |message: String| BundleError::Model {
        spec: spec.to_string(),
        message,
    };
    let (name, location) = match spec.split_once('=') {
        Some((name, location)) if valid_name(name) => (Some(name.to_string()), location),
        _ => (None, spec),
    };
    if let Some(path) = location.strip_prefix("file://") {
        return local(spec, name, Path::new(path));
    }
    if location.contains("://") {
        let name = match name {
            Some(name) => name,
            None => name_of(location.split('/').skip(3)).ok_or_else(|| {
                invalid("cannot name the model from its URI; write --model NAME=URI".into())
            })?,
        };
        let dest = downloads.join(&name);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let fetched = runtime
            .block_on(fetch(FetchRequest {
                uri: location,
                dest: &dest,
                file_name: MODEL_FILE,
                sha256: None,
                timeout,
            }))
            .map_err(|e| invalid(e.to_string()))?;
        let mut model = single(spec, name, fetched.path, None);
        model.uri = Some(location.to_string());
        return Ok(vec![model]);
    }
    local(spec, name, Path::new(location))
}

/// The models a local file or folder holds.
fn local(spec: &str, name: Option<String>, path: &Path) -> Result<Vec<Model>, BundleError> {
    let invalid = |message: String| BundleError::Model {
        spec: spec.to_string(),
        message,
    };
    let unreadable = |e: std::io::Error| invalid(format!("{}: {e}", path.display()));
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    // Named after the path as given (a symbolic link is not followed).
    let absolute = std::path::absolute(path).map_err(unreadable)?;
    let parts = absolute
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let named = |derived: Option<String>| {
        name.clone().or(derived).ok_or_else(|| {
            invalid("cannot name the model from its path; write --model NAME=PATH".into())
        })
    };
    if metadata.is_file() {
        return Ok(vec![single(spec, named(name_of(parts))?, absolute, None)]);
    }
    let file_name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| valid_name(n));
    if absolute.join(MODEL_FILE).is_file() {
        let config = Some(absolute.join(CONFIG_FILE)).filter(|c| c.is_file());
        let file = absolute.join(MODEL_FILE);
        return Ok(vec![single(spec, named(file_name)?, file, config)]);
    }
    if !version_folders(&absolute).is_empty() {
        return Ok(vec![model_folder(spec, named(file_name)?, &absolute)]);
    }
    if name.is_some() {
        return Err(invalid(format!(
            "{} is not one model (NAME= names one model)",
            path.display()
        )));
    }
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&absolute)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|dir| dir.is_dir() && !version_folders(dir).is_empty())
        .collect();
    folders.sort();
    if folders.is_empty() {
        return Err(invalid(format!(
            "{} holds no model: expected an ONNX file, model.onnx, numbered version folders (<n>/model.onnx) or model folders",
            path.display()
        )));
    }
    folders
        .iter()
        .map(|dir| {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            if valid_name(&name) {
                Ok(model_folder(spec, name.into_owned(), dir))
            } else {
                Err(invalid(format!(
                    "'{name}' is not a model name: {NAME_RULE}"
                )))
            }
        })
        .collect()
}

/// A model of one version, from one file.
fn single(spec: &str, name: String, file: PathBuf, config: Option<PathBuf>) -> Model {
    Model {
        name,
        from: spec.to_string(),
        uri: None,
        versions: BTreeMap::from([(1, file)]),
        files: config
            .map(|c| BTreeMap::from([(CONFIG_FILE.to_string(), c)]))
            .unwrap_or_default(),
    }
}

/// A model folder: `<n>/model.onnx` per version, `config.yaml` if present.
fn model_folder(spec: &str, name: String, dir: &Path) -> Model {
    let versions = version_folders(dir)
        .into_iter()
        .map(|n| (n, dir.join(n.to_string()).join(MODEL_FILE)))
        .collect();
    let config = Some(dir.join(CONFIG_FILE)).filter(|c| c.is_file());
    Model {
        name,
        from: spec.to_string(),
        uri: None,
        versions,
        files: config
            .map(|c| BTreeMap::from([(CONFIG_FILE.to_string(), c)]))
            .unwrap_or_default(),
    }
}

/// The positive numbers that name sub-folders of `dir`, as `serve` reads them.
fn version_folders(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .filter(|number| *number > 0)
        .collect();
    numbers.sort_unstable();
    numbers
}

/// Checks every file of `model` and adds those its `config.yaml` names.
fn check(model: &mut Model) -> Result<(), BundleError> {
    for file in model.versions.values() {
        check_onnx(file)?;
    }
    let Some(config) = model.files.get(CONFIG_FILE) else {
        return Ok(());
    };
    let folder = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let config = ModelConfig::load(&folder).map_err(|e| BundleError::Config(e.to_string()))?;
    let mut named = Vec::new();
    if let Some(monitoring) = &config.monitoring {
        named.push(("monitoring.profile", monitoring.profile.as_str()));
    }
    if let Some(Ok(FallbackSource::Model(path))) = config.fallback.as_ref().map(|f| f.source()) {
        named.push(("fallback.model", path));
    }
    for (field, relative) in named {
        let refuse = |why: &str| {
            BundleError::Config(format!(
                "{}: {field} '{relative}' {why}",
                folder.join(CONFIG_FILE).display()
            ))
        };
        let inside = inside(relative).ok_or_else(|| {
            refuse("is not a path inside the model's folder, so the bundle cannot carry it")
        })?;
        let source = folder.join(&inside);
        if !source.is_file() {
            return Err(refuse("does not exist"));
        }
        if field == "fallback.model" {
            check_onnx(&source)?;
        }
        model.files.insert(inside, source);
    }
    Ok(())
}

/// `relative` as a `/`-separated path inside a folder, if it stays inside.
fn inside(relative: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_string()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Decodes `path` as an ONNX model and loads it in ONNX Runtime.
pub fn check_onnx(path: &Path) -> Result<(), BundleError> {
    let not_onnx = |message: String| BundleError::NotOnnx {
        path: path.display().to_string(),
        message,
    };
    match onnx::read(path) {
        Ok(_) => {}
        Err(OptimizeError::Io { message, .. }) => {
            return Err(BundleError::Read {
                path: path.display().to_string(),
                source: std::io::Error::other(message),
            });
        }
        Err(OptimizeError::Malformed { message, .. }) => return Err(not_onnx(message)),
        Err(other) => return Err(not_onnx(other.to_string())),
    }
    match OnnxModel::load(path, &ModelConfig::default()) {
        Ok(_) => Ok(()),
        Err(RuntimeError::Library(message)) => Err(BundleError::Library(message)),
        Err(error) => Err(not_onnx(format!("ONNX Runtime cannot load it: {error}"))),
    }
}

/// What a model name may be.
const NAME_RULE: &str = "letters, digits, '.', '_' and '-', not starting with '.'";

/// Whether `name` can name a model (a folder and a URL path segment).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A model's name from the parts of its path or URI, last one the file:
/// the file's stem, or for `model.onnx` the folder above it, skipping a
/// numbered version folder (`fraud/3/model.onnx` is `fraud`).
fn name_of<S: AsRef<str>>(parts: impl Iterator<Item = S>) -> Option<String> {
    let parts: Vec<String> = parts
        .map(|p| p.as_ref().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let (file, folders) = parts.split_last()?;
    let file = file.split(['?', '#']).next().unwrap_or_default();
    let stem = file.strip_suffix(".onnx").unwrap_or(file);
    let name = if file == MODEL_FILE {
        folders
            .iter()
            .rev()
            .find(|folder| folder.parse::<u64>().is_err())?
            .as_str()
    } else {
        stem
    };
    valid_name(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_named_after_its_file_or_the_folder_above_model_onnx() {
        for (path, name) in [
            ("/models/fraud.onnx", Some("fraud")),
            ("/models/fraud/3/model.onnx", Some("fraud")),
            ("/models/fraud/model.onnx", Some("fraud")),
            ("fraud/3/model.onnx?versionId=7", Some("fraud")),
            ("/3/model.onnx", None),
            ("/models/my model.onnx", None),
            ("/models/.hidden.onnx", None),
        ] {
            assert_eq!(name_of(path.split('/')).as_deref(), name, "{path}");
        }
    }

    #[test]
    fn files_a_config_names_must_stay_in_the_models_folder() {
        assert_eq!(inside("profile.json").as_deref(), Some("profile.json"));
        assert_eq!(
            inside("./fallback/model.onnx").as_deref(),
            Some("fallback/model.onnx")
        );
        for outside in ["../profile.json", "/etc/profile.json", "a/../../b", "", "."] {
            assert_eq!(inside(outside), None, "{outside}");
        }
    }

    #[test]
    fn names_are_folder_and_url_safe() {
        assert!(valid_name("fraud-v2.1_eu"));
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "fraud?x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
