//! `make bench-security`: what authentication and rate limiting cost per request.
//! The same sluice-server binary runs in three configurations on the fixture MLP:
//! everything off; API keys (100 in the file) + client and model token buckets +
//! a per-client concurrency limit; and JWT (cached after the first check) with the
//! same limits. The limits are set high enough never to refuse, so what is
//! measured is their bookkeeping. A closed-loop client drives each configuration
//! in turn, interleaved over several rounds, since the machine is shared and
//! noisy; the figures are medians over the rounds. Prints figures; asserts nothing.
//!
//! The servers run pinned to CPU 0; pin this process to another CPU, as
//! `make bench-security` does.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use support::{Server, closed_loop};

const ROUNDS: usize = 9;
const MEASURE: Duration = Duration::from_secs(2);
/// Calls of the guard per in-process measurement.
const GUARD_CALLS: u32 = 200_000;
const WARM: Duration = Duration::from_millis(500);
const CONCURRENCY: usize = 16;
const BODY: &str = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,16],"data":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5,1.6]}]}"#;
const LIMITS: [&str; 10] = [
    "--rate-limit",
    "1000000",
    "--rate-limit-burst",
    "1000000",
    "--model-rate-limit",
    "1000000",
    "--model-rate-limit-burst",
    "1000000",
    "--max-concurrent-per-client",
    "1000",
];

/// One configuration: its server, port and the header its requests carry.
struct Configuration {
    name: &'static str,
    port: u16,
    header: Option<(&'static str, String)>,
    server: Server,
}

/// A port nothing listens on (the machine is shared: fixed ports may be taken).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start(binary: &Path, repository: &Path, port: u16, flags: &[&str]) -> anyhow::Result<Server> {
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(binary)
        .args(["serve", "--host", "127.0.0.1", "--model-repository"])
        .arg(repository)
        .args([
            "--http-port",
            &port.to_string(),
            "--grpc-port",
            &(port + 1).to_string(),
        ])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start sluice-server")?;
    Ok(Server(child))
}

/// An ES256 key pair: the JWKS text and a token for `sub: bench` valid for an hour.
fn jwt() -> anyhow::Result<(String, String)> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let raw = pair.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "bench",
        "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".to_string());
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = serde_json::json!({"iss": "bench", "aud": "sluice", "sub": "bench", "exp": exp, "models": "*"});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
    )?;
    Ok((jwks.to_string(), token))
}

async fn wait_ready(port: u16) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/v2/health/ready"))
            .send()
            .await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server on port {port} never became ready");
}

/// Requests per second over `CONCURRENCY` keep-alive connections for `duration`
/// ([`support::closed_loop`]).
async fn load(configuration: &Configuration, duration: Duration) -> f64 {
    let header = configuration.header.clone();
    let request = move || {
        let mut request = hyper::Request::post("/v2/models/mlp/infer")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json");
        if let Some((name, value)) = &header {
            request = request.header(*name, value);
        }
        request
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .expect("request")
    };
    let (latencies, elapsed) =
        closed_loop(configuration.port, CONCURRENCY, duration, request).await;
    latencies.len() as f64 / elapsed.as_secs_f64()
}

