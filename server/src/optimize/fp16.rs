//! FP16: weights and compute in half precision, with the model's inputs and
//! outputs kept in FP32 so that callers do not change.
//!
//! Every FP32 value of the graph becomes FP16, except:
//! - the graph's inputs and outputs: a `Cast` to FP16 follows each input and a
//!   `Cast` to FP32 precedes each output;
//! - the inputs and outputs of nodes that stay in FP32, with `Cast`s around them:
//!   operators on [`FP32_OPS`] or on the user's list, operators outside ONNX's
//!   default domain (`ai.onnx.ml` has no FP16 kernels), nodes with subgraphs
//!   (`If`, `Loop`, `Scan` are kept whole), and `Constant`s given as
//!   `value_float(s)`;
//! - inputs that ONNX types as FP32 whatever the node computes in
//!   ([`FP32_INPUTS`]).
//!
//! Initializers are stored in FP16 when an FP16 node reads them, and values
//! beyond FP16's range (±65,504) are clamped to it. The graph's `value_info`
//! (optional type annotations) is dropped, since the types changed: ONNX Runtime
//! infers them again at load.
//!
//! Where ONNX Runtime's CPU provider has no FP16 kernel for an operator, it
//! inserts its own casts at load time: FP16 halves the file, but on CPUs without
//! FP16 arithmetic it is rarely faster (docs/optimize.md has the figures).

use std::collections::{HashMap, HashSet};

use half::f16;

use super::onnx::{self, DataType, ModelProto, NodeProto, TensorProto, pb::type_proto};
use super::outcome::{NodeOutcome, Outcome};

/// Operators kept in FP32, and why:
/// - `RandomNormal`, `RandomUniform`, their `-Like` forms, `Bernoulli`,
///   `Multinomial` and `EyeLike` choose their output type by an attribute;
/// - `NonMaxSuppression`, `RoiAlign` and `TopK` compare scores and box
///   coordinates whose ties and thresholds FP16 blurs;
/// - `Range` and `CumSum` accumulate, and FP16 counts exactly only to 2,048;
/// - `Upsample` (deprecated) takes its scales in FP32.
pub const FP32_OPS: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
    "EyeLike",
    "NonMaxSuppression",
    "RoiAlign",
    "TopK",
    "Range",
    "CumSum",
    "Upsample",
];

/// Inputs, by operator and position, that ONNX requires in FP32 whatever the
/// node computes in: `Resize`'s `scales`.
pub const FP32_INPUTS: &[(&str, usize)] = &[("Resize", 2)];

/// Which precision a value is held in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Precision {
    Fp32 = 0,
    Fp16 = 1,
}

