//! The worker's loop: read a micro-batch, answer every record through the
//! model, write the answers and commit, then the next.
//!
//! Everything happens on one thread, in order, so no record is in flight
//! while the consumer is polled: a rebalance (served inside `poll`) can only
//! find a micro-batch still being read, which it drops, rewinding its
//! partitions to the batch's first offsets. A micro-batch whose commit fails
//! is aborted and read again from the same offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{
    ConsumerCallbacks, ProducerCallbacks, consumer_settings, producer_settings, transactional_id,
};
use super::headers::{self, Refusal, Source};
use super::metrics::StreamMetrics;
use super::model::{self, Loaded};
use super::record::Reader;
use super::{Delivery, StreamError, StreamRequest, Summary};
use crate::error::InferError;
use crate::metrics::Metrics;
use crate::model::ModelVersion;

/// How long a broker call (commit, seek, transaction step) may take.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle poll waits before the loop checks for a stop.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long one wait for delivery reports lasts (rdkafka's `poll` waits
/// out its whole timeout, events or not).
const DRAIN_POLL: Duration = Duration::from_millis(1);
/// How long a failed micro-batch waits before it is read again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs a worker until SIGTERM or SIGINT (or `stop_after` records). The
/// summary holds the counts whatever happened, the error when it failed.
pub fn run(request: &StreamRequest) -> (Summary, Result<(), StreamError>) {
    let started = Instant::now();
    let mut summary = Summary::default();
    let scratch = std::env::temp_dir().join(format!("sluice-stream-{}", std::process::id()));
    let outcome = run_worker(request, &mut summary, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    summary.seconds = started.elapsed().as_secs_f64();
    (summary, outcome)
}

fn run_worker(
    request: &StreamRequest,
    summary: &mut Summary,
    scratch: &std::path::Path,
) -> Result<(), StreamError> {
    check(request)?;
    let metrics = Metrics::new();
    let stream_metrics = StreamMetrics::register(metrics.registry());
    let readiness = request
        .metrics_address
        .map(|address| {
            crate::metrics::serve(address, metrics.registry().clone())
                .map_err(|e| StreamError::Usage(format!("--metrics-address {address}: {e}")))
        })
        .transpose()?;
    let stop = stop_on_signal()?;
    let Loaded { version, features } = model::load(request, &metrics, scratch)?;
    let serving = version.serving().map_err(|e| StreamError::Model {
        model: request.model.clone(),
        message: e.to_string(),
    })?;
    let features = if request.features.is_empty() {
        features
    } else {
        request.features.clone()
    };
    let reader = Reader::new(&serving.inputs, &serving.outputs, features);
    let consumer: BaseConsumer<ConsumerCallbacks> = client_config(consumer_settings(request)?)
        .create_with_context(ConsumerCallbacks::new(
            &request.input_topic,
            stream_metrics.lag.clone(),
            stream_metrics.partitions.clone(),
        ))
        .map_err(|e| StreamError::Client(format!("cannot create the consumer: {e}")))?;
    let transactional_id = transactional_id(request);
    // Delivery reports are served on this thread (`Worker::drain`) before
    // every commit and abort.
    let producer: BaseProducer<ProducerCallbacks> =
        client_config(producer_settings(request, &transactional_id)?)
            .create_with_context(ProducerCallbacks::default())
            .map_err(|e| StreamError::Client(format!("cannot create the producer: {e}")))?;
    if request.delivery == Delivery::ExactlyOnce {
        producer.init_transactions(BROKER_TIMEOUT).map_err(|e| {
            StreamError::Client(format!(
                "cannot start transactions as '{transactional_id}': {e}"
            ))
        })?;
    }
    consumer
        .subscribe(&[request.input_topic.as_str()])
        .map_err(|e| {
            StreamError::Client(format!("cannot subscribe to {}: {e}", request.input_topic))
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StreamError::Client(format!("cannot start a runtime: {e}")))?;
    let model_label = format!("{}:{}", version.name, version.version);
    tracing::info!(
        model = %model_label,
        input = %request.input_topic,
        output = %request.output_topic,
        group = %request.group,
        delivery = ?request.delivery,
        transactional_id = %transactional_id,
        "stream worker started"
    );
    // Ready: the model answers and the worker has joined its group.
    if let Some(readiness) = &readiness {
        readiness.set_ready();
    }
    let mut worker = Worker {
        request,
        consumer,
        producer,
        reader,
        model: version,
        model_label,
        metrics: stream_metrics,
        runtime,
        summary,
    };
    while !stop.load(Ordering::Acquire)
        && request
            .stop_after
            .is_none_or(|limit| worker.summary.consumed < limit)
    {
        worker.step()?;
    }
    tracing::info!(consumed = worker.summary.consumed, "stream worker stopped");
    Ok(())
}

/// Refuses a request that cannot work.
fn check(request: &StreamRequest) -> Result<(), StreamError> {
    let usage = |message: &str| Err(StreamError::Usage(message.to_string()));
    if request.max_batch_records == 0 {
        return usage("--max-batch-records must be at least 1");
    }
    if request.max_attempts == 0 {
        return usage("--max-attempts must be at least 1");
    }
    let topics = [
        Some(&request.input_topic),
        Some(&request.output_topic),
        request.dlq_topic.as_ref(),
    ];
    if topics.iter().flatten().any(|t| t.is_empty()) {
        return usage("topic names must not be empty");
    }
    if request.output_topic == request.input_topic
        || request.dlq_topic.as_ref() == Some(&request.input_topic)
    {
        return usage("the output and dead-letter topics must differ from the input topic");
    }
    Ok(())
}

/// A flag that SIGTERM or SIGINT sets: the worker finishes and commits the
/// micro-batch in hand, then leaves its group.
fn stop_on_signal() -> Result<Arc<AtomicBool>, StreamError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StreamError::Client(format!("cannot start a runtime: {e}")))?;
    let (ready, registered) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                let _ = ready.send(());
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("stopping: finishing the micro-batch in hand");
                flag.store(true, Ordering::Release);
            });
        })
        .map_err(|e| StreamError::Client(format!("cannot start a thread: {e}")))?;
    registered
        .recv()
        .map_err(|_| StreamError::Client("cannot handle SIGTERM".into()))?;
    Ok(stop)
}

