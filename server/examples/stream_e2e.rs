//! The producer and the auditor of the streaming e2e on the local cluster
//! (e2e/operator/stream.sh): it writes the events and accounts for every one.
//!
//! - `stream_e2e produce BOOTSTRAP TOPIC FROM TO`: events `e<FROM>` ..
//!   `e<TO - 1>`, flat rows of the iris fixture's 4 features, every 997th a
//!   record that is not JSON; idempotent, acknowledged by every replica.
//! - `stream_e2e account BOOTSTRAP OUTPUT DLQ EVENTS`: reads both topics
//!   `read_committed` from the start until every event `e0` .. `e<EVENTS - 1>`
//!   has an outcome (or nothing new came for 60 s), then 3 s more so that a
//!   duplicate would show; prints one JSON line (predictions, dead letters,
//!   lost, duplicated, misplaced: a malformed event predicted or a good one
//!   dead-lettered) and exits 1 unless each event had exactly its one outcome.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

#[path = "common/kafka.rs"]
mod kafka;
use kafka::{config, send};

/// Every this many events, one is malformed.
const BAD_EVERY: u64 = 997;

/// Event `i`'s value: a row of iris features, or (every [`BAD_EVERY`]th)
/// bytes that are not JSON.
fn event(i: u64) -> String {
    if i.is_multiple_of(BAD_EVERY) {
        return "not json".to_string();
    }
    let x = (i % 1000) as f32 / 1000.0;
    format!(
        r#"{{"float_input": [{}, {}, {}, {}]}}"#,
        4.3 + 3.6 * x,
        2.0 + 2.4 * x,
        1.0 + 5.9 * (1.0 - x),
        0.1 + 2.4 * x
    )
}

fn produce(bootstrap: &str, topic: &str, from: u64, to: u64) -> anyhow::Result<()> {
    let producer: BaseProducer = config(
        bootstrap,
        &[("enable.idempotence", "true"), ("linger.ms", "5")],
    )
    .create()?;
    for i in from..to {
        send(&producer, topic, &format!("e{i}"), &event(i));
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Every record of `topics`' partitions, committed ones only, from the start.
fn reader(bootstrap: &str, topics: &[&str]) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = config(
        bootstrap,
        &[
            ("group.id", "stream-e2e-audit"),
            ("isolation.level", "read_committed"),
            ("enable.auto.commit", "false"),
        ],
    )
    .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        if topics.contains(&topic.name()) {
            for partition in topic.partitions() {
                assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn account(bootstrap: &str, output: &str, dlq: &str, events: u64) -> anyhow::Result<bool> {
    let consumer = reader(bootstrap, &[output, dlq])?;
    // Outcomes per event key: (predictions, dead letters).
    let mut outcomes: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
    // Events of 0 .. events with an outcome so far.
    let mut answered = 0;
    let mut last_new = Instant::now();
    let mut complete_at: Option<Instant> = None;
    loop {
        if let Some(at) = complete_at {
            if at.elapsed() > Duration::from_secs(3) {
                break;
            }
        } else if last_new.elapsed() > Duration::from_secs(60) {
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.context("read")?;
        let key = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.strip_prefix('e')?.parse::<u64>().ok())
            .context("a record without an event key")?;
        let entry = outcomes.entry(key).or_default();
        if *entry == (0, 0) && key < events {
            answered += 1;
        }
        if message.topic() == dlq {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
        last_new = Instant::now();
        if complete_at.is_none() && answered == events {
            complete_at = Some(Instant::now());
        }
    }
    let predictions: u32 = outcomes.values().map(|o| o.0).sum();
    let dead_letters: u32 = outcomes.values().map(|o| o.1).sum();
    let lost = (0..events).filter(|i| !outcomes.contains_key(i)).count();
    let duplicated = outcomes.values().filter(|(p, d)| p + d > 1).count();
    let misplaced = outcomes
        .iter()
        .filter(|(i, (p, d))| {
            let malformed = i.is_multiple_of(BAD_EVERY);
            (malformed && *p > 0) || (!malformed && *d > 0)
        })
        .count();
    println!(
        "{}",
        serde_json::json!({
            "events": events,
            "predictions": predictions,
            "deadLetters": dead_letters,
            "lost": lost,
            "duplicated": duplicated,
            "misplaced": misplaced,
        })
    );
    Ok(lost == 0 && duplicated == 0 && misplaced == 0)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |at: usize| -> anyhow::Result<u64> {
        args.get(at)
            .context("missing argument")?
            .parse()
            .context("not a number")
    };
    match args.first().map(String::as_str) {
        Some("produce") if args.len() == 5 => produce(&args[1], &args[2], number(3)?, number(4)?),
        Some("account") if args.len() == 5 => {
            if account(&args[1], &args[2], &args[3], number(4)?)? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        _ => bail!(
            "usage: stream_e2e produce BOOTSTRAP TOPIC FROM TO | account BOOTSTRAP OUTPUT DLQ EVENTS"
        ),
    }
}
