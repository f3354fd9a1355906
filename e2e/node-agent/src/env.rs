//! A container's environment: literal values, `valueFrom`, `envFrom` and `$(VAR)`
//! expansion, in the order Kubernetes applies them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::{Error, Result};
use crate::fields::{field_value, resource_value};
use crate::refs::PodRefs;

/// What env resolution needs besides the container.
pub struct EnvContext<'a> {
    /// The pod, with `status.podIP` and `status.hostIP` already set.
    pub pod: &'a Pod,
    /// The ConfigMaps and Secrets it names.
    pub refs: &'a PodRefs,
    /// CPUs of the node, for `resourceFieldRef` without limits.
    pub node_cpu: u64,
    /// Memory of the node in bytes, likewise.
    pub node_memory: u64,
}

/// The container's environment as ordered `(name, value)` pairs.
pub fn resolve_env(container: &Container, ctx: &EnvContext<'_>) -> Result<Vec<(String, String)>> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| {
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (entries, name, optional) = if let Some(r) = &from.config_map_ref {
            (ctx.refs.config_map_entries(&r.name), &r.name, r.optional)
        } else if let Some(r) = &from.secret_ref {
            (ctx.refs.secret_entries(&r.name), &r.name, r.optional)
        } else {
            continue;
        };
        match entries {
            Some(entries) => {
                for (k, v) in entries {
                    set(
                        &mut vars,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into(),
                    );
                }
            }
            None if optional == Some(true) => {}
            None => return Err(Error::Config(format!("envFrom source {name:?} not found"))),
        }
    }
    for env in container.env.iter().flatten() {
        let value = match (&env.value, &env.value_from) {
            (_, Some(from)) => {
                let missing = |what: &str| Error::Config(format!("env {}: {what}", env.name));
                if let Some(f) = &from.field_ref {
                    field_value(ctx.pod, f)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(container, r, ctx.node_cpu, ctx.node_memory)?
                } else if let Some(r) = &from.config_map_key_ref {
                    match ctx.refs.config_map_value(&r.name, &r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(missing(&format!("configmap {}/{}", r.name, r.key))),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    match ctx.refs.secret_value(&r.name, &r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into(),
                        None if r.optional == Some(true) => continue,
                        None => return Err(missing(&format!("secret {}/{}", r.name, r.key))),
                    }
                } else {
                    return Err(missing("unsupported valueFrom"));
                }
            }
            (value, None) => {
                let known: BTreeMap<&str, &str> =
                    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(value.as_deref().unwrap_or_default(), &known)
            }
        };
        set(&mut vars, env.name.clone(), value);
    }
    Ok(vars)
}

/// Expands `$(VAR)` references to earlier variables; `$$` escapes a dollar and
/// unknown references stay as written, as in Kubernetes.
pub fn expand(input: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(close) = after.strip_prefix('(').and_then(|a| a.find(')')) {
            let name = &after[1..=close];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[i..i + close + 3]),
            }
            rest = &after[close + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapKeySelector, EnvVar, EnvVarSource, ObjectFieldSelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn expands_references_and_escapes() {
        let vars = BTreeMap::from([("A", "1"), ("B", "two")]);
        assert_eq!(expand("$(A)-$(B)", &vars), "1-two");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$(C) $", &vars), "$(C) $");
    }

    fn var(name: &str, value: Option<&str>, from: Option<EnvVarSource>) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.map(Into::into),
            value_from: from,
        }
    }

    #[test]
    fn resolves_fields_configmaps_and_expansion_in_order() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut refs = PodRefs::default();
        refs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("level".to_string(), "debug".to_string())].into()),
                ..Default::default()
            },
        );
        let container = Container {
            env: Some(vec![
                var(
                    "POD",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                ),
                var(
                    "LEVEL",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "level".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
                var("BOTH", Some("$(POD):$(LEVEL)"), None),
            ]),
            ..Default::default()
        };
        let ctx = EnvContext {
            pod: &pod,
            refs: &refs,
            node_cpu: 1,
            node_memory: 1,
        };
        let env = resolve_env(&container, &ctx).unwrap();
        assert_eq!(
            env.last().unwrap(),
            &("BOTH".to_string(), "p:debug".to_string())
        );
    }

    #[test]
    fn missing_required_configmap_key_is_an_error() {
        let container = Container {
            env: Some(vec![var(
                "X",
                None,
                Some(EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "absent".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            )]),
            ..Default::default()
        };
        let pod = Pod::default();
        let refs = PodRefs::default();
        let ctx = EnvContext {
            pod: &pod,
            refs: &refs,
            node_cpu: 1,
            node_memory: 1,
        };
        assert!(resolve_env(&container, &ctx).is_err());
    }
}
