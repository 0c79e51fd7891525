//! Pure rules of the submission path, on the user's state and an instant.

use time::{OffsetDateTime, UtcOffset};

use crate::config::Rules;
use crate::error::ServiceError;
use crate::records::UserState;

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

fn ceil_secs(d: time::Duration) -> u64 {
    let secs = d.whole_seconds() + i64::from(d.subsec_nanoseconds() > 0);
    secs.max(1) as u64
}

/// Refuses while the payment password is locked.
pub fn check_password_lock(state: &UserState, now: OffsetDateTime) -> Result<(), ServiceError> {
    match state.password_locked_until {
        Some(until) if now < until => Err(ServiceError::PaymentPasswordLocked { until }),
        _ => Ok(()),
    }
}

/// The state after one wrong payment password: the `password_max_failures`-th failure
/// locks for `password_lock`.
pub fn after_password_failure(state: &UserState, now: OffsetDateTime, rules: &Rules) -> UserState {
    let lock_expired = state.password_locked_until.is_some_and(|u| now >= u);
    let failures = if lock_expired {
        0
    } else {
        state.password_failures
    } + 1;
    if failures >= rules.password_max_failures {
        UserState {
            password_failures: 0,
            password_locked_until: Some(now + rules.password_lock),
            ..state.clone()
        }
    } else {
        UserState {
            password_failures: failures,
            password_locked_until: None,
            ..state.clone()
        }
    }
}

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

    #[test]
    fn five_wrong_passwords_lock_for_a_day() {
        let t = datetime!(2026-11-28 01:00:00 UTC);
        let mut s = UserState::default();
        for i in 1..5 {
            s = after_password_failure(&s, t, &rules());
            assert_eq!(s.password_failures, i);
            assert!(check_password_lock(&s, t).is_ok());
        }
        s = after_password_failure(&s, t, &rules());
        assert!(matches!(
            check_password_lock(&s, t + Duration::hours(24) - Duration::seconds(1)),
            Err(ServiceError::PaymentPasswordLocked { .. })
        ));
        assert!(check_password_lock(&s, t + Duration::hours(24)).is_ok());
        // After the lock, counting starts again.
        let s2 = after_password_failure(&s, t + Duration::hours(25), &rules());
        assert_eq!(s2.password_failures, 1);
        assert_eq!(s2.password_locked_until, None);
    }
}
