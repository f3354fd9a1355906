//! The `validate` step: checks what the CRD schema cannot express (or an older CRD
//! may not enforce), and returns a typed [`Validated`] value that the later steps
//! take, so they cannot run on an unchecked resource. Pure.

mod autoscaling;
mod monitoring;
mod optimize;
mod placement;
mod resilience;
mod rollout;

use kube::ResourceExt;

use crate::build::StorageUri;
use crate::config::BuildConfig;
use crate::crd::{InferenceService, ModelSpec};
use crate::names::{MAX_NAME_LENGTH, RESERVED_ENV, revision};
use crate::rollout::control::{self, Command};
use crate::security;

/// An InferenceService that passed every check, with what the later steps need
/// worked out once.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated<'a> {
    /// The resource as read from the API server.
    pub isvc: &'a InferenceService,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The revision the spec asks for (see [`revision`]).
    pub revision: String,
    /// The manual command in the `serving.sluice.dev/rollout` annotation.
    pub command: Requested,
}

/// What the `serving.sluice.dev/rollout` annotation asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// No annotation.
    Nothing,
    /// A command to act on once.
    Command(Command),
    /// An annotation that is not a command: the message says why. It is reported
    /// and removed; the rest of the reconcile goes on.
    Invalid(String),
}

impl Requested {
    /// The command, when there is a valid one.
    pub fn command(&self) -> Option<Command> {
        match self {
            Self::Command(command) => Some(*command),
            Self::Nothing | Self::Invalid(_) => None,
        }
    }
}

/// Why an InferenceService cannot be served as it is; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Checks `isvc` and works out its revision and the manual command it carries.
pub fn validate<'a>(
    isvc: &'a InferenceService,
    cfg: &BuildConfig,
) -> Result<Validated<'a>, Invalid> {
    check(isvc).map_err(Invalid)?;
    let namespace = isvc
        .namespace()
        .ok_or_else(|| Invalid("metadata.namespace is missing".into()))?;
    let revision = revision(&isvc.spec, cfg).map_err(|e| Invalid(e.to_string()))?;
    let command = match isvc.annotations().get(control::ANNOTATION) {
        None => Requested::Nothing,
        Some(value) => match Command::parse(value) {
            Ok(command) => Requested::Command(command),
            Err(message) => Requested::Invalid(message),
        },
    };
    Ok(Validated {
        isvc,
        name: isvc.name_any(),
        namespace,
        revision,
        command,
    })
}

/// Whether `name` is a DNS-1035 label of at most [`MAX_NAME_LENGTH`]
/// characters: it names objects with an 11-character suffix
/// (`<name>-<revision>`, `<name>-<run>`), which must fit 63.
pub fn short_dns_label(name: &str) -> bool {
    name.len() <= MAX_NAME_LENGTH
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// The checks of the whole resource; each message names the field.
fn check(isvc: &InferenceService) -> Result<(), String> {
    let name = isvc.name_any();
    if !short_dns_label(&name) {
        return Err(format!(
            "metadata.name {name:?} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} lowercase letters, digits and '-', starting with a letter, because it names the Services (`<name>-<revision>` must fit 63)"
        ));
    }
    let spec = &isvc.spec;
    check_model(&spec.model)?;
    if spec.min_replicas < 1 {
        return Err("spec.minReplicas must be at least 1".into());
    }
    if let Some(max) = spec.max_replicas
        && spec.min_replicas > max
    {
        return Err(format!(
            "spec.minReplicas ({}) must not be above spec.maxReplicas ({max})",
            spec.min_replicas
        ));
    }
    rollout::check(&spec.rollout)?;
    autoscaling::check(spec)?;
    placement::check(spec)?;
    if let Some(env) = spec
        .runtime
        .env
        .iter()
        .find(|e| RESERVED_ENV.contains(&e.name.as_str()))
    {
        return Err(format!(
            "spec.runtime.env: {} is set by the operator",
            env.name
        ));
    }
    if let Some(security) = &spec.security {
        security::validate(security)?;
    }
    if let Some(fallback) = &spec.fallback {
        resilience::check(fallback)?;
    }
    match &spec.monitoring {
        Some(monitoring) => monitoring::check(monitoring)?,
        None if spec.rollout.analysis.max_drift_score.is_some() => {
            return Err("spec.rollout.analysis.maxDriftScore needs spec.monitoring: drift is measured against its profile, and without one every analysis would have no data".into());
        }
        None => {}
    }
    Ok(())
}

/// The checks of `spec.model` (an InferenceService's, or a BatchInference's):
/// the location's scheme and shape, the digest, the optimization.
pub fn check_model(model: &ModelSpec) -> Result<(), String> {
    StorageUri::parse(&model.storage_uri).map_err(|e| format!("spec.model.storageUri: {e}"))?;
    check_sha256("spec.model.sha256", model.sha256.as_deref())?;
    if let Some(optimize) = &model.optimize {
        optimize::check(optimize)?;
    }
    Ok(())
}

/// Checks that `digest`, when given, is 64 lowercase hexadecimal digits; the
/// message names `field`.
pub fn check_sha256(field: &str, digest: Option<&str>) -> Result<(), String> {
    match digest {
        Some(digest)
            if !(digest.len() == 64
                && digest
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))) =>
        {
            Err(format!("{field} must be 64 lowercase hexadecimal digits"))
        }
        _ => Ok(()),
    }
}
