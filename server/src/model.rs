//! One version of one model: loading it (with warm-up), its state, checking
//! requests against its inputs, and queueing them for its executor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batcher::{BatchPolicy, Batcher, INLINE_RUN_LIMIT, Job, Placement};
use crate::config::resilience::FallbackSource;
use crate::config::{ModelConfig, RunnerChoice};
use crate::error::InferError;
use crate::metrics::VersionMetrics;
use crate::monitoring::Monitor;
use crate::monitoring::predictions::PredictionCounts;
use crate::resilience::circuit::{CircuitBreaker, CircuitMetrics};
use crate::resilience::fallback::{Fallback, FallbackModel, StaticAnswer, check_signature};
use crate::resilience::{Answer, Resilience};
use crate::runtime::{OnnxModel, RuntimeError, TensorSpec};
use crate::tensor::{NamedTensor, Tensor, TensorData, concrete_shape, element_count};

/// What a loaded version offers to requests.
pub struct Serving {
    /// Inputs in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs in graph order.
    pub outputs: Vec<TensorSpec>,
    batcher: Arc<Batcher>,
    monitor: Option<Arc<Monitor>>,
    resilience: Resilience,
}

/// One version of a model in the repository.
pub struct ModelVersion {
    /// The model's name (its folder).
    pub name: String,
    /// The version number (its sub-folder).
    pub version: u64,
    /// The model's configuration.
    pub config: ModelConfig,
    /// The version's metric series.
    pub metrics: VersionMetrics,
    /// The series of its fallback model, when it has one.
    fallback_metrics: Option<VersionMetrics>,
    path: PathBuf,
    state: OnceLock<Result<Serving, String>>,
}

impl ModelVersion {
    /// A version that has not been loaded yet. `fallback_metrics` are the
    /// series of its fallback model, when its configuration names one.
    pub fn new(
        name: &str,
        version: u64,
        path: PathBuf,
        config: ModelConfig,
        metrics: VersionMetrics,
        fallback_metrics: Option<VersionMetrics>,
    ) -> ModelVersion {
        ModelVersion {
            name: name.to_string(),
            version,
            config,
            metrics,
            fallback_metrics,
            path,
            state: OnceLock::new(),
        }
    }

    /// A version that can never load, with the reason.
    pub fn failed(
        name: &str,
        version: u64,
        reason: String,
        metrics: VersionMetrics,
    ) -> ModelVersion {
        let model = ModelVersion::new(
            name,
            version,
            PathBuf::new(),
            ModelConfig::default(),
            metrics,
            None,
        );
        model.state.set(Err(reason)).ok();
        model
    }

    /// Whether loading has finished, successfully or not.
    pub fn is_settled(&self) -> bool {
        self.state.get().is_some()
    }

    /// The loaded version, or why it cannot serve.
    pub fn serving(&self) -> Result<&Serving, InferError> {
        match self.state.get() {
            Some(Ok(serving)) => Ok(serving),
            Some(Err(reason)) => Err(InferError::NotReady(format!(
                "model '{}' version {} failed to load: {reason}",
                self.name, self.version
            ))),
            None => Err(InferError::NotReady(format!(
                "model '{}' version {} is still loading",
                self.name, self.version
            ))),
        }
    }

