//! Connection rotation (`--max-connection-age-seconds`) with real clients that
//! keep their connections open: a reqwest HTTP/1.1 keep-alive pool, reqwest
//! over HTTP/2 and a tonic gRPC channel. Each reaches the server through a TCP
//! relay that counts the connections the client opens, so the tests see what
//! kube-proxy would see: new connections after the age, and not one failed
//! request while connections rotate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Repository, Server, fp32_request, metrics_text};
use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::net::{TcpListener, TcpStream};

/// How long each client sends requests.
const LOAD: Duration = Duration::from_secs(3);

/// Concurrent callers per client.
const CALLERS: usize = 4;

/// A TCP relay to `target` that counts the connections made through it.
struct CountingRelay {
    address: String,
    connections: Arc<AtomicUsize>,
}

impl CountingRelay {
    async fn to(target: &str) -> CountingRelay {
        let target = target
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let target = target.clone();
                tokio::spawn(async move {
                    let mut server = TcpStream::connect(&target).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        CountingRelay {
            address,
            connections,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn repository(name: &str) -> Repository {
    Repository::new(name)
        .with_model("mlp", "mlp", "")
        .with_model("slow", "slow", "")
}

async fn server(repository: &Repository, max_age: &str) -> Server {
    Server::start(
        &repository.dir,
        &[
            "--max-connection-age-seconds",
            max_age,
            "--max-connection-age-grace-seconds",
            "5",
        ],
    )
    .await
}

/// What the callers saw: answers by outcome.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    failed: Vec<String>,
}

/// `CALLERS` tasks calling `call` back to back for [`LOAD`].
async fn load<F, Fut>(call: F) -> Outcome
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let callers = (0..CALLERS).map(|_| {
        let call = call.clone();
        tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let started = Instant::now();
            while started.elapsed() < LOAD {
                match call().await {
                    Ok(()) => outcome.ok += 1,
                    Err(error) => outcome.failed.push(error),
                }
            }
            outcome
        })
    });
    let mut total = Outcome::default();
    for caller in futures::future::join_all(callers).await {
        let caller = caller.unwrap();
        total.ok += caller.ok;
        total.failed.extend(caller.failed);
    }
    total
}

/// Loads `model` on the server through a relay with `client`, and returns what
/// the callers saw and how many connections they opened.
async fn rest_load(server: &Server, client: reqwest::Client, model: &str) -> (Outcome, usize) {
    let relay = CountingRelay::to(&server.http).await;
    let url = format!("{}/v2/models/{model}/infer", relay.address);
    let body = fp32_request("input", &[1, 16], &[0.5; 16]);
    let outcome = load(move || {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let response = client
                .post(&url)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| format!("{e:?}"))?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status}: {text}"))
            }
        }
    })
    .await;
    (outcome, relay.connections())
}

fn rotated(metrics: &str, protocol: &str) -> f64 {
    let series = format!("sluice_connections_rotated_total{{protocol=\"{protocol}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.parse().unwrap())
}

fn http1_client() -> reqwest::Client {
    reqwest::Client::builder().http1_only().build().unwrap()
}

fn http2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

#[tokio::test]
async fn http1_keep_alive_clients_reconnect_after_the_age_without_a_failed_request() {
    let repository = repository("rotation-http1");
    let server = server(&repository, "0.3").await;
    let (outcome, connections) = rest_load(&server, http1_client(), "mlp").await;
    assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
    // Each of the callers' connections lives about 0.3 s of the 3 s.
    assert!(
        connections >= 3 * CALLERS,
        "{connections} connections for {} requests: the keep-alive pool was never rotated",
        outcome.ok
    );
    let metrics = metrics_text(&reqwest::Client::new(), &server).await;
    assert!(
        rotated(&metrics, "http1") >= 3.0 * CALLERS as f64,
        "{metrics}"
    );
}

#[tokio::test]
async fn http2_clients_reconnect_after_a_go_away_without_a_failed_request() {
    let repository = repository("rotation-http2");
    let server = server(&repository, "0.3").await;
    let (outcome, connections) = rest_load(&server, http2_client(), "mlp").await;
    assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
    // One multiplexed connection at a time, replaced about every 0.3 s.
    assert!(
        connections >= 4,
        "{connections} connections for {} requests: HTTP/2 was never rotated",
        outcome.ok
    );
    let metrics = metrics_text(&reqwest::Client::new(), &server).await;
    assert!(rotated(&metrics, "http2") >= 3.0, "{metrics}");
}

/// Whether a gRPC call failed before it was sent: tonic's channel queued it
/// on a connection that then closed after its GOAWAY. gRPC's own clients
/// (C-core, Go, Java) retry such calls by themselves ("transparent retry");
/// tonic hands them back as `Cancelled`, so a tonic caller retries them.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(error) = error.downcast_ref::<hyper::Error>() {
            return status.code() == tonic::Code::Cancelled && error.is_canceled();
        }
        source = error.source();
    }
    false
}

