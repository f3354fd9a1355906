//! One entry point into every parser that untrusted request bytes reach, for
//! the fuzz target `request_parsers` in `server/fuzz` (`make fuzz`). The first
//! input byte picks the parser; the rest is what a client would send. A parser
//! may refuse its input with an error; what it must never do is panic, hang or
//! blow up. The target `refused_requests` ([`refusal`]) checks the connection
//! handling instead: a refused request always gets its complete answer.

pub mod refusal;

use axum::http::HeaderValue;
use prost::Message;

use crate::security::auth::Credentials;
use crate::security::keys::KeySet;
use crate::security::limits::RequestLimits;
use crate::tensor::{NamedTensor, Tensor};
use crate::wire::grpc::{decode_inputs, pb};
use crate::wire::json::parse_infer_body;
use crate::wire::paths::model_in_path;

/// Limits as a server might set them, so the checks run on what was parsed.
const LIMITS: RequestLimits = RequestLimits {
    max_header_bytes: Some(8192),
    max_tensor_elements: Some(1 << 20),
    max_batch_rows: Some(1024),
};

/// Feeds `data` to the parser its first byte selects.
pub fn request_parsers(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => rest_body(None, rest),
        1 => {
            // Two bytes of Inference-Header-Content-Length, then the body.
            if rest.len() >= 2 {
                let length = u16::from_le_bytes([rest[0], rest[1]]);
                rest_body(Some(&HeaderValue::from(length)), &rest[2..]);
            }
        }
        2 => {
            if let Ok(request) = pb::ModelInferRequest::decode(rest)
                && let Ok(inputs) = decode_inputs(request.inputs, &request.raw_input_contents)
            {
                check(&inputs);
            }
        }
        3 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = KeySet::parse(text);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = model_in_path(text);
                let credentials = Credentials::from_headers(|_| Some(text));
                let _ = (credentials.bearer, credentials.api_key);
                let _ = jsonwebtoken::decode_header(text);
            }
        }
    }
}

fn rest_body(header_length: Option<&HeaderValue>, body: &[u8]) {
    if let Ok((request, inputs)) = parse_infer_body(header_length, body) {
        let _ = request.binary_output_default();
        check(&inputs);
    }
}

/// What the server does next with parsed inputs: limit checks, and (for
/// inputs within the limits) the row operations the batcher performs.
fn check(inputs: &[NamedTensor]) {
    if LIMITS.check_inputs(inputs).is_err() {
        return;
    }
    for input in inputs {
        let tensor: &Tensor = &input.tensor;
        if !tensor.shape.is_empty() && tensor.rows() > 0 {
            let joined = Tensor::concat_rows(&[tensor, tensor]);
            let _ = joined.split_rows(&[tensor.rows(), tensor.rows()]);
        }
    }
}