    /// Why loading failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match self.state.get() {
            Some(Err(reason)) => Some(reason),
            _ => None,
        }
    }

    /// Loads, warms up and starts serving this version on a thread of its own,
    /// which then runs the model's batches for as long as the server runs when
    /// the model is too slow to run inline (see [`Placement`]).
    pub fn spawn_loader(self: &Arc<Self>) {
        let model = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("model-{}-{}", self.name, self.version))
            .spawn(move || model.load_and_serve());
        if let Err(error) = spawned {
            self.state
                .set(Err(format!("cannot start a thread: {error}")))
                .ok();
        }
    }

    fn load_and_serve(&self) {
        let started = Instant::now();
        let mut onnx = match OnnxModel::load(&self.path, &self.config) {
            Ok(onnx) => onnx,
            Err(error) => return self.fail(error.to_string()),
        };
        let policy = self.batch_policy(&onnx);
        let slowest_run = match self.warm_up(&mut onnx, policy) {
            Ok(slowest_run) => slowest_run,
            Err(error) => return self.fail(format!("warm-up failed: {error}")),
        };
        let placement = self.placement(slowest_run);
        let monitor = match &self.config.monitoring {
            Some(config) => {
                match Monitor::start(
                    config,
                    self.model_dir(),
                    onnx.inputs(),
                    onnx.outputs(),
                    &self.metrics,
                ) {
                    Ok(monitor) => Some(Arc::new(monitor)),
                    Err(error) => {
                        return self.fail(format!("invalid monitoring configuration: {error}"));
                    }
                }
            }
            None => None,
        };
        let resilience = match self.resilience(onnx.inputs(), onnx.outputs()) {
            Ok(resilience) => resilience,
            Err(error) => return self.fail(error),
        };
        let inputs = onnx.inputs().to_vec();
        let outputs = onnx.outputs().to_vec();
        let device = onnx.device();
        let predictions = PredictionCounts::new(&outputs, &self.metrics);
        let batcher = Batcher::new(
            onnx,
            &self.name,
            policy,
            placement,
            self.metrics.clone(),
            monitor.clone(),
            Some(predictions),
        );
        let serving = Serving {
            inputs,
            outputs,
            batcher: Arc::clone(&batcher),
            monitor,
            resilience,
        };
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.load_seconds.set(seconds);
        self.metrics.ready.set(1);
        tracing::info!(
            model = %self.name,
            version = self.version,
            seconds,
            ?device,
            batchable = policy.batchable,
            ?placement,
            slowest_warm_up_run = ?slowest_run,
            "model ready"
        );
        self.state.set(Ok(serving)).ok();
        if placement == Placement::Thread {
            batcher.run_thread();
        }
    }

    /// The model's folder (`DIR/<model>`), where its config and profile live.
    fn model_dir(&self) -> &Path {
        self.path
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."))
    }

    /// How a session with these inputs and outputs forms batches.
    fn batch_policy(&self, onnx: &OnnxModel) -> BatchPolicy {
        BatchPolicy {
            batchable: onnx.inputs().iter().all(TensorSpec::has_dynamic_batch)
                && onnx.outputs().iter().all(TensorSpec::has_dynamic_batch),
            max_batch_size: self.config.max_batch_size,
            max_queue_delay: self.config.max_queue_delay(),
            max_queue_size: self.config.max_queue_size,
        }
    }

    /// Where runs happen, by the configuration and the warm-up measurement.
    fn placement(&self, slowest_run: Option<Duration>) -> Placement {
        match (self.config.runner, slowest_run) {
            (RunnerChoice::Inline, _) => Placement::Inline,
            (RunnerChoice::Thread, _) => Placement::Thread,
            (RunnerChoice::Auto, Some(slowest_run)) => Placement::for_run_time(slowest_run),
            // Without warm-up there is no measurement: the thread is always safe.
            (RunnerChoice::Auto, None) => Placement::Thread,
        }
    }

    /// The circuit breaker and fallback the configuration asks for, checked
    /// against the primary's signature; a fallback model is loaded, warmed up
    /// and started here.
    fn resilience(
        &self,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<Resilience, String> {
        let breaker = self.config.circuit_breaker.map(|config| {
            let metrics = CircuitMetrics {
                state: self.metrics.circuit_state.clone(),
                opens: self.metrics.circuit_opens.clone(),
            };
            CircuitBreaker::new(config, metrics)
        });
        let fallback = match self.config.fallback.as_ref().map(|f| f.source()) {
            None => None,
            Some(Err(error)) => return Err(format!("invalid fallback: {error}")),
            Some(Ok(FallbackSource::Static(given))) => Some(Fallback::Static(
                StaticAnswer::new(outputs, given).map_err(|e| format!("invalid fallback: {e}"))?,
            )),
            Some(Ok(FallbackSource::Model(relative))) => Some(Fallback::Model(
                self.start_fallback_model(&self.model_dir().join(relative), inputs, outputs)
                    .map_err(|e| format!("fallback model {relative}: {e}"))?,
            )),
        };
        Ok(Resilience::new(
            &self.name,
            breaker,
            fallback,
            self.config.request_timeout(),
            &self.metrics,
        ))
    }

    /// Loads and warms up the fallback model at `path`, with the primary's
    /// configuration, and starts its runner.
    fn start_fallback_model(
        &self,
        path: &Path,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<FallbackModel, String> {
        let mut onnx = OnnxModel::load(path, &self.config).map_err(|e| e.to_string())?;
        let output_order = check_signature(inputs, outputs, onnx.inputs(), onnx.outputs())?;
        let policy = self.batch_policy(&onnx);
        let slowest_run = self
            .warm_up(&mut onnx, policy)
            .map_err(|e| format!("warm-up failed: {e}"))?;
        let placement = self.placement(slowest_run);
        let metrics = self
            .fallback_metrics
            .clone()
            .unwrap_or_else(|| self.metrics.clone());
        // The fallback's answers are not the model's predictions: not counted.
        let batcher = Batcher::new(onnx, &self.name, policy, placement, metrics, None, None);
        if placement == Placement::Thread {
            let runner = Arc::clone(&batcher);
            std::thread::Builder::new()
                .name(format!("fallback-{}-{}", self.name, self.version))
                .spawn(move || runner.run_thread())
                .map_err(|e| format!("cannot start a thread: {e}"))?;
        }
        Ok(FallbackModel::new(batcher, output_order))
    }

    fn fail(&self, reason: String) {
        tracing::error!(model = %self.name, version = self.version, %reason, "model failed to load");
        self.state.set(Err(reason)).ok();
    }

    /// Runs the configured warm-up inputs, or synthesized zeros at one row and
    /// at a full batch, so that the first real request finds everything allocated.
    /// Returns the slowest run of the last iteration, or `None` when warm-up is off.
    fn warm_up(
        &self,
        onnx: &mut OnnxModel,
        policy: BatchPolicy,
    ) -> Result<Option<Duration>, String> {
        let warmup = &self.config.warmup;
        if !warmup.enabled {
            return Ok(None);
        }
        let batches: Vec<Vec<Tensor>> = if warmup.inputs.is_empty() {
            let mut rows = vec![1];
            if policy.batchable && policy.max_batch_size > 1 {
                rows.push(policy.max_batch_size);
            }
            rows.into_iter()
                .map(|rows| synthesize_inputs(onnx.inputs(), rows))
                .collect::<Result<_, _>>()?
        } else {
            vec![
                order_inputs(
                    &self.name,
                    onnx.inputs(),
                    warmup.inputs.clone(),
                    &self.config,
                )
                .map_err(|e| e.to_string())?,
            ]
        };
        let run_all = |onnx: &mut OnnxModel| -> Result<Duration, String> {
            let mut slowest = Duration::ZERO;
            for inputs in &batches {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let started = Instant::now();
                onnx.run(&refs).map_err(|e: RuntimeError| e.to_string())?;
                slowest = slowest.max(started.elapsed());
            }
            Ok(slowest)
        };
        let mut slowest = Duration::ZERO;
        for _ in 0..warmup.iterations.max(1) {
            slowest = run_all(onnx)?;
        }
        // A first run allocates and can be many times slower than the next ones;
        // when it was near the inline limit, measure a warm run before choosing.
        if warmup.iterations <= 1 && slowest > INLINE_RUN_LIMIT && slowest < 20 * INLINE_RUN_LIMIT {
            slowest = run_all(onnx)?;
        }
        Ok(Some(slowest))
    }

    /// Checks a request's inputs against the model and queues it; resolves with
    /// every output of the model, in graph order, from the model or, when it
    /// fails, times out or has its circuit open, from its fallback. The
    /// request's `id` is kept with its predictions when the model takes feedback.
    pub async fn infer(
        &self,
        inputs: Vec<NamedTensor>,
        id: Option<&str>,
    ) -> Result<Answer, InferError> {
        let serving = self.serving()?;
        let ordered = order_inputs(&self.name, &serving.inputs, inputs, &self.config)?;
        let keeps_ids = serving.monitor.as_ref().is_some_and(|m| m.keeps_ids());
        let id = id.filter(|_| keeps_ids).map(str::to_string);
        serving
            .resilience
            .call(ordered, |inputs| self.run(serving, inputs, id))
            .await
    }

    /// Queues ordered inputs for the model itself and waits for its answer,
    /// at most the primary timeout.
    async fn run(
        &self,
        serving: &Serving,
        inputs: Vec<Tensor>,
        id: Option<String>,
    ) -> Result<Vec<Tensor>, InferError> {
        let (reply, result) = oneshot::channel();
        serving.batcher.submit(Job {
            inputs,
            enqueued: Instant::now(),
            id,
            reply,
        })?;
        let timeout = self.config.primary_timeout();
        match tokio::time::timeout(timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(InferError::ShuttingDown),
            Err(_) => Err(InferError::Timeout(timeout.as_millis() as u64)),
        }
    }
}

impl ModelVersion {
    /// Joins ground truth to the predictions of request `id`; returns the rows scored.
    pub async fn feedback(&self, id: String, values: Vec<f64>) -> Result<usize, InferError> {
        let monitor = self.serving()?.monitor.as_ref().ok_or_else(|| {
            InferError::InvalidInput(format!(
                "model '{}' takes no feedback: its config.yaml has no monitoring.feedback",
                self.name
            ))
        })?;
        monitor.feedback(id, values).await
    }
}

/// Zero-filled inputs with `rows` in every dynamic first dimension and 1 in
/// every other dynamic dimension.
fn synthesize_inputs(specs: &[TensorSpec], rows: usize) -> Result<Vec<Tensor>, String> {
    specs
        .iter()
        .map(|spec| {
            let shape = concrete_shape(&spec.shape, rows);
            let count = element_count(&shape).map_err(|e| e.to_string())?;
            Tensor::new(shape, TensorData::zeros(spec.datatype, count)).map_err(|e| e.to_string())
        })
        .collect()
}

/// Matches named inputs to the model's inputs and checks each one's datatype,
/// shape and size; returns the tensors in the model's order.
pub fn order_inputs(
    model: &str,
    specs: &[TensorSpec],
    inputs: Vec<NamedTensor>,
    config: &ModelConfig,
) -> Result<Vec<Tensor>, InferError> {
    let invalid = InferError::InvalidInput;
    let mut slots: Vec<Option<Tensor>> = vec![None; specs.len()];
    for input in inputs {
        let Some(index) = specs.iter().position(|spec| spec.name == input.name) else {
            let expected: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(invalid(format!(
                "model '{model}' has no input named '{}'; its inputs are {expected:?}",
                input.name
            )));
        };
        if slots[index].is_some() {
            return Err(invalid(format!("input '{}' is given twice", input.name)));
        }
        check_input(&specs[index], &input.tensor, config)?;
        slots[index] = Some(input.tensor);
    }
    let missing: Vec<&str> = specs
        .iter()
        .zip(&slots)
        .filter(|(_, slot)| slot.is_none())
        .map(|(spec, _)| spec.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "missing inputs {missing:?} for model '{model}'"
        )));
    }
    let ordered: Vec<Tensor> = slots
        .into_iter()
        .map(|slot| slot.expect("checked"))
        .collect();
    if ordered.len() > 1 && specs.iter().all(TensorSpec::has_dynamic_batch) {
        let rows = ordered[0].rows();
        if ordered.iter().any(|t| t.rows() != rows) {
            return Err(invalid(
                "all inputs must have the same number of rows (first dimension)".to_string(),
            ));
        }
    }
    Ok(ordered)
}

