//! Every refusal reaches its client intact, driven like real callers against a
//! real server over TLS: pooled keep-alive clients (reqwest over HTTP/1.1 and
//! HTTP/2, tonic over gRPC) send real-size bodies with valid and wrong keys
//! alternating, bodies near and over the body limit, and more than the rate
//! limit allows. Every response is counted, the counts are printed, and any
//! network error fails the test. Hostile raw connections (a body past every
//! bound, too many headers, `Expect: 100-continue`, chunked bodies) must get a
//! complete answer too.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Pki, Repository, Server, https_client, write};
use serde_json::{Value, json};
use sluice_server::wire::grpc::pb;
use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const VALID_KEY: &str = "sk-refusals-valid-5d2c7e9a1b3f";
const WRONG_KEY: &str = "sk-refusals-wrong-000000000000";
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
const ROWS: usize = 64;
/// mlp's config: rows enough for a request of any size up to the body limit.
const MLP_CONFIG: &str = "limits:\n  max_rows: 65536\n";

/// Outcome counts, e.g. "valid 200" or "error: connection closed".
type Counts = BTreeMap<String, usize>;

fn counts(entries: &[(&str, usize)]) -> Counts {
    entries
        .iter()
        .map(|(name, count)| ((*name).to_string(), *count))
        .collect()
}

fn key_name(key: &str) -> &'static str {
    if key == VALID_KEY { "valid" } else { "wrong" }
}

/// Keys alternating, valid first.
fn key_of(index: usize) -> &'static str {
    if index.is_multiple_of(2) {
        VALID_KEY
    } else {
        WRONG_KEY
    }
}

/// A JSON request for mlp with `rows` x 16 values written out in full (about
/// 19 bytes a value, as clients that print doubles send them), padded by
/// `padding` bytes in a request parameter the server ignores.
fn infer_body(rows: usize, padding: usize) -> Vec<u8> {
    let data: Vec<f64> = (0..rows * 16)
        .map(|i| (i as f64 * 0.618_033_988_749_894_8).fract())
        .collect();
    let mut request = json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, 16], "data": data}]
    });
    if padding > 0 {
        request["parameters"] = json!({ "padding": "x".repeat(padding) });
    }
    serde_json::to_vec(&request).unwrap()
}

/// A JSON request for mlp of exactly `size` bytes: as many rows as fit, padded.
fn body_of_size(size: usize) -> Vec<u8> {
    let per_row = infer_body(1001, 0).len() - infer_body(1, 0).len();
    let mut rows = size * 1000 / per_row;
    while infer_body(rows, 1).len() > size {
        rows -= rows / 100 + 1;
    }
    let body = infer_body(rows, size - infer_body(rows, 1).len() + 1);
    assert_eq!(body.len(), size);
    body
}

/// The API key file with VALID_KEY for every model.
fn keys_file(repository: &Repository) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(VALID_KEY.as_bytes()));
    let text = format!("keys:\n  - name: refusals\n    sha256: {digest}\n    models: [\"*\"]\n");
    let path = write(&repository.dir, "keys.yaml", &text);
    path.to_str().unwrap().to_string()
}

/// A server behind TLS with the API key and the body limit, plus `extra` flags.
async fn tls_server(repository: &Repository, pki: &Pki, extra: &[&str]) -> Server {
    let (cert, key) = pki.issue("localhost");
    let cert = write(&repository.dir, "tls.crt", &cert);
    let key = write(&repository.dir, "tls.key", &key);
    let keys = keys_file(repository);
    let limit = MAX_BODY_BYTES.to_string();
    let mut flags = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--api-keys-file",
        &keys,
        "--max-body-bytes",
        &limit,
    ];
    flags.extend_from_slice(extra);
    let client = https_client(&pki.ca_pem, None);
    Server::start_with(&repository.dir, &flags, "https://localhost", &client).await
}

/// The HTTP versions REST is driven over.
#[derive(Debug, Clone, Copy)]
enum Http {
    One,
    Two,
}

/// A pooled client trusting `pki`, speaking `version` only.
fn pooled_client(pki: &Pki, version: Http) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(60));
    match version {
        Http::One => builder.http1_only(),
        Http::Two => builder.http2_prior_knowledge(),
    }
    .build()
    .unwrap()
}

