//! Drift and model-quality monitoring inside the server.
//!
//! The executor hands each finished batch to the model version's [`Monitor`]
//! through a bounded channel (never blocking: when the monitor falls behind,
//! observations are dropped and counted). A thread of its own keeps sliding
//! windows of the last rows per column, recomputes the drift tests against the
//! reference [`profile::Profile`] every interval, joins ground-truth feedback to
//! logged predictions, and publishes everything as Prometheus gauges. Request
//! threads never take a lock for it.

pub mod predictions;
pub mod profile;
pub mod stats;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::config::monitoring::{FeedbackConfig, MonitoringConfig, Task};
use crate::error::InferError;
use crate::metrics::VersionMetrics;
use crate::runtime::TensorSpec;
use crate::tensor::Tensor;
use profile::{Profile, Summary, category_code, output_column_names, predictions, to_f64, width};

/// Batches the monitor may fall behind by before observations are dropped.
const CHANNEL_CAPACITY: usize = 1024;

/// Expected share given to categories the profile never saw.
const UNSEEN_CATEGORY_SHARE: f64 = 1e-4;

/// One finished batch, as the monitor sees it.
struct Observation {
    /// The feature input, row-major, as f64 (NaN = missing).
    features: Vec<f64>,
    /// Each model output as f64, row-major (`None` when not numeric).
    outputs: Vec<Option<Vec<f64>>>,
    /// Each request in the batch: its id (when it gave one) and its rows.
    requests: Vec<(Option<String>, usize)>,
}

enum Message {
    Batch(Observation),
    Feedback {
        id: String,
        values: Vec<f64>,
        reply: oneshot::Sender<Result<usize, InferError>>,
    },
}

/// The monitor of one model version.
pub struct Monitor {
    sender: SyncSender<Message>,
    feature_input: usize,
    keeps_ids: bool,
    metrics: VersionMetrics,
}

impl Monitor {
    /// Loads the profile, checks it against the model and starts the monitor's thread.
    pub fn start(
        config: &MonitoringConfig,
        model_dir: &Path,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        metrics: &VersionMetrics,
    ) -> Result<Monitor, String> {
        let profile_path = model_dir.join(&config.profile);
        let profile = Profile::load(&profile_path).map_err(|e| e.to_string())?;
        let misfit = |mismatch: String| {
            format!(
                "the profile {} does not fit the model: {mismatch}",
                config.profile
            )
        };
        let feature_input = inputs
            .iter()
            .position(|spec| spec.name == profile.input)
            .ok_or_else(|| {
                misfit(format!(
                    "it describes input '{}', but the model's inputs are {:?}",
                    profile.input,
                    inputs.iter().map(|spec| &spec.name).collect::<Vec<_>>()
                ))
            })?;
        let columns = width(&inputs[feature_input]);
        if columns != profile.features.len() {
            return Err(misfit(format!(
                "it has {} features, but input '{}' has {columns} columns (shape {:?})",
                profile.features.len(),
                profile.input,
                inputs[feature_input].shape
            )));
        }
        let state = State::new(config, &profile, outputs, metrics.clone())?;
        let (sender, receiver) = std::sync::mpsc::sync_channel(CHANNEL_CAPACITY);
        let interval = Duration::from_millis(config.interval_ms.max(1));
        std::thread::Builder::new()
            .name("monitor".to_string())
            .spawn(move || state.run(receiver, interval))
            .map_err(|e| format!("cannot start the monitor thread: {e}"))?;
        Ok(Monitor {
            sender,
            feature_input,
            keeps_ids: config.feedback.is_some(),
            metrics: metrics.clone(),
        })
    }

    /// Whether request ids are kept for feedback.
    pub fn keeps_ids(&self) -> bool {
        self.keeps_ids
    }

    /// Records a finished batch; never blocks.
    pub fn observe(
        &self,
        inputs: &[&Tensor],
        outputs: &[Tensor],
        requests: Vec<(Option<String>, usize)>,
    ) {
        let Some(features) = inputs.get(self.feature_input).and_then(|t| to_f64(&t.data)) else {
            return;
        };
        let rows: usize = requests.iter().map(|(_, rows)| rows).sum();
        let observation = Observation {
            features,
            outputs: outputs.iter().map(|t| to_f64(&t.data)).collect(),
            requests,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sender.try_send(Message::Batch(observation))
        {
            self.metrics.monitoring_dropped_rows.inc_by(rows as u64);
        }
    }

    /// Joins ground truth to the prediction logged for request `id`; returns
    /// the rows scored.
    pub async fn feedback(&self, id: String, values: Vec<f64>) -> Result<usize, InferError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .try_send(Message::Feedback { id, values, reply })
            .map_err(|_| {
                InferError::NotReady("the monitor is overloaded; retry the feedback".to_string())
            })?;
        answer.await.map_err(|_| InferError::ShuttingDown)?
    }
}

