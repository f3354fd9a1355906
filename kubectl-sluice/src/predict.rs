//! `kubectl sluice predict NAME`: one Open Inference Protocol request to the
//! InferenceService's Service through the API server's service proxy
//! (`/api/v1/namespaces/<ns>/services/<name>:http/proxy/...`), so it works from
//! any machine with a kubeconfig and the right to `get` and `create`
//! `services/proxy`, without a port-forward or an ingress.

use std::time::Duration;

use http::Request;
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_operator::crd::InferenceService;

use crate::cluster;
use crate::connect::Target;
use crate::table::Table;
use crate::{Error, Result};

/// The name of the port that carries REST on every InferenceService's Service
/// (`sluice_operator::names::HTTP_PORT`, 8080).
pub const HTTP_PORT_NAME: &str = "http";

/// Most elements a sample request may have (a model with huge inputs needs
/// `--input`).
pub const MAX_SAMPLE_ELEMENTS: u64 = 1 << 20;

/// Values shown per output in the table before it says how many there are.
pub const SHOWN_VALUES: usize = 8;

/// What `predict` sends.
#[derive(Clone, Debug, Default)]
pub struct PredictOptions {
    /// The model name in the URL; the InferenceService's name by default (the
    /// operator serves the model under it).
    pub model: Option<String>,
    /// A complete OIP request body (JSON); a sample built from the model's
    /// metadata when absent.
    pub body: Option<Vec<u8>>,
    /// Sent as `x-api-key` (with `spec.security.apiKeysSecret`). The
    /// `Authorization` header cannot be used: the API server consumes it.
    pub api_key: Option<String>,
    /// Limit on each request.
    pub timeout: Duration,
}

/// The API server path of the InferenceService's Service port `http`, through
/// the service proxy; `https:` when the server has TLS (`spec.security.tls`).
pub fn proxy_base(namespace: &str, service: &str, tls: bool) -> String {
    let scheme = if tls { "https:" } else { "" };
    format!("/api/v1/namespaces/{namespace}/services/{scheme}{service}:{HTTP_PORT_NAME}/proxy")
}

/// `GET` path of a model's metadata.
pub fn metadata_path(base: &str, model: &str) -> String {
    format!("{base}/v2/models/{}", path_segment(model))
}

/// `POST` path of a model's inference.
pub fn infer_path(base: &str, model: &str) -> String {
    format!("{base}/v2/models/{}/infer", path_segment(model))
}

/// `s` percent-encoded as one path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A model's metadata (`GET /v2/models/<m>`), as far as a sample needs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// Its versions.
    #[serde(default)]
    pub versions: Vec<String>,
    /// Its inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Its outputs.
    #[serde(default)]
    pub outputs: Vec<TensorMetadata>,
}

/// One input or output: `-1` in `shape` is a dimension of any size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TensorMetadata {
    /// Tensor name.
    pub name: String,
    /// OIP datatype (`FP32`, `INT64`, `BOOL`, `BYTES`, ...).
    pub datatype: String,
    /// Dimensions.
    pub shape: Vec<i64>,
}

/// A request with one all-zero tensor per input, every `-1` dimension 1
/// (`false` for `BOOL`, `""` for `BYTES`).
pub fn sample_request(metadata: &ModelMetadata) -> Result<Value> {
    if metadata.inputs.is_empty() {
        return Err(Error::Sample(format!(
            "model {} lists no inputs",
            metadata.name
        )));
    }
    let mut inputs = Vec::new();
    for input in &metadata.inputs {
        let shape: Vec<u64> = input
            .shape
            .iter()
            .map(|&d| if d < 0 { 1 } else { d as u64 })
            .collect();
        let elements = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_SAMPLE_ELEMENTS)
            .ok_or_else(|| {
                Error::Sample(format!(
                    "input {} of shape {:?} has more than {MAX_SAMPLE_ELEMENTS} elements",
                    input.name, input.shape
                ))
            })?;
        let zero = match input.datatype.as_str() {
            "BOOL" => json!(false),
            "BYTES" => json!(""),
            t if t.starts_with("FP") || t == "BF16" => json!(0.0),
            t if t.starts_with("INT") || t.starts_with("UINT") => json!(0),
            other => {
                return Err(Error::Sample(format!(
                    "input {} has datatype {other}, which a sample cannot fill",
                    input.name
                )));
            }
        };
        inputs.push(json!({
            "name": input.name,
            "datatype": input.datatype,
            "shape": shape,
            "data": vec![zero; elements as usize],
        }));
    }
    Ok(json!({ "inputs": inputs }))
}

