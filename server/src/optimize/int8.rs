//! INT8 dynamic quantization: the weights of `MatMul` and `Gemm` are quantized
//! once, here, per output column; activations are quantized at run time.
//!
//! Each eligible node becomes ONNX Runtime's own integer pattern, which its graph
//! optimizer fuses into one kernel at load time:
//!
//! ```text
//! A --DynamicQuantizeLinear--> (A_u8, A_scale, A_zero)
//! MatMulInteger(A_u8, W_i8, A_zero, W_zero) --Cast(float)--> * (A_scale * W_scale) [+ bias]
//! ```
//!
//! - Weights are symmetric INT8, one scale per output column (per channel), zero
//!   point 0. By default they use 7 bits (-64..64, as ONNX Runtime's
//!   `reduce_range`): x86 CPUs without VNNI add pairs of u8 x s8 products into
//!   saturating 16-bit sums, and 255 x 64 x 2 = 32,640 still fits where
//!   full-range weights can overflow; `full_range` uses -127..127.
//! - A node is left in FP32, with the reason in the report, when its weight is not
//!   a 2-D FLOAT initializer, when `Gemm` transposes A, or when a `Gemm` bias that
//!   is not constant is scaled (`beta` not 1).
//! - The model must import ONNX opset 11 or later (`DynamicQuantizeLinear`).

use std::collections::HashMap;

use super::onnx::{self, DataType, ModelProto, NodeProto, TensorProto};
use super::outcome::{NodeOutcome, Outcome};

/// Quantizes every eligible node of `model` in place and reports each candidate.
pub fn quantize_dynamic(model: &mut ModelProto, full_range: bool) -> Vec<NodeOutcome> {
    let version = onnx::opset(model, "").unwrap_or(1);
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    let candidates = |n: &NodeProto| matches!(n.op_type.as_deref(), Some("MatMul" | "Gemm"));
    if version < 11 {
        return graph
            .node
            .iter()
            .filter(|n| candidates(n))
            .map(|n| NodeOutcome::kept(n, format!("the model imports ONNX opset {version}; dynamic quantization needs 11 or later")))
            .collect();
    }
    let qmax: f32 = if full_range { 127.0 } else { 64.0 };
    let initializers: HashMap<String, TensorProto> = graph
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone()?, t.clone())))
        .collect();
    let mut quantized_inputs: HashMap<String, [String; 3]> = HashMap::new();
    let mut report = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    let mut added: Vec<TensorProto> = Vec::new();
    for node in std::mem::take(&mut graph.node) {
        if !candidates(&node) {
            nodes.push(node);
            continue;
        }
        match plan(&node, &initializers) {
            Err(reason) => {
                report.push(NodeOutcome::kept(&node, reason));
                nodes.push(node);
            }
            Ok(plan) => {
                let prefix = format!("{}_int8", node.output[0]);
                let (weights, scales) =
                    quantize_columns(&plan.weight, plan.rows, plan.columns, qmax);
                let dims = vec![plan.rows as i64, plan.columns as i64];
                let scales: Vec<f32> = scales.iter().map(|s| s * plan.alpha).collect();
                added.push(onnx::int8_tensor(&format!("{prefix}_w"), dims, &weights));
                added.push(onnx::float_tensor(
                    &format!("{prefix}_w_scale"),
                    vec![plan.columns as i64],
                    &scales,
                ));
                added.push(onnx::int8_tensor(
                    &format!("{prefix}_w_zero"),
                    vec![plan.columns as i64],
                    &vec![0; plan.columns],
                ));
                let input = node.input[0].clone();
                let [a_u8, a_scale, a_zero] = quantized_inputs
                    .entry(input.clone())
                    .or_insert_with(|| {
                        let names = [
                            format!("{input}_dq_u8"),
                            format!("{input}_dq_scale"),
                            format!("{input}_dq_zero"),
                        ];
                        nodes.push(onnx::node(
                            "DynamicQuantizeLinear",
                            format!("{input}_dq"),
                            &[&input],
                            &[&names[0], &names[1], &names[2]],
                        ));
                        names
                    })
                    .clone();
                let w = format!("{prefix}_w");
                let w_scale = format!("{prefix}_w_scale");
                let w_zero = format!("{prefix}_w_zero");
                let integer = format!("{prefix}_i32");
                let float = format!("{prefix}_f32");
                let scale = format!("{prefix}_scale");
                let output = node.output[0].clone();
                let product = if plan.bias.is_some() {
                    format!("{prefix}_product")
                } else {
                    output.clone()
                };
                nodes.push(onnx::node(
                    "MatMulInteger",
                    format!("{prefix}_matmul"),
                    &[&a_u8, &w, &a_zero, &w_zero],
                    &[&integer],
                ));
                let mut cast = onnx::node("Cast", format!("{prefix}_cast"), &[&integer], &[&float]);
                cast.attribute
                    .push(onnx::int_attribute("to", DataType::Float as i64));
                nodes.push(cast);
                nodes.push(onnx::node(
                    "Mul",
                    format!("{prefix}_scales"),
                    &[&a_scale, &w_scale],
                    &[&scale],
                ));
                nodes.push(onnx::node(
                    "Mul",
                    format!("{prefix}_rescale"),
                    &[&float, &scale],
                    &[&product],
                ));
                if let Some(bias) = plan.bias {
                    let bias_name = match bias {
                        Bias::Input(name) => name,
                        Bias::Scaled(tensor) => {
                            let name = format!("{prefix}_bias");
                            added.push(TensorProto {
                                name: Some(name.clone()),
                                ..*tensor
                            });
                            name
                        }
                    };
                    nodes.push(onnx::node(
                        "Add",
                        format!("{prefix}_bias_add"),
                        &[&product, &bias_name],
                        &[&output],
                    ));
                }
                report.push(NodeOutcome::changed(
                    &node,
                    Outcome::Quantized,
                    format!(
                        "weight [{}, {}] to INT8, per column",
                        plan.rows, plan.columns
                    ),
                ));
            }
        }
    }
    graph.node = nodes;
    graph.initializer.extend(added);
    onnx::drop_unused_initializers(graph);
    report
}