fn client_config(settings: Vec<(String, String)>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in settings {
        config.set(key, value);
    }
    config
}

/// What became of one record.
enum Outcome {
    /// The model answered: the prediction's value and its binary header length.
    Predicted(Vec<u8>, Option<usize>),
    /// No prediction: why.
    Refused(Refusal),
}

struct Worker<'a> {
    request: &'a StreamRequest,
    consumer: BaseConsumer<ConsumerCallbacks>,
    producer: BaseProducer<ProducerCallbacks>,
    reader: Reader,
    model: Arc<ModelVersion>,
    model_label: String,
    metrics: StreamMetrics,
    runtime: tokio::runtime::Runtime,
    summary: &'a mut Summary,
}

impl Worker<'_> {
    /// One micro-batch: read, answer, write and commit (or abort and rewind).
    fn step(&mut self) -> Result<(), StreamError> {
        let started = Instant::now();
        let batch = self.read_batch();
        if batch.is_empty() {
            return Ok(());
        }
        let read = started.elapsed();
        let outcomes = self
            .runtime
            .block_on(join_all(batch.iter().map(|message| self.answer(message))));
        let answered = started.elapsed();
        match self.write_and_commit(&batch, &outcomes) {
            Ok(()) => {
                tracing::debug!(
                    records = batch.len(),
                    ?read,
                    answer = ?(answered - read),
                    commit = ?(started.elapsed() - answered),
                    "micro-batch committed"
                );
                self.count(&batch, &outcomes);
                Ok(())
            }
            Err(Failure::Fatal(message)) => Err(StreamError::Fatal(message)),
            Err(Failure::Retry(message)) => {
                tracing::warn!(records = batch.len(), error = %message, "micro-batch not committed; reading it again");
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                self.summary.aborted += 1;
                if self.request.delivery == Delivery::ExactlyOnce {
                    self.abort()?;
                }
                self.rewind(&batch);
                std::thread::sleep(RETRY_PAUSE);
                Ok(())
            }
        }
    }

    /// Reads up to `max_batch_records` records: those already fetched, and
    /// those that arrive within `linger` of the first; an empty batch after an
    /// idle poll.
    fn read_batch(&self) -> Vec<OwnedMessage> {
        let mut batch: Vec<OwnedMessage> = Vec::new();
        let mut revocations = self.consumer.context().revocations();
        let mut deadline: Option<Instant> = None;
        while batch.len() < self.request.max_batch_records {
            // Past the linger, records already fetched still join the batch;
            // only waiting for new ones stops.
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let wait = match deadline {
                None => IDLE_POLL,
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            };
            let polled = self.consumer.poll(wait);
            if self.consumer.context().revocations() != revocations {
                // The batch's partitions may be another worker's now.
                self.rewind(&batch);
                batch.clear();
                deadline = None;
                revocations = self.consumer.context().revocations();
            }
            match polled {
                Some(Ok(message)) => {
                    batch.push(message.detach());
                    deadline.get_or_insert_with(|| Instant::now() + self.request.linger);
                }
                Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                None if batch.is_empty() => return batch,
                None if expired => break,
                None => {}
            }
        }
        batch
    }

    /// Answers one record: refused at once when it cannot be read or does
    /// not fit the model; tried up to `max_attempts` times when the model
    /// fails on it.
    async fn answer(&self, message: &OwnedMessage) -> Outcome {
        let Some(value) = message.payload() else {
            return refused("invalid", "the record has no value".into(), 0);
        };
        let header_length = header(message, headers::HEADER_LENGTH);
        let mut attempts = 0;
        loop {
            let decoded = match self.reader.decode(value, header_length) {
                Ok(decoded) => decoded,
                Err(reason) => return refused("invalid", reason, attempts),
            };
            attempts += 1;
            match self.reader.predict(&self.model, decoded).await {
                Ok((body, length)) => return Outcome::Predicted(body, length),
                Err(error) if is_the_record(&error) => {
                    return refused("invalid", error.to_string(), attempts);
                }
                Err(error) if attempts >= self.request.max_attempts => {
                    return refused("model", error.to_string(), attempts);
                }
                Err(_) => {
                    self.metrics.retries.inc();
                    tokio::time::sleep(Duration::from_millis(50 << attempts.min(6))).await;
                }
            }
        }
    }

    /// Writes every prediction and dead letter, then commits them with the
    /// batch's offsets (one transaction), or, at least once, commits the
    /// offsets once the broker has acknowledged every record.
    fn write_and_commit(
        &self,
        batch: &[OwnedMessage],
        outcomes: &[Outcome],
    ) -> Result<(), Failure> {
        let exactly_once = self.request.delivery == Delivery::ExactlyOnce;
        if exactly_once {
            self.producer.begin_transaction().map_err(failure)?;
        }
        for (message, outcome) in batch.iter().zip(outcomes) {
            self.write(message, outcome)?;
        }
        let offsets = next_offsets(batch);
        if exactly_once {
            let group = self
                .consumer
                .group_metadata()
                .ok_or_else(|| Failure::Retry("the consumer has no group metadata".into()))?;
            self.producer
                .send_offsets_to_transaction(&offsets, &group, BROKER_TIMEOUT)
                .map_err(failure)?;
            self.drain()?;
            self.producer
                .commit_transaction(BROKER_TIMEOUT)
                .map_err(failure)?;
        } else {
            self.drain()?;
            if let Some(error) = self.producer.context().take_failure() {
                return Err(Failure::Retry(format!(
                    "a record was not delivered: {error}"
                )));
            }
            if let Err(error) = self.consumer.commit(&offsets, CommitMode::Sync) {
                // Every answer is written: reading them again would only
                // repeat them, which at-least-once allows.
                tracing::warn!(%error, "offsets not committed; a restart repeats this micro-batch");
            }
        }
        // Stored offsets are what the lag gauge counts from.
        let _ = self.consumer.store_offsets(&offsets);
        Ok(())
    }

    /// Waits until the broker has answered every record produced, serving
    /// their delivery reports. rdkafka's own `flush` (which
    /// `commit_transaction` calls first) polls in steps of 100 ms, and its
    /// `poll` always waits out its timeout, which would add a tenth of a
    /// second to every micro-batch; after this, `flush` finds nothing to do.
    fn drain(&self) -> Result<(), Failure> {
        let started = Instant::now();
        while self.producer.in_flight_count() > 0 {
            if started.elapsed() > BROKER_TIMEOUT {
                return Err(Failure::Retry(format!(
                    "{} records not acknowledged within {BROKER_TIMEOUT:?}",
                    self.producer.in_flight_count()
                )));
            }
            self.producer.poll(DRAIN_POLL);
        }
        Ok(())
    }

    /// Queues one record's prediction or dead letter.
    fn write(&self, message: &OwnedMessage, outcome: &Outcome) -> Result<(), Failure> {
        let source = Source {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let (topic, payload, pairs): (&str, &[u8], _) = match outcome {
            Outcome::Predicted(body, length) => (
                self.request.output_topic.as_str(),
                body.as_slice(),
                headers::prediction(&source, &self.model_label, *length),
            ),
            Outcome::Refused(refusal) => match &self.request.dlq_topic {
                Some(dlq) => (
                    dlq.as_str(),
                    message.payload().unwrap_or_default(),
                    headers::dead_letter(&source, &self.model_label, refusal),
                ),
                None => {
                    tracing::warn!(
                        topic = %source.topic,
                        partition = source.partition,
                        offset = source.offset,
                        reason = %refusal.message,
                        "record skipped (no --dlq-topic)"
                    );
                    return Ok(());
                }
            },
        };
        let mut owned = OwnedHeaders::new_with_capacity(pairs.len());
        for (key, value) in &pairs {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .payload(payload)
            .headers(owned);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    // The producer's queue is full: let it drain, then retry.
                    self.producer.poll(DRAIN_POLL);
                    record = returned;
                }
                Err((error, _)) => return Err(failure(error)),
            }
        }
    }

    /// Aborts the open transaction, retrying while the broker cannot be
    /// reached; gives up (the process exits and is restarted) when the
    /// producer is fenced or broken. The records still queued are purged
    /// first, and their (failed) delivery reports served, as an abort needs.
    fn abort(&self) -> Result<(), StreamError> {
        let started = Instant::now();
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let _ = self.drain();
        let _ = self.producer.context().take_failure();
        loop {
            match self.producer.abort_transaction(BROKER_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    if let Failure::Fatal(message) = failure(error.clone()) {
                        return Err(StreamError::Fatal(message));
                    }
                    if started.elapsed() > 4 * BROKER_TIMEOUT {
                        return Err(StreamError::Fatal(format!(
                            "cannot abort the transaction: {error}"
                        )));
                    }
                    tracing::warn!(%error, "cannot abort the transaction yet");
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }

    /// Seeks each partition of `batch` back to the batch's first offset in
    /// it, so that its records are read again (a partition this worker no
    /// longer owns is skipped: its new owner reads from the committed offset).
    fn rewind(&self, batch: &[OwnedMessage]) {
        let mut first: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for message in batch {
            first
                .entry((message.topic(), message.partition()))
                .and_modify(|offset| *offset = (*offset).min(message.offset()))
                .or_insert(message.offset());
        }
        for ((topic, partition), offset) in first {
            if let Err(error) =
                self.consumer
                    .seek(topic, partition, Offset::Offset(offset), BROKER_TIMEOUT)
            {
                tracing::debug!(%topic, partition, %error, "not rewound (no longer assigned)");
            }
        }
    }

    /// Counts a committed micro-batch.
    fn count(&mut self, batch: &[OwnedMessage], outcomes: &[Outcome]) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut predicted = 0;
        let mut refused = 0;
        for (message, outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Predicted(..) => predicted += 1,
                Outcome::Refused(_) => refused += 1,
            }
            if let Some(created) = message.timestamp().to_millis() {
                self.metrics
                    .latency
                    .observe((now_ms - created).max(0) as f64 / 1000.0);
            }
        }
        let (dead_lettered, skipped) = match self.request.dlq_topic {
            Some(_) => (refused, 0),
            None => (0, refused),
        };
        let records = &self.metrics.records;
        records
            .with_label_values(&["consumed"])
            .inc_by(batch.len() as u64);
        records.with_label_values(&["produced"]).inc_by(predicted);
        records
            .with_label_values(&["dead_lettered"])
            .inc_by(dead_lettered);
        records.with_label_values(&["skipped"]).inc_by(skipped);
        self.metrics.batch_records.observe(batch.len() as f64);
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.summary.consumed += batch.len() as u64;
        self.summary.produced += predicted;
        self.summary.dead_lettered += dead_lettered;
        self.summary.skipped += skipped;
        self.summary.batches += 1;
    }
}

