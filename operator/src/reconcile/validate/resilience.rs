//! Checks of `spec.fallback` that the schema cannot express: a static answer's
//! values must fill its shape, and whole-number types take whole numbers.

use crate::build::StorageUri;
use crate::crd::{FallbackSpec, StaticOutput};

/// Checks `spec.fallback`; the message names the field.
pub fn check(fallback: &FallbackSpec) -> Result<(), String> {
    match (&fallback.model, &fallback.static_outputs) {
        (Some(model), None) => StorageUri::parse(&model.storage_uri)
            .map(|_| ())
            .map_err(|e| format!("spec.fallback.model.storageUri: {e}")),
        (None, Some(outputs)) => outputs.iter().enumerate().try_for_each(check_output),
        _ => Err("spec.fallback takes exactly one of model and static".into()),
    }
}

fn check_output((index, output): (usize, &StaticOutput)) -> Result<(), String> {
    let field = format!("spec.fallback.static[{index}]");
    if output.shape.iter().any(|&d| d < 1) {
        return Err(format!(
            "{field}.shape {:?} must have positive dimensions",
            output.shape
        ));
    }
    let elements: i64 = output.shape.iter().product();
    if elements != output.data.len() as i64 {
        return Err(format!(
            "{field}.data has {} values, but shape {:?} holds {elements}",
            output.data.len(),
            output.shape
        ));
    }
    if output.datatype.is_integral()
        && let Some(value) = output
            .data
            .iter()
            .find(|v| v.fract() != 0.0 || !v.is_finite())
    {
        return Err(format!(
            "{field}.data: {value} is not a whole number, as {:?} needs",
            output.datatype
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::StaticDatatype;

    fn output(datatype: StaticDatatype, shape: Vec<i64>, data: Vec<f64>) -> FallbackSpec {
        FallbackSpec {
            model: None,
            static_outputs: Some(vec![StaticOutput {
                name: "label".into(),
                datatype,
                shape,
                data,
            }]),
            timeout_ms: None,
        }
    }

    #[test]
    fn a_static_answer_must_fill_its_shape_with_values_of_its_type() {
        assert_eq!(
            check(&output(StaticDatatype::INT64, vec![1], vec![2.0])),
            Ok(())
        );
        for (fallback, message) in [
            (
                output(StaticDatatype::FP32, vec![1, 3], vec![0.5; 2]),
                "spec.fallback.static[0].data has 2 values, but shape [1, 3] holds 3",
            ),
            (
                output(StaticDatatype::INT64, vec![1], vec![0.5]),
                "0.5 is not a whole number, as INT64 needs",
            ),
            (
                output(StaticDatatype::FP32, vec![0], vec![]),
                "must have positive dimensions",
            ),
            (
                FallbackSpec {
                    static_outputs: None,
                    ..output(StaticDatatype::FP32, vec![1], vec![0.0])
                },
                "exactly one of model and static",
            ),
        ] {
            let error = check(&fallback).unwrap_err();
            assert!(error.contains(message), "{error} lacks {message}");
        }
    }
}
