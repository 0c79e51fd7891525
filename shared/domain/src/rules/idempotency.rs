//! Idempotency keys: a submission's key is kept `rules.idempotency_retention` (24 hours)
//! with its first response, which a retry with the same body gets again; a claim still
//! in progress is honoured for `rules.idempotency_lease`, after which its request is
//! taken to have crashed and a retry may take the key over.

use chrono::{DateTime, TimeDelta, Utc};

use super::retry_after_secs;
use crate::config::Rules;
use crate::error::ServiceError;
use crate::records::IdempotencyRecord;

/// The longest Retry-After given to a request whose twin is in progress: a normal
/// submission takes well under a second.
const IN_PROGRESS_RETRY_MAX_SECS: i64 = 2;

/// When a key claimed at `now` is forgotten.
pub fn expires_at(now: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    now + rules.idempotency_retention
}

/// Until when a claim taken at `now` is honoured while in progress.
pub fn lease_until(now: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    now + rules.idempotency_lease
}

/// Whether the record still counts at `now` (it is forgotten from `expires_at` on).
pub fn is_live(record: &IdempotencyRecord, now: DateTime<Utc>) -> bool {
    record.expires_at > now
}

/// Whether a new claim may replace the stored record: expired, or in progress past its
/// lease. DynamoDB: the condition of `claim_idempotency`.
pub fn claimable(record: &IdempotencyRecord, now: DateTime<Utc>) -> bool {
    !is_live(record, now) || (record.in_progress && record.lease_until.is_none_or(|t| t <= now))
}

/// What a request that found its idempotency key taken answers: the original response
/// (same body), 422 for another body under the key, or "in progress" with how long to
/// wait while the first request still runs.
pub fn idempotent_answer(
    record: &IdempotencyRecord,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<(u16, String), ServiceError> {
    if record.request_fingerprint != fingerprint {
        return Err(ServiceError::IdempotencyKeyReused);
    }
    if record.in_progress {
        let wait = record
            .lease_until
            .map_or(TimeDelta::seconds(1), |t| t - now);
        return Err(ServiceError::IdempotencyInProgress {
            retry_after_secs: retry_after_secs(
                wait.min(TimeDelta::seconds(IN_PROGRESS_RETRY_MAX_SECS)),
            ),
        });
    }
    Ok((record.status, record.response_body.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::UserId;
    use crate::rules::shipped;
    use crate::test_support::at;

    fn claim(now: DateTime<Utc>) -> IdempotencyRecord {
        IdempotencyRecord {
            user_id: UserId::parse("u1").unwrap(),
            key: "k".into(),
            request_fingerprint: "f".into(),
            status: 0,
            response_body: String::new(),
            expires_at: expires_at(now, &shipped()),
            in_progress: true,
            owner: Some("o".into()),
            lease_until: Some(lease_until(now, &shipped())),
        }
    }

    #[test]
    fn an_in_progress_claim_holds_for_its_lease_then_may_be_taken_over() {
        let t = at(2026, 11, 28, 1, 0, 0);
        let c = claim(t);
        assert!(!claimable(&c, t + TimeDelta::seconds(29)));
        assert!(claimable(&c, t + TimeDelta::seconds(30)));
        let done = IdempotencyRecord {
            in_progress: false,
            status: 202,
            ..c
        };
        assert!(!claimable(&done, t + TimeDelta::hours(23)));
        assert!(is_live(
            &done,
            t + TimeDelta::hours(24) - TimeDelta::seconds(1)
        ));
        assert!(!is_live(&done, t + TimeDelta::hours(24)));
        assert!(claimable(&done, t + TimeDelta::hours(24)));
    }

    #[test]
    fn a_twin_waits_at_most_two_seconds_and_another_body_is_refused() {
        let t = at(2026, 11, 28, 1, 0, 0);
        let c = claim(t);
        match idempotent_answer(&c, "f", t) {
            Err(ServiceError::IdempotencyInProgress { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 2)
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            idempotent_answer(&c, "other", t),
            Err(ServiceError::IdempotencyKeyReused)
        ));
        let done = IdempotencyRecord {
            in_progress: false,
            status: 202,
            response_body: "{}".into(),
            ..c
        };
        assert_eq!(
            idempotent_answer(&done, "f", t).unwrap(),
            (202, "{}".into())
        );
    }
}
