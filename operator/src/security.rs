//! What `spec.security` adds to the serving objects: server flags, the Secret and
//! ConfigMap volumes they read (mounted as directories, so that the kubelet's
//! updates reach the running server, which re-reads them), the probe scheme, and
//! a NetworkPolicy admitting only the configured sources. Pure functions, called
//! from [`crate::build`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::SecuritySpec;

/// Where the API key Secret is mounted.
pub const API_KEYS_DIR: &str = "/etc/sluice/api-keys";
/// Where the JWKS ConfigMap is mounted.
pub const JWKS_DIR: &str = "/etc/sluice/jwks";
/// Where the TLS Secret is mounted.
pub const TLS_DIR: &str = "/etc/sluice/tls";

/// Checks what the schema cannot; messages name the field.
pub fn validate(security: &SecuritySpec) -> Result<(), String> {
    if let Some(jwt) = &security.jwt {
        match (&jwt.jwks_uri, &jwt.jwks_config_map) {
            (Some(uri), None) if uri.starts_with("https://") || uri.starts_with("http://") => {}
            (Some(_), None) => {
                return Err("spec.security.jwt.jwksUri must be an http:// or https:// URL".into());
            }
            (None, Some(_)) => {}
            _ => {
                return Err(
                    "spec.security.jwt: set exactly one of jwksUri and jwksConfigMap".into(),
                );
            }
        }
    }
    if let Some(audit) = &security.audit
        && !(0.0..=1.0).contains(&audit.payload_sample_rate)
    {
        return Err("spec.security.audit.payloadSampleRate must be between 0 and 1".into());
    }
    Ok(())
}

/// The `sluice-server serve` flags for `security`.
pub fn server_args(security: &SecuritySpec) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut flag = |name: &str, value: String| {
        args.push(format!("--{name}"));
        args.push(value);
    };
    if security.api_keys_secret.is_some() {
        flag("api-keys-file", format!("{API_KEYS_DIR}/keys.yaml"));
    }
    if let Some(jwt) = &security.jwt {
        flag("jwt-issuer", jwt.issuer.clone());
        flag("jwt-audience", jwt.audience.clone());
        match &jwt.jwks_uri {
            Some(uri) => flag("jwks-url", uri.clone()),
            None => flag("jwks-file", format!("{JWKS_DIR}/jwks.json")),
        }
        if let Some(claim) = &jwt.models_claim {
            flag("jwt-models-claim", claim.clone());
        }
    }
    if let Some(rate) = &security.rate_limit {
        let numbers = [
            ("rate-limit", rate.requests_per_second),
            ("rate-limit-burst", rate.burst.map(f64::from)),
            ("model-rate-limit", rate.model_requests_per_second),
            ("model-rate-limit-burst", rate.model_burst.map(f64::from)),
            (
                "max-concurrent-per-client",
                rate.max_concurrent_per_client.map(f64::from),
            ),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                flag(name, value.to_string());
            }
        }
    }
    if let Some(limits) = &security.limits {
        let numbers = [
            ("max-body-bytes", limits.max_body_bytes),
            ("max-tensor-elements", limits.max_tensor_elements),
            ("max-batch-rows", limits.max_batch_rows),
            ("max-header-bytes", limits.max_header_bytes),
        ];
        for (name, value) in numbers {
            if let Some(value) = value {
                flag(name, value.to_string());
            }
        }
    }
    if let Some(tls) = &security.tls {
        flag("tls-cert", format!("{TLS_DIR}/tls.crt"));
        flag("tls-key", format!("{TLS_DIR}/tls.key"));
        if tls.client_certificates {
            flag("tls-client-ca", format!("{TLS_DIR}/ca.crt"));
        }
    }
    if let Some(audit) = &security.audit {
        flag("audit-log", "-".into());
        flag(
            "audit-payload-sample-rate",
            audit.payload_sample_rate.to_string(),
        );
    }
    if security.open_metrics {
        args.push("--open-metrics".into());
    }
    args
}

