//! Command-line interface: `sluice-server serve ...`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use sluice_server::batch::{BatchRequest, Format};
use sluice_server::bundle::{BundleRequest, bundle};
use sluice_server::connection::rotation::RotationPolicy;
use sluice_server::fetch::{FetchRequest, MODEL_FILE, fetch};
use sluice_server::loadtest;
use sluice_server::monitoring::profile::{ProfileRequest, TrainingData, build};
use sluice_server::optimize::calibrate::Method;
use sluice_server::optimize::offline::GraphLevel;
use sluice_server::optimize::{Mode, OptimizeError, OptimizeRequest, Report, optimize};
use sluice_server::request_log::{DEFAULT_TOPIC, RequestLogOptions, parse_sample_ratio};
use sluice_server::security::flags::SecurityArgs;
use sluice_server::serve::{ServeOptions, serve};
use sluice_server::stream::client::parse_property;
use sluice_server::stream::{Delivery, StreamRequest};

/// Sluice's model server.
#[derive(Debug, Parser)]
#[command(name = "sluice-server", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "SLUICE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every model in a model repository over REST and gRPC.
    Serve(Box<ServeArgs>),
    /// Download a model to DEST/model.onnx, verifying its sha256 (for init containers).
    Fetch(FetchArgs),
    /// Write a reference profile of training data and the model's answers to it.
    Profile(ProfileArgs),
    /// Find the highest request rate a server sustains within a p99 latency objective.
    Loadtest(LoadtestArgs),
    /// Write a smaller, faster copy of a model (INT8 or FP16), measured against the original.
    Optimize(OptimizeArgs),
    /// Run a model over files (CSV, JSON Lines, Parquet, .npy) in a folder or
    /// an S3 prefix, at full batch, writing predictions beside a manifest
    /// that lets a killed run resume (docs/batch.md).
    Batch(Box<BatchArgs>),
    /// Pack this server, its ONNX Runtime library and models into one .tar.gz
    /// that serves from its `start` script, offline (docs/edge.md).
    Bundle(BundleArgs),
    /// Predict every record of a Kafka topic onto another, exactly once by
    /// default, dead-lettering records that cannot be predicted (docs/streaming.md).
    Stream(Box<StreamArgs>),
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// The model: an ONNX file, a folder holding model.onnx, a model folder
    /// (<n>/model.onnx, optional config.yaml; the highest version runs), or a
    /// file://, http://, https:// or s3:// URI of an ONNX file.
    #[arg(long, value_name = "PATH|URI")]
    model: String,
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: String,
    /// The topic records are read from: inference requests (JSON, or binary
    /// with an inference-header-content-length header) or flat JSON rows.
    #[arg(long)]
    input_topic: String,
    /// The topic predictions are written to, keyed as their input.
    #[arg(long)]
    output_topic: String,
    /// Where records that cannot be predicted go, with the reason in headers
    /// (without it they are logged, counted as skipped and passed over).
    #[arg(long)]
    dlq_topic: Option<String>,
    /// The consumer group the workers of one stream share.
    #[arg(long, default_value = "sluice-stream")]
    group: String,
    /// exactly-once: a transaction per micro-batch; at-least-once: offsets
    /// committed after the predictions are acknowledged.
    #[arg(long, value_enum, default_value_t = Delivery::ExactlyOnce)]
    delivery: Delivery,
    /// The producer's transactional id (exactly-once; default
    /// sluice-GROUP-HOSTNAME). Each worker needs its own.
    #[arg(long, env = "SLUICE_TRANSACTIONAL_ID")]
    transactional_id: Option<String>,
    /// Most records in one micro-batch (one transaction).
    #[arg(long, default_value_t = 512)]
    max_batch_records: usize,
    /// How long a micro-batch waits to fill once it has its first record, in
    /// milliseconds.
    #[arg(long, default_value_t = 20)]
    linger_ms: u64,
    /// Attempts at a record the model fails on before it is dead-lettered.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// Feature names of flat rows for a one-input model, in the input's order
    /// (default: the profile's, when config.yaml names one).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// A librdkafka property, KEY=VALUE, repeatable (TLS, SASL, tuning).
    #[arg(long = "property", value_name = "KEY=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// A file of KEY=VALUE librdkafka properties (a mounted Secret).
    #[arg(long, env = "SLUICE_KAFKA_PROPERTIES_FILE")]
    properties_file: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (0: the model's config.yaml).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Serve Prometheus metrics at http://ADDRESS/metrics while running.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Stop once this many records are committed (tests, benchmarks).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct BatchArgs {
    /// The model: an ONNX file, a folder holding model.onnx, a model folder
    /// (<n>/model.onnx, optional config.yaml; the highest version runs), or a
    /// file://, http://, https:// or s3:// URI of an ONNX file.
    #[arg(long, value_name = "PATH|URI")]
    model: String,
    /// The input: a file, or every file of the format below a folder or an S3
    /// prefix (names starting with _ or . are skipped), by path, file:// or
    /// s3://bucket/prefix.
    #[arg(long, value_name = "PATH|URI")]
    input: String,
    /// Where the parts, _rejects/ and _manifest/ go: a folder or s3://bucket/prefix.
    #[arg(long, value_name = "PATH|URI")]
    output: String,
    /// The input's format (by default, from the files' extensions).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The output's format (by default, the input's).
    #[arg(long, value_enum)]
    output_format: Option<Format>,
    /// Rows per ONNX Runtime run.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// This shard's number: it takes the input files whose index (in name
    /// order) modulo --shards is this.
    #[arg(long, default_value_t = 0, env = "JOB_COMPLETION_INDEX")]
    shard: usize,
    /// How many shards share the input.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// An input column copied to the output as each row's own id.
    #[arg(long)]
    id_column: Option<String>,
    /// Input columns that are not features (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    ignore_column: Vec<String>,
    /// Input rows per output part: the unit that is published whole and that a
    /// restart resumes after.
    #[arg(long, default_value_t = 100_000)]
    rows_per_part: u64,
    /// Fail the shard when more than this share of its rows is rejected
    /// (every rejected row is still written to _rejects/ with its reason).
    #[arg(long, default_value_t = 0.0)]
    max_reject_ratio: f64,
    /// ONNX Runtime intra-op threads (0: the available cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Write the outcome here as one line of JSON when the shard ends (for a
    /// Kubernetes termination message).
    #[arg(long)]
    summary_file: Option<PathBuf>,
    /// Rewrite progress here as JSON every second.
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDRESS/metrics while running.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_address: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
struct BundleArgs {
    /// A model to pack, repeatable: an ONNX file, a folder holding model.onnx, a
    /// model folder (<n>/model.onnx, optional config.yaml), a model repository
    /// (<model>/<n>/model.onnx), or a file://, http://, https:// or s3:// URI of
    /// an ONNX file. NAME=... serves one model as NAME (by default: its file's
    /// or folder's name).
    #[arg(long = "model", value_name = "[NAME=]PATH|URI", required = true)]
    models: Vec<String>,
    /// The bundle to write (.tar.gz); it unpacks into a folder of the same
    /// name without the extension.
    #[arg(long)]
    output: PathBuf,
    /// Optimize every model version before packing it; its report goes beside
    /// it as optimize.json. A version with nothing to optimize is packed as is.
    #[arg(long, value_enum)]
    optimize: Option<Mode>,
    /// With --optimize: refuse to bundle a model whose agreement with the
    /// original is below this share (see `optimize --help`).
    #[arg(long, requires = "optimize")]
    min_agreement: Option<f64>,
    /// With --optimize: rows (CSV with a header row, or 2-D .npy) that INT8
    /// static calibrates on and the agreement is measured on.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Give up on a remote model's download after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

#[derive(Debug, clap::Args)]
struct OptimizeArgs {
    /// The FP32 ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the optimized model (written only if it loads, runs and
    /// meets --min-agreement).
    #[arg(long)]
    output: PathBuf,
    /// The optimization.
    #[arg(long, value_enum)]
    mode: Mode,
    /// INT8 weights over their full range (-127..127) instead of 7 bits
    /// (-64..64), which avoid saturation on x86 CPUs without VNNI.
    #[arg(long)]
    full_range: bool,
    /// INT8 static: rows the activation ranges are calibrated on (CSV with a
    /// header row, or a 2-D NumPy .npy array); also the evaluation rows when
    /// --eval is absent.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// INT8 static: each activation's range is its min and max, or the
    /// --percentile of its values and its mirror (clipping outliers).
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Minmax)]
    calibration_method: CalibrationMethod,
    /// INT8 static with --calibration-method percentile: the percentile kept.
    #[arg(long, default_value_t = 99.999)]
    percentile: f64,
    /// FP16: operators to keep in FP32 besides the built-in list (repeat or
    /// comma-separate, e.g. --keep-fp32 Softmax,LayerNormalization).
    #[arg(long, value_delimiter = ',')]
    keep_fp32: Vec<String>,
    /// Also run ONNX Runtime's graph optimizations at this level and save them
    /// into the output (basic: portable ONNX; extended: ONNX Runtime's own fused
    /// operators, for its CPU provider).
    #[arg(long, value_enum)]
    graph_optimization: Option<GraphLevel>,
    /// Evaluation rows for the agreement: CSV with a header row, or a 2-D NumPy
    /// .npy array; 1,000 seeded random normal rows when absent.
    #[arg(long)]
    eval: Option<PathBuf>,
    /// A CSV column of --eval that is not a feature (a label).
    #[arg(long)]
    label_column: Option<String>,
    /// Refuse to write a model whose agreement with the original is below this
    /// share (top-1 for classes, 1 - relative error for values) on any output.
    #[arg(long)]
    min_agreement: Option<f64>,
    /// The batch the latency is measured at, besides 1 row.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// ONNX Runtime intra-op threads for the measurements (0: its default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the outcome in brief to this file as one line of JSON: the figures,
    /// or `{"error", "kind"}` when no model was written (for a Kubernetes
    /// termination message, which the operator reads into status).
    #[arg(long)]
    summary: Option<PathBuf>,
}

