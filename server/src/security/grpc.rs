//! The gRPC side of the guard: every method but the health ones starts with
//! [`Security::admit_grpc`] and ends with [`GrpcCall::finish`].

use std::net::SocketAddr;
use std::time::Instant;

use tonic::metadata::{KeyAndValueRef, MetadataValue};
use tonic::{Request, Response, Status};

use super::audit::{AuditRecord, REQUEST_ID, millis};
use super::auth::Credentials;
use super::error::Denial;
use super::principal::Principal;
use super::{Admission, Security};

/// A guarded gRPC call in progress.
pub struct GrpcCall<'a> {
    security: &'a Security,
    admission: Option<Admission>,
    started: Instant,
    operation: &'static str,
    model: Option<String>,
    request_id: String,
    remote: Option<SocketAddr>,
    request_bytes: Option<u64>,
    payload: Option<String>,
}

/// The status for a denial, with `retry-after` metadata when it applies.
pub fn denial_status(denial: &Denial) -> Status {
    let mut status = Status::new(denial.grpc_code(), denial.to_string());
    if let Some(seconds) = denial.retry_after()
        && let Ok(value) = MetadataValue::try_from(seconds.to_string())
    {
        status.metadata_mut().insert("retry-after", value);
    }
    status
}

/// The HTTP status that corresponds to a gRPC code, for audit lines.
fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

impl Security {
    /// Checks a gRPC call's metadata size and credentials, then admits it for
    /// `model` (when it names one). Refusals are audited and returned as the
    /// status to send.
    pub fn admit_grpc<T: prost::Message>(
        &self,
        request: &Request<T>,
        operation: &'static str,
        model: Option<&str>,
    ) -> Result<GrpcCall<'_>, Status> {
        let started = Instant::now();
        if !self.guards_requests() {
            return Ok(GrpcCall {
                security: self,
                admission: None,
                started,
                operation,
                model: None,
                request_id: String::new(),
                remote: None,
                request_bytes: None,
                payload: None,
            });
        }
        let metadata = request.metadata();
        let audited = self.audit().is_some();
        let request_id = match metadata.get(REQUEST_ID).and_then(|v| v.to_str().ok()) {
            _ if !audited => String::new(),
            Some(id) => id.to_string(),
            None => format!("{:016x}", fastrand::u64(..)),
        };
        let mut call = GrpcCall {
            security: self,
            admission: None,
            started,
            operation,
            model: model.filter(|_| audited).map(str::to_string),
            request_id,
            remote: request.remote_addr(),
            request_bytes: self.audit().map(|_| request.get_ref().encoded_len() as u64),
            payload: self
                .audit()
                .filter(|log| log.sample_payload())
                .map(|_| format!("hex:{}", hex::encode(request.get_ref().encode_to_vec()))),
        };
        let sizes = metadata.iter().map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => {
                (key.as_str().len(), value.as_encoded_bytes().len())
            }
            KeyAndValueRef::Binary(key, value) => {
                (key.as_str().len(), value.as_encoded_bytes().len())
            }
        });
        let admitted = self
            .limits
            .check_headers(sizes)
            .map_err(|denial| (denial, None))
            .and_then(|()| {
                let credentials = Credentials {
                    client_certificate: request.peer_certs().is_some_and(|c| !c.is_empty()),
                    ..Credentials::from_headers(|name| {
                        metadata.get(name).and_then(|v| v.to_str().ok())
                    })
                };
                self.admit(&credentials, call.remote.map(|r| r.ip()), model)
            });
        match admitted {
            Ok(admission) => {
                call.admission = Some(admission);
                Ok(call)
            }
            Err((denial, principal)) => {
                let status = denial_status(&denial);
                call.record(principal.as_deref(), &status, None, None);
                Err(status)
            }
        }
    }
}

impl GrpcCall<'_> {
    /// Frees the concurrency slot and writes the audit line.
    pub fn finish<R: prost::Message>(
        mut self,
        result: &Result<Response<R>, Status>,
        version: Option<&str>,
    ) {
        let admission = self.admission.take();
        let principal = admission.map(|admission| admission.principal);
        match result {
            Ok(response) => {
                let bytes = response.get_ref().encoded_len() as u64;
                self.record(principal.as_deref(), &Status::ok(""), version, Some(bytes));
            }
            Err(status) => self.record(principal.as_deref(), status, version, None),
        }
    }

    fn record(
        &self,
        principal: Option<&Principal>,
        status: &Status,
        version: Option<&str>,
        response_bytes: Option<u64>,
    ) {
        let Some(log) = self.security.audit() else {
            return;
        };
        let failed = status.code() != tonic::Code::Ok;
        log.record(&AuditRecord {
            protocol: "grpc",
            request_id: &self.request_id,
            client: principal.map(|p| &*p.id),
            auth: principal.map(|p| p.method),
            remote: self.remote.map(|r| r.to_string()),
            operation: self.operation,
            model: self.model.as_deref(),
            version: version.filter(|v| !v.is_empty()),
            status: http_status(status.code()),
            latency_ms: millis(self.started.elapsed()),
            request_bytes: self.request_bytes,
            response_bytes,
            error: failed.then(|| status.message()),
            payload: self.payload.as_deref(),
        });
    }
}
