//! Prometheus metrics under the names DESIGN.md fixes. Every series carries
//! `model` and `version`, plus `isvc` and `revision` from `SLUICE_ISVC` and
//! `SLUICE_REVISION` when the operator sets them.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::monitoring::Task;

/// Latency buckets from 100 microseconds to 30 seconds.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Batch-size buckets: powers of two up to 1024 rows.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

const MODEL_LABELS: [&str; 2] = ["model", "version"];

/// All of the server's metric families, registered in one registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    queue_duration: HistogramVec,
    compute_duration: HistogramVec,
    batch_size: HistogramVec,
    queue_depth: IntGaugeVec,
    model_ready: IntGaugeVec,
    model_load_seconds: GaugeVec,
    fallback_requests: IntCounterVec,
    circuit_state: IntGaugeVec,
    circuit_opens: IntCounterVec,
    connections_rotated: IntCounterVec,
    predictions: IntCounterVec,
    monitoring: MonitoringFamilies,
}

/// The drift and quality metric families.
#[derive(Clone)]
struct MonitoringFamilies {
    feature_drift_score: GaugeVec,
    feature_drift_pvalue: GaugeVec,
    prediction_drift_score: GaugeVec,
    missing_value_ratio: GaugeVec,
    accuracy: GaugeVec,
    mae: GaugeVec,
    baseline_accuracy: GaugeVec,
    baseline_mae: GaugeVec,
    dropped_rows: IntCounterVec,
    feedback_rows: CounterVec,
    feedback_correct_rows: CounterVec,
    feedback_absolute_error: CounterVec,
}

