//! `sluice-server bundle`: one `.tar.gz` that serves models without Kubernetes
//! or a network (docs/edge.md). It unpacks into one folder:
//!
//! ```text
//! edge/start                              POSIX sh: serves the models (127.0.0.1 by default)
//! edge/bin/sluice-server                  the executable that made the bundle
//! edge/lib/libonnxruntime.so              the ONNX Runtime library it loads
//! edge/models/<model>/config.yaml         the model repository `serve` reads
//! edge/models/<model>/<n>/model.onnx
//! edge/models/<model>/<n>/optimize.json   with --optimize: the optimizer's report
//! edge/SHA256SUMS                         `sha256sum -c SHA256SUMS` checks a copy
//! ```
//!
//! (`edge` is the output's name without `.tar.gz`.)
//!
//! - [`models`]: what `--model` names, found, fetched and checked.
//! - [`archive`]: the compressed tar, complete or absent.

pub mod archive;
pub mod models;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archive::{Archive, Entry, Packed, Source};
use models::Model;

use crate::fetch::MODEL_FILE;
use crate::optimize::{Mode, OptimizeError, OptimizeRequest, Report, optimize};

/// The start script (src/bundle/start.sh).
const START: &str = include_str!("start.sh");

/// The ONNX Runtime library's path inside the bundle: `lib/` beside `bin/`
/// is one of the places the server looks (see `runtime::library_candidates`),
/// and `start` names it in `ORT_DYLIB_PATH`.
const LIBRARY: &str = "lib/libonnxruntime.so";

/// The executable's path inside the bundle.
const EXECUTABLE: &str = "bin/sluice-server";

/// The model repository's folder inside the bundle.
const REPOSITORY: &str = "models";

/// Why no bundle was written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle's file could not be written.
    #[error("cannot write the bundle {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A file to pack could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A `--model` names nothing usable.
    #[error("--model {spec}: {message}")]
    Model {
        /// The option's value.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// A model file is not an ONNX model that ONNX Runtime loads.
    #[error("{path} is not a valid ONNX model: {message}")]
    NotOnnx {
        /// The file.
        path: String,
        /// The decoder's or ONNX Runtime's complaint.
        message: String,
    },
    /// A model's `config.yaml` would not serve.
    #[error("{0}")]
    Config(String),
    /// Two models would be served under one name.
    #[error("two models are named '{0}'; serve one under another name with --model NAME=PATH")]
    DuplicateName(String),
    /// The ONNX Runtime library to pack is missing.
    #[error(
        "cannot find the ONNX Runtime library to pack: {0} (set ORT_DYLIB_PATH to libonnxruntime.so)"
    )]
    Library(String),
    /// This executable cannot be found to pack it.
    #[error("cannot find this executable to pack it: {0}")]
    Executable(std::io::Error),
    /// A model could not be optimized.
    #[error("--optimize on model '{model}' version {version}: {source}")]
    Optimize {
        /// The model.
        model: String,
        /// Its version.
        version: u64,
        /// The optimizer's error.
        source: Box<OptimizeError>,
    },
}

/// What to pack.
#[derive(Clone, Debug)]
pub struct BundleRequest {
    /// The `--model` values (see [`models`]).
    pub models: Vec<String>,
    /// The `.tar.gz` to write.
    pub output: PathBuf,
    /// Optimize every model version before packing it.
    pub optimize: Option<Mode>,
    /// With `optimize`: refuse a model whose agreement with the original is
    /// below this share.
    pub min_agreement: Option<f64>,
    /// With `optimize`: rows to calibrate INT8 static on, and to measure the
    /// agreement on (seeded random rows when absent, for the other modes).
    pub calibration: Option<PathBuf>,
    /// Give up on a remote model's download after this long.
    pub fetch_timeout: Duration,
}

/// A written bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The file.
    pub output: PathBuf,
    /// Its top folder.
    pub root: String,
    /// Every file in it, in order.
    pub files: Vec<Packed>,
    /// Its size, compressed.
    pub bytes: u64,
    /// The models it serves, with their versions.
    pub models: Vec<(String, Vec<u64>)>,
    /// The optimizer's report on each optimized version.
    pub reports: Vec<Report>,
    /// Versions `--optimize` left unchanged, and why.
    pub unchanged: Vec<String>,
}

/// Writes the bundle `request` asks for; on any failure no output file exists.
pub fn bundle(request: &BundleRequest) -> Result<Bundle, BundleError> {
    let root = root_name(&request.output);
    let mut archive = Archive::create(&request.output, &root)?;
    let executable = std::env::current_exe().map_err(BundleError::Executable)?;
    let library = crate::runtime::library().map_err(|e| BundleError::Library(e.to_string()))?;
    let library = std::fs::canonicalize(&library).map_err(|source| BundleError::Read {
        path: library.display().to_string(),
        source,
    })?;
    let work = WorkFolder::create()?;
    let fetched = work.0.join("fetched");
    let models = models::resolve(&request.models, &fetched, request.fetch_timeout)?;

    let mut contents = Contents {
        entries: vec![
            Entry::text("start", START, 0o755),
            Entry::file(EXECUTABLE, executable, 0o755),
            Entry::file(LIBRARY, library, 0o755),
        ],
        reports: Vec::new(),
        unchanged: Vec::new(),
    };
    for model in &models {
        contents.add(model, request, &work.0)?;
    }
    for entry in contents.entries {
        archive.append(entry)?;
    }
    let (files, bytes) = archive.finish()?;
    Ok(Bundle {
        output: request.output.clone(),
        root,
        files,
        bytes,
        models: models
            .iter()
            .map(|m| (m.name.clone(), m.versions.keys().copied().collect()))
            .collect(),
        reports: contents.reports,
        unchanged: contents.unchanged,
    })
}

