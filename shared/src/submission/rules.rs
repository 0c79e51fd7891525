//! Pure rules of the submission path, on the user's state and an instant.

use time::{Duration, OffsetDateTime, UtcOffset};

use crate::config::Rules;
use crate::error::ServiceError;
use crate::records::{IdempotencyRecord, PasswordSlot, UserState};

/// The China Standard Time calendar day of `now`: the day the daily SMS limit counts.
pub fn china_day(now: OffsetDateTime) -> String {
    let cst = UtcOffset::from_hms(8, 0, 0).expect("UTC+8 is a valid offset");
    now.to_offset(cst).date().to_string()
}

/// Takes one SMS slot (at most one a minute and `sms_daily_limit` a day), or says how
/// many seconds until the next one.
pub fn take_sms_slot(
    state: &UserState,
    now: OffsetDateTime,
    rules: &Rules,
) -> Result<UserState, ServiceError> {
    if let Some(last) = state.last_sms_at {
        let next = last + rules.sms_min_interval;
        if now < next {
            return Err(ServiceError::TooManyRequests {
                retry_after_secs: ceil_secs(next - now),
            });
        }
    }
    let today = china_day(now);
    let count_today = if state.sms_day.as_deref() == Some(today.as_str()) {
        state.sms_count
    } else {
        0
    };
    if count_today >= rules.sms_daily_limit {
        let cst = UtcOffset::from_hms(8, 0, 0).expect("UTC+8 is a valid offset");
        let local = now.to_offset(cst);
        let midnight = local
            .date()
            .next_day()
            .expect("not the end of time")
            .midnight()
            .assume_offset(cst);
        return Err(ServiceError::TooManyRequests {
            retry_after_secs: ceil_secs(midnight - now),
        });
    }
    Ok(UserState {
        last_sms_at: Some(now),
        sms_day: Some(today),
        sms_count: count_today + 1,
        ..state.clone()
    })
}

fn ceil_secs(d: Duration) -> u64 {
    let secs = d.whole_seconds() + i64::from(d.subsec_nanoseconds() > 0);
    secs.max(1) as u64
}

/// Refuses while the payment password is locked.
/// While the last slot's comparison runs (the lock is held, not final), the answer is
/// "too many at once, retry": that comparison either locks the password or frees it.
pub fn check_password_lock(state: &UserState, now: OffsetDateTime) -> Result<(), ServiceError> {
    match state.password_locked_until {
        Some(_) if state.password_lock_holder.is_some() && lock_active(state, now) => {
            Err(ServiceError::TooManyRequests {
                retry_after_secs: 1,
            })
        }
        Some(until) if now < until => Err(ServiceError::PaymentPasswordLocked { until }),
        _ => Ok(()),
    }
}

fn lock_active(state: &UserState, now: OffsetDateTime) -> bool {
    state.password_locked_until.is_some_and(|until| now < until)
}

/// The payment-password lock: `max_failures` comparisons, then locked for `lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub max_failures: u32,
    pub lock: Duration,
}

impl PasswordPolicy {
    pub fn from_rules(rules: &Rules) -> Self {
        Self {
            max_failures: rules.password_max_failures.max(1),
            lock: rules.password_lock,
        }
    }
}

/// Reserves one payment-password comparison before it is made, so a burst can never
/// compare more than `max_failures` passwords per lock window: each reservation counts
/// as a failure until its comparison succeeds. The last slot sets the lock at once,
/// held by `holder`; only that comparison's success lifts it (its failure restarts the
/// lock from the failure), so a crash in between leaves the account locked, not open.
/// The store applies this atomically (DynamoDB: two conditional updates, see
/// `adapters::dynamo::submission`).
pub fn reserve_password_slot(
    state: &UserState,
    holder: &str,
    now: OffsetDateTime,
    policy: &PasswordPolicy,
) -> (UserState, PasswordSlot) {
    if let Some(until) = state
        .password_locked_until
        .filter(|_| lock_active(state, now))
    {
        let slot = if state.password_lock_holder.is_some() {
            PasswordSlot::Busy
        } else {
            PasswordSlot::Locked { until }
        };
        return (state.clone(), slot);
    }
    // A lapsed lock counts from zero (the lock reset the count when it was set).
    if state.password_failures + 1 < policy.max_failures {
        let next = UserState {
            password_failures: state.password_failures + 1,
            password_locked_until: None,
            password_lock_holder: None,
            ..state.clone()
        };
        (next, PasswordSlot::Ordinary)
    } else {
        let next = UserState {
            password_failures: 0,
            password_locked_until: Some(now + policy.lock),
            password_lock_holder: Some(holder.to_owned()),
            ..state.clone()
        };
        (next, PasswordSlot::Last)
    }
}

