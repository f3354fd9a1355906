//! Dynamic batching: a bounded queue per model version and the runner that owns
//! the ONNX Runtime session.
//!
//! The runner never waits for a batch to fill unless `max_queue_delay_ms` asks it
//! to: when the model is idle a request runs at once, and whatever queued while a
//! run was in flight forms the next batch. A batch is cut at `max_batch_size` rows
//! or when the oldest request has waited `max_queue_delay_ms`.
//!
//! Where the runs happen depends on how long one takes ([`Placement`]). A fast
//! model runs *inline*, on the async runtime that parsed the request: handing a
//! 10-microsecond run to another thread and back costs more than the run itself
//! (two thread wake-ups per request). The first request that finds the model idle
//! schedules a runner task behind every request already being parsed, so those
//! join its batch. A slow model runs on a thread of its own, so that a run never
//! stalls the runtime that serves health checks and other models.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::InferError;
use crate::metrics::VersionMetrics;
use crate::monitoring::Monitor;
use crate::monitoring::predictions::PredictionCounts;
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

    /// Whether this job can share a batch with `other`: every input has the same
    /// shape past the first dimension (datatypes were already checked against the
    /// model).
    fn stacks_with(&self, other: &Job) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
    }
}

/// How the runner forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Whether rows of several requests may be stacked (dynamic first dimension).
    pub batchable: bool,
    /// Most rows in one run.
    pub max_batch_size: usize,
    /// How long the oldest request may wait for the batch to fill.
    pub max_queue_delay: Duration,
    /// Most jobs waiting in the queue.
    pub max_queue_size: usize,
}

/// Where a model version's runs happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the async runtime, in a task scheduled after the requests being parsed.
    Inline,
    /// On a thread of the version's own.
    Thread,
}

/// Runs that take longer than this (at a full batch, measured in warm-up) go to a
/// thread of their own; quicker ones run inline. A millisecond is about what a
/// runtime worker may be busy before health checks and other models notice.
pub const INLINE_RUN_LIMIT: Duration = Duration::from_millis(1);

impl Placement {
    /// The placement for a model whose slowest warm-up run took `slowest_run`.
    pub fn for_run_time(slowest_run: Duration) -> Placement {
        if slowest_run <= INLINE_RUN_LIMIT {
            Placement::Inline
        } else {
            Placement::Thread
        }
    }
}

/// What the runner finds in the queue.
enum Take {
    /// A batch to run now.
    Run(Vec<Job>),
    /// A batch that may still grow until this instant.
    WaitUntil(Instant),
    /// Nothing to do.
    Empty,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// Whether a runner is scheduled or working. When false, the next submitted
    /// job must start one.
    runner_active: bool,
}

