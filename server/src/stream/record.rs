//! A record's value to the model's inputs, and the model's answer back to a
//! record's value.
//!
//! A record is either an Open Inference Protocol request in JSON (with the
//! binary extension when its `inference-header-content-length` header is set),
//! answered with the protocol's response, or a flat JSON object of features
//! (`{"amount": 12.5, "merchant": 7}`), answered with a flat object of the
//! model's outputs (`{"label": 1, "probabilities": [0.1, 0.9]}`). Features are
//! matched to the model's inputs as `batch` matches JSON Lines keys: by the
//! input's name (`x`, an array, or `x_0`, `x_1`, ...), or, for a model with one
//! input, by the feature names given (the profile's), else in the record's
//! own key order.

use std::collections::HashMap;

use axum::http::HeaderValue;
use serde_json::Value;

use crate::batch::input::jsonl::{Ordered, flatten, number};
use crate::batch::layout::{Layout, check_value};
use crate::error::InferError;
use crate::model::ModelVersion;
use crate::protocol::rest::answer;
use crate::runtime::TensorSpec;
use crate::tensor::{NamedTensor, Tensor};
use crate::wire::json::{InferRequestJson, parse_infer_body};
use crate::wire::tensor_json::DataJson;

/// Reads records for one model.
pub struct Reader {
    /// The model's inputs laid out as one row, when flat rows can feed them.
    layout: Result<Layout, String>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    features: Vec<String>,
}

/// A record read as one of the two forms.
pub enum Decoded<'a> {
    /// An inference request and its inputs.
    Request(Box<InferRequestJson<'a>>, Vec<NamedTensor>),
    /// A row of features, as the model's inputs (one row each).
    Row(Vec<NamedTensor>),
}

impl Reader {
    /// A reader for a model with these inputs and outputs; `features` names a
    /// one-input model's features in order (may be empty).
    pub fn new(inputs: &[TensorSpec], outputs: &[TensorSpec], features: Vec<String>) -> Reader {
        Reader {
            layout: Layout::of(inputs).map_err(|e| e.to_string()),
            input_names: inputs.iter().map(|spec| spec.name.clone()).collect(),
            output_names: outputs.iter().map(|spec| spec.name.clone()).collect(),
            features,
        }
    }

