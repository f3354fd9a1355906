//! The audit log: one JSON line per guarded request (time, client, model,
//! version, status, latency, request id, sizes), written by a background thread
//! so that requests never wait on the disk. Payloads are logged only when a
//! sampling rate above zero is configured, and then only for that fraction of
//! requests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::error::SecurityError;
use super::principal::AuthMethod;

/// The request id header (REST) or metadata key (gRPC): the client's id for
/// the request, echoed in REST responses and written in audit lines.
pub const REQUEST_ID: &str = "x-request-id";

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOptions {
    /// A file to append to, or `-` for standard output.
    pub path: PathBuf,
    /// Fraction of requests whose payload is logged, 0 (never) to 1 (always).
    pub payload_sample_rate: f64,
}

/// One request, as the audit log records it.
#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    /// `rest` or `grpc`.
    pub protocol: &'static str,
    /// The request id: the client's `x-request-id`, or one the server made up.
    pub request_id: &'a str,
    /// The caller's identity (`key:…`, `jwt:…`, `ip:…`), absent when authentication failed.
    pub client: Option<&'a str>,
    /// How the caller authenticated.
    pub auth: Option<AuthMethod>,
    /// The peer address.
    pub remote: Option<String>,
    /// HTTP method and path, or the gRPC method.
    pub operation: &'a str,
    /// The model named by the request.
    pub model: Option<&'a str>,
    /// The model version, when known.
    pub version: Option<&'a str>,
    /// HTTP status (gRPC codes are mapped to their HTTP equivalents).
    pub status: u16,
    /// Time spent in the server.
    pub latency_ms: f64,
    /// Request body or message size in bytes, when known.
    pub request_bytes: Option<u64>,
    /// Response body or message size in bytes, when known.
    pub response_bytes: Option<u64>,
    /// The denial or error message, for refused requests.
    pub error: Option<&'a str>,
    /// The request payload, only when sampled for payload logging.
    pub payload: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    record: &'a AuditRecord<'a>,
}

/// The audit log's sender side.
pub struct AuditLog {
    lines: mpsc::Sender<String>,
    payload_sample_rate: f64,
}

impl AuditLog {
    /// Opens the file (or standard output) and starts the writer thread.
    pub fn open(options: &AuditOptions) -> Result<AuditLog, SecurityError> {
        let writer: Box<dyn Write + Send> = if options.path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&options.path)
                .map_err(|source| SecurityError::Audit {
                    path: options.path.clone(),
                    source,
                })?;
            Box::new(file)
        };
        let (lines, receiver) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("audit-log".to_string())
            .spawn(move || write_lines(&receiver, writer))
            .map_err(|source| SecurityError::Audit {
                path: options.path.clone(),
                source,
            })?;
        Ok(AuditLog {
            lines,
            payload_sample_rate: options.payload_sample_rate,
        })
    }

    /// Whether this request's payload should be logged.
    pub fn sample_payload(&self) -> bool {
        self.payload_sample_rate > 0.0 && fastrand::f64() < self.payload_sample_rate
    }

    /// Queues one line.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let line = Line {
            time: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            record,
        };
        match serde_json::to_string(&line) {
            Ok(text) => {
                let _ = self.lines.send(text);
            }
            Err(error) => tracing::warn!(%error, "cannot encode an audit line"),
        }
    }
}

/// Milliseconds, as the audit line's latency.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn write_lines(receiver: &mpsc::Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut writer = std::io::BufWriter::new(writer);
    while let Ok(line) = receiver.recv() {
        let mut result = writeln!(writer, "{line}");
        while let Ok(line) = receiver.try_recv() {
            result = result.and_then(|()| writeln!(writer, "{line}"));
        }
        if let Err(error) = result.and_then(|()| writer.flush()) {
            tracing::error!(%error, "cannot write the audit log");
        }
    }
}
