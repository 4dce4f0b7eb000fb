//! When to try a delivery again: exponential backoff with full jitter,
//! `Retry-After` honoured, 4xx other than 408/425/429 given up (a request
//! the API refuses will be refused again; 401/407 retried only where the
//! destination says so), and a circuit breaker that stops hammering a
//! destination that keeps failing.

use crate::domain::Timestamp;
use std::time::Duration;

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// Never try again; the reason is recorded on the incident's timeline.
    GiveUp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// Full jitter: uniform in `[0, min(max, base * 2^attempt)]`, `unit`
    /// being a uniform draw from `[0, 1)` (injected, so tests are exact).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let cap = self
            .base
            .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// The longest `Retry-After` obeyed: a destination asking for a day (a
/// misconfigured proxy, a clock far off) must not silence paging that long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110), as a
/// wait from `now`, at most [`MAX_RETRY_AFTER`]; `None` if it is neither.
pub fn retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let ms = at.timestamp_millis() - now.millis();
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The outcome of an HTTP answer (`status`, with its `Retry-After` already
/// parsed) to attempt number `attempt` (0 = first). A transport error (no
/// answer at all) is `status` `None`. With `retry_unauthorized`, 401 and
/// 407 are retried too.
pub fn classify(
    status: Option<u16>,
    retry_after: Option<Duration>,
    attempt: u32,
    backoff: &Backoff,
    retry_unauthorized: bool,
    unit: f64,
) -> Outcome {
    let again = || {
        let wait = backoff.delay(attempt, unit);
        // The server's word wins when it asks for longer than we would wait.
        Outcome::Retry(retry_after.map_or(wait, |r| r.max(wait)))
    };
    match status {
        Some(s) if (200..300).contains(&s) => Outcome::Delivered,
        Some(s) if !transient(status, retry_unauthorized) => {
            Outcome::GiveUp(format!("HTTP {s}: the destination refused the request"))
        }
        _ => again(),
    }
}

/// Whether a failed call's answer is worth trying again: no answer, 408,
/// 425, 429, 5xx, and 401/407 with `retry_unauthorized`. The credential
/// refused (rotated, expired): every message would be refused alike until
/// the configuration is fixed; where asked, the backlog waits for that
/// instead of being dropped. A 403 stays a refusal: permissions can be
/// per record.
pub fn transient(status: Option<u16>, retry_unauthorized: bool) -> bool {
    match status {
        None | Some(408 | 425 | 429) => true,
        Some(401 | 407) => retry_unauthorized,
        Some(s) => s >= 500,
    }
}

/// Circuit breaker per destination: after `threshold` consecutive failures
/// it opens for `cool_down` (no requests), then lets one request through
/// (half-open); its success closes it, its failure opens it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    open_until: Option<Timestamp>,
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            failures: 0,
            open_until: None,
        }
    }

    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(t) if now < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// May a request go out at `now`? When not, the instant it may.
    pub fn allow(&self, now: Timestamp) -> Result<(), Timestamp> {
        match self.open_until {
            Some(t) if now < t => Err(t),
            _ => Ok(()),
        }
    }

    /// A success; whether it closed a breaker that had opened (the
    /// half-open probe went through), which the sender says once.
    pub fn on_success(&mut self) -> bool {
        self.failures = 0;
        self.open_until.take().is_some()
    }

    /// A retryable failure (5xx, 429, no answer); a request refused for
    /// good (other 4xx) says nothing about the destination's health. How
    /// the breaker moved, if it did: the sender logs each move, not each
    /// failure of an outage.
    pub fn on_failure(&mut self, now: Timestamp) -> Option<Trip> {
        self.failures = self.failures.saturating_add(1);
        let was = self.state(now);
        let half_open = was == BreakerState::HalfOpen;
        if half_open || self.failures >= self.threshold {
            let until = now.saturating_add(self.cool_down);
            self.open_until = Some(until);
            return match was {
                BreakerState::Closed => Some(Trip::Opened {
                    failures: self.failures,
                    until,
                }),
                BreakerState::HalfOpen => Some(Trip::ProbeFailed { until }),
                // Another failure of a call that went out before it
                // opened: still open, nothing new to say.
                BreakerState::Open => None,
            };
        }
        None
    }
}

