//! Which values of a graph hold FP32 tensors, as ONNX Runtime infers them.
//!
//! ONNX files need not declare the types of intermediate values, and inferring
//! them means knowing every operator's typing rules. ONNX Runtime knows them: the
//! model is loaded once, without graph optimizations, with every node output
//! declared as an untyped graph output, and the session reports each one's type.

use std::collections::HashSet;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};

use super::OptimizeError;
use super::onnx::{self, DataType, ModelProto, ValueInfoProto, pb::type_proto};

/// The names of every FP32 tensor of the main graph: inputs, initializers and
/// node outputs.
pub fn float_tensors(model: &ModelProto) -> Result<HashSet<String>, OptimizeError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OptimizeError::Malformed {
            path: "the model".into(),
            message: "it has no graph".into(),
        })?;
    let float = DataType::Float as i32;
    let mut floats: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(float))
        .filter_map(|t| t.name.clone())
        .collect();
    floats.extend(
        graph
            .input
            .iter()
            .filter(|i| declared_type(i) == Some(float))
            .filter_map(|i| i.name.clone()),
    );

    let outputs: Vec<&String> = graph.node.iter().flat_map(|n| n.output.iter()).collect();
    let probe = onnx::with_outputs(model, outputs);
    let load_error = |message: String| OptimizeError::Load {
        path: "the model (inferring its types)".into(),
        message,
    };
    let environment = crate::runtime::environment().map_err(|e| load_error(e.to_string()))?;
    let session = Session::builder(environment)
        .map_err(|e| load_error(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(|e| load_error(e.to_string()))?
        .commit_from_memory(&onnx::encode(&probe))
        .map_err(|e| load_error(e.to_string()))?;
    floats.extend(
        session
            .outputs()
            .iter()
            .filter(|o| {
                matches!(
                    o.dtype(),
                    ValueType::Tensor {
                        ty: TensorElementType::Float32,
                        ..
                    }
                )
            })
            .map(|o| o.name().to_string()),
    );
    Ok(floats)
}

/// The element type a value declares, when it declares a tensor type.
fn declared_type(value: &ValueInfoProto) -> Option<i32> {
    match value.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(tensor) => tensor.elem_type,
        _ => None,
    }
}
