//! `make bench-stream`: `sluice-server stream` against raw batched
//! `session.run` on the same model and thread, on a real Kafka broker, and
//! its end-to-end latency at a steady rate below saturation.
//!
//! The model is the `wide` fixture (16 features in, 4 logits out), with
//! `max_batch_size` set to the micro-batch size; each event is a flat JSON
//! row of its 16 features. The worker runs with one
//! ONNX Runtime thread; `make bench-stream` pins this process, and so the
//! worker, to one core, and the broker runs on the other.
//!
//! - Throughput: the events are written first, then one worker predicts them
//!   all; records per second is taken from the predictions' own timestamps
//!   (first to last), so the worker's start-up is not counted. Once exactly
//!   once (a transaction per micro-batch), once at least once.
//! - Latency: a fresh worker on fresh topics; events are written at a fixed
//!   rate, and each prediction's arrival at a `read_committed` consumer is
//!   timed against its event's send, both in this process.
//!
//! Usage: `bench_stream SLUICE_SERVER BOOTSTRAP` (`make bench-stream` starts
//! a broker with e2e/kafka/kafka.sh and passes its address).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

mod common;
#[path = "common/kafka.rs"]
mod kafka;
use kafka::{config, send};

const EVENTS: usize = 200_000;
const WIDTH: usize = 16;
const PARTITIONS: i32 = 4;
const BATCH: usize = 512;
const STEADY_RATE: usize = 2_000;
const STEADY_SECONDS: usize = 10;

fn create_topics(bootstrap: &str, names: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = config(bootstrap, &[]).create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for result in runtime.block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create {topic}: {code}"))?;
    }
    Ok(())
}

/// Seeded rows of the model's features.
fn features(rows: usize) -> Vec<f32> {
    let mut random = fastrand::Rng::with_seed(7);
    (0..rows * WIDTH)
        .map(|_| ((random.f32() * 4.0 - 2.0) * 1e4).round() / 1e4)
        .collect()
}