fn check_input(spec: &TensorSpec, tensor: &Tensor, config: &ModelConfig) -> Result<(), InferError> {
    let name = &spec.name;
    if tensor.datatype() != spec.datatype {
        return Err(InferError::InvalidInput(format!(
            "input '{name}' must be {}, got {}",
            spec.datatype,
            tensor.datatype()
        )));
    }
    let fits = spec.accepts_shape(&tensor.shape);
    if !fits {
        return Err(InferError::InvalidInput(format!(
            "input '{name}' has shape {:?}, but the model expects {:?} (-1 is any size)",
            tensor.shape, spec.shape
        )));
    }
    if tensor.data.len() > config.limits.max_elements {
        return Err(InferError::InvalidInput(format!(
            "input '{name}' has {} elements, over the limit of {} (limits.max_elements)",
            tensor.data.len(),
            config.limits.max_elements
        )));
    }
    if spec.has_dynamic_batch() && tensor.rows() > config.limits.max_rows {
        return Err(InferError::InvalidInput(format!(
            "input '{name}' has {} rows, over the limit of {} (limits.max_rows)",
            tensor.rows(),
            config.limits.max_rows
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn input(name: &str, shape: Vec<i64>) -> NamedTensor {
        let count = element_count(&shape).unwrap();
        NamedTensor {
            name: name.to_string(),
            tensor: Tensor::new(shape, TensorData::zeros(DataType::Fp32, count)).unwrap(),
        }
    }

    #[test]
    fn inputs_are_reordered_to_the_graph_order() {
        let specs = [
            spec("a", DataType::Fp32, &[-1, 2]),
            spec("b", DataType::Fp32, &[-1, 3]),
        ];
        let ordered = order_inputs(
            "m",
            &specs,
            vec![input("b", vec![1, 3]), input("a", vec![1, 2])],
            &ModelConfig::default(),
        )
        .unwrap();
        assert_eq!(ordered[0].shape, vec![1, 2]);
        assert_eq!(ordered[1].shape, vec![1, 3]);
    }

    #[test]
    fn mismatches_are_named() {
        let specs = [spec("a", DataType::Fp32, &[-1, 2])];
        let config = ModelConfig::default();
        let cases = [
            (vec![input("x", vec![1, 2])], "no input named 'x'"),
            (vec![input("a", vec![1, 3])], "expects [-1, 2]"),
            (vec![input("a", vec![2])], "has shape [2]"),
            (vec![], "missing inputs [\"a\"]"),
            (
                vec![input("a", vec![1, 2]), input("a", vec![1, 2])],
                "given twice",
            ),
        ];
        for (inputs, message) in cases {
            let error = order_inputs("m", &specs, inputs, &config).unwrap_err();
            assert!(
                error.to_string().contains(message),
                "{error} lacks {message}"
            );
        }
        let specs = [spec("a", DataType::Int64, &[-1, 2])];
        let error = order_inputs("m", &specs, vec![input("a", vec![1, 2])], &config).unwrap_err();
        assert!(
            error.to_string().contains("must be INT64, got FP32"),
            "{error}"
        );
    }

    #[test]
    fn limits_are_enforced_with_their_names() {
        let specs = [spec("a", DataType::Fp32, &[-1, 2])];
        let mut config = ModelConfig::default();
        config.limits.max_rows = 2;
        let error = order_inputs("m", &specs, vec![input("a", vec![3, 2])], &config).unwrap_err();
        assert!(error.to_string().contains("limits.max_rows"), "{error}");
        config.limits.max_elements = 3;
        let error = order_inputs("m", &specs, vec![input("a", vec![2, 2])], &config).unwrap_err();
        assert!(error.to_string().contains("limits.max_elements"), "{error}");
    }

    #[test]
    fn synthesized_warmup_fills_dynamic_dimensions() {
        let specs = [spec("a", DataType::Bytes, &[-1, -1, 3])];
        let tensors = synthesize_inputs(&specs, 4).unwrap();
        assert_eq!(tensors[0].shape, vec![4, 1, 3]);
        assert_eq!(tensors[0].data.len(), 12);
    }
}
