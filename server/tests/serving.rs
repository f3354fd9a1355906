//! The server under load and failure, on the real ONNX Runtime: batching splits
//! results back correctly, full queues and timeouts answer at once, broken models
//! and configurations are reported without stopping the others, and SIGTERM drains.

mod common;

use std::time::Duration;

use common::{Repository, Server, fp32_request, infer, infer_concurrently, metrics_text};

fn row(seed: usize) -> Vec<f32> {
    (0..16)
        .map(|i| ((seed * 31 + i * 7) % 19) as f32 / 9.5 - 1.0)
        .collect()
}

fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_split_back_exactly_on_a_thread() {
    batches_and_splits_back_exactly("thread").await;
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_split_back_exactly_inline() {
    batches_and_splits_back_exactly("inline").await;
}

/// 24 concurrent single-row requests to the slow model run in fewer than 24
/// batches, and each gets its own row's result, with the runs placed by `runner`.
async fn batches_and_splits_back_exactly(runner: &str) {
    let config = format!("max_batch_size: 16\nrunner: {runner}\n");
    let repository =
        Repository::new(&format!("batching-{runner}")).with_model("slow", "slow", &config);
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/slow/infer", server.http);

    let mut expected = Vec::new();
    for seed in 0..24 {
        let (status, body) =
            infer(&client, &url, &fp32_request("input", &[1, 16], &row(seed))).await;
        assert_eq!(status, 200, "{body}");
        expected.push(body["outputs"][0]["data"].clone());
    }
    let before = metrics_text(&client, &server).await;

    let bodies = (0..24)
        .map(|seed| fp32_request("input", &[1, 16], &row(seed)))
        .collect();
    let answers = infer_concurrently(&client, &url, bodies).await;
    for (seed, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["shape"], serde_json::json!([1, 4]));
        assert_eq!(
            body["outputs"][0]["data"], expected[seed],
            "row {seed} got another row's result"
        );
    }

    let after = metrics_text(&client, &server).await;
    let batches = metric_sum(&after, "sluice_inference_batch_size_count")
        - metric_sum(&before, "sluice_inference_batch_size_count");
    let rows = metric_sum(&after, "sluice_inference_batch_size_sum")
        - metric_sum(&before, "sluice_inference_batch_size_sum");
    assert_eq!(rows, 24.0);
    assert!(
        batches < 24.0,
        "24 concurrent requests ran in {batches} runs: nothing was batched"
    );
}