/// How INT8 static reads activation ranges from the calibration rows.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CalibrationMethod {
    /// The smallest and largest value seen.
    Minmax,
    /// `--percentile` of the values and its mirror.
    Percentile,
}

/// `--summary`'s line: the figures, or the error, cut to fit a termination
/// message.
fn optimize_summary(outcome: &Result<Report, OptimizeError>) -> serde_json::Result<String> {
    /// Kubernetes keeps 4,096 bytes of a termination message.
    const MOST: usize = 3_000;
    match outcome {
        Ok(report) => serde_json::to_string(&report.summary()),
        Err(error) => {
            let mut message = error.to_string();
            if message.len() > MOST {
                let mut end = MOST;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            serde_json::to_string(&serde_json::json!({"error": message, "kind": error.kind()}))
        }
    }
}

#[derive(Debug, clap::Args)]
struct LoadtestArgs {
    /// The server, e.g. http://127.0.0.1:8080, or https://gateway/ml/fraud for one
    /// behind TLS and a path prefix (its routes are then /ml/fraud/v2/...).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: reqwest::Url,
    /// A PEM file of CA certificates to trust for an https --url, besides the public roots.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// The model to call.
    #[arg(long)]
    model: String,
    /// A JSON inference request body to send; synthesized from the model's metadata when absent.
    #[arg(long)]
    request: Option<PathBuf>,
    /// Rows per synthesized request.
    #[arg(long, default_value_t = 1)]
    rows: usize,
    /// The objective: a rate passes when its p99 latency is at most this many milliseconds.
    #[arg(long, default_value_t = 100.0)]
    p99_objective_ms: f64,
    /// First rate tried, requests per second.
    #[arg(long, default_value_t = 50.0)]
    start_rate: f64,
    /// Highest rate tried, requests per second.
    #[arg(long, default_value_t = 100_000.0)]
    max_rate: f64,
    /// Seconds each rate is offered.
    #[arg(long, default_value_t = 5.0)]
    step_seconds: f64,
    /// Connections, that is the most requests in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Bisection steps after the first failing rate.
    #[arg(long, default_value_t = 4)]
    refinements: usize,
    /// Offer exactly this rate (requests/s) for --step-seconds and report that one
    /// step instead of searching: a steady open-loop load, e.g. to drive autoscaling.
    #[arg(long)]
    rate: Option<f64>,
    /// A header every request carries, as `NAME: VALUE`, e.g. `X-API-Key: <key>` for
    /// a server that requires credentials. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

async fn loadtest(args: LoadtestArgs) -> anyhow::Result<()> {
    let ca_pem = match &args.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    let endpoint = loadtest::Endpoint::resolve(args.url.clone(), ca_pem.as_deref()).await?;
    let headers = args
        .headers
        .iter()
        .map(|text| loadtest::parse_header(text))
        .collect::<Result<reqwest::header::HeaderMap, _>>()?;
    let body = match &args.request {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        None => {
            let metadata: serde_json::Value = endpoint
                .client()?
                .get(endpoint.url_of(&format!("v2/models/{}", args.model)))
                .headers(headers.clone())
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            loadtest::synthesize_request(&metadata, args.rows)?
        }
    };
    let target = loadtest::Target {
        path: endpoint.path_of(&format!("v2/models/{}/infer", args.model)),
        endpoint: std::sync::Arc::new(endpoint),
        body: body.into(),
        headers,
    };
    let options = loadtest::SearchOptions {
        start_rate: args.start_rate,
        max_rate: args.max_rate,
        p99_objective: seconds(args.p99_objective_ms / 1e3, "p99-objective-ms")?,
        step_duration: seconds(args.step_seconds, "step-seconds")?,
        connections: args.connections,
        refinements: args.refinements,
    };
    let print_step = |step: &loadtest::StepResult| {
        eprintln!(
            "{:>10.1} req/s offered  {:>10.1} achieved  p50 {:>8.2} ms  p99 {:>8.2} ms  errors {:>5} (429: {})  {}",
            step.rate,
            step.achieved,
            step.p50_ms,
            step.p99_ms,
            step.errors,
            step.refused,
            if step.passed { "pass" } else { "FAIL" }
        );
    };
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate > 0.0,
            "--rate must be a positive number of requests per second"
        );
        let step = loadtest::run_step(&target, rate, &options).await?;
        print_step(&step);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&step)?);
        }
        return Ok(());
    }
    let result = loadtest::search(&target, &options, print_step).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "highest rate within p99 <= {} ms: {:.1} requests/s (p99 {:.2} ms)",
            result.p99_objective_ms, result.max_rate, result.p99_ms
        );
        println!(
            "for the InferenceService: spec.autoscaling.throughputPerReplica: {:.0}",
            result.max_rate
        );
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
struct ProfileArgs {
    /// The ONNX model (one input of shape [-1, features]).
    #[arg(long)]
    model: PathBuf,
    /// Training data: CSV with a header row, or a 2-D NumPy .npy array.
    #[arg(long)]
    data: PathBuf,
    /// Where to write the profile (JSON).
    #[arg(long)]
    output: PathBuf,
    /// CSV column holding the true label or value (excluded from the features).
    #[arg(long)]
    label_column: Option<String>,
    /// Features whose values are category codes.
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Most values kept per numeric column.
    #[arg(long, default_value_t = 10_000)]
    sample_size: usize,
}

