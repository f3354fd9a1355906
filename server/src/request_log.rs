//! Request logging: a sample of the inference requests served over REST and
//! gRPC, each with its response, mirrored to a Kafka topic as one JSON record
//! (the feed for retraining and offline evaluation).
//!
//! Logging never holds up or fails a request. Whether a request is logged is
//! drawn first (so requests left out of the sample cost one random number);
//! a logged one is encoded on the request's task and handed to librdkafka's
//! queue, which never blocks: when the queue is full (the broker is slow or
//! down) the record is dropped and counted. librdkafka's own thread sends the
//! queue, and a record not acknowledged within [`DELIVERY_TIMEOUT_MS`] is
//! given up and counted as failed, so memory stays bounded whatever the broker
//! does. Only requests the model answered are logged.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::stream::client::read_properties;
use crate::wire::nonfinite;

/// The topic records go to unless another is named.
pub const DEFAULT_TOPIC: &str = "sluice-requests";

/// The header naming the model that answered.
pub const MODEL_HEADER: &str = "sluice-model";

/// The header holding the version of the model that answered, in decimal.
pub const VERSION_HEADER: &str = "sluice-model-version";

/// How long a queued record may wait for the broker's acknowledgement before
/// it is given up (librdkafka's `message.timeout.ms`): a broker down longer
/// than this costs records, never memory.
pub const DELIVERY_TIMEOUT_MS: &str = "30000";

/// How long a shutting-down server waits for the records still queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcomes `sluice_request_log_records_total` counts.
pub const OUTCOMES: [&str; 3] = ["sent", "dropped", "failed"];

/// Where and how much to log.
#[derive(Debug, Clone)]
pub struct RequestLogOptions {
    /// The bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic records are written to.
    pub topic: String,
    /// The share of requests logged, from 0 to 1.
    pub sample_ratio: f64,
    /// Most records held while the broker is slow or down (librdkafka's
    /// `queue.buffering.max.messages`, within 64 MiB); more are dropped.
    pub max_queue: u32,
    /// librdkafka properties (`key=value`), applied last: TLS, SASL, tuning.
    pub properties: Vec<(String, String)>,
    /// A file of `key=value` librdkafka properties, applied before `properties`.
    pub properties_file: Option<PathBuf>,
}

/// Why the request log cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RequestLogError {
    /// The properties file cannot be read.
    #[error("--request-log-properties-file {0}")]
    Properties(String),
    /// librdkafka refused the settings.
    #[error("cannot create the request log's Kafka producer: {0}")]
    Client(#[from] KafkaError),
}

/// A sample ratio from the command line: a number from 0 to 1.
pub fn parse_sample_ratio(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .ok_or_else(|| format!("'{text}' is not a number from 0 to 1"))
}

/// A REST body as it went over the wire: its JSON part and its binary
/// section (empty unless the binary tensor extension was used).
#[derive(Debug, Clone, Copy)]
pub struct RestBody<'a> {
    /// The JSON part.
    pub json: &'a [u8],
    /// The binary section after it.
    pub binary: &'a [u8],
}

/// What was exchanged, as each protocol carries it.
#[derive(Debug, Clone, Copy)]
pub enum Bodies<'a> {
    /// REST: the request's body and the response's.
    Rest {
        /// The request body.
        request: RestBody<'a>,
        /// The response body.
        response: RestBody<'a>,
    },
    /// gRPC: the encoded `ModelInferRequest` and `ModelInferResponse`.
    Grpc {
        /// The request message.
        request: &'a [u8],
        /// The response message.
        response: &'a [u8],
    },
}

/// One answered inference request.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The model's name.
    pub model: &'a str,
    /// The version that answered.
    pub version: u64,
    /// The request's id, when it has one.
    pub id: Option<&'a str>,
    /// The request and the response.
    pub bodies: Bodies<'a>,
}

/// The request log: a sampler and a Kafka producer (clones share them).
#[derive(Clone)]
pub struct RequestLog {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    sample_ratio: f64,
    dropped: IntCounter,
}

