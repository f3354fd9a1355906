//! The `BatchInference` custom resource (`serving.sluice.dev/v1alpha1`): a model
//! run over files by `sluice-server batch`, once or on a schedule, as an Indexed
//! Job with one shard per index (see docs/batch.md).
//!
//! The model is given like an InferenceService's (`spec.model`, the same type),
//! or by the name of an InferenceService whose model, runtime, reference
//! profile and credentials the runs reuse (`spec.inferenceServiceRef`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::{ModelSpec, RuntimeSpec};

/// Desired state of a BatchInference: which model scores which files, where
/// the predictions go, and when.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "serving.sluice.dev",
    version = "v1alpha1",
    kind = "BatchInference",
    plural = "batchinferences",
    shortname = "bi",
    category = "sluice",
    namespaced,
    status = "BatchInferenceStatus",
    derive = "PartialEq",
    doc = "An ONNX model run over files (CSV, JSONL, Parquet, NumPy) by sluice-server batch, once or on a cron schedule, as an Indexed Job with one shard per index.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Shards","type":"string","jsonPath":".status.latestRun.completions"}"#,
    printcolumn = r#"{"name":"Rows","type":"integer","jsonPath":".status.latestRun.rows"}"#,
    printcolumn = r#"{"name":"Rejected","type":"integer","jsonPath":".status.latestRun.rejected"}"#,
    printcolumn = r#"{"name":"Rows/s","type":"number","priority":1,"jsonPath":".status.latestRun.rowsPerSecond"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","priority":1,"jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last run","type":"date","jsonPath":".status.latestRun.startTime"}"#,
    printcolumn = r#"{"name":"Output","type":"string","priority":1,"jsonPath":".status.latestRun.output"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"jsonPath":".status.message"}"#
)]
#[x_kube(validation = Rule::new("has(self.model) != has(self.inferenceServiceRef)")
    .message("set exactly one of spec.model (the model's storageUri) and spec.inferenceServiceRef (an InferenceService whose model the runs use)"))]
#[x_kube(validation = Rule::new("!has(self.timeZone) || has(self.schedule)")
    .message("spec.timeZone needs spec.schedule").field_path(".timeZone"))]
#[serde(rename_all = "camelCase")]
pub struct BatchInferenceSpec {
    /// The model, as an InferenceService gives it (`storageUri`, `sha256`,
    /// `credentialsSecret`, `optimize`). Exactly one of `model` and
    /// `inferenceServiceRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// An InferenceService in the same namespace whose model (with its digest,
    /// optimization and credentials), runtime and reference profile the runs
    /// use, as its spec says when each run's Job is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_service_ref: Option<InferenceServiceRef>,
    /// How `sluice-server batch` runs: image, device, resources, threads, env.
    /// With `inferenceServiceRef`, the fields set here replace the
    /// InferenceService's (`env` adds to its), and `device` is its unless this
    /// says `cuda`. `batching` is for serving and refused here; see
    /// `batchSize`.
    #[serde(default, skip_serializing_if = "RuntimeSpec::is_default")]
    pub runtime: RuntimeSpec,
    /// The rows to score: a file or a folder (every file with the format's
    /// extension, sorted by name) as `s3://bucket/key-or-prefix`,
    /// `pvc://<claim>/<path>` (the claim is mounted read-only) or `file:///path`
    /// (the node's own files: local clusters).
    #[x_kube(validation = Rule::new("self.matches('^(s3|pvc|file)://.+')")
        .message("spec.input must start with s3://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new(
        "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')"
    ).message("spec.input pvc:// must be pvc://<claim-name>/<path>"))]
    #[schemars(length(max = 2048))]
    pub input: String,
    /// Where predictions go: each run writes under its own folder,
    /// `<output>/<run>` (the run's Job name), as `s3://bucket/prefix`,
    /// `pvc://<claim>/<path>` (mounted read-write) or `file:///path`.
    #[x_kube(validation = Rule::new("self.matches('^(s3|pvc|file)://.+')")
        .message("spec.output must start with s3://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new(
        "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+')"
    ).message("spec.output pvc:// must be pvc://<claim-name>/<path>"))]
    #[schemars(length(max = 2048))]
    pub output: String,
    /// The input's format; from the input files' extensions when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DataFormat>,
    /// The predictions' format; the input's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<DataFormat>,
    /// An input column copied to each output row as the row's own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub id_column: Option<String>,
    /// Rows per ONNX Runtime run (the server's default, 256, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch_size: Option<u32>,
    /// Input rows per output part (the server's default, 100000, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rows_per_part: Option<u64>,
    /// The largest share of a shard's rows that may be rejected (a wrong
    /// column count or type) before the shard fails; 0, the server's default,
    /// when absent. Rejected rows are written to `_rejects/` with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_reject_ratio: Option<f64>,
    /// A cron schedule (`0 2 * * *`, `@daily`): the runs are made by a CronJob
    /// that starts no run while the last one is still running. One run, at
    /// once, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// The time zone of `schedule` (an IANA name such as `Europe/Paris`); the
    /// controller manager's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Stops the runs: a running one stops its pods and goes on from its last
    /// published part when resumed, and no scheduled run starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Shards of each run: an Indexed Job with one pod per shard, all at once.
    /// Shard I takes the input files whose index modulo this is I (a single
    /// file is one shard's work).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 1000))]
    pub parallelism: i32,
    /// Times a failed shard is tried again (the Job's `backoffLimitPerIndex`);
    /// a shard goes on after its last published part. Pods evicted or
    /// preempted are replaced without counting.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: i32,
    /// Seconds a run may take from its start before it is stopped and fails
    /// (the Job's `activeDeadlineSeconds`). No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// A Secret in the same namespace whose keys become the batch container's
    /// environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL` for `s3://` input and output. Also the model
    /// fetcher's when `spec.model.credentialsSecret` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Finished runs kept in `status.history` (the newest ones).
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: i32,
}

