//! Token buckets per client identity and per model, and a limit on requests in
//! flight per client. Each key has one entry: a GCRA cell (one atomic) and, for
//! clients, the count of requests in flight; a request looks its client and its
//! model up once each and allocates nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::error::Denial;

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

    /// Nanoseconds between two tokens, at least 1.
    fn interval_nanos(self) -> u64 {
        ((1e9 / self.per_second).round() as u64).max(1)
    }
}

/// The hasher of the per-key maps. Their keys are principal ids (a key's name,
/// a verified token's subject or a peer address) and model names from request
/// paths, which a caller can choose. foldhash is "minimally DoS-resistant": each
/// map gets its own random seed, so colliding keys cannot be prepared in advance;
/// it makes no stronger claim, and the entries of idle keys are forgotten.
type KeyHasher = foldhash::fast::RandomState;

/// A token bucket as the generic cell rate algorithm (GCRA): the bucket is one
/// number, the theoretical arrival time (TAT) of the next request, in
/// nanoseconds since the limits' origin. A request at `now` passes when
/// `TAT - now` is within the burst's tolerance, and moves the TAT one interval
/// on from `max(TAT, now)`. The bucket is full again once `TAT <= now`.
///
/// This is the algorithm `governor` implements; it is written out here because
/// governor's keyed limiter keeps its own map and needs an owned key for each
/// lookup, so a request paid for three lookups, an allocation and a removal
/// instead of one lookup per key (measured by `make bench-security`).
#[derive(Debug, Default)]
struct Cell {
    tat: AtomicU64,
}

/// A configured rate in the units the cell works in.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    rate: Rate,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of `now` the TAT may be for a request to pass: the burst
    /// less one, in intervals (a full bucket has its TAT at or before `now`).
    tolerance: u64,
}