/// Why a micro-batch was not committed.
enum Failure {
    /// Abort it and read it again.
    Retry(String),
    /// The producer cannot go on (fenced, or a fatal error): exit.
    Fatal(String),
}

/// A Kafka error as a [`Failure`]: fatal when librdkafka says so.
fn failure(error: KafkaError) -> Failure {
    let fatal = match &error {
        KafkaError::Transaction(inner) => inner.is_fatal(),
        _ => false,
    };
    if fatal {
        Failure::Fatal(error.to_string())
    } else {
        Failure::Retry(error.to_string())
    }
}

/// For each partition of `batch`, the offset after its last record: what
/// the group commits.
fn next_offsets(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for message in batch {
        let after = message.offset() + 1;
        next.entry((message.topic(), message.partition()))
            .and_modify(|offset| *offset = (*offset).max(after))
            .or_insert(after);
    }
    let mut list = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("a valid offset");
    }
    list
}

/// A header's value, by name.
fn header<'m>(message: &'m OwnedMessage, name: &str) -> Option<&'m [u8]> {
    let headers = message.headers()?;
    (0..headers.count())
        .filter_map(|index| headers.try_get(index))
        .find(|header| header.key == name)
        .and_then(|header| header.value)
}

/// Whether the model refused the record itself (it does not fit), rather
/// than failing on it: trying again would not help.
fn is_the_record(error: &InferError) -> bool {
    matches!(
        error,
        InferError::InvalidInput(_) | InferError::TooLarge(_) | InferError::NotFound(_)
    )
}

