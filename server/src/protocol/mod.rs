//! The Open Inference Protocol over REST and gRPC, sharing one [`ServerState`]:
//! the handlers that answer decoded requests (`crate::wire` decodes them) and
//! the guard that puts security in front of the REST routes.

pub mod grpc;
pub mod guard;
pub mod rest;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::InferError;
use crate::metrics::Metrics;
use crate::repository::Repository;
use crate::request_log::RequestLog;
use crate::runtime::TensorSpec;
use crate::security::Security;

/// The protocol extensions this server implements, as server metadata lists them.
pub const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

/// The server's name in server metadata.
pub const SERVER_NAME: &str = "sluice";

/// The platform reported in model metadata.
pub const PLATFORM: &str = "onnx_onnxv1";

/// What every protocol handler shares.
pub struct ServerState {
    /// The loaded models.
    pub repository: Repository,
    /// The metric families.
    pub metrics: Arc<Metrics>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Authentication, rate limits, request limits and the audit log.
    pub security: Arc<Security>,
    /// Where sampled requests and their responses are mirrored, when on.
    pub request_log: Option<RequestLog>,
    draining: AtomicBool,
}

impl ServerState {
    /// State for a server that is not draining.
    pub fn new(
        repository: Repository,
        metrics: Arc<Metrics>,
        max_body_bytes: usize,
        security: Arc<Security>,
        request_log: Option<RequestLog>,
    ) -> ServerState {
        ServerState {
            repository,
            metrics,
            max_body_bytes,
            security,
            request_log,
            draining: AtomicBool::new(false),
        }
    }

    /// The request log, when it is on and the request at hand is drawn into
    /// its sample: the handlers copy nothing for the log otherwise.
    pub fn sampled_request_log(&self) -> Option<&RequestLog> {
        self.request_log.as_ref().filter(|log| log.sample())
    }

    /// Readiness: every model has finished loading and the server is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.repository.all_settled()
    }

    /// Whether a graceful shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Turns readiness off for good, at the start of a graceful shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// The indices of the outputs to return: the requested names in request order,
/// or every output when none are named.
pub fn select_outputs(
    model: &str,
    specs: &[TensorSpec],
    requested: &[&str],
) -> Result<Vec<usize>, InferError> {
    if requested.is_empty() {
        return Ok((0..specs.len()).collect());
    }
    requested
        .iter()
        .map(|name| {
            specs
                .iter()
                .position(|spec| spec.name == *name)
                .ok_or_else(|| {
                    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    InferError::InvalidInput(format!(
                        "model '{model}' has no output named '{name}'; its outputs are {known:?}"
                    ))
                })
        })
        .collect()
}