/// Posts each (key, body) of `plan` in turn on `client`; counts "<key> <status>"
/// and "error: <what>", checking each answer is complete JSON over `version`.
async fn send_all(
    client: &reqwest::Client,
    server: &Server,
    version: Http,
    plan: &[(&str, &[u8])],
) -> Counts {
    let url = format!("{}/v2/models/mlp/infer", server.http);
    let mut counts = Counts::new();
    for (key, body) in plan {
        let outcome = async {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-api-key", *key)
                .body(body.to_vec())
                .send()
                .await?;
            let wanted = match version {
                Http::One => reqwest::Version::HTTP_11,
                Http::Two => reqwest::Version::HTTP_2,
            };
            assert_eq!(response.version(), wanted);
            let status = response.status().as_u16();
            let answer: Value = response.json().await?;
            assert!(
                status == 200 || answer["error"].is_string(),
                "{status} {answer}"
            );
            Ok::<_, reqwest::Error>(status)
        }
        .await;
        let entry = match outcome {
            Ok(status) => format!("{} {status}", key_name(key)),
            Err(error) => format!("error: {error:?}"),
        };
        *counts.entry(entry).or_default() += 1;
    }
    counts
}

fn report(what: &str, counts: &Counts) {
    println!("{what}: {counts:?}");
}

#[tokio::test]
async fn refusals_reach_pooled_clients_over_tls_on_http1_and_http2() {
    let repository = Repository::new("refusals").with_model("mlp", "mlp", MLP_CONFIG);
    let pki = Pki::new("refusals test CA");
    let server = tls_server(&repository, &pki, &[]).await;
    let small = infer_body(ROWS, 0);
    let near_limit = body_of_size(MAX_BODY_BYTES - 100);
    // The 413 is promised up to about twice the limit (docs/model-server.md): past
    // that the server stops lingering and a client still sending may be reset
    // before it reads the answer, which a loaded machine made happen.
    let over_limit: Vec<Vec<u8>> = [1.2, 1.5, 1.9]
        .iter()
        .map(|times| body_of_size((MAX_BODY_BYTES as f64 * times) as usize))
        .collect();

    for version in [Http::One, Http::Two] {
        let client = pooled_client(&pki, version);
        let plan: Vec<(&str, &[u8])> = (0..200).map(|i| (key_of(i), &small[..])).collect();
        let got = send_all(&client, &server, version, &plan).await;
        report(
            &format!("{version:?}: {ROWS}-row bodies ({} bytes)", small.len()),
            &got,
        );
        assert_eq!(got, counts(&[("valid 200", 100), ("wrong 401", 100)]));

        let plan: Vec<(&str, &[u8])> = (0..20).map(|i| (key_of(i), &near_limit[..])).collect();
        let got = send_all(&client, &server, version, &plan).await;
        report(
            &format!(
                "{version:?}: bodies of {} bytes (limit {MAX_BODY_BYTES})",
                near_limit.len()
            ),
            &got,
        );
        assert_eq!(got, counts(&[("valid 200", 10), ("wrong 401", 10)]));

        for body in &over_limit {
            let plan: Vec<(&str, &[u8])> = (0..6)
                .map(|i| match i % 2 {
                    0 => (VALID_KEY, &body[..]),
                    _ => (WRONG_KEY, &small[..]),
                })
                .collect();
            let got = send_all(&client, &server, version, &plan).await;
            report(
                &format!(
                    "{version:?}: bodies of {} bytes, each followed by a wrong key",
                    body.len()
                ),
                &got,
            );
            assert_eq!(got, counts(&[("valid 413", 3), ("wrong 401", 3)]));
        }
    }
}

