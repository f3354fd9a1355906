//! `spec.streaming`: the model between two Kafka topics instead of behind HTTP.
//!
//! With this section the serving pods run `sluice-server stream` rather than
//! `serve`: every pod of every revision is a member of one consumer group on
//! the input topic and writes one prediction per record to the output topic
//! (see docs/streaming.md). The autoscaler then scales on consumer lag and
//! never above the input topic's partition count, and a canary's share of the
//! stream is its share of the group's members.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a stream worker promises about each input record.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamDelivery {
    /// Predictions, dead letters and input offsets committed in one Kafka
    /// transaction per micro-batch: `read_committed` consumers see each
    /// record's outcome exactly once, whatever crashes.
    #[default]
    ExactlyOnce,
    /// Idempotent produce, offsets committed once the broker has acknowledged
    /// every prediction: nothing is lost, and a crash can repeat a micro-batch.
    AtLeastOnce,
}

impl StreamDelivery {
    /// The value of `sluice-server stream --delivery`.
    pub fn flag(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly-once",
            Self::AtLeastOnce => "at-least-once",
        }
    }
}

/// Kafka in, predictions out. Part of the revision, so a change rolls out.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.outputTopic != self.inputTopic")
    .message("spec.streaming.outputTopic must differ from inputTopic: predictions would be read back as input")
    .field_path(".outputTopic"))]
#[x_kube(validation = Rule::new("!has(self.deadLetterTopic) || (self.deadLetterTopic != self.inputTopic && self.deadLetterTopic != self.outputTopic)")
    .message("spec.streaming.deadLetterTopic must differ from inputTopic and outputTopic")
    .field_path(".deadLetterTopic"))]
#[serde(rename_all = "camelCase")]
pub struct StreamingSpec {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[schemars(
        length(min = 1),
        regex(pattern = r"^[^\s,]+:[0-9]+(,[^\s,]+:[0-9]+)*$")
    )]
    pub brokers: String,
    /// The topic records are read from: inference requests (JSON, or binary
    /// with an `inference-header-content-length` header) or flat JSON rows
    /// named by feature.
    #[schemars(length(min = 1, max = 249))]
    pub input_topic: String,
    /// The topic predictions are written to, each keyed as its input record.
    #[schemars(length(min = 1, max = 249))]
    pub output_topic: String,
    /// Where records that cannot be predicted go, with the reason in headers.
    /// Without it they are counted as skipped, logged and passed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub dead_letter_topic: Option<String>,
    /// The consumer group every worker of every revision joins. Default
    /// `sluice-<namespace>-<name>`; it must not change while records flow,
    /// or the new group starts from the input's earliest record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub group: Option<String>,
    /// `ExactlyOnce` (default) or `AtLeastOnce`.
    #[serde(default)]
    pub delivery: StreamDelivery,
    /// A Secret in the same namespace with a `client.properties` key: librdkafka
    /// `key=value` lines for TLS and SASL (`security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, ...). The whole Secret is mounted at
    /// `/var/run/sluice/kafka`, so files it holds can be named there
    /// (`ssl.ca.location=/var/run/sluice/kafka/ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: Option<String>,
    /// Most records in one micro-batch (one transaction). Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_batch_records: Option<u32>,
    /// How long a micro-batch waits to fill once it has a record, in
    /// milliseconds. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub linger_ms: Option<u32>,
    /// Attempts at a record the model fails on before it is dead-lettered.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: Option<u32>,
    /// Feature names of flat JSON rows for a one-input model, in the input's
    /// order. Default: the monitoring profile's features, when there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

impl StreamingSpec {
    /// The consumer group: the one named, else `sluice-<namespace>-<name>`.
    pub fn group_or_default(&self, namespace: &str, name: &str) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("sluice-{namespace}-{name}"))
    }
}
