//! Manual control through the `serving.sluice.dev/rollout` annotation. The operator
//! acts on the value once and removes the annotation. No command writes the spec:
//! `rollback` is held in `status.rollback` ([`rollback`], [`in_force`]), so a
//! GitOps tool that owns the spec sees no change it did not make.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::config::BuildConfig;
use crate::crd::rollout::{HistoryEntry, RollbackStatus, RolloutPhase};
use crate::crd::{InferenceService, ModelSpec};
use crate::names::revision;

/// The annotation that carries a manual command.
pub const ANNOTATION: &str = "serving.sluice.dev/rollout";

/// A manual command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Promote the rollout in progress now, skipping the remaining analysis.
    Promote,
    /// Stop the rollout in progress; the stable revision serves alone.
    Abort,
    /// Hold the rollout at its current step (no analysis, no step change).
    Pause,
    /// Continue a paused rollout; the current step starts over.
    Resume,
    /// Serve the previous stable revision's model and runtime in place of the
    /// spec's (held in `status.rollback`), which starts a rollout to it.
    Rollback,
}

impl Command {
    /// Parses the annotation's value; the error names the valid values.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "promote" => Ok(Self::Promote),
            "abort" => Ok(Self::Abort),
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            "rollback" => Ok(Self::Rollback),
            other => Err(format!(
                "annotation {ANNOTATION}={other:?} is not one of promote, abort, pause, resume, rollback"
            )),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Rollback => "rollback",
        };
        f.write_str(word)
    }
}

/// The revision the `rollback` command returns to: the latest promoted revision
/// before the stable one, from `status.history`.
pub fn rollback_target<'a>(
    history: &'a [HistoryEntry],
    stable: Option<&str>,
) -> Result<&'a HistoryEntry, String> {
    let stable = stable.ok_or("rollback needs a stable revision; there is none yet")?;
    let promoted = |e: &&HistoryEntry| e.outcome == RolloutPhase::Promoted;
    let mut older = history.iter().rev().filter(promoted);
    // Skip the stable revision's own entry (the newest promoted one, if kept).
    let mut candidate = older.next();
    if candidate.is_some_and(|e| e.revision == stable) {
        candidate = older.next();
    }
    candidate
        .filter(|e| e.revision != stable)
        .ok_or_else(|| format!("no revision before {stable} in status.history to roll back to"))
}

/// The `rollback` command's record: the revision before the stable one, to be
/// served in place of the spec's model until the spec (now at `spec_revision`)
/// changes. The error says why there is nothing to roll back to.
pub fn rollback(
    history: &[HistoryEntry],
    stable: Option<&str>,
    spec_revision: String,
    now: Time,
) -> Result<RollbackStatus, String> {
    let target = rollback_target(history, stable)?;
    Ok(RollbackStatus {
        spec_revision,
        revision: target.revision.clone(),
        model: target.model.clone(),
        runtime: target.runtime.clone(),
        time: now,
    })
}

/// The revision of the spec as written, for a rollback command's record: while a
/// rollback is in force the spec read serves the rolled-back model, so its own
/// revision is the one that rollback recorded.
pub fn spec_revision(isvc: &InferenceService, cfg: &BuildConfig) -> crate::Result<String> {
    match isvc.status.as_ref().and_then(|s| s.rollback.as_ref()) {
        Some(held) => Ok(held.spec_revision.clone()),
        None => revision(&isvc.spec, cfg),
    }
}

