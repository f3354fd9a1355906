//! `promote`, `abort`, `pause`, `resume` and `rollback`: the manual commands.
//!
//! Each sets one annotation, `serving.sluice.dev/rollout=<command>`, with a JSON
//! merge patch of `metadata` only. The spec is never written, so a GitOps tool
//! that owns it (Argo CD, Flux) sees nothing to sync back; the operator acts on
//! the annotation once and removes it, and a rollback is held in
//! `status.rollback` (docs/rollouts.md, "Manual control").

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_operator::crd::InferenceService;
use sluice_operator::crd::rollout::RolloutPhase;
pub use sluice_operator::rollout::control::Command;
use sluice_operator::rollout::control::{ANNOTATION, rollback_target};

use crate::cluster;
use crate::connect::Target;
use crate::status::{RollbackView, StatusView, step_description};
use crate::table::Fields;
use crate::{Error, Result};

/// The field manager of the plugin's patches (in `metadata.managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-sluice";

/// How long `--wait` keeps watching after the operator removed the annotation,
/// for the status write that follows it in the same reconcile.
const SETTLE: Duration = Duration::from_secs(3);

/// The document a command prints (`-o json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `promote`, `abort`, `pause`, `resume` or `rollback`.
    pub command: String,
    /// The annotation set, `serving.sluice.dev/rollout=<command>`.
    pub annotation: String,
    /// A command that was still pending and that this one replaced.
    pub replaced: Option<String>,
    /// What the operator is expected to do with it, from status before the
    /// command (e.g. that there is no rollout to promote).
    pub expectation: Option<String>,
    /// Whether `--wait` was given.
    pub waited: bool,
    /// With `--wait`: the operator removed the annotation (it acted on it).
    pub acted: bool,
    /// With `--wait`: the rollout afterwards.
    pub rollout: Option<RolloutBrief>,
    /// With `--wait`: `status.rollback` afterwards.
    pub rollback: Option<RollbackView>,
    /// With `--wait`: the Ready condition's message afterwards.
    pub ready_message: Option<String>,
}

/// Where a rollout stands, in brief.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutBrief {
    /// The revision rolled out.
    pub revision: String,
    /// `Progressing`, `Paused`, `Promoted`, `RolledBack` or `Aborted`.
    pub phase: String,
    /// `status.rollout.step`.
    pub step: u32,
    /// The step in words.
    pub step_description: String,
    /// The rollout's message.
    pub message: String,
}

/// The merge patch that requests `command`: the annotation, nothing else.
pub fn patch(command: Command) -> serde_json::Value {
    json!({"metadata": {"annotations": {ANNOTATION: command.to_string()}}})
}

/// What the operator will do with `command`, judged from status before it:
/// `None` when it simply applies.
pub fn expectation(command: Command, isvc: &InferenceService) -> Option<String> {
    let status = isvc.status.as_ref();
    let phase = status
        .and_then(|s| s.rollout.as_ref())
        .map(|r| r.phase)
        .filter(|p| !p.finished());
    let idle = "no rollout is in progress: the operator removes the annotation and changes nothing";
    match (command, phase) {
        (Command::Promote | Command::Abort | Command::Pause, None) => Some(idle.into()),
        (Command::Pause, Some(RolloutPhase::Paused)) => {
            Some("the rollout is already paused".into())
        }
        (Command::Resume, Some(RolloutPhase::Paused)) => None,
        (Command::Resume, _) => Some(
            "the rollout is not paused: the operator removes the annotation and changes nothing"
                .into(),
        ),
        (Command::Rollback, _) => {
            let history = status.map(|s| s.history.as_slice()).unwrap_or_default();
            let stable = status.and_then(|s| s.stable_revision.as_deref());
            Some(match rollback_target(history, stable) {
                Ok(target) => format!(
                    "revision {} ({}) serves again in place of the spec's, until the spec changes; it rolls out like a new revision",
                    target.revision, target.model.storage_uri
                ),
                Err(why) => format!("the operator will refuse it: {why}"),
            })
        }
        _ => None,
    }
}

/// Sets the annotation; with `wait`, waits until the operator removed it (at
/// most `timeout`) and reports the rollout it left.
pub async fn run(
    target: &Target,
    name: &str,
    command: Command,
    wait: Option<Duration>,
) -> Result<CommandView> {
    let before = cluster::inference_service(target, name).await?;
    let replaced = before
        .annotations()
        .get(ANNOTATION)
        .filter(|pending| **pending != command.to_string())
        .cloned();
    let api = cluster::api(target);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patched = api
        .patch(name, &params, &Patch::Merge(patch(command)))
        .await?;
    let mut view = CommandView {
        name: name.into(),
        namespace: target.namespace.clone(),
        command: command.to_string(),
        annotation: format!("{ANNOTATION}={command}"),
        replaced,
        expectation: expectation(command, &before),
        waited: wait.is_some(),
        acted: false,
        rollout: None,
        rollback: None,
        ready_message: None,
    };
    let Some(timeout) = wait else {
        return Ok(view);
    };
    let after = wait_acted(target, name, command, timeout, &patched).await?;
    view.acted = true;
    let status = StatusView::new(&after, None);
    view.rollback = status.rollback;
    view.ready_message = status.ready.map(|c| c.message);
    view.rollout = after
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map(|r| RolloutBrief {
            revision: r.revision.clone(),
            phase: crate::word(&r.phase),
            step: r.step,
            step_description: step_description(r, &after.spec.rollout.canary.steps),
            message: r.message.clone(),
        });
    Ok(view)
}

