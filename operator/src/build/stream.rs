//! The serving container of a stream worker (`spec.streaming`): the arguments
//! of `sluice-server stream`, its transactional id and the Kafka credentials
//! Secret. Pure.

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, ObjectFieldSelector, SecretVolumeSource, Volume, VolumeMount,
};

use super::pod::mount;
use crate::crd::StreamingSpec;

/// Where `spec.streaming.credentialsSecret` is mounted.
pub const CREDENTIALS_DIR: &str = "/var/run/sluice/kafka";
/// The credentials Secret's key that holds librdkafka's `key=value` lines.
pub const PROPERTIES_KEY: &str = "client.properties";
/// The volume of the credentials Secret.
const CREDENTIALS_VOLUME: &str = "kafka-credentials";

/// `sluice-server stream`'s arguments for the model folder `model` (its
/// versions and `config.yaml`), with metrics and probes on `metrics_port`.
pub fn args(streaming: &StreamingSpec, group: &str, model: &str, metrics_port: i32) -> Vec<String> {
    let mut args: Vec<String> = [
        "stream",
        "--model",
        model,
        "--brokers",
        &streaming.brokers,
        "--input-topic",
        &streaming.input_topic,
        "--output-topic",
        &streaming.output_topic,
        "--group",
        group,
        "--delivery",
        streaming.delivery.flag(),
        "--metrics-address",
        &format!("0.0.0.0:{metrics_port}"),
        "--log-format",
        "json",
    ]
    .map(String::from)
    .into();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.extend([format!("--{name}"), value]);
        }
    };
    flag("dlq-topic", streaming.dead_letter_topic.clone());
    flag(
        "max-batch-records",
        streaming.max_batch_records.map(|n| n.to_string()),
    );
    flag("linger-ms", streaming.linger_ms.map(|n| n.to_string()));
    flag(
        "max-attempts",
        streaming.max_attempts.map(|n| n.to_string()),
    );
    flag(
        "features",
        (!streaming.features.is_empty()).then(|| streaming.features.join(",")),
    );
    flag(
        "properties-file",
        streaming
            .credentials_secret
            .as_ref()
            .map(|_| format!("{CREDENTIALS_DIR}/{PROPERTIES_KEY}")),
    );
    args
}

/// The worker's environment: its transactional id, `<group>-<pod
/// name>`, so that each pod has its own and a restarted container fences
/// its predecessor's unfinished transaction at once.
pub fn env(group: &str) -> Vec<EnvVar> {
    vec![
        EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: "SLUICE_TRANSACTIONAL_ID".into(),
            value: Some(format!("{group}-$(POD_NAME)")),
            ..EnvVar::default()
        },
    ]
}

/// The credentials Secret as a volume and its read-only mount, when one is named.
pub fn credentials(streaming: &StreamingSpec) -> Option<(Volume, VolumeMount)> {
    let secret = streaming.credentials_secret.as_ref()?;
    Some((
        Volume {
            name: CREDENTIALS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR, true, None),
    ))
}