impl MonitoringFamilies {
    fn register(registry: &Registry) -> MonitoringFamilies {
        let gauge = |name: &str, help: &str, extra: &[&str]| {
            let labels: Vec<&str> = MODEL_LABELS.iter().chain(extra).copied().collect();
            let vec = GaugeVec::new(Opts::new(name, help), &labels).expect("valid gauge");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let dropped_rows = IntCounterVec::new(
            Opts::new(
                "sluice_monitoring_dropped_rows_total",
                "Rows the drift monitor skipped because it had fallen behind.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid counter");
        registry
            .register(Box::new(dropped_rows.clone()))
            .expect("unique metric");
        let counter = |name: &str, help: &str| {
            let vec = CounterVec::new(Opts::new(name, help), &MODEL_LABELS).expect("valid counter");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        MonitoringFamilies {
            feedback_rows: counter(
                "sluice_feedback_rows_total",
                "Rows whose ground truth came back as feedback and was scored.",
            ),
            feedback_correct_rows: counter(
                "sluice_feedback_correct_rows_total",
                "Scored feedback rows whose prediction was right (classification).",
            ),
            feedback_absolute_error: counter(
                "sluice_feedback_absolute_error_total",
                "Sum of the absolute errors of scored feedback rows (regression).",
            ),
            feature_drift_score: gauge(
                "sluice_feature_drift_score",
                "Drift of an input feature from the reference profile: the test's statistic.",
                &["feature", "test"],
            ),
            feature_drift_pvalue: gauge(
                "sluice_feature_drift_pvalue",
                "p-value of the drift test of an input feature (ks, chi2).",
                &["feature", "test"],
            ),
            prediction_drift_score: gauge(
                "sluice_prediction_drift_score",
                "Shift of an output's distribution from the reference profile.",
                &["output", "test"],
            ),
            missing_value_ratio: gauge(
                "sluice_missing_value_ratio",
                "Share of missing (NaN) values of a feature in the current window.",
                &["feature"],
            ),
            accuracy: gauge(
                "sluice_model_accuracy",
                "Share of correct predictions over the feedback window.",
                &[],
            ),
            mae: gauge(
                "sluice_model_mean_absolute_error",
                "Mean absolute error over the feedback window.",
                &[],
            ),
            baseline_accuracy: gauge(
                "sluice_model_baseline_accuracy",
                "Accuracy on the training data, from the reference profile.",
                &[],
            ),
            baseline_mae: gauge(
                "sluice_model_baseline_mean_absolute_error",
                "Mean absolute error on the training data, from the reference profile.",
                &[],
            ),
            dropped_rows,
        }
    }
}

impl Metrics {
    /// Creates the metric families, labelled from the process environment.
    pub fn new() -> Metrics {
        let mut constant = HashMap::new();
        for (label, variable) in [("isvc", "SLUICE_ISVC"), ("revision", "SLUICE_REVISION")] {
            if let Ok(value) = std::env::var(variable)
                && !value.is_empty()
            {
                constant.insert(label.to_string(), value);
            }
        }
        let registry = Registry::new_custom(None, Some(constant)).expect("valid constant labels");
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let vec = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &MODEL_LABELS,
            )
            .expect("valid histogram");
            registry
                .register(Box::new(vec.clone()))
                .expect("unique metric");
            vec
        };
        let request_duration = histogram(
            "sluice_inference_request_duration_seconds",
            "Whole inference request inside the server, from receipt to response.",
            &LATENCY_BUCKETS,
        );
        let queue_duration = histogram(
            "sluice_inference_queue_duration_seconds",
            "Time a request waited in its model's queue before its batch ran.",
            &LATENCY_BUCKETS,
        );
        let compute_duration = histogram(
            "sluice_inference_compute_duration_seconds",
            "Time ONNX Runtime spent running one batch.",
            &LATENCY_BUCKETS,
        );
        let batch_size = histogram(
            "sluice_inference_batch_size",
            "Rows in each batch run by ONNX Runtime.",
            &BATCH_BUCKETS,
        );
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_inference_requests_total",
                "Inference requests by outcome (HTTP status code).",
            ),
            &["model", "version", "code"],
        )
        .expect("valid counter");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "sluice_inference_queue_depth",
                "Requests waiting in the model's queue.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid gauge");
        let model_ready = IntGaugeVec::new(
            Opts::new(
                "sluice_model_ready",
                "1 when the model version is loaded, warmed up and serving.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid gauge");
        let model_load_seconds = GaugeVec::new(
            Opts::new(
                "sluice_model_load_seconds",
                "Cold start: seconds from the start of loading to ready, warm-up included.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid gauge");
        let fallback_requests = IntCounterVec::new(
            Opts::new(
                "sluice_fallback_requests_total",
                "Requests the fallback answered because the model failed, timed out or had its circuit open.",
            ),
            &["model", "version", "reason"],
        )
        .expect("valid counter");
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "sluice_circuit_breaker_state",
                "The model's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid gauge");
        let circuit_opens = IntCounterVec::new(
            Opts::new(
                "sluice_circuit_breaker_opens_total",
                "Times the model's circuit breaker opened.",
            ),
            &MODEL_LABELS,
        )
        .expect("valid counter");
        let connections_rotated = IntCounterVec::new(
            Opts::new(
                "sluice_connections_rotated_total",
                "Client connections asked to reconnect because they reached their maximum age, by protocol (http1, http2, grpc).",
            ),
            &["protocol"],
        )
        .expect("valid counter");
        let predictions = IntCounterVec::new(
            Opts::new(
                "sluice_predictions_total",
                "Rows the model answered, by output and bin: the predicted class, label or value range (docs/model-server.md).",
            ),
            &["model", "version", "output", "bin"],
        )
        .expect("valid counter");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(predictions.clone()),
            Box::new(connections_rotated.clone()),
            Box::new(fallback_requests.clone()),
            Box::new(circuit_state.clone()),
            Box::new(circuit_opens.clone()),
            Box::new(queue_depth.clone()),
            Box::new(model_ready.clone()),
            Box::new(model_load_seconds.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        registry
            .register(Box::new(CpuCollector::new()))
            .expect("unique metric");
        let monitoring = MonitoringFamilies::register(&registry);
        Metrics {
            monitoring,
            registry,
            requests,
            request_duration,
            queue_duration,
            compute_duration,
            batch_size,
            queue_depth,
            model_ready,
            model_load_seconds,
            fallback_requests,
            circuit_state,
            circuit_opens,
            connections_rotated,
            predictions,
        }
    }

    /// The counter of connections rotated while speaking `protocol` (`http1`,
    /// `http2` or `grpc`).
    pub fn connections_rotated(&self, protocol: &str) -> IntCounter {
        self.connections_rotated.with_label_values(&[protocol])
    }

    /// The series of one model version, resolved once so that the hot path does
    /// no label lookups.
    pub fn for_version(&self, model: &str, version: u64) -> VersionMetrics {
        self.series(model, version.to_string())
    }

    /// The series of a version's fallback model: its queue and runs, under
    /// `version="<version>-fallback"` so that they never mix with the primary's.
    pub fn for_fallback(&self, model: &str, version: u64) -> VersionMetrics {
        self.series(model, format!("{version}-fallback"))
    }

    fn series(&self, model: &str, version: String) -> VersionMetrics {
        let labels = [model, version.as_str()];
        VersionMetrics {
            model: model.to_string(),
            version: version.clone(),
            requests: self.requests.clone(),
            request_duration: self.request_duration.with_label_values(&labels),
            queue_duration: self.queue_duration.with_label_values(&labels),
            compute_duration: self.compute_duration.with_label_values(&labels),
            batch_size: self.batch_size.with_label_values(&labels),
            queue_depth: self.queue_depth.with_label_values(&labels),
            ready: self.model_ready.with_label_values(&labels),
            load_seconds: self.model_load_seconds.with_label_values(&labels),
            monitoring_dropped_rows: self.monitoring.dropped_rows.with_label_values(&labels),
            circuit_state: self.circuit_state.with_label_values(&labels),
            circuit_opens: self.circuit_opens.with_label_values(&labels),
            fallback_requests: self.fallback_requests.clone(),
            predictions: self.predictions.clone(),
            monitoring: self.monitoring.clone(),
        }
    }

    /// The registry every family is in, for a command's own families.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding never fails");
        String::from_utf8(buffer).expect("text exposition is UTF-8")
    }
}