/// The outcome of `predict`.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The model called.
    pub model: String,
    /// The request sent, when it was a sample built from metadata.
    pub sample: Option<Value>,
    /// The server's response, unchanged (what `-o json` prints).
    pub response: Value,
}

/// One output of a response, as the table shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct OutputTensor {
    /// Tensor name.
    pub name: String,
    /// OIP datatype.
    pub datatype: String,
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Values (flat or nested, as the server sent them).
    #[serde(default)]
    pub data: Value,
}

impl Prediction {
    /// The human-readable report: what was sent, then one row per output with
    /// its first [`SHOWN_VALUES`] values.
    pub fn render(&self) -> Result<String> {
        let mut out = String::new();
        if let Some(sample) = &self.sample {
            for input in sample["inputs"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "sent a sample: input {} {} {} of zeros\n",
                    input["name"].as_str().unwrap_or_default(),
                    input["datatype"].as_str().unwrap_or_default(),
                    input["shape"]
                ));
            }
        }
        let version = self.response["model_version"]
            .as_str()
            .map(|v| format!(" version {v}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "model {}{version} answered:\n\n",
            self.response["model_name"].as_str().unwrap_or(&self.model)
        ));
        let outputs: Vec<OutputTensor> = serde_json::from_value(self.response["outputs"].clone())
            .map_err(|e| Error::json("the response's outputs", e))?;
        let mut table = Table::new(["OUTPUT", "DATATYPE", "SHAPE", "DATA"]);
        for o in &outputs {
            table.row([
                o.name.clone(),
                o.datatype.clone(),
                format!("{:?}", o.shape),
                truncated(&o.data, SHOWN_VALUES),
            ]);
        }
        out.push_str(&table.to_string());
        Ok(out)
    }
}