/// Nanoseconds per guard decision (authenticate, authorize, concurrency slot,
/// client and model buckets), measured in-process: the part of a request's cost
/// that the guard adds, free of the network and scheduling noise of the
/// end-to-end rounds.
async fn guard_cost(keys: &Path, jwks: &Path, header: (&str, &str)) -> anyhow::Result<f64> {
    use sluice_server::security::auth::Credentials;
    use sluice_server::security::jwt::{JwksSource, JwtOptions};
    use sluice_server::security::ratelimit::Rate;
    use sluice_server::security::{Security, SecurityOptions};

    let options = SecurityOptions {
        api_keys_file: Some(keys.to_path_buf()),
        jwt: Some(JwtOptions {
            issuer: "bench".into(),
            audience: "sluice".into(),
            jwks: JwksSource::File(jwks.to_path_buf()),
            models_claim: "models".into(),
            refresh: Duration::from_secs(300),
            leeway_seconds: 30,
        }),
        client_rate: Some(Rate::new(1e9, 1_000_000_000).map_err(anyhow::Error::msg)?),
        model_rate: Some(Rate::new(1e9, 1_000_000_000).map_err(anyhow::Error::msg)?),
        max_concurrent_per_client: Some(1000),
        reload_interval: Duration::from_secs(5),
        ..SecurityOptions::default()
    };
    let security = Security::load(&options).await?;
    let mut headers = hyper::HeaderMap::new();
    headers.insert(
        hyper::header::HeaderName::from_bytes(header.0.as_bytes())?,
        header.1.parse()?,
    );
    let peer = Some(std::net::IpAddr::from([127, 0, 0, 1]));
    let started = Instant::now();
    for _ in 0..GUARD_CALLS {
        let credentials =
            Credentials::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        let admission = security.admit(&credentials, peer, Some("mlp"));
        assert!(
            admission.is_ok(),
            "the guard refused the benchmark's credentials"
        );
        std::hint::black_box(admission.is_ok());
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(GUARD_CALLS))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .context("bench has a folder")?
        .join("../sluice-server");
    let model = root.join("server/fixtures/models/mlp/1/model.onnx");
    anyhow::ensure!(
        model.exists(),
        "run `make deps` first: {} is missing",
        model.display()
    );

    let repository =
        std::env::temp_dir().join(format!("sluice-bench-security-{}", std::process::id()));
    std::fs::create_dir_all(repository.join("mlp/1"))?;
    std::fs::copy(&model, repository.join("mlp/1/model.onnx"))?;
    std::fs::write(
        repository.join("mlp/config.yaml"),
        "max_batch_size: 64\nintra_op_threads: 1\n",
    )?;
    let secrets = repository.with_extension("secrets");
    std::fs::create_dir_all(&secrets)?;
    let key = "sk-bench-4f9a1c7e2b8d3f60a5c9e1b7d2f8a4c6";
    let mut keys = "keys:\n".to_string();
    for index in 0..100 {
        let this = if index == 57 {
            key.to_string()
        } else {
            format!("sk-other-{index:032}")
        };
        keys += &format!(
            "  - name: client-{index}\n    sha256: {}\n    models: ['*']\n",
            sluice_server::security::keys::digest_hex(&this)
        );
    }
    let keys_path = secrets.join("keys.yaml");
    std::fs::write(&keys_path, keys)?;
    let (jwks, token) = jwt()?;
    let jwks_path = secrets.join("jwks.json");
    std::fs::write(&jwks_path, jwks)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let keys_flags: Vec<&str> = ["--api-keys-file", keys_path.to_str().unwrap()].into_iter().chain(LIMITS).collect();
        let jwt_flags: Vec<&str> = [
            "--jwt-issuer", "bench", "--jwt-audience", "sluice", "--jwks-file", jwks_path.to_str().unwrap(),
        ]
        .into_iter()
        .chain(LIMITS)
        .collect();
        let ports = [free_port()?, free_port()?, free_port()?];
        let mut configurations = [
            Configuration { name: "off", port: ports[0], header: None, server: start(&binary, &repository, ports[0], &[])? },
            Configuration {
                name: "API key + rate limits",
                port: ports[1],
                header: Some(("x-api-key", key.to_string())),
                server: start(&binary, &repository, ports[1], &keys_flags)?,
            },
            Configuration {
                name: "JWT + rate limits",
                port: ports[2],
                header: Some(("authorization", format!("Bearer {token}"))),
                server: start(&binary, &repository, ports[2], &jwt_flags)?,
            },
        ];
        for configuration in &mut configurations {
            wait_ready(configuration.port).await;
            anyhow::ensure!(
                configuration.server.0.try_wait()?.is_none(),
                "the '{}' server exited (port {} taken?)",
                configuration.name,
                configuration.port
            );
            load(configuration, WARM).await;
        }
        println!("sluice security bench: fixture MLP, 1-row JSON requests, concurrency {CONCURRENCY}, server on CPU 0");
        println!("{ROUNDS} interleaved rounds of {MEASURE:?} per configuration; requests/s");
        let mut figures = vec![Vec::new(); configurations.len()];
        for round in 0..ROUNDS {
            let mut line = format!("round {}:", round + 1);
            for (index, configuration) in configurations.iter().enumerate() {
                load(configuration, WARM).await;
                let rate = load(configuration, MEASURE).await;
                line += &format!("  {} {rate:.0}", configuration.name);
                figures[index].push(rate);
            }
            println!("{line}");
        }
        let medians: Vec<f64> = figures.iter_mut().map(|f| median(f)).collect();
        let bearer = format!("Bearer {token}");
        let costs = [
            ("API key + rate limits", guard_cost(&keys_path, &jwks_path, ("x-api-key", key)).await?),
            ("JWT + rate limits", guard_cost(&keys_path, &jwks_path, ("authorization", &bearer)).await?),
        ];
        println!();
        for (configuration, value) in configurations.iter().zip(&medians) {
            println!(
                "{:<24} median {value:>9.0} requests/s   {:>6.2}% of off   (cost {:+.2}%)",
                configuration.name,
                100.0 * value / medians[0],
                100.0 * (1.0 - value / medians[0])
            );
        }
        println!();
        println!("in-process guard cost per request ({GUARD_CALLS} calls, one thread):");
        let request_ns = 1e9 / medians[0];
        for (name, ns) in costs {
            println!(
                "{name:<24} {ns:>7.0} ns per request = {:.2}% of the {request_ns:.0} ns a request takes at the 'off' median",
                100.0 * ns / request_ns
            );
        }
        anyhow::Ok(())
    })?;
    std::fs::remove_dir_all(&repository)?;
    std::fs::remove_dir_all(&secrets)?;
    Ok(())
}