/// `process_cpu_seconds_total`: user and system CPU time of the whole process (all
/// threads) from getrusage(2), to the microsecond, labelled like every other series.
/// The operator's CPU trigger reads its rate, so no cAdvisor is needed. (The
/// prometheus crate's process collector counts whole seconds, too coarse for a
/// rate over tens of seconds.)
struct CpuCollector {
    desc: prometheus::core::Desc,
}

const CPU_SECONDS: &str = "process_cpu_seconds_total";
const CPU_SECONDS_HELP: &str = "Total user and system CPU time spent in seconds.";

impl CpuCollector {
    fn new() -> Self {
        let desc = prometheus::core::Desc::new(
            CPU_SECONDS.into(),
            CPU_SECONDS_HELP.into(),
            Vec::new(),
            HashMap::new(),
        )
        .expect("valid descriptor");
        Self { desc }
    }
}

impl prometheus::core::Collector for CpuCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let counter =
            prometheus::Counter::new(CPU_SECONDS, CPU_SECONDS_HELP).expect("valid counter");
        counter.inc_by(process_cpu_seconds());
        prometheus::core::Collector::collect(&counter)
    }
}

/// CPU time (user plus system) of this process so far, in seconds.
#[allow(
    unsafe_code,
    reason = "getrusage(2) has no safe wrapper in libc; it only writes the struct it is given"
)]
fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the rusage it is pointed at, which lives on this stack.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return 0.0;
    }
    // SAFETY: zeroed() initialized every byte and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The metric series of one model version.
#[derive(Clone)]
pub struct VersionMetrics {
    model: String,
    version: String,
    requests: IntCounterVec,
    request_duration: Histogram,
    /// Time each request waited in the queue.
    pub queue_duration: Histogram,
    /// Time each batch spent in ONNX Runtime.
    pub compute_duration: Histogram,
    /// Rows per batch.
    pub batch_size: Histogram,
    /// Requests currently queued.
    pub queue_depth: IntGauge,
    /// 1 while the version serves.
    pub ready: IntGauge,
    /// Cold-start seconds.
    pub load_seconds: Gauge,
    /// Rows the monitor skipped.
    pub monitoring_dropped_rows: IntCounter,
    /// The circuit breaker's state (0 closed, 1 half-open, 2 open).
    pub circuit_state: IntGauge,
    /// Times the circuit breaker opened.
    pub circuit_opens: IntCounter,
    fallback_requests: IntCounterVec,
    predictions: IntCounterVec,
    monitoring: MonitoringFamilies,
}

impl VersionMetrics {
    /// The counter of rows whose `output` fell in `bin`
    /// (the binning is `monitoring::predictions`').
    pub fn prediction_counter(&self, output: &str, bin: &str) -> IntCounter {
        self.predictions.with_label_values(&[
            self.model.as_str(),
            self.version.as_str(),
            output,
            bin,
        ])
    }

    /// Records one finished request: its outcome and its whole duration.
    pub fn observe_request(&self, status: u16, duration: Duration) {
        let code = status.to_string();
        self.requests
            .with_label_values(&[self.model.as_str(), self.version.as_str(), code.as_str()])
            .inc();
        self.request_duration.observe(duration.as_secs_f64());
    }

    /// The counter of requests the fallback answered for `reason`.
    pub fn fallbacks(&self, reason: &str) -> IntCounter {
        self.fallback_requests.with_label_values(&[
            self.model.as_str(),
            self.version.as_str(),
            reason,
        ])
    }

    /// Publishes the model's quality over the feedback window (accuracy or mean
    /// absolute error, by task). Series exist only once there is something to say.
    pub fn set_quality(&self, task: Task, value: f64) {
        let family = match task {
            Task::Classification => &self.monitoring.accuracy,
            Task::Regression => &self.monitoring.mae,
        };
        family
            .with_label_values(&[self.model.as_str(), self.version.as_str()])
            .set(value);
    }

