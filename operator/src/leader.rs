//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica of the
//! operator reconciles while the others stand by.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::Result;

/// A Lease held by one identity at a time.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a holder that stops renewing keeps the Lease.
    pub duration: Duration,
}

impl LeaseLock {
    /// A lock on Lease `namespace/name` for `identity`, held for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    /// Acquires the Lease if it is free or expired, or renews it if held; returns
    /// whether this identity holds it now. Conflicting writers lose on the Lease's
    /// resourceVersion, never both win.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let seconds = self.duration.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return Ok(conflict_is_false(
                self.api.create(&PostParams::default(), &lease).await,
            )?);
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let held = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(seconds),
            ));
            t.0 + held < now
        });
        match holder {
            Some(h) if h == self.identity => {}
            Some(_) if !expired => return Ok(false),
            _ => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        Ok(conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )?)
    }

    /// Gives the Lease up at shutdown so that a standby takes over at once.
    pub async fn release(&self) -> Result<()> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await?
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            conflict_is_false(
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await,
            )?;
        }
        Ok(())
    }
}

/// `Ok(true)` on success, `Ok(false)` when another writer won (409 Conflict or
/// AlreadyExists), the error otherwise.
fn conflict_is_false(result: kube::Result<Lease>) -> kube::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
