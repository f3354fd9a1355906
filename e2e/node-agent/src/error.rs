//! The agent's error type.

use std::path::PathBuf;

/// Everything that can go wrong while running pods on this node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the agent was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A host command such as `ip` exited unsuccessfully.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The pod asks for something this node cannot provide.
    #[error("{0}")]
    Config(String),
    /// No free address is left in the pod range.
    #[error("pod address range {0} is exhausted")]
    AddressesExhausted(String),
    /// A state file could not be parsed.
    #[error("bad state file {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        message: String,
    },
}

impl Error {
    /// Wraps an I/O error with what the agent was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
