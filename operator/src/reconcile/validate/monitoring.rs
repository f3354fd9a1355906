//! Checks of `spec.monitoring` that an older CRD may not enforce: the profile's
//! location and digest, a window that can hold the rows drift needs, the drift
//! thresholds and the retraining Job's template.

use super::check_sha256;
use crate::build::StorageUri;
use crate::crd::{DriftSpec, MonitoringSpec};
use crate::drift::job;

/// Checks `spec.monitoring`; the message names the field.
pub fn check(monitoring: &MonitoringSpec) -> Result<(), String> {
    StorageUri::parse(&monitoring.profile_uri)
        .map_err(|e| format!("spec.monitoring.profileUri: {e}"))?;
    check_sha256(
        "spec.monitoring.profileSha256",
        monitoring.profile_sha256.as_deref(),
    )?;
    if monitoring.min_rows > monitoring.window_rows {
        return Err(format!(
            "spec.monitoring.minRows ({}) must not be above spec.monitoring.windowRows ({})",
            monitoring.min_rows, monitoring.window_rows
        ));
    }
    if monitoring.interval_seconds == 0 {
        return Err("spec.monitoring.intervalSeconds must be at least 1".into());
    }
    if let Some(feedback) = &monitoring.feedback
        && feedback.output.is_empty()
    {
        return Err("spec.monitoring.feedback.output must name an output of the model".into());
    }
    if let Some(drift) = &monitoring.drift {
        check_drift(drift)?;
    }
    if let Some(on_drift) = &monitoring.on_drift {
        job::template(on_drift)?;
    }
    Ok(())
}

/// The thresholds' ranges, which the CRD's schema also states.
fn check_drift(drift: &DriftSpec) -> Result<(), String> {
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if !positive(drift.max_psi) {
        return Err("spec.monitoring.drift.maxPsi must be above 0".into());
    }
    if !(positive(drift.max_ks) && drift.max_ks <= 1.0) {
        return Err("spec.monitoring.drift.maxKs must be above 0 and at most 1".into());
    }
    if !(drift.significance.is_finite() && (0.0..=0.5).contains(&drift.significance)) {
        return Err("spec.monitoring.drift.significance must be between 0 and 0.5".into());
    }
    if drift.check_seconds < 5 {
        return Err("spec.monitoring.drift.checkSeconds must be at least 5".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::OnDriftSpec;

    fn monitoring() -> MonitoringSpec {
        serde_json::from_value(serde_json::json!({"profileUri": "s3://models/fraud/profile.json"}))
            .unwrap()
    }

    #[test]
    fn defaults_pass_and_each_mistake_names_its_field() {
        let defaults = monitoring();
        assert_eq!(
            (
                defaults.window_rows,
                defaults.min_rows,
                defaults.interval_seconds
            ),
            (1000, 100, 1)
        );
        assert_eq!(check(&defaults), Ok(()));
        type Mutation = fn(&mut MonitoringSpec);
        let cases: [(Mutation, &str); 9] = [
            (
                |m| m.profile_uri = "ftp://x/profile.json".into(),
                "spec.monitoring.profileUri",
            ),
            (
                |m| m.profile_uri = "pvc://claim-only".into(),
                "spec.monitoring.profileUri",
            ),
            (
                |m| m.profile_sha256 = Some("ABC".into()),
                "spec.monitoring.profileSha256",
            ),
            (
                |m| m.min_rows = 2000,
                "spec.monitoring.minRows (2000) must not be above spec.monitoring.windowRows (1000)",
            ),
            (
                |m| m.interval_seconds = 0,
                "spec.monitoring.intervalSeconds",
            ),
            (
                |m| m.drift.get_or_insert_default().max_ks = 1.5,
                "spec.monitoring.drift.maxKs",
            ),
            (
                |m| m.drift.get_or_insert_default().max_psi = 0.0,
                "spec.monitoring.drift.maxPsi",
            ),
            (
                |m| m.drift.get_or_insert_default().check_seconds = 1,
                "spec.monitoring.drift.checkSeconds",
            ),
            (
                |m| {
                    m.on_drift = Some(OnDriftSpec {
                        job_template: serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}}}),
                        cooldown_seconds: 0,
                    })
                },
                "spec.monitoring.onDrift.jobTemplate.spec.template.spec.restartPolicy",
            ),
        ];
        for (mutate, expected) in cases {
            let mut spec = monitoring();
            mutate(&mut spec);
            let error = check(&spec).unwrap_err();
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }
}
