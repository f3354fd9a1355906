//! `sluice-server loadtest`: finds the highest request rate one server sustains
//! within a latency objective.
//!
//! The load is open-loop: request `i` of a step is due at `start + i / rate`
//! whatever happened to the requests before it, and its latency is measured from
//! that due time, so a server that falls behind shows its queueing in the
//! percentiles instead of slowing the generator down (no coordinated omission).
//! Rates double while a step meets the objective, then a bisection narrows the
//! boundary between the best passing and the first failing rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use reqwest::Url;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use tokio_rustls::TlsConnector;

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("cannot connect to {address}: {message}")]
    Connect {
        address: SocketAddr,
        message: String,
    },
    #[error("--url {url}: {message}")]
    Url { url: String, message: String },
    #[error("--ca-cert: {0}")]
    CaCert(String),
    #[error("{0}")]
    Setup(String),
}

/// The server under load, from its `--url`: where to connect, whether over
/// TLS, and the path prefix its routes sit under (e.g. a gateway's
/// `https://gateway/ml/fraud` serves `/ml/fraud/v2/...`).
pub struct Endpoint {
    url: Url,
    address: SocketAddr,
    /// The `host` header: the URL's host and port as written.
    authority: HeaderValue,
    /// For `https`: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// Resolves an `http` or `https` URL. For `https`, the server's certificate
    /// must chain to a public root or to a certificate in `ca_pem`.
    pub async fn resolve(url: Url, ca_pem: Option<&[u8]>) -> Result<Endpoint, LoadTestError> {
        let invalid = |message: &str| LoadTestError::Url {
            url: url.to_string(),
            message: message.to_string(),
        };
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment has no place in a server URL"));
        }
        let host = url.host_str().ok_or_else(|| invalid("no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("no port"))?;
        let address = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| invalid(&format!("{host} does not resolve")))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let authority = HeaderValue::from_str(&authority)
            .map_err(|_| invalid("the host is not a header value"))?;
        let tls = if https {
            // `url` writes IPv6 hosts in brackets; a server name has none.
            let name = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(name.to_string())
                .map_err(|_| invalid("the host is not a valid TLS server name"))?;
            Some((tls_connector(ca_pem)?, name))
        } else {
            None
        };
        Ok(Endpoint {
            url,
            address,
            authority,
            tls,
        })
    }

    /// A client for requests besides the load (the metadata lookup), trusting
    /// for `https` what the load's connections trust.
    pub fn client(&self) -> reqwest::Result<reqwest::Client> {
        let builder = reqwest::Client::builder();
        match &self.tls {
            Some((connector, _)) => {
                builder.use_preconfigured_tls(rustls::ClientConfig::clone(connector.config()))
            }
            None => builder,
        }
        .build()
    }

    /// The URL of a route, e.g. `v2/models/mlp`, under the endpoint's prefix.
    pub fn url_of(&self, route: &str) -> Url {
        let mut url = self.url.clone();
        url.set_path(&self.path_of(route));
        url
    }

    /// The request path of a route, under the endpoint's prefix.
    pub fn path_of(&self, route: &str) -> String {
        format!("{}/{route}", self.url.path().trim_end_matches('/'))
    }

    /// An open HTTP/1.1 keep-alive connection, over TLS for `https`.
    pub async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, LoadTestError> {
        let address = self.address;
        let failed = |message: String| LoadTestError::Connect { address, message };
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| failed(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| failed(e.to_string()))?;
        match &self.tls {
            None => handshake(stream).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| failed(format!("TLS: {e}")))?;
                handshake(stream).await
            }
        }
        .map_err(|e| failed(e.to_string()))
    }
}

