//! One reconcile of one InferenceService, as a pipeline whose steps are modules:
//!
//! ```text
//! dereference -> validate -> decide -> build -> apply -> update_status
//! ```
//!
//! - [`dereference`] makes every read: the InferenceService (fresh), what it owns,
//!   and Prometheus (autoscaling signals, a due rollout analysis).
//! - [`validate`] checks what the schema cannot and returns a typed [`Validated`].
//! - [`decide`] (pure) runs the autoscaler and the rollout state machine.
//! - [`crate::build`] (pure) turns the spec and the plan into objects.
//! - [`apply`] writes what differs; [`command`] acts on manual commands.
//! - [`update_status`] writes the status ([`crate::status::compute`], pure) when it
//!   changed.
//!
//! A reconcile that finds nothing to change writes no object: applied objects carry
//! the hash of what was applied, and Events mark transitions only. Status is
//! written when it differs, which includes the autoscaler's figures (see
//! docs/operator.md).

pub mod apply;
pub mod cleanup;
pub mod command;
pub mod context;
pub mod decide;
pub mod dereference;
pub mod events;
pub mod update_status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};

use crate::autoscale;
use crate::build::build;
use crate::crd::InferenceService;
use crate::drift;
use crate::rollout::control::Command;
use crate::status::{Outcome, RolloutView};
use crate::{Error, Result};
use apply::apply;
pub use context::{Context, FIELD_MANAGER, FINALIZER};
use decide::{Plan, decide};
use dereference::{Objects, dereference};
use events::{announce, publish};
use update_status::update_status;
use validate::{Requested, Validated, validate};

/// How soon to look again at an InferenceService that is not Ready yet.
const NOT_READY_REQUEUE: Duration = Duration::from_secs(30);

/// Reconciles one InferenceService, behind the cleanup finalizer.
pub async fn reconcile(isvc: Arc<InferenceService>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let _timer = ctx.metrics.duration.start_timer();
    let namespace = dereference::namespace(&isvc)?;
    let api: Api<InferenceService> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, isvc, |event| async {
        match event {
            Finalized::Apply(isvc) => serve(&isvc, &ctx).await,
            Finalized::Cleanup(isvc) => cleanup::cleanup(&isvc, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The pipeline, for an InferenceService that is not being deleted.
async fn serve(cached: &InferenceService, ctx: &Context) -> Result<Action> {
    let now = Timestamp::now();
    let Some(observed) = dereference(cached, ctx, now).await? else {
        return Ok(Action::await_change());
    };
    let isvc = &observed.isvc;
    let valid = match validate(isvc, &ctx.config) {
        Ok(valid) => valid,
        Err(invalid) => {
            refuse(
                isvc,
                "InvalidSpec",
                invalid.to_string(),
                &observed.objects,
                ctx,
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    match &valid.command {
        Requested::Invalid(message) => {
            publish(
                ctx,
                isvc,
                EventType::Warning,
                "InvalidCommand",
                message.clone(),
            )
            .await;
            command::clear(&valid, ctx).await?;
        }
        Requested::Command(Command::Rollback) => {
            command::rollback(&valid, ctx).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Requested::Command(_) | Requested::Nothing => {}
    }
    let plan = decide(&valid, &observed, now);
    let desired = build(isvc, &ctx.config, &plan.layout)?;
    let retraining = plan
        .drift
        .as_ref()
        .and_then(|d| d.launch.as_ref())
        .map(|launch| drift::job::build(isvc, launch))
        .transpose()
        .map_err(Error::JobTemplate)?;
    let written = async {
        apply(&valid, &desired, &plan.rollout, &observed.objects, ctx).await?;
        match &retraining {
            Some(job) => apply::create_job(job, ctx).await,
            None => Ok(()),
        }
    };
    if let Err(error) = written.await {
        // The apply error is what matters; a status write failing too adds nothing.
        let _ = refuse(
            isvc,
            "ApplyFailed",
            error.to_string(),
            &observed.objects,
            ctx,
        )
        .await;
        return Err(error);
    }
    if valid.command.command().is_some() {
        command::clear(&valid, ctx).await?;
    }
    announce(ctx, &valid, &plan, observed.objects.running()).await;
    let requeue = plan.rollout.requeue;
    let outcome = applied(
        desired.revision,
        desired.url,
        plan,
        ctx.prometheus.is_some(),
    );
    let ready = update_status(isvc, &outcome, &observed.objects, ctx).await?;
    let mut look = next_look(&valid, requeue, ready, ctx);
    // Endpoints that only kube-proxy has yet to route: look again soon.
    if let Some(soon) = observed.objects.endpoints.look_again_in(Timestamp::now())
        && !ready
    {
        look = look.min(soon + Duration::from_millis(50));
    }
    Ok(Action::requeue(look))
}

/// Records in status why the objects could not be applied.
async fn refuse(
    isvc: &InferenceService,
    reason: &'static str,
    message: String,
    objects: &Objects,
    ctx: &Context,
) -> Result<bool> {
    update_status(isvc, &Outcome::Refused { reason, message }, objects, ctx).await
}

/// The outcome of an applied plan, for status.
fn applied(revision: String, url: String, plan: Plan, measured: bool) -> Outcome {
    Outcome::Applied {
        revision,
        url,
        rollout: Box::new(RolloutView {
            stable: plan.rollout.stable,
            rollout: plan.rollout.rollout,
            canary_weight: plan.rollout.canary_weight,
            history: plan.rollout.history,
        }),
        autoscaling: plan.scale,
        measured,
        drift: plan.drift.map(|d| Box::new((d.status, d.verdict))),
    }
}

/// When to reconcile again: when the rollout asks, sooner while not Ready, at the
/// autoscaling interval while the operator scales, and at the drift check's
/// interval while it monitors (metrics change without any object changing).
fn next_look(valid: &Validated, rollout: Duration, ready: bool, ctx: &Context) -> Duration {
    let settled = if ready {
        rollout
    } else {
        rollout.min(NOT_READY_REQUEUE)
    };
    let drift_check = valid
        .isvc
        .spec
        .monitoring
        .as_ref()
        .filter(|_| ctx.prometheus.is_some())
        .map(|m| Duration::from_secs(m.drift().check_seconds.into()));
    [
        autoscale::requeue_after(valid.isvc, ctx.prometheus.is_some()),
        drift_check,
    ]
    .into_iter()
    .flatten()
    .fold(settled, Duration::min)
}