#[tokio::test]
async fn rate_limited_requests_get_429_over_tls_on_http1_http2_and_grpc() {
    let repository = Repository::new("refusals-rate").with_model("mlp", "mlp", MLP_CONFIG);
    let pki = Pki::new("refusals test CA");
    let server = tls_server(
        &repository,
        &pki,
        &["--rate-limit", "20", "--rate-limit-burst", "5"],
    )
    .await;
    let body = infer_body(ROWS, 0);
    for version in [Http::One, Http::Two] {
        let client = pooled_client(&pki, version);
        let plan: Vec<(&str, &[u8])> = (0..120).map(|i| (key_of(i), &body[..])).collect();
        let got = send_all(&client, &server, version, &plan).await;
        report(
            &format!("{version:?}: {ROWS}-row bodies, 20 requests/s burst 5"),
            &got,
        );
        let count = |name: &str| got.get(name).copied().unwrap_or(0);
        assert_eq!(count("wrong 401"), 60, "{got:?}");
        assert_eq!(count("valid 200") + count("valid 429"), 60, "{got:?}");
        assert!(
            count("valid 429") > 0,
            "the rate limit never applied: {got:?}"
        );
    }
    let mut grpc = grpc_client(&server, &pki).await;
    let plan: Vec<(&str, usize)> = (0..120).map(|i| (key_of(i), ROWS)).collect();
    let got = grpc_send_all(&mut grpc, &plan).await;
    report(
        &format!("gRPC: {ROWS}-row requests, 20 requests/s burst 5"),
        &got,
    );
    let count = |name: &str| got.get(name).copied().unwrap_or(0);
    assert_eq!(count("wrong Unauthenticated"), 60, "{got:?}");
    assert_eq!(
        count("valid Ok") + count("valid ResourceExhausted"),
        60,
        "{got:?}"
    );
    assert!(
        count("valid ResourceExhausted") > 0,
        "the rate limit never applied: {got:?}"
    );
}

async fn grpc_client(server: &Server, pki: &Pki) -> GrpcInferenceServiceClient<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(server.grpc.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects over TLS");
    GrpcInferenceServiceClient::new(channel)
}

