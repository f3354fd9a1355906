//! Request logging against a real Kafka 4.4 broker (tests/common/kafka.rs):
//! every sampled REST and gRPC request reaches the topic once with what the
//! client sent and got (those still queued at SIGTERM too), a sample ratio
//! logs that share, and with the broker gone requests are still answered
//! while the lost records are counted.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::kafka::{KafkaBroker, read_topic};
use common::{Repository, Server, fp32_request, grpc_fp32_row, infer, metrics_text};
use prost::Message as _;
use rdkafka::message::{Headers, Message, OwnedMessage};
use serde_json::{Value, json};
use sluice_server::wire::grpc::pb;
use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

const TOPIC: &str = "requests";

/// A row of the mlp fixture's 16 features, distinct for each seed.
fn row(seed: usize) -> Vec<f32> {
    (0..16)
        .map(|i| seed as f32 / 4096.0 + i as f32 / 16.0 - 0.5)
        .collect()
}

fn mlp(name: &str) -> Repository {
    Repository::new(name).with_model("mlp", "mlp", "")
}

/// A broker with the log's topic, and a server logging to it with `extra` flags.
async fn start(name: &str, partitions: u32, extra: &[&str]) -> (KafkaBroker, Repository, Server) {
    let kafka = KafkaBroker::start();
    kafka.create_topic(TOPIC, partitions);
    let repository = mlp(name);
    let bootstrap = kafka.bootstrap();
    let mut args = vec![
        "--request-log-brokers",
        &bootstrap,
        "--request-log-topic",
        TOPIC,
    ];
    args.extend(extra);
    let server = Server::start(&repository.dir, &args).await;
    (kafka, repository, server)
}

/// `sluice_request_log_records_total{outcome}`.
async fn records(client: &reqwest::Client, server: &Server, outcome: &str) -> u64 {
    let label = format!("outcome=\"{outcome}\"");
    metrics_text(client, server)
        .await
        .lines()
        .find(|line| line.starts_with("sluice_request_log_records_total{") && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sluice_request_log_records_total{{{label}}}"))
}

/// Waits until the `sent` count has stayed the same for three seconds, and
/// returns it (for a sampled log, whose count is not known in advance).
async fn settled_sent(client: &reqwest::Client, server: &Server) -> u64 {
    let mut last = (records(client, server, "sent").await, Instant::now());
    let started = Instant::now();
    while last.1.elapsed() < Duration::from_secs(3) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "sent never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sent = records(client, server, "sent").await;
        if sent != last.0 {
            last = (sent, Instant::now());
        }
    }
    last.0
}

