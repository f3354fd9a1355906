//! `sluice-server optimize`: a smaller, faster copy of an ONNX model, written in
//! Rust over the ONNX protobuf (docs/optimize.md).
//!
//! - [`onnx`]: the model format and tensor helpers.
//! - [`int8`]: INT8 dynamic quantization of `MatMul` and `Gemm` weights.
//! - [`qdq`] and [`calibrate`]: INT8 static quantization in QDQ form, with
//!   activation ranges calibrated on the user's rows.
//! - [`fp16`]: weights and compute in FP16, inputs and outputs kept FP32.
//! - [`types`]: which values are FP32, as ONNX Runtime infers them.
//! - [`offline`]: ONNX Runtime's graph optimizations, saved into the file.
//! - [`outcome`]: what happened to each node, for the report.
//! - [`report`]: size, latency and agreement, measured on ONNX Runtime.
//!
//! The optimized model is written to a temporary file beside the output, loaded
//! and run by ONNX Runtime, compared with the original, and only then renamed to
//! the output: a model that fails to load or falls below `--min-agreement` leaves
//! no output file.

pub mod calibrate;
pub mod fp16;
pub mod int8;
pub mod offline;
pub mod onnx;
pub mod outcome;
pub mod qdq;
pub mod report;
pub mod types;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::monitoring::profile::TrainingData;
use outcome::{NodeOutcome, Outcome};
use report::{Measured, Rows};

/// Why an optimization produced no model.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The input is not an ONNX model.
    #[error("{path} is not a valid ONNX model: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// The decoder's complaint.
        message: String,
    },
    /// ONNX Runtime could not load a model.
    #[error("ONNX Runtime cannot load {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// ONNX Runtime's message.
        message: String,
    },
    /// ONNX Runtime failed to run a model.
    #[error("running the model failed: {0}")]
    Run(String),
    /// The calibration rows are missing or do not fit the model.
    #[error("cannot calibrate: {0}")]
    Calibration(String),
    /// The evaluation data or the model's inputs do not allow a report.
    #[error("cannot measure the model: {0}")]
    Report(String),
    /// The mode changed nothing.
    #[error("nothing to optimize: {0}")]
    Unchanged(String),
    /// The optimized model answers too differently.
    #[error(
        "the optimized model's agreement {agreement:.4} on output '{output}' is below --min-agreement {minimum}; nothing was written\n{report}"
    )]
    BelowAgreement {
        /// The output that fell short.
        output: String,
        /// Its agreement share.
        agreement: f64,
        /// The bound.
        minimum: f64,
        /// The whole report, for the figures.
        report: Box<Report>,
    },
}

impl OptimizeError {
    /// The error's kind in one CamelCase word, for machines (the `--summary` file).
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizeError::Io { .. } => "Io",
            OptimizeError::Malformed { .. } => "Malformed",
            OptimizeError::Load { .. } => "Load",
            OptimizeError::Run(_) => "Run",
            OptimizeError::Calibration(_) => "Calibration",
            OptimizeError::Report(_) => "Report",
            OptimizeError::Unchanged(_) => "Unchanged",
            OptimizeError::BelowAgreement { .. } => "BelowAgreement",
        }
    }
}

/// What to optimize, how, and what to measure it on.
#[derive(Clone, Debug)]
pub struct OptimizeRequest {
    /// The FP32 model.
    pub model: PathBuf,
    /// Where the optimized model goes.
    pub output: PathBuf,
    /// The optimization.
    pub mode: Mode,
    /// Use INT8 weights' full range (-127..127) rather than 7 bits.
    pub full_range: bool,
    /// INT8 static: the rows activation ranges are calibrated on (CSV with a
    /// header, or 2-D `.npy`; `eval_label_column` names a label to skip).
    pub calibration: Option<PathBuf>,
    /// INT8 static: how ranges are read from the calibration rows.
    pub calibration_method: calibrate::Method,
    /// Operators that FP16 keeps in FP32, besides [`fp16::FP32_OPS`].
    pub keep_fp32: Vec<String>,
    /// Save ONNX Runtime's graph optimizations at this level into the output.
    pub graph_optimization: Option<offline::GraphLevel>,
    /// Evaluation rows (CSV with a header, or 2-D `.npy`); when absent, the
    /// calibration rows for INT8 static, else seeded random rows.
    pub eval: Option<PathBuf>,
    /// A CSV column of `eval` that is not a feature (a label).
    pub eval_label_column: Option<String>,
    /// Refuse to write a model whose agreement on any output is below this.
    pub min_agreement: Option<f64>,
    /// The batch the latency is measured at (besides 1 row).
    pub batch: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
}

