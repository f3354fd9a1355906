//! Why security could not be set up ([`SecurityError`]), and why a request
//! was refused ([`Denial`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why the security configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The API key file is malformed.
    #[error("API key file {path}: {message}")]
    Keys {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The JWKS could not be loaded or parsed.
    #[error("JWKS from {source_name}: {message}")]
    Jwks {
        /// The file or URL.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// The certificate, key or client CA is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// The audit log cannot be opened.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a request was refused before it reached a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Denial {
    /// No credentials, or credentials that do not check out.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not cover this model.
    #[error("{0}")]
    Forbidden(String),
    /// A token bucket is empty.
    #[error("rate limit exceeded: {what}; retry after {} s", retry_after_seconds(*.retry_after))]
    RateLimited {
        /// Which limit, e.g. "client 'key:team-a' is limited to 10 requests/s (burst 20)".
        what: String,
        /// When the bucket has a token again.
        retry_after: Duration,
    },
    /// The client already has its most requests in flight.
    #[error(
        "client '{client}' already has {limit} requests in flight (--max-concurrent-per-client)"
    )]
    TooManyInFlight {
        /// The client identity.
        client: Arc<str>,
        /// The limit.
        limit: usize,
    },
    /// The request headers are larger than allowed.
    #[error(
        "request headers are {size} bytes, over the limit of {limit} bytes (--max-header-bytes)"
    )]
    HeadersTooLarge {
        /// Their size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Whole seconds to wait, rounded up, at least 1 (the `Retry-After` value).
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

impl Denial {
    /// The HTTP status for this denial.
    pub fn http_status(&self) -> u16 {
        match self {
            Denial::Unauthenticated(_) => 401,
            Denial::Forbidden(_) => 403,
            Denial::RateLimited { .. } | Denial::TooManyInFlight { .. } => 429,
            Denial::HeadersTooLarge { .. } => 431,
        }
    }

    /// The gRPC code for this denial.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Denial::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Denial::Forbidden(_) => tonic::Code::PermissionDenied,
            Denial::RateLimited { .. }
            | Denial::TooManyInFlight { .. }
            | Denial::HeadersTooLarge { .. } => tonic::Code::ResourceExhausted,
        }
    }

    /// Seconds after which a retry may succeed, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Denial::RateLimited { retry_after, .. } => Some(retry_after_seconds(*retry_after)),
            Denial::TooManyInFlight { .. } => Some(1),
            _ => None,
        }
    }
}