/// A gRPC request for mlp with `rows` rows of raw FP32 input and `key`.
fn grpc_request(rows: usize, key: &str) -> tonic::Request<pb::ModelInferRequest> {
    let raw: Vec<u8> = (0..rows * 16)
        .flat_map(|i| ((i % 97) as f32 / 97.0).to_le_bytes())
        .collect();
    let mut request = tonic::Request::new(pb::ModelInferRequest {
        model_name: "mlp".to_string(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".to_string(),
            datatype: "FP32".to_string(),
            shape: vec![rows as i64, 16],
            ..Default::default()
        }],
        raw_input_contents: vec![raw],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

/// Sends each (key, rows) of `plan` on one channel; counts "<key> <code>".
/// A transport failure shows as tonic's `Unknown` or `Unavailable` with its
/// message, so those are counted with the message.
async fn grpc_send_all(
    client: &mut GrpcInferenceServiceClient<Channel>,
    plan: &[(&str, usize)],
) -> Counts {
    let mut counts = Counts::new();
    for (key, rows) in plan {
        let entry = match client.model_infer(grpc_request(*rows, key)).await {
            Ok(response) => {
                assert_eq!(response.get_ref().outputs[0].shape, vec![*rows as i64, 4]);
                format!("{} Ok", key_name(key))
            }
            Err(status) => match status.code() {
                tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Internal => {
                    format!("error: {status:?}")
                }
                code => format!("{} {code:?}", key_name(key)),
            },
        };
        *counts.entry(entry).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn grpc_refusals_reach_a_channel_over_tls() {
    let repository = Repository::new("refusals-grpc").with_model("mlp", "mlp", MLP_CONFIG);
    let pki = Pki::new("refusals test CA");
    let server = tls_server(&repository, &pki, &[]).await;
    let mut client = grpc_client(&server, &pki).await;

    let plan: Vec<(&str, usize)> = (0..200).map(|i| (key_of(i), ROWS)).collect();
    let got = grpc_send_all(&mut client, &plan).await;
    report(&format!("gRPC: {ROWS}-row requests"), &got);
    assert_eq!(
        got,
        counts(&[("valid Ok", 100), ("wrong Unauthenticated", 100)])
    );

    // 64 bytes a row: a message a few hundred bytes under the limit.
    let near_limit = MAX_BODY_BYTES / 64 - 8;
    let plan: Vec<(&str, usize)> = (0..20).map(|i| (key_of(i), near_limit)).collect();
    let got = grpc_send_all(&mut client, &plan).await;
    report(
        &format!("gRPC: {near_limit}-row requests (limit {MAX_BODY_BYTES} bytes)"),
        &got,
    );
    assert_eq!(
        got,
        counts(&[("valid Ok", 10), ("wrong Unauthenticated", 10)])
    );

    let over_limit = MAX_BODY_BYTES / 64 * 2;
    let plan: Vec<(&str, usize)> = (0..6)
        .map(|i| match i % 2 {
            0 => (VALID_KEY, over_limit),
            _ => (WRONG_KEY, ROWS),
        })
        .collect();
    let got = grpc_send_all(&mut client, &plan).await;
    report(
        &format!("gRPC: {over_limit}-row requests over the limit, each followed by a wrong key"),
        &got,
    );
    assert_eq!(
        got,
        counts(&[("valid OutOfRange", 3), ("wrong Unauthenticated", 3)])
    );
}

/// One response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Header lines, lowercased.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl RawResponse {
    fn closes(&self) -> bool {
        self.headers.iter().any(|line| line == "connection: close")
    }
}

/// Reads one complete response (skipping `100 Continue`): its head, then a
/// body of exactly its `Content-Length`.
async fn read_response(reader: &mut (impl AsyncReadExt + Unpin)) -> Result<RawResponse, String> {
    let mut buffer = Vec::new();
    loop {
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 8192];
            match reader.read(&mut chunk).await {
                Ok(0) => return Err(format!("end of stream after {} bytes", buffer.len())),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(error) => return Err(format!("{error} after {} bytes", buffer.len())),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
        buffer.drain(..end + 4);
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|line| line.strip_prefix("http/1.1 "))
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .ok_or_else(|| format!("not an HTTP/1.1 status line: {head}"))?;
        if status == 100 {
            continue;
        }
        let headers: Vec<String> = lines.map(str::to_string).collect();
        let length: usize = headers
            .iter()
            .find_map(|line| line.strip_prefix("content-length: ")?.parse().ok())
            .ok_or_else(|| format!("no content-length: {head}"))?;
        while buffer.len() < length {
            let mut chunk = [0u8; 8192];
            match reader.read(&mut chunk).await {
                Ok(0) => return Err(format!("body cut at {} of {length} bytes", buffer.len())),
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(error) => return Err(format!("{error} in the body")),
            }
        }
        buffer.truncate(length);
        return Ok(RawResponse {
            status,
            headers,
            body: buffer,
        });
    }
}

/// How a raw client sends its request.
#[derive(Clone, Copy)]
enum Sending {
    /// All of it, then reads the answer (as `requests` and curl do).
    AllFirst,
    /// Reads the answer while still sending (as hyper does).
    WhileReading,
    /// Only the head; the body would follow `100 Continue`.
    HeadOnly,
}

/// Sends `head` and `body` on `stream` as `sending` says and reads one answer.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    head: &str,
    body: &[u8],
    sending: Sending,
) -> Result<RawResponse, String> {
    let (mut reader, mut writer) = stream.split();
    let answer = async {
        match sending {
            Sending::HeadOnly => {
                writer
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                read_response(&mut reader).await
            }
            Sending::AllFirst => {
                writer
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                writer
                    .write_all(body)
                    .await
                    .map_err(|e| format!("sending the body: {e}"))?;
                read_response(&mut reader).await
            }
            Sending::WhileReading => {
                let send = async {
                    let _ = writer.write_all(head.as_bytes()).await;
                    let _ = writer.write_all(body).await;
                };
                let (_, response) = tokio::join!(send, read_response(&mut reader));
                response
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .map_err(|_| "no answer within 60 s".to_string())?
}

/// The body in chunked encoding, 64 KiB a chunk.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut encoded = Vec::new();
    for chunk in body.chunks(64 * 1024) {
        encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        encoded.extend_from_slice(chunk);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    encoded
}

/// What a raw request is, head, body, how it is sent, the status it must get,
/// and whether its connection must stay open for another request.
type RawCase<'a> = (&'static str, String, &'a [u8], Sending, u16, bool);

#[tokio::test]
async fn hostile_raw_requests_get_a_complete_answer() {
    let repository = Repository::new("refusals-raw").with_model("mlp", "mlp", MLP_CONFIG);
    let keys = keys_file(&repository);
    let limit = MAX_BODY_BYTES.to_string();
    let server = Server::start(
        &repository.dir,
        &[
            "--api-keys-file",
            &keys,
            "--max-body-bytes",
            &limit,
            "--max-header-bytes",
            "4096",
        ],
    )
    .await;
    let address = server.http.trim_start_matches("http://").to_string();
    let body = body_of_size(MAX_BODY_BYTES * 3 / 4);
    let post = |path: &str, headers: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: sluice\r\ncontent-type: application/json\r\n{headers}content-length: {length}\r\n\r\n"
        )
    };
    let wrong = format!("x-api-key: {WRONG_KEY}\r\n");
    let valid = format!("x-api-key: {VALID_KEY}\r\n");
    let many_headers: String = (0..150).map(|i| format!("x-filler-{i}: {i}\r\n")).collect();
    let large_header = format!("x-filler: {}\r\n", "x".repeat(5000));
    let infer = "/v2/models/mlp/infer";
    let over_limit = body_of_size(MAX_BODY_BYTES * 4);
    let chunked_body = chunked(&body);
    let chunked_head = format!(
        "POST {infer} HTTP/1.1\r\nhost: sluice\r\n{wrong}transfer-encoding: chunked\r\n\r\n"
    );

    // (what, head, body, how it is sent, status, whether the connection stays open)
    let cases: Vec<RawCase> = vec![
        (
            "wrong key",
            post(infer, &wrong, body.len()),
            &body,
            Sending::AllFirst,
            401,
            true,
        ),
        (
            "wrong key, chunked",
            chunked_head,
            &chunked_body,
            Sending::AllFirst,
            401,
            true,
        ),
        (
            "unknown model",
            post("/v2/models/nope/infer", &valid, body.len()),
            &body,
            Sending::AllFirst,
            404,
            true,
        ),
        (
            "no such route",
            post("/v2/nothing", &valid, body.len()),
            &body,
            Sending::AllFirst,
            404,
            true,
        ),
        (
            "headers over --max-header-bytes",
            post(infer, &format!("{wrong}{large_header}"), body.len()),
            &body,
            Sending::AllFirst,
            431,
            true,
        ),
        (
            "more headers than hyper takes",
            post(infer, &format!("{wrong}{many_headers}"), body.len()),
            &body,
            Sending::AllFirst,
            431,
            false,
        ),
        (
            "body over the limit",
            post(infer, &valid, over_limit.len()),
            &over_limit,
            Sending::WhileReading,
            413,
            false,
        ),
        (
            "wrong key, 4x the limit",
            post(infer, &wrong, over_limit.len()),
            &over_limit,
            Sending::WhileReading,
            401,
            false,
        ),
        (
            "wrong key, awaiting 100 Continue",
            post(
                infer,
                &format!("{wrong}expect: 100-continue\r\n"),
                body.len(),
            ),
            &[],
            Sending::HeadOnly,
            401,
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (what, head, body, sending, status, stays_open) in cases {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let outcome = match exchange(&mut stream, &head, body, sending).await {
            Ok(response) => {
                let error: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                // hyper answers a head it cannot take by itself, with no body.
                let from_hyper = what.contains("hyper") && response.body.is_empty();
                if response.status != status || !(error["error"].is_string() || from_hyper) {
                    Err(format!("got {} {error}", response.status))
                } else if stays_open {
                    let next = "GET /v2/health/live HTTP/1.1\r\nhost: sluice\r\n\r\n";
                    match exchange(&mut stream, next, &[], Sending::AllFirst).await {
                        Ok(next) if next.status == 200 => Ok(response.status),
                        other => Err(format!("the connection did not stay open: {other:?}")),
                    }
                } else if response.closes() {
                    Ok(response.status)
                } else {
                    Err(format!("no `connection: close`: {:?}", response.headers))
                }
            }
            Err(error) => Err(error),
        };
        println!("{what}: {outcome:?}");
        if let Err(error) = outcome {
            failures.push(format!("{what}: {error}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", server.log());
}