#[tokio::test]
async fn auto_placement_runs_a_fast_model_inline_and_a_slow_one_on_a_thread() {
    let repository = Repository::new("placement")
        .with_model("mlp", "mlp", "")
        .with_model("slow", "slow", "");
    let server = Server::start(&repository.dir, &[]).await;
    let log = server.log();
    let placement = |model: &str| {
        log.lines()
            .find(|line| line.contains("model ready") && line.contains(&format!("model={model} ")))
            .and_then(|line| line.split("placement=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string)
    };
    assert_eq!(placement("mlp").as_deref(), Some("Inline"), "{log}");
    assert_eq!(placement("slow").as_deref(), Some("Thread"), "{log}");
}

#[tokio::test]
async fn a_full_queue_is_refused_at_once_and_the_server_recovers() {
    let config = "max_batch_size: 1\nmax_queue_size: 2\n";
    let repository = Repository::new("queue").with_model("slow", "slow", config);
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/slow/infer", server.http);

    let bodies = (0..12)
        .map(|seed| fp32_request("input", &[1, 16], &row(seed)))
        .collect();
    let answers = infer_concurrently(&client, &url, bodies).await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    let served = answers.iter().filter(|(status, _)| *status == 200).count();
    assert!(
        !refused.is_empty(),
        "12 requests into a queue of 2 were all accepted"
    );
    assert_eq!(refused.len() + served, 12, "{answers:?}");
    let message = refused[0].1["error"].as_str().unwrap();
    assert!(message.contains("queue is full"), "{message}");

    let (status, _) = infer(&client, &url, &fp32_request("input", &[1, 16], &row(0))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_past_its_timeout_gets_504() {
    let config = "max_batch_size: 1\nrequest_timeout_ms: 1\n";
    let repository = Repository::new("timeout").with_model("slow", "slow", config);
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let (status, body) = infer(
        &client,
        &format!("{}/v2/models/slow/infer", server.http),
        &fp32_request("input", &[8, 16], &row(1).repeat(8)),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn a_fixed_batch_model_serves_concurrent_requests_one_by_one() {
    let repository = Repository::new("fixed").with_model("fixed", "fixed_batch", "");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/fixed/infer", server.http);
    let inputs: Vec<[f32; 4]> = (0..16).map(|i| [i as f32, 1.0, -2.0, 0.5]).collect();
    let bodies = inputs
        .iter()
        .map(|x| fp32_request("x", &[1, 4], x))
        .collect();
    let answers = infer_concurrently(&client, &url, bodies).await;
    for (x, (status, body)) in inputs.iter().zip(answers) {
        assert_eq!(status, 200, "{body}");
        let y: Vec<f64> = serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap();
        let expected: Vec<f64> = x.iter().map(|v| 2.0 * *v as f64 + 1.0).collect();
        assert_eq!(y, expected);
    }
    let (status, body) = infer(&client, &url, &fp32_request("x", &[2, 4], &[0.0; 8])).await;
    assert_eq!(status, 400, "two rows into a fixed batch of one: {body}");
}

#[tokio::test]
async fn broken_models_and_configs_are_reported_while_others_serve() {
    let repository = Repository::new("broken")
        .with_model("good", "mlp", "")
        .with_model("typo", "mlp", "max_bach_size: 4\n")
        .with_model("cuda", "mlp", "device: cuda\n")
        .with_model("cuda_fallback", "mlp", "device: cuda\ncpu_fallback: true\n")
        .with_model("bad_warmup", "mlp", "warmup:\n  inputs:\n    - {name: nope, datatype: FP32, shape: [1, 16], data: [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}\n")
        .with_model("good_warmup", "mlp", "warmup:\n  iterations: 2\n  inputs:\n    - {name: input, datatype: FP32, shape: [1, 16], data: [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}\n");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let metadata = |model: &str| {
        let url = format!("{}/v2/models/{model}", server.http);
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    for (model, reason) in [
        ("typo", "max_bach_size"),
        ("cuda", "CUDA was requested but is not available"),
        ("bad_warmup", "warm-up failed"),
    ] {
        let body = metadata(model).await;
        assert_eq!(body["ready"], false, "{body}");
        assert!(
            body["reason"].as_str().unwrap().contains(reason),
            "{model}: {body}"
        );
        let ready = client
            .get(format!("{}/v2/models/{model}/ready", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        let (status, _) = infer(
            &client,
            &format!("{}/v2/models/{model}/infer", server.http),
            &fp32_request("input", &[1, 16], &row(0)),
        )
        .await;
        assert_eq!(status, 503);
    }
    for model in ["good", "cuda_fallback", "good_warmup"] {
        assert_eq!(metadata(model).await["ready"], true, "{model}");
        let (status, body) = infer(
            &client,
            &format!("{}/v2/models/{model}/infer", server.http),
            &fp32_request("input", &[1, 16], &row(0)),
        )
        .await;
        assert_eq!(status, 200, "{model}: {body}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_the_limit_named() {
    let repository = Repository::new("limit").with_model("mlp", "mlp", "");
    let server = Server::start(&repository.dir, &["--max-body-bytes", "2000"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let (status, body) = infer(
        &client,
        &url,
        &fp32_request("input", &[64, 16], &[0.5; 1024]),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("limit of 2000 bytes"),
        "{body}"
    );
    let (status, _) = infer(&client, &url, &fp32_request("input", &[1, 16], &row(0))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_input_with_a_zero_sized_dimension_gets_400_naming_its_shape() {
    use sluice_server::wire::grpc::pb;
    use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

    let repository = Repository::new("zero-dimension").with_model("mlp", "mlp", "");
    let server = Server::start(&repository.dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let mut grpc = GrpcInferenceServiceClient::connect(server.grpc.clone())
        .await
        .expect("gRPC connects");
    for shape in [vec![0, 64], vec![0, 16], vec![4, 0]] {
        let named = format!("invalid shape {shape:?}: a dimension is 0");
        let (status, body) = infer(&client, &url, &fp32_request("input", &shape, &[])).await;
        assert_eq!(status, 400, "{shape:?}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(&named), "{error}");

        for raw in [true, false] {
            let input = pb::model_infer_request::InferInputTensor {
                name: "input".to_string(),
                datatype: "FP32".to_string(),
                shape: shape.clone(),
                contents: (!raw).then(pb::InferTensorContents::default),
                ..Default::default()
            };
            let request = pb::ModelInferRequest {
                model_name: "mlp".to_string(),
                inputs: vec![input],
                raw_input_contents: if raw { vec![Vec::new()] } else { Vec::new() },
                ..Default::default()
            };
            let status = grpc.model_infer(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains(&named), "{status:?}");
        }
    }
    let (status, _) = infer(&client, &url, &fp32_request("input", &[1, 16], &row(0))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn during_the_shutdown_delay_requests_are_answered_and_keep_alive_clients_told_to_close() {
    let repository = Repository::new("delay").with_model("mlp", "mlp", "");
    let mut server = Server::start(&repository.dir, &["--shutdown-delay-seconds", "2"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let request = fp32_request("input", &[1, 16], &row(0));
    let before = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(before.status(), 200);
    assert!(
        before.headers().get("connection").is_none(),
        "a serving server keeps connections open: {:?}",
        before.headers()
    );
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let during = client.post(&url).json(&request).send().await.unwrap();
        assert_eq!(
            during.status(),
            200,
            "a request in the shutdown delay was refused"
        );
        assert_eq!(
            during
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap()),
            Some("close"),
            "a draining server must ask keep-alive clients to reconnect elsewhere"
        );
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

#[tokio::test]
async fn sigterm_turns_readiness_off_drains_in_flight_work_and_exits_zero() {
    let repository = Repository::new("drain").with_model("slow", "slow", "max_batch_size: 1\n");
    let mut server = Server::start(&repository.dir, &["--shutdown-delay-seconds", "1"]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v2/models/slow/infer", server.http);
    let in_flight: Vec<_> = (0..6)
        .map(|seed| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                infer(
                    &client,
                    &url,
                    &fp32_request("input", &[4, 16], &row(seed).repeat(4)),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = client
        .get(format!("{}/v2/health/ready", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness must turn false on SIGTERM");
    for task in in_flight {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200, "an in-flight request was lost: {body}");
    }
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", server.log());
}
