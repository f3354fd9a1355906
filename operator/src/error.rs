//! The operator's error type: one variant per failure kind, each with a metric label.

/// Everything that can fail while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),

    /// Adding or removing the cleanup finalizer failed.
    #[error("finalizer failed: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// An object could not be serialized (for hashing or applying).
    #[error("serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),

    /// The model server's `config.yaml` could not be written.
    #[error("rendering config.yaml failed: {0}")]
    ConfigYaml(String),

    /// The object lacks a field every stored object has (name, namespace, uid).
    #[error("object is missing {0}")]
    MissingObjectKey(&'static str),

    /// `spec.monitoring.onDrift.jobTemplate` cannot make a Job.
    #[error("{0}")]
    JobTemplate(String),
}

impl Error {
    /// Short, stable label for the `error` dimension of the operator's metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serialization(_) => "serialization",
            Error::ConfigYaml(_) => "config_yaml",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::JobTemplate(_) => "job_template",
        }
    }
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
