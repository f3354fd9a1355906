//! `sluice-server stream`: a model between two Kafka topics.
//!
//! A worker joins a consumer group on the input topic, reads records in
//! micro-batches (at most `max_batch_records`, or what arrived within
//! `linger`), runs each record through the model's batcher (the queue HTTP
//! requests use, so the rows of a micro-batch share ONNX Runtime runs) and
//! writes one prediction per record to the output topic. The prediction keeps
//! the record's key and names its source in headers (`sluice-source-topic`,
//! `-partition`, `-offset`), so every prediction traces back to its event.
//!
//! Delivery is exactly-once by default: the predictions, the dead letters and
//! the input offsets of a micro-batch are committed in one Kafka transaction,
//! so a consumer reading `read_committed` sees each prediction once whatever
//! crashes; a failed transaction is aborted and its records are read again.
//! At-least-once produces idempotently and commits the offsets only once every
//! prediction is acknowledged.
//!
//! A record that cannot be read, or does not fit the model, goes to the
//! dead-letter topic with the reason in its headers; a record the model
//! fails on is tried `max_attempts` times, then dead-lettered. Neither blocks
//! its partition.
//!
//! The modules: `record` (a record's bytes to the model's inputs, and its
//! answer back), `headers` (the names and values of the headers written),
//! `client` (the librdkafka settings and callbacks), `metrics`, `model`
//! (loading the model as `serve` does) and `worker` (the loop).

pub mod client;
pub mod headers;
pub mod metrics;
pub mod model;
pub mod record;
pub mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use worker::run;

/// What a worker promises about each input record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Predictions, dead letters and offsets committed in one transaction:
    /// each record's outcome is visible once to `read_committed` consumers.
    ExactlyOnce,
    /// Idempotent produce, offsets committed after the broker acknowledged
    /// every prediction: nothing is lost, a crash can repeat a micro-batch.
    AtLeastOnce,
}

/// What one stream worker does.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// The model: an ONNX file, a model folder or a URI, as `batch` takes it.
    pub model: String,
    /// The bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic records are read from.
    pub input_topic: String,
    /// The topic predictions are written to.
    pub output_topic: String,
    /// Where records that cannot be predicted go; when absent they are
    /// counted, logged and skipped.
    pub dlq_topic: Option<String>,
    /// The consumer group the workers of one stream share.
    pub group: String,
    /// Exactly-once or at-least-once.
    pub delivery: Delivery,
    /// The transactional id's prefix (exactly-once); the worker appends its
    /// host name, so each pod of a Deployment has its own.
    pub transactional_id: Option<String>,
    /// Most records in one micro-batch (one transaction).
    pub max_batch_records: usize,
    /// How long a micro-batch waits to fill once it has a record.
    pub linger: Duration,
    /// Attempts at a record the model fails on before it is dead-lettered.
    pub max_attempts: u32,
    /// Feature names for flat JSON rows of a one-input model, in the input's
    /// order (by default, the model's profile's features, when it has one).
    pub features: Vec<String>,
    /// librdkafka properties (`key=value`), applied last: TLS, SASL, tuning.
    pub properties: Vec<(String, String)>,
    /// A file of `key=value` librdkafka properties (a mounted Secret).
    pub properties_file: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (0: the model's configuration).
    pub threads: usize,
    /// Where `/metrics` is served while the worker runs.
    pub metrics_address: Option<SocketAddr>,
    /// Stop after this many records have been committed (tests, benchmarks).
    pub stop_after: Option<u64>,
}

/// Why a worker stopped with an error; `kind()` is a bounded label.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request itself is inconsistent.
    #[error("{0}")]
    Usage(String),
    /// The model cannot be found, fetched or loaded.
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    /// The Kafka client cannot be created or configured.
    #[error("kafka: {0}")]
    Client(String),
    /// The broker refused the worker for good: its producer was fenced by a
    /// newer one with the same transactional id, or hit a fatal error.
    #[error("kafka: {0}")]
    Fatal(String),
}

impl StreamError {
    /// A short, bounded label for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamError::Usage(_) => "usage",
            StreamError::Model { .. } => "model",
            StreamError::Client(_) => "client",
            StreamError::Fatal(_) => "fatal",
        }
    }
}

/// What a worker did, printed as one line of JSON when it stops.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Records read and finished (predicted, dead-lettered or skipped).
    pub consumed: u64,
    /// Predictions written.
    pub produced: u64,
    /// Records written to the dead-letter topic.
    pub dead_lettered: u64,
    /// Records skipped for want of a dead-letter topic.
    pub skipped: u64,
    /// Micro-batches committed.
    pub batches: u64,
    /// Micro-batches whose transaction (or produce) failed and was retried.
    pub aborted: u64,
    /// Seconds the worker ran.
    pub seconds: f64,
}
