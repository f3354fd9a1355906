//! Checks of `spec.monitoring` that an older CRD may not enforce: the profile's
//! location and digest, and a window that can hold the rows drift needs.

use super::check_sha256;
use crate::build::StorageUri;
use crate::crd::MonitoringSpec;

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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cases: [(Mutation, &str); 5] = [
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
        ];
        for (mutate, expected) in cases {
            let mut spec = monitoring();
            mutate(&mut spec);
            let error = check(&spec).unwrap_err();
            assert!(error.contains(expected), "{error} lacks {expected}");
        }
    }
}