/// Waits (at most 60 s) until `expected` records have an outcome, sent,
/// dropped or failed, and returns how many were sent: a loaded machine can
/// hold acknowledgements back for seconds.
async fn sent_of(client: &reqwest::Client, server: &Server, expected: u64) -> u64 {
    let started = Instant::now();
    loop {
        let sent = records(client, server, "sent").await;
        let counted = sent
            + records(client, server, "dropped").await
            + records(client, server, "failed").await;
        if counted >= expected || started.elapsed() > Duration::from_secs(60) {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A header's value as text.
fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    (0..headers.count())
        .map(|i| headers.get(i))
        .find(|h| h.key == name)
        .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
}

/// The record's value, after checking what every record of the mlp model holds.
fn value(message: &OwnedMessage) -> Value {
    assert_eq!(message.key(), Some(&b"mlp"[..]));
    assert_eq!(header(message, "sluice-model").as_deref(), Some("mlp"));
    assert_eq!(
        header(message, "sluice-model-version").as_deref(),
        Some("1")
    );
    let value: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(value["model"], "mlp", "{value}");
    assert_eq!(value["version"], "1", "{value}");
    let time = value["time"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(time)
            .is_ok_and(|t| t.elapsed().unwrap() < Duration::from_secs(600)),
        "{time}"
    );
    value
}

fn base64(bytes: &[u8]) -> Value {
    Value::String(BASE64.encode(bytes))
}

/// The latencies' median, in milliseconds.
fn p50_ms(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    latencies[latencies.len() / 2].as_secs_f64() * 1e3
}

#[tokio::test]
async fn every_request_is_logged_once_with_what_the_client_sent_and_got() {
    let properties =
        std::env::temp_dir().join(format!("request-log-{}.properties", std::process::id()));
    // Records wait a second to fill a batch, so that the last ones below
    // reach the topic only through the flush at shutdown.
    std::fs::write(&properties, "# batching\nlinger.ms=1000\n").unwrap();
    let (kafka, _repository, mut server) = start(
        "request-log-all",
        3,
        &[
            "--request-log-properties-file",
            properties.to_str().unwrap(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);

    // 150 JSON requests (every tenth without an id), 50 in the binary tensor
    // extension both ways, 50 over gRPC.
    let mut json_exchanges: HashMap<String, Value> = HashMap::new();
    for seed in 0..150 {
        let mut body = fp32_request("input", &[1, 16], &row(seed));
        if !seed.is_multiple_of(10) {
            body["id"] = json!(format!("rest-{seed}"));
        }
        let (status, answer) = infer(&client, &url, &body).await;
        assert_eq!(status, 200, "{answer}");
        json_exchanges.insert(body.to_string(), answer);
    }
    let mut binary_exchanges: HashMap<String, (Value, Vec<u8>, Value, Vec<u8>)> = HashMap::new();
    for seed in 150..200 {
        let id = format!("bin-{seed}");
        let header = json!({
            "id": id,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16],
                        "parameters": {"binary_data_size": 64}}],
            "outputs": [{"name": "logits", "parameters": {"binary_data": true}}],
        });
        let header_text = header.to_string();
        let tensor: Vec<u8> = row(seed).iter().flat_map(|v| v.to_le_bytes()).collect();
        let response = client
            .post(&url)
            .header("inference-header-content-length", header_text.len())
            .body([header_text.as_bytes(), &tensor].concat())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let length: usize = response.headers()["inference-header-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = response.bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&body[..length]).unwrap();
        binary_exchanges.insert(id, (header, tensor, answer, body[length..].to_vec()));
    }
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let mut grpc_exchanges: HashMap<String, (pb::ModelInferRequest, pb::ModelInferResponse)> =
        HashMap::new();
    for seed in 200..250 {
        let mut request = grpc_fp32_row("mlp", &row(seed));
        request.id = format!("grpc-{seed}");
        let response = grpc
            .model_infer(request.clone())
            .await
            .unwrap()
            .into_inner();
        grpc_exchanges.insert(request.id.clone(), (request, response));
    }

    let logged = read_topic(
        &kafka.bootstrap(),
        TOPIC,
        3,
        |n| n >= 250,
        Duration::from_secs(60),
        Duration::from_secs(3),
    );
    assert_eq!(logged.len(), 250);
    let mut seen = std::collections::HashSet::new();
    for message in &logged {
        let record = value(message);
        match (record["protocol"].as_str(), record.get("request_binary")) {
            (Some("rest"), None) => {
                assert_eq!(record["encoding"], "json");
                let sent = record["request"].to_string();
                let answer = &json_exchanges[&sent];
                assert_eq!(&record["response"], answer, "{sent}");
                assert_eq!(record.get("id"), answer.get("id"), "{record}");
                assert!(record.get("response_binary").is_none(), "{record}");
                assert!(seen.insert(sent));
            }
            (Some("rest"), Some(request_binary)) => {
                let id = record["id"].as_str().unwrap();
                let (header, tensor, answer, answer_binary) = &binary_exchanges[id];
                assert_eq!(&record["request"], header);
                assert_eq!(request_binary, &base64(tensor));
                assert_eq!(&record["response"], answer);
                assert_eq!(record["response_binary"], base64(answer_binary));
                assert!(seen.insert(id.to_string()));
            }
            (Some("grpc"), None) => {
                assert_eq!(record["encoding"], "protobuf");
                let id = record["id"].as_str().unwrap();
                let (request, response) = &grpc_exchanges[id];
                let decode = |field: &Value| BASE64.decode(field.as_str().unwrap()).unwrap();
                assert_eq!(
                    &pb::ModelInferRequest::decode(&decode(&record["request"])[..]).unwrap(),
                    request
                );
                assert_eq!(
                    &pb::ModelInferResponse::decode(&decode(&record["response"])[..]).unwrap(),
                    response
                );
                assert!(seen.insert(id.to_string()));
            }
            _ => panic!("unexpected record {record}"),
        }
    }
    assert_eq!(sent_of(&client, &server, 250).await, 250);
    assert_eq!(records(&client, &server, "dropped").await, 0);
    assert_eq!(records(&client, &server, "failed").await, 0);

    // SIGTERM right after the answers (the server exits within the records'
    // linger): the queued records are still delivered.
    for seed in 250..270 {
        let (status, answer) =
            infer(&client, &url, &fp32_request("input", &[1, 16], &row(seed))).await;
        assert_eq!(status, 200, "{answer}");
    }
    drop((client, grpc));
    // Their connections close as this runtime runs their tasks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(30)).success());
    let logged = read_topic(
        &kafka.bootstrap(),
        TOPIC,
        3,
        |n| n >= 270,
        Duration::from_secs(10),
        Duration::from_secs(1),
    );
    assert_eq!(logged.len(), 270);
    let _ = std::fs::remove_file(properties);
}

#[tokio::test]
async fn a_sample_ratio_logs_that_share_of_requests() {
    const REQUESTS: usize = 2000;
    const RATIO: f64 = 0.25;
    let (kafka, _repository, server) = start(
        "request-log-sample",
        1,
        &["--request-log-sample-ratio", "0.25"],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);
    for seed in 0..REQUESTS {
        let (status, answer) =
            infer(&client, &url, &fp32_request("input", &[1, 16], &row(seed))).await;
        assert_eq!(status, 200, "{answer}");
    }
    let sent = settled_sent(&client, &server).await;
    let logged = read_topic(
        &kafka.bootstrap(),
        TOPIC,
        1,
        |n| n as u64 >= sent,
        Duration::from_secs(60),
        Duration::from_secs(2),
    );
    let mean = REQUESTS as f64 * RATIO;
    let sigma = (REQUESTS as f64 * RATIO * (1.0 - RATIO)).sqrt();
    println!(
        "ratio {RATIO}: {} of {REQUESTS} requests logged (expected {mean} ± {sigma:.1})",
        logged.len()
    );
    assert_eq!(logged.len() as u64, sent);
    assert!(
        (logged.len() as f64 - mean).abs() <= 6.0 * sigma,
        "{} records is more than 6 sigma from {mean}",
        logged.len()
    );
    assert_eq!(records(&client, &server, "dropped").await, 0);
}

#[tokio::test]
async fn with_the_broker_down_requests_are_answered_and_lost_records_counted() {
    const REQUESTS: usize = 500;
    let (mut kafka, _repository, server) = start(
        "request-log-down",
        1,
        &[
            "--request-log-max-queue",
            "100",
            "--request-log-property",
            "message.timeout.ms=3000",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let timed = async |seeds: std::ops::Range<usize>| {
        let mut latencies = Vec::new();
        for seed in seeds {
            let body = fp32_request("input", &[1, 16], &row(seed));
            let started = Instant::now();
            let (status, answer) = infer(&client, &url, &body).await;
            latencies.push(started.elapsed());
            assert_eq!(status, 200, "{answer}");
        }
        latencies
    };

    // The producer connects in the background: the warm-up's records wait
    // in its queue until it has, and the measured requests start after.
    timed(0..50).await;
    assert_eq!(sent_of(&client, &server, 50).await, 50);
    let up = timed(50..50 + REQUESTS).await;
    // With the broker up most records are sent; a queue of 100 may still
    // drop some while an acknowledgement stalls (a loaded machine), and
    // those are counted.
    let sent_up = sent_of(&client, &server, (50 + REQUESTS) as u64).await;
    let dropped_up = records(&client, &server, "dropped").await;
    assert_eq!(
        sent_up + dropped_up + records(&client, &server, "failed").await,
        (50 + REQUESTS) as u64,
        "each record counted once"
    );
    assert!(
        sent_up >= (50 + REQUESTS / 2) as u64,
        "only {sent_up} records sent with the broker up"
    );

    kafka.kill();
    let down = timed(0..REQUESTS).await;
    let dropped = records(&client, &server, "dropped").await - dropped_up;
    assert!(
        dropped >= (REQUESTS - 200) as u64,
        "only {dropped} of {REQUESTS} records dropped with a queue of 100"
    );
    // Every record ends counted once: what the queue held fails after
    // message.timeout.ms.
    let started = Instant::now();
    loop {
        let counted = records(&client, &server, "sent").await
            + records(&client, &server, "dropped").await
            + records(&client, &server, "failed").await;
        if counted == (50 + 2 * REQUESTS) as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{counted} records counted of {}",
            50 + 2 * REQUESTS
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(records(&client, &server, "failed").await > 0);
    println!(
        "p50 latency over {REQUESTS} requests: {:.3} ms with the broker up ({dropped_up} dropped), {:.3} ms with it down ({dropped} dropped)",
        p50_ms(up),
        p50_ms(down)
    );
}
