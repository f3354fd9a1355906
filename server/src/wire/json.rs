//! The REST protocol's JSON bodies, and the binary tensor extension's layout
//! (a JSON header of `Inference-Header-Content-Length` bytes followed by the
//! tensors' bytes in input order).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use axum::http::HeaderValue;

use super::nonfinite;
use super::tensor_json::{self, DataJson};
use crate::error::InferError;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};

/// The header that splits a binary request or response into JSON and tensor bytes.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Parameters the protocol defines on tensors and requests; others are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Parameters {
    /// On an input: its data is this many bytes of the binary section.
    pub binary_data_size: Option<u64>,
    /// On a requested output: return it in the binary section.
    pub binary_data: Option<bool>,
    /// On the request: return every output in the binary section.
    pub binary_data_output: Option<bool>,
}

/// One input of an inference request.
#[derive(Debug, Deserialize)]
pub struct InputTensorJson<'a> {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
pub struct RequestedOutputJson {
    /// The output's name.
    pub name: String,
    #[serde(default)]
    parameters: Option<Parameters>,
}

/// An inference request body (the JSON part).
#[derive(Debug, Deserialize)]
pub struct InferRequestJson<'a> {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<InputTensorJson<'a>>,
    /// Which outputs to return; all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutputJson>>,
}

impl InputTensorJson<'_> {
    /// Decodes a protocol JSON value (as in a warm-up configuration) into a tensor.
    pub fn from_value(value: &serde_json::Value) -> Result<NamedTensor, InferError> {
        let text = value.to_string();
        let input: InputTensorJson = serde_json::from_str(&text)
            .map_err(|e| InferError::InvalidInput(format!("invalid input tensor: {e}")))?;
        input.decode(&mut &[][..])
    }

    /// Decodes this input, taking its bytes from the front of `binary` when it
    /// uses the binary tensor extension.
    fn decode(self, binary: &mut &[u8]) -> Result<NamedTensor, InferError> {
        let name = self.name;
        let named =
            |message: String| InferError::InvalidInput(format!("input '{name}': {message}"));
        let datatype = DataType::parse(&self.datatype).map_err(|e| named(e.to_string()))?;
        let size = self.parameters.as_ref().and_then(|p| p.binary_data_size);
        let data = match (size, self.data) {
            (Some(size), _) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > binary.len() {
                    return Err(named(format!(
                        "binary_data_size is {size} but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                *binary = rest;
                TensorData::from_le_bytes(datatype, &self.shape, mine)
            }
            (None, Some(raw)) => tensor_json::decode(datatype, &self.shape, raw.get()),
            (None, None) => {
                return Err(named("has neither 'data' nor binary_data_size".to_string()));
            }
        }
        .map_err(|e| named(e.to_string()))?;
        let tensor = Tensor::input(self.shape, data).map_err(|e| named(e.to_string()))?;
        Ok(NamedTensor { name, tensor })
    }
}

impl InferRequestJson<'_> {
    /// Whether outputs default to the binary section (request-level parameter).
    pub fn binary_output_default(&self) -> bool {
        self.parameters
            .as_ref()
            .and_then(|p| p.binary_data_output)
            .unwrap_or(false)
    }

    /// The request once its inputs are taken, free of the text it was parsed from.
    fn without_inputs<'b>(self) -> InferRequestJson<'b> {
        InferRequestJson {
            id: self.id,
            parameters: self.parameters,
            inputs: Vec::new(),
            outputs: self.outputs,
        }
    }

    /// Decodes every input, consuming exactly the whole binary section.
    pub fn take_inputs(&mut self, mut binary: &[u8]) -> Result<Vec<NamedTensor>, InferError> {
        let inputs = std::mem::take(&mut self.inputs)
            .into_iter()
            .map(|input| input.decode(&mut binary))
            .collect::<Result<Vec<_>, _>>()?;
        if !binary.is_empty() {
            return Err(InferError::InvalidInput(format!(
                "{} bytes of binary data are not claimed by any input's binary_data_size",
                binary.len()
            )));
        }
        Ok(inputs)
    }
}

impl RequestedOutputJson {
    /// Whether this output goes to the binary section.
    pub fn binary(&self, default: bool) -> bool {
        self.parameters
            .as_ref()
            .and_then(|p| p.binary_data)
            .unwrap_or(default)
    }
}

/// Parses an inference request body: its JSON part (the first
/// `Inference-Header-Content-Length` bytes, or all of it) and its inputs.
pub fn parse_infer_body<'a>(
    header_length: Option<&HeaderValue>,
    bytes: &'a [u8],
) -> Result<(InferRequestJson<'a>, Vec<NamedTensor>), InferError> {
    let (json_part, binary_part) = split_body(header_length, bytes)?;
    let malformed = |e: serde_json::Error| {
        InferError::InvalidInput(format!("malformed inference request: {e}"))
    };
    match serde_json::from_slice::<InferRequestJson>(json_part) {
        Ok(mut request) => {
            let inputs = request.take_inputs(binary_part)?;
            Ok((request, inputs))
        }
        // Only a body that is not JSON is scanned for NaN and the infinities.
        Err(error) => {
            let rewritten = nonfinite::rewrite(json_part).ok_or_else(|| malformed(error))?;
            let mut request: InferRequestJson =
                serde_json::from_slice(&rewritten).map_err(malformed)?;
            let inputs = request.take_inputs(binary_part)?;
            Ok((request.without_inputs(), inputs))
        }
    }
}

