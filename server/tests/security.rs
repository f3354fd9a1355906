//! The serving path's security with real requests against real servers: API
//! keys (and their rotation), JWT bearer tokens, per-model authorization, rate
//! and concurrency limits, request limits, the audit log, and TLS with and
//! without client certificates, over REST and gRPC.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::{Pki, Repository, Server, fp32_request, https_client, write};
use rcgen::KeyPair;
use serde_json::{Value, json};
use sluice_server::wire::grpc::pb;
use sluice_server::wire::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEY_ALL: &str = "sk-all-7f3a9c1e5b2d4f6a8c0e";
const KEY_MLP: &str = "sk-mlp-1b3d5f7a9c2e4a6c8e0b";
const KEY_NEW: &str = "sk-new-9e8d7c6b5a4f3e2d1c0b";

fn row() -> Vec<f32> {
    (0..16).map(|i| i as f32 / 16.0).collect()
}

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

fn keys_file(entries: &[(&str, &str, &[&str])]) -> String {
    let mut text = "keys:\n".to_string();
    for (name, key, models) in entries {
        text += &format!(
            "  - name: {name}\n    sha256: {}\n    models: {models:?}\n",
            sha256_hex(key)
        );
    }
    text
}

/// A repository with models `mlp` and `other` (both the MLP fixture).
fn two_models(name: &str) -> Repository {
    Repository::new(name)
        .with_model("mlp", "mlp", "")
        .with_model("other", "mlp", "")
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = client.post(url).json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

async fn grpc_client(url: &str) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(url.to_string())
        .await
        .expect("gRPC connects")
}