/// Converts `model` to FP16 in place. `floats` names its FP32 values
/// ([`super::types::float_tensors`]); `keep_ops` adds operators to
/// [`FP32_OPS`]. Returns what happened to each node that reads or writes FP32.
pub fn convert(
    model: &mut ModelProto,
    floats: &HashSet<String>,
    keep_ops: &[String],
) -> Vec<NodeOutcome> {
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    let graph_outputs: HashSet<String> =
        graph.output.iter().filter_map(|o| o.name.clone()).collect();
    let mut taken: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().chain(n.output.iter()))
        .chain(graph.initializer.iter().filter_map(|t| t.name.as_ref()))
        .chain(graph.input.iter().filter_map(|i| i.name.as_ref()))
        .cloned()
        .collect();
    let touches = |node: &NodeProto| {
        node.input
            .iter()
            .chain(node.output.iter())
            .any(|v| floats.contains(v))
    };
    let kept_reasons: Vec<Option<String>> = graph
        .node
        .iter()
        .map(|n| touches(n).then(|| fp32_reason(n, keep_ops)).flatten())
        .collect();

    // Initializers read in FP16 by some node, and not graph outputs themselves.
    let mut fp16_reads: HashSet<String> = HashSet::new();
    for (node, kept) in graph.node.iter().zip(&kept_reasons) {
        for (position, input) in node.input.iter().enumerate() {
            if wanted(node, position, kept.is_some()) == Precision::Fp16 {
                fp16_reads.insert(input.clone());
            }
        }
    }
    let mut available: HashMap<String, [Option<String>; 2]> = HashMap::new();
    let mut converted_initializers = HashSet::new();
    for tensor in &mut graph.initializer {
        let Some(name) = tensor.name.clone() else {
            continue;
        };
        if !floats.contains(&name) {
            continue;
        }
        let precision = if fp16_reads.contains(&name) && !graph_outputs.contains(&name) {
            to_fp16(tensor).map(|()| Precision::Fp16)
        } else {
            None
        };
        let precision = precision.unwrap_or(Precision::Fp32);
        if precision == Precision::Fp16 {
            converted_initializers.insert(name.clone());
        }
        available.insert(name.clone(), held(name, precision));
    }
    for input in &mut graph.input {
        let Some(name) = input.name.clone() else {
            continue;
        };
        if converted_initializers.contains(&name) {
            // An initializer also listed as an input (ONNX IR < 4) declares its
            // new type there too.
            if let Some(type_proto::Value::TensorType(tensor)) =
                input.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                tensor.elem_type = Some(DataType::Float16 as i32);
            }
        } else if floats.contains(&name) {
            available.insert(name.clone(), held(name, Precision::Fp32));
        }
    }

    let mut report = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for (mut node, kept) in std::mem::take(&mut graph.node)
        .into_iter()
        .zip(kept_reasons)
    {
        if !touches(&node) {
            nodes.push(node);
            continue;
        }
        let is_kept = kept.is_some();
        for position in 0..node.input.len() {
            let name = node.input[position].clone();
            if !floats.contains(&name) {
                continue;
            }
            let mut precision = wanted(&node, position, is_kept);
            if node.op_type.as_deref() == Some("Cast")
                && let Some(names) = available.get(&name)
                && names[precision as usize].is_none()
            {
                // A Cast reads either precision: no Cast before the Cast.
                precision = if precision == Precision::Fp16 {
                    Precision::Fp32
                } else {
                    Precision::Fp16
                };
            }
            if let Some(resolved) =
                resolve(&name, precision, &mut available, &mut nodes, &mut taken)
            {
                node.input[position] = resolved;
            }
        }
        let mut casts_after = Vec::new();
        if let Some(reason) = kept {
            for output in node.output.iter().filter(|o| floats.contains(*o)) {
                available.insert(output.clone(), held(output.clone(), Precision::Fp32));
            }
            report.push(NodeOutcome::kept(&node, reason));
        } else {
            retype_attributes(&mut node);
            for output in node.output.iter_mut().filter(|o| floats.contains(*o)) {
                let name = output.clone();
                if graph_outputs.contains(&name) {
                    let half = unique(format!("{name}_fp16"), &mut taken);
                    *output = half.clone();
                    casts_after.push(cast(&half, &name, DataType::Float));
                    available.insert(name.clone(), [Some(name), Some(half)]);
                } else {
                    available.insert(name.clone(), held(name, Precision::Fp16));
                }
            }
            report.push(NodeOutcome::changed(
                &node,
                Outcome::Converted,
                "computes in FP16".into(),
            ));
        }
        nodes.push(node);
        nodes.extend(casts_after);
    }
    graph.node = nodes;
    graph.value_info.clear();
    report
}

/// Why `node` stays in FP32, if it does.
fn fp32_reason(node: &NodeProto, keep_ops: &[String]) -> Option<String> {
    let op = node.op_type.as_deref().unwrap_or_default();
    let domain = node.domain.as_deref().unwrap_or_default();
    if !domain.is_empty() && domain != "ai.onnx" {
        return Some(format!("operators of domain '{domain}' are kept in FP32"));
    }
    if FP32_OPS.contains(&op) {
        return Some(format!("{op} is on the FP32 list (docs/optimize.md)"));
    }
    if keep_ops.iter().any(|k| k == op) {
        return Some(format!("{op} is kept in FP32 by --keep-fp32"));
    }
    if node
        .attribute
        .iter()
        .any(|a| a.g.is_some() || !a.graphs.is_empty())
    {
        return Some("it has a subgraph; such nodes are kept whole".into());
    }
    if op == "Constant" && onnx::attribute(node, "value").is_none() {
        return Some("its value is not given as a tensor".into());
    }
    None
}

/// The precision `node` reads its input at `position` in.
fn wanted(node: &NodeProto, position: usize, kept: bool) -> Precision {
    let op = node.op_type.as_deref().unwrap_or_default();
    if kept || FP32_INPUTS.contains(&(op, position)) {
        Precision::Fp32
    } else {
        Precision::Fp16
    }
}