    /// Counts scored feedback: `rows` rows whose scores (1 or 0 for a right or
    /// wrong class, the absolute error of a value) sum to `score`. With
    /// Prometheus's `increase()`, a rollout compares two revisions' quality over
    /// the same window from these.
    pub fn count_feedback(&self, task: Task, rows: usize, score: f64) {
        let labels = [self.model.as_str(), self.version.as_str()];
        let monitoring = &self.monitoring;
        monitoring
            .feedback_rows
            .with_label_values(&labels)
            .inc_by(rows as f64);
        let scored = match task {
            Task::Classification => &monitoring.feedback_correct_rows,
            Task::Regression => &monitoring.feedback_absolute_error,
        };
        scored.with_label_values(&labels).inc_by(score);
    }

    /// Publishes the model's quality on the training data, from its profile.
    pub fn set_baseline_quality(&self, task: Task, value: f64) {
        let family = match task {
            Task::Classification => &self.monitoring.baseline_accuracy,
            Task::Regression => &self.monitoring.baseline_mae,
        };
        family
            .with_label_values(&[self.model.as_str(), self.version.as_str()])
            .set(value);
    }

    /// The missing-value ratio gauge of a feature.
    pub fn missing_ratio(&self, feature: &str) -> Gauge {
        self.monitoring.missing_value_ratio.with_label_values(&[
            self.model.as_str(),
            self.version.as_str(),
            feature,
        ])
    }

    /// Publishes a feature's drift test result: its statistic and, where the
    /// test has one, its p-value.
    pub fn feature_drift(&self, feature: &str, test: &str, statistic: f64, pvalue: Option<f64>) {
        let labels = [self.model.as_str(), self.version.as_str(), feature, test];
        self.monitoring
            .feature_drift_score
            .with_label_values(&labels)
            .set(statistic);
        if let Some(pvalue) = pvalue {
            self.monitoring
                .feature_drift_pvalue
                .with_label_values(&labels)
                .set(pvalue);
        }
    }

    /// Publishes an output's distribution shift.
    pub fn prediction_drift(&self, output: &str, test: &str, score: f64) {
        self.monitoring
            .prediction_drift_score
            .with_label_values(&[self.model.as_str(), self.version.as_str(), output, test])
            .set(score);
    }
}

/// Serves `registry` at `http://address/metrics` on a thread of its own, for
/// the commands that run without the HTTP server (`batch`, `stream`), with
/// the probes of the serving API: `/v2/health/live` answers 200 while the
/// process runs, `/v2/health/ready` 200 once [`Readiness::set_ready`] was
/// called (503 before). Fails only when the address cannot be bound.
pub fn serve(address: std::net::SocketAddr, registry: Registry) -> std::io::Result<Readiness> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let readiness = Readiness::default();
    let ready = readiness.clone();
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
                let app = axum::Router::new()
                    .route(
                        "/metrics",
                        axum::routing::get(move || {
                            let registry = registry.clone();
                            async move {
                                let mut text = Vec::new();
                                TextEncoder::new()
                                    .encode(&registry.gather(), &mut text)
                                    .expect("metrics encode");
                                String::from_utf8(text).expect("metrics are text")
                            }
                        }),
                    )
                    .route("/v2/health/live", axum::routing::get(|| async { "live" }))
                    .route(
                        "/v2/health/ready",
                        axum::routing::get(move || {
                            let ready = ready.is_ready();
                            async move {
                                if ready {
                                    (axum::http::StatusCode::OK, "ready")
                                } else {
                                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                                }
                            }
                        }),
                    );
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::warn!(%error, "the metrics endpoint stopped");
                }
            });
        })?;
    Ok(readiness)
}

/// Whether a command served by [`serve`] is ready for work (`/v2/health/ready`).
#[derive(Clone, Debug, Default)]
pub struct Readiness(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Readiness {
    /// From now on `/v2/health/ready` answers 200.
    pub fn set_ready(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Readiness::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_names_with_model_labels() {
        let metrics = Metrics::new();
        let version = metrics.for_version("mlp", 2);
        version.observe_request(200, Duration::from_millis(3));
        version.ready.set(1);
        let text = metrics.render();
        for name in [
            "sluice_inference_requests_total{code=\"200\",model=\"mlp\",version=\"2\"} 1",
            "sluice_inference_request_duration_seconds_bucket",
            "sluice_model_ready{model=\"mlp\",version=\"2\"} 1",
            "sluice_inference_queue_depth",
            "sluice_model_load_seconds",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        // CPU time to the microsecond: after some work, more than nothing.
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        let cpu: f64 = metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .expect("process_cpu_seconds_total")
            .parse()
            .unwrap();
        assert!(cpu > 0.0 && cpu < 3600.0, "{cpu}");
    }
}
