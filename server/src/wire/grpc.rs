//! The Open Inference Protocol's gRPC messages (generated from
//! `proto/grpc_predict_v2.proto`) and the decoding of a request's inputs from
//! them: typed `contents` or `raw_input_contents`.

use crate::error::InferError;
use crate::tensor::{DataType, NamedTensor, Tensor, TensorData};

/// The code generated from `proto/grpc_predict_v2.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::model_infer_request::InferInputTensor;

/// Decodes a request's inputs, from `raw_input_contents` when it is not empty.
pub fn decode_inputs(
    inputs: Vec<InferInputTensor>,
    raw: &[Vec<u8>],
) -> Result<Vec<NamedTensor>, InferError> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(InferError::InvalidInput(format!(
            "raw_input_contents has {} entries for {} inputs",
            raw.len(),
            inputs.len()
        )));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| decode_input(input, raw.get(index).map(Vec::as_slice)))
        .collect()
}

/// Decodes one input from its raw bytes or its typed contents.
fn decode_input(input: InferInputTensor, raw: Option<&[u8]>) -> Result<NamedTensor, InferError> {
    let name = input.name;
    let named = |message: String| InferError::InvalidInput(format!("input '{name}': {message}"));
    let datatype = DataType::parse(&input.datatype).map_err(|e| named(e.to_string()))?;
    let data = match raw {
        Some(bytes) => TensorData::from_le_bytes(datatype, &input.shape, bytes)
            .map_err(|e| named(e.to_string()))?,
        None => from_contents(datatype, input.contents.unwrap_or_default()).map_err(named)?,
    };
    let tensor = Tensor::input(input.shape, data).map_err(|e| named(e.to_string()))?;
    Ok(NamedTensor { name, tensor })
}

/// Takes the typed contents field that carries `datatype`, narrowing integers
/// with a range check.
fn from_contents(
    datatype: DataType,
    contents: pb::InferTensorContents,
) -> Result<TensorData, String> {
    fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
        values: Vec<S>,
        datatype: DataType,
    ) -> Result<Vec<T>, String> {
        values
            .into_iter()
            .map(|v| {
                T::try_from(v).map_err(|_| format!("value {v} is out of range for {datatype}"))
            })
            .collect()
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(contents.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(contents.int_contents, datatype)?),
        DataType::Int16 => TensorData::Int16(narrow(contents.int_contents, datatype)?),
        DataType::Int32 => TensorData::Int32(contents.int_contents),
        DataType::Int64 => TensorData::Int64(contents.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(contents.uint_contents, datatype)?),
        DataType::Uint16 => TensorData::Uint16(narrow(contents.uint_contents, datatype)?),
        DataType::Uint32 => TensorData::Uint32(contents.uint_contents),
        DataType::Uint64 => TensorData::Uint64(contents.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(contents.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(contents.fp64_contents),
        DataType::Bytes => TensorData::Bytes(contents.bytes_contents),
        DataType::Fp16 | DataType::Bf16 => {
            return Err(format!(
                "{datatype} has no typed contents field; send it in raw_input_contents"
            ));
        }
    })
}
