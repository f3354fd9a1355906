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
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// Why a load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("cannot connect to {address}: {message}")]
    Connect {
        address: SocketAddr,
        message: String,
    },
    #[error("{0}")]
    Setup(String),
}

/// An open HTTP/1.1 keep-alive connection.
pub async fn connect(address: SocketAddr) -> Result<SendRequest<Full<Bytes>>, LoadTestError> {
    let failed = |message: String| LoadTestError::Connect { address, message };
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| failed(e.to_string()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| failed(e.to_string()))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A prepared inference request.
#[derive(Clone)]
pub struct Target {
    /// The server's address.
    pub address: SocketAddr,
    /// The inference path, e.g. `/v2/models/mlp/infer`.
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
            .header("host", self.address.to_string())
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
        let mut connection = connect(target.address).await?;
        let receiver = receiver.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            while let Ok(due) = receiver.recv().await {
                tokio::time::sleep_until(due.into()).await;
                let ok = match connection.send_request(target.request()).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(due.elapsed());
                } else {
                    errors += 1;
                    if let Ok(fresh) = connect(target.address).await {
                        connection = fresh;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for worker in workers {
        let (mine, failed) = worker
            .await
            .map_err(|e| LoadTestError::Setup(e.to_string()))?;
        latencies.extend(mine);
        errors += failed;
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