/// The InferenceService as the rest of the reconcile sees it: with a rollback in
/// force, its model and runtime are the rolled-back revision's; once the spec's
/// own revision moved on (a revert in Git, a new model), `status.rollback` is
/// dropped and the spec serves again.
pub fn in_force(mut isvc: InferenceService, cfg: &BuildConfig) -> crate::Result<InferenceService> {
    let Some(status) = isvc.status.as_mut() else {
        return Ok(isvc);
    };
    let Some(pinned) = status.rollback.clone() else {
        return Ok(isvc);
    };
    if revision(&isvc.spec, cfg)? != pinned.spec_revision {
        status.rollback = None;
        return Ok(isvc);
    }
    // Read back as the spec's type: what the record holds, the rest defaults,
    // as the revision was recorded.
    isvc.spec.model = serde_json::from_value::<ModelSpec>(serde_json::to_value(&pinned.model)?)?;
    isvc.spec.runtime = pinned.runtime.unwrap_or_default();
    Ok(isvc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(revision: &str, outcome: RolloutPhase) -> HistoryEntry {
        HistoryEntry {
            revision: revision.into(),
            outcome,
            reason: String::new(),
            time: Time(jiff::Timestamp::UNIX_EPOCH),
            model: serde_json::from_str(r#"{"storageUri": "file:///m"}"#).unwrap(),
            runtime: None,
        }
    }

    #[test]
    fn rollback_goes_to_the_promoted_revision_before_the_stable_one() {
        use RolloutPhase::*;
        let h = vec![
            entry("a", Promoted),
            entry("b", Promoted),
            entry("c", RolledBack),
            entry("d", Aborted),
        ];
        assert_eq!(rollback_target(&h, Some("b")).unwrap().revision, "a");
        assert!(
            rollback_target(&h[..1], Some("a"))
                .unwrap_err()
                .contains("no revision before a")
        );
        assert!(rollback_target(&h, None).is_err());
    }

    fn isvc(uri: &str, rollback: Option<RollbackStatus>) -> InferenceService {
        let mut isvc: InferenceService = serde_json::from_value(serde_json::json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"model": {"storageUri": uri}, "runtime": {"threads": 2}},
        }))
        .unwrap();
        isvc.status = Some(crate::crd::InferenceServiceStatus {
            rollback,
            ..Default::default()
        });
        isvc
    }

    #[test]
    fn a_rollback_serves_the_older_model_until_the_spec_changes() {
        let cfg = BuildConfig::default();
        let spec_revision = revision(&isvc("file:///m/2", None).spec, &cfg).unwrap();
        let mut older = entry("a", RolloutPhase::Promoted);
        older.model.storage_uri = "file:///m/1".into();
        let history = [older, entry(&spec_revision, RolloutPhase::Promoted)];
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let pinned = rollback(&history, Some(&spec_revision), spec_revision.clone(), now).unwrap();
        assert_eq!(pinned.revision, "a");

        // The spec is unchanged: the rolled-back model and runtime serve.
        let served = in_force(isvc("file:///m/2", Some(pinned.clone())), &cfg).unwrap();
        assert_eq!(served.spec.model.storage_uri, "file:///m/1");
        assert_eq!(served.spec.runtime, crate::crd::RuntimeSpec::default());
        // A second rollback meanwhile still records the spec as written.
        assert_eq!(super::spec_revision(&served, &cfg).unwrap(), spec_revision);
        assert_eq!(served.status.unwrap().rollback, Some(pinned.clone()));

        // A revert in Git (or any new spec) ends it: the spec serves again.
        let reverted = in_force(isvc("file:///m/1", Some(pinned)), &cfg).unwrap();
        assert_eq!(reverted.spec.model.storage_uri, "file:///m/1");
        assert_eq!(reverted.spec.runtime.threads, Some(2));
        assert_eq!(reverted.status.unwrap().rollback, None);

        let nothing_before = rollback(
            &history[1..],
            Some(&spec_revision),
            spec_revision.clone(),
            Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(nothing_before.unwrap_err().contains("no revision before"));
    }

    #[test]
    fn parses_every_command_and_names_valid_values() {
        for c in [
            Command::Promote,
            Command::Abort,
            Command::Pause,
            Command::Resume,
            Command::Rollback,
        ] {
            assert_eq!(Command::parse(&c.to_string()), Ok(c));
        }
        let e = Command::parse("yolo").unwrap_err();
        assert!(
            e.contains("\"yolo\"") && e.contains("promote, abort"),
            "{e}"
        );
    }
}
