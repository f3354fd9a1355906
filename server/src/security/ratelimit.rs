//! Token buckets per client identity and per model (GCRA, from `governor`:
//! one atomic per key, no lock), and a limit on requests in flight per client.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::Denial;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// Checks the figures: a positive finite rate and a burst of at least 1.
    pub fn new(per_second: f64, burst: u32) -> Result<Rate, String> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!(
                "a rate must be a positive number of requests per second, not {per_second}"
            ));
        }
        if burst == 0 {
            return Err("a burst must be at least 1".to_string());
        }
        Ok(Rate { per_second, burst })
    }

    fn quota(self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .expect("the period is positive")
            .allow_burst(NonZeroU32::new(self.burst).expect("burst checked at least 1"))
    }
}

/// The hasher of the per-key maps. Their keys are principal ids (a key's name,
/// a verified token's subject or a peer address) and model names from request
/// paths, which a caller can choose. foldhash is "minimally DoS-resistant": each
/// map gets its own random seed, so colliding keys cannot be prepared in advance;
/// it makes no stronger claim, and the buckets of idle keys are forgotten.
type KeyHasher = foldhash::fast::RandomState;

struct Bucket {
    rate: Rate,
    limiter: RateLimiter<Arc<str>, DefaultKeyedStateStore<Arc<str>, KeyHasher>, DefaultClock>,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        Bucket {
            rate,
            limiter: RateLimiter::dashmap_with_hasher(rate.quota(), KeyHasher::default()),
        }
    }

    fn take(&self, key: &Arc<str>, what: impl FnOnce() -> String) -> Result<(), Denial> {
        self.limiter.check_key(key).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(self.limiter.clock().now());
            Denial::RateLimited {
                what: format!(
                    "{} is limited to {} requests/s (burst {})",
                    what(),
                    self.rate.per_second,
                    self.rate.burst
                ),
                retry_after,
            }
        })
    }
}

/// Every rate and concurrency limit.
pub struct RateLimits {
    client: Option<Bucket>,
    model: Option<Bucket>,
    concurrency: Option<(usize, Arc<InFlight>)>,
}

/// Requests in flight per client.
type InFlight = DashMap<Arc<str>, usize, KeyHasher>;

/// A request's place among its client's requests in flight; freed on drop.
pub struct Permit {
    slot: Option<(Arc<InFlight>, Arc<str>)>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((in_flight, client)) = self.slot.take() {
            in_flight.remove_if_mut(&client, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

impl RateLimits {
    /// Limits as configured; `None` turns one off.
    pub fn new(
        client: Option<Rate>,
        model: Option<Rate>,
        concurrency: Option<usize>,
    ) -> RateLimits {
        RateLimits {
            client: client.map(Bucket::new),
            model: model.map(Bucket::new),
            concurrency: concurrency.map(|limit| (limit, Arc::new(DashMap::default()))),
        }
    }

    /// Whether any limit is configured.
    pub fn is_active(&self) -> bool {
        self.client.is_some() || self.model.is_some() || self.concurrency.is_some()
    }

    /// Takes a concurrency slot for `client`, then a token from its bucket and
    /// from `model`'s.
    pub fn admit(&self, client: &Arc<str>, model: Option<&str>) -> Result<Permit, Denial> {
        let permit = match &self.concurrency {
            Some((limit, in_flight)) => {
                let mut count = in_flight.entry(Arc::clone(client)).or_insert(0);
                if *count >= *limit {
                    return Err(Denial::TooManyInFlight {
                        client: Arc::clone(client),
                        limit: *limit,
                    });
                }
                *count += 1;
                Permit {
                    slot: Some((Arc::clone(in_flight), Arc::clone(client))),
                }
            }
            None => Permit { slot: None },
        };
        if let Some(bucket) = &self.client {
            bucket.take(client, || format!("client '{client}'"))?;
        }
        if let (Some(bucket), Some(model)) = (&self.model, model) {
            bucket.take(&Arc::from(model), || format!("model '{model}'"))?;
        }
        Ok(permit)
    }

    /// Drops the buckets of keys that have been idle long enough to be full again.
    pub fn forget_idle(&self) {
        for bucket in [&self.client, &self.model].into_iter().flatten() {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_bucket_refuses_with_a_wait() {
        let limits = RateLimits::new(Some(Rate::new(1.0, 3).unwrap()), None, None);
        let client: Arc<str> = "key:a".into();
        for _ in 0..3 {
            drop(limits.admit(&client, None).unwrap());
        }
        let Err(Denial::RateLimited { what, retry_after }) = limits.admit(&client, None) else {
            panic!("the fourth request passed");
        };
        assert!(
            what.contains("client 'key:a' is limited to 1 requests/s (burst 3)"),
            "{what}"
        );
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
        assert!(
            limits.admit(&"key:b".into(), None).is_ok(),
            "buckets are per client"
        );
    }

    #[test]
    fn model_buckets_are_shared_by_all_clients() {
        let limits = RateLimits::new(None, Some(Rate::new(1.0, 2).unwrap()), None);
        assert!(limits.admit(&"a".into(), Some("m")).is_ok());
        assert!(limits.admit(&"b".into(), Some("m")).is_ok());
        assert!(limits.admit(&"c".into(), Some("m")).is_err());
        assert!(limits.admit(&"c".into(), Some("n")).is_ok());
    }

    #[test]
    fn concurrency_slots_are_freed_on_drop() {
        let limits = RateLimits::new(None, None, Some(2));
        let client: Arc<str> = "a".into();
        let first = limits.admit(&client, None).unwrap();
        let _second = limits.admit(&client, None).unwrap();
        assert!(matches!(
            limits.admit(&client, None),
            Err(Denial::TooManyInFlight { limit: 2, .. })
        ));
        drop(first);
        assert!(limits.admit(&client, None).is_ok());
    }

    #[test]
    fn rates_must_be_positive() {
        assert!(Rate::new(0.0, 1).is_err());
        assert!(Rate::new(f64::NAN, 1).is_err());
        assert!(Rate::new(1.0, 0).is_err());
    }
}
