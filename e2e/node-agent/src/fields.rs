//! Downward API: a pod's own fields and its containers' resources as text.

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::error::{Error, Result};

/// The value of a `fieldRef` such as `metadata.name` or `metadata.labels['app']`.
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String> {
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix("['"))
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_owned)
    };
    let text = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()),
        "status.podIPs" => status.map(|s| {
            let ips = s.pod_ips.iter().flatten().map(|ip| ip.ip.clone());
            ips.collect::<Vec<_>>().join(",")
        }),
        "status.hostIPs" => status.map(|s| {
            let ips = s.host_ips.iter().flatten().map(|ip| ip.ip.clone());
            ips.collect::<Vec<_>>().join(",")
        }),
        "metadata.labels" => Some(render_map(meta.labels.iter().flatten())),
        "metadata.annotations" => Some(render_map(meta.annotations.iter().flatten())),
        _ => {
            if let Some(key) = keyed("metadata.labels") {
                meta.labels.as_ref().and_then(|l| l.get(&key).cloned())
            } else if let Some(key) = keyed("metadata.annotations") {
                meta.annotations.as_ref().and_then(|a| a.get(&key).cloned())
            } else {
                return Err(Error::Config(format!("unsupported fieldRef {path:?}")));
            }
        }
    };
    Ok(text.unwrap_or_default())
}

/// `key="value"` lines, as the downward API renders label and annotation maps.
fn render_map<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let lines: Vec<String> = entries.map(|(k, v)| format!("{k}={v:?}")).collect();
    lines.join("\n")
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) divided by
/// its divisor and rounded up, falling back to the node's capacity when unset.
pub fn resource_value(
    container: &Container,
    selector: &ResourceFieldSelector,
    node_cpu: u64,
    node_memory: u64,
) -> Result<String> {
    let resources = container.resources.as_ref();
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| Error::Config(format!("bad resourceFieldRef {:?}", selector.resource)))?;
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => None,
    };
    let fallback = match resource {
        "cpu" => node_cpu as f64,
        "memory" => node_memory as f64,
        _ => 0.0,
    };
    let value = match set.and_then(|m| m.get(resource)) {
        Some(q) => parse_quantity(&q.0)?,
        None if kind == "requests" => 0.0,
        None => fallback,
    };
    let divisor = match &selector.divisor {
        Some(q) => parse_quantity(&q.0)?,
        None => 1.0,
    };
    if divisor <= 0.0 {
        return Err(Error::Config(
            "resourceFieldRef divisor must be positive".into(),
        ));
    }
    Ok(format!("{}", (value / divisor).ceil() as u64))
}

/// Parses a Kubernetes quantity (`250m`, `1.5`, `64Mi`, `2G`, `1e3`) to base units.
pub fn parse_quantity(text: &str) -> Result<f64> {
    let bad = || Error::Config(format!("bad quantity {text:?}"));
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    Ok(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("ml".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_metadata_fields_and_labels() {
        assert_eq!(
            field_value(&pod(), &field("metadata.name")).unwrap(),
            "web-1"
        );
        assert_eq!(
            field_value(&pod(), &field("metadata.labels['app']")).unwrap(),
            "web"
        );
        assert_eq!(
            field_value(&pod(), &field("metadata.labels")).unwrap(),
            "app=\"web\""
        );
        assert!(field_value(&pod(), &field("spec.bogus")).is_err());
    }

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_quantity("250m").unwrap(), 0.25);
        assert_eq!(parse_quantity("64Mi").unwrap(), 67_108_864.0);
        assert_eq!(parse_quantity("2G").unwrap(), 2e9);
        assert_eq!(parse_quantity("1e3").unwrap(), 1000.0);
        assert!(parse_quantity("12Q").is_err());
    }

    #[test]
    fn cpu_limit_falls_back_to_node_capacity_and_rounds_up() {
        let c = Container::default();
        let sel = ResourceFieldSelector {
            resource: "limits.cpu".into(),
            ..Default::default()
        };
        assert_eq!(resource_value(&c, &sel, 2, 1 << 30).unwrap(), "2");
    }
}
