//! Manual control through the `serving.sluice.dev/rollout` annotation. The operator
//! acts on the value once and removes the annotation.

use std::fmt;

use crate::crd::rollout::{HistoryEntry, RolloutPhase};

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
    /// Put the previous stable revision's model and runtime back into the spec,
    /// which starts a rollout to it.
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