fn grpc_infer(
    model: &str,
    credentials: Option<(&'static str, &str)>,
) -> tonic::Request<pb::ModelInferRequest> {
    let mut request = tonic::Request::new(common::grpc_fp32_row(model, &row()));
    if let Some((name, value)) = credentials {
        request.metadata_mut().insert(name, value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn api_keys_authenticate_authorize_per_model_and_rotate_live() {
    let repository = two_models("keys");
    let keys = write(
        &repository.dir,
        "keys.yaml",
        &keys_file(&[("all", KEY_ALL, &["*"]), ("mlp-only", KEY_MLP, &["mlp"])]),
    );
    let server = Server::start(
        &repository.dir,
        &[
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--security-reload-seconds",
            "0.1",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let other = format!("{}/v2/models/other/infer", server.http);
    let body = fp32_request("input", &[1, 16], &row());

    let (status, headers, answer) = post(&client, &mlp, &[], &body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        error_of(&answer).contains("authentication required"),
        "{answer}"
    );
    assert_eq!(headers["www-authenticate"], "Bearer");

    let wrong = [("x-api-key", "sk-wrong-000000000000000000")];
    let (status, _, answer) = post(&client, &mlp, &wrong, &body).await;
    assert_eq!((status, error_of(&answer)), (401, "invalid API key"));

    let bearer = format!("Bearer {KEY_MLP}");
    let (status, _, answer) = post(&client, &mlp, &[("authorization", &bearer)], &body).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _, answer) = post(&client, &other, &[("x-api-key", KEY_MLP)], &body).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        error_of(&answer),
        "'key:mlp-only' is not allowed to call model 'other'"
    );
    let (status, _, _) = post(&client, &other, &[("x-api-key", KEY_ALL)], &body).await;
    assert_eq!(status, 200);

    // Probes stay open; metrics and metadata follow the configuration.
    let get = |path: &str, key: Option<&str>| {
        let mut request = client.get(format!("{}{path}", server.http));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/v2/health/ready", None).await, 200);
    assert_eq!(get("/v2/health/live", None).await, 200);
    assert_eq!(get("/v2/models/other/ready", None).await, 200);
    assert_eq!(get("/metrics", None).await, 401);
    assert_eq!(get("/metrics", Some(KEY_MLP)).await, 200);
    assert_eq!(get("/v2/models/other", Some(KEY_MLP)).await, 403);
    assert_eq!(get("/v2/models/mlp", Some(KEY_MLP)).await, 200);

    // The same over gRPC.
    let mut grpc = grpc_client(&server.grpc).await;
    let status = grpc.model_infer(grpc_infer("mlp", None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = grpc
        .model_infer(grpc_infer("other", Some(("x-api-key", KEY_MLP))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let response = grpc
        .model_infer(grpc_infer("mlp", Some(("authorization", &bearer))))
        .await
        .expect("allowed key")
        .into_inner();
    assert_eq!(response.outputs[0].shape, vec![1, 4]);
    let live = grpc
        .server_live(pb::ServerLiveRequest {})
        .await
        .expect("liveness is open");
    assert!(live.into_inner().live);
    let ready = grpc
        .model_ready(pb::ModelReadyRequest {
            name: "mlp".to_string(),
            version: String::new(),
        })
        .await
        .expect("model readiness is open for probes");
    assert!(ready.into_inner().ready);
    let status = grpc
        .model_metadata(pb::ModelMetadataRequest {
            name: "mlp".to_string(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Rotation: the new file replaces the old keys without a restart.
    std::fs::write(&keys, keys_file(&[("new", KEY_NEW, &["*"])])).unwrap();
    let started = Instant::now();
    loop {
        let (status, _, _) = post(&client, &mlp, &[("x-api-key", KEY_NEW)], &body).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new key was never accepted:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) = post(&client, &mlp, &[("x-api-key", KEY_ALL)], &body).await;
    assert_eq!(status, 401, "a rotated-out key still works");
    // A broken file keeps the current keys.
    std::fs::write(&keys, "keys: [{name: x}]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, _) = post(&client, &mlp, &[("x-api-key", KEY_NEW)], &body).await;
    assert_eq!(status, 200);
    assert!(
        server.log().contains("keeping the previous API keys"),
        "{}",
        server.log()
    );
}

/// An ES256 signing key and its JWKS.
struct TokenIssuer {
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

impl TokenIssuer {
    fn new(kid: &str) -> TokenIssuer {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        TokenIssuer {
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwks: json!({"keys": [{
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }]}),
        }
    }

    fn token(&self, kid: &str, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwt_bearer_tokens_are_checked_for_signature_issuer_audience_expiry_and_models() {
    let repository = two_models("jwt");
    let issuer = TokenIssuer::new("k1");
    let jwks = write(&repository.dir, "jwks.json", &issuer.jwks.to_string());
    let server = Server::start(
        &repository.dir,
        &[
            "--jwt-issuer",
            "https://idp.example",
            "--jwt-audience",
            "sluice",
            "--jwks-file",
            jwks.to_str().unwrap(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let body = fp32_request("input", &[1, 16], &row());
    let claims = |changes: Value| {
        let mut claims = json!({
            "iss": "https://idp.example", "aud": "sluice", "sub": "alice",
            "exp": now() + 600, "models": ["mlp"],
        });
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        claims
    };
    let call = |token: String| {
        let client = client.clone();
        let (mlp, body) = (mlp.clone(), body.clone());
        async move {
            let bearer = format!("Bearer {token}");
            let (status, _, answer) =
                post(&client, &mlp, &[("authorization", &bearer)], &body).await;
            (status, error_of(&answer).to_string())
        }
    };

    let (status, error) = call(issuer.token("k1", claims(json!({})))).await;
    assert_eq!(status, 200, "{error}");
    let cases = [
        (
            claims(json!({"exp": now() - 600})),
            401,
            "the token has expired",
        ),
        (
            claims(json!({"aud": "someone-else"})),
            401,
            "the audience does not include 'sluice'",
        ),
        (
            claims(json!({"iss": "https://evil.example"})),
            401,
            "the issuer is not 'https://idp.example'",
        ),
        (
            claims(json!({"models": ["other"]})),
            403,
            "'jwt:alice' is not allowed to call model 'mlp'",
        ),
        (
            claims(json!({"models": null})),
            403,
            "not allowed to call model 'mlp'",
        ),
    ];
    for (claims, expected_status, expected_error) in cases {
        let (status, error) = call(issuer.token("k1", claims.clone())).await;
        assert_eq!(status, expected_status, "{claims}: {error}");
        assert!(error.contains(expected_error), "{claims}: {error:?}");
    }
    let forger = TokenIssuer::new("k1");
    let (status, error) = call(forger.token("k1", claims(json!({})))).await;
    assert_eq!(status, 401);
    assert!(error.contains("signature"), "{error}");
    let (status, error) = call(issuer.token("k9", claims(json!({})))).await;
    assert_eq!(status, 401);
    assert!(error.contains("no key with kid 'k9'"), "{error}");
    let (status, error) = call("not-a-key-or-token-000000".to_string()).await;
    assert_eq!(status, 401);
    assert!(error.contains("API keys are not accepted"), "{error}");

    let mut grpc = grpc_client(&server.grpc).await;
    let expired = format!(
        "Bearer {}",
        issuer.token("k1", claims(json!({"exp": now() - 600})))
    );
    let status = grpc
        .model_infer(grpc_infer("mlp", Some(("authorization", &expired))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{status:?}");
    let valid = format!("Bearer {}", issuer.token("k1", claims(json!({}))));
    grpc.model_infer(grpc_infer("mlp", Some(("authorization", &valid))))
        .await
        .expect("a valid token works over gRPC");
}

#[tokio::test]
async fn bursts_above_the_rate_get_429_with_retry_after_and_concurrency_is_capped() {
    let repository = Repository::new("rates")
        .with_model("mlp", "mlp", "")
        .with_model("slow", "slow", "max_batch_size: 1\n");
    let keys = write(
        &repository.dir,
        "keys.yaml",
        &keys_file(&[("a", KEY_ALL, &["*"]), ("b", KEY_MLP, &["*"])]),
    );
    let server = Server::start(
        &repository.dir,
        &[
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--rate-limit",
            "0.5",
            "--rate-limit-burst",
            "5",
            "--max-concurrent-per-client",
            "2",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let body = fp32_request("input", &[1, 16], &row());

    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..8 {
        let (status, headers, answer) = post(&client, &mlp, &[("x-api-key", KEY_ALL)], &body).await;
        statuses.push(status);
        if status == 429 {
            refused = Some((headers, answer));
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let (headers, answer) = refused.unwrap();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        error_of(&answer).contains("client 'key:a' is limited to 0.5 requests/s (burst 5)"),
        "{answer}"
    );
    // Another client has its own bucket.
    let (status, _, _) = post(&client, &mlp, &[("x-api-key", KEY_MLP)], &body).await;
    assert_eq!(status, 200);
    let mut grpc = grpc_client(&server.grpc).await;
    let status = grpc
        .model_infer(grpc_infer("mlp", Some(("x-api-key", KEY_ALL))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());

    // Concurrency: client b sends 4 slow requests at once; 2 run, 2 are refused.
    let slow = format!("{}/v2/models/slow/infer", server.http);
    let concurrent = (0..4).map(|_| {
        let (client, slow, body) = (client.clone(), slow.clone(), body.clone());
        async move { post(&client, &slow, &[("x-api-key", KEY_MLP)], &body).await }
    });
    let answers = futures::future::join_all(concurrent).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 429, 429], "{answers:?}");
    let refused = answers
        .iter()
        .find(|(status, _, _)| *status == 429)
        .unwrap();
    assert!(
        error_of(&refused.2).contains("already has 2 requests in flight"),
        "{:?}",
        refused.2
    );
}

#[tokio::test]
async fn a_model_rate_limit_is_shared_by_all_clients() {
    let repository = two_models("model-rate");
    let server = Server::start(
        &repository.dir,
        &["--model-rate-limit", "0.5", "--model-rate-limit-burst", "2"],
    )
    .await;
    let client = reqwest::Client::new();
    let body = fp32_request("input", &[1, 16], &row());
    let url = |model: &str| format!("{}/v2/models/{model}/infer", server.http);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(post(&client, &url("mlp"), &[], &body).await.0);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let (_, _, answer) = post(&client, &url("mlp"), &[], &body).await;
    assert!(
        error_of(&answer).contains("model 'mlp' is limited"),
        "{answer}"
    );
    assert_eq!(post(&client, &url("other"), &[], &body).await.0, 200);
}

#[tokio::test]
async fn request_limits_refuse_with_the_limit_named() {
    let repository = two_models("limits");
    let server = Server::start(
        &repository.dir,
        &[
            "--max-body-bytes",
            "20000",
            "--max-tensor-elements",
            "64",
            "--max-batch-rows",
            "8",
            "--max-header-bytes",
            "2048",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let cases = [
        (fp32_request("input", &[4, 16], &[0.5; 64]), 200, ""),
        (
            fp32_request("input", &[5, 16], &[0.5; 80]),
            400,
            "80 elements, over the limit of 64 (--max-tensor-elements)",
        ),
        (
            fp32_request("input", &[9, 1], &[0.5; 9]),
            400,
            "9 rows, over the limit of 8 rows per request (--max-batch-rows)",
        ),
        (
            fp32_request("input", &[512, 16], &[0.5; 8192]),
            413,
            "limit of 20000 bytes (--max-body-bytes)",
        ),
    ];
    for (body, expected_status, expected_error) in cases {
        let (status, _, answer) = post(&client, &mlp, &[], &body).await;
        assert_eq!(status, expected_status, "{answer}");
        assert!(error_of(&answer).contains(expected_error), "{answer}");
    }
    let big = "x".repeat(3000);
    let body = fp32_request("input", &[1, 16], &row());
    let (status, _, answer) = post(&client, &mlp, &[("x-padding", &big)], &body).await;
    assert_eq!(status, 431, "{answer}");
    assert!(
        error_of(&answer).contains("over the limit of 2048 bytes (--max-header-bytes)"),
        "{answer}"
    );

    let mut grpc = grpc_client(&server.grpc).await;
    let mut request = grpc_infer("mlp", None);
    request.get_mut().inputs[0].shape = vec![16, 1];
    let status = grpc.model_infer(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("--max-batch-rows"), "{status:?}");
}

fn audit_lines(path: &Path, count: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= count || started.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_audit_log_has_one_line_per_request_and_payloads_only_when_sampled() {
    let repository = two_models("audit");
    let keys = write(
        &repository.dir,
        "keys.yaml",
        &keys_file(&[("mlp-only", KEY_MLP, &["mlp"])]),
    );
    let audit = repository.dir.join("audit.log");
    let server = Server::start(
        &repository.dir,
        &[
            "--api-keys-file",
            keys.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let body = fp32_request("input", &[1, 16], &row());
    let key = [("x-api-key", KEY_MLP), ("x-request-id", "req-42")];
    let url = |model: &str| format!("{}/v2/models/{model}/infer", server.http);
    let (status, headers, _) = post(&client, &url("mlp"), &key, &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "req-42");
    post(&client, &url("other"), &key, &body).await;
    post(&client, &url("mlp"), &[], &body).await;
    let mut grpc = grpc_client(&server.grpc).await;
    grpc.model_infer(grpc_infer("mlp", Some(("x-api-key", KEY_MLP))))
        .await
        .unwrap();

    let lines = audit_lines(&audit, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(ok["request_id"], "req-42");
    assert_eq!(ok["client"], "key:mlp-only");
    assert_eq!(ok["auth"], "api-key");
    // An authenticated caller's address is read for the audit line alone.
    assert!(
        ok["remote"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{ok}"
    );
    assert_eq!(ok["model"], "mlp");
    assert_eq!(ok["version"], "1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["operation"], "POST /v2/models/mlp/infer");
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        ok["request_bytes"],
        serde_json::to_vec(&body).unwrap().len()
    );
    assert!(ok["response_bytes"].as_u64().unwrap() > 0);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        ok.get("payload").is_none_or(Value::is_null),
        "payload logged unasked: {ok}"
    );
    assert_eq!(
        (lines[1]["status"].as_u64(), lines[1]["model"].as_str()),
        (Some(403), Some("other"))
    );
    assert_eq!(lines[2]["status"], 401);
    assert!(lines[2]["client"].is_null());
    assert_eq!(lines[3]["protocol"], "grpc");
    assert_eq!(lines[3]["operation"], "ModelInfer");
    assert_eq!(lines[3]["status"], 200);
    assert_eq!(lines[3]["version"], "1");
    drop(server);

    let sampled = repository.dir.join("sampled.log");
    let server = Server::start(
        &repository.dir,
        &[
            "--audit-log",
            sampled.to_str().unwrap(),
            "--audit-payload-sample-rate",
            "1",
        ],
    )
    .await;
    let (status, _, _) = post(
        &client,
        &format!("{}/v2/models/mlp/infer", server.http),
        &[],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let lines = audit_lines(&sampled, 1);
    assert_eq!(lines[0]["client"], "ip:127.0.0.1");
    assert_eq!(lines[0]["auth"], "none");
    let payload: Value = serde_json::from_str(lines[0]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, body);
}

async fn grpc_tls(
    url: &str,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<GrpcInferenceServiceClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(GrpcInferenceServiceClient::new(channel))
}

async fn grpc_tls_infer(
    url: &str,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<pb::ModelInferResponse, String> {
    let mut client = grpc_tls(url, ca, identity).await?;
    client
        .model_infer(grpc_infer("mlp", None))
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn tls_serves_rest_and_grpc_and_picks_up_a_rotated_certificate() {
    let repository = two_models("tls");
    let pki = Pki::new("sluice test CA");
    let (cert, key) = pki.issue("localhost");
    let cert_path = write(&repository.dir, "tls.crt", &cert);
    let key_path = write(&repository.dir, "tls.key", &key);
    let client = https_client(&pki.ca_pem, None);
    let server = Server::start_with(
        &repository.dir,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--security-reload-seconds",
            "0.1",
        ],
        "https://localhost",
        &client,
    )
    .await;
    let body = fp32_request("input", &[1, 16], &row());
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let (status, _, answer) = post(&client, &mlp, &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    let plain = mlp.replace("https://", "http://");
    assert!(
        reqwest::Client::new()
            .post(&plain)
            .json(&body)
            .send()
            .await
            .is_err(),
        "plain HTTP was answered"
    );
    grpc_tls_infer(&server.grpc, &pki.ca_pem, None)
        .await
        .unwrap();

    // Rotation to a certificate from another CA: new connections present it.
    let rotated = Pki::new("rotated CA");
    let (cert, key) = rotated.issue("localhost");
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&cert_path, cert).unwrap();
    let fresh = https_client(&rotated.ca_pem, None);
    let started = Instant::now();
    while fresh.post(&mlp).json(&body).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never rotated:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    grpc_tls_infer(&server.grpc, &rotated.ca_pem, None)
        .await
        .unwrap();
    assert!(
        https_client(&pki.ca_pem, None)
            .post(&mlp)
            .json(&body)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let repository = two_models("mtls");
    let pki = Pki::new("server CA");
    let clients = Pki::new("client CA");
    let (cert, key) = pki.issue("localhost");
    let cert_path = write(&repository.dir, "tls.crt", &cert);
    let key_path = write(&repository.dir, "tls.key", &key);
    let ca_path = write(&repository.dir, "client-ca.crt", &clients.ca_pem);
    let (client_cert, client_key) = clients.issue("client-a");
    let client = https_client(&pki.ca_pem, Some((&client_cert, &client_key)));
    let server = Server::start_with(
        &repository.dir,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--tls-client-ca",
            ca_path.to_str().unwrap(),
        ],
        "https://localhost",
        &client,
    )
    .await;
    let body = fp32_request("input", &[1, 16], &row());
    let mlp = format!("{}/v2/models/mlp/infer", server.http);
    let (status, _, answer) = post(&client, &mlp, &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    // Without a certificate, only the health probes answer (kubelet has none).
    let anonymous = https_client(&pki.ca_pem, None);
    let (status, _, answer) = post(&anonymous, &mlp, &[], &body).await;
    assert_eq!(status, 401, "{answer}");
    assert!(error_of(&answer).contains("client certificate"), "{answer}");
    let ready = anonymous
        .get(format!("{}/v2/health/ready", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (stranger_cert, stranger_key) = Pki::new("unknown CA").issue("intruder");
    let stranger = https_client(&pki.ca_pem, Some((&stranger_cert, &stranger_key)));
    assert!(
        stranger.post(&mlp).json(&body).send().await.is_err(),
        "a certificate from an unknown CA passed the handshake"
    );

    grpc_tls_infer(&server.grpc, &pki.ca_pem, Some((&client_cert, &client_key)))
        .await
        .unwrap();
    let error = grpc_tls_infer(&server.grpc, &pki.ca_pem, None)
        .await
        .unwrap_err();
    assert!(error.contains("Unauthenticated"), "{error}");
    let mut probe = grpc_tls(&server.grpc, &pki.ca_pem, None).await.unwrap();
    assert!(
        probe
            .server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
}
