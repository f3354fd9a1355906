//! What every reconcile shares: clients, defaults, Event publishing, metrics.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

use crate::config::{BuildConfig, WatchScope};
use crate::metrics::Metrics;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sluice-operator";
/// Finalizer that deletes an InferenceService's objects before it goes away.
pub const FINALIZER: &str = "serving.sluice.dev/cleanup";
/// What every reconcile shares.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Defaults for built objects.
    pub config: BuildConfig,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Who publishes: rollout Events are created under names of their own (one
    /// per transition, see `events::transition_event_name`) and scale Events
    /// through a fresh Recorder each, because a shared one folds Events of one
    /// reason into a series that keeps the first message, and every analysis
    /// must say its own values.
    pub reporter: Reporter,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Prometheus, for rollout analysis and the autoscaler; without it rollouts
    /// hold at their first analysis (never promote) until promoted by hand, the
    /// replica count stays at `minReplicas`, and status says so.
    pub prometheus: Option<prometheus_http_query::Client>,
    /// The namespaces reconciled; in a namespace-scoped install no ServingPolicy
    /// is read.
    pub scope: WatchScope,
}