/// What goes into the bundle, and what optimizing it found.
struct Contents {
    entries: Vec<Entry>,
    reports: Vec<Report>,
    unchanged: Vec<String>,
}

impl Contents {
    /// Adds `model`'s folder: its files, and each version, optimized when
    /// the request asks, with the optimizer's report beside it.
    fn add(
        &mut self,
        model: &Model,
        request: &BundleRequest,
        work: &Path,
    ) -> Result<(), BundleError> {
        let folder = format!("{REPOSITORY}/{}", model.name);
        for (relative, source) in &model.files {
            self.entries.push(Entry::file(
                format!("{folder}/{relative}"),
                source.clone(),
                0o644,
            ));
        }
        for (&version, source) in &model.versions {
            let path = format!("{folder}/{version}/{MODEL_FILE}");
            let origin = model
                .uri
                .clone()
                .unwrap_or_else(|| source.display().to_string());
            let mut entry = Entry::file(path.clone(), source.clone(), 0o644);
            entry.origin = model.uri.clone();
            if let Some(mode) = request.optimize {
                match optimized(model, version, mode, request, work)? {
                    Optimized::Written(written, mut report) => {
                        entry.source = Source::File(written);
                        entry.origin = Some(format!("{mode} of {origin}"));
                        report.model = origin;
                        report.output = path;
                        let json =
                            serde_json::to_string_pretty(&report).expect("a report serializes");
                        self.entries.push(Entry::text(
                            format!("{folder}/{version}/optimize.json"),
                            json + "\n",
                            0o644,
                        ));
                        self.reports.push(*report);
                    }
                    Optimized::Unchanged(why) => {
                        self.unchanged
                            .push(format!("{} version {version}: {why}", model.name));
                    }
                }
            }
            self.entries.push(entry);
        }
        Ok(())
    }
}

/// What `--optimize` made of one version.
enum Optimized {
    /// The optimized file and its report.
    Written(PathBuf, Box<Report>),
    /// Nothing to optimize: the original is packed, for this reason.
    Unchanged(String),
}

/// Optimizes one version into the work folder.
fn optimized(
    model: &Model,
    version: u64,
    mode: Mode,
    request: &BundleRequest,
    work: &Path,
) -> Result<Optimized, BundleError> {
    let failed = |source: OptimizeError| BundleError::Optimize {
        model: model.name.clone(),
        version,
        source: Box::new(source),
    };
    let folder = work
        .join("optimized")
        .join(&model.name)
        .join(version.to_string());
    std::fs::create_dir_all(&folder).map_err(|e| {
        failed(OptimizeError::Io {
            path: folder.display().to_string(),
            message: e.to_string(),
        })
    })?;
    let output = folder.join(MODEL_FILE);
    let result = optimize(&OptimizeRequest {
        model: model.versions[&version].clone(),
        output: output.clone(),
        mode,
        full_range: false,
        calibration: request.calibration.clone(),
        calibration_method: crate::optimize::calibrate::Method::MinMax,
        keep_fp32: Vec::new(),
        graph_optimization: None,
        eval: None,
        eval_label_column: None,
        min_agreement: request.min_agreement,
        batch: 32,
        threads: 0,
    });
    match result {
        Ok(report) => Ok(Optimized::Written(output, Box::new(report))),
        Err(OptimizeError::Unchanged(why)) => Ok(Optimized::Unchanged(why)),
        Err(error) => Err(failed(error)),
    }
}

/// The bundle's top folder: the output's file name without `.tar.gz` or `.tgz`.
fn root_name(output: &Path) -> String {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".tar.gz", ".tgz"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(&name);
    if stem.is_empty() || stem.starts_with('.') {
        "bundle".to_string()
    } else {
        stem.to_string()
    }
}

/// A private temporary folder for fetched and optimized models, removed when
/// dropped.
struct WorkFolder(PathBuf);

impl WorkFolder {
    fn create() -> Result<WorkFolder, BundleError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("sluice-bundle-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| BundleError::Output {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(WorkFolder(path))
    }
}

impl Drop for WorkFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl fmt::Display for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.unchanged {
            writeln!(f, "not optimized: {line}")?;
        }
        for (name, versions) in &self.models {
            let versions: Vec<String> = versions.iter().map(u64::to_string).collect();
            writeln!(f, "model '{name}': version {}", versions.join(", "))?;
        }
        for file in &self.files {
            write!(
                f,
                "  {:<48} {:>10}",
                format!("{}/{}", self.root, file.path),
                size(file.bytes)
            )?;
            match &file.origin {
                Some(origin) => writeln!(f, "  {origin}")?,
                None => writeln!(f)?,
            }
        }
        let unpacked: u64 = self.files.iter().map(|p| p.bytes).sum();
        writeln!(
            f,
            "wrote {}: {} ({} unpacked), for {} Linux",
            self.output.display(),
            size(self.bytes),
            size(unpacked),
            std::env::consts::ARCH
        )?;
        writeln!(
            f,
            "serve it: tar -xzf {} && {}/start",
            self.output
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            self.root
        )
    }
}

/// Bytes for a reader: `912 B`, `4.2 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_folder_is_the_output_name_without_its_extension() {
        for (output, root) in [
            ("/tmp/edge.tar.gz", "edge"),
            ("fraud-v3.tgz", "fraud-v3"),
            ("plain", "plain"),
            (".tar.gz", "bundle"),
        ] {
            assert_eq!(root_name(Path::new(output)), root, "{output}");
        }
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(912), "912 B");
        assert_eq!(size(4_404_019), "4.2 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