#[derive(Debug, clap::Args)]
struct FetchArgs {
    /// Where the model is: file://, http://, https:// or s3://bucket/key.
    #[arg(long)]
    uri: String,
    /// Folder to write into (created if missing).
    #[arg(long)]
    dest: PathBuf,
    /// Name of the file written in the folder.
    #[arg(long, default_value = MODEL_FILE)]
    file_name: String,
    /// Expected SHA-256 digest (hex, optionally prefixed with `sha256:`); a mismatch writes nothing.
    #[arg(long)]
    sha256: Option<String>,
    /// Give up on a download after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Model repository: DIR/<model>/<version>/model.onnx, optional DIR/<model>/config.yaml.
    #[arg(long, env = "SLUICE_MODEL_REPOSITORY")]
    model_repository: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0", env = "SLUICE_HOST")]
    host: IpAddr,
    /// REST port.
    #[arg(long, default_value_t = 8080, env = "SLUICE_HTTP_PORT")]
    http_port: u16,
    /// gRPC port.
    #[arg(long, default_value_t = 8081, env = "SLUICE_GRPC_PORT")]
    grpc_port: u16,
    /// Largest request body (REST) or message (gRPC) in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024, env = "SLUICE_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// Seconds between SIGTERM (readiness turns false) and closing the listeners.
    #[arg(long, default_value_t = 0.0, env = "SLUICE_SHUTDOWN_DELAY_SECONDS")]
    shutdown_delay_seconds: f64,
    /// Seconds in-flight requests may take to finish after the listeners close.
    #[arg(long, default_value_t = 20.0, env = "SLUICE_DRAIN_TIMEOUT_SECONDS")]
    drain_timeout_seconds: f64,
    /// Seconds after which a client connection is asked to reconnect (HTTP/1.1:
    /// `Connection: close` on the first answer after it; HTTP/2 and gRPC: a
    /// graceful GOAWAY), drawn per connection within ±10%, so that clients
    /// spread again over the pods behind a Service; 0 never.
    #[arg(
        long,
        default_value_t = 300.0,
        env = "SLUICE_MAX_CONNECTION_AGE_SECONDS"
    )]
    max_connection_age_seconds: f64,
    /// Seconds a rotated HTTP/2 or gRPC connection's open requests may take to
    /// finish after its GOAWAY before it is closed.
    #[arg(
        long,
        default_value_t = 20.0,
        env = "SLUICE_MAX_CONNECTION_AGE_GRACE_SECONDS"
    )]
    max_connection_age_grace_seconds: f64,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    request_log: RequestLogArgs,
}

