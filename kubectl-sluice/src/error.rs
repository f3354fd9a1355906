//! The plugin's errors: one variant per way a command can fail, each with a
//! message a user can act on.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig (or in-cluster configuration).
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor an in-cluster configuration was found.
    #[error("no cluster to talk to: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    /// The API server refused or failed a request.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// Watching the InferenceService for the operator's answer failed.
    #[error("watching the InferenceService: {0}")]
    Watch(#[from] kube::runtime::wait::Error),
    /// The InferenceService does not exist.
    #[error("inferenceservice {namespace}/{name} not found")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The model server (through the API server's service proxy) answered an error.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        /// The path that was called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's `error` field, or the body.
        message: String,
    },
    /// A JSON document could not be read or written.
    #[error("{what}: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The model's metadata gives no way to build a sample request.
    #[error("cannot build a sample request: {0} (pass --input FILE)")]
    Sample(String),
    /// `--wait` ran out of time.
    #[error(
        "timed out after {seconds}s waiting for the operator to act on {command} (the annotation is still set; is the operator running?)"
    )]
    Timeout {
        /// The command waited for.
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// The model cannot be read from this machine.
    #[error("model {uri} cannot be read from this machine: {reason}")]
    Unreachable {
        /// The model's `storageUri`.
        uri: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// No revision of that name is recorded in status.
    #[error("revision {revision} is not in status (known: {known})")]
    UnknownRevision {
        /// The revision asked for.
        revision: String,
        /// The revisions status records.
        known: String,
    },
    /// `sluice-server` was not found.
    #[error("{0}")]
    ServerBinary(String),
    /// A `sluice-server` subcommand failed.
    #[error("`{command}` failed ({status})")]
    Process {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The plugin's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A JSON error about `what`.
    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }

    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