/// The volumes `security` needs and the server container's mounts of them.
pub fn volumes(security: &SecuritySpec) -> (Vec<Volume>, Vec<VolumeMount>) {
    let secret = |name: &str, secret: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            optional: Some(false),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(name) = &security.api_keys_secret {
        volumes.push(secret("api-keys", name));
        mounts.push(mount("api-keys", API_KEYS_DIR));
    }
    if let Some(config_map) = security
        .jwt
        .as_ref()
        .and_then(|j| j.jwks_config_map.as_ref())
    {
        volumes.push(Volume {
            name: "jwks".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map.clone(),
                optional: Some(false),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(mount("jwks", JWKS_DIR));
    }
    if let Some(tls) = &security.tls {
        volumes.push(secret("tls", &tls.secret_name));
        mounts.push(mount("tls", TLS_DIR));
    }
    (volumes, mounts)
}

/// `HTTPS` when TLS is on: the scheme of the probes and of Prometheus scrapes
/// (which otherwise keep their default, HTTP).
pub fn tls_scheme(security: Option<&SecuritySpec>) -> Option<&'static str> {
    security.and_then(|s| s.tls.as_ref()).map(|_| "HTTPS")
}

/// A NetworkPolicy admitting only `allowedSources` to the serving ports of the
/// pods `selector` picks, when `allowedSources` is set.
pub fn network_policy(
    security: &SecuritySpec,
    metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    ports: &[i32],
) -> Option<NetworkPolicy> {
    let sources = security.allowed_sources.clone()?;
    let rules = if sources.is_empty() {
        Vec::new()
    } else {
        vec![NetworkPolicyIngressRule {
            from: Some(sources),
            ports: Some(
                ports
                    .iter()
                    .map(|port| NetworkPolicyPort {
                        port: Some(IntOrString::Int(*port)),
                        protocol: Some("TCP".into()),
                        ..NetworkPolicyPort::default()
                    })
                    .collect(),
            ),
        }]
    };
    Some(NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{JwtSpec, RateLimitSpec, TlsSpec};

    #[test]
    fn flags_follow_the_spec() {
        let security = SecuritySpec {
            api_keys_secret: Some("keys".into()),
            rate_limit: Some(RateLimitSpec {
                requests_per_second: Some(2.5),
                max_concurrent_per_client: Some(4),
                ..RateLimitSpec::default()
            }),
            tls: Some(TlsSpec {
                secret_name: "tls".into(),
                client_certificates: true,
            }),
            open_metrics: true,
            ..SecuritySpec::default()
        };
        assert_eq!(
            server_args(&security).join(" "),
            "--api-keys-file /etc/sluice/api-keys/keys.yaml --rate-limit 2.5 \
             --max-concurrent-per-client 4 --tls-cert /etc/sluice/tls/tls.crt \
             --tls-key /etc/sluice/tls/tls.key --tls-client-ca /etc/sluice/tls/ca.crt --open-metrics"
        );
        let (volumes, mounts) = volumes(&security);
        assert_eq!(volumes.len(), 2);
        assert!(
            mounts
                .iter()
                .all(|m| m.sub_path.is_none() && m.read_only == Some(true))
        );
        assert_eq!(tls_scheme(Some(&security)), Some("HTTPS"));
        assert_eq!(tls_scheme(None), None);
    }

    #[test]
    fn jwt_needs_exactly_one_key_source() {
        let jwt = |uri: Option<&str>, config_map: Option<&str>| SecuritySpec {
            jwt: Some(JwtSpec {
                issuer: "i".into(),
                audience: "a".into(),
                jwks_uri: uri.map(String::from),
                jwks_config_map: config_map.map(String::from),
                models_claim: None,
            }),
            ..SecuritySpec::default()
        };
        assert!(validate(&jwt(Some("https://idp/jwks"), None)).is_ok());
        assert!(validate(&jwt(None, Some("jwks"))).is_ok());
        assert!(
            validate(&jwt(None, None))
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(
            validate(&jwt(Some("x"), Some("y")))
                .unwrap_err()
                .contains("exactly one")
        );
        assert!(
            validate(&jwt(Some("ftp://x"), None))
                .unwrap_err()
                .contains("jwksUri")
        );
    }

    #[test]
    fn no_sources_means_no_policy_and_an_empty_list_admits_nobody() {
        let policy = |sources| {
            network_policy(
                &SecuritySpec {
                    allowed_sources: sources,
                    ..SecuritySpec::default()
                },
                ObjectMeta::default(),
                BTreeMap::new(),
                &[8080],
            )
        };
        assert!(policy(None).is_none());
        let closed = policy(Some(Vec::new())).unwrap();
        assert_eq!(closed.spec.unwrap().ingress, Some(Vec::new()));
    }
}
