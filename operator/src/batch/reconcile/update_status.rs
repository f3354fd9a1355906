//! The `update_status` step of a BatchInference: computes the status
//! ([`crate::batch::status::compute`], pure) and writes it only when it
//! changed, with an Event per transition (a run started or ended, a
//! condition changed, suspended or resumed).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use crate::Result;
use crate::batch::decide::Observed;
use crate::batch::status::{self, Outcome};
use crate::crd::{BatchInference, BatchInferenceStatus};
use crate::reconcile::Context;
use crate::reconcile::events::publish_fact;
use crate::reconcile::update_status::write_status;

/// Writes the status `outcome` and `observed` give when it differs from the
/// one `batch` has, and returns it.
pub async fn update_status(
    batch: &BatchInference,
    outcome: &Outcome,
    observed: &Observed,
    ctx: &Context,
) -> Result<BatchInferenceStatus> {
    let new = status::compute(
        batch,
        outcome,
        &observed.jobs,
        &observed.pods,
        Time(Timestamp::now()),
    );
    if batch.status.as_ref() == Some(&new) {
        return Ok(new);
    }
    write_status(batch, &new, ctx).await?;
    for (warning, reason, message) in status::transitions(batch.status.as_ref(), &new) {
        let type_ = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish_fact(ctx, batch, type_, &reason, message).await;
    }
    Ok(new)
}
