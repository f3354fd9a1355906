//! `kubectl sluice history NAME`: `status.history`, one row per finished
//! rollout, oldest first (as the operator keeps it).

use serde::{Deserialize, Serialize};
use sluice_operator::crd::InferenceService;

use crate::table::{Table, or_dash};
use crate::word;

/// The `history` document (`-o json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `status.stableRevision`, to tell which entry serves now.
    pub stable_revision: Option<String>,
    /// One entry per finished rollout, oldest first.
    pub entries: Vec<HistoryRow>,
}

/// One finished rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRow {
    /// The revision rolled out.
    pub revision: String,
    /// `Promoted`, `RolledBack` or `Aborted`.
    pub outcome: String,
    /// Why it ended.
    pub reason: String,
    /// When it ended (RFC 3339).
    pub time: String,
    /// The model's `storageUri`.
    pub storage_uri: String,
    /// The model's version label.
    pub version: Option<String>,
    /// The model's expected SHA-256.
    pub sha256: Option<String>,
}

impl HistoryView {
    /// The view of `isvc`'s `status.history`.
    pub fn new(isvc: &InferenceService) -> Self {
        let status = isvc.status.clone().unwrap_or_default();
        Self {
            name: isvc.metadata.name.clone().unwrap_or_default(),
            namespace: isvc.metadata.namespace.clone().unwrap_or_default(),
            stable_revision: status.stable_revision.clone(),
            entries: status
                .history
                .iter()
                .map(|e| HistoryRow {
                    revision: e.revision.clone(),
                    outcome: word(&e.outcome),
                    reason: e.reason.clone(),
                    time: e.time.0.to_string(),
                    storage_uri: e.model.storage_uri.clone(),
                    version: e.model.version.clone(),
                    sha256: e.model.sha256.clone(),
                })
                .collect(),
        }
    }

    /// The table; the reason comes last, since it is the longest. The stable
    /// revision's newest entry is marked `*`.
    pub fn render(&self) -> String {
        if self.entries.is_empty() {
            return format!(
                "no finished rollout recorded for {}/{} yet\n",
                self.namespace, self.name
            );
        }
        let newest_stable = self
            .entries
            .iter()
            .rposition(|e| Some(&e.revision) == self.stable_revision.as_ref());
        let mut table = Table::new(["REVISION", "OUTCOME", "TIME", "MODEL", "VERSION", "REASON"]);
        for (i, e) in self.entries.iter().enumerate() {
            let revision = if Some(i) == newest_stable {
                format!("{}*", e.revision)
            } else {
                e.revision.clone()
            };
            table.row([
                revision,
                e.outcome.clone(),
                e.time.clone(),
                e.storage_uri.clone(),
                or_dash(e.version.as_deref()),
                e.reason.clone(),
            ]);
        }
        let mut out = table.to_string();
        if newest_stable.is_some() {
            out.push_str("* stable: serves now\n");
        }
        out
    }
}
