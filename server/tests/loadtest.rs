//! `sluice-server loadtest` against a real server: the rate it finds for a model
//! that takes tens of milliseconds per request lies below that model's capacity,
//! and the load reaches servers behind credentials, TLS and a path prefix.

mod common;

use std::process::{Command, Output};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{Pki, Repository, Server, https_client, write};

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

/// The arguments of a run that offers `mlp` `rate` requests/s for `seconds`
/// over `connections` connections and prints the step as JSON.
fn fixed_rate<'a>(
    url: &'a str,
    rate: &'a str,
    seconds: &'a str,
    connections: &'a str,
) -> Vec<&'a str> {
    vec![
        "--url",
        url,
        "--model",
        "mlp",
        "--json",
        "--rate",
        rate,
        "--step-seconds",
        seconds,
        "--connections",
        connections,
    ]
}

/// The step a fixed-rate `loadtest --json` printed, which must have succeeded
/// without errors.
fn step_without_errors(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let step: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(step["errors"], 0, "{stderr}");
    step
}

/// Asserts that the server answered exactly `count` inference requests to
/// `mlp`; `key` goes with the metrics request when it needs credentials.
async fn assert_answered(server: &Server, key: Option<&str>, count: usize) {
    assert_answered_to(&reqwest::Client::new(), server, key, count).await;
}

/// [`assert_answered`] through `client` (e.g. one that trusts a test CA).
async fn assert_answered_to(
    client: &reqwest::Client,
    server: &Server,
    key: Option<&str>,
    count: usize,
) {
    let mut request = client.get(format!("{}/metrics", server.http));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let metrics = request.send().await.unwrap().text().await.unwrap();
    let line =
        format!(r#"sluice_inference_requests_total{{code="200",model="mlp",version="1"}} {count}"#);
    assert!(metrics.contains(&line), "{metrics}");
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
    let output = loadtest(&fixed_rate(&server.http, "50", "2", "4")).await;
    assert_eq!(step_without_errors(&output)["rate"], 50.0);
    // 2 s at 50 requests/s: exactly 100 requests reached the server.
    assert_answered(&server, None, 100).await;

    let refused = loadtest(&["--url", &server.http, "--model", "mlp", "--rate", "0"]).await;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--rate must be a positive"));
}

#[tokio::test(flavor = "multi_thread")]
async fn loadtest_sends_the_headers_a_secured_server_needs() {
    let repository = Repository::new("loadtest-headers").with_model("mlp", "mlp", "");
    let key = "sk-loadtest-0123456789abcdef";
    let keys = repository.dir.join("keys.yaml");
    std::fs::write(
        &keys,
        format!(
            "keys:\n  - name: load\n    sha256: {}\n    models: [mlp]\n",
            sluice_server::security::keys::digest_hex(key)
        ),
    )
    .unwrap();
    let server = Server::start(
        &repository.dir,
        &["--api-keys-file", keys.to_str().unwrap()],
    )
    .await;
    let base = fixed_rate(&server.http, "40", "1", "2");

    let refused = loadtest(&base).await;
    assert!(!refused.status.success(), "metadata needs the key");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let header = format!("X-API-Key: {key}");
    let output = loadtest(&[&base[..], &["--header", &header]].concat()).await;
    step_without_errors(&output);
    // 1 s at 40 requests/s, every one admitted and answered.
    assert_answered(&server, Some(key), 40).await;

    let malformed = loadtest(&[&base[..], &["--header", "X-API-Key"]].concat()).await;
    assert!(
        String::from_utf8_lossy(&malformed.stderr)
            .contains("--header 'X-API-Key': expected NAME: VALUE"),
        "{}",
        String::from_utf8_lossy(&malformed.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loadtest_sends_its_load_over_tls_to_a_server_it_trusts() {
    let repository = Repository::new("loadtest-tls").with_model("mlp", "mlp", "");
    let pki = Pki::new("loadtest CA");
    let (cert, key) = pki.issue("localhost");
    let [cert_path, key_path, ca_path] = [
        ("tls.crt", &cert),
        ("tls.key", &key),
        ("ca.crt", &pki.ca_pem),
    ]
    .map(|(name, text)| {
        let path = write(&repository.dir, name, text);
        path.to_str().unwrap().to_string()
    });
    let client = https_client(&pki.ca_pem, None);
    let server = Server::start_with(
        &repository.dir,
        &["--tls-cert", &cert_path, "--tls-key", &key_path],
        "https://localhost",
        &client,
    )
    .await;
    let base = fixed_rate(&server.http, "30", "1", "2");

    let untrusted = loadtest(&base).await;
    assert!(
        !untrusted.status.success(),
        "the test CA is not a public root"
    );

    let output = loadtest(&[&base[..], &["--ca-cert", &ca_path]].concat()).await;
    step_without_errors(&output);
    // 1 s at 30 requests/s, every one over TLS (the server speaks nothing else).
    assert_answered_to(&client, &server, None, 30).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loadtest_sends_its_load_under_the_url_path_prefix() {
    let repository = Repository::new("loadtest-prefix").with_model("mlp", "mlp", "");
    let server = Server::start(&repository.dir, &[]).await;
    let gateway = prefix_gateway(server.http.clone(), "/ml/fraud").await;
    let url = format!("{gateway}/ml/fraud");
    let output = loadtest(&fixed_rate(&url, "30", "1", "2")).await;
    step_without_errors(&output);
    // Every request went through the gateway's prefix: it answers nothing else.
    assert_answered(&server, None, 30).await;
}

/// A gateway on a free port that serves `upstream` under `prefix`, as an
/// ingress with a path rule would, and answers 404 outside it. Returns its URL.
async fn prefix_gateway(upstream: String, prefix: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let forward = move |request: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let Some(route) = request.uri().path().strip_prefix(prefix) else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let url = format!("{upstream}{route}");
            let method = request.method().clone();
            let mut headers = request.headers().clone();
            headers.remove("host");
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .unwrap();
            let answer = client
                .request(method, url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let mut response = Response::new(answer.bytes().await.unwrap().into());
            *response.status_mut() = status;
            response
        }
    };
    let app = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}
