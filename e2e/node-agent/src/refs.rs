//! The ConfigMaps and Secrets a pod refers to, fetched once before it starts.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{Api, Client};

use crate::error::{Error, Result};

/// ConfigMaps and Secrets of a pod's namespace that its env and volumes name.
#[derive(Clone, Debug, Default)]
pub struct PodRefs {
    /// ConfigMaps by name; absent ones are missing from the API.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets by name; absent ones are missing from the API.
    pub secrets: BTreeMap<String, Secret>,
}

impl PodRefs {
    /// The value of `key` in ConfigMap `name`, as text.
    pub fn config_map_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let cm = self.config_maps.get(name)?;
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Some(v.clone().into_bytes());
        }
        cm.binary_data.as_ref()?.get(key).map(|b| b.0.clone())
    }

    /// The value of `key` in Secret `name`.
    pub fn secret_value(&self, name: &str, key: &str) -> Option<Vec<u8>> {
        let secret = self.secrets.get(name)?;
        if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
            return Some(v.0.clone());
        }
        secret
            .string_data
            .as_ref()?
            .get(key)
            .map(|s| s.clone().into_bytes())
    }

    /// Every key and value of ConfigMap `name`.
    pub fn config_map_entries(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let cm = self.config_maps.get(name)?;
        let mut out: BTreeMap<String, Vec<u8>> = cm
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        out.extend(
            cm.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone())),
        );
        Some(out)
    }

    /// Every key and value of Secret `name`.
    pub fn secret_entries(&self, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let secret = self.secrets.get(name)?;
        Some(
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        )
    }

    /// Fetches every ConfigMap and Secret that `pod` names.
    pub async fn fetch(client: &Client, pod: &Pod) -> Result<Self> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let (cm_names, secret_names) = referenced_names(pod);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let mut refs = PodRefs::default();
        for name in cm_names {
            if let Some(cm) = cms.get_opt(&name).await.map_err(Error::Kube)? {
                refs.config_maps.insert(name, cm);
            }
        }
        for name in secret_names {
            if let Some(s) = secrets.get_opt(&name).await.map_err(Error::Kube)? {
                refs.secrets.insert(name, s);
            }
        }
        Ok(refs)
    }
}

/// Names of the ConfigMaps and Secrets `pod` refers to in env, envFrom and volumes.
fn referenced_names(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for env in c.env.iter().flatten() {
            let Some(from) = env.value_from.as_ref() else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}
