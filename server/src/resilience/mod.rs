//! Degraded mode for one model version: a circuit breaker in front of the
//! model and a fallback behind it (both optional, both off by default). A
//! request the model fails, times out on or cannot take because its circuit
//! is open gets the fallback's answer, marked as such; a request refused for
//! its own fault (a 4xx) never does.

pub mod circuit;
pub mod fallback;

use std::future::Future;
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::error::InferError;
use crate::metrics::VersionMetrics;
use crate::tensor::Tensor;
use circuit::{Admission, CircuitBreaker};
use fallback::{Fallback, FallbackReason, FallbackUse};

/// What a model version answered.
#[derive(Debug)]
pub struct Answer {
    /// Every output of the model, in graph order.
    pub outputs: Vec<Tensor>,
    /// Set when the fallback answered instead of the model.
    pub fallback: Option<FallbackUse>,
}

/// A version's circuit breaker and fallback.
pub struct Resilience {
    model: String,
    breaker: Option<CircuitBreaker>,
    fallback: Option<Fallback>,
    /// `sluice_fallback_requests_total`, by [`FallbackReason`] in declaration order.
    fallback_counts: [IntCounter; 3],
    /// How long the fallback itself may take.
    fallback_timeout: Duration,
}

impl Resilience {
    /// Degraded mode for `model` with whatever the configuration turned on.
    pub fn new(
        model: &str,
        breaker: Option<CircuitBreaker>,
        fallback: Option<Fallback>,
        fallback_timeout: Duration,
        metrics: &VersionMetrics,
    ) -> Resilience {
        let count = |reason: FallbackReason| metrics.fallbacks(reason.as_str());
        Resilience {
            model: model.to_string(),
            breaker,
            fallback,
            fallback_counts: [
                count(FallbackReason::Failure),
                count(FallbackReason::Timeout),
                count(FallbackReason::CircuitOpen),
            ],
            fallback_timeout,
        }
    }

    /// The circuit breaker, when one is configured.
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// Calls `primary` with `inputs` under the circuit breaker, and answers
    /// from the fallback when it fails, times out or may not be called.
    pub async fn call<F, Fut>(&self, inputs: Vec<Tensor>, primary: F) -> Result<Answer, InferError>
    where
        F: FnOnce(Vec<Tensor>) -> Fut,
        Fut: Future<Output = Result<Vec<Tensor>, InferError>>,
    {
        let rows = inputs.first().map_or(1, Tensor::rows);
        let attempt = match self.breaker.as_ref().map(|b| b.admit(Instant::now())) {
            None => None,
            Some(Admission::Call(attempt)) => Some(attempt),
            Some(Admission::Refused { retry_after }) => {
                let refusal = InferError::CircuitOpen {
                    model: self.model.clone(),
                    retry_after_secs: retry_after.as_secs().max(1),
                };
                return self
                    .fall_back(inputs, rows, FallbackReason::CircuitOpen, refusal)
                    .await;
            }
        };
        let kept = self
            .fallback
            .as_ref()
            .filter(|fallback| fallback.needs_inputs())
            .map(|_| inputs.clone());
        let result = primary(inputs).await;
        let failure = match &result {
            Err(InferError::Internal(_)) => Some(FallbackReason::Failure),
            Err(InferError::Timeout(_)) => Some(FallbackReason::Timeout),
            _ => None,
        };
        if let Some(attempt) = attempt {
            match (&result, failure) {
                (Ok(_), _) => attempt.succeeded(Instant::now()),
                (Err(_), Some(_)) => attempt.failed(Instant::now()),
                // The client's fault or an overload says nothing of the model.
                (Err(_), None) => drop(attempt),
            }
        }
        match (result, failure) {
            (Ok(outputs), _) => Ok(Answer {
                outputs,
                fallback: None,
            }),
            (Err(error), Some(reason)) => {
                self.fall_back(kept.unwrap_or_default(), rows, reason, error)
                    .await
            }
            (Err(error), None) => Err(error),
        }
    }

    /// The fallback's answer for a request the model could not answer, or
    /// `error` when there is no fallback.
    async fn fall_back(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        reason: FallbackReason,
        error: InferError,
    ) -> Result<Answer, InferError> {
        let Some(fallback) = &self.fallback else {
            return Err(error);
        };
        let timed_out = InferError::Timeout(self.fallback_timeout.as_millis() as u64);
        let answered = tokio::time::timeout(self.fallback_timeout, fallback.answer(inputs, rows))
            .await
            .unwrap_or(Err(timed_out));
        match answered {
            Ok(outputs) => {
                self.fallback_counts[reason as usize].inc();
                Ok(Answer {
                    outputs,
                    fallback: Some(FallbackUse {
                        kind: fallback.kind(),
                        reason,
                    }),
                })
            }
            Err(fallback_error) => Err(InferError::Internal(format!(
                "{error}; the fallback failed too: {fallback_error}"
            ))),
        }
    }
}
