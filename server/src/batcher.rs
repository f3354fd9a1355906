//! Dynamic batching: a bounded queue per model version and the executor loop that
//! owns the ONNX Runtime session.
//!
//! The executor never waits for a batch to fill unless `max_queue_delay_ms` asks it
//! to: when the model is idle a request runs at once, and whatever queued while a
//! run was in flight forms the next batch. A batch is cut at `max_batch_size` rows
//! or when the oldest request has waited `max_queue_delay_ms`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::InferError;
use crate::metrics::VersionMetrics;
use crate::monitoring::Monitor;
use crate::runtime::OnnxModel;
use crate::tensor::Tensor;

/// What a queued request receives: every output of the model, in graph order.
pub type JobResult = Result<Vec<Tensor>, InferError>;

/// One validated request waiting to run: one tensor per model input, in order.
pub struct Job {
    /// The inputs, ordered as the model declares them.
    pub inputs: Vec<Tensor>,
    /// When the request entered the queue.
    pub enqueued: Instant,
    /// The request's id, kept when the monitor logs predictions for feedback.
    pub id: Option<String>,
    /// Where the result goes; a closed channel means the caller gave up.
    pub reply: oneshot::Sender<JobResult>,
}

impl Job {
    fn rows(&self) -> usize {
        self.inputs.first().map_or(1, Tensor::rows)
    }
}

/// How the executor forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Whether rows of several requests may be stacked (dynamic first dimension).
    pub batchable: bool,
    /// Most rows in one run.
    pub max_batch_size: usize,
    /// How long the oldest request may wait for the batch to fill.
    pub max_queue_delay: Duration,
}

/// The sending side of a model version's queue.
pub struct JobQueue {
    sender: SyncSender<Job>,
    metrics: VersionMetrics,
    model: String,
}

impl JobQueue {
    /// A queue holding at most `capacity` jobs, and its receiving end for the executor.
    pub fn bounded(
        capacity: usize,
        model: &str,
        metrics: VersionMetrics,
    ) -> (JobQueue, Receiver<Job>) {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
        let queue = JobQueue {
            sender,
            metrics,
            model: model.to_string(),
        };
        (queue, receiver)
    }

    /// Enqueues a job, or refuses it at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), InferError> {
        self.metrics.queue_depth.inc();
        self.sender.try_send(job).map_err(|error| {
            self.metrics.queue_depth.dec();
            match error {
                TrySendError::Full(_) => InferError::QueueFull(self.model.clone()),
                TrySendError::Disconnected(_) => InferError::ShuttingDown,
            }
        })
    }
}

/// Whether two jobs can share a batch: every input has the same shape past the
/// first dimension (datatypes were already checked against the model).
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs
        .iter()
        .zip(&b.inputs)
        .all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

/// Runs jobs from `receiver` on `model` until every sender is gone.
pub fn run_executor(
    model: &mut OnnxModel,
    receiver: Receiver<Job>,
    policy: BatchPolicy,
    metrics: &VersionMetrics,
    monitor: Option<&Monitor>,
) {
    let mut deferred: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        metrics.queue_depth.dec();
        if first.reply.is_closed() {
            continue;
        }
        let batch = if policy.batchable && policy.max_batch_size > 1 {
            collect_batch(first, &receiver, &mut deferred, policy, metrics)
        } else {
            vec![first]
        };
        execute(model, batch, metrics, monitor);
    }
}

/// Adds to `first` every compatible job that fits, from the deferred jobs and
/// then the queue, waiting for more only until the oldest job's delay runs out.
fn collect_batch(
    first: Job,
    receiver: &Receiver<Job>,
    deferred: &mut VecDeque<Job>,
    policy: BatchPolicy,
    metrics: &VersionMetrics,
) -> Vec<Job> {
    let deadline = first.enqueued + policy.max_queue_delay;
    let mut rows = first.rows();
    let mut batch = vec![first];
    let mut index = 0;
    while index < deferred.len() && rows < policy.max_batch_size {
        let job = &deferred[index];
        if compatible(&batch[0], job) && rows + job.rows() <= policy.max_batch_size {
            let job = deferred.remove(index).expect("index in range");
            metrics.queue_depth.dec();
            rows += job.rows();
            batch.push(job);
        } else {
            index += 1;
        }
    }
    while rows < policy.max_batch_size {
        let next = match receiver.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match receiver.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        if next.reply.is_closed() {
            metrics.queue_depth.dec();
            continue;
        }
        if compatible(&batch[0], &next) && rows + next.rows() <= policy.max_batch_size {
            metrics.queue_depth.dec();
            rows += next.rows();
            batch.push(next);
        } else {
            // Keep it for the next run; stop here so that order is kept and the
            // queue's bound still holds.
            deferred.push_back(next);
            break;
        }
    }
    batch
}

/// Runs one batch, shows it to the monitor and sends each job its share of the outputs.
fn execute(
    model: &mut OnnxModel,
    batch: Vec<Job>,
    metrics: &VersionMetrics,
    monitor: Option<&Monitor>,
) {
    let started = Instant::now();
    for job in &batch {
        metrics
            .queue_duration
            .observe(started.duration_since(job.enqueued).as_secs_f64());
    }
    let rows: Vec<usize> = batch.iter().map(Job::rows).collect();
    let total_rows: usize = rows.iter().sum();
    let stacked: Option<Vec<Tensor>> = (batch.len() > 1).then(|| {
        (0..batch[0].inputs.len())
            .map(|input| {
                let parts: Vec<&Tensor> = batch.iter().map(|job| &job.inputs[input]).collect();
                Tensor::concat_rows(&parts)
            })
            .collect()
    });
    let inputs: Vec<&Tensor> = match &stacked {
        Some(stacked) => stacked.iter().collect(),
        None => batch[0].inputs.iter().collect(),
    };
    let result = run_guarded(model, &inputs);
    metrics
        .compute_duration
        .observe(started.elapsed().as_secs_f64());
    metrics.batch_size.observe(total_rows as f64);
    if let (Some(monitor), Ok(outputs)) = (monitor, &result) {
        let requests = batch
            .iter()
            .zip(&rows)
            .map(|(job, rows)| (job.id.clone(), *rows))
            .collect();
        monitor.observe(&inputs, outputs, requests);
    }
    drop(inputs);

    match result {
        Ok(outputs) if batch.len() == 1 => {
            let job = batch.into_iter().next().expect("one job");
            let _ = job.reply.send(Ok(outputs));
        }
        Ok(outputs) => {
            if let Some(bad) = outputs.iter().find(|o| o.rows() != total_rows) {
                let error = InferError::Internal(format!(
                    "an output of shape {:?} cannot be split into the {total_rows} rows of the batch",
                    bad.shape
                ));
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
                return;
            }
            let mut per_output: Vec<std::vec::IntoIter<Tensor>> = outputs
                .iter()
                .map(|output| output.split_rows(&rows).into_iter())
                .collect();
            for job in batch {
                let mine = per_output
                    .iter_mut()
                    .map(|parts| parts.next().expect("one part per job"))
                    .collect();
                let _ = job.reply.send(Ok(mine));
            }
        }
        Err(error) => {
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

/// Runs the model, turning a failure or a panic inside it into an error for the
/// batch instead of the end of the executor.
fn run_guarded(model: &mut OnnxModel, inputs: &[&Tensor]) -> JobResult {
    match std::panic::catch_unwind(AssertUnwindSafe(|| model.run(inputs))) {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(error)) => Err(InferError::Internal(error.to_string())),
        Err(_) => Err(InferError::Internal(
            "the model run panicked; the request was dropped".to_string(),
        )),
    }
}
