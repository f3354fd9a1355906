//! The Open Inference Protocol over HTTP/JSON, with the binary tensor extension,
//! plus `GET /metrics`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::{EXTENSIONS, PLATFORM, SERVER_NAME, ServerState, select_outputs};
use crate::error::InferError;
use crate::model::ModelVersion;
use crate::request_log::{Bodies, Exchange, RestBody};
use crate::resilience::fallback::FallbackUse;
use crate::tensor::NamedTensor;
use crate::wire::json::{
    HEADER_LENGTH, InferRequestJson, ResponseOutput, encode_response, parse_infer_body, split_body,
};

type SharedState = Arc<ServerState>;

/// The REST routes.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_version_metadata),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_version_ready),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .route("/v2/models/{name}/feedback", post(feedback))
        .route(
            "/v2/models/{name}/versions/{version}/feedback",
            post(feedback_version),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

fn error_response(error: &InferError) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(json!({ "error": error.to_string() }))).into_response();
    if let InferError::CircuitOpen {
        retry_after_secs, ..
    } = error
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

async fn not_found() -> Response {
    error_response(&InferError::NotFound(
        "no such endpoint; see the Open Inference Protocol's /v2 routes".to_string(),
    ))
}

async fn live() -> Response {
    axum::Json(json!({ "live": true })).into_response()
}

async fn ready(State(state): State<SharedState>) -> Response {
    let ready = state.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

async fn model_metadata(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    metadata_response(&state, &name, None)
}

async fn model_version_metadata(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata_response(&state, &name, Some(&version))
}

fn metadata_response(state: &ServerState, name: &str, version: Option<&str>) -> Response {
    let model = match state.repository.resolve(name, version) {
        Ok(model) => model,
        Err(error) => return error_response(&error),
    };
    let versions: Vec<String> = state
        .repository
        .models()
        .find(|(model_name, _)| *model_name == name)
        .map(|(_, numbers)| numbers.iter().map(u64::to_string).collect())
        .unwrap_or_default();
    let describe = |specs: &[crate::runtime::TensorSpec]| -> Vec<serde_json::Value> {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "datatype": s.datatype.as_str(), "shape": s.shape }))
            .collect()
    };
    let mut body = json!({
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [],
        "outputs": [],
    });
    match model.serving() {
        Ok(serving) => {
            body["inputs"] = describe(&serving.inputs).into();
            body["outputs"] = describe(&serving.outputs).into();
            body["ready"] = true.into();
        }
        Err(error) => {
            body["ready"] = false.into();
            body["reason"] = error.to_string().into();
        }
    }
    axum::Json(body).into_response()
}

async fn model_ready(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    ready_response(&state, &name, None)
}

async fn model_version_ready(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    ready_response(&state, &name, Some(&version))
}

fn ready_response(state: &ServerState, name: &str, version: Option<&str>) -> Response {
    match state
        .repository
        .resolve(name, version)
        .and_then(|m| m.serving().map(|_| m))
    {
        Ok(model) => axum::Json(json!({
            "name": name,
            "version": model.version.to_string(),
            "ready": true,
        }))
        .into_response(),
        Err(error) => error_response(&error),
    }
}

async fn metrics(State(state): State<SharedState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn infer(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_response(state, &name, None, headers, body).await
}

async fn infer_version(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_response(state, &name, Some(&version), headers, body).await
}

async fn infer_response(
    state: SharedState,
    name: &str,
    version: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let model = match state.repository.resolve(name, version) {
        Ok(model) => Arc::clone(model),
        Err(error) => return error_response(&error),
    };
    let response = match run_inference(&state, &model, &headers, body).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    };
    model
        .metrics
        .observe_request(response.status().as_u16(), started.elapsed());
    response
}

async fn feedback(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    feedback_response(&state, &name, None, body).await
}

async fn feedback_version(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
    body: Body,
) -> Response {
    feedback_response(&state, &name, Some(&version), body).await
}

/// Ground truth for an earlier request: `{"id": "...", "value": x}` for one
/// row or `"value": [x, ...]` with one value per row.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackJson {
    id: String,
    value: FeedbackValue,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum FeedbackValue {
    One(f64),
    Rows(Vec<f64>),
}

