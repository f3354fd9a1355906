//! A per-model circuit breaker. Closed, it counts consecutive failures and
//! timeouts; at the threshold it opens and refuses calls (the fallback answers,
//! or the client gets a fast 503) for `open_ms`; then it half-opens and lets a
//! few probe requests through. A probe's success closes it, a probe's failure
//! opens it again.
//!
//! Time is passed in, so the state machine is tested without sleeping.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use crate::config::resilience::CircuitBreakerConfig;

/// The breaker's state as the `sluice_circuit_breaker_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go to the model (gauge 0).
    Closed,
    /// Probe calls test the model (gauge 1).
    HalfOpen,
    /// Calls are refused (gauge 2).
    Open,
}

impl CircuitState {
    fn gauge_value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probes: u32 },
}

impl Phase {
    fn state(self) -> CircuitState {
        match self {
            Phase::Closed { .. } => CircuitState::Closed,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

/// The series a breaker keeps up to date.
#[derive(Clone)]
pub struct CircuitMetrics {
    /// `sluice_circuit_breaker_state`: 0 closed, 1 half-open, 2 open.
    pub state: IntGauge,
    /// `sluice_circuit_breaker_opens_total`.
    pub opens: IntCounter,
}

/// One model version's circuit breaker.
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    phase: Mutex<Phase>,
    metrics: CircuitMetrics,
}

/// What [`CircuitBreaker::admit`] decides for one call.
pub enum Admission<'a> {
    /// Call the model, then report how it went on the attempt.
    Call(Attempt<'a>),
    /// Do not call the model; it may be tried again after this long.
    Refused {
        /// Until the circuit half-opens (zero while probes are in flight).
        retry_after: Duration,
    },
}

/// A call the breaker let through. Report its outcome with
/// [`Attempt::succeeded`] or [`Attempt::failed`]; dropping it unreported
/// (the caller gave up, or the request was refused for its own fault) leaves
/// the count as it was.
pub struct Attempt<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    settled: bool,
}

impl<'a> Attempt<'a> {
    /// The model answered.
    pub fn succeeded(mut self, now: Instant) {
        self.settled = true;
        self.breaker.settle(self.probe, true, now);
    }

    /// The model failed or timed out.
    pub fn failed(mut self, now: Instant) {
        self.settled = true;
        self.breaker.settle(self.probe, false, now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.release_probe();
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig, metrics: CircuitMetrics) -> CircuitBreaker {
        metrics.state.set(CircuitState::Closed.gauge_value());
        CircuitBreaker {
            config,
            phase: Mutex::new(Phase::Closed { failures: 0 }),
            metrics,
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.locked().state()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Decides whether a call may go to the model now.
    pub fn admit(&self, now: Instant) -> Admission<'_> {
        let mut phase = self.locked();
        let probe = match *phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } if now < until => {
                return Admission::Refused {
                    retry_after: until - now,
                };
            }
            Phase::Open { .. } => {
                self.enter(&mut phase, Phase::HalfOpen { probes: 1 });
                true
            }
            Phase::HalfOpen { probes } if probes < self.config.half_open_probes => {
                *phase = Phase::HalfOpen { probes: probes + 1 };
                true
            }
            Phase::HalfOpen { .. } => {
                return Admission::Refused {
                    retry_after: Duration::ZERO,
                };
            }
        };
        Admission::Call(Attempt {
            breaker: self,
            probe,
            settled: false,
        })
    }

    fn settle(&self, probe: bool, success: bool, now: Instant) {
        let mut phase = self.locked();
        let open = Phase::Open {
            until: now + Duration::from_millis(self.config.open_ms),
        };
        match (*phase, probe, success) {
            (Phase::Closed { .. }, _, true) => *phase = Phase::Closed { failures: 0 },
            (Phase::Closed { failures }, _, false) => {
                let failures = failures + 1;
                if failures >= self.config.failure_threshold {
                    self.enter(&mut phase, open);
                } else {
                    *phase = Phase::Closed { failures };
                }
            }
            (Phase::HalfOpen { .. }, true, true) => {
                self.enter(&mut phase, Phase::Closed { failures: 0 })
            }
            (Phase::HalfOpen { .. }, true, false) => self.enter(&mut phase, open),
            // Calls admitted before the circuit opened, and probes that finish
            // after another probe decided, say nothing about the model now.
            (Phase::HalfOpen { .. } | Phase::Open { .. }, _, _) => {}
        }
    }