#[tokio::test]
async fn a_go_away_lets_the_requests_in_flight_on_the_connection_finish() {
    // The slow model takes about 30 ms a run, so while one answer triggers the
    // GOAWAY the other callers' requests are still running on the connection
    // (with no grace period they fail: the test was checked that way).
    let repository = repository("rotation-in-flight");
    let server = server(&repository, "0.2").await;
    let (outcome, connections) = rest_load(&server, http2_client(), "slow").await;
    assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
    assert!(connections >= 4, "{connections} connections: never rotated");
}

#[tokio::test]
async fn grpc_channels_reconnect_after_a_go_away_without_a_failed_request() {
    let repository = repository("rotation-grpc");
    let server = server(&repository, "0.3").await;
    let relay = CountingRelay::to(&server.grpc).await;
    let channel = tonic::transport::Endpoint::from_shared(relay.address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let retried = Arc::new(AtomicUsize::new(0));
    let retries = Arc::clone(&retried);
    let outcome = load(move || {
        let mut client = GrpcInferenceServiceClient::new(channel.clone());
        let retries = Arc::clone(&retries);
        async move {
            loop {
                match client
                    .model_infer(common::grpc_fp32_row("mlp", &[0.5; 16]))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(status) if never_sent(&status) => {
                        retries.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => return Err(format!("{status:?}")),
                }
            }
        }
    })
    .await;
    assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
    // Every call the client saw answered was served once, and the retried
    // ones never reached the server.
    let metrics = metrics_text(&reqwest::Client::new(), &server).await;
    let served = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "sluice_inference_requests_total{code=\"200\",model=\"mlp\",version=\"1\"} ",
            )
        })
        .map(|value| value.parse::<usize>().unwrap());
    assert_eq!(
        served,
        Some(outcome.ok),
        "{} retried calls: {metrics}",
        retried.load(Ordering::SeqCst)
    );
    let connections = relay.connections();
    assert!(
        connections >= 4,
        "{connections} connections for {} requests: gRPC was never rotated",
        outcome.ok
    );
    assert!(rotated(&metrics, "grpc") >= 3.0, "{metrics}");
}

#[tokio::test]
async fn without_an_age_connections_stay_open() {
    let repository = repository("rotation-off");
    let server = server(&repository, "0").await;
    for client in [http1_client(), http2_client()] {
        let (outcome, connections) = rest_load(&server, client, "mlp").await;
        assert!(outcome.failed.is_empty(), "failed: {:?}", outcome.failed);
        assert!(
            connections <= CALLERS,
            "{connections} connections for {CALLERS} callers with rotation off"
        );
    }
    let metrics = metrics_text(&reqwest::Client::new(), &server).await;
    assert_eq!(rotated(&metrics, "http1") + rotated(&metrics, "http2"), 0.0);
}
