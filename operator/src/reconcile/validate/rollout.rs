//! Checks of `spec.rollout` that the schema cannot make.

use crate::crd::rollout::RolloutSpec;

/// Checks what the schema cannot: steps strictly increasing, finite thresholds.
pub fn check(spec: &RolloutSpec) -> Result<(), String> {
    let steps = &spec.canary.steps;
    if let Some(bad) = steps.iter().find(|s| !(1..=99).contains(*s)) {
        return Err(format!(
            "spec.rollout.canary.steps: {bad} is not a traffic percentage between 1 and 99"
        ));
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "spec.rollout.canary.steps {steps:?} must be strictly increasing"
        ));
    }
    let a = &spec.analysis;
    let bounds = [
        ("maxP99LatencySeconds", a.max_p99_latency_seconds),
        ("maxP99LatencyRatio", Some(a.max_p99_latency_ratio)),
        ("latencyToleranceSeconds", Some(a.latency_tolerance_seconds)),
        ("maxErrorRate", Some(a.max_error_rate)),
        ("maxErrorRateRatio", Some(a.max_error_rate_ratio)),
        ("maxDriftScore", a.max_drift_score),
        (
            "predictionAgreement.maxPsi",
            Some(a.prediction_agreement.max_psi),
        ),
        (
            "predictionAgreement.significance",
            Some(a.prediction_agreement.significance),
        ),
    ];
    if let Some((field, value)) = bounds
        .iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_finite() || v < 0.0))
    {
        return Err(format!(
            "spec.rollout.analysis.{field} must be a finite number >= 0, not {}",
            value.unwrap_or_default()
        ));
    }
    for check in &a.checks {
        if check.max.is_none() && check.min.is_none() {
            return Err(format!(
                "spec.rollout.analysis.checks[{}] needs max or min",
                check.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::rollout::{CustomCheck, Strategy};

    #[test]
    fn bare_spec_is_a_careful_canary() {
        let spec: RolloutSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.strategy, Strategy::Canary);
        assert_eq!(spec.canary.steps, [25, 50]);
        assert_eq!(spec.analysis.failure_limit, 2);
        assert!(spec.is_default());
        assert_eq!(check(&spec), Ok(()));
    }

    #[test]
    fn validate_names_the_field() {
        let mut spec = RolloutSpec::default();
        spec.canary.steps = vec![50, 25];
        assert!(check(&spec).unwrap_err().contains("strictly increasing"));
        spec.canary.steps = vec![0];
        assert!(check(&spec).unwrap_err().contains("canary.steps"));
        spec.canary.steps = vec![10];
        spec.analysis.max_error_rate = f64::NAN;
        assert!(check(&spec).unwrap_err().contains("maxErrorRate"));
        spec.analysis.max_error_rate = 0.1;
        spec.analysis.checks = vec![CustomCheck {
            name: "q".into(),
            query: "1".into(),
            max: None,
            min: None,
        }];
        assert!(check(&spec).unwrap_err().contains("checks[q]"));
    }
}