/// Waits until the annotation is gone, then briefly for the status write that
/// follows in the same reconcile; returns the object as it then is.
async fn wait_acted(
    target: &Target,
    name: &str,
    command: Command,
    timeout: Duration,
    patched: &InferenceService,
) -> Result<InferenceService> {
    let api = cluster::api(target);
    let cleared =
        |o: Option<&InferenceService>| o.is_none_or(|o| !o.annotations().contains_key(ANNOTATION));
    let gone = if cleared(Some(patched)) {
        Some(patched.clone())
    } else {
        tokio::time::timeout(timeout, await_condition(api.clone(), name, cleared))
            .await
            .map_err(|_| Error::Timeout {
                command: command.to_string(),
                seconds: timeout.as_secs(),
            })??
    };
    let Some(gone) = gone else {
        return Err(Error::NotFound {
            namespace: target.namespace.clone(),
            name: name.into(),
        });
    };
    let version = gone.resource_version();
    let newer =
        move |o: Option<&InferenceService>| o.is_none_or(|o| o.resource_version() != version);
    match tokio::time::timeout(SETTLE, await_condition(api, name, newer)).await {
        Ok(Ok(Some(newer))) => Ok(newer),
        _ => Ok(gone),
    }
}

impl CommandView {
    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = format!(
            "inferenceservice {}/{}: {} requested ({})\n",
            self.namespace, self.name, self.command, self.annotation
        );
        if let Some(replaced) = &self.replaced {
            out.push_str(&format!(
                "replaced the pending command {replaced:?}, which the operator had not acted on yet\n"
            ));
        }
        if let Some(expectation) = &self.expectation {
            out.push_str(&format!("expected: {expectation}\n"));
        }
        if !self.waited {
            out.push_str("the operator acts on it once and removes the annotation (--wait to see the result)\n");
            return out;
        }
        out.push_str("the operator acted on it and removed the annotation\n");
        let mut fields = Fields::new();
        match &self.rollout {
            Some(r) => {
                fields
                    .field("Rollout", format!("{} {}", r.revision, r.phase))
                    .field("Step", &r.step_description)
                    .field("Message", &r.message);
            }
            None => {
                fields.field("Rollout", "none");
            }
        }
        if let Some(r) = &self.rollback {
            fields.field(
                "Rollback",
                format!(
                    "revision {} ({}) serves in place of the spec's until the spec changes",
                    r.revision, r.storage_uri
                ),
            );
        }
        if let Some(message) = &self.ready_message {
            fields.field("Ready", message);
        }
        out.push_str(&fields.to_string());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isvc(status: serde_json::Value) -> InferenceService {
        serde_json::from_value(json!({
            "apiVersion": "serving.sluice.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {"model": {"storageUri": "file:///m/2/model.onnx"}},
            "status": status,
        }))
        .unwrap()
    }

    fn rollout(phase: &str) -> serde_json::Value {
        json!({"revision": "r2", "stable": "r1", "strategy": "Canary", "phase": phase, "step": 0,
               "stepEntered": "2026-11-30T10:02:11Z", "message": "m",
               "model": {"storageUri": "file:///m/2/model.onnx"}})
    }

    fn entry(revision: &str, uri: &str) -> serde_json::Value {
        json!({"revision": revision, "outcome": "Promoted", "reason": "r", "time": "2026-11-30T09:13:41Z",
               "model": {"storageUri": uri}})
    }

    #[test]
    fn the_patch_is_the_annotation_only() {
        assert_eq!(
            patch(Command::Promote),
            json!({"metadata": {"annotations": {"serving.sluice.dev/rollout": "promote"}}})
        );
    }

    #[test]
    fn expectations_follow_the_rollout() {
        let idle = isvc(json!({"rollout": rollout("Promoted")}));
        assert!(
            expectation(Command::Promote, &idle)
                .unwrap()
                .contains("no rollout is in progress")
        );
        let running = isvc(json!({"rollout": rollout("Progressing")}));
        assert_eq!(expectation(Command::Promote, &running), None);
        assert_eq!(expectation(Command::Pause, &running), None);
        assert!(
            expectation(Command::Resume, &running)
                .unwrap()
                .contains("not paused")
        );
        let paused = isvc(json!({"rollout": rollout("Paused")}));
        assert_eq!(expectation(Command::Resume, &paused), None);
        assert!(
            expectation(Command::Pause, &paused)
                .unwrap()
                .contains("already paused")
        );
    }

    #[test]
    fn a_rollback_names_its_target_or_why_there_is_none() {
        let two = isvc(json!({"stableRevision": "r2",
            "history": [entry("r1", "file:///m/1/model.onnx"), entry("r2", "file:///m/2/model.onnx")]}));
        assert!(
            expectation(Command::Rollback, &two)
                .unwrap()
                .starts_with("revision r1 (file:///m/1/model.onnx) serves again")
        );
        let one = isvc(
            json!({"stableRevision": "r1", "history": [entry("r1", "file:///m/1/model.onnx")]}),
        );
        assert!(
            expectation(Command::Rollback, &one)
                .unwrap()
                .starts_with("the operator will refuse it: no revision before r1")
        );
    }
}