/// A move of the breaker on a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trip {
    /// `failures` in a row: open, no calls until `until`.
    Opened { failures: u32, until: Timestamp },
    /// The half-open probe failed: open again until `until`.
    ProbeFailed { until: Timestamp },
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn full_jitter_doubles_its_cap_up_to_the_max() {
        let b = Backoff {
            base: S(1),
            max: S(60),
        };
        assert_eq!(b.delay(0, 0.999_999).as_millis(), 999);
        assert_eq!(b.delay(3, 0.5), S(4));
        assert_eq!(b.delay(10, 1.0), S(60));
        assert_eq!(b.delay(200, 0.5), S(30));
        assert_eq!(b.delay(5, 0.0), Duration::ZERO);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = Timestamp(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("120", now), Some(S(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(S(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("86400", now), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn only_transient_answers_are_retried() {
        let b = Backoff {
            base: S(1),
            max: S(60),
        };
        assert_eq!(
            classify(Some(202), None, 0, &b, false, 0.5),
            Outcome::Delivered
        );
        assert_eq!(
            classify(Some(503), None, 2, &b, false, 0.5),
            Outcome::Retry(S(2))
        );
        assert_eq!(
            classify(None, None, 1, &b, false, 0.5),
            Outcome::Retry(S(1))
        );
        // Retry-After longer than the backoff wins, even past the max.
        assert_eq!(
            classify(Some(429), Some(S(90)), 0, &b, false, 0.5),
            Outcome::Retry(S(90))
        );
        // Shorter: the backoff still spreads the retries.
        assert_eq!(
            classify(Some(429), Some(Duration::ZERO), 4, &b, false, 0.5),
            Outcome::Retry(S(8))
        );
        assert!(matches!(
            classify(Some(400), None, 0, &b, false, 0.5),
            Outcome::GiveUp(m) if m.contains("400")
        ));
        assert!(matches!(
            classify(Some(404), None, 0, &b, false, 0.5),
            Outcome::GiveUp(_)
        ));
        assert_eq!(
            classify(Some(401), None, 2, &b, true, 0.5),
            Outcome::Retry(S(2))
        );
        assert!(matches!(
            classify(Some(401), None, 2, &b, false, 0.5),
            Outcome::GiveUp(_)
        ));
        assert!(matches!(
            classify(Some(403), None, 0, &b, false, 0.5),
            Outcome::GiveUp(_)
        ));
    }

    #[test]
    fn the_breaker_opens_cools_down_and_probes() {
        let t = |s: i64| Timestamp(s * 1000);
        let mut br = Breaker::new(3, S(30));
        assert_eq!(br.on_failure(t(0)), None);
        assert_eq!(br.on_failure(t(1)), None);
        assert_eq!(br.state(t(1)), BreakerState::Closed);
        // Each move is reported once, for the log.
        assert_eq!(
            br.on_failure(t(2)),
            Some(Trip::Opened {
                failures: 3,
                until: t(32)
            })
        );
        assert_eq!(br.state(t(2)), BreakerState::Open);
        assert_eq!(br.allow(t(10)), Err(t(32)));
        // A call that left before it opened fails too: no new move.
        assert_eq!(br.on_failure(t(3)), None);
        assert_eq!(br.allow(t(10)), Err(t(33)));
        // After the cool-down one probe may go; its failure opens again.
        assert_eq!(br.state(t(33)), BreakerState::HalfOpen);
        assert_eq!(br.allow(t(33)), Ok(()));
        assert_eq!(
            br.on_failure(t(34)),
            Some(Trip::ProbeFailed { until: t(64) })
        );
        assert_eq!(br.allow(t(40)), Err(t(64)));
        // A successful probe closes it, and says so once.
        assert!(br.on_success());
        assert_eq!(br.state(t(64)), BreakerState::Closed);
        assert!(!br.on_success());
        assert_eq!(br.on_failure(t(64)), None);
        assert_eq!(br.state(t(64)), BreakerState::Closed);
    }
}
