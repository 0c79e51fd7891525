//! When to try a bank again after a timeout, a 5xx or a connection error: exponential
//! backoff with jitter, capped, and never past the end of collection
//! (`rules::deadline`).

use time::{Duration, OffsetDateTime};

use crate::rules::deadline;

/// First retry after this long.
pub const BASE: Duration = Duration::seconds(2);
/// Retries are never further apart than this.
pub const CAP: Duration = Duration::minutes(15);

/// Delay before attempt `attempt + 1`, after `attempt` (≥ 1) failed. `jitter` in [0, 1)
/// spreads retries of many queries over [½, 1] of the exponential delay.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = BASE * 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let capped = if exp > CAP { CAP } else { exp };
    capped * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// When to try again, or `None` when the next try would fall after the query's
/// `collect_until`.
pub fn next_attempt_at(
    now: OffsetDateTime,
    attempt: u32,
    jitter: f64,
    collect_until: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let at = now + backoff(attempt, jitter);
    deadline::collecting(collect_until, at).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn doubles_then_caps() {
        assert_eq!(backoff(1, 1.0), Duration::seconds(2));
        assert_eq!(backoff(2, 1.0), Duration::seconds(4));
        assert_eq!(backoff(5, 1.0), Duration::seconds(32));
        assert_eq!(backoff(10, 1.0), Duration::minutes(15));
        assert_eq!(backoff(u32::MAX, 1.0), Duration::minutes(15));
        assert_eq!(backoff(1, 0.0), Duration::seconds(1));
        assert_eq!(backoff(3, 0.5), Duration::seconds(6));
    }

    #[test]
    fn stops_at_the_deadline() {
        let now = datetime!(2026-11-28 12:00 UTC);
        let deadline = now + Duration::seconds(5);
        assert_eq!(
            next_attempt_at(now, 1, 1.0, deadline),
            Some(now + Duration::seconds(2))
        );
        assert_eq!(
            next_attempt_at(now, 2, 1.0, deadline),
            Some(now + Duration::seconds(4))
        );
        assert_eq!(next_attempt_at(now, 3, 1.0, deadline), None);
    }
}