impl Gcra {
    fn new(rate: Rate) -> Gcra {
        let interval = rate.interval_nanos();
        Gcra {
            rate,
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst - 1)),
        }
    }

    /// The cell's new TAT if a request at `now` passes, or how many nanoseconds
    /// until one would.
    fn decide(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let earliest = tat.saturating_sub(self.tolerance);
        if now < earliest {
            return Err(earliest - now);
        }
        Ok(tat.max(now).saturating_add(self.interval))
    }

    /// Takes a token from `cell` at `now`, or says how long until there is one.
    fn take(&self, cell: &Cell, now: u64) -> Result<(), Duration> {
        let mut tat = cell.tat.load(Ordering::Acquire);
        loop {
            let next = self.decide(tat, now).map_err(Duration::from_nanos)?;
            match cell
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// The denial for an empty bucket of `what`.
    fn refuse(&self, what: String, retry_after: Duration) -> Denial {
        Denial::RateLimited {
            what: format!(
                "{what} is limited to {} requests/s (burst {})",
                self.rate.per_second, self.rate.burst
            ),
            retry_after,
        }
    }
}

/// What is kept per client: its bucket and its requests in flight.
#[derive(Debug, Default)]
struct ClientState {
    bucket: Cell,
    in_flight: AtomicUsize,
}

/// Every rate and concurrency limit.
pub struct RateLimits {
    origin: Instant,
    client_rate: Option<Gcra>,
    model_rate: Option<Gcra>,
    max_in_flight: Option<usize>,
    clients: DashMap<Arc<str>, Arc<ClientState>, KeyHasher>,
    models: DashMap<Arc<str>, Cell, KeyHasher>,
}

/// A request's place among its client's requests in flight; freed on drop.
pub struct Permit {
    slot: Option<Arc<ClientState>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(client) = &self.slot {
            client.in_flight.fetch_sub(1, Ordering::AcqRel);
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
            origin: Instant::now(),
            client_rate: client.map(Gcra::new),
            model_rate: model.map(Gcra::new),
            max_in_flight: concurrency,
            clients: DashMap::default(),
            models: DashMap::default(),
        }
    }

    /// Whether any limit is configured.
    pub fn is_active(&self) -> bool {
        self.client_rate.is_some() || self.model_rate.is_some() || self.max_in_flight.is_some()
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a concurrency slot for `client`, then a token from its bucket and
    /// from `model`'s.
    pub fn admit(&self, client: &Arc<str>, model: Option<&str>) -> Result<Permit, Denial> {
        let mut permit = Permit { slot: None };
        if !self.is_active() {
            return Ok(permit);
        }
        let now = self.now();
        if self.client_rate.is_some() || self.max_in_flight.is_some() {
            let state = self.client_state(client);
            if let Some(limit) = self.max_in_flight {
                if state.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
                    state.in_flight.fetch_sub(1, Ordering::AcqRel);
                    return Err(Denial::TooManyInFlight {
                        client: Arc::clone(client),
                        limit,
                    });
                }
                permit.slot = Some(Arc::clone(&state));
            }
            if let Some(gcra) = &self.client_rate {
                gcra.take(&state.bucket, now)
                    .map_err(|wait| gcra.refuse(format!("client '{client}'"), wait))?;
            }
        }
        if let (Some(gcra), Some(model)) = (&self.model_rate, model) {
            let taken = match self.models.get(model) {
                Some(cell) => gcra.take(&cell, now),
                None => gcra.take(&self.models.entry(model.into()).or_default(), now),
            };
            taken.map_err(|wait| gcra.refuse(format!("model '{model}'"), wait))?;
        }
        Ok(permit)
    }

    /// The state of `client`, created on its first request.
    fn client_state(&self, client: &Arc<str>) -> Arc<ClientState> {
        if let Some(state) = self.clients.get(&**client) {
            return Arc::clone(&state);
        }
        Arc::clone(&self.clients.entry(Arc::clone(client)).or_default())
    }

    /// Forgets the keys whose buckets are full again and that have nothing in
    /// flight: a fresh entry for them would behave the same.
    pub fn forget_idle(&self) {
        let now = self.now();
        let full = |cell: &Cell| cell.tat.load(Ordering::Acquire) <= now;
        // A permit or a request between lookup and check holds a clone.
        self.clients
            .retain(|_, state| Arc::strong_count(state) > 1 || !full(&state.bucket));
        self.models.retain(|_, cell| !full(cell));
        self.clients.shrink_to_fit();
        self.models.shrink_to_fit();
    }

    /// How many clients and models have an entry.
    #[cfg(test)]
    fn entries(&self) -> (usize, usize) {
        (self.clients.len(), self.models.len())
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
    fn the_cell_passes_a_burst_then_one_request_per_interval() {
        // 10 requests/s (an interval of 100 ms), burst 3.
        let gcra = Gcra::new(Rate::new(10.0, 3).unwrap());
        let ms = |n: u64| n * 1_000_000;
        let cell = Cell::default();
        let start = ms(1000);
        for _ in 0..3 {
            assert_eq!(gcra.take(&cell, start), Ok(()));
        }
        assert_eq!(gcra.take(&cell, start), Err(Duration::from_millis(100)));
        assert_eq!(
            gcra.take(&cell, start + ms(40)),
            Err(Duration::from_millis(60))
        );
        assert_eq!(gcra.take(&cell, start + ms(100)), Ok(()));
        assert_eq!(
            gcra.take(&cell, start + ms(100)),
            Err(Duration::from_millis(100))
        );
        // After a quiet period the TAT lies in the past: a full burst again.
        let later = start + ms(10_000);
        assert!(cell.tat.load(Ordering::Relaxed) <= later);
        for _ in 0..3 {
            assert_eq!(gcra.take(&cell, later), Ok(()));
        }
        assert!(gcra.take(&cell, later).is_err());
    }

    #[test]
    fn idle_keys_are_forgotten_once_full_and_not_in_flight() {
        let limits = RateLimits::new(
            Some(Rate::new(10.0, 1).unwrap()),
            Some(Rate::new(10.0, 1).unwrap()),
            Some(4),
        );
        let held = limits.admit(&"busy".into(), Some("m")).unwrap();
        drop(limits.admit(&"done".into(), Some("n")).unwrap());
        limits.forget_idle();
        assert_eq!(limits.entries(), (2, 2), "buckets just used are not full");
        // One token takes 100 ms to come back.
        std::thread::sleep(Duration::from_millis(150));
        limits.forget_idle();
        assert_eq!(limits.entries(), (1, 0), "only the client in flight stays");
        drop(held);
        limits.forget_idle();
        assert_eq!(limits.entries(), (0, 0));
        assert!(limits.admit(&"busy".into(), Some("m")).is_ok());
    }

    #[test]
    fn rates_must_be_positive() {
        assert!(Rate::new(0.0, 1).is_err());
        assert!(Rate::new(f64::NAN, 1).is_err());
        assert!(Rate::new(1.0, 0).is_err());
    }
}