/// A node's weight, ready to quantize.
struct Plan {
    /// Row-major `[rows, columns]`: the matrix that multiplies A.
    weight: Vec<f32>,
    rows: usize,
    columns: usize,
    /// Gemm's `alpha`, folded into the scales (1 for MatMul).
    alpha: f32,
    /// Gemm's bias, when it has one.
    bias: Option<Bias>,
}

/// Gemm's `C` input as the quantized node adds it.
enum Bias {
    /// Added as it is (`beta` 1).
    Input(String),
    /// A constant already multiplied by `beta`.
    Scaled(Box<TensorProto>),
}

fn plan(node: &NodeProto, initializers: &HashMap<String, TensorProto>) -> Result<Plan, String> {
    let gemm = node.op_type.as_deref() == Some("Gemm");
    let weight_name = node.input.get(1).ok_or("it has no second input")?;
    let tensor = initializers
        .get(weight_name)
        .ok_or_else(|| format!("its weight '{weight_name}' is not a constant initializer"))?;
    if tensor.dims.len() != 2 {
        return Err(format!(
            "its weight '{weight_name}' has {} dimensions, not 2",
            tensor.dims.len()
        ));
    }
    let values = onnx::floats(tensor).ok_or_else(|| {
        format!("its weight '{weight_name}' is not FLOAT data stored in the file")
    })?;
    let (d0, d1) = (tensor.dims[0] as usize, tensor.dims[1] as usize);
    if values.len() != d0 * d1 {
        return Err(format!(
            "its weight '{weight_name}' holds {} values for shape [{d0}, {d1}]",
            values.len()
        ));
    }
    let int = |name: &str, default: i64| {
        onnx::attribute(node, name)
            .and_then(|a| a.i)
            .unwrap_or(default)
    };
    let float = |name: &str| onnx::attribute(node, name).and_then(|a| a.f).unwrap_or(1.0);
    if !gemm {
        return Ok(Plan {
            weight: values,
            rows: d0,
            columns: d1,
            alpha: 1.0,
            bias: None,
        });
    }
    if int("transA", 0) != 0 {
        return Err("Gemm transposes A (transA=1)".into());
    }
    let (weight, rows, columns) = if int("transB", 0) != 0 {
        (onnx::transpose(&values, d0, d1), d1, d0)
    } else {
        (values, d0, d1)
    };
    let beta = float("beta");
    let bias = match node.input.get(2).filter(|c| !c.is_empty()) {
        None => None,
        Some(c) if beta == 1.0 => Some(Bias::Input(c.clone())),
        Some(c) => {
            let constant = initializers
                .get(c)
                .and_then(|t| Some((t, onnx::floats(t)?)))
                .ok_or_else(|| format!("its bias '{c}' is not constant and beta is {beta}"))?;
            let scaled: Vec<f32> = constant.1.iter().map(|v| v * beta).collect();
            Some(Bias::Scaled(Box::new(onnx::float_tensor(
                c,
                constant.0.dims.clone(),
                &scaled,
            ))))
        }
    };
    Ok(Plan {
        weight,
        rows,
        columns,
        alpha: float("alpha"),
        bias,
    })
}

/// Symmetric per-column quantization of a row-major `[rows, columns]` matrix to
/// `-qmax..=qmax`: the INT8 values and each column's scale.
pub fn quantize_columns(
    weight: &[f32],
    rows: usize,
    columns: usize,
    qmax: f32,
) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = (0..columns)
        .map(|n| {
            let largest = (0..rows)
                .map(|k| weight[k * columns + n].abs())
                .fold(0.0, f32::max);
            if largest > 0.0 { largest / qmax } else { 1.0 }
        })
        .collect();
    let values = weight
        .iter()
        .enumerate()
        .map(|(i, w)| (w / scales[i % columns]).round().clamp(-qmax, qmax) as i8)
        .collect();
    (values, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_scaled_by_their_own_largest_weight() {
        // [2, 3]: column 0 spans 1.0, column 1 spans 0.5, column 2 is all zero.
        let weight = [1.0, -0.25, 0.0, -0.5, 0.5, 0.0];
        let (values, scales) = quantize_columns(&weight, 2, 3, 64.0);
        assert_eq!(scales, [1.0 / 64.0, 0.5 / 64.0, 1.0]);
        assert_eq!(values, [64, -32, 0, -32, 64, 0]);
        let (full, _) = quantize_columns(&weight, 2, 3, 127.0);
        assert_eq!(full, [127, -64, 0, -64, 127, 0]);
    }
}