fn refused(kind: &'static str, message: String, attempts: u32) -> Outcome {
    Outcome::Refused(Refusal {
        kind,
        message,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "events".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn the_group_commits_the_offset_after_each_partitions_last_record() {
        let batch = [message(0, 7), message(1, 3), message(0, 9), message(0, 8)];
        let offsets = next_offsets(&batch);
        let committed: Vec<(i32, Offset)> = offsets
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(committed, [(0, Offset::Offset(10)), (1, Offset::Offset(4))]);
    }

    #[test]
    fn requests_that_cannot_work_are_refused() {
        let request = StreamRequest {
            model: "m".into(),
            brokers: "localhost:9092".into(),
            input_topic: "in".into(),
            output_topic: "in".into(),
            dlq_topic: None,
            group: "g".into(),
            delivery: Delivery::ExactlyOnce,
            transactional_id: None,
            max_batch_records: 64,
            linger: Duration::from_millis(5),
            max_attempts: 3,
            features: Vec::new(),
            properties: Vec::new(),
            properties_file: None,
            threads: 0,
            metrics_address: None,
            stop_after: None,
        };
        let error = check(&request).unwrap_err().to_string();
        assert!(
            error.contains("must differ from the input topic"),
            "{error}"
        );
        let fixed = StreamRequest {
            output_topic: "out".into(),
            ..request.clone()
        };
        assert!(check(&fixed).is_ok());
        let empty = StreamRequest {
            max_batch_records: 0,
            ..fixed
        };
        assert!(check(&empty).is_err());
    }
}