/// A body's JSON part and its binary section, split where the
/// `inference-header-content-length` header says (no binary section without it).
pub fn split_body<'a>(
    header_length: Option<&HeaderValue>,
    bytes: &'a [u8],
) -> Result<(&'a [u8], &'a [u8]), InferError> {
    let header_length = match header_length {
        None => bytes.len(),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|length| *length <= bytes.len())
            .ok_or_else(|| {
                InferError::InvalidInput(format!(
                    "{HEADER_LENGTH} must be a byte count no larger than the body ({} bytes)",
                    bytes.len()
                ))
            })?,
    };
    Ok(bytes.split_at(header_length))
}

/// Parameters on an output sent in the binary section.
#[derive(Debug, Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// One output of an inference response.
#[derive(Debug, Serialize)]
struct OutputTensorJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<DataJson<'a>>,
}

/// An inference response body (the JSON part).
#[derive(Debug, Serialize)]
struct InferResponseJson<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty", serialize_with = "string_map")]
    parameters: &'a [(&'a str, &'a str)],
    outputs: Vec<OutputTensorJson<'a>>,
}

/// Writes response parameters as a JSON object of strings.
fn string_map<S: serde::Serializer>(
    pairs: &&[(&str, &str)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().copied())
}

/// An output ready to send: its name, value and whether it goes binary.
pub struct ResponseOutput<'a> {
    /// The output's name.
    pub name: &'a str,
    /// Its value.
    pub tensor: &'a Tensor,
    /// Send it in the binary section instead of JSON `data`.
    pub binary: bool,
}

