//! `sluice-server stream` against a real Kafka 4.4 broker (tests/common/kafka.rs):
//! every event gets exactly one prediction or dead letter, whatever crashes.
//!
//! The events are flat rows for the iris fixture (4 features), keyed `e<i>`,
//! with known malformed ones among them. The workers are real processes; one
//! is SIGKILLed mid-stream and the broker is restarted once. The outputs are
//! read back by a `read_committed` consumer and checked by key and by source
//! offset (the `sluice-source-*` headers).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kafka::{self, KafkaBroker};
use common::{Repository, server_binary};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: u32 = 4;

/// The malformed events: every `BAD_EVERY`th, cycling through the kinds of
/// bad record a producer sends.
const BAD_EVERY: usize = 997;

/// The value of event `i`: a row of iris features, or a malformed record.
fn event(i: usize) -> Option<Vec<u8>> {
    if i.is_multiple_of(BAD_EVERY) {
        return match (i / BAD_EVERY) % 5 {
            0 => Some(b"\x00\x01 not json".to_vec()),
            1 => Some(br#"{"float_input": [5.1, 3.5]}"#.to_vec()),
            2 => Some(br#"{"float_input": [5.1, "wide", 1.4, 0.2]}"#.to_vec()),
            3 => Some(
                br#"{"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4]}]}"#
                    .to_vec(),
            ),
            _ => None,
        };
    }
    let x = (i % 1000) as f32 / 1000.0;
    Some(
        format!(
            r#"{{"float_input": [{}, {}, {}, {}]}}"#,
            4.3 + 3.6 * x,
            2.0 + 2.4 * x,
            1.0 + 5.9 * (1.0 - x),
            0.1 + 2.4 * x
        )
        .into_bytes(),
    )
}

fn bad_keys(events: usize) -> BTreeSet<String> {
    (0..events)
        .filter(|i| i.is_multiple_of(BAD_EVERY))
        .map(|i| format!("e{i}"))
        .collect()
}

fn client(bootstrap: &str, settings: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    config
}

/// Writes `events` events to `topic`, idempotently, and waits for the acks.
fn produce_events(bootstrap: &str, topic: &str, events: usize) {
    let producer: BaseProducer = client(
        bootstrap,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
    )
    .create()
    .unwrap();
    for i in 0..events {
        let key = format!("e{i}");
        let value = event(i);
        let mut record = BaseRecord::<str, [u8]>::to(topic).key(&key);
        if let Some(value) = &value {
            record = record.payload(value.as_slice());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    producer.poll(Duration::from_millis(50));
                    record = returned;
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// One record read back.
#[derive(Debug, Clone)]
struct Out {
    key: String,
    value: Vec<u8>,
    headers: HashMap<String, String>,
}

impl Out {
    /// The input record it answers: (partition, offset).
    fn source(&self) -> (i32, i64) {
        (
            self.headers["sluice-source-partition"].parse().unwrap(),
            self.headers["sluice-source-offset"].parse().unwrap(),
        )
    }
}

/// Reads `topic` from the start (committed records only) until `enough` says
/// so, then for `settle` more, so that any late duplicate shows.
fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    enough: impl Fn(usize) -> bool,
    limit: Duration,
    settle: Duration,
) -> Vec<Out> {
    kafka::read_topic(bootstrap, topic, partitions, enough, limit, settle)
        .iter()
        .map(|message| Out {
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            value: message.payload().unwrap_or_default().to_vec(),
            headers: message.headers().map_or_else(HashMap::new, |h| {
                (0..h.count())
                    .map(|i| h.get(i))
                    .map(|header| {
                        (
                            header.key.to_string(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            }),
        })
        .collect()
}

/// A `sluice-server stream` process, killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(name: &str, model: &std::path::Path, bootstrap: &str, extra: &[&str]) -> Worker {
        let log =
            std::env::temp_dir().join(format!("sluice-stream-{name}-{}.log", std::process::id()));
        let child = Command::new(server_binary())
            .args(["stream", "--model"])
            .arg(model)
            .args([
                "--brokers",
                bootstrap,
                "--input-topic",
                "events",
                "--output-topic",
                "predictions",
                "--dlq-topic",
                "dead-letters",
                "--group",
                "iris-stream",
                "--max-batch-records",
                "256",
                "--threads",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start sluice-server stream");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the summary line it printed; fails the test unless it
    /// exited with success.
    fn stop(mut self) -> serde_json::Value {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the worker did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(self.child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        let summary = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("no summary ({e}): {stdout}\n{}", self.log()));
        assert!(status.success(), "{status}: {summary}\n{}", self.log());
        summary
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn iris() -> Repository {
    Repository::new("stream").with_model("iris", "iris", "max_batch_size: 256\n")
}

fn topics(kafka: &KafkaBroker) {
    kafka.create_topic("events", PARTITIONS);
    kafka.create_topic("predictions", PARTITIONS);
    kafka.create_topic("dead-letters", 1);
}

/// Checks that every event has exactly one prediction or dead letter, that
/// the dead letters are exactly the malformed events, with their reason, and
/// that the predictions are iris answers. Returns the duplicates.
fn account(events: usize, predictions: &[Out], dead: &[Out]) -> usize {
    let bad = bad_keys(events);
    let mut by_source: BTreeMap<(i32, i64), Vec<&Out>> = BTreeMap::new();
    for out in predictions.iter().chain(dead) {
        by_source.entry(out.source()).or_default().push(out);
    }
    let duplicates: usize = by_source.values().map(|outs| outs.len() - 1).sum();
    let keys: BTreeSet<&str> = predictions
        .iter()
        .chain(dead)
        .map(|o| o.key.as_str())
        .collect();
    let missing: Vec<String> = (0..events)
        .map(|i| format!("e{i}"))
        .filter(|key| !keys.contains(key.as_str()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "events with no answer: {missing:?}");
    let dead_keys: BTreeSet<String> = dead.iter().map(|o| o.key.clone()).collect();
    assert_eq!(
        dead_keys, bad,
        "the dead letters are exactly the malformed events"
    );
    assert!(predictions.iter().all(|o| !bad.contains(&o.key)));
    for letter in dead {
        assert_eq!(letter.headers["sluice-error-kind"], "invalid", "{letter:?}");
        assert!(!letter.headers["sluice-error"].is_empty());
        assert_eq!(letter.headers["sluice-source-topic"], "events");
    }
    let letter_of = |i: usize| {
        &dead
            .iter()
            .find(|o| o.key == format!("e{i}"))
            .unwrap()
            .headers["sluice-error"]
    };
    assert!(
        letter_of(BAD_EVERY).contains("2 feature columns"),
        "{}",
        letter_of(BAD_EVERY)
    );
    assert!(
        letter_of(2 * BAD_EVERY).contains("'float_input_1'"),
        "{}",
        letter_of(2 * BAD_EVERY)
    );
    assert!(
        letter_of(4 * BAD_EVERY).contains("no value"),
        "{}",
        letter_of(4 * BAD_EVERY)
    );
    for prediction in predictions.iter().step_by(97) {
        let answer: serde_json::Value = serde_json::from_slice(&prediction.value).unwrap();
        let label = answer["label"].as_i64().unwrap();
        assert!((0..3).contains(&label), "{answer}");
        let total: f64 = answer["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{answer}");
        assert_eq!(prediction.headers["sluice-model"], "iris:1");
    }
    duplicates
}

/// Reads the predictions and the dead letters of `events` events, for
/// `settle` past the expected counts, so that a duplicate would show.
fn read_outcomes(bootstrap: &str, events: usize, settle: Duration) -> (Vec<Out>, Vec<Out>) {
    let bad = bad_keys(events).len();
    let predictions = read_topic(
        bootstrap,
        "predictions",
        PARTITIONS,
        |n| n >= events - bad,
        Duration::from_secs(300),
        settle,
    );
    let dead = read_topic(
        bootstrap,
        "dead-letters",
        1,
        |n| n >= bad,
        Duration::from_secs(60),
        Duration::from_secs(1),
    );
    (predictions, dead)
}

/// Waits until `topic` holds at least `count` committed records.
fn wait_for(bootstrap: &str, topic: &str, count: usize) {
    read_topic(
        bootstrap,
        topic,
        PARTITIONS,
        |n| n >= count,
        Duration::from_secs(180),
        Duration::ZERO,
    );
}

#[test]
fn exactly_once_survives_a_killed_worker_a_rebalance_and_a_broker_restart() {
    const EVENTS: usize = 100_000;
    let mut kafka = KafkaBroker::start();
    topics(&kafka);
    let bootstrap = kafka.bootstrap();
    let repository = iris();
    let model = repository.dir.join("iris");
    produce_events(&bootstrap, "events", EVENTS);

    let mut first = Worker::start(
        "first",
        &model,
        &bootstrap,
        &["--transactional-id", "iris-a"],
    );
    let second = Worker::start(
        "second",
        &model,
        &bootstrap,
        &["--transactional-id", "iris-b"],
    );
    wait_for(&bootstrap, "predictions", EVENTS / 4);
    // A crash mid-transaction: its partitions move to the other worker, and
    // its replacement (same transactional id) aborts what it left open.
    first.kill();
    let replacement = Worker::start(
        "replacement",
        &model,
        &bootstrap,
        &["--transactional-id", "iris-a"],
    );
    wait_for(&bootstrap, "predictions", EVENTS * 3 / 5);
    kafka.stop();
    std::thread::sleep(Duration::from_secs(2));
    kafka.start_again();

    let (predictions, dead) = read_outcomes(&bootstrap, EVENTS, Duration::from_secs(3));
    let summary = second.stop();
    let replaced = replacement.stop();
    let duplicates = account(EVENTS, &predictions, &dead);
    println!(
        "exactly-once: {EVENTS} events, {} predictions, {} dead letters, {duplicates} duplicated, 0 lost; \
         summaries: {summary} {replaced}",
        predictions.len(),
        dead.len()
    );
    assert_eq!(duplicates, 0, "exactly-once wrote a record twice");
    assert_eq!(predictions.len() + dead.len(), EVENTS);
}

#[test]
fn at_least_once_loses_nothing_and_the_duplicates_are_counted() {
    const EVENTS: usize = 30_000;
    let kafka = KafkaBroker::start();
    topics(&kafka);
    let bootstrap = kafka.bootstrap();
    let repository = iris();
    let model = repository.dir.join("iris");
    produce_events(&bootstrap, "events", EVENTS);
    let mut first = Worker::start(
        "alo-first",
        &model,
        &bootstrap,
        &["--delivery", "at-least-once"],
    );
    wait_for(&bootstrap, "predictions", EVENTS / 10);
    first.kill();
    let second = Worker::start(
        "alo-second",
        &model,
        &bootstrap,
        &["--delivery", "at-least-once"],
    );
    let (predictions, dead) = read_outcomes(&bootstrap, EVENTS, Duration::from_secs(5));
    let summary = second.stop();
    let duplicates = account(EVENTS, &predictions, &dead);
    println!(
        "at-least-once: {EVENTS} events, 0 lost, {duplicates} duplicated by the kill \
         ({} predictions, {} dead letters); the second worker's summary: {summary}",
        predictions.len(),
        dead.len()
    );
}

#[test]
fn inference_requests_are_answered_with_protocol_responses_and_a_graceful_stop_commits() {
    let kafka = KafkaBroker::start();
    topics(&kafka);
    let bootstrap = kafka.bootstrap();
    let repository = iris();
    let model = repository.dir.join("iris");
    let producer: BaseProducer = client(&bootstrap, &[]).create().unwrap();
    let json = br#"{"id": "r1", "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}"#;
    producer
        .send(
            BaseRecord::<str, [u8]>::to("events")
                .key("json")
                .payload(json),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    // The binary extension: the JSON part's length in a header, raw FP32 after it.
    let header = br#"{"id": "r2", "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}], "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}}]}"#;
    let mut binary = header.to_vec();
    for value in [6.7f32, 3.0, 5.2, 2.3] {
        binary.extend_from_slice(&value.to_le_bytes());
    }
    let length = header.len().to_string();
    producer
        .send(
            BaseRecord::<str, [u8]>::to("events")
                .key("binary")
                .payload(&binary)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "inference-header-content-length",
                    value: Some(&length),
                })),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    let metrics_port = common::free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let worker = Worker::start(
        "protocol",
        &model,
        &bootstrap,
        &["--metrics-address", &metrics_address],
    );
    let answers = read_topic(
        &bootstrap,
        "predictions",
        PARTITIONS,
        |n| n >= 2,
        Duration::from_secs(120),
        Duration::ZERO,
    );
    // The probes a Deployment uses, and the partition count the operator's
    // autoscaler caps the workers at (from librdkafka's statistics, each second).
    let get = |path: &str| {
        let response = reqwest::blocking::get(format!("http://{metrics_address}{path}")).unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    assert_eq!(get("/v2/health/live").0, 200);
    assert_eq!(
        get("/v2/health/ready").0,
        200,
        "ready once it answers records"
    );
    let partitions = format!("sluice_stream_input_partitions{{topic=\"events\"}} {PARTITIONS}");
    let started = Instant::now();
    loop {
        let (_, metrics) = get("/metrics");
        if metrics.contains(&partitions) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no {partitions} in\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let summary = worker.stop();
    assert_eq!(summary["consumed"], 2, "{summary}");
    assert_eq!(summary["produced"], 2, "{summary}");
    let json_answer = answers.iter().find(|o| o.key == "json").unwrap();
    let response: serde_json::Value = serde_json::from_slice(&json_answer.value).unwrap();
    assert_eq!(response["model_name"], "iris");
    assert_eq!(response["id"], "r1");
    assert_eq!(response["outputs"][0]["name"], "label");
    let binary_answer = answers.iter().find(|o| o.key == "binary").unwrap();
    let json_length: usize = binary_answer.headers["inference-header-content-length"]
        .parse()
        .unwrap();
    let response: serde_json::Value =
        serde_json::from_slice(&binary_answer.value[..json_length]).unwrap();
    assert_eq!(response["id"], "r2");
    assert_eq!(response["outputs"][0]["parameters"]["binary_data_size"], 12);
    let probabilities: Vec<f32> = binary_answer.value[json_length..]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(probabilities.len(), 3);
    assert!(
        (probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-3,
        "{probabilities:?}"
    );

    // The offsets were committed at the stop: a new worker finds nothing to do.
    let again = Worker::start("protocol-again", &model, &bootstrap, &[]);
    std::thread::sleep(Duration::from_secs(8));
    let summary = again.stop();
    assert_eq!(summary["consumed"], 0, "{summary}");
}
