//! When to try a bank again after a timeout, a 5xx or a connection error: exponential
//! backoff with jitter, capped, and never past the end of collection
//! (`rules::deadline`).

use chrono::{DateTime, TimeDelta, Utc};

use crate::rules::deadline;

/// First retry after this long.
pub const BASE: TimeDelta = TimeDelta::seconds(2);
/// Retries are never further apart than this.
pub const CAP: TimeDelta = TimeDelta::minutes(15);

/// Delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed. `jitter` in [0, 1)
/// spreads retries of many queries over [½, 1] of the exponential delay.
pub fn backoff(attempt: u32, jitter: f64) -> TimeDelta {
    let exp = BASE.as_seconds_f64() * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = exp.min(CAP.as_seconds_f64());
    let secs = capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    // chrono has no `TimeDelta * f64`; at most CAP, so the nanoseconds fit an i64.
    TimeDelta::nanoseconds((secs * 1e9) as i64)
}

/// When to try again, or `None` when the next try would fall after the query's
/// `collect_until`.
pub fn next_attempt_at(
    now: DateTime<Utc>,
    attempt: u32,
    jitter: f64,
    collect_until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let at = now + backoff(attempt, jitter);
    deadline::collecting(collect_until, at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(backoff(1, 1.0), TimeDelta::seconds(2));
        assert_eq!(backoff(2, 1.0), TimeDelta::seconds(4));
        assert_eq!(backoff(5, 1.0), TimeDelta::seconds(32));
        assert_eq!(backoff(10, 1.0), TimeDelta::minutes(15));
        assert_eq!(backoff(u32::MAX, 1.0), TimeDelta::minutes(15));
        assert_eq!(backoff(1, 0.0), TimeDelta::seconds(1));
        assert_eq!(backoff(3, 0.5), TimeDelta::seconds(6));
    }

    #[test]
    fn stops_at_the_deadline() {
        let now = at(2026, 11, 28, 12, 0, 0);
        let deadline = now + TimeDelta::seconds(5);
        assert_eq!(
            next_attempt_at(now, 1, 1.0, deadline),
            Some(now + TimeDelta::seconds(2))
        );
        assert_eq!(
            next_attempt_at(now, 2, 1.0, deadline),
            Some(now + TimeDelta::seconds(4))
        );
        assert_eq!(next_attempt_at(now, 3, 1.0, deadline), None);
    }
}