impl RequestLog {
    /// Creates the producer (which connects in the background: a broker that
    /// is down now costs records, not the start) and registers
    /// `sluice_request_log_records_total` in `registry`.
    pub fn start(
        options: &RequestLogOptions,
        registry: &Registry,
    ) -> Result<RequestLog, RequestLogError> {
        let records = IntCounterVec::new(
            Opts::new(
                "sluice_request_log_records_total",
                "Request log records by outcome: sent (acknowledged by the broker), dropped \
                 (not queued: the queue was full or the record refused) or failed (queued but \
                 not acknowledged in time).",
            ),
            &["outcome"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(records.clone()))
            .expect("a unique metric");
        let [sent, dropped, failed] = OUTCOMES.map(|outcome| records.with_label_values(&[outcome]));
        let producer = settings(options)?
            .iter()
            .fold(ClientConfig::new(), |mut config, (key, value)| {
                config.set(key, value);
                config
            })
            .create_with_context(Deliveries { sent, failed })?;
        tracing::info!(
            brokers = %options.brokers,
            topic = %options.topic,
            sample_ratio = options.sample_ratio,
            max_queue = options.max_queue,
            "request log on"
        );
        Ok(RequestLog {
            producer,
            topic: options.topic.clone(),
            sample_ratio: options.sample_ratio,
            dropped,
        })
    }

    /// Draws whether the request at hand is logged.
    pub fn sample(&self) -> bool {
        fastrand::f64() < self.sample_ratio
    }

    /// Queues `exchange`'s record, or counts it as dropped; never waits.
    pub fn log(&self, exchange: &Exchange<'_>) {
        let value = encode(exchange, SystemTime::now());
        let version = exchange.version.to_string();
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: MODEL_HEADER,
                value: Some(exchange.model),
            })
            .insert(Header {
                key: VERSION_HEADER,
                value: Some(&version),
            });
        let record = BaseRecord::to(&self.topic)
            .key(exchange.model)
            .payload(&value)
            .headers(headers);
        if let Err((error, _)) = self.producer.send(record) {
            self.dropped.inc();
            tracing::debug!(%error, "request log record dropped");
        }
    }

    /// Waits up to `timeout` for the queued records to be delivered (at
    /// shutdown); what is still queued after it is lost.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, "request log records still queued at shutdown are lost");
        }
    }
}

/// The producer's settings, then the user's properties (later ones win).
fn settings(options: &RequestLogOptions) -> Result<Vec<(String, String)>, RequestLogError> {
    let max_queue = options.max_queue.to_string();
    let mut settings: Vec<(String, String)> = [
        ("bootstrap.servers", options.brokers.as_str()),
        // The broker acknowledges once every in-sync replica has the record, so
        // `sent` means kept through a leader's failure. The wait is never on a
        // request's path (sends are asynchronous); it only keeps a record
        // queued a little longer. Duplicates after a retried send are
        // possible and harmless to a sampled feed, so no idempotence.
        ("acks", "all"),
        ("message.timeout.ms", DELIVERY_TIMEOUT_MS),
        ("queue.buffering.max.messages", max_queue.as_str()),
        // And at most 64 MiB of them (librdkafka's default is 1 GiB), so that
        // a down broker costs a bounded share of a pod's memory however large
        // the requests are.
        ("queue.buffering.max.kbytes", "65536"),
        // Larger, compressed batches: records are JSON (numbers as text),
        // which lz4 shrinks cheaply on librdkafka's thread.
        ("linger.ms", "50"),
        ("compression.type", "lz4"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect();
    if let Some(path) = &options.properties_file {
        settings.extend(read_properties(path).map_err(RequestLogError::Properties)?);
    }
    settings.extend(options.properties.iter().cloned());
    Ok(settings)
}

/// Counts what the broker made of each queued record.
struct Deliveries {
    sent: IntCounter,
    failed: IntCounter,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.sent.inc(),
            Err(_) => self.failed.inc(),
        }
    }
}

/// One record's value.
#[derive(Serialize)]
struct Record<'a> {
    model: &'a str,
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    time: String,
    protocol: &'static str,
    encoding: &'static str,
    request: Part<'a>,
    response: Part<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_binary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_binary: Option<String>,
}

/// A request or a response in a record.
#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    /// REST's JSON part, as JSON.
    Json(Cow<'a, RawValue>),
    /// A gRPC message, in base64.
    Base64(String),
}

