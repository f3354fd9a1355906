//! What a REST path names: the model and version it addresses, and whether it
//! is a health probe that needs no credentials.

/// Paths that never need credentials: the probes.
const OPEN_PATHS: [&str; 2] = ["/v2/health/live", "/v2/health/ready"];

/// Whether `path` is a health endpoint (server liveness or readiness, or a
/// model's readiness, which kubelet probes call without credentials).
pub fn is_health(path: &str) -> bool {
    OPEN_PATHS.contains(&path) || (path.ends_with("/ready") && model_in_path(path).is_some())
}

/// The model and version a path names, e.g. `/v2/models/m/versions/2/infer`.
pub fn model_in_path(path: &str) -> Option<(&str, Option<&str>)> {
    let (name, rest) = first_segment(path.strip_prefix("/v2/models/")?);
    if name.is_empty() {
        return None;
    }
    let version = rest
        .and_then(|rest| rest.strip_prefix("versions/"))
        .map(|rest| first_segment(rest).0);
    Some((name, version))
}

/// `text` up to its first `/`, and what follows that `/`. Paths are short, so
/// a byte loop beats a general substring search here.
fn first_segment(text: &str) -> (&str, Option<&str>) {
    match text.bytes().position(|byte| byte == b'/') {
        Some(slash) => (&text[..slash], Some(&text[slash + 1..])),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_model_and_version() {
        assert_eq!(model_in_path("/v2/models/m/infer"), Some(("m", None)));
        assert_eq!(model_in_path("/v2/models/m"), Some(("m", None)));
        assert_eq!(
            model_in_path("/v2/models/m/versions/3/infer"),
            Some(("m", Some("3")))
        );
        assert_eq!(
            model_in_path("/v2/models/m/versions/"),
            Some(("m", Some("")))
        );
        assert_eq!(model_in_path("/v2/models/m/versions"), Some(("m", None)));
        assert_eq!(model_in_path("/v2/models/m/ready"), Some(("m", None)));
        assert_eq!(model_in_path("/v2/models/"), None);
        assert_eq!(model_in_path("/v2/models//infer"), None);
        assert_eq!(model_in_path("/v2"), None);
        assert_eq!(model_in_path("/metrics"), None);
    }

    #[test]
    fn health_paths_are_the_probes_and_model_readiness() {
        for open in [
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/m/ready",
            "/v2/models/m/versions/1/ready",
        ] {
            assert!(is_health(open), "{open}");
        }
        for guarded in [
            "/v2/models/m/infer",
            "/v2/models/m",
            "/metrics",
            "/v2",
            "/ready",
        ] {
            assert!(!is_health(guarded), "{guarded}");
        }
    }
}