    /// Reads a record's value; `header_length` is its binary-extension header.
    /// The error says what is wrong with it.
    pub fn decode<'a>(
        &self,
        value: &'a [u8],
        header_length: Option<&[u8]>,
    ) -> Result<Decoded<'a>, String> {
        if let Some(length) = header_length {
            let length = HeaderValue::from_bytes(length).map_err(|_| {
                "the inference-header-content-length header is not text".to_string()
            })?;
            let (request, inputs) =
                parse_infer_body(Some(&length), value).map_err(|e| e.to_string())?;
            return Ok(Decoded::Request(Box::new(request), inputs));
        }
        match parse_infer_body(None, value) {
            Ok((request, inputs)) => Ok(Decoded::Request(Box::new(request), inputs)),
            Err(request_error) => {
                let row: Ordered = serde_json::from_slice(value).map_err(|e| {
                    format!("is neither an inference request nor a JSON object of features: {e}")
                })?;
                if row.0.iter().any(|(key, _)| key == "inputs") {
                    return Err(request_error.to_string());
                }
                self.row(row).map(Decoded::Row)
            }
        }
    }

    /// A flat row's features as the model's inputs.
    fn row(&self, row: Ordered) -> Result<Vec<NamedTensor>, String> {
        let layout = self.layout.as_ref().map_err(|why| {
            format!("is a row of features, but this model cannot take rows: {why}")
        })?;
        let (flat, _) = flatten(row, None);
        let values: HashMap<&str, &Value> = flat.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let given_order = || flat.iter().map(|(key, _)| key.clone()).collect();
        let columns: Vec<String> = if !self.features.is_empty()
            && self
                .features
                .iter()
                .all(|f| values.contains_key(f.as_str()))
        {
            self.features.clone()
        } else {
            given_order()
        };
        let positions = layout
            .bind(&columns, "the record")
            .map_err(|e| e.to_string())?;
        let mut features = Vec::with_capacity(layout.width());
        for (position, column) in positions.iter().enumerate() {
            let name = &columns[*column];
            let value = number(&values, name)?;
            features.push(check_value(value, name, layout.integral(position))?);
        }
        Ok(layout
            .tensors(&features, 1)
            .into_iter()
            .zip(&self.input_names)
            .map(|(tensor, name)| NamedTensor {
                name: name.clone(),
                tensor,
            })
            .collect())
    }

    /// Runs a decoded record through the model (its batcher, timeout, circuit
    /// breaker and fallback, as for an HTTP request); returns the prediction's
    /// value and, for a binary response, the length of its JSON part.
    pub async fn predict(
        &self,
        model: &ModelVersion,
        decoded: Decoded<'_>,
    ) -> Result<(Vec<u8>, Option<usize>), InferError> {
        match decoded {
            Decoded::Request(request, inputs) => answer(model, &request, inputs).await,
            Decoded::Row(inputs) => {
                let answer = model.infer(inputs, None).await?;
                Ok((self.encode_row(&answer.outputs), None))
            }
        }
    }

    /// The outputs of one row as a flat JSON object: a single value as itself,
    /// several as an array.
    pub fn encode_row(&self, outputs: &[Tensor]) -> Vec<u8> {
        let mut object = serde_json::Map::with_capacity(outputs.len());
        for (name, tensor) in self.output_names.iter().zip(outputs) {
            let value = serde_json::to_value(DataJson(&tensor.data)).unwrap_or(Value::Null);
            let value = match value {
                Value::Array(mut items) if items.len() == 1 => items.remove(0),
                other => other,
            };
            object.insert(name.clone(), value);
        }
        serde_json::to_vec(&object).expect("a JSON object always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn reader(features: &[&str]) -> Reader {
        Reader::new(
            &[spec("x", DataType::Fp32, &[-1, 3])],
            &[
                spec("label", DataType::Int64, &[-1]),
                spec("probabilities", DataType::Fp32, &[-1, 2]),
            ],
            features.iter().map(|f| f.to_string()).collect(),
        )
    }

    fn row_values(decoded: Decoded<'_>) -> Vec<f32> {
        let Decoded::Row(inputs) = decoded else {
            panic!("read as a request")
        };
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].name, "x");
        assert_eq!(inputs[0].tensor.shape, vec![1, 3]);
        match &inputs[0].tensor.data {
            TensorData::Fp32(values) => values.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rows_match_the_input_name_the_profile_features_or_the_key_order() {
        let named = reader(&[]).decode(br#"{"x": [1, 2, 3]}"#, None).unwrap();
        assert_eq!(row_values(named), [1.0, 2.0, 3.0]);
        let profiled = reader(&["a", "b", "c"])
            .decode(br#"{"c": 3, "a": 1, "b": 2}"#, None)
            .unwrap();
        assert_eq!(row_values(profiled), [1.0, 2.0, 3.0]);
        let ordered = reader(&[])
            .decode(br#"{"c": 3, "a": 1, "b": 2}"#, None)
            .unwrap();
        assert_eq!(row_values(ordered), [3.0, 1.0, 2.0]);
    }

    #[test]
    fn inference_requests_are_read_as_the_protocol_says() {
        let body = br#"{"id": "7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}"#;
        let Ok(Decoded::Request(request, inputs)) = reader(&[]).decode(body, None) else {
            panic!("not read as a request")
        };
        assert_eq!(request.id.as_deref(), Some("7"));
        assert_eq!(inputs[0].tensor.data, TensorData::Fp32(vec![1.0, 2.0, 3.0]));
        let json = br#"{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}]}"#;
        let mut binary = json.to_vec();
        binary.extend_from_slice(&7i32.to_le_bytes());
        let length = json.len().to_string();
        let Ok(Decoded::Request(_, inputs)) = reader(&[]).decode(&binary, Some(length.as_bytes()))
        else {
            panic!("not read as a binary request")
        };
        assert_eq!(inputs[0].tensor.data, TensorData::Int32(vec![7]));
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let refused = |value: &[u8]| match reader(&[]).decode(value, None) {
            Ok(_) => panic!("{} was accepted", String::from_utf8_lossy(value)),
            Err(reason) => reason,
        };
        assert!(refused(b"\x00\xffnot json").contains("neither an inference request"));
        assert!(refused(br#"[1, 2, 3]"#).contains("neither an inference request"));
        assert!(refused(br#"{"x": [1, 2]}"#).contains("2 feature columns"));
        assert!(refused(br#"{"x": [1, "two", 3]}"#).contains("'x_1'"));
        // A malformed request says what the protocol's parser says, not that
        // it is a bad row.
        let reason = refused(
            br#"{"inputs": [{"name": "x", "datatype": "FP33", "shape": [1], "data": [1]}]}"#,
        );
        assert!(reason.contains("unknown datatype 'FP33'"), "{reason}");
        let reason = match reader(&[]).decode(b"{}", Some(b"99")) {
            Err(reason) => reason,
            Ok(_) => panic!("a header length past the value was accepted"),
        };
        assert!(reason.contains("no larger than the body"), "{reason}");
    }

    #[test]
    fn a_row_answer_is_a_flat_object_of_outputs() {
        let outputs = [
            Tensor::new(vec![1], TensorData::Int64(vec![1])).unwrap(),
            Tensor::new(vec![1, 2], TensorData::Fp32(vec![0.25, 0.75])).unwrap(),
        ];
        let text = String::from_utf8(reader(&[]).encode_row(&outputs)).unwrap();
        assert_eq!(text, r#"{"label":1,"probabilities":[0.25,0.75]}"#);
    }
}