/// An HTTP/1.1 client connection over `io`, driven by a task of its own.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A TLS client trusting the public roots and the certificates in `ca_pem`.
fn tls_connector(ca_pem: Option<&[u8]>) -> Result<TlsConnector, LoadTestError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| LoadTestError::CaCert(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| LoadTestError::CaCert(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(LoadTestError::CaCert(
                "no PEM certificate in the file".to_string(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadTestError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A prepared inference request.
#[derive(Clone)]
pub struct Target {
    /// The server.
    pub endpoint: Arc<Endpoint>,
    /// The request path, prefix included, e.g. `/v2/models/mlp/infer`.
    pub path: String,
    /// The JSON body.
    pub body: Bytes,
    /// Headers every request carries besides host and content type, e.g.
    /// credentials for a server that requires them.
    pub headers: hyper::HeaderMap,
}

impl Target {
    fn request(&self) -> hyper::Request<Full<Bytes>> {
        let mut request = hyper::Request::post(self.path.as_str())
            .header("host", self.endpoint.authority.clone())
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .expect("a valid request");
        request.headers_mut().extend(self.headers.clone());
        request
    }
}

/// Parses a `NAME: VALUE` header given on the command line.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), LoadTestError> {
    let invalid = |why: String| LoadTestError::Setup(format!("--header '{text}': {why}"));
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| invalid("expected NAME: VALUE".to_string()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| invalid(format!("'{}' is not a header name", name.trim())))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| invalid("the value has characters a header cannot carry".to_string()))?;
    Ok((name, value))
}

/// How to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    /// The first rate tried, requests per second.
    pub start_rate: f64,
    /// The highest rate tried.
    pub max_rate: f64,
    /// The latency objective: a step passes when its p99 is at most this.
    pub p99_objective: Duration,
    /// How long each step sends.
    pub step_duration: Duration,
    /// Connections (the most requests in flight at once).
    pub connections: usize,
    /// Bisection steps after the first failure.
    pub refinements: usize,
}

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// The offered rate, requests per second.
    pub rate: f64,
    /// Requests that completed successfully per second.
    pub achieved: f64,
    /// Latency percentiles from each request's due time, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Requests that failed or got a non-2xx answer.
    pub errors: usize,
    /// Of the errors, requests refused with 429 Too Many Requests (a full queue).
    pub refused: usize,
    /// Whether the step met the objective.
    pub passed: bool,
}

/// The search's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The highest rate that met the objective (0 if none did).
    pub max_rate: f64,
    /// The p99 latency at that rate, in milliseconds.
    pub p99_ms: f64,
    /// The objective, in milliseconds.
    pub p99_objective_ms: f64,
    /// Every step, in order.
    pub steps: Vec<StepResult>,
}

/// Latency at quantile `q` of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::INFINITY;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Sends requests at `rate` per second for `options.step_duration`.
pub async fn run_step(
    target: &Target,
    rate: f64,
    options: &SearchOptions,
) -> Result<StepResult, LoadTestError> {
    let total = (rate * options.step_duration.as_secs_f64()).ceil().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (sender, receiver) = async_channel::bounded::<Instant>(total);
    let start = Instant::now() + Duration::from_millis(50);
    for index in 0..total {
        sender
            .try_send(start + interval * index as u32)
            .expect("room for every request");
    }
    sender.close();
    let mut workers = Vec::new();
    for _ in 0..options.connections.max(1) {
        let mut connection = target.endpoint.connect().await?;
        let receiver = receiver.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut errors, mut refused) = (0, 0);
            while let Ok(due) = receiver.recv().await {
                tokio::time::sleep_until(due.into()).await;
                // A server that answered `Connection: close` (one that is draining)
                // closed this connection: open the next one, as a keep-alive pool does.
                if connection.ready().await.is_err()
                    && let Ok(fresh) = target.endpoint.connect().await
                {
                    connection = fresh;
                }
                let status = match connection.send_request(target.request()).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.ok().map(|_| status)
                    }
                    Err(_) => None,
                };
                match status {
                    Some(status) if status.is_success() => latencies.push(due.elapsed()),
                    Some(status) => {
                        errors += 1;
                        refused += usize::from(status == hyper::StatusCode::TOO_MANY_REQUESTS);
                    }
                    None => {
                        errors += 1;
                        if let Ok(fresh) = target.endpoint.connect().await {
                            connection = fresh;
                        }
                    }
                }
            }
            (latencies, errors, refused)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let (mut errors, mut refused) = (0, 0);
    for worker in workers {
        let (mine, failed, too_many) = worker
            .await
            .map_err(|e| LoadTestError::Setup(e.to_string()))?;
        latencies.extend(mine);
        errors += failed;
        refused += too_many;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    latencies.sort();
    let p99_ms = percentile_ms(&latencies, 0.99);
    let achieved = latencies.len() as f64 / elapsed;
    Ok(StepResult {
        rate,
        achieved,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms,
        errors,
        refused,
        passed: errors == 0 && p99_ms <= options.p99_objective.as_secs_f64() * 1e3,
    })
}

/// Doubles the rate while steps pass, then bisects towards the boundary.
pub async fn search(
    target: &Target,
    options: &SearchOptions,
    mut report: impl FnMut(&StepResult),
) -> Result<SearchResult, LoadTestError> {
    let mut steps = Vec::new();
    let mut best: Option<StepResult> = None;
    let mut failing: Option<f64> = None;
    let mut rate = options.start_rate.max(1.0);
    while rate <= options.max_rate {
        let step = run_step(target, rate, options).await?;
        report(&step);
        steps.push(step.clone());
        if step.passed {
            best = Some(step);
            rate *= 2.0;
        } else {
            failing = Some(rate);
            break;
        }
    }
    if let Some(mut high) = failing {
        let mut low = best.as_ref().map_or(0.0, |step| step.rate);
        for _ in 0..options.refinements {
            let rate = (low + high) / 2.0;
            if rate < 1.0 || high - low < high * 0.05 {
                break;
            }
            let step = run_step(target, rate, options).await?;
            report(&step);
            steps.push(step.clone());
            if step.passed {
                low = rate;
                best = Some(step);
            } else {
                high = rate;
            }
        }
    }
    Ok(SearchResult {
        max_rate: best.as_ref().map_or(0.0, |step| step.rate),
        p99_ms: best.as_ref().map_or(f64::NAN, |step| step.p99_ms),
        p99_objective_ms: options.p99_objective.as_secs_f64() * 1e3,
        steps,
    })
}