/// The name under which `value` is held in `precision`, adding a `Cast` to
/// `nodes` the first time it is needed; `None` for a value this graph does not
/// produce (an outer scope's).
fn resolve(
    value: &str,
    precision: Precision,
    available: &mut HashMap<String, [Option<String>; 2]>,
    nodes: &mut Vec<NodeProto>,
    taken: &mut HashSet<String>,
) -> Option<String> {
    let names = available.get_mut(value)?;
    if let Some(name) = &names[precision as usize] {
        return Some(name.clone());
    }
    let source = names[1 - precision as usize].clone()?;
    let (suffix, to) = match precision {
        Precision::Fp16 => ("to_fp16", DataType::Float16),
        Precision::Fp32 => ("to_fp32", DataType::Float),
    };
    let target = unique(format!("{value}_{suffix}"), taken);
    nodes.push(cast(&source, &target, to));
    names[precision as usize] = Some(target.clone());
    Some(target)
}

/// A value held only in `precision`, under its own name.
fn held(name: String, precision: Precision) -> [Option<String>; 2] {
    match precision {
        Precision::Fp32 => [Some(name), None],
        Precision::Fp16 => [None, Some(name)],
    }
}

/// A `Cast` of `input` to `to`, named after its output.
fn cast(input: &str, output: &str, to: DataType) -> NodeProto {
    let mut node = onnx::node("Cast", format!("{output}_cast"), &[input], &[output]);
    node.attribute.push(onnx::int_attribute("to", to as i64));
    node
}

/// `name`, or `name_2`, `name_3`, ... when the graph already uses it.
fn unique(name: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while taken.contains(&candidate) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// Points the attributes that fix an output type at FP16: `Cast`'s `to`, and
/// the `value` tensor of `Constant` and `ConstantOfShape` (whose absent value is
/// an FP32 zero).
fn retype_attributes(node: &mut NodeProto) {
    let op = node.op_type.clone().unwrap_or_default();
    for attribute in &mut node.attribute {
        match (op.as_str(), attribute.name.as_deref()) {
            ("Cast", Some("to")) if attribute.i == Some(DataType::Float as i64) => {
                attribute.i = Some(DataType::Float16 as i64);
            }
            ("Constant" | "ConstantOfShape", Some("value")) => {
                if let Some(tensor) = attribute.t.as_mut() {
                    to_fp16(tensor);
                }
            }
            _ => {}
        }
    }
    if op == "ConstantOfShape" && onnx::attribute(node, "value").is_none() {
        let mut zero = onnx::float_tensor("value", vec![1], &[0.0]);
        to_fp16(&mut zero);
        node.attribute.push(onnx::tensor_attribute("value", zero));
    }
}

/// Rewrites an FP32 tensor held in the file as FP16; `None`, leaving it as it
/// is, when it is not one (another type, or external data).
fn to_fp16(tensor: &mut TensorProto) -> Option<()> {
    let values = onnx::floats(tensor)?;
    let max = f16::MAX.to_f32();
    tensor.raw_data = Some(
        values
            .iter()
            .flat_map(|v| f16::from_f32(v.clamp(-max, max)).to_le_bytes())
            .collect(),
    );
    tensor.float_data.clear();
    tensor.data_type = Some(DataType::Float16 as i32);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_become_half_precision_clamped_to_its_range() {
        let mut tensor = onnx::float_tensor("w", vec![3], &[1.5, -70_000.0, 1e-3]);
        to_fp16(&mut tensor).expect("an FP32 tensor");
        assert_eq!(tensor.data_type, Some(DataType::Float16 as i32));
        let halves: Vec<f32> = tensor
            .raw_data
            .unwrap()
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        assert_eq!(halves[0], 1.5);
        assert_eq!(halves[1], -65_504.0);
        assert!((halves[2] - 1e-3).abs() < 1e-6, "{}", halves[2]);
    }

    #[test]
    fn an_int8_tensor_is_left_alone() {
        let mut tensor = onnx::int8_tensor("q", vec![2], &[1, 2]);
        assert!(to_fp16(&mut tensor).is_none());
        assert_eq!(tensor.data_type, Some(DataType::Int8 as i32));
    }
}
