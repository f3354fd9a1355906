//! INT8 static quantization in QDQ form: activations get fixed scales from
//! calibration ([`super::calibrate`]), weights get per-channel INT8 values, and
//! each is written as a `QuantizeLinear`/`DequantizeLinear` pair around the
//! original `MatMul` or `Gemm`:
//!
//! ```text
//! A --QuantizeLinear(a_scale, a_zero)--> A_u8 --DequantizeLinear--> A'
//!                                  W_i8 --DequantizeLinear(w_scale, axis)--> W'
//! MatMul(A', W') --> Y_f32 --QuantizeLinear(y_scale, y_zero)--> Y_u8 --DequantizeLinear--> Y
//! ```
//!
//! (or `Gemm(A', W', C)`, otherwise unchanged). This is the portable form of a
//! quantized model: any ONNX runtime can run it, and ONNX Runtime fuses each
//! pattern into one integer kernel at load time (`QLinearMatMul` on UINT8 in and
//! out: without the output's pair, it would dequantize the weight at every run).
//!
//! - Activations, the nodes' inputs and outputs, are asymmetric UINT8 over their
//!   calibrated range (which always includes 0), one scale per tensor.
//! - Weights are symmetric INT8, one scale per output channel, 7 bits by default
//!   as in [`super::int8`] (`full_range` for -127..127).
//! - A node is left in FP32, with the reason in the report, when its weight is not
//!   a 2-D FLOAT initializer, or when `Gemm` transposes A.
//! - Per-channel `DequantizeLinear` needs ONNX opset 13 or later.

use std::collections::{HashMap, HashSet};

use super::calibrate::Range;
use super::int8::quantize_columns;
use super::onnx::{self, ModelProto, NodeProto, TensorProto};
use super::outcome::{NodeOutcome, Outcome};

/// The lowest ONNX opset with per-axis `DequantizeLinear`.
const MIN_OPSET: i64 = 13;

/// A node's weight, ready to quantize.
struct Weight {
    name: String,
    /// Row-major values of the stored `[d0, d1]` tensor.
    values: Vec<f32>,
    dims: [usize; 2],
    /// The output-channel axis of the stored tensor: 1 for `MatMul` and `Gemm`,
    /// 0 for `Gemm` with `transB`.
    axis: usize,
}

/// The activations (first inputs and outputs) of the nodes [`quantize_static`]
/// would quantize, whose ranges calibration must provide.
pub fn activations(model: &ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let initializers = initializers(&graph.initializer);
    let mut seen = HashSet::new();
    graph
        .node
        .iter()
        .filter(|n| weight(n, &initializers).is_ok())
        .flat_map(|n| n.input.first().into_iter().chain(n.output.first()))
        .filter(|a| seen.insert((*a).clone()))
        .cloned()
        .collect()
}