    fn release_probe(&self) {
        let mut phase = self.locked();
        if let Phase::HalfOpen { probes } = *phase {
            *phase = Phase::HalfOpen {
                probes: probes.saturating_sub(1),
            };
        }
    }

    fn enter(&self, phase: &mut Phase, next: Phase) {
        if matches!(next, Phase::Open { .. }) {
            self.metrics.opens.inc();
            tracing::warn!(
                open_ms = self.config.open_ms,
                "circuit opened: the model is not called until probes succeed"
            );
        } else if matches!(next, Phase::Closed { .. }) {
            tracing::info!("circuit closed: a probe succeeded");
        }
        *phase = next;
        self.metrics.state.set(next.state().gauge_value());
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, Phase> {
        // The phase is a plain value, valid whatever a panicking holder did.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, probes: u32) -> CircuitBreaker {
        let metrics = CircuitMetrics {
            state: IntGauge::new("state", "state").unwrap(),
            opens: IntCounter::new("opens", "opens").unwrap(),
        };
        CircuitBreaker::new(
            CircuitBreakerConfig {
                failure_threshold: threshold,
                open_ms: 1000,
                half_open_probes: probes,
            },
            metrics,
        )
    }

    fn call(breaker: &CircuitBreaker, now: Instant) -> Attempt<'_> {
        match breaker.admit(now) {
            Admission::Call(attempt) => attempt,
            Admission::Refused { .. } => panic!("refused in {:?}", breaker.state()),
        }
    }

    fn refused_for(breaker: &CircuitBreaker, now: Instant) -> Duration {
        match breaker.admit(now) {
            Admission::Call(_) => panic!("called in {:?}", breaker.state()),
            Admission::Refused { retry_after } => retry_after,
        }
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let b = breaker(3, 1);
        let t = Instant::now();
        call(&b, t).failed(t);
        call(&b, t).failed(t);
        call(&b, t).succeeded(t);
        call(&b, t).failed(t);
        call(&b, t).failed(t);
        assert_eq!(
            b.state(),
            CircuitState::Closed,
            "the success reset the count"
        );
        call(&b, t).failed(t);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.metrics.state.get(), 2);
        assert_eq!(b.metrics.opens.get(), 1);
        assert_eq!(
            refused_for(&b, t + Duration::from_millis(400)),
            Duration::from_millis(600)
        );
    }

    #[test]
    fn after_the_open_time_probes_decide() {
        let b = breaker(1, 2);
        let t = Instant::now();
        call(&b, t).failed(t);
        let later = t + Duration::from_millis(1000);
        let first = call(&b, later);
        let second = call(&b, later);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(
            refused_for(&b, later),
            Duration::ZERO,
            "both probe slots are taken"
        );
        first.failed(later);
        assert_eq!(
            b.state(),
            CircuitState::Open,
            "a failed probe opens it again"
        );
        second.succeeded(later);
        assert_eq!(b.state(), CircuitState::Open, "a late probe says nothing");
        let again = later + Duration::from_millis(1000);
        call(&b, again).succeeded(again);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.metrics.state.get(), 0);
        assert_eq!(b.metrics.opens.get(), 2);
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let b = breaker(1, 1);
        let t = Instant::now();
        call(&b, t).failed(t);
        let later = t + Duration::from_millis(1000);
        drop(call(&b, later));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        call(&b, later).succeeded(later);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[test]
    fn calls_admitted_before_the_opening_do_not_close_it() {
        let b = breaker(1, 1);
        let t = Instant::now();
        let slow = call(&b, t);
        call(&b, t).failed(t);
        slow.succeeded(t);
        assert_eq!(b.state(), CircuitState::Open);
    }
}
