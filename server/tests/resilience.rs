//! Degraded mode on the real ONNX Runtime: a model that fails at run time
//! (the `faulty` fixture fails on any non-zero input) answered by a fallback
//! model or a static answer, marked as such over REST and gRPC; a circuit
//! breaker that opens, fails fast with Retry-After, and closes after a probe;
//! a slow model's timeout; and fallbacks that do not fit the model refused at
//! load with the mismatch named.

mod common;

use std::time::Duration;

use common::{Repository, Server, fp32_request, infer, metrics_text};
use serde_json::{Value, json};
use sluice_server::wire::grpc::pb;
use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

/// A row the faulty model fails on (any non-zero value does).
fn row(seed: usize) -> Vec<f32> {
    (0..16)
        .map(|i| ((seed * 13 + i * 5) % 11) as f32 / 5.5 - 1.0)
        .collect()
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn fallback_parameters(body: &Value) -> (Value, Value) {
    (
        body["parameters"]["sluice_fallback"].clone(),
        body["parameters"]["sluice_fallback_reason"].clone(),
    )
}

#[tokio::test]
async fn a_failing_model_is_answered_by_its_fallback_model_until_the_circuit_opens() {
    let config = "fallback:\n  model: fallback/model.onnx\ncircuit_breaker:\n  failure_threshold: 3\n  open_ms: 600000\n";
    let repository = Repository::new("fallback-model")
        .with_model("scorer", "faulty", config)
        .with_fallback("scorer", "mlp")
        .with_model("reference", "mlp", "");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = |model: &str| format!("{}/v2/models/{model}/infer", server.http);

    for seed in 0..5 {
        let request = fp32_request("input", &[1, 16], &row(seed));
        let (status, body) = infer(&client, &url("scorer"), &request).await;
        assert_eq!(status, 200, "{body}");
        let reason = if seed < 3 { "failure" } else { "circuit_open" };
        assert_eq!(
            fallback_parameters(&body),
            (json!("model"), json!(reason)),
            "request {seed}: {body}"
        );
        let (_, expected) = infer(&client, &url("reference"), &request).await;
        assert_eq!(
            body["outputs"][0]["data"], expected["outputs"][0]["data"],
            "the fallback model's answer is mlp's"
        );
    }
    let (status, body) = infer(
        &client,
        &url("scorer"),
        &fp32_request("input", &[1, 15], &row(0)[..15]),
    )
    .await;
    assert_eq!(
        status, 400,
        "the client's own fault is never answered by the fallback: {body}"
    );

    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc.clone())
        .await
        .expect("gRPC connects");
    let response = grpc
        .model_infer(common::grpc_fp32_row("scorer", &row(9)))
        .await
        .expect("the fallback answers over gRPC")
        .into_inner();
    let marked = |key: &str| match &response.parameters[key].parameter_choice {
        Some(pb::infer_parameter::ParameterChoice::StringParam(value)) => value.clone(),
        other => panic!("{key} is {other:?}"),
    };
    assert_eq!(marked("sluice_fallback"), "model");
    assert_eq!(marked("sluice_fallback_reason"), "circuit_open");

    let metrics = metrics_text(&client, &server).await;
    let series = |name: &str, extra: &str| {
        metric(
            &metrics,
            &format!("{name}{{{extra}model=\"scorer\",version=\"1\"}}"),
        )
    };
    assert_eq!(
        metric(
            &metrics,
            "sluice_fallback_requests_total{model=\"scorer\",reason=\"failure\",version=\"1\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "sluice_fallback_requests_total{model=\"scorer\",reason=\"circuit_open\",version=\"1\"}"
        ),
        3.0
    );
    assert_eq!(series("sluice_circuit_breaker_state", ""), 2.0, "{metrics}");
    assert_eq!(series("sluice_circuit_breaker_opens_total", ""), 1.0);
    assert!(
        metrics
            .contains("sluice_inference_batch_size_count{model=\"scorer\",version=\"1-fallback\"}"),
        "the fallback model's runs have series of their own"
    );
}

#[tokio::test]
async fn without_a_fallback_an_open_circuit_fails_fast_and_a_probe_closes_it() {
    let config = "circuit_breaker:\n  failure_threshold: 2\n  open_ms: 1500\n";
    let repository = Repository::new("circuit").with_model("scorer", "faulty", config);
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/scorer/infer", server.http);
    let failing = fp32_request("input", &[1, 16], &row(1));

    for _ in 0..2 {
        let (status, body) = infer(&client, &url, &failing).await;
        assert_eq!(status, 500, "{body}");
    }
    let response = client.post(&url).json(&failing).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("model 'scorer' is failing and its circuit breaker is open"),
        "{body}"
    );

    tokio::time::sleep(Duration::from_millis(1600)).await;
    // The faulty model answers all-zero rows: the probe succeeds and closes it.
    let (status, body) = infer(&client, &url, &fp32_request("input", &[1, 16], &[0.0; 16])).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.get("parameters").is_none(),
        "the model itself answered: {body}"
    );
    let metrics = metrics_text(&client, &server).await;
    assert_eq!(
        metric(
            &metrics,
            "sluice_circuit_breaker_state{model=\"scorer\",version=\"1\"}"
        ),
        0.0
    );
    let (status, _) = infer(&client, &url, &failing).await;
    assert_eq!(status, 500, "closed again: failures reach the client");
}

