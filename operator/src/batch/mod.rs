//! BatchInference: a model run over files by `sluice-server batch`, once or on
//! a schedule, reconciled by a second controller in the operator process with
//! the same pipeline as InferenceService ([`reconcile`]):
//!
//! ```text
//! dereference -> validate -> decide -> build -> apply -> update_status
//! ```
//!
//! [`validate`], [`decide`], [`build`], [`observe`], [`summary`] and
//! [`status`] are pure; only [`reconcile`]'s `dereference`, `apply` and
//! `update_status` talk to the API server.

pub mod build;
pub mod cron;
pub mod decide;
pub mod observe;
pub mod reconcile;
pub mod status;
pub mod summary;
pub mod validate;