/// The first `shown` values of `data` (flattened), then how many there are.
pub fn truncated(data: &Value, shown: usize) -> String {
    let mut flat = Vec::new();
    flatten(data, &mut flat);
    let head: Vec<String> = flat.iter().take(shown).map(|v| v.to_string()).collect();
    if flat.len() > shown {
        format!("[{}, ...] ({} values)", head.join(", "), flat.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

/// Sends the request (a sample unless `options.body` is set) and returns the
/// server's response.
pub async fn predict(target: &Target, name: &str, options: &PredictOptions) -> Result<Prediction> {
    let isvc = cluster::inference_service(target, name).await?;
    if isvc.spec.streaming.is_some() {
        return Err(Error::Sample(format!(
            "{name} has spec.streaming: its workers read a Kafka topic and answer no requests"
        )));
    }
    let base = proxy_base(&target.namespace, name, tls(&isvc));
    let model = options.model.clone().unwrap_or_else(|| name.to_string());
    let (body, sample) = match &options.body {
        Some(body) => (body.clone(), None),
        None => {
            let url = metadata_path(&base, &model);
            let metadata = call(&target.client, get(&url, options)?, &url, options.timeout).await?;
            let metadata: ModelMetadata = serde_json::from_value(metadata)
                .map_err(|e| Error::json(format!("the metadata of model {model}"), e))?;
            let sample = sample_request(&metadata)?;
            let body = serde_json::to_vec(&sample).map_err(|e| Error::json("the sample", e))?;
            (body, Some(sample))
        }
    };
    let url = infer_path(&base, &model);
    let request = with_key(Request::post(&url), options)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| Error::Sample(e.to_string()))?;
    let response = call(&target.client, request, &url, options.timeout).await?;
    Ok(Prediction {
        model,
        sample,
        response,
    })
}

/// Whether the model server speaks TLS (then the proxy must dial `https`).
fn tls(isvc: &InferenceService) -> bool {
    isvc.spec.security.as_ref().is_some_and(|s| s.tls.is_some())
}

fn get(url: &str, options: &PredictOptions) -> Result<Request<Vec<u8>>> {
    with_key(Request::get(url), options)
        .body(Vec::new())
        .map_err(|e| Error::Sample(e.to_string()))
}

fn with_key(builder: http::request::Builder, options: &PredictOptions) -> http::request::Builder {
    match &options.api_key {
        Some(key) => builder.header("x-api-key", key),
        None => builder,
    }
}

/// One request through the proxy; an error status becomes [`Error::Http`] with
/// the server's `error` (or the API server's `Status` message).
async fn call(
    client: &Client,
    request: Request<Vec<u8>>,
    url: &str,
    timeout: Duration,
) -> Result<Value> {
    let exchange = async {
        let response = client.send(request.map(kube::client::Body::from)).await?;
        let status = response.status();
        let bytes = response.into_body().collect_bytes().await?;
        Ok::<_, Error>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Http {
            url: url.into(),
            status: 504,
            message: format!("no answer within {}s", timeout.as_secs()),
        })??;
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        let message = parsed
            .as_ref()
            .and_then(|v| v["error"].as_str().or(v["message"].as_str()))
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(Error::Http {
            url: url.into(),
            status: status.as_u16(),
            message,
        });
    }
    parsed.ok_or_else(|| Error::Http {
        url: url.into(),
        status: status.as_u16(),
        message: format!(
            "the answer is not JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(inputs: Value) -> ModelMetadata {
        serde_json::from_value(
            json!({"name": "iris", "versions": ["1"], "platform": "onnxruntime_onnx",
                                      "inputs": inputs, "outputs": []}),
        )
        .unwrap()
    }

    #[test]
    fn paths_go_through_the_service_proxy_on_the_http_port() {
        let base = proxy_base("ml", "fraud", false);
        assert_eq!(base, "/api/v1/namespaces/ml/services/fraud:http/proxy");
        assert_eq!(
            infer_path(&base, "fraud"),
            "/api/v1/namespaces/ml/services/fraud:http/proxy/v2/models/fraud/infer"
        );
        assert_eq!(
            metadata_path(&proxy_base("ml", "fraud", true), "a b/c"),
            "/api/v1/namespaces/ml/services/https:fraud:http/proxy/v2/models/a%20b%2Fc"
        );
    }

    #[test]
    fn a_sample_fills_every_input_with_zeros_and_any_size_dimensions_with_one() {
        let m = metadata(json!([
            {"name": "float_input", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "ids", "datatype": "INT64", "shape": [-1, 2, 1]},
            {"name": "flags", "datatype": "BOOL", "shape": [2]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ]));
        assert_eq!(
            sample_request(&m).unwrap(),
            json!({"inputs": [
                {"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 0.0, 0.0, 0.0]},
                {"name": "ids", "datatype": "INT64", "shape": [1, 2, 1], "data": [0, 0]},
                {"name": "flags", "datatype": "BOOL", "shape": [2], "data": [false, false]},
                {"name": "text", "datatype": "BYTES", "shape": [1], "data": [""]},
            ]})
        );
    }

    #[test]
    fn a_sample_refuses_what_it_cannot_build() {
        let huge = metadata(json!([{"name": "x", "datatype": "FP32", "shape": [-1, 4096, 4096]}]));
        assert!(
            sample_request(&huge)
                .unwrap_err()
                .to_string()
                .contains("--input")
        );
        let odd = metadata(json!([{"name": "x", "datatype": "COMPLEX", "shape": [1]}]));
        assert!(
            sample_request(&odd)
                .unwrap_err()
                .to_string()
                .contains("COMPLEX")
        );
        assert!(sample_request(&metadata(json!([]))).is_err());
    }

    #[test]
    fn outputs_render_as_a_table_with_truncated_data() {
        let prediction = Prediction {
            model: "iris".into(),
            sample: Some(
                json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 0.0, 0.0, 0.0]}]}),
            ),
            response: json!({"model_name": "iris", "model_version": "1", "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [1], "data": [0]},
                {"name": "probabilities", "datatype": "FP32", "shape": [1, 12],
                 "data": [[0.5, 0.25, 0.25, 0, 0, 0, 0, 0, 0, 0, 0, 0]]},
            ]}),
        };
        assert_eq!(
            prediction.render().unwrap(),
            "sent a sample: input float_input FP32 [1,4] of zeros\n\
             model iris version 1 answered:\n\n\
             OUTPUT         DATATYPE  SHAPE    DATA\n\
             label          INT64     [1]      [0]\n\
             probabilities  FP32      [1, 12]  [0.5, 0.25, 0.25, 0, 0, 0, 0, 0, ...] (12 values)\n"
        );
    }
}
