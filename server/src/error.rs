//! The errors a client can receive, with their HTTP status, gRPC code and metric label.

/// Why an inference (or a metadata or readiness request) failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum InferError {
    /// No model by that name, or no such version.
    #[error("{0}")]
    NotFound(String),
    /// The model exists but is loading or failed to load.
    #[error("{0}")]
    NotReady(String),
    /// The request is malformed or does not match the model.
    #[error("{0}")]
    InvalidInput(String),
    /// The request body is larger than `--max-body-bytes`.
    #[error("{0}")]
    TooLarge(String),
    /// The request conflicts with what was already done (feedback given twice).
    #[error("{0}")]
    Conflict(String),
    /// The model's queue is full.
    #[error("model '{0}' is overloaded: its queue is full, retry later")]
    QueueFull(String),
    /// The request did not finish within the model's timeout.
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The model keeps failing and its circuit breaker is open (no fallback is set).
    #[error(
        "model '{model}' is failing and its circuit breaker is open; retry in {retry_after_secs} s"
    )]
    CircuitOpen {
        /// The model's name.
        model: String,
        /// Seconds until probe requests try the model again (at least 1).
        retry_after_secs: u64,
    },
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Internal(String),
}

impl InferError {
    /// The HTTP status code for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            InferError::NotFound(_) => 404,
            InferError::NotReady(_) => 503,
            InferError::InvalidInput(_) => 400,
            InferError::TooLarge(_) => 413,
            InferError::Conflict(_) => 409,
            InferError::QueueFull(_) => 429,
            InferError::Timeout(_) => 504,
            InferError::CircuitOpen { .. } | InferError::ShuttingDown => 503,
            InferError::Internal(_) => 500,
        }
    }

    /// The gRPC status code for this error.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            InferError::NotFound(_) => tonic::Code::NotFound,
            InferError::NotReady(_) | InferError::CircuitOpen { .. } | InferError::ShuttingDown => {
                tonic::Code::Unavailable
            }
            InferError::InvalidInput(_) => tonic::Code::InvalidArgument,
            // What tonic itself answers for a message over the limit.
            InferError::TooLarge(_) => tonic::Code::OutOfRange,
            InferError::Conflict(_) => tonic::Code::AlreadyExists,
            InferError::QueueFull(_) => tonic::Code::ResourceExhausted,
            InferError::Timeout(_) => tonic::Code::DeadlineExceeded,
            InferError::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<InferError> for tonic::Status {
    fn from(error: InferError) -> Self {
        tonic::Status::new(error.grpc_code(), error.to_string())
    }
}

impl From<crate::tensor::TensorError> for InferError {
    fn from(error: crate::tensor::TensorError) -> Self {
        InferError::InvalidInput(error.to_string())
    }
}