/// Encodes a response: the JSON, then (when any output is binary) the binary
/// section. `parameters` are the response's own string parameters (omitted
/// when empty). Returns the body and, for binary responses, the JSON header
/// length.
pub fn encode_response(
    model_name: &str,
    model_version: u64,
    id: Option<&str>,
    parameters: &[(&str, &str)],
    outputs: &[ResponseOutput<'_>],
) -> (Vec<u8>, Option<usize>) {
    let binary_parts: Vec<Vec<u8>> = outputs
        .iter()
        .filter(|o| o.binary)
        .map(|o| o.tensor.data.to_le_bytes())
        .collect();
    let mut sizes = binary_parts.iter().map(Vec::len);
    let body = InferResponseJson {
        model_name,
        model_version: model_version.to_string(),
        id,
        parameters,
        outputs: outputs
            .iter()
            .map(|o| OutputTensorJson {
                name: o.name,
                datatype: o.tensor.datatype().as_str(),
                shape: &o.tensor.shape,
                parameters: o.binary.then(|| BinaryParameters {
                    binary_data_size: sizes.next().expect("one size per binary output"),
                }),
                data: (!o.binary).then_some(DataJson(&o.tensor.data)),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec(&body).expect("responses always serialize");
    if binary_parts.is_empty() {
        return (bytes, None);
    }
    let header_length = bytes.len();
    for part in binary_parts {
        bytes.extend_from_slice(&part);
    }
    (bytes, Some(header_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_json_inputs_decode_in_order() {
        let json = r#"{"id":"7","inputs":[
            {"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}},
            {"name":"b","datatype":"FP32","shape":[1,2],"data":[[1.5,2]]}]}"#;
        let mut request: InferRequestJson = serde_json::from_str(json).unwrap();
        let binary = [1u8, 0, 0, 0, 2, 0, 0, 0];
        let inputs = request.take_inputs(&binary).unwrap();
        assert_eq!(inputs[0].tensor.data, TensorData::Int32(vec![1, 2]));
        assert_eq!(inputs[1].tensor.data, TensorData::Fp32(vec![1.5, 2.0]));
        assert_eq!(request.id.as_deref(), Some("7"));
    }

    #[test]
    fn binary_section_must_match_the_declared_sizes() {
        let json = r#"{"inputs":[{"name":"a","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
        let mut request: InferRequestJson = serde_json::from_str(json).unwrap();
        let error = request.take_inputs(&[0; 4]).unwrap_err();
        assert!(error.to_string().contains("only 4 bytes"), "{error}");
        let mut request: InferRequestJson = serde_json::from_str(json).unwrap();
        let error = request.take_inputs(&[0; 12]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("4 bytes of binary data are not claimed"),
            "{error}"
        );
    }

    #[test]
    fn input_errors_name_the_input() {
        let json = r#"{"inputs":[{"name":"x","datatype":"FP33","shape":[1],"data":[1]}]}"#;
        let mut request: InferRequestJson = serde_json::from_str(json).unwrap();
        let error = request.take_inputs(&[]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("input 'x': unknown datatype 'FP33'"),
            "{error}"
        );
    }

    #[test]
    fn bare_non_finite_literals_and_null_decode_in_float_inputs_only() {
        let body = br#"{"id":"n","inputs":[
            {"name":"f","datatype":"FP32","shape":[5],"data":[null, NaN, Infinity, -Infinity, 2]},
            {"name":"s","datatype":"BYTES","shape":[1],"data":["NaN"]}]}"#;
        let (request, inputs) = parse_infer_body(None, body).unwrap();
        assert_eq!(request.id.as_deref(), Some("n"));
        let TensorData::Fp32(v) = &inputs[0].tensor.data else {
            panic!("{:?}", inputs[0].tensor.data)
        };
        assert!(v[0].is_nan() && v[1].is_nan());
        assert_eq!(v[2..], [f32::INFINITY, f32::NEG_INFINITY, 2.0]);
        assert_eq!(
            inputs[1].tensor.data,
            TensorData::Bytes(vec![b"NaN".to_vec()])
        );

        let body = br#"{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[NaN]}]}"#;
        let error = parse_infer_body(None, body).unwrap_err().to_string();
        assert!(
            error.contains("input 'x': invalid INT64 data: NaN is only accepted in floating-point data (FP16, BF16, FP32, FP64), not INT64"),
            "{error}"
        );
        let body = br#"{"inputs":[{"name":"b","datatype":"BYTES","shape":[1],"data":[Infinity]}]}"#;
        let error = parse_infer_body(None, body).unwrap_err().to_string();
        assert!(
            error.contains("Infinity is only accepted in floating-point data"),
            "{error}"
        );
    }

    #[test]
    fn bodies_that_stay_malformed_keep_their_errors() {
        for body in [&br#"{"inputs":[NaN"#[..], br#"{"inputs": nan}"#, b"{"] {
            let error = parse_infer_body(None, body).unwrap_err().to_string();
            assert!(
                error.starts_with("malformed inference request: "),
                "{error}"
            );
        }
        let body = br#"{"inputs":[],"id":NaN}"#;
        let error = parse_infer_body(None, body).unwrap_err().to_string();
        assert!(error.contains("malformed inference request"), "{error}");
    }

    #[test]
    fn literals_in_the_json_part_leave_the_binary_section_alone() {
        let json = br#"{"inputs":[{"name":"f","datatype":"FP32","shape":[1],"data":[-Infinity]},{"name":"b","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        let length = HeaderValue::from(json.len());
        let (_, inputs) = parse_infer_body(Some(&length), &body).unwrap();
        assert_eq!(
            inputs[0].tensor.data,
            TensorData::Fp32(vec![f32::NEG_INFINITY])
        );
        assert_eq!(inputs[1].tensor.data, TensorData::Fp32(vec![1.5]));
    }

    #[test]
    fn responses_put_binary_outputs_after_the_header() {
        let a = Tensor::new(vec![1], TensorData::Fp32(vec![2.0])).unwrap();
        let b = Tensor::new(vec![1], TensorData::Int64(vec![3])).unwrap();
        let outputs = [
            ResponseOutput {
                name: "a",
                tensor: &a,
                binary: true,
            },
            ResponseOutput {
                name: "b",
                tensor: &b,
                binary: false,
            },
        ];
        let (body, header) = encode_response("m", 1, Some("r1"), &[], &outputs);
        let header = header.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(json["outputs"][1]["data"][0], 3);
        assert_eq!(json["id"], "r1");
        assert_eq!(json["model_version"], "1");
        assert_eq!(&body[header..], &2.0f32.to_le_bytes());
    }
}