/// The record of `exchange` at `time`: one JSON object. A REST exchange
/// holds each JSON part as JSON and each binary section in base64. A gRPC
/// exchange holds the protobuf messages in base64 (`"encoding": "protobuf"`):
/// turning them into JSON would take a second, per-datatype encoding of raw
/// tensor contents to keep in step with REST's, while the messages are read
/// by any protobuf library from the protocol's published `.proto`, keep
/// everything the client sent (typed or raw contents, parameters) and cost
/// one encoding of each message, only when the request is logged.
pub fn encode(exchange: &Exchange<'_>, time: SystemTime) -> Vec<u8> {
    let base64 = |bytes: &[u8]| (!bytes.is_empty()).then(|| BASE64.encode(bytes));
    let (protocol, encoding, request, response, request_binary, response_binary) =
        match exchange.bodies {
            Bodies::Rest { request, response } => (
                "rest",
                "json",
                json_part(request.json),
                json_part(response.json),
                base64(request.binary),
                base64(response.binary),
            ),
            Bodies::Grpc { request, response } => (
                "grpc",
                "protobuf",
                Part::Base64(BASE64.encode(request)),
                Part::Base64(BASE64.encode(response)),
                None,
                None,
            ),
        };
    let record = Record {
        model: exchange.model,
        version: exchange.version.to_string(),
        id: exchange.id,
        time: humantime::format_rfc3339_millis(time).to_string(),
        protocol,
        encoding,
        request,
        response,
        request_binary,
        response_binary,
    };
    serde_json::to_vec(&record).expect("records always serialize")
}

/// A JSON part as it was sent; one holding the bare `NaN` and `Infinity`
/// literals the server accepts (they are not JSON) with them as `null`.
fn json_part(json: &[u8]) -> Part<'_> {
    if let Ok(raw) = serde_json::from_slice::<&RawValue>(json) {
        return Part::Json(Cow::Borrowed(raw));
    }
    let rewritten = nonfinite::as_null(json)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| RawValue::from_string(text).ok());
    Part::Json(rewritten.map_or_else(|| Cow::Borrowed(RawValue::NULL), Cow::Owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn decoded(exchange: &Exchange<'_>) -> Value {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        serde_json::from_slice(&encode(exchange, time)).unwrap()
    }

    #[test]
    fn a_rest_record_holds_the_json_parts_as_json_and_the_binary_sections_in_base64() {
        let request = br#"{"id":"r1","inputs":[{"name":"x","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let response = br#"{"model_name":"m","outputs":[{"name":"y","data":[2.5]}]}"#;
        let record = decoded(&Exchange {
            model: "m",
            version: 3,
            id: Some("r1"),
            bodies: Bodies::Rest {
                request: RestBody {
                    json: request,
                    binary: &[0, 0, 128, 63],
                },
                response: RestBody {
                    json: response,
                    binary: &[],
                },
            },
        });
        assert_eq!(
            record,
            json!({
                "model": "m",
                "version": "3",
                "id": "r1",
                "time": "2023-11-14T22:13:20.123Z",
                "protocol": "rest",
                "encoding": "json",
                "request": serde_json::from_slice::<Value>(request).unwrap(),
                "response": serde_json::from_slice::<Value>(response).unwrap(),
                "request_binary": "AACAPw==",
            })
        );
    }

    #[test]
    fn a_request_with_bare_non_finite_literals_is_logged_as_json() {
        let record = decoded(&Exchange {
            model: "m",
            version: 1,
            id: None,
            bodies: Bodies::Rest {
                request: RestBody {
                    json: br#"{"inputs":[{"name":"x","data":[NaN, 1, -Infinity]}]}"#,
                    binary: &[],
                },
                response: RestBody {
                    json: b"{}",
                    binary: &[],
                },
            },
        });
        assert_eq!(
            record["request"]["inputs"][0]["data"],
            json!([null, 1, null])
        );
        assert!(record.get("id").is_none(), "{record}");
    }

    #[test]
    fn a_grpc_record_holds_the_messages_in_base64() {
        let record = decoded(&Exchange {
            model: "m",
            version: 2,
            id: None,
            bodies: Bodies::Grpc {
                request: b"\x0a\x01m",
                response: b"",
            },
        });
        assert_eq!(record["protocol"], "grpc");
        assert_eq!(record["encoding"], "protobuf");
        assert_eq!(record["request"], "CgFt");
        assert_eq!(record["response"], "");
        assert!(record.get("request_binary").is_none(), "{record}");
    }

    #[test]
    fn sample_ratios_are_numbers_from_zero_to_one() {
        assert_eq!(parse_sample_ratio("0.25"), Ok(0.25));
        assert_eq!(parse_sample_ratio("1"), Ok(1.0));
        assert_eq!(parse_sample_ratio("0"), Ok(0.0));
        for bad in ["1.5", "-0.1", "NaN", "all"] {
            assert!(parse_sample_ratio(bad).is_err(), "{bad}");
        }
    }
}
