//! The model repository: `DIR/<model>/<version>/model.onnx` with an optional
//! `DIR/<model>/config.yaml`. Every version loads concurrently; a model that fails
//! is reported without stopping the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::error::InferError;
use crate::metrics::Metrics;
use crate::model::ModelVersion;

/// Why the repository itself could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("cannot read model repository {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("model repository {0} holds no model folders")]
    Empty(String),
}

/// Every model found in the repository, by name, with its versions.
pub struct Repository {
    models: BTreeMap<String, BTreeMap<u64, Arc<ModelVersion>>>,
}

impl Repository {
    /// Scans `dir` and starts loading every version of every model.
    pub fn load(dir: &Path, metrics: &Metrics) -> Result<Repository, RepositoryError> {
        let read_error = |source| RepositoryError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut models = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            if !entry.path().is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let versions = scan_model(&name, &entry.path(), metrics);
            if versions.is_empty() {
                tracing::warn!(model = %name, "model folder has no numbered version folders; skipped");
                continue;
            }
            models.insert(name, versions);
        }
        if models.is_empty() {
            return Err(RepositoryError::Empty(dir.display().to_string()));
        }
        let repository = Repository { models };
        for version in repository.versions() {
            if !version.is_settled() {
                version.spawn_loader();
            }
        }
        Ok(repository)
    }

    /// Every version of every model.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.models.values().flat_map(BTreeMap::values)
    }

    /// Every model's name with its version numbers, oldest first.
    pub fn models(&self) -> impl Iterator<Item = (&str, Vec<u64>)> {
        self.models
            .iter()
            .map(|(name, versions)| (name.as_str(), versions.keys().copied().collect()))
    }

    /// Whether every version has finished loading (successfully or not).
    pub fn all_settled(&self) -> bool {
        self.versions().all(|version| version.is_settled())
    }

    /// The version a request names, or by default the newest version that
    /// serves (the newest of all if none serves yet).
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<&Arc<ModelVersion>, InferError> {
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| InferError::NotFound(format!("unknown model '{name}'")))?;
        match version.filter(|v| !v.is_empty()) {
            Some(requested) => requested
                .parse::<u64>()
                .ok()
                .and_then(|number| versions.get(&number))
                .ok_or_else(|| {
                    InferError::NotFound(format!("model '{name}' has no version '{requested}'"))
                }),
            None => Ok(versions
                .values()
                .rev()
                .find(|v| v.serving().is_ok())
                .unwrap_or_else(|| {
                    versions
                        .values()
                        .next_back()
                        .expect("versions are never empty")
                })),
        }
    }
}

/// Finds the numbered version folders of one model and reads its configuration.
fn scan_model(name: &str, dir: &Path, metrics: &Metrics) -> BTreeMap<u64, Arc<ModelVersion>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    let numbers: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u64>().ok())
        .filter(|number| *number > 0)
        .collect();
    let config = ModelConfig::load(dir);
    numbers
        .into_iter()
        .map(|number| {
            let version = match &config {
                Ok(config) => version(name, number, dir, config.clone(), metrics),
                Err(error) => ModelVersion::failed(
                    name,
                    number,
                    error.to_string(),
                    metrics.for_version(name, number),
                ),
            };
            (number, Arc::new(version))
        })
        .collect()
}

/// Version `number` of the model in `dir` (`dir/<number>/model.onnx`), not
/// loaded yet, with its series (and its fallback's) in `metrics`.
pub fn version(
    name: &str,
    number: u64,
    dir: &Path,
    config: ModelConfig,
    metrics: &Metrics,
) -> ModelVersion {
    let fallback_metrics = config
        .fallback
        .as_ref()
        .is_some_and(|f| f.model.is_some())
        .then(|| metrics.for_fallback(name, number));
    ModelVersion::new(
        name,
        number,
        dir.join(number.to_string()).join("model.onnx"),
        config,
        metrics.for_version(name, number),
        fallback_metrics,
    )
}