/// Quantizes every eligible node of `model` in place with the calibrated
/// `ranges` of their activations, and reports each candidate.
pub fn quantize_static(
    model: &mut ModelProto,
    ranges: &HashMap<String, Range>,
    full_range: bool,
) -> Vec<NodeOutcome> {
    let version = onnx::opset(model, "").unwrap_or(1);
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    let candidates = |n: &NodeProto| matches!(n.op_type.as_deref(), Some("MatMul" | "Gemm"));
    if version < MIN_OPSET {
        return graph
            .node
            .iter()
            .filter(|n| candidates(n))
            .map(|n| {
                NodeOutcome::kept(
                    n,
                    format!("the model imports ONNX opset {version}; static quantization needs {MIN_OPSET} or later"),
                )
            })
            .collect();
    }
    let qmax: f32 = if full_range { 127.0 } else { 64.0 };
    let initializers = initializers(&graph.initializer);
    let mut dequantized: HashMap<String, String> = HashMap::new();
    let mut added: Vec<TensorProto> = Vec::new();
    let mut report = Vec::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        if !candidates(&node) {
            nodes.push(node);
            continue;
        }
        let plan = weight(&node, &initializers).and_then(|w| {
            let range = |tensor: &String| {
                ranges
                    .get(tensor)
                    .copied()
                    .ok_or_else(|| format!("no calibrated range for '{tensor}'"))
            };
            let activation = node.input[0].clone();
            let (input, output) = (range(&activation)?, range(&node.output[0])?);
            Ok((w, activation, input, output))
        });
        let (weight, activation, range, output_range) = match plan {
            Ok(plan) => plan,
            Err(reason) => {
                report.push(NodeOutcome::kept(&node, reason));
                nodes.push(node);
                continue;
            }
        };
        let a_dq = dequantized
            .entry(activation.clone())
            .or_insert_with(|| {
                let pair = format!("{activation}_qdq");
                let [quantize, dequantize] = quantize_pair(&activation, &pair, range, &mut added);
                nodes.extend([quantize, dequantize]);
                pair
            })
            .clone();
        let prefix = format!("{}_qdq", weight.name);
        let w_dq = match dequantized.get(&weight.name) {
            Some(name) => name.clone(),
            None => {
                let (values, scales) = quantize_channels(&weight, qmax);
                let channels = scales.len();
                let stored_dims = weight.dims.map(|d| d as i64).to_vec();
                added.push(onnx::int8_tensor(
                    &format!("{prefix}_i8"),
                    stored_dims,
                    &values,
                ));
                added.push(onnx::float_tensor(
                    &format!("{prefix}_scale"),
                    vec![channels as i64],
                    &scales,
                ));
                added.push(onnx::int8_tensor(
                    &format!("{prefix}_zero"),
                    vec![channels as i64],
                    &vec![0; channels],
                ));
                let mut dq = onnx::node(
                    "DequantizeLinear",
                    format!("{prefix}_dequantize"),
                    &[
                        &format!("{prefix}_i8"),
                        &format!("{prefix}_scale"),
                        &format!("{prefix}_zero"),
                    ],
                    &[&prefix],
                );
                dq.attribute
                    .push(onnx::int_attribute("axis", weight.axis as i64));
                nodes.push(dq);
                dequantized.insert(weight.name.clone(), prefix.clone());
                prefix
            }
        };
        node.input[0] = a_dq;
        node.input[1] = w_dq;
        // The output keeps its name after its own pair, so readers are unchanged
        // and a following MatMul reads it without another pair.
        let output = node.output[0].clone();
        let product = format!("{output}_f32");
        node.output[0] = product.clone();
        report.push(NodeOutcome::changed(
            &node,
            Outcome::Quantized,
            format!(
                "weight [{}, {}] to INT8 per channel; input [{:.4}, {:.4}] and output [{:.4}, {:.4}] to UINT8",
                weight.dims[0],
                weight.dims[1],
                range.low,
                range.high,
                output_range.low,
                output_range.high
            ),
        ));
        nodes.push(node);
        let [quantize, dequantize] = quantize_pair(&product, &output, output_range, &mut added);
        nodes.extend([quantize, dequantize]);
        dequantized.insert(output.clone(), output);
    }
    graph.node = nodes;
    graph.initializer.extend(added);
    onnx::drop_unused_initializers(graph);
    report
}

/// `QuantizeLinear` of `input` to UINT8 over `range` and the `DequantizeLinear`
/// back to `output`, with their scale and zero point added to `initializers`.
fn quantize_pair(
    input: &str,
    output: &str,
    range: Range,
    initializers: &mut Vec<TensorProto>,
) -> [NodeProto; 2] {
    let (scale, zero) = uint8_parameters(range);
    let [scale_name, zero_name, quantized] =
        ["scale", "zero", "u8"].map(|s| format!("{output}_{s}"));
    initializers.push(onnx::float_tensor(&scale_name, Vec::new(), &[scale]));
    initializers.push(onnx::uint8_tensor(&zero_name, Vec::new(), &[zero]));
    [
        onnx::node(
            "QuantizeLinear",
            format!("{output}_quantize"),
            &[input, &scale_name, &zero_name],
            &[&quantized],
        ),
        onnx::node(
            "DequantizeLinear",
            format!("{output}_dequantize"),
            &[&quantized, &scale_name, &zero_name],
            &[output],
        ),
    ]
}

