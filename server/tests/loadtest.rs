//! `sluice-server loadtest` against a real server: the rate it finds for a model
//! that takes tens of milliseconds per request lies below that model's capacity.

mod common;

use std::process::{Command, Output};

use common::{Repository, Server};

/// Runs `sluice-server loadtest ARGS` off the async runtime (the server under test
/// shares it) and returns its output.
async fn loadtest(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sluice-server"))
            .arg("loadtest")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn loadtest_finds_a_rate_below_the_capacity_of_a_slow_model() {
    let repository = Repository::new("loadtest").with_model(
        "slow",
        "slow",
        "max_batch_size: 1\nintra_op_threads: 1\n",
    );
    let server = Server::start(&repository.dir, &[]).await;
    let output = loadtest(&[
        "--url",
        &server.http,
        "--model",
        "slow",
        "--json",
        "--start-rate",
        "4",
        "--max-rate",
        "1000",
        "--step-seconds",
        "1.5",
        "--p99-objective-ms",
        "250",
        "--connections",
        "16",
        "--refinements",
        "2",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let max_rate = result["max_rate"].as_f64().unwrap();
    // One run takes 15-40 ms on one thread, so one replica serves at most about
    // 70 requests/s; it must sustain the starting rate.
    assert!(
        (4.0..=100.0).contains(&max_rate),
        "found {max_rate} requests/s:\n{stderr}"
    );
    let steps = result["steps"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["passed"] == false),
        "the search never reached the limit: {stderr}"
    );
    assert!(result["p99_ms"].as_f64().unwrap() <= 250.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn loadtest_offers_a_fixed_rate_and_counts_every_request() {
    let repository = Repository::new("loadtest-rate").with_model("mlp", "mlp", "");
    let server = Server::start(&repository.dir, &[]).await;
    let output = loadtest(&[
        "--url",
        &server.http,
        "--model",
        "mlp",
        "--json",
        "--rate",
        "50",
        "--step-seconds",
        "2",
        "--connections",
        "4",
    ])
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let step: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(step["rate"], 50.0);
    assert_eq!(step["errors"], 0, "{stderr}");
    let metrics = reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 2 s at 50 requests/s: exactly 100 requests reached the server.
    assert!(
        metrics
            .contains(r#"sluice_inference_requests_total{code="200",model="mlp",version="1"} 100"#),
        "{metrics}"
    );

    let refused = loadtest(&["--url", &server.http, "--model", "mlp", "--rate", "0"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rate must be a positive"));
}
