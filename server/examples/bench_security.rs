//! `make bench-security`: what authentication and rate limiting cost per request.
//! The same sluice-server binary serves the fixture MLP in several
//! configurations: everything off; the guard with only a header-size check; rate
//! limits alone (client and model token buckets and a per-client concurrency
//! limit, set high enough never to refuse, so what is measured is their
//! bookkeeping); API keys (100 in the file) with those limits; and JWT with those
//! limits. A row "off, API key sent" sends the API key header to a server that
//! ignores it: what carrying the credential costs before any check.
//!
//! Each round pairs a fresh 'off' server with a fresh server of each
//! configuration and loads both at once with closed-loop clients, so whatever
//! else slows the shared machine slows both alike. The figures are medians over
//! the rounds of the server's CPU time per request (and of requests answered),
//! against the 'off' server beside it; a control row, 'off' against 'off', shows
//! the method's noise. Prints figures; asserts nothing.
//!
//! The servers run pinned to CPU 0; pin this process to another CPU, as
//! `make bench-security` does.

#[path = "support/launch.rs"]
mod launch;
mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use launch::median;
use support::{Server, closed_loop, process_cpu};

/// Rounds unless `ROUNDS` in the environment says otherwise: each costs about
/// 3 s per configuration, and a row's spread from round to round is about 1.5%,
/// so 10 rounds put its median within about 1%, 30 within about 0.5%.
const DEFAULT_ROUNDS: usize = 10;
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

/// One configuration: the server's flags and the header its requests carry.
struct Configuration {
    name: &'static str,
    flags: Vec<String>,
    header: Option<(&'static str, String)>,
}

/// A configuration's server, started for one round.
struct Running<'a> {
    configuration: &'a Configuration,
    port: u16,
    server: Server,
}

/// A fresh server of `configuration` ([`launch::launch`]).
async fn launch<'a>(
    binary: &Path,
    repository: &Path,
    configuration: &'a Configuration,
) -> anyhow::Result<Running<'a>> {
    let (server, port) =
        launch::launch(binary, repository, &configuration.flags, configuration.name).await?;
    Ok(Running {
        configuration,
        port,
        server,
    })
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

/// What one load run measured.
#[derive(Clone, Copy)]
struct Round {
    requests_per_second: f64,
    /// The server process's CPU time per request, in microseconds.
    cpu_micros_per_request: f64,
}

/// Requests per second and the server's CPU per request over `CONCURRENCY`
/// keep-alive connections for `duration` ([`support::closed_loop`]).
async fn load(running: &Running<'_>, duration: Duration) -> Round {
    let header = running.configuration.header.clone();
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
    let pid = running.server.0.id();
    let cpu_before = process_cpu(pid);
    let (latencies, elapsed) = closed_loop(running.port, CONCURRENCY, duration, request).await;
    let cpu = process_cpu(pid) - cpu_before;
    let requests = latencies.len().max(1) as f64;
    Round {
        requests_per_second: requests / elapsed.as_secs_f64(),
        cpu_micros_per_request: cpu.as_secs_f64() * 1e6 / requests,
    }
}

/// Loads both servers at once for `duration`. They share a CPU and a load, so
/// whatever else slows the machine slows both alike, and the CPU each spends per
/// request can be compared.
async fn load_pair(
    baseline: &Running<'_>,
    candidate: &Running<'_>,
    duration: Duration,
) -> (Round, Round) {
    tokio::join!(load(baseline, duration), load(candidate, duration))
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

/// The mean of `values` and the half-width of its 95% confidence interval
/// (normal approximation).
fn mean_and_interval(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (variance / n).sqrt())
}

