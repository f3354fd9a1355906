//! Sluice's operator: reconciles `InferenceService` resources into Deployments
//! running `sluice-server` (one per revision; DaemonSets for one pod per node),
//! Services, a PodDisruptionBudget and a NetworkPolicy, rolls new revisions out by
//! canary or blue-green from Prometheus analysis, autoscales, and reports what it
//! sees in the resource's status and in Kubernetes Events. A second controller
//! in the same process runs `BatchInference` resources ([`batch`]): a model over
//! files, once or on a schedule, as Indexed Jobs of `sluice-server batch`.
//!
//! The reconcile pipeline is `dereference -> validate -> decide -> build -> apply ->
//! update_status` ([`reconcile`], one module per step); only its ends talk to the
//! API server or Prometheus, and `validate`, `decide`, [`build::build`] and
//! [`status::compute`] are pure functions. `tests/module_graph.rs` keeps the module
//! graph acyclic and the pure steps free of I/O.

pub mod autoscale;
pub mod batch;
pub mod build;
pub mod config;
pub mod controller;
pub mod crd;
pub mod drift;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod optimization;
pub mod policy;
pub mod prometheus;
pub mod reconcile;
pub mod resources;
pub mod rollout;
pub mod run;
pub mod security;
pub mod status;
pub mod telemetry;
pub mod workload;

pub use error::{Error, Result};