/// After a matching comparison: the count starts again, unless a lock that is not this
/// reservation's own is active (a success never lifts another request's lock).
pub fn after_password_match(
    state: &UserState,
    holder: &str,
    now: OffsetDateTime,
) -> Option<UserState> {
    let own_lock = state.password_lock_holder.as_deref() == Some(holder);
    if lock_active(state, now) && !own_lock {
        return None;
    }
    Some(UserState {
        password_failures: 0,
        password_locked_until: None,
        password_lock_holder: None,
        ..state.clone()
    })
}

/// After the last slot's comparison failed: the lock runs `policy.lock` from `now`.
/// `None` if `holder` no longer holds it.
pub fn after_last_slot_failure(
    state: &UserState,
    holder: &str,
    now: OffsetDateTime,
    policy: &PasswordPolicy,
) -> Option<UserState> {
    (state.password_lock_holder.as_deref() == Some(holder)).then(|| UserState {
        password_locked_until: Some(now + policy.lock),
        password_lock_holder: None,
        ..state.clone()
    })
}

/// What a request that found its idempotency key taken answers: the original response
/// (same body), 422 for another body under the key, or "in progress" with how long to
/// wait while the first request still runs.
pub fn idempotent_answer(
    record: &IdempotencyRecord,
    fingerprint: &str,
    now: OffsetDateTime,
) -> Result<(u16, String), ServiceError> {
    if record.request_fingerprint != fingerprint {
        return Err(ServiceError::IdempotencyKeyReused);
    }
    if record.in_progress {
        let wait = record.lease_until.map_or(Duration::seconds(1), |t| t - now);
        return Err(ServiceError::IdempotencyInProgress {
            retry_after_secs: ceil_secs(wait.min(Duration::seconds(IN_PROGRESS_RETRY_MAX_SECS))),
        });
    }
    Ok((record.status, record.response_body.clone()))
}

/// The longest Retry-After given to a request whose twin is in progress: a normal
/// submission takes well under a second.
const IN_PROGRESS_RETRY_MAX_SECS: i64 = 2;