/// A column's reference distribution, prepared for the tests.
enum Reference {
    Numeric {
        sample: Vec<f64>,
        edges: Vec<f64>,
        expected: Vec<f64>,
    },
    Categorical {
        codes: HashMap<String, usize>,
        proportions: Vec<f64>,
    },
}

impl Reference {
    fn from_summary(summary: &Summary) -> Reference {
        match summary {
            Summary::Numeric { sample, bin_edges } => Reference::Numeric {
                expected: stats::bin_proportions(bin_edges, sample),
                sample: sample.clone(),
                edges: bin_edges.clone(),
            },
            Summary::Categorical { proportions } => Reference::Categorical {
                codes: proportions
                    .keys()
                    .enumerate()
                    .map(|(i, code)| (code.clone(), i))
                    .collect(),
                proportions: proportions.values().copied().collect(),
            },
        }
    }

    /// The test statistics of `present` values against this reference.
    fn compare(&self, present: &mut [f64]) -> Vec<(&'static str, stats::TestResult)> {
        match self {
            Reference::Numeric {
                sample,
                edges,
                expected,
            } => {
                present.sort_by(f64::total_cmp);
                let actual = stats::bin_proportions(edges, present);
                vec![
                    ("ks", stats::ks_two_sample(present, sample)),
                    (
                        "psi",
                        stats::TestResult {
                            statistic: stats::psi(expected, &actual),
                            pvalue: None,
                        },
                    ),
                ]
            }
            Reference::Categorical { codes, proportions } => {
                let mut observed = vec![0.0; proportions.len() + 1];
                for value in present.iter() {
                    let index = codes
                        .get(&category_code(*value))
                        .copied()
                        .unwrap_or(proportions.len());
                    observed[index] += 1.0;
                }
                let rows = present.len() as f64;
                let mut shares = proportions.clone();
                if observed[proportions.len()] > 0.0 {
                    let total: f64 = shares.iter().sum();
                    for share in &mut shares {
                        *share *= (1.0 - UNSEEN_CATEGORY_SHARE) / total;
                    }
                    shares.push(UNSEEN_CATEGORY_SHARE);
                } else {
                    observed.pop();
                }
                let expected: Vec<f64> = shares.iter().map(|share| share * rows).collect();
                vec![("chi2", stats::chi_squared(&observed, &expected))]
            }
        }
    }
}

/// One monitored column: its reference and its sliding window.
struct ColumnWindow {
    name: String,
    reference: Reference,
    values: VecDeque<f64>,
}

impl ColumnWindow {
    fn push(&mut self, value: f64, capacity: usize) {
        if self.values.len() == capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }
}

/// An output column: which output and which of its columns.
struct OutputColumn {
    output: usize,
    column: usize,
    columns: usize,
    window: ColumnWindow,
}

/// Predictions kept for joining feedback, oldest first.
struct PredictionLog {
    order: VecDeque<String>,
    entries: HashMap<String, (Vec<f64>, bool)>,
    retention: usize,
}

/// Everything the monitor thread owns.
struct State {
    window: usize,
    min_rows: usize,
    features: Vec<ColumnWindow>,
    outputs: Vec<OutputColumn>,
    feedback: Option<(FeedbackConfig, usize, usize)>,
    log: PredictionLog,
    quality: VecDeque<f64>,
    metrics: VersionMetrics,
    changed: bool,
}

