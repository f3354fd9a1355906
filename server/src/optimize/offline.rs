//! ONNX Runtime's own graph optimizations, run once here and saved into the
//! file, so that the server loads a model that needs no rewriting at start-up.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde::Serialize;

use super::OptimizeError;

/// How far ONNX Runtime rewrites the graph before it is saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GraphLevel {
    /// Constant folding and redundant-node removal: ONNX operators only, so the
    /// file runs on any execution provider.
    Basic,
    /// Also fusions into ONNX Runtime's own operators (`com.microsoft`), such as
    /// `DynamicQuantizeMatMul`: the file then needs ONNX Runtime, and was
    /// optimized for the CPU provider.
    Extended,
}

/// Rewrites the model at `path` in place with ONNX Runtime's optimizations at
/// `level`, through `scratch` (a file beside it).
pub fn save_optimized(path: &Path, scratch: &Path, level: GraphLevel) -> Result<(), OptimizeError> {
    let load_error = |message: String| OptimizeError::Load {
        path: path.display().to_string(),
        message,
    };
    let environment = crate::runtime::environment().map_err(|e| load_error(e.to_string()))?;
    let level = match level {
        GraphLevel::Basic => GraphOptimizationLevel::Level1,
        GraphLevel::Extended => GraphOptimizationLevel::Level2,
    };
    let saved = Session::builder(environment)
        .map_err(|e| load_error(e.to_string()))?
        .with_optimization_level(level)
        .map_err(|e| load_error(e.to_string()))?
        .with_optimized_model_path(scratch)
        .map_err(|e| load_error(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| load_error(e.to_string()))
        .and_then(|session| {
            drop(session);
            std::fs::rename(scratch, path).map_err(|e| OptimizeError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        });
    if saved.is_err() {
        let _ = std::fs::remove_file(scratch);
    }
    saved
}