/// A model version's queue and the session its runner uses.
pub struct Batcher {
    queue: Mutex<QueueState>,
    /// Wakes the version's thread ([`Placement::Thread`] only).
    wake: Condvar,
    /// Wakes an inline runner that waits for its batch to fill.
    grew: tokio::sync::Notify,
    model: Mutex<OnnxModel>,
    policy: BatchPolicy,
    placement: Placement,
    metrics: VersionMetrics,
    monitor: Option<Arc<Monitor>>,
    predictions: Option<PredictionCounts>,
    model_name: String,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held cannot leave the queue or the session
    // inconsistent (runs are guarded), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batcher {
    /// A batcher for `model`, showing finished batches to `monitor` and counting
    /// their rows in `predictions` when given. With [`Placement::Thread`] the
    /// caller must run [`Batcher::run_thread`] on a thread of its own.
    pub fn new(
        model: OnnxModel,
        model_name: &str,
        policy: BatchPolicy,
        placement: Placement,
        metrics: VersionMetrics,
        monitor: Option<Arc<Monitor>>,
        predictions: Option<PredictionCounts>,
    ) -> Arc<Batcher> {
        Arc::new(Batcher {
            queue: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                runner_active: false,
            }),
            wake: Condvar::new(),
            grew: tokio::sync::Notify::new(),
            model: Mutex::new(model),
            policy,
            placement,
            metrics,
            monitor,
            predictions,
            model_name: model_name.to_string(),
        })
    }

    /// Where this version's runs happen.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Enqueues a job, or refuses it at once when the queue is full. Must be
    /// called from within the async runtime.
    pub fn submit(self: &Arc<Self>, job: Job) -> Result<(), InferError> {
        let mut queue = locked(&self.queue);
        if queue.jobs.len() >= self.policy.max_queue_size {
            return Err(InferError::QueueFull(self.model_name.clone()));
        }
        queue.jobs.push_back(job);
        self.metrics.queue_depth.inc();
        if queue.runner_active {
            drop(queue);
            if !self.policy.max_queue_delay.is_zero() {
                // A runner waiting for its batch to fill may now have a full one.
                match self.placement {
                    Placement::Inline => self.grew.notify_one(),
                    Placement::Thread => self.wake.notify_one(),
                }
            }
            return Ok(());
        }
        queue.runner_active = true;
        drop(queue);
        match self.placement {
            Placement::Inline => {
                let batcher = Arc::clone(self);
                tokio::spawn(async move { batcher.run_inline().await });
            }
            Placement::Thread => self.wake.notify_one(),
        }
        Ok(())
    }

    /// The inline runner: runs batches until the queue is empty, letting the
    /// runtime parse more requests between them.
    async fn run_inline(self: Arc<Self>) {
        loop {
            // Requests already being parsed on this runtime get to join the batch.
            tokio::task::yield_now().await;
            let take = {
                let mut queue = locked(&self.queue);
                let take = self.take(&mut queue.jobs, Instant::now());
                if matches!(take, Take::Empty) {
                    queue.runner_active = false;
                }
                take
            };
            match take {
                Take::Run(batch) => self.execute(batch),
                Take::WaitUntil(deadline) => {
                    let _ = tokio::time::timeout_at(deadline.into(), self.grew.notified()).await;
                }
                Take::Empty => return,
            }
        }
    }

    /// The thread runner ([`Placement::Thread`]): runs batches for as long as
    /// the process lives, sleeping while the queue is empty.
    pub fn run_thread(&self) {
        loop {
            let batch = {
                let mut queue = locked(&self.queue);
                loop {
                    match self.take(&mut queue.jobs, Instant::now()) {
                        Take::Run(batch) => break batch,
                        Take::WaitUntil(deadline) => {
                            let wait = deadline.saturating_duration_since(Instant::now());
                            queue = self
                                .wake
                                .wait_timeout(queue, wait)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        Take::Empty => {
                            queue.runner_active = false;
                            queue = self
                                .wake
                                .wait(queue)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                    }
                }
            };
            self.execute(batch);
        }
    }

    /// Takes the next batch from the queue (see [`take_batch`]), keeping the
    /// queue-depth gauge in step.
    fn take(&self, jobs: &mut VecDeque<Job>, now: Instant) -> Take {
        let before = jobs.len();
        let take = take_batch(jobs, self.policy, now);
        let removed = before - jobs.len();
        self.metrics.queue_depth.sub(removed as i64);
        take
    }

    /// Runs one batch, shows it to the monitor and sends each job its share of
    /// the outputs.
    fn execute(&self, batch: Vec<Job>) {
        let metrics = &self.metrics;
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
        let result = run_guarded(&mut locked(&self.model), &inputs);
        metrics
            .compute_duration
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_size.observe(total_rows as f64);
        if let (Some(predictions), Ok(outputs)) = (&self.predictions, &result) {
            predictions.record(outputs);
        }
        if let (Some(monitor), Ok(outputs)) = (&self.monitor, &result) {
            let requests = batch
                .iter()
                .zip(&rows)
                .map(|(job, rows)| (job.id.clone(), *rows))
                .collect();
            monitor.observe(&inputs, outputs, requests);
        }
        drop(inputs);
        reply(batch, &rows, result);
    }
}

/// Takes the next batch from `jobs`: the oldest live job plus every later job
/// that stacks with it and fits, or says how long the batch may still grow.
/// Jobs whose caller gave up are dropped.
fn take_batch(jobs: &mut VecDeque<Job>, policy: BatchPolicy, now: Instant) -> Take {
    jobs.retain(|job| !job.reply.is_closed());
    let Some(first) = jobs.front() else {
        return Take::Empty;
    };
    if !policy.batchable || policy.max_batch_size <= 1 {
        return Take::Run(jobs.pop_front().into_iter().collect());
    }
    let mut rows = first.rows();
    let mut chosen = vec![0];
    for (index, job) in jobs.iter().enumerate().skip(1) {
        if rows >= policy.max_batch_size {
            break;
        }
        if first.stacks_with(job) && rows + job.rows() <= policy.max_batch_size {
            rows += job.rows();
            chosen.push(index);
        }
    }
    let deadline = first.enqueued + policy.max_queue_delay;
    if rows < policy.max_batch_size && now < deadline {
        return Take::WaitUntil(deadline);
    }
    // Remove from the back so that the earlier indices stay valid.
    let mut batch: Vec<Job> = chosen
        .iter()
        .rev()
        .filter_map(|&index| jobs.remove(index))
        .collect();
    batch.reverse();
    Take::Run(batch)
}

/// Sends each job of a batch its rows of the outputs, or the batch's error.
fn reply(batch: Vec<Job>, rows: &[usize], result: JobResult) {
    let outputs = match result {
        Ok(outputs) if batch.len() == 1 => {
            let job = batch.into_iter().next().expect("one job");
            let _ = job.reply.send(Ok(outputs));
            return;
        }
        Ok(outputs) => outputs,
        Err(error) => {
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
            return;
        }
    };
    let total_rows: usize = rows.iter().sum();
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
        .map(|output| output.split_rows(rows).into_iter())
        .collect();
    for job in batch {
        let mine = per_output
            .iter_mut()
            .map(|parts| parts.next().expect("one part per job"))
            .collect();
        let _ = job.reply.send(Ok(mine));
    }
}

/// Runs the model, turning a failure or a panic inside it into an error for the
/// batch instead of the end of the runner.
fn run_guarded(model: &mut OnnxModel, inputs: &[&Tensor]) -> JobResult {
    match std::panic::catch_unwind(AssertUnwindSafe(|| model.run(inputs))) {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(error)) => Err(InferError::Internal(error.to_string())),
        Err(_) => Err(InferError::Internal(
            "the model run panicked; the request was dropped".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn job(rows: usize, width: usize) -> (Job, oneshot::Receiver<JobResult>) {
        let (reply, receiver) = oneshot::channel();
        let tensor = Tensor::new(
            vec![rows as i64, width as i64],
            TensorData::Fp32(vec![0.0; rows * width]),
        )
        .expect("valid tensor");
        let job = Job {
            inputs: vec![tensor],
            enqueued: Instant::now(),
            id: None,
            reply,
        };
        (job, receiver)
    }

    fn policy(max_batch_size: usize, delay_ms: u64) -> BatchPolicy {
        BatchPolicy {
            batchable: true,
            max_batch_size,
            max_queue_delay: Duration::from_millis(delay_ms),
            max_queue_size: 100,
        }
    }

    fn batch_rows(take: Take) -> Vec<usize> {
        match take {
            Take::Run(batch) => batch.iter().map(Job::rows).collect(),
            Take::WaitUntil(_) => panic!("waited instead of running"),
            Take::Empty => panic!("found nothing to run"),
        }
    }

    #[test]
    fn a_batch_takes_every_stackable_job_that_fits_in_order() {
        let (a, _ra) = job(2, 4);
        let (b, _rb) = job(5, 4);
        let (c, _rc) = job(3, 4);
        let (d, _rd) = job(1, 4);
        let mut jobs = VecDeque::from([a, b, c, d]);
        let take = take_batch(&mut jobs, policy(6, 0), Instant::now());
        // 2 + 5 would exceed 6 rows, so b waits for the next run; c and d fit.
        assert_eq!(batch_rows(take), vec![2, 3, 1]);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].rows(), 5);
    }

    #[test]
    fn jobs_of_another_shape_wait_for_a_batch_of_their_own() {
        let (a, _ra) = job(1, 4);
        let (b, _rb) = job(1, 8);
        let (c, _rc) = job(1, 4);
        let mut jobs = VecDeque::from([a, b, c]);
        assert_eq!(
            batch_rows(take_batch(&mut jobs, policy(16, 0), Instant::now())),
            vec![1, 1]
        );
        assert_eq!(jobs[0].inputs[0].shape, vec![1, 8]);
    }

    #[test]
    fn jobs_whose_callers_gave_up_are_dropped() {
        let (a, ra) = job(1, 4);
        let (b, _rb) = job(1, 4);
        drop(ra);
        let mut jobs = VecDeque::from([a, b]);
        assert_eq!(
            batch_rows(take_batch(&mut jobs, policy(16, 0), Instant::now())),
            vec![1]
        );
        assert!(jobs.is_empty());

        let (c, rc) = job(1, 4);
        drop(rc);
        let mut jobs = VecDeque::from([c]);
        assert!(matches!(
            take_batch(&mut jobs, policy(16, 0), Instant::now()),
            Take::Empty
        ));
        assert!(jobs.is_empty());
    }

    #[test]
    fn a_queue_delay_waits_for_more_rows_until_the_deadline_or_a_full_batch() {
        let (a, _ra) = job(1, 4);
        let enqueued = a.enqueued;
        let mut jobs = VecDeque::from([a]);
        match take_batch(&mut jobs, policy(2, 50), enqueued) {
            Take::WaitUntil(deadline) => {
                assert_eq!(deadline, enqueued + Duration::from_millis(50))
            }
            _ => panic!("ran before the deadline with room in the batch"),
        }
        let (b, _rb) = job(1, 4);
        jobs.push_back(b);
        assert_eq!(
            batch_rows(take_batch(&mut jobs, policy(2, 50), enqueued)),
            vec![1, 1],
            "a full batch runs before the deadline"
        );
        let (c, _rc) = job(1, 4);
        jobs.push_back(c);
        let late = Instant::now() + Duration::from_millis(60);
        assert_eq!(
            batch_rows(take_batch(&mut jobs, policy(2, 50), late)),
            vec![1]
        );
    }

    #[test]
    fn an_unbatchable_model_takes_one_job_at_a_time() {
        let (a, _ra) = job(1, 4);
        let (b, _rb) = job(1, 4);
        let mut jobs = VecDeque::from([a, b]);
        let unbatched = BatchPolicy {
            batchable: false,
            ..policy(16, 0)
        };
        assert_eq!(
            batch_rows(take_batch(&mut jobs, unbatched, Instant::now())),
            vec![1]
        );
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn fast_runs_go_inline_and_slow_ones_to_a_thread() {
        assert_eq!(
            Placement::for_run_time(Duration::from_micros(20)),
            Placement::Inline
        );
        assert_eq!(Placement::for_run_time(INLINE_RUN_LIMIT), Placement::Inline);
        assert_eq!(
            Placement::for_run_time(Duration::from_millis(5)),
            Placement::Thread
        );
    }
}
