//! Rollouts: a new revision replaces the stable one by canary steps or blue-green,
//! decided by analysis against Prometheus.
//!
//! The `spec.rollout` and `status.rollout` types live with the CRD
//! ([`crate::crd::rollout`]).
//!
//! - [`machine`]: the pure state machine (spec, observed state, analysis -> next
//!   state and actions), persisted in `status.rollout` so a restarted operator resumes.
//! - [`analysis`]: the PromQL of every check and how values become verdicts (pure).
//! - [`agreement`]: the prediction-agreement check's queries and statistics (pure).
//! - [`comparison`]: the ranges such checks compare the two revisions over (pure).
//! - [`quality`]: the quality check from ground-truth feedback (pure).
//! - [`prometheus`]: the thin layer that runs those queries.
//! - [`traffic`]: replica counts per revision and HTTPRoute weights (pure).
//! - [`control`]: the `serving.sluice.dev/rollout` annotation (manual control).

pub mod agreement;
pub mod analysis;
pub mod comparison;
pub mod control;
pub mod machine;
pub mod prometheus;
pub mod quality;
pub mod traffic;