async fn feedback_response(
    state: &ServerState,
    name: &str,
    version: Option<&str>,
    body: Body,
) -> Response {
    let result = async {
        let model = state.repository.resolve(name, version)?;
        let bytes = read_body(body, state.max_body_bytes).await?;
        let feedback: FeedbackJson = serde_json::from_slice(&bytes).map_err(|e| {
            InferError::InvalidInput(format!(
                "malformed feedback (expected {{\"id\": \"...\", \"value\": number or [numbers]}}): {e}"
            ))
        })?;
        let values = match feedback.value {
            FeedbackValue::One(value) => vec![value],
            FeedbackValue::Rows(values) => values,
        };
        let rows = model.feedback(feedback.id.clone(), values).await?;
        Ok::<_, InferError>(axum::Json(json!({ "id": feedback.id, "rows": rows })).into_response())
    }
    .await;
    result.unwrap_or_else(|error| error_response(&error))
}

/// The whole request body, or a 413 when it is larger than `limit`. What is
/// left unread of a body over the limit is drained by `crate::connection`,
/// so the 413 reaches the client.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, InferError> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let error = error.into_inner();
        if error.is::<http_body_util::LengthLimitError>() {
            InferError::TooLarge(format!(
                "request body is larger than the limit of {limit} bytes (--max-body-bytes)"
            ))
        } else {
            InferError::InvalidInput(format!("cannot read the request body: {error}"))
        }
    })
}

/// Runs a decoded inference request and encodes its response: the body and,
/// when it has a binary section, the length of its JSON part. `stream` answers
/// its records through this too.
pub async fn answer(
    model: &ModelVersion,
    request: &InferRequestJson<'_>,
    inputs: Vec<NamedTensor>,
) -> Result<(Vec<u8>, Option<usize>), InferError> {
    let serving = model.serving()?;
    let binary_default = request.binary_output_default();
    let requested: Vec<(&str, bool)> = request
        .outputs
        .iter()
        .flatten()
        .map(|o| (o.name.as_str(), o.binary(binary_default)))
        .collect();
    let names: Vec<&str> = requested.iter().map(|(name, _)| *name).collect();
    let selected = select_outputs(&model.name, &serving.outputs, &names)?;
    let answer = model.infer(inputs, request.id.as_deref()).await?;
    let outputs = answer.outputs;
    let response_outputs: Vec<ResponseOutput> = selected
        .iter()
        .enumerate()
        .map(|(position, index)| ResponseOutput {
            name: &serving.outputs[*index].name,
            tensor: &outputs[*index],
            binary: requested
                .get(position)
                .map_or(binary_default, |(_, binary)| *binary),
        })
        .collect();
    let parameters = answer.fallback.map(FallbackUse::parameters);
    let (body, header_length) = encode_response(
        &model.name,
        model.version,
        request.id.as_deref(),
        parameters.as_ref().map_or(&[][..], |p| &p[..]),
        &response_outputs,
    );
    Ok((body, header_length))
}

/// Reads, decodes, runs and encodes one inference request, and logs it when
/// it is drawn into the request log's sample.
async fn run_inference(
    state: &ServerState,
    model: &ModelVersion,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, InferError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let (request, inputs) = parse_infer_body(headers.get(HEADER_LENGTH), &bytes)?;
    state.security.limits.check_inputs(&inputs)?;
    let (body, header_length) = answer(model, &request, inputs).await?;
    if let Some(log) = state.sampled_request_log() {
        let (request_json, request_binary) = split_body(headers.get(HEADER_LENGTH), &bytes)?;
        let (response_json, response_binary) = body.split_at(header_length.unwrap_or(body.len()));
        log.log(&Exchange {
            model: &model.name,
            version: model.version,
            id: request.id.as_deref(),
            bodies: Bodies::Rest {
                request: RestBody {
                    json: request_json,
                    binary: request_binary,
                },
                response: RestBody {
                    json: response_json,
                    binary: response_binary,
                },
            },
        });
    }
    let mut response = Response::new(Body::from(body));
    let content_type = match header_length {
        Some(length) => {
            response
                .headers_mut()
                .insert(HEADER_LENGTH, HeaderValue::from(length));
            "application/octet-stream"
        }
        None => "application/json",
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
