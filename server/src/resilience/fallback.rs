//! What answers when the primary model cannot: a second model, loaded beside
//! it and fed the same inputs, or a fixed answer repeated for every row.
//! Both are checked against the primary's signature when the model loads, so
//! a fallback never fails on a request the primary would have taken.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::batcher::{Batcher, Job};
use crate::error::InferError;
use crate::runtime::TensorSpec;
use crate::tensor::{NamedTensor, Tensor};

/// Which kind of fallback answered, as the response's `sluice_fallback`
/// parameter names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    /// The second model.
    Model,
    /// The fixed answer.
    Static,
}

impl FallbackKind {
    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackKind::Model => "model",
            FallbackKind::Static => "static",
        }
    }
}

/// Why the fallback answered, as the `reason` label and the response's
/// `sluice_fallback_reason` parameter name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The primary failed (ONNX Runtime error or panic).
    Failure,
    /// The primary took longer than the fallback's `timeout_ms`.
    Timeout,
    /// The primary's circuit is open.
    CircuitOpen,
}

impl FallbackReason {
    /// The label and parameter value.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Failure => "failure",
            FallbackReason::Timeout => "timeout",
            FallbackReason::CircuitOpen => "circuit_open",
        }
    }
}

/// A fallback answer's origin, carried to the protocol layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackUse {
    /// What answered.
    pub kind: FallbackKind,
    /// Why.
    pub reason: FallbackReason,
}

impl FallbackUse {
    /// The response parameters that mark a fallback answer, over REST and gRPC.
    pub fn parameters(self) -> [(&'static str, &'static str); 2] {
        [
            ("sluice_fallback", self.kind.as_str()),
            ("sluice_fallback_reason", self.reason.as_str()),
        ]
    }
}

/// A loaded fallback.
pub enum Fallback {
    /// A second model with its own queue.
    Model(FallbackModel),
    /// A fixed answer.
    Static(StaticAnswer),
}

impl Fallback {
    /// Which kind this is.
    pub fn kind(&self) -> FallbackKind {
        match self {
            Fallback::Model(_) => FallbackKind::Model,
            Fallback::Static(_) => FallbackKind::Static,
        }
    }

    /// Whether answering needs the request's inputs (a model does; a fixed
    /// answer needs only the row count).
    pub fn needs_inputs(&self) -> bool {
        matches!(self, Fallback::Model(_))
    }

    /// The answer for a request of `rows` rows, every output of the primary
    /// in the primary's order. `inputs` are the request's ordered inputs
    /// (empty for a fixed answer).
    pub async fn answer(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
    ) -> Result<Vec<Tensor>, InferError> {
        match self {
            Fallback::Model(model) => model.infer(inputs).await,
            Fallback::Static(answer) => Ok(answer.answer(rows)),
        }
    }
}

/// A second model serving the primary's signature.
pub struct FallbackModel {
    batcher: Arc<Batcher>,
    /// For each output of the primary, its index among the fallback's outputs.
    output_order: Vec<usize>,
}

impl FallbackModel {
    /// Wraps a started batcher; `output_order` comes from [`check_signature`].
    pub fn new(batcher: Arc<Batcher>, output_order: Vec<usize>) -> FallbackModel {
        FallbackModel {
            batcher,
            output_order,
        }
    }

    async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let (reply, result) = oneshot::channel();
        self.batcher.submit(Job {
            inputs,
            enqueued: Instant::now(),
            id: None,
            reply,
        })?;
        let mut outputs: Vec<Option<Tensor>> = result
            .await
            .map_err(|_| InferError::ShuttingDown)??
            .into_iter()
            .map(Some)
            .collect();
        Ok(self
            .output_order
            .iter()
            .map(|&index| outputs[index].take().expect("each output is taken once"))
            .collect())
    }
}

/// Checks that a fallback model takes exactly the primary's inputs and gives
/// at least its outputs (same names, datatypes and shapes); returns, for each
/// primary output, its index among the fallback's outputs.
pub fn check_signature(
    primary_inputs: &[TensorSpec],
    primary_outputs: &[TensorSpec],
    fallback_inputs: &[TensorSpec],
    fallback_outputs: &[TensorSpec],
) -> Result<Vec<usize>, String> {
    if primary_inputs != fallback_inputs {
        return Err(format!(
            "the fallback model's inputs {} differ from the primary's {}",
            describe(fallback_inputs),
            describe(primary_inputs)
        ));
    }
    primary_outputs
        .iter()
        .map(|wanted| {
            fallback_outputs
                .iter()
                .position(|given| given == wanted)
                .ok_or_else(|| {
                    format!(
                        "the fallback model has no output {}; its outputs are {}",
                        describe(std::slice::from_ref(wanted)),
                        describe(fallback_outputs)
                    )
                })
        })
        .collect()
}