/// Request logging: sampled inference requests and their responses mirrored
/// to a Kafka topic (docs/request-logging.md).
#[derive(Debug, clap::Args)]
struct RequestLogArgs {
    /// Log a sample of the inference requests (REST and gRPC), each with its
    /// response, to Kafka at these bootstrap servers, HOST:PORT[,HOST:PORT...]
    /// (off without it). Serving never waits for the log.
    #[arg(
        long,
        value_name = "HOST:PORT[,...]",
        env = "SLUICE_REQUEST_LOG_BROKERS"
    )]
    request_log_brokers: Option<String>,
    /// The topic request log records are written to, keyed by model name.
    #[arg(
        long,
        value_name = "TOPIC",
        default_value = DEFAULT_TOPIC,
        env = "SLUICE_REQUEST_LOG_TOPIC",
        requires = "request_log_brokers"
    )]
    request_log_topic: String,
    /// The share of requests logged, from 0 to 1.
    #[arg(
        long,
        value_name = "RATIO",
        default_value_t = 1.0,
        value_parser = parse_sample_ratio,
        env = "SLUICE_REQUEST_LOG_SAMPLE_RATIO",
        requires = "request_log_brokers"
    )]
    request_log_sample_ratio: f64,
    /// Most records held while the broker is slow or down; more are dropped
    /// (and counted) rather than delay a request.
    #[arg(
        long,
        value_name = "RECORDS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)),
        env = "SLUICE_REQUEST_LOG_MAX_QUEUE",
        requires = "request_log_brokers"
    )]
    request_log_max_queue: u32,
    /// A librdkafka property for the request log's producer, KEY=VALUE,
    /// repeatable (TLS, SASL, tuning).
    #[arg(
        long = "request-log-property",
        value_name = "KEY=VALUE",
        value_parser = parse_property,
        requires = "request_log_brokers"
    )]
    request_log_properties: Vec<(String, String)>,
    /// A file of KEY=VALUE librdkafka properties for the request log (a
    /// mounted Secret).
    #[arg(
        long,
        value_name = "FILE",
        env = "SLUICE_REQUEST_LOG_PROPERTIES_FILE",
        requires = "request_log_brokers"
    )]
    request_log_properties_file: Option<PathBuf>,
}