/// The optimizations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// INT8 weights of MatMul and Gemm, activations quantized at run time.
    Int8Dynamic,
    /// INT8 weights and activations of MatMul and Gemm, activation ranges
    /// calibrated on the user's rows, written as QuantizeLinear/DequantizeLinear.
    Int8Static,
    /// FP16 weights and compute; inputs and outputs stay FP32.
    Fp16,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Int8Dynamic => "int8-dynamic",
            Mode::Int8Static => "int8-static",
            Mode::Fp16 => "fp16",
        })
    }
}

/// What one run did and measured (written as JSON with `--report`, and as a
/// table).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The optimization.
    pub mode: Mode,
    /// The original model.
    pub model: String,
    /// The optimized model.
    pub output: String,
    /// ONNX Runtime's graph optimizations saved into it, if any.
    pub graph_optimization: Option<offline::GraphLevel>,
    /// Each candidate node: changed, or kept as it was and why.
    pub nodes: Vec<NodeOutcome>,
    /// Sizes, latencies and agreement.
    pub measured: Measured,
    /// Optimized size over original size.
    pub size_ratio: f64,
    /// Original latency over optimized latency, at 1 row.
    pub speedup_batch_1: f64,
    /// The same at the measured batch.
    pub speedup_batch: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.measured;
        let changed = self
            .nodes
            .iter()
            .filter(|n| n.outcome != Outcome::Kept)
            .count();
        writeln!(f, "{} {} -> {}", self.mode, self.model, self.output)?;
        if let Some(level) = self.graph_optimization {
            writeln!(f, "ONNX Runtime graph optimizations saved: {level:?}")?;
        }
        writeln!(f, "nodes: {changed} of {} changed", self.nodes.len())?;
        for node in self.nodes.iter().filter(|n| n.outcome == Outcome::Kept) {
            writeln!(f, "  kept {} '{}': {}", node.op, node.node, node.detail)?;
        }
        writeln!(
            f,
            "{:<24}{:>14}{:>14}{:>10}",
            "", "before", "after", "ratio"
        )?;
        writeln!(
            f,
            "{:<24}{:>14}{:>14}{:>10.3}",
            "size (bytes)", m.before.size_bytes, m.after.size_bytes, self.size_ratio
        )?;
        writeln!(
            f,
            "{:<24}{:>14.4}{:>14.4}{:>9.2}x",
            "latency 1 row (ms)",
            m.before.latency_ms_batch_1,
            m.after.latency_ms_batch_1,
            self.speedup_batch_1
        )?;
        writeln!(
            f,
            "{:<24}{:>14.4}{:>14.4}{:>9.2}x",
            format!("latency {} rows (ms)", m.batch),
            m.before.latency_ms_batch,
            m.after.latency_ms_batch,
            self.speedup_batch
        )?;
        for a in &m.agreement {
            writeln!(
                f,
                "agreement '{}': {} {:.4} over {} rows ({})",
                a.output, a.measure, a.value, m.rows, m.rows_from
            )?;
        }
        Ok(())
    }
}

/// The outcome in brief, as one line of JSON well under the 4 KiB of a Kubernetes
/// termination message: what `--summary` writes, and what the operator copies
/// into the InferenceService's `status.optimization`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The optimization.
    pub mode: Mode,
    /// The original file's size.
    pub size_bytes_before: u64,
    /// The optimized file's size.
    pub size_bytes_after: u64,
    /// After over before.
    pub size_ratio: f64,
    /// Median latency at 1 row of the original, in ms.
    pub latency_ms_batch1_before: f64,
    /// The same for the optimized model.
    pub latency_ms_batch1_after: f64,
    /// Before over after, at 1 row.
    pub speedup_batch1: f64,
    /// The batch the other latencies are measured at.
    pub batch: usize,
    /// Before over after, at `batch` rows.
    pub speedup_batch: f64,
    /// Agreement with the original, per output (the first eight).
    pub agreement: Vec<report::Agreement>,
    /// Evaluation rows the agreement was measured on.
    pub rows: usize,
    /// Nodes changed, and nodes kept as they were.
    pub nodes_changed: usize,
    /// Nodes kept as they were (the report names them and why).
    pub nodes_kept: usize,
}

impl Report {
    /// The report in brief.
    pub fn summary(&self) -> Summary {
        let m = &self.measured;
        let kept = self
            .nodes
            .iter()
            .filter(|n| n.outcome == Outcome::Kept)
            .count();
        Summary {
            mode: self.mode,
            size_bytes_before: m.before.size_bytes,
            size_bytes_after: m.after.size_bytes,
            size_ratio: self.size_ratio,
            latency_ms_batch1_before: m.before.latency_ms_batch_1,
            latency_ms_batch1_after: m.after.latency_ms_batch_1,
            speedup_batch1: self.speedup_batch_1,
            batch: m.batch,
            speedup_batch: self.speedup_batch,
            agreement: m.agreement.iter().take(8).cloned().collect(),
            rows: m.rows,
            nodes_changed: self.nodes.len() - kept,
            nodes_kept: kept,
        }
    }
}

