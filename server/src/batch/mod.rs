//! `sluice-server batch`: a model over files, at full batch, with no HTTP.
//!
//! One run is one shard of a job. It lists the input (a file, a folder or an
//! S3 prefix), takes the files whose index modulo `shards` is its own, and
//! streams each through ONNX Runtime in batches, with bounded memory whatever
//! the file's size. Predictions go out in parts of `rows_per_part` input
//! rows, each written under a temporary name and published whole (a rename,
//! or one S3 PUT); the shard's manifest records every published part, so a
//! shard that is killed and run again goes on after its last part, and no
//! row is missing or twice in the output. Rows that cannot be read as the
//! model's inputs go to a rejects file beside the part, with the reason.
//!
//! The modules: `store` (local folders and S3 prefixes), `layout` (which
//! columns feed which model input), `input` and `output` (the file formats),
//! `manifest`, `progress` (status file, metrics, progress bar) and `shard`
//! (the loop).

pub mod input;
pub mod layout;
pub mod manifest;
pub mod output;
pub mod progress;
pub mod shard;
pub mod store;

use std::path::PathBuf;

use serde::Serialize;

use crate::runtime::RuntimeError;

pub use shard::run;

/// A file format `batch` reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// A NumPy array (2-D, C order), rows first.
    Npy,
}

impl Format {
    /// The file extension of this format, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Npy => "npy",
        }
    }

    /// The format a file name's extension names (`.ndjson` reads as JSONL).
    pub fn from_name(name: &str) -> Option<Format> {
        let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match extension.as_str() {
            "csv" => Format::Csv,
            "jsonl" | "ndjson" => Format::Jsonl,
            "parquet" | "pq" => Format::Parquet,
            "npy" => Format::Npy,
            _ => return None,
        })
    }
}

/// What one shard of a batch job does.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The model: an ONNX file, a model folder, or a URI of an ONNX file.
    pub model: String,
    /// The input: a file, a folder or an S3 prefix (a path or a URI).
    pub input: String,
    /// Where the parts, rejects and manifest go: a folder or an S3 prefix.
    pub output: String,
    /// The input's format; from its files' extensions when absent.
    pub format: Option<Format>,
    /// The output's format; the input's when absent.
    pub output_format: Option<Format>,
    /// Rows per ONNX Runtime run.
    pub batch_size: usize,
    /// This shard's number, below `shards`.
    pub shard: usize,
    /// How many shards share the input.
    pub shards: usize,
    /// An input column copied to the output as each row's own id.
    pub id_column: Option<String>,
    /// Input columns that are not features (a label, say).
    pub ignore_columns: Vec<String>,
    /// Input rows per output part.
    pub rows_per_part: u64,
    /// The largest share of rejected rows the shard accepts.
    pub max_reject_ratio: f64,
    /// ONNX Runtime intra-op threads (0: the available cores).
    pub threads: usize,
    /// Where progress is rewritten every second, as JSON.
    pub status_file: Option<PathBuf>,
    /// Where `/metrics` is served while the shard runs.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress_bar: bool,
}

/// Why a shard failed; `kind()` is the summary's and the metric's label.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The request itself is inconsistent.
    #[error("{0}")]
    Usage(String),
    /// The model cannot be found, fetched or loaded.
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    /// ONNX Runtime failed on a batch.
    #[error("{source_name}: rows {first}..{end}: the model failed: {source}")]
    Run {
        source_name: String,
        first: u64,
        end: u64,
        source: RuntimeError,
    },
    /// The input cannot be listed or read, or does not fit the model.
    #[error("{0}")]
    Input(String),
    /// The output cannot be written.
    #[error("{0}")]
    Output(String),
    /// The storage refused the credentials or the signature.
    #[error("{0}")]
    Credentials(String),
    /// More rows were rejected than the job accepts.
    #[error(
        "{rejected} of {read} rows rejected ({ratio:.4}), more than --max-reject-ratio {max}; \
         the reasons are in {rejects}"
    )]
    Rejects {
        rejected: u64,
        read: u64,
        ratio: f64,
        max: f64,
        rejects: String,
    },
}

impl BatchError {
    /// A short, bounded label for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            BatchError::Usage(_) => "usage",
            BatchError::Model { .. } | BatchError::Run { .. } => "model",
            BatchError::Input(_) => "input",
            BatchError::Output(_) => "output",
            BatchError::Credentials(_) => "credentials",
            BatchError::Rejects { .. } => "rejects",
        }
    }
}

/// The outcome of a shard, as its summary file holds it (for a termination
/// message: well under 4 KiB).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// This shard's number.
    pub shard: usize,
    /// How many shards share the input.
    pub shards: usize,
    /// Input files this shard owns.
    pub files: usize,
    /// Rows predicted, over every published part of this shard.
    pub rows: u64,
    /// Rows rejected, over every published part of this shard.
    pub rejected: u64,
    /// Parts published, by this run and earlier ones.
    pub parts: u64,
    /// Parts an earlier run had published, which this one kept.
    pub resumed_parts: u64,
    /// Seconds this run took.
    pub seconds: f64,
    /// Rows this run predicted, per second.
    pub rows_per_second: f64,
    /// The output location.
    pub output: String,
    /// Why the shard failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure (see [`BatchError::kind`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

impl Summary {
    /// The summary as one line of JSON, with the error cut to fit a
    /// termination message.
    pub fn to_line(&self) -> String {
        /// Kubernetes keeps 4,096 bytes of a termination message.
        const MOST_ERROR: usize = 2_500;
        let mut summary = self.clone();
        if let Some(error) = &mut summary.error
            && error.len() > MOST_ERROR
        {
            let mut end = MOST_ERROR;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
            error.push_str("...");
        }
        serde_json::to_string(&summary).expect("a summary serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_extensions() {
        assert_eq!(Format::from_name("a/b.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_name("x.ndjson"), Some(Format::Jsonl));
        assert_eq!(Format::from_name("x.pq"), Some(Format::Parquet));
        assert_eq!(Format::from_name("x.npy"), Some(Format::Npy));
        assert_eq!(Format::from_name("x.txt"), None);
        assert_eq!(Format::from_name("noextension"), None);
    }

    #[test]
    fn a_long_error_is_cut_to_fit_a_termination_message() {
        let summary = Summary {
            error: Some("é".repeat(3_000)),
            kind: Some("input"),
            ..Summary::default()
        };
        let line = summary.to_line();
        assert!(line.len() < 4_096, "{} bytes", line.len());
        assert!(line.contains("...\""));
    }
}
