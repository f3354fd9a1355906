//! The ONNX model format (`proto/onnx.proto`, compiled by build.rs) and the few
//! helpers the optimizer needs to read and write its tensors.

use std::path::Path;

use prost::Message;

use super::OptimizeError;

/// The generated ONNX messages.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use pb::tensor_proto::DataType;
pub use pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};

/// Reads and decodes an ONNX model file.
pub fn read(path: &Path) -> Result<ModelProto, OptimizeError> {
    let bytes = std::fs::read(path).map_err(|e| OptimizeError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| OptimizeError::Malformed {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if model.graph.is_none() {
        return Err(OptimizeError::Malformed {
            path: path.display().to_string(),
            message: "the model has no graph".into(),
        });
    }
    Ok(model)
}

/// `values`, a row-major `[rows, columns]` matrix, transposed to
/// `[columns, rows]`.
pub fn transpose<T: Copy + Default>(values: &[T], rows: usize, columns: usize) -> Vec<T> {
    let mut transposed = vec![T::default(); values.len()];
    for r in 0..rows {
        for c in 0..columns {
            transposed[c * rows + r] = values[r * columns + c];
        }
    }
    transposed
}

/// A copy of `model` whose main graph also outputs `values` (untyped: ONNX
/// Runtime infers their types), skipping the graph's inputs and the outputs it
/// already declares. Loading it shows what those values are or hold.
pub fn with_outputs<'a>(
    model: &ModelProto,
    values: impl IntoIterator<Item = &'a String>,
) -> ModelProto {
    let mut probe = model.clone();
    let Some(graph) = probe.graph.as_mut() else {
        return probe;
    };
    let mut present: std::collections::HashSet<String> = graph
        .output
        .iter()
        .chain(&graph.input)
        .filter_map(|v| v.name.clone())
        .collect();
    let extra: Vec<ValueInfoProto> = values
        .into_iter()
        .filter(|v| !v.is_empty() && present.insert((*v).clone()))
        .map(|v| ValueInfoProto {
            name: Some(v.clone()),
            ..ValueInfoProto::default()
        })
        .collect();
    graph.output.extend(extra);
    probe
}

/// The encoded model.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The opset version the model imports for `domain` (`""` is ONNX's own).
pub fn opset(model: &ModelProto, domain: &str) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| {
            let d = o.domain.as_deref().unwrap_or_default();
            d == domain || (domain.is_empty() && d == "ai.onnx")
        })
        .and_then(|o| o.version)
}

/// The values of a FLOAT tensor, from `float_data` or little-endian `raw_data`;
/// `None` for another type or external data.
pub fn floats(tensor: &TensorProto) -> Option<Vec<f32>> {
    if tensor.data_type != Some(DataType::Float as i32) || tensor.data_location == Some(1) {
        return None;
    }
    match &tensor.raw_data {
        Some(raw) if !raw.is_empty() => Some(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        _ => Some(tensor.float_data.clone()),
    }
}

/// A FLOAT tensor named `name`.
pub fn float_tensor(name: &str, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(DataType::Float as i32),
        raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..TensorProto::default()
    }
}

/// An INT8 tensor named `name`.
pub fn int8_tensor(name: &str, dims: Vec<i64>, values: &[i8]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(DataType::Int8 as i32),
        raw_data: Some(values.iter().map(|v| *v as u8).collect()),
        ..TensorProto::default()
    }
}

/// A UINT8 tensor named `name`.
pub fn uint8_tensor(name: &str, dims: Vec<i64>, values: &[u8]) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims,
        data_type: Some(DataType::Uint8 as i32),
        raw_data: Some(values.to_vec()),
        ..TensorProto::default()
    }
}

/// A node of ONNX's default domain.
pub fn node(op: &str, name: String, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_string()),
        name: Some(name),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..NodeProto::default()
    }
}

/// An integer attribute.
pub fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        i: Some(value),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        ..AttributeProto::default()
    }
}

/// A tensor attribute.
pub fn tensor_attribute(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        t: Some(value),
        r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
        ..AttributeProto::default()
    }
}

/// A node's attribute `name`, when present.
pub fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

/// Removes initializers that no node, graph output or subgraph uses any more
/// (the FP32 weights that were quantized, say). With subgraphs, which may read
/// an outer initializer by name, it keeps them all.
pub fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter())
        .chain(graph.output.iter().filter_map(|o| o.name.as_ref()))
        .map(String::as_str)
        .collect();
    let has_subgraphs = graph.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    });
    if has_subgraphs {
        // A subgraph may read an outer initializer by name; keep them all.
        return;
    }
    let keep: Vec<bool> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_deref().is_some_and(|n| used.contains(n)))
        .collect();
    let mut index = 0;
    graph.initializer.retain(|_| {
        index += 1;
        keep[index - 1]
    });
}
