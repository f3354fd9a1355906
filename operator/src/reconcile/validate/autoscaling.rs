//! Checks of `spec.autoscaling` (and `spec.replicas`) that the schema cannot make.

use crate::crd::InferenceServiceSpec;

/// Checks the autoscaling settings the schema cannot (or an older CRD may not);
/// each message names the field.
pub fn check(spec: &InferenceServiceSpec) -> Result<(), String> {
    let a = &spec.autoscaling;
    if let Some(t) = a.throughput_per_replica
        && !(t.is_finite() && t > 0.0)
    {
        return Err(format!(
            "spec.autoscaling.throughputPerReplica must be a positive number of requests per second, not {t}"
        ));
    }
    if !(a.headroom.is_finite() && (1.0..=10.0).contains(&a.headroom)) {
        return Err(format!(
            "spec.autoscaling.headroom must be between 1 and 10, not {}",
            a.headroom
        ));
    }
    let burst = a.burst.threshold;
    if !(burst == 0.0 || (burst.is_finite() && (1.0..=100.0).contains(&burst))) {
        return Err(format!(
            "spec.autoscaling.burst.threshold must be 0 (off) or between 1 and 100, not {burst}"
        ));
    }
    if a.rate_window_seconds < 2 {
        return Err("spec.autoscaling.rateWindowSeconds must be at least 2".into());
    }
    if a.peak_window_seconds < a.rate_window_seconds {
        return Err(format!(
            "spec.autoscaling.peakWindowSeconds ({}) must be at least rateWindowSeconds ({})",
            a.peak_window_seconds, a.rate_window_seconds
        ));
    }
    if a.interval_seconds == 0 {
        return Err("spec.autoscaling.intervalSeconds must be at least 1".into());
    }
    if let Some(r) = spec.replicas
        && r < 0
    {
        return Err(format!("spec.replicas must not be negative, not {r}"));
    }
    Ok(())
}
