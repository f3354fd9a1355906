//! One reconcile of one BatchInference, as a pipeline whose steps are modules
//! (the pure ones are [`crate::batch`]'s):
//!
//! ```text
//! dereference -> validate -> decide -> build -> apply -> update_status
//! ```
//!
//! No finalizer: what it makes (the CronJob, the runs' Jobs and their pods) is
//! owned by the BatchInference, so the garbage collector removes it with it.

pub mod apply;
pub mod dereference;
pub mod update_status;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;

use crate::Result;
use crate::batch::build::build;
use crate::batch::decide::decide;
use crate::batch::status::Outcome;
use crate::batch::validate::validate;
use crate::crd::BatchInference;
use crate::reconcile::Context;
use apply::apply;
use dereference::dereference;
use update_status::update_status;

/// How soon to look again while no run can be made (the InferenceService's
/// watch usually triggers sooner).
const BLOCKED_REQUEUE: Duration = Duration::from_secs(60);
/// How soon to look again otherwise: the Jobs, pods, CronJob and
/// InferenceServices are watched, so this is only a safety net.
const REQUEUE: Duration = Duration::from_secs(600);

/// Reconciles one BatchInference.
pub async fn reconcile(cached: Arc<BatchInference>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let _timer = ctx.metrics.duration.start_timer();
    let Some((batch, observed)) = dereference(&cached, &ctx).await? else {
        return Ok(Action::await_change());
    };
    let valid = match validate(&batch, observed.inference_service.as_ref()) {
        Ok(valid) => valid,
        Err(invalid) => {
            let refused = Outcome::Refused {
                reason: invalid.reason(),
                message: invalid.to_string(),
            };
            update_status(&batch, &refused, &observed, &ctx).await?;
            return Ok(Action::await_change());
        }
    };
    let plan = decide(&valid, &observed);
    let desired = match valid.model.model() {
        Some(model) if plan.create_run || plan.apply_cron_job => {
            Some(build(&valid, model, &ctx.config)?)
        }
        _ => None,
    };
    if let Err(error) = apply(&valid, &plan, desired.as_ref(), &observed, &ctx).await {
        // The apply error is what matters; a status write failing too adds nothing.
        let refused = Outcome::Refused {
            reason: "ApplyFailed",
            message: error.to_string(),
        };
        let _ = update_status(&batch, &refused, &observed, &ctx).await;
        return Err(error);
    }
    let outcome = Outcome::Applied {
        model: valid.model.model().map(|m| m.model.storage_uri.clone()),
        created: plan.create_run.then(|| valid.run.clone()),
        waiting: plan.waiting.clone(),
        blocked: plan.blocked.clone(),
    };
    update_status(&batch, &outcome, &observed, &ctx).await?;
    Ok(Action::requeue(if plan.blocked.is_some() {
        BLOCKED_REQUEUE
    } else {
        REQUEUE
    }))
}