/// One active query per user, and a new one only from `next_allowed_at` on.
pub fn check_can_submit(state: &UserState, now: OffsetDateTime) -> Result<(), ServiceError> {
    if state.active_query_id.is_some() {
        return Err(ServiceError::QueryInProgress);
    }
    match state.next_allowed_at {
        Some(next) if now < next => Err(ServiceError::CooldownActive {
            next_allowed_at: next,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServiceConfig, DEFAULT_CONFIG};
    use crate::model::ids::QueryId;
    use time::macros::datetime;
    use time::Duration;

    fn rules() -> Rules {
        ServiceConfig::parse(DEFAULT_CONFIG).unwrap().rules
    }

    #[test]
    fn cooldown_ends_exactly_seven_days_after_the_report() {
        let generated = datetime!(2026-11-01 10:00:00 UTC);
        let state = UserState {
            next_allowed_at: Some(generated + rules().cooldown),
            ..Default::default()
        };
        let just_before = generated + Duration::days(7) - Duration::seconds(1);
        match check_can_submit(&state, just_before) {
            Err(ServiceError::CooldownActive { next_allowed_at }) => {
                assert_eq!(next_allowed_at, generated + Duration::days(7))
            }
            other => panic!("expected cooldown, got {other:?}"),
        }
        assert!(check_can_submit(&state, generated + Duration::days(7)).is_ok());
    }

    #[test]
    fn an_active_query_blocks_a_new_one() {
        let state = UserState {
            active_query_id: Some(QueryId::generate()),
            ..Default::default()
        };
        assert!(matches!(
            check_can_submit(&state, datetime!(2026-11-01 0:00 UTC)),
            Err(ServiceError::QueryInProgress)
        ));
    }

    #[test]
    fn one_sms_a_minute() {
        let t0 = datetime!(2026-11-28 01:00:00 UTC);
        let s1 = take_sms_slot(&UserState::default(), t0, &rules()).unwrap();
        match take_sms_slot(&s1, t0 + Duration::seconds(59), &rules()) {
            Err(ServiceError::TooManyRequests { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 1)
            }
            other => panic!("{other:?}"),
        }
        assert!(take_sms_slot(&s1, t0 + Duration::seconds(60), &rules()).is_ok());
    }

    #[test]
    fn ten_sms_a_china_day() {
        // 2026-11-28 15:00 UTC is 23:00 in China; midnight there is one hour later.
        let mut t = datetime!(2026-11-28 13:00:00 UTC);
        let mut s = UserState::default();
        for _ in 0..10 {
            s = take_sms_slot(&s, t, &rules()).unwrap();
            t += Duration::minutes(2);
        }
        let at = datetime!(2026-11-28 15:00:00 UTC);
        match take_sms_slot(&s, at, &rules()) {
            Err(ServiceError::TooManyRequests { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 3600)
            }
            other => panic!("{other:?}"),
        }
        let next_day = take_sms_slot(&s, datetime!(2026-11-28 16:00:00 UTC), &rules()).unwrap();
        assert_eq!(next_day.sms_count, 1);
        assert_eq!(next_day.sms_day.as_deref(), Some("2026-11-29"));
    }

    fn policy() -> PasswordPolicy {
        PasswordPolicy::from_rules(&rules())
    }

    #[test]
    fn the_fifth_reservation_locks_at_once_and_only_its_own_success_lifts_it() {
        let t = datetime!(2026-11-28 01:00:00 UTC);
        let mut s = UserState::default();
        for i in 1..5 {
            let (next, slot) = reserve_password_slot(&s, "r", t, &policy());
            assert_eq!((slot, next.password_failures), (PasswordSlot::Ordinary, i));
            s = next;
        }
        let (locked, slot) = reserve_password_slot(&s, "fifth", t, &policy());
        assert_eq!(slot, PasswordSlot::Last);
        assert_eq!(locked.password_locked_until, Some(t + Duration::hours(24)));
        // While the fifth comparison runs, nobody else gets a slot.
        let (_, other) = reserve_password_slot(&locked, "sixth", t, &policy());
        assert_eq!(other, PasswordSlot::Busy);
        assert!(matches!(
            check_password_lock(&locked, t),
            Err(ServiceError::TooManyRequests { .. })
        ));
        // Another request's success does not lift it; the holder's does.
        assert_eq!(after_password_match(&locked, "first", t), None);
        let lifted = after_password_match(&locked, "fifth", t).unwrap();
        assert_eq!(lifted.password_locked_until, None);
        assert_eq!(lifted.password_failures, 0);
    }

    #[test]
    fn a_failed_last_slot_locks_for_exactly_24_hours_from_the_failure() {
        let t = datetime!(2026-11-28 01:00:00 UTC);
        let s = UserState {
            password_failures: 4,
            ..Default::default()
        };
        let (locked, _) = reserve_password_slot(&s, "fifth", t, &policy());
        let failed_at = t + Duration::seconds(2);
        let after = after_last_slot_failure(&locked, "fifth", failed_at, &policy()).unwrap();
        let until = failed_at + Duration::hours(24);
        assert_eq!(after.password_locked_until, Some(until));
        assert!(check_password_lock(&after, until - Duration::seconds(1)).is_err());
        assert!(check_password_lock(&after, until).is_ok());
        assert_eq!(
            reserve_password_slot(&after, "sixth", failed_at, &policy()).1,
            PasswordSlot::Locked { until }
        );
        assert_eq!(
            after_last_slot_failure(&after, "fifth", until, &policy()),
            None
        );
        // After the lock, counting starts again from zero.
        let (next, slot) = reserve_password_slot(&after, "later", until, &policy());
        assert_eq!((slot, next.password_failures), (PasswordSlot::Ordinary, 1));
        assert_eq!(next.password_locked_until, None);
    }

    #[test]
    fn an_active_lock_gives_no_slot_and_survives_a_success() {
        let t = datetime!(2026-11-28 01:00:00 UTC);
        let until = t + Duration::hours(3);
        let s = UserState {
            password_locked_until: Some(until),
            ..Default::default()
        };
        assert_eq!(
            reserve_password_slot(&s, "r", t, &policy()).1,
            PasswordSlot::Locked { until }
        );
        assert_eq!(after_password_match(&s, "r", t), None);
    }
}