/// Optimizes `request.model` into `request.output` and measures both.
pub fn optimize(request: &OptimizeRequest) -> Result<Report, OptimizeError> {
    let mut model = onnx::read(&request.model)?;
    let nodes = match request.mode {
        Mode::Int8Dynamic => int8::quantize_dynamic(&mut model, request.full_range),
        Mode::Int8Static => {
            let path = request.calibration.as_ref().ok_or_else(|| {
                OptimizeError::Calibration(
                    "int8-static needs --calibration FILE: rows to observe the activations on"
                        .into(),
                )
            })?;
            let rows = read_rows(path, request.eval_label_column.as_deref())
                .map_err(OptimizeError::Calibration)?;
            let mut scratch = temporary_path(&request.output).into_os_string();
            scratch.push("-calibrate");
            let ranges = calibrate::ranges(
                &model,
                &qdq::activations(&model),
                &rows,
                request.calibration_method,
                Path::new(&scratch),
            )?;
            qdq::quantize_static(&mut model, &ranges, request.full_range)
        }
        Mode::Fp16 => {
            let floats = types::float_tensors(&model)?;
            fp16::convert(&mut model, &floats, &request.keep_fp32)
        }
    };
    if !nodes.iter().any(|n| n.outcome != Outcome::Kept) {
        let reasons: Vec<String> = nodes
            .iter()
            .map(|n| format!("{} '{}': {}", n.op, n.node, n.detail))
            .collect();
        return Err(OptimizeError::Unchanged(
            match (reasons.is_empty(), request.mode) {
                (true, Mode::Int8Dynamic | Mode::Int8Static) => {
                    "the model has no MatMul or Gemm node".into()
                }
                (true, Mode::Fp16) => "the model computes nothing in FP32".into(),
                (false, _) => format!("every node was kept ({})", reasons.join("; ")),
            },
        ));
    }
    let temporary = temporary_path(&request.output);
    let written = (|| {
        std::fs::write(&temporary, onnx::encode(&model)).map_err(|e| OptimizeError::Io {
            path: temporary.display().to_string(),
            message: e.to_string(),
        })?;
        if let Some(level) = request.graph_optimization {
            let mut scratch = temporary.clone().into_os_string();
            scratch.push("-ort");
            offline::save_optimized(&temporary, Path::new(&scratch), level)?;
        }
        let rows = evaluation_rows(request)?;
        let measured = report::measure(
            &request.model,
            &temporary,
            rows,
            request.batch.max(1),
            request.threads,
        )?;
        let report = Report {
            mode: request.mode,
            model: request.model.display().to_string(),
            output: request.output.display().to_string(),
            graph_optimization: request.graph_optimization,
            nodes,
            size_ratio: measured.after.size_bytes as f64 / measured.before.size_bytes.max(1) as f64,
            speedup_batch_1: measured.before.latency_ms_batch_1 / measured.after.latency_ms_batch_1,
            speedup_batch: measured.before.latency_ms_batch / measured.after.latency_ms_batch,
            measured,
        };
        if let Some(minimum) = request.min_agreement
            && let Some(worst) = report
                .measured
                .agreement
                .iter()
                .min_by(|a, b| a.share().total_cmp(&b.share()))
            && worst.share() < minimum
        {
            return Err(OptimizeError::BelowAgreement {
                output: worst.output.clone(),
                agreement: worst.share(),
                minimum,
                report: Box::new(report),
            });
        }
        std::fs::rename(&temporary, &request.output).map_err(|e| OptimizeError::Io {
            path: request.output.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(report)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// `OUT.tmp-<pid>` beside `OUT`, so that the rename stays on one file system.
fn temporary_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    output.with_file_name(name)
}

/// The user's evaluation rows (`--eval`, else `--calibration`), if any.
fn evaluation_rows(request: &OptimizeRequest) -> Result<Option<Rows>, OptimizeError> {
    let Some(path) = request.eval.as_ref().or(request.calibration.as_ref()) else {
        return Ok(None);
    };
    read_rows(path, request.eval_label_column.as_deref())
        .map(Some)
        .map_err(OptimizeError::Report)
}

/// Rows of a CSV (with a header; `label` names a column to skip) or 2-D `.npy`.
fn read_rows(path: &Path, label: Option<&str>) -> Result<Rows, String> {
    let data = TrainingData::read(path, label).map_err(|e| e.to_string())?;
    let width = data.columns.len();
    let rows = data.rows();
    if rows == 0 {
        return Err(format!("{} has no rows", path.display()));
    }
    let mut values = Vec::with_capacity(rows * width);
    for r in 0..rows {
        values.extend(data.columns.iter().map(|c| c[r] as f32));
    }
    Ok(Rows {
        values,
        width,
        from: path.display().to_string(),
    })
}