fn describe(specs: &[TensorSpec]) -> String {
    let parts: Vec<String> = specs
        .iter()
        .map(|s| format!("{} {} {:?}", s.name, s.datatype, s.shape))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A fixed answer: one row per output of the primary, repeated per request row.
#[derive(Debug)]
pub struct StaticAnswer {
    /// One tensor per primary output, in the primary's order, and whether it
    /// is repeated per row (the output has a dynamic first dimension).
    outputs: Vec<(Tensor, bool)>,
}

impl StaticAnswer {
    /// Matches the configured rows to the model's outputs, checking names,
    /// datatypes and shapes.
    pub fn new(outputs: &[TensorSpec], given: &[NamedTensor]) -> Result<StaticAnswer, String> {
        if let Some(extra) = given
            .iter()
            .find(|g| !outputs.iter().any(|o| o.name == g.name))
        {
            return Err(format!(
                "fallback.static names '{}', which is not an output of the model; its outputs are {}",
                extra.name,
                describe(outputs)
            ));
        }
        let outputs = outputs
            .iter()
            .map(|spec| {
                let tensor = given
                    .iter()
                    .find(|g| g.name == spec.name)
                    .map(|g| &g.tensor)
                    .ok_or_else(|| format!("fallback.static lacks output '{}'", spec.name))?;
                check_static(spec, tensor)?;
                Ok((tensor.clone(), spec.has_dynamic_batch()))
            })
            .collect::<Result<_, String>>()?;
        Ok(StaticAnswer { outputs })
    }

    /// The answer for `rows` rows.
    pub fn answer(&self, rows: usize) -> Vec<Tensor> {
        self.outputs
            .iter()
            .map(|(row, per_row)| {
                if *per_row {
                    Tensor::concat_rows(&vec![row; rows])
                } else {
                    row.clone()
                }
            })
            .collect()
    }
}

fn check_static(spec: &TensorSpec, tensor: &Tensor) -> Result<(), String> {
    let name = &spec.name;
    if tensor.datatype() != spec.datatype {
        return Err(format!(
            "fallback.static output '{name}' must be {}, got {}",
            spec.datatype,
            tensor.datatype()
        ));
    }
    let fits = spec.accepts_shape(&tensor.shape);
    let one_row = !spec.has_dynamic_batch() || tensor.shape.first() == Some(&1);
    if !fits || !one_row {
        return Err(format!(
            "fallback.static output '{name}' has shape {:?}; the model declares {:?}, and a static answer gives one row (first dimension 1)",
            tensor.shape, spec.shape
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorData};

    fn spec(name: &str, datatype: DataType, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            datatype,
            shape: shape.to_vec(),
        }
    }

    fn named(name: &str, shape: Vec<i64>, data: TensorData) -> NamedTensor {
        NamedTensor {
            name: name.to_string(),
            tensor: Tensor::new(shape, data).unwrap(),
        }
    }

    #[test]
    fn a_static_answer_repeats_its_row_in_the_models_output_order() {
        let outputs = [
            spec("label", DataType::Int64, &[-1]),
            spec("probabilities", DataType::Fp32, &[-1, 2]),
        ];
        let given = [
            named(
                "probabilities",
                vec![1, 2],
                TensorData::Fp32(vec![0.5, 0.5]),
            ),
            named("label", vec![1], TensorData::Int64(vec![7])),
        ];
        let answer = StaticAnswer::new(&outputs, &given).unwrap().answer(3);
        assert_eq!(answer[0].shape, vec![3]);
        assert_eq!(answer[0].data, TensorData::Int64(vec![7, 7, 7]));
        assert_eq!(answer[1].shape, vec![3, 2]);
        assert_eq!(answer[1].data.len(), 6);
    }

    #[test]
    fn static_answers_that_do_not_fit_are_named() {
        let outputs = [spec("y", DataType::Fp32, &[-1, 2])];
        let cases = [
            (
                named("z", vec![1, 2], TensorData::Fp32(vec![0.0; 2])),
                "'z', which is not an output",
            ),
            (
                named("y", vec![1, 3], TensorData::Fp32(vec![0.0; 3])),
                "has shape [1, 3]",
            ),
            (
                named("y", vec![2, 2], TensorData::Fp32(vec![0.0; 4])),
                "one row",
            ),
            (
                named("y", vec![1, 2], TensorData::Int32(vec![0; 2])),
                "must be FP32, got INT32",
            ),
        ];
        for (given, message) in cases {
            let error = StaticAnswer::new(&outputs, &[given]).unwrap_err();
            assert!(error.contains(message), "{error} lacks {message}");
        }
        let error = StaticAnswer::new(&outputs, &[]).unwrap_err();
        assert!(error.contains("lacks output 'y'"), "{error}");
    }

    #[test]
    fn a_fallback_model_must_take_the_same_inputs_and_give_the_outputs() {
        let inputs = [spec("x", DataType::Fp32, &[-1, 4])];
        let outputs = [
            spec("label", DataType::Int64, &[-1]),
            spec("p", DataType::Fp32, &[-1, 3]),
        ];
        let reordered = [
            outputs[1].clone(),
            spec("extra", DataType::Fp32, &[-1]),
            outputs[0].clone(),
        ];
        assert_eq!(
            check_signature(&inputs, &outputs, &inputs, &reordered).unwrap(),
            vec![2, 0]
        );
        let other_inputs = [spec("x", DataType::Fp32, &[-1, 5])];
        let error = check_signature(&inputs, &outputs, &other_inputs, &outputs).unwrap_err();
        assert!(error.contains("inputs [x FP32 [-1, 5]] differ"), "{error}");
        let error = check_signature(&inputs, &outputs, &inputs, &outputs[..1]).unwrap_err();
        assert!(error.contains("no output [p FP32 [-1, 3]]"), "{error}");
    }
}
