//! Which cluster and namespace a command talks to, chosen the way kubectl
//! chooses them: `--kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else
//! the in-cluster service account), `--context` (else the current context),
//! `-n/--namespace` (else the context's namespace, else `default`).

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Result;

/// The connection flags every command takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// A kubeconfig file instead of `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig instead of its current one.
    pub context: Option<String>,
    /// The namespace instead of the context's.
    pub namespace: Option<String>,
}

/// A client and the namespace its commands act in.
#[derive(Clone)]
pub struct Target {
    /// The API client.
    pub client: Client,
    /// The namespace of the InferenceService.
    pub namespace: String,
}

impl ConnectOptions {
    /// The client configuration these options select.
    pub async fn config(&self) -> Result<Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kubeconfig = Kubeconfig::read_from(path)?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            // What `Client::try_default()` does: a kubeconfig, else in-cluster.
            (None, None) => Config::infer().await?,
        };
        Ok(config)
    }

    /// Connects: the client, and the namespace from `-n` or the context.
    pub async fn connect(&self) -> Result<Target> {
        let config = self.config().await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Target {
            client: Client::try_from(config)?,
            namespace,
        })
    }
}