impl RequestLogArgs {
    /// The request log's options, when it is on.
    fn options(self) -> Option<RequestLogOptions> {
        Some(RequestLogOptions {
            brokers: self.request_log_brokers?,
            topic: self.request_log_topic,
            sample_ratio: self.request_log_sample_ratio,
            max_queue: self.request_log_max_queue,
            properties: self.request_log_properties,
            properties_file: self.request_log_properties_file,
        })
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("--{flag} must be a non-negative number of seconds"))
}

/// Parses the command line and runs the chosen command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let options = ServeOptions {
                model_repository: args.model_repository,
                host: args.host,
                http_port: args.http_port,
                grpc_port: args.grpc_port,
                max_body_bytes: args.max_body_bytes,
                shutdown_delay: seconds(args.shutdown_delay_seconds, "shutdown-delay-seconds")?,
                drain_timeout: seconds(args.drain_timeout_seconds, "drain-timeout-seconds")?,
                rotation: RotationPolicy {
                    max_age: Some(seconds(
                        args.max_connection_age_seconds,
                        "max-connection-age-seconds",
                    )?)
                    .filter(|age| !age.is_zero()),
                    grace: seconds(
                        args.max_connection_age_grace_seconds,
                        "max-connection-age-grace-seconds",
                    )?,
                },
                security: args.security.options().map_err(anyhow::Error::msg)?,
                request_log: args.request_log.options(),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(options))?;
            Ok(())
        }
        Command::Loadtest(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(loadtest(args))
        }
        Command::Profile(args) => {
            let data = TrainingData::read(&args.data, args.label_column.as_deref())?;
            let request = ProfileRequest {
                data: &data,
                categorical: &args.categorical,
                sample_size: args.sample_size,
            };
            let profile = build(&args.model, &request)?;
            profile.save(&args.output)?;
            tracing::info!(
                output = %args.output.display(),
                rows = profile.rows,
                features = profile.features.len(),
                outputs = profile.outputs.len(),
                "profile written"
            );
            Ok(())
        }
        Command::Optimize(args) => {
            let outcome = optimize(&OptimizeRequest {
                model: args.model,
                output: args.output,
                mode: args.mode,
                full_range: args.full_range,
                calibration: args.calibration,
                calibration_method: match args.calibration_method {
                    CalibrationMethod::Minmax => Method::MinMax,
                    CalibrationMethod::Percentile => Method::Percentile(args.percentile),
                },
                keep_fp32: args.keep_fp32,
                graph_optimization: args.graph_optimization,
                eval: args.eval,
                eval_label_column: args.label_column,
                min_agreement: args.min_agreement,
                batch: args.batch,
                threads: args.threads,
            });
            if let Some(path) = &args.summary {
                std::fs::write(path, optimize_summary(&outcome)?)?;
            }
            let report = outcome?;
            print!("{report}");
            if let Some(path) = &args.report {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
            Ok(())
        }
        Command::Batch(args) => {
            let request = BatchRequest {
                model: args.model,
                input: args.input,
                output: args.output,
                format: args.format,
                output_format: args.output_format,
                batch_size: args.batch_size,
                shard: args.shard,
                shards: args.shards,
                id_column: args.id_column,
                ignore_columns: args.ignore_column,
                rows_per_part: args.rows_per_part,
                max_reject_ratio: args.max_reject_ratio,
                threads: args.threads,
                status_file: args.status_file,
                metrics_address: args.metrics_address,
                progress_bar: true,
            };
            let (summary, outcome) = sluice_server::batch::run(&request);
            let line = summary.to_line();
            if let Some(path) = &args.summary_file {
                std::fs::write(path, &line)
                    .with_context(|| format!("--summary-file {}", path.display()))?;
            }
            outcome?;
            println!("{line}");
            Ok(())
        }
        Command::Stream(args) => {
            let request = StreamRequest {
                model: args.model,
                brokers: args.brokers,
                input_topic: args.input_topic,
                output_topic: args.output_topic,
                dlq_topic: args.dlq_topic,
                group: args.group,
                delivery: args.delivery,
                transactional_id: args.transactional_id,
                max_batch_records: args.max_batch_records,
                linger: Duration::from_millis(args.linger_ms),
                max_attempts: args.max_attempts,
                features: args.features,
                properties: args.properties,
                properties_file: args.properties_file,
                threads: args.threads,
                metrics_address: args.metrics_address,
                stop_after: args.stop_after,
            };
            let (summary, outcome) = sluice_server::stream::run(&request);
            println!("{}", serde_json::to_string(&summary)?);
            Ok(outcome?)
        }
        Command::Bundle(args) => {
            let bundle = bundle(&BundleRequest {
                models: args.models,
                output: args.output,
                optimize: args.optimize,
                min_agreement: args.min_agreement,
                calibration: args.calibration,
                fetch_timeout: Duration::from_secs(args.timeout_seconds),
            })?;
            for report in &bundle.reports {
                print!("{report}");
            }
            print!("{bundle}");
            Ok(())
        }
        Command::Fetch(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let fetched = runtime.block_on(fetch(FetchRequest {
                uri: &args.uri,
                dest: &args.dest,
                file_name: &args.file_name,
                sha256: args.sha256.as_deref(),
                timeout: Duration::from_secs(args.timeout_seconds),
            }))?;
            tracing::info!(
                uri = %args.uri,
                path = %fetched.path.display(),
                bytes = fetched.bytes,
                sha256 = %fetched.sha256,
                "model fetched"
            );
            Ok(())
        }
    }
}
