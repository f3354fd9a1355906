//! Closing the loop: Monitor -> Detect drift -> Retrain.
//!
//! The operator reads the stable revision's drift from Prometheus (the series
//! `sluice-server` exports against the profile of `spec.monitoring`), sets the
//! `InputDrift` condition naming the drifting features, tests and values, and,
//! with `spec.monitoring.onDrift`, runs the user's retraining Job at most once per
//! drift episode and cooldown.
//!
//! - [`prometheus`] writes the queries and reads them (I/O, called by `dereference`).
//! - [`decision`] (pure) judges the reading against the thresholds, tracks the
//!   episode and decides whether a Job starts.
//! - [`job`] (pure) checks the Job template and builds the Job.

pub mod decision;
pub mod job;
pub mod prometheus;
