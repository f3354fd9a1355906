//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`).
//! Inputs come as typed `contents` or as `raw_input_contents`; outputs always go
//! back as `raw_output_contents`, as Triton and its clients expect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{EXTENSIONS, PLATFORM, SERVER_NAME, ServerState, select_outputs};
use crate::error::InferError;
use crate::model::ModelVersion;
use crate::request_log::{Bodies, Exchange};
use crate::resilience::fallback::FallbackUse;
use crate::security::limits::RequestLimits;
use crate::wire::grpc::{decode_inputs, pb};

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::model_infer_response::InferOutputTensor;
use pb::model_metadata_response::TensorMetadata;

/// The gRPC service over the shared server state.
pub struct InferenceService {
    state: Arc<ServerState>,
}

impl InferenceService {
    /// The tonic service, ready to add to a server, accepting messages up to
    /// the server's body limit.
    pub fn server(state: Arc<ServerState>) -> GrpcInferenceServiceServer<InferenceService> {
        let limit = state.max_body_bytes;
        GrpcInferenceServiceServer::new(InferenceService { state })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }

    fn resolve(&self, name: &str, version: &str) -> Result<&Arc<ModelVersion>, InferError> {
        self.state.repository.resolve(name, Some(version))
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.state.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let model = self.resolve(&request.name, &request.version)?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: model.serving().is_ok(),
        }))
    }

    async fn server_metadata(
        &self,
        request: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let call = self
            .state
            .security
            .admit_grpc(&request, "ServerMetadata", None)?;
        let result = Ok(Response::new(pb::ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(ToString::to_string).collect(),
        }));
        call.finish(&result, None);
        result
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let call = self.state.security.admit_grpc(
            &request,
            "ModelMetadata",
            Some(&request.get_ref().name),
        )?;
        let version = request.get_ref().version.clone();
        let result = self.model_metadata_response(request.into_inner());
        call.finish(&result, Some(&version));
        result
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let call = self.state.security.admit_grpc(
            &request,
            "ModelInfer",
            Some(&request.get_ref().model_name),
        )?;
        let deadline = grpc_timeout(request.metadata())?;
        let work = self.model_infer_response(request.into_inner());
        let result = match deadline {
            // The client's deadline (tonic's `Request::set_timeout`, grpc-go's
            // context deadline): an answer after it is one nobody waits for.
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "the call's deadline (grpc-timeout {limit:?}) passed before the model answered"
                )))
            }),
            None => work.await,
        };
        let version = result
            .as_ref()
            .ok()
            .map(|r| r.get_ref().model_version.clone());
        call.finish(&result, version.as_deref());
        result
    }
}

/// The call's `grpc-timeout` header: 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), as the gRPC over HTTP/2 specification writes it. Absent is
/// no deadline; malformed is refused with the value named.
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Result<Option<Duration>, Status> {
    let Some(value) = metadata.get("grpc-timeout") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    parse_grpc_timeout(text).map(Some).ok_or_else(|| {
        Status::invalid_argument(format!(
            "grpc-timeout {text:?} is not 1 to 8 digits followed by H, M, S, m, u or n"
        ))
    })
}

fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(amount * 3600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

impl InferenceService {
    fn model_metadata_response(
        &self,
        request: pb::ModelMetadataRequest,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let model = self.resolve(&request.name, &request.version)?;
        let serving = model.serving()?;
        let describe = |specs: &[crate::runtime::TensorSpec]| {
            specs
                .iter()
                .map(|s| TensorMetadata {
                    name: s.name.clone(),
                    datatype: s.datatype.as_str().to_string(),
                    shape: s.shape.clone(),
                })
                .collect()
        };
        let versions = self
            .state
            .repository
            .models()
            .find(|(name, _)| *name == request.name)
            .map(|(_, numbers)| numbers.iter().map(u64::to_string).collect())
            .unwrap_or_default();
        Ok(Response::new(pb::ModelMetadataResponse {
            name: request.name,
            versions,
            platform: PLATFORM.to_string(),
            inputs: describe(&serving.inputs),
            outputs: describe(&serving.outputs),
        }))
    }

    async fn model_infer_response(
        &self,
        request: pb::ModelInferRequest,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = Instant::now();
        let model = Arc::clone(self.resolve(&request.model_name, &request.model_version)?);
        // tonic keeps no copy of the bytes it decoded: a logged request is
        // encoded again, before decoding takes its inputs apart.
        let logged = self
            .state
            .sampled_request_log()
            .map(|log| (log, request.encode_to_vec()));
        let result = run_inference(&model, request, &self.state.security.limits).await;
        let status = match &result {
            Ok(_) => 200,
            Err(error) => error.http_status(),
        };
        model.metrics.observe_request(status, started.elapsed());
        if let (Some((log, request)), Ok(response)) = (logged, &result) {
            log.log(&Exchange {
                model: &model.name,
                version: model.version,
                id: (!response.id.is_empty()).then_some(response.id.as_str()),
                bodies: Bodies::Grpc {
                    request: &request,
                    response: &response.encode_to_vec(),
                },
            });
        }
        Ok(Response::new(result?))
    }
}

async fn run_inference(
    model: &ModelVersion,
    request: pb::ModelInferRequest,
    limits: &RequestLimits,
) -> Result<pb::ModelInferResponse, InferError> {
    let inputs = decode_inputs(request.inputs, &request.raw_input_contents)?;
    limits.check_inputs(&inputs)?;
    let serving = model.serving()?;
    let names: Vec<&str> = request.outputs.iter().map(|o| o.name.as_str()).collect();
    let selected = select_outputs(&model.name, &serving.outputs, &names)?;
    let id = (!request.id.is_empty()).then_some(request.id.as_str());
    let answer = model.infer(inputs, id).await?;
    let outputs = answer.outputs;
    let (tensors, raw_output_contents) = selected
        .iter()
        .map(|index| {
            let tensor = &outputs[*index];
            let metadata = InferOutputTensor {
                name: serving.outputs[*index].name.clone(),
                datatype: tensor.datatype().as_str().to_string(),
                shape: tensor.shape.clone(),
                ..Default::default()
            };
            (metadata, tensor.data.to_le_bytes())
        })
        .unzip();
    Ok(pb::ModelInferResponse {
        model_name: model.name.clone(),
        model_version: model.version.to_string(),
        id: request.id,
        outputs: tensors,
        raw_output_contents,
        parameters: answer
            .fallback
            .into_iter()
            .flat_map(FallbackUse::parameters)
            .map(|(key, value)| (key.to_string(), string_parameter(value)))
            .collect(),
    })
}

fn string_parameter(value: &str) -> pb::InferParameter {
    pb::InferParameter {
        parameter_choice: Some(pb::infer_parameter::ParameterChoice::StringParam(
            value.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_specification_writes_them() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("30S", Some(Duration::from_secs(30))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("7n", Some(Duration::from_nanos(7))),
            ("", None),
            ("m", None),
            ("123456789m", None),
            ("1.5S", None),
            ("-1S", None),
            ("10x", None),
            ("10", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_grpc_timeout(text), want, "{text:?}");
        }
    }
}