fn default_parallelism() -> i32 {
    1
}

fn default_retries() -> i32 {
    3
}

fn default_history_limit() -> i32 {
    10
}

/// A reference to an InferenceService in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InferenceServiceRef {
    /// The InferenceService's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A file format `sluice-server batch` reads and writes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet.
    Parquet,
    /// A 2-D NumPy array, rows first.
    Npy,
}

impl DataFormat {
    /// The `--format` value.
    pub fn as_arg(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Parquet => "parquet",
            Self::Npy => "npy",
        }
    }
}

/// Observed state of a BatchInference.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchInferenceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Reconciled`, `ModelFetched` (the latest run's pods) and `Succeeded`
    /// (the latest finished run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BatchPhase>,
    /// Why it is in its phase, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The model the next run uses (its `storageUri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The newest run: in progress, or the last one to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<BatchRun>,
    /// Finished runs, oldest first, at most `spec.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<BatchRun>,
}

/// Where a BatchInference, or one of its runs, stands.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchPhase {
    /// No pod of the run is running yet (or no run has started).
    Pending,
    /// Shards are running.
    Running,
    /// Every shard finished.
    Succeeded,
    /// A shard failed after its retries, the run hit its deadline, or the spec
    /// cannot run.
    Failed,
    /// `spec.suspend` holds the runs.
    Suspended,
}

impl BatchPhase {
    /// Whether a run in this phase has ended.
    pub fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// One run: one Job, one output folder.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BatchRun {
    /// The run's Job, which names its output folder.
    pub job: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Suspended`.
    pub phase: BatchPhase,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Shards of the run.
    pub shards: i32,
    /// Shards that finished.
    pub shards_succeeded: i32,
    /// Shards that failed after their retries.
    #[serde(default)]
    pub shards_failed: i32,
    /// `<succeeded>/<shards>`, for `kubectl get`.
    pub completions: String,
    /// Rows predicted, over the shards that reported (finished or failed).
    #[serde(default)]
    pub rows: u64,
    /// Rows rejected (written to `_rejects/` with the reason).
    #[serde(default)]
    pub rejected: u64,
    /// Rows per second over the shards that reported: their rows over the
    /// longest shard's own time (the shards run at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// The run's output folder.
    pub output: String,
    /// The model it ran (its `storageUri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What happened, for humans: the figures, or what failed and why.
    #[serde(default)]
    pub message: String,
    /// The shards whose last attempt failed (at most five): which, why (the
    /// file, the row and the problem), and the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<ShardFailure>,
}

/// A shard's failed attempt.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShardFailure {
    /// The shard (the Job's completion index).
    pub shard: i32,
    /// `model`, `input`, `output`, `rejects`, `credentials`, `usage` (from
    /// the server's summary), `profile`, or `unknown` (no summary: the
    /// message is the log's last line).
    pub kind: String,
    /// The error.
    pub message: String,
    /// The pod of that attempt (`kubectl logs` it).
    pub pod: String,
}
