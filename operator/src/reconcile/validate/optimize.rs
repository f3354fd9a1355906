//! Checks of `spec.model.optimize` that an older CRD may not enforce: the
//! calibration rows' location and digest, the agreement bound, and options that
//! belong to another mode.

use super::check_sha256;
use crate::build::StorageUri;
use crate::crd::OptimizeSpec;
use crate::crd::optimize::OptimizeMode;

/// Checks `spec.model.optimize`; the message names the field.
pub fn check(optimize: &OptimizeSpec) -> Result<(), String> {
    if let Some(uri) = &optimize.calibration_uri {
        StorageUri::parse(uri).map_err(|e| format!("spec.model.optimize.calibrationUri: {e}"))?;
    }
    check_sha256(
        "spec.model.optimize.calibrationSha256",
        optimize.calibration_sha256.as_deref(),
    )?;
    if optimize.mode == OptimizeMode::Int8Static && optimize.calibration_uri.is_none() {
        return Err(
            "spec.model.optimize.calibrationUri is required for mode int8-static (the rows its activation ranges are calibrated on)"
                .into(),
        );
    }
    if optimize.calibration_sha256.is_some() && optimize.calibration_uri.is_none() {
        return Err(
            "spec.model.optimize.calibrationSha256 is set but calibrationUri is not".into(),
        );
    }
    if let Some(minimum) = optimize.min_agreement
        && !(0.0..=1.0).contains(&minimum)
    {
        return Err(format!(
            "spec.model.optimize.minAgreement ({minimum}) must be between 0 and 1"
        ));
    }
    if !optimize.keep_fp32.is_empty() && optimize.mode != OptimizeMode::Fp16 {
        return Err("spec.model.optimize.keepFp32 applies to mode fp16 only".into());
    }
    if let Some(op) = optimize
        .keep_fp32
        .iter()
        .find(|op| op.is_empty() || !op.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(format!(
            "spec.model.optimize.keepFp32: {op:?} is not an ONNX operator name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> OptimizeSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_refusal_names_its_field() {
        let cases = [
            (
                serde_json::json!({"mode": "int8-dynamic", "calibrationUri": "ftp://rows.csv"}),
                "spec.model.optimize.calibrationUri: unsupported scheme \"ftp\"; use http(s)://, s3://, pvc:// or file://",
            ),
            (
                serde_json::json!({"mode": "int8-static"}),
                "spec.model.optimize.calibrationUri is required for mode int8-static (the rows its activation ranges are calibrated on)",
            ),
            (
                serde_json::json!({"mode": "int8-dynamic", "minAgreement": 1.5}),
                "spec.model.optimize.minAgreement (1.5) must be between 0 and 1",
            ),
            (
                serde_json::json!({"mode": "int8-dynamic", "keepFp32": ["Softmax"]}),
                "spec.model.optimize.keepFp32 applies to mode fp16 only",
            ),
            (
                serde_json::json!({"mode": "fp16", "keepFp32": ["Soft max"]}),
                "spec.model.optimize.keepFp32: \"Soft max\" is not an ONNX operator name",
            ),
        ];
        for (json, message) in cases {
            assert_eq!(check(&spec(json)), Err(message.to_string()));
        }
        assert_eq!(
            check(&spec(
                serde_json::json!({"mode": "fp16", "keepFp32": ["Softmax"], "calibrationUri": "pvc://rows/eval.npy"})
            )),
            Ok(())
        );
    }
}