fn main() -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let binary = exe
        .parent()
        .context("bench has a folder")?
        .join("../sluice-server");
    let repository = launch::mlp_repository("bench-security")?;
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
        let flags = |first: &[&str]| -> Vec<String> {
            first.iter().chain(&LIMITS).map(|flag| flag.to_string()).collect()
        };
        let off = Configuration { name: "off", flags: Vec::new(), header: None };
        let candidates = [
            // The control: 'off' against itself shows how far apart two servers
            // of one configuration measure, the method's noise.
            Configuration { name: "off (control)", flags: Vec::new(), header: None },
            // The guard with only a header-size check: what being checked costs.
            Configuration {
                name: "guard alone",
                flags: vec!["--max-header-bytes".into(), "65536".into()],
                header: None,
            },
            Configuration { name: "rate limits alone", flags: flags(&[]), header: None },
            // The credential header on a server that ignores it: the cost of
            // receiving it, which any authenticating server pays.
            Configuration {
                name: "off, API key sent",
                flags: Vec::new(),
                header: Some(("x-api-key", key.to_string())),
            },
            Configuration {
                name: "API key + rate limits",
                flags: flags(&["--api-keys-file", keys_path.to_str().context("UTF-8 path")?]),
                header: Some(("x-api-key", key.to_string())),
            },
            Configuration {
                name: "JWT + rate limits",
                flags: flags(&[
                    "--jwt-issuer", "bench", "--jwt-audience", "sluice",
                    "--jwks-file", jwks_path.to_str().context("UTF-8 path")?,
                ]),
                header: Some(("authorization", format!("Bearer {token}"))),
            },
        ];
        println!("sluice security bench: fixture MLP, 1-row JSON requests, concurrency {CONCURRENCY} per server, servers on CPU 0");
        let rounds = match std::env::var("ROUNDS") {
            Ok(text) => text.parse::<usize>().ok().filter(|n| *n > 0).context("ROUNDS must be a positive number")?,
            Err(_) => DEFAULT_ROUNDS,
        };
        println!("{rounds} rounds; each pairs a fresh 'off' server with a fresh server of each configuration, loaded at once for {MEASURE:?}");
        let mut ratios: Vec<Vec<(f64, f64)>> = vec![Vec::new(); candidates.len()];
        let mut off_rates = Vec::new();
        for round in 0..rounds {
            let mut line = format!("round {:>2}:", round + 1);
            for index in (0..candidates.len()).map(|i| (i + round) % candidates.len()) {
                let candidate = &candidates[index];
                // Fresh servers every round: two processes of one configuration
                // differ by several percent (where their memory landed, which
                // ports they got), and fresh ones spread that over the rounds.
                let (baseline, candidate) = (launch(&binary, &repository, &off).await?, launch(&binary, &repository, candidate).await?);
                load_pair(&baseline, &candidate, WARM).await;
                let (base, on) = load_pair(&baseline, &candidate, MEASURE).await;
                line += &format!(
                    "  {}: {:.1}/{:.1} us CPU",
                    candidate.configuration.name, on.cpu_micros_per_request, base.cpu_micros_per_request
                );
                ratios[index].push((
                    base.cpu_micros_per_request / on.cpu_micros_per_request,
                    on.requests_per_second / base.requests_per_second,
                ));
                off_rates.push(base.requests_per_second);
            }
            println!("{line}");
        }
        println!();
        println!("median over the rounds, against the 'off' server run beside it:");
        for (configuration, pairs) in candidates.iter().zip(&ratios) {
            let by_cpu = median(&mut pairs.iter().map(|p| p.0).collect::<Vec<_>>());
            let throughput = median(&mut pairs.iter().map(|p| p.1).collect::<Vec<_>>());
            let costs: Vec<f64> = pairs.iter().map(|p| 100.0 * (1.0 - p.0)).collect();
            let (mean, interval) = mean_and_interval(&costs);
            println!(
                "{:<24} by CPU per request {:>7.2}% of off (cost {:+.2}%; mean {:+.2}% ± {:.2})   by throughput {:>7.2}% of off",
                configuration.name,
                100.0 * by_cpu,
                100.0 * (1.0 - by_cpu),
                mean,
                interval,
                100.0 * throughput,
            );
        }
        // Alone on its CPU, an 'off' server would answer about twice the rate
        // it reached beside another.
        let off_rate = 2.0 * median(&mut off_rates);
        let bearer = format!("Bearer {token}");
        let costs = [
            ("API key + rate limits", guard_cost(&keys_path, &jwks_path, ("x-api-key", key)).await?),
            ("JWT + rate limits", guard_cost(&keys_path, &jwks_path, ("authorization", &bearer)).await?),
        ];
        println!();
        println!("in-process guard cost per request ({GUARD_CALLS} calls, one thread):");
        let request_ns = 1e9 / off_rate;
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
