//! Resolves a container's image, command and args to the program it runs on the host.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;

use crate::error::{Error, Result};

/// Images whose name contains a key run the mapped local binary as their entrypoint.
#[derive(Clone, Debug, Default)]
pub struct ImageMap {
    entries: Vec<(String, PathBuf)>,
}

impl ImageMap {
    /// Builds a map from `(image name fragment, binary)` pairs. Binaries are
    /// resolved to their real paths: a pod's volumes (an emptyDir at /tmp, say) can
    /// hide the checkout a symlinked path goes through, but not the file itself.
    pub fn new(entries: Vec<(String, PathBuf)>) -> Self {
        let entries = entries
            .into_iter()
            .map(|(fragment, binary)| {
                let real = std::fs::canonicalize(&binary).unwrap_or(binary);
                (fragment, real)
            })
            .collect();
        Self { entries }
    }

    /// The host argv for `container`: its image's entrypoint (for mapped images) or
    /// its `command`, followed by its `args`, as Kubernetes combines them.
    pub fn argv(&self, container: &Container) -> Result<Vec<String>> {
        let image = container.image.as_deref().unwrap_or_default();
        let command = container.command.clone().unwrap_or_default();
        let args = container.args.clone().unwrap_or_default();
        if !command.is_empty() {
            return Ok(command.into_iter().chain(args).collect());
        }
        let entrypoint = self
            .entries
            .iter()
            .find(|(fragment, _)| image_name(image).contains(fragment.as_str()))
            .map(|(_, binary)| binary.display().to_string())
            .ok_or_else(|| {
                Error::Config(format!(
                    "image {image:?} has no local binary and the container sets no command"
                ))
            })?;
        Ok(std::iter::once(entrypoint).chain(args).collect())
    }
}

/// The repository part of an image reference, without registry host, tag or digest.
fn image_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image: &str, command: &[&str], args: &[&str]) -> Container {
        let strings = |v: &[&str]| {
            (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        Container {
            name: "c".into(),
            image: Some(image.into()),
            command: strings(command),
            args: strings(args),
            ..Default::default()
        }
    }

    fn map() -> ImageMap {
        ImageMap::new(vec![("sluice-server".into(), "/bin/sluice-server".into())])
    }

    #[test]
    fn mapped_image_runs_local_binary_with_args() {
        let c = container("ghcr.io/sluice-dev/sluice-server:0.1", &[], &["serve"]);
        assert_eq!(map().argv(&c).unwrap(), ["/bin/sluice-server", "serve"]);
    }

    #[test]
    fn command_overrides_entrypoint() {
        let c = container("python:3", &["python3", "-m"], &["http.server"]);
        assert_eq!(map().argv(&c).unwrap(), ["python3", "-m", "http.server"]);
    }

    #[test]
    fn unknown_image_without_command_is_an_error() {
        let c = container("nginx:1.27", &[], &[]);
        assert!(map().argv(&c).is_err());
    }

    #[test]
    fn registry_port_is_not_mistaken_for_a_tag() {
        assert_eq!(
            image_name("localhost:5000/sluice-server:dev"),
            "sluice-server"
        );
        assert_eq!(image_name("busybox@sha256:abc"), "busybox");
    }
}