/// UINT8 scale and zero point for an activation range that includes 0.
pub fn uint8_parameters(range: Range) -> (f32, u8) {
    let span = range.high - range.low;
    if span <= 0.0 {
        return (1.0, 0);
    }
    let scale = span / 255.0;
    let zero = (-range.low / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Per-channel symmetric INT8 values in the stored layout, and the scales.
fn quantize_channels(weight: &Weight, qmax: f32) -> (Vec<i8>, Vec<f32>) {
    let [d0, d1] = weight.dims;
    if weight.axis == 1 {
        return quantize_columns(&weight.values, d0, d1, qmax);
    }
    // Channels are rows: quantize the transpose's columns, then transpose back.
    let transposed = onnx::transpose(&weight.values, d0, d1);
    let (values, scales) = quantize_columns(&transposed, d1, d0, qmax);
    (onnx::transpose(&values, d1, d0), scales)
}

fn initializers(tensors: &[TensorProto]) -> HashMap<String, &TensorProto> {
    tensors
        .iter()
        .filter_map(|t| Some((t.name.clone()?, t)))
        .collect()
}

/// The node's weight, or why it stays in FP32.
fn weight(
    node: &NodeProto,
    initializers: &HashMap<String, &TensorProto>,
) -> Result<Weight, String> {
    if !matches!(node.op_type.as_deref(), Some("MatMul" | "Gemm")) {
        return Err("not MatMul or Gemm".into());
    }
    let gemm = node.op_type.as_deref() == Some("Gemm");
    let flag = |name: &str| onnx::attribute(node, name).and_then(|a| a.i).unwrap_or(0) != 0;
    if gemm && flag("transA") {
        return Err("Gemm transposes A (transA=1)".into());
    }
    let name = node.input.get(1).ok_or("it has no second input")?;
    let tensor = initializers
        .get(name)
        .ok_or_else(|| format!("its weight '{name}' is not a constant initializer"))?;
    let [d0, d1] = tensor.dims[..] else {
        return Err(format!(
            "its weight '{name}' has {} dimensions, not 2",
            tensor.dims.len()
        ));
    };
    let values = onnx::floats(tensor)
        .ok_or_else(|| format!("its weight '{name}' is not FLOAT data stored in the file"))?;
    let dims = [d0 as usize, d1 as usize];
    if values.len() != dims[0] * dims[1] {
        return Err(format!(
            "its weight '{name}' holds {} values for shape [{d0}, {d1}]",
            values.len()
        ));
    }
    Ok(Weight {
        name: name.clone(),
        values,
        dims,
        axis: if gemm && flag("transB") { 0 } else { 1 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint8_parameters_keep_zero_exact() {
        let (scale, zero) = uint8_parameters(Range {
            low: -1.0,
            high: 3.0,
        });
        assert!((scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zero, 64);
        assert_eq!(
            uint8_parameters(Range {
                low: 0.0,
                high: 0.0
            }),
            (1.0, 0)
        );
    }

    #[test]
    fn row_channels_are_quantized_in_the_stored_layout() {
        // [2, 3] with channels as rows (Gemm transB): row 0 spans 1.0, row 1 0.5.
        let weight = Weight {
            name: "w".into(),
            values: vec![1.0, -0.5, 0.25, 0.5, 0.0, -0.25],
            dims: [2, 3],
            axis: 0,
        };
        let (values, scales) = quantize_channels(&weight, 64.0);
        assert_eq!(scales, [1.0 / 64.0, 0.5 / 64.0]);
        assert_eq!(values, [64, -32, 16, 64, 0, -32]);
    }
}
