//! Sluice's operator: reconciles `InferenceService` resources into a Deployment
//! running `sluice-server`, a Service and a PodDisruptionBudget, and reports what
//! it sees in the resource's status and in Kubernetes Events.
//!
//! The reconcile pipeline is `dereference -> validate -> build -> apply ->
//! update_status` ([`reconcile`]); only its ends talk to the API server, and
//! [`build::build`] and [`status::compute`] are pure functions.

pub mod autoscale;
pub mod build;
pub mod config;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod prometheus;
pub mod reconcile;
pub mod resources;
pub mod rollout;
pub mod run;
pub mod security;
pub mod status;
pub mod telemetry;

pub use error::{Error, Result};