fn row_json(row: &[f32]) -> String {
    let values: Vec<String> = row.iter().map(f32::to_string).collect();
    format!(r#"{{"input": [{}]}}"#, values.join(", "))
}

fn worker(
    binary: &Path,
    model: &Path,
    bootstrap: &str,
    topics: (&str, &str),
    extra: &[&str],
) -> anyhow::Result<Child> {
    Command::new(binary)
        .args(["stream", "--model"])
        .arg(model)
        .args([
            "--brokers",
            bootstrap,
            "--input-topic",
            topics.0,
            "--output-topic",
            topics.1,
            "--group",
            &format!("bench-{}", topics.0),
            "--threads",
            "1",
            "--max-batch-records",
            &BATCH.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start sluice-server stream")
}

fn reader(bootstrap: &str, topic: &str) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = config(
        bootstrap,
        &[
            ("group.id", "bench-reader"),
            ("isolation.level", "read_committed"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Predictions per second of one worker over `EVENTS` events already written.
fn throughput(
    binary: &Path,
    model: &Path,
    bootstrap: &str,
    rows: &[f32],
    delivery: &str,
) -> anyhow::Result<f64> {
    let run = format!("{delivery}-{}", std::process::id());
    let (input, output) = (format!("events-{run}"), format!("predictions-{run}"));
    create_topics(bootstrap, &[&input, &output])?;
    let producer: BaseProducer = config(bootstrap, &[("linger.ms", "20")]).create()?;
    for (i, row) in rows.chunks(WIDTH).enumerate() {
        send(&producer, &input, &i.to_string(), &row_json(row));
    }
    producer.flush(Duration::from_secs(120))?;
    let mut child = worker(
        binary,
        model,
        bootstrap,
        (&input, &output),
        &["--delivery", delivery, "--stop-after", &EVENTS.to_string()],
    )?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the {delivery} worker failed: {status}");
    }
    let consumer = reader(bootstrap, &output)?;
    let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0usize);
    let started = Instant::now();
    while count < EVENTS && started.elapsed() < Duration::from_secs(120) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let at = message.timestamp().to_millis().unwrap_or(0);
            first = first.min(at);
            last = last.max(at);
            count += 1;
        }
    }
    if count < EVENTS {
        bail!("only {count} of {EVENTS} predictions arrived");
    }
    Ok(count as f64 / ((last - first).max(1) as f64 / 1000.0))
}

/// p50, p99 and max milliseconds from send to a committed prediction, at
/// `STEADY_RATE` events per second.
fn latency(
    binary: &Path,
    model: &Path,
    bootstrap: &str,
    rows: &[f32],
) -> anyhow::Result<(f64, f64, f64)> {
    let run = format!("steady-{}", std::process::id());
    let (input, output) = (format!("events-{run}"), format!("predictions-{run}"));
    create_topics(bootstrap, &[&input, &output])?;
    let producer: BaseProducer = config(bootstrap, &[("linger.ms", "0")]).create()?;
    let consumer = reader(bootstrap, &output)?;
    let mut child = worker(binary, model, bootstrap, (&input, &output), &[])?;
    // One event to wait for: the worker has loaded, joined and predicted.
    send(&producer, &input, "warm-up", &row_json(&rows[..WIDTH]));
    let started = Instant::now();
    loop {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the worker never answered");
        }
    }
    let total = STEADY_RATE * STEADY_SECONDS;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let writer = {
        let sent = Arc::clone(&sent);
        let rows = rows.to_vec();
        let input = input.clone();
        std::thread::spawn(move || {
            let interval = Duration::from_secs_f64(1.0 / STEADY_RATE as f64);
            let start = Instant::now();
            for i in 0..total {
                let due = start + interval * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let row = &rows[(i % (rows.len() / WIDTH)) * WIDTH..][..WIDTH];
                sent.lock().unwrap()[i] = Some(Instant::now());
                send(&producer, &input, &i.to_string(), &row_json(row));
            }
            producer.flush(Duration::from_secs(30)).ok();
        })
    };
    let mut millis = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(STEADY_SECONDS as u64 + 60);
    while millis.len() < total && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let arrived = Instant::now();
            let key = std::str::from_utf8(message.key().unwrap_or_default()).unwrap_or("");
            if let Ok(i) = key.parse::<usize>()
                && let Some(sent_at) = sent.lock().unwrap()[i]
            {
                millis.push(arrived.duration_since(sent_at).as_secs_f64() * 1000.0);
            }
        }
    }
    writer.join().expect("the writer thread");
    child.kill().ok();
    child.wait().ok();
    if millis.len() < total {
        bail!("only {} of {total} predictions arrived", millis.len());
    }
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() - 1) as f64 * q) as usize];
    Ok((at(0.5), at(0.99), millis[millis.len() - 1]))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, bootstrap] = args.as_slice() else {
        bail!("usage: bench_stream SLUICE_SERVER BOOTSTRAP");
    };
    let binary = PathBuf::from(binary);
    let onnx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/wide/1/model.onnx");
    // The model folder the workers run: the fixture, with a batcher that may
    // run a whole micro-batch at once, as raw session.run does.
    let model =
        std::env::temp_dir().join(format!("sluice-bench-stream-{}/wide", std::process::id()));
    std::fs::create_dir_all(model.join("1"))?;
    std::fs::copy(&onnx, model.join("1/model.onnx"))?;
    std::fs::write(
        model.join("config.yaml"),
        format!("max_batch_size: {BATCH}\n"),
    )?;
    let rows = features(EVENTS);
    let raw = common::raw_rows_per_second(&onnx, &rows, WIDTH, BATCH)?;
    let exactly_once = throughput(&binary, &model, bootstrap, &rows, "exactly-once")?;
    let at_least_once = throughput(&binary, &model, bootstrap, &rows, "at-least-once")?;
    let (p50, p99, max) = latency(&binary, &model, bootstrap, &rows)?;
    println!(
        "stream over {EVENTS} events of JSON (16 features), model wide, 1 ONNX Runtime thread, micro-batches of up to {BATCH}, one core"
    );
    println!("  raw session.run (parsed rows in memory):  {raw:>10.0} rows/s");
    println!(
        "  sluice-server stream, exactly-once:       {exactly_once:>10.0} records/s  = {:.1}% of raw",
        100.0 * exactly_once / raw
    );
    println!(
        "  sluice-server stream, at-least-once:      {at_least_once:>10.0} records/s  = {:.1}% of raw",
        100.0 * at_least_once / raw
    );
    println!(
        "end-to-end latency at {STEADY_RATE} events/s for {STEADY_SECONDS} s (send to committed prediction, exactly-once, linger 20 ms):"
    );
    println!("  p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms");
    std::fs::remove_dir_all(model.parent().expect("a temporary folder"))?;
    Ok(())
}
