//! Connection rotation: a connection older than its maximum age is asked to
//! reconnect, so that clients that keep their connections open (HTTP/1.1
//! keep-alive pools, HTTP/2, gRPC) spread again over the pods behind a
//! Service when pods come and go. kube-proxy balances connections, not
//! requests: without rotation a canary that starts after the clients
//! connected would never see their traffic.
//!
//! A connection's age limit is drawn once, when it is accepted, within
//! [`JITTER`] of the configured maximum, so that connections opened together
//! do not all reconnect together. The first request that *ends* after the
//! limit rotates the connection, never a request in flight:
//!
//! - HTTP/1.1: that request's answer carries `Connection: close`, and the
//!   client opens a new connection for its next request.
//! - HTTP/2 and gRPC: the server sends a graceful GOAWAY; streams already open
//!   finish, the client opens new ones on a new connection, and after
//!   [`RotationPolicy::grace`] whatever is still open is closed.
//!
//! Idle connections are left alone: they carry no traffic to balance, and
//! closing one races with a request the client may be sending on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How far a connection's age limit may lie from the configured maximum, as a
/// share of it, either way (gRPC's `MAX_CONNECTION_AGE` uses the same ±10%).
pub const JITTER: f64 = 0.1;

/// When connections rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Mean age after which a connection is asked to reconnect; `None` never.
    pub max_age: Option<Duration>,
    /// How long an HTTP/2 connection's open streams may take to finish after
    /// its GOAWAY before the connection closes anyway.
    pub grace: Duration,
}

impl RotationPolicy {
    /// The age limit of one connection: the maximum age scaled by `draw`, a
    /// number in [0, 1) (uniform), mapped onto [1 - JITTER, 1 + JITTER).
    pub fn age_limit(&self, draw: f64) -> Option<Duration> {
        self.max_age
            .map(|age| age.mul_f64(1.0 - JITTER + 2.0 * JITTER * draw))
    }
}

/// How a rotating connection is asked to reconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotate {
    /// Answer with `Connection: close` (HTTP/1.x).
    CloseAfterAnswer,
    /// Send a graceful GOAWAY (HTTP/2).
    GoAway,
}

/// One connection's age: when it is due to rotate, and whether it has been.
#[derive(Debug)]
pub struct ConnectionAge {
    due: Option<Instant>,
    rotated: AtomicBool,
    go_away: Notify,
}

impl ConnectionAge {
    /// The age of a connection accepted now under `policy`, with its jitter
    /// drawn at random.
    pub fn start(policy: &RotationPolicy) -> ConnectionAge {
        ConnectionAge::with_limit(policy.age_limit(fastrand::f64()))
    }

    /// The age of a connection accepted now that rotates after `limit`.
    pub fn with_limit(limit: Option<Duration>) -> ConnectionAge {
        ConnectionAge {
            due: limit.map(|limit| Instant::now() + limit),
            rotated: AtomicBool::new(false),
            go_away: Notify::new(),
        }
    }

    /// Called as a request's answer leaves on this connection, speaking
    /// `http2` or not: `Some` (once per connection) when the connection is past
    /// its age limit and must rotate. For HTTP/2 it also wakes
    /// [`ConnectionAge::go_away_requested`].
    pub fn on_answer(&self, http2: bool) -> Option<Rotate> {
        let due = self.due.is_some_and(|due| Instant::now() >= due);
        if !due || self.rotated.swap(true, Ordering::Relaxed) {
            return None;
        }
        if http2 {
            self.go_away.notify_one();
            Some(Rotate::GoAway)
        } else {
            Some(Rotate::CloseAfterAnswer)
        }
    }

    /// Resolves when an HTTP/2 answer found the connection due to rotate.
    pub async fn go_away_requested(&self) {
        self.go_away.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: RotationPolicy = RotationPolicy {
        max_age: None,
        grace: Duration::ZERO,
    };

    #[test]
    fn the_age_limit_stays_within_the_jitter() {
        let policy = RotationPolicy {
            max_age: Some(Duration::from_secs(100)),
            grace: Duration::ZERO,
        };
        assert_eq!(policy.age_limit(0.0), Some(Duration::from_secs(90)));
        assert_eq!(policy.age_limit(0.5), Some(Duration::from_secs(100)));
        assert!(policy.age_limit(0.999_999).unwrap() < Duration::from_secs(110));
        assert_eq!(OFF.age_limit(0.3), None);
    }

    #[test]
    fn drawn_limits_spread_over_the_jitter() {
        let policy = RotationPolicy {
            max_age: Some(Duration::from_secs(100)),
            grace: Duration::ZERO,
        };
        let limits: Vec<Duration> = (0..200)
            .map(|_| policy.age_limit(fastrand::f64()).unwrap())
            .collect();
        assert!(
            limits.iter().all(|limit| {
                (Duration::from_secs(90)..Duration::from_secs(110)).contains(limit)
            })
        );
        assert!(limits.iter().any(|limit| *limit < Duration::from_secs(95)));
        assert!(limits.iter().any(|limit| *limit > Duration::from_secs(105)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_young_connection_is_left_alone() {
        let age = ConnectionAge::with_limit(Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(age.on_answer(false), None);
        assert_eq!(age.on_answer(true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_answer_after_the_limit_rotates_once() {
        let age = ConnectionAge::with_limit(Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(age.on_answer(false), Some(Rotate::CloseAfterAnswer));
        assert_eq!(age.on_answer(false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_rotation_wakes_the_connection_for_its_go_away() {
        let age = ConnectionAge::with_limit(Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(age.on_answer(true), Some(Rotate::GoAway));
        tokio::time::timeout(Duration::from_millis(1), age.go_away_requested())
            .await
            .expect("the GOAWAY was requested");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_rotates() {
        let age = ConnectionAge::start(&OFF);
        tokio::time::advance(Duration::from_secs(100_000)).await;
        assert_eq!(age.on_answer(false), None);
        assert_eq!(age.on_answer(true), None);
    }
}