/// A JSON inference request for a model, from its metadata: every input with
/// `rows` in its dynamic first dimension and 1 in other dynamic dimensions,
/// filled with small varied values.
pub fn synthesize_request(
    metadata: &serde_json::Value,
    rows: usize,
) -> Result<String, LoadTestError> {
    let inputs = metadata["inputs"]
        .as_array()
        .filter(|inputs| !inputs.is_empty())
        .ok_or_else(|| {
            LoadTestError::Setup(format!("the model metadata lists no inputs: {metadata}"))
        })?;
    let mut request_inputs = Vec::new();
    for input in inputs {
        let name = input["name"].as_str().unwrap_or_default();
        let datatype = input["datatype"].as_str().unwrap_or_default();
        let shape: Vec<i64> = input["shape"]
            .as_array()
            .map(|dims| dims.iter().filter_map(serde_json::Value::as_i64).collect())
            .unwrap_or_default();
        let shape = crate::tensor::concrete_shape(&shape, rows);
        let count: i64 = shape.iter().product();
        let data: Vec<serde_json::Value> = (0..count)
            .map(|i| match datatype {
                "BOOL" => serde_json::Value::from(i % 2 == 0),
                "BYTES" => serde_json::Value::from(format!("value-{i}")),
                "FP16" | "BF16" | "FP32" | "FP64" => {
                    serde_json::Value::from((i % 7) as f64 * 0.25 - 0.5)
                }
                _ => serde_json::Value::from(i % 7),
            })
            .collect();
        request_inputs.push(
            serde_json::json!({"name": name, "datatype": datatype, "shape": shape, "data": data}),
        );
    }
    Ok(serde_json::json!({ "inputs": request_inputs }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_sorted_latencies() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 51.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert!(percentile_ms(&[], 0.5).is_infinite());
    }

    #[test]
    fn headers_are_name_colon_value() {
        let (name, value) = parse_header("X-API-Key:  sk-123 ").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "sk-123")
        );
        let (name, value) = parse_header("authorization: Bearer a.b.c").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer a.b.c")
        );
        for (text, why) in [
            ("x-api-key", "expected NAME: VALUE"),
            ("bad name: 1", "'bad name' is not a header name"),
            ("x: a\nb", "characters a header cannot carry"),
        ] {
            let error = parse_header(text).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn routes_sit_under_the_url_path_and_only_http_urls_are_taken() {
        let endpoint = |url: &str| Endpoint::resolve(Url::parse(url).unwrap(), None);
        for (url, path) in [
            ("http://127.0.0.1:8080", "/v2/models/m/infer"),
            ("http://127.0.0.1:8080/", "/v2/models/m/infer"),
            ("https://127.0.0.1/ml/fraud", "/ml/fraud/v2/models/m/infer"),
            ("http://127.0.0.1/ml/fraud/", "/ml/fraud/v2/models/m/infer"),
        ] {
            let endpoint = endpoint(url).await.unwrap();
            assert_eq!(endpoint.path_of("v2/models/m/infer"), path, "{url}");
            assert_eq!(
                endpoint.url_of("v2/models/m").path(),
                path.trim_end_matches("/infer")
            );
        }
        let https = endpoint("https://localhost:8443/x").await.unwrap();
        assert_eq!(https.authority, "localhost:8443");
        assert!(https.tls.is_some());
        for (url, why) in [
            ("ftp://127.0.0.1", "the scheme must be http or https"),
            ("http://127.0.0.1/?a=1", "a query or fragment"),
        ] {
            let error = endpoint(url).await.err().unwrap().to_string();
            assert!(error.contains(why), "{error}");
        }
        let error = Endpoint::resolve(Url::parse("https://localhost").unwrap(), Some(b"nope"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--ca-cert: no PEM certificate"), "{error}");
    }

    #[test]
    fn requests_are_synthesized_from_metadata() {
        let metadata = serde_json::json!({"inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "flag", "datatype": "BOOL", "shape": [-1, -1]}]});
        let request: serde_json::Value =
            serde_json::from_str(&synthesize_request(&metadata, 2).unwrap()).unwrap();
        assert_eq!(request["inputs"][0]["shape"], serde_json::json!([2, 3]));
        assert_eq!(request["inputs"][0]["data"].as_array().unwrap().len(), 6);
        assert_eq!(request["inputs"][1]["shape"], serde_json::json!([2, 1]));
        assert!(synthesize_request(&serde_json::json!({"inputs": []}), 1).is_err());
    }
}