#[tokio::test]
async fn a_static_answer_is_repeated_per_row_and_a_slow_model_times_out_into_it() {
    let static_answer = "  static:\n    - {name: logits, datatype: FP32, shape: [1, 4], data: [0.25, 0.25, 0.25, 0.25]}\n";
    let repository = Repository::new("fallback-static")
        .with_model("scorer", "faulty", &format!("fallback:\n{static_answer}"))
        .with_model(
            "slowpoke",
            "slow",
            &format!("fallback:\n{static_answer}  timeout_ms: 1\n"),
        );
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();

    let rows: Vec<f32> = (0..3).flat_map(row).collect();
    let (status, body) = infer(
        &client,
        &format!("{}/v2/models/scorer/infer", server.http),
        &fp32_request("input", &[3, 16], &rows),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fallback_parameters(&body),
        (json!("static"), json!("failure"))
    );
    assert_eq!(body["outputs"][0]["shape"], json!([3, 4]));
    assert_eq!(body["outputs"][0]["data"], json!(vec![0.25; 12]));

    let (status, body) = infer(
        &client,
        &format!("{}/v2/models/slowpoke/infer", server.http),
        &fp32_request("input", &[1, 16], &row(4)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        fallback_parameters(&body),
        (json!("static"), json!("timeout"))
    );
}

/// One unary `ModelInfer` call over raw HTTP/2 with `grpc-timeout: timeout`:
/// tonic's client would enforce that header itself, so a raw call is the way to
/// see what the server answers. Returns `grpc-status` and `grpc-message` (the
/// errors here come as trailers-only responses, in the headers).
async fn raw_model_infer(
    grpc: &str,
    request: &pb::ModelInferRequest,
    timeout: &str,
) -> (String, String) {
    use prost::Message;
    let message = request.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(format!("{grpc}/inference.GRPCInferenceService/ModelInfer"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test]
async fn a_grpc_deadline_ends_the_call_on_the_server_with_deadline_exceeded() {
    let repository = Repository::new("grpc-deadline").with_model("slowpoke", "slow", "");
    let server = Server::start(&repository.dir, &[]).await;
    let request = common::grpc_fp32_row("slowpoke", &row(4));

    // The slow fixture takes well over 2 ms a row.
    let (status, message) = raw_model_infer(&server.grpc, &request, "2m").await;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED expected: {message}");
    assert!(
        message.contains("passed%20before%20the%20model%20answered"),
        "{message}"
    );

    let (status, message) = raw_model_infer(&server.grpc, &request, "soon").await;
    assert_eq!(status, "3", "INVALID_ARGUMENT expected: {message}");
    assert!(message.contains("%22soon%22"), "{message}");

    // A deadline that is met changes nothing (tonic's client sends the header).
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc.clone())
        .await
        .expect("gRPC connects");
    let mut patient = tonic::Request::new(request);
    patient.set_timeout(Duration::from_secs(30));
    grpc.model_infer(patient)
        .await
        .expect("a generous deadline is met");
}

#[tokio::test]
async fn fallbacks_that_do_not_fit_the_model_fail_its_load_with_the_mismatch_named() {
    let repository = Repository::new("fallback-mismatch")
        .with_model("wrong-model", "mlp", "fallback: {model: fallback/model.onnx}\n")
        .with_fallback("wrong-model", "iris")
        .with_model("missing-file", "mlp", "fallback: {model: fallback/model.onnx}\n")
        .with_model(
            "wrong-static",
            "mlp",
            "fallback:\n  static:\n    - {name: logits, datatype: FP32, shape: [1, 3], data: [0, 0, 0]}\n",
        )
        .with_model("fine", "mlp", "");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    for (model, message) in [
        (
            "wrong-model",
            "fallback model fallback/model.onnx: the fallback model's inputs",
        ),
        ("missing-file", "fallback model fallback/model.onnx:"),
        (
            "wrong-static",
            "fallback.static output 'logits' has shape [1, 3]",
        ),
    ] {
        let (status, body) = infer(
            &client,
            &format!("{}/v2/models/{model}/infer", server.http),
            &fp32_request("input", &[1, 16], &row(0)),
        )
        .await;
        assert_eq!(status, 503, "{model}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(message), "{model}: {error} lacks {message}");
    }
    let (status, body) = infer(
        &client,
        &format!("{}/v2/models/fine/infer", server.http),
        &fp32_request("input", &[1, 16], &row(0)),
    )
    .await;
    assert_eq!(status, 200, "the other models still serve: {body}");
}
