//! The worker's model, loaded as `serve` loads a version: its configuration,
//! warm-up, batcher, timeout, circuit breaker, fallback and drift monitor.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bundle::models::{Model, resolve};
use crate::config::ModelConfig;
use crate::metrics::Metrics;
use crate::model::ModelVersion;
use crate::monitoring::profile::Profile;
use crate::repository;

use super::{StreamError, StreamRequest};

/// How long loading (fetching, warm-up) may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A loaded model and the feature names its profile gives, if any.
pub struct Loaded {
    /// The version that answers records.
    pub version: Arc<ModelVersion>,
    /// The profile's feature names, in the input's order (empty without one).
    pub features: Vec<String>,
}

/// Finds `request.model` (fetching a remote one into `scratch`), lays its
/// highest version out as a one-model repository there, and loads it.
pub fn load(
    request: &StreamRequest,
    metrics: &Metrics,
    scratch: &Path,
) -> Result<Loaded, StreamError> {
    let failed = |message: String| StreamError::Model {
        model: request.model.clone(),
        message,
    };
    let models = resolve(
        std::slice::from_ref(&request.model),
        &scratch.join("downloads"),
        LOAD_TIMEOUT,
    )
    .map_err(|e| failed(e.to_string()))?;
    let [model] = models.as_slice() else {
        return Err(failed(format!(
            "names {} models; a stream runs one (name its folder)",
            models.len()
        )));
    };
    let (number, dir) = lay_out(model, &scratch.join("repository")).map_err(failed)?;
    let mut config = ModelConfig::load(&dir).map_err(|e| failed(e.to_string()))?;
    if request.threads > 0 {
        config.intra_op_threads = request.threads;
    }
    let features = match &config.monitoring {
        Some(monitoring) => Profile::load(&dir.join(&monitoring.profile))
            .map_err(|e| failed(e.to_string()))?
            .features
            .into_iter()
            .map(|column| column.name)
            .collect(),
        None => Vec::new(),
    };
    let version = Arc::new(repository::version(
        &model.name,
        number,
        &dir,
        config,
        metrics,
    ));
    version.spawn_loader();
    let started = Instant::now();
    while !version.is_settled() {
        if started.elapsed() > LOAD_TIMEOUT {
            return Err(failed(format!("still loading after {LOAD_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(reason) = version.failure() {
        return Err(failed(reason.to_string()));
    }
    Ok(Loaded { version, features })
}

/// Links the model's highest version and its folder's files into
/// `root/<name>/`, the layout `serve` reads; returns the version's number
/// and the model's folder.
fn lay_out(model: &Model, root: &Path) -> Result<(u64, PathBuf), String> {
    let (number, onnx) = model
        .versions
        .last_key_value()
        .ok_or_else(|| "has no version".to_string())?;
    let dir = root.join(&model.name);
    let link = |from: &Path, to: PathBuf| -> Result<(), String> {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let from = std::fs::canonicalize(from).map_err(|e| format!("{}: {e}", from.display()))?;
        std::os::unix::fs::symlink(&from, &to).map_err(|e| format!("{}: {e}", to.display()))
    };
    link(onnx, dir.join(number.to_string()).join("model.onnx"))?;
    for (relative, file) in &model.files {
        link(file, dir.join(relative))?;
    }
    Ok((*number, dir))
}