impl State {
    fn new(
        config: &MonitoringConfig,
        profile: &Profile,
        outputs: &[TensorSpec],
        metrics: VersionMetrics,
    ) -> Result<State, String> {
        let window = |column: &profile::Column| ColumnWindow {
            name: column.name.clone(),
            reference: Reference::from_summary(&column.summary),
            values: VecDeque::with_capacity(config.window),
        };
        let mut by_name = BTreeMap::new();
        for (index, spec) in outputs.iter().enumerate() {
            for (column, name) in output_column_names(spec).into_iter().enumerate() {
                by_name.insert(name, (index, column, width(spec)));
            }
        }
        let output_columns = profile
            .outputs
            .iter()
            .map(|column| {
                let (output, index, columns) = *by_name.get(&column.name).ok_or_else(|| {
                    format!(
                        "the profile {} does not fit the model: it describes output column '{}', but the model's output columns are {:?}",
                        config.profile,
                        column.name,
                        by_name.keys().collect::<Vec<_>>()
                    )
                })?;
                Ok(OutputColumn {
                    output,
                    column: index,
                    columns,
                    window: window(column),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let feedback = match &config.feedback {
            Some(feedback) => {
                let index = outputs
                    .iter()
                    .position(|spec| spec.name == feedback.output)
                    .ok_or_else(|| {
                        format!(
                            "monitoring.feedback.output '{}' is not an output of the model",
                            feedback.output
                        )
                    })?;
                Some((feedback.clone(), index, width(&outputs[index])))
            }
            None => None,
        };
        if let Some((config, ..)) = &feedback {
            let baseline = match config.task {
                Task::Classification => profile.baseline.accuracy,
                Task::Regression => profile.baseline.mean_absolute_error,
            };
            if let Some(value) = baseline {
                metrics.set_baseline_quality(config.task, value);
            }
            // The counters exist from load, at 0, so that `increase()` counts the
            // first feedback.
            metrics.count_feedback(config.task, 0, 0.0);
        }
        Ok(State {
            window: config.window.max(1),
            min_rows: config.min_rows,
            features: profile.features.iter().map(window).collect(),
            outputs: output_columns,
            log: PredictionLog {
                order: VecDeque::new(),
                entries: HashMap::new(),
                retention: feedback.as_ref().map_or(0, |(f, ..)| f.retention),
            },
            quality: VecDeque::new(),
            feedback,
            metrics,
            changed: false,
        })
    }

    fn run(mut self, receiver: Receiver<Message>, interval: Duration) {
        let mut next = Instant::now() + interval;
        loop {
            let timeout = next.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(timeout) {
                Ok(Message::Batch(observation)) => self.record(observation),
                Ok(Message::Feedback { id, values, reply }) => {
                    let _ = reply.send(self.score(&id, values));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next {
                if self.changed {
                    self.publish();
                    self.changed = false;
                }
                next = Instant::now() + interval;
            }
        }
    }

    fn record(&mut self, observation: Observation) {
        let features = self.features.len();
        for row in observation.features.chunks_exact(features) {
            for (column, value) in self.features.iter_mut().zip(row) {
                column.push(*value, self.window);
            }
        }
        for column in &mut self.outputs {
            if let Some(values) = &observation.outputs[column.output] {
                for row in values.chunks_exact(column.columns) {
                    column.window.push(row[column.column], self.window);
                }
            }
        }
        if let Some((_, output, columns)) = &self.feedback
            && let Some(values) = &observation.outputs[*output]
        {
            let predicted = predictions(values, *columns);
            let mut start = 0;
            for (id, rows) in observation.requests {
                let end = (start + rows).min(predicted.len());
                if let Some(id) = id {
                    self.log.insert(id, predicted[start..end].to_vec());
                }
                start = end;
            }
        }
        self.changed = true;
    }

    fn score(&mut self, id: &str, truth: Vec<f64>) -> Result<usize, InferError> {
        let Some((config, ..)) = &self.feedback else {
            return Err(InferError::InvalidInput(
                "this model has no monitoring.feedback".to_string(),
            ));
        };
        let (task, capacity) = (config.task, config.window.max(1));
        let Some((predicted, answered)) = self.log.entries.get_mut(id) else {
            return Err(InferError::NotFound(format!(
                "no prediction is kept for request id '{id}': it is unknown, or older than the last {} requests with ids",
                self.log.retention
            )));
        };
        if *answered {
            return Err(InferError::Conflict(format!(
                "feedback for request id '{id}' was already given"
            )));
        }
        if predicted.len() != truth.len() {
            return Err(InferError::InvalidInput(format!(
                "request '{id}' had {} rows but the feedback has {} values",
                predicted.len(),
                truth.len()
            )));
        }
        *answered = true;
        let mut total = 0.0;
        for (p, t) in predicted.iter().zip(&truth) {
            let score = match task {
                Task::Classification => f64::from(u8::from((p - t).abs() < 0.5)),
                Task::Regression => (p - t).abs(),
            };
            total += score;
            if self.quality.len() == capacity {
                self.quality.pop_front();
            }
            self.quality.push_back(score);
        }
        self.metrics.count_feedback(task, truth.len(), total);
        let mean = self.quality.iter().sum::<f64>() / self.quality.len() as f64;
        self.metrics.set_quality(task, mean);
        Ok(truth.len())
    }

    fn publish(&self) {
        for column in &self.features {
            let rows = column.values.len();
            if rows < self.min_rows {
                continue;
            }
            let mut present: Vec<f64> = column
                .values
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .collect();
            let missing = (rows - present.len()) as f64 / rows as f64;
            self.metrics.missing_ratio(&column.name).set(missing);
            if present.is_empty() {
                continue;
            }
            for (test, result) in column.reference.compare(&mut present) {
                self.metrics
                    .feature_drift(&column.name, test, result.statistic, result.pvalue);
            }
        }
        for output in &self.outputs {
            let column = &output.window;
            let mut present: Vec<f64> = column
                .values
                .iter()
                .copied()
                .filter(|v| !v.is_nan())
                .collect();
            if column.values.len() < self.min_rows || present.is_empty() {
                continue;
            }
            for (test, result) in column.reference.compare(&mut present) {
                if test != "ks" {
                    self.metrics
                        .prediction_drift(&column.name, test, result.statistic);
                }
            }
        }
    }
}

impl PredictionLog {
    fn insert(&mut self, id: String, predictions: Vec<f64>) {
        if self.retention == 0 {
            return;
        }
        if self
            .entries
            .insert(id.clone(), (predictions, false))
            .is_none()
        {
            self.order.push_back(id);
        }
        while self.order.len() > self.retention {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}
