//! SMS verification codes: each valid `rules.sms_code_validity` (5 minutes) and good for
//! `rules.sms_code_max_attempts` comparisons (5); at most one SMS every
//! `rules.sms_min_interval` (a minute) and `rules.sms_daily_limit` (10) a China day.
//! (The code itself, its hash and its format: `security::sms_code`.)

use chrono::{DateTime, TimeDelta, Utc};

use super::china_day::{china_day, next_china_midnight};
use super::retry_after_secs;
use crate::config::Rules;
use crate::error::ServiceError;
use crate::model::purpose::Purpose;
use crate::records::{UserState, VerificationRecord};

/// When a code sent at `sent_at` stops being accepted.
pub fn code_expires_at(sent_at: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    sent_at + rules.sms_code_validity
}

/// The validity as the SMS text states it, in whole minutes.
pub fn validity_minutes(rules: &Rules) -> i64 {
    rules.sms_code_validity.num_minutes()
}

/// Whether one more comparison may be made with `code` (before it is made, so parallel
/// guesses cannot outnumber `max_attempts`): unused, for `purpose`, unexpired at `now`
/// and with attempts left. DynamoDB: the condition of `reserve_code_attempt`.
pub fn may_compare(
    code: &VerificationRecord,
    purpose: Purpose,
    now: DateTime<Utc>,
    max_attempts: u32,
) -> bool {
    !code.used && code.purpose == purpose && now < code.expires_at && code.attempts < max_attempts
}

/// Whether a code whose comparison matched may be used up: unused, and the matching
/// comparison (itself counted) within `max_attempts`. DynamoDB: `CODE_CONSUMABLE`.
pub fn may_consume(code: &VerificationRecord, max_attempts: u32) -> bool {
    !code.used && code.attempts <= max_attempts
}

/// Takes one SMS slot (at most one every `sms_min_interval` and `sms_daily_limit` a
/// China day), or says how many seconds until the next one.
pub fn take_sms_slot(
    state: &UserState,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Result<UserState, ServiceError> {
    if let Some(last) = state.last_sms_at {
        let next = last + rules.sms_min_interval;
        if now < next {
            return Err(ServiceError::TooManyRequests {
                retry_after_secs: retry_after_secs(next - now),
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
        return Err(ServiceError::TooManyRequests {
            retry_after_secs: retry_after_secs(next_china_midnight(now) - now),
        });
    }
    Ok(UserState {
        last_sms_at: Some(now),
        sms_day: Some(today),
        sms_count: count_today + 1,
        ..state.clone()
    })
}

/// How long a code request the SMS channel refused (throttled after the adapter's own
/// retries) is told to wait: the channel's quota refills every second, and the retries
/// already spent about that long.
pub const THROTTLED_RETRY_AFTER: TimeDelta = TimeDelta::seconds(2);

/// The refusal of a code request whose SMS the channel cannot take before `retry_at`.
pub fn channel_unavailable(now: DateTime<Utc>, retry_at: DateTime<Utc>) -> ServiceError {
    ServiceError::SmsUnavailable {
        retry_after_secs: retry_after_secs(retry_at - now),
    }
}

/// Gives back the slot taken at `taken_at` (from `before`) whose SMS was not sent, so
/// a refused send costs the user neither the minute nor a daily message. While that slot
/// is still the last one taken, the SMS fields go back to `before`'s exactly; should a
/// later send have taken one since, that one stands and only the count goes down (the
/// same China day). Applied to the state as it is now (the caller's conditional write
/// puts it), so any other field written meanwhile stands.
pub fn give_back_sms_slot(
    current: &UserState,
    before: &UserState,
    taken_at: DateTime<Utc>,
) -> UserState {
    // Whole seconds: the stored record keeps no fraction (`timestamp::format`), and one
    // user's slots are at least `sms_min_interval` apart.
    if current.last_sms_at.map(|t| t.timestamp()) == Some(taken_at.timestamp()) {
        return UserState {
            last_sms_at: before.last_sms_at,
            sms_day: before.sms_day.clone(),
            sms_count: before.sms_count,
            ..current.clone()
        };
    }
    let same_day = current.sms_day.as_deref() == Some(china_day(taken_at).as_str());
    UserState {
        sms_count: if same_day {
            current.sms_count.saturating_sub(1)
        } else {
            current.sms_count
        },
        ..current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::{UserId, VerificationId};
    use crate::rules::shipped;
    use crate::test_support::at;
    use chrono::TimeDelta;

    #[test]
    fn one_sms_a_minute() {
        let t0 = at(2026, 11, 28, 1, 0, 0);
        let s1 = take_sms_slot(&UserState::default(), t0, &shipped()).unwrap();
        match take_sms_slot(&s1, t0 + TimeDelta::seconds(59), &shipped()) {
            Err(ServiceError::TooManyRequests { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 1)
            }
            other => panic!("{other:?}"),
        }
        assert!(take_sms_slot(&s1, t0 + TimeDelta::seconds(60), &shipped()).is_ok());
    }

    #[test]
    fn ten_sms_a_china_day() {
        // 2026-11-28 15:00 UTC is 23:00 in China; midnight there is one hour later.
        let mut t = at(2026, 11, 28, 13, 0, 0);
        let mut s = UserState::default();
        for _ in 0..10 {
            s = take_sms_slot(&s, t, &shipped()).unwrap();
            t += TimeDelta::minutes(2);
        }
        let late = at(2026, 11, 28, 15, 0, 0);
        match take_sms_slot(&s, late, &shipped()) {
            Err(ServiceError::TooManyRequests { retry_after_secs }) => {
                assert_eq!(retry_after_secs, 3600)
            }
            other => panic!("{other:?}"),
        }
        let next_day = take_sms_slot(&s, at(2026, 11, 28, 16, 0, 0), &shipped()).unwrap();
        assert_eq!(next_day.sms_count, 1);
        assert_eq!(next_day.sms_day.as_deref(), Some("2026-11-29"));
    }

    fn code(sent_at: DateTime<Utc>) -> VerificationRecord {
        VerificationRecord {
            verification_id: VerificationId::generate(),
            user_id: UserId::parse("u1").unwrap(),
            purpose: Purpose::SubmitQuery,
            code_hash: "h".into(),
            expires_at: code_expires_at(sent_at, &shipped()),
            attempts: 0,
            used: false,
        }
    }

    #[test]
    fn a_code_is_good_for_five_minutes_and_five_comparisons() {
        let sent = at(2026, 11, 28, 1, 0, 0);
        let c = code(sent);
        assert_eq!(validity_minutes(&shipped()), 5);
        let max = shipped().sms_code_max_attempts;
        assert_eq!(max, 5);
        let before_end = sent + TimeDelta::minutes(5) - TimeDelta::seconds(1);
        assert!(may_compare(&c, Purpose::SubmitQuery, before_end, max));
        assert!(!may_compare(
            &c,
            Purpose::SubmitQuery,
            sent + TimeDelta::minutes(5),
            max
        ));
        assert!(!may_compare(&c, Purpose::ViewReport, sent, max));
        let fifth = VerificationRecord {
            attempts: 4,
            ..c.clone()
        };
        assert!(may_compare(&fifth, Purpose::SubmitQuery, sent, max));
        let burnt = VerificationRecord {
            attempts: 5,
            ..c.clone()
        };
        assert!(!may_compare(&burnt, Purpose::SubmitQuery, sent, max));
        let used = VerificationRecord { used: true, ..c };
        assert!(!may_compare(&used, Purpose::SubmitQuery, sent, max));
    }

    #[test]
    fn a_code_matched_on_its_last_attempt_may_still_be_used_once() {
        let c = code(at(2026, 11, 28, 1, 0, 0));
        let max = shipped().sms_code_max_attempts;
        let matched_on_fifth = VerificationRecord {
            attempts: 5,
            ..c.clone()
        };
        assert!(may_consume(&matched_on_fifth, max));
        assert!(!may_consume(
            &VerificationRecord {
                attempts: 6,
                ..c.clone()
            },
            max
        ));
        assert!(!may_consume(&VerificationRecord { used: true, ..c }, max));
    }

    #[test]
    fn a_slot_given_back_leaves_the_limits_as_they_were() {
        let rules = shipped();
        let t0 = at(2026, 11, 28, 1, 0, 0);
        let before = take_sms_slot(&UserState::default(), t0, &rules).unwrap();
        let t1 = t0 + TimeDelta::minutes(3);
        let taken = take_sms_slot(&before, t1, &rules).unwrap();
        assert_eq!(taken.sms_count, 2);
        let back = give_back_sms_slot(&taken, &before, t1);
        assert_eq!(
            (back.last_sms_at, back.sms_day.clone(), back.sms_count),
            (before.last_sms_at, before.sms_day.clone(), before.sms_count)
        );
        // The next code may go at once: the minute runs from the first send again.
        assert!(take_sms_slot(&back, t1, &rules).is_ok());

        // The first SMS of all, given back: as if never taken.
        let first = take_sms_slot(&UserState::default(), t0, &rules).unwrap();
        let back = give_back_sms_slot(&first, &UserState::default(), t0);
        assert_eq!(back, UserState::default());
    }

    #[test]
    fn a_slot_read_back_in_whole_seconds_is_still_recognised_as_ours() {
        let rules = shipped();
        let t0 = at(2026, 11, 28, 1, 0, 0);
        let before = take_sms_slot(&UserState::default(), t0, &rules).unwrap();
        let t1 = t0 + TimeDelta::minutes(3) + TimeDelta::milliseconds(750);
        let stored = UserState {
            last_sms_at: Some(t0 + TimeDelta::minutes(3)),
            ..take_sms_slot(&before, t1, &rules).unwrap()
        };
        let back = give_back_sms_slot(&stored, &before, t1);
        assert_eq!(back.last_sms_at, before.last_sms_at);
        assert_eq!(back.sms_count, 1);
    }

    #[test]
    fn giving_back_keeps_what_else_was_written_and_a_later_send() {
        let rules = shipped();
        let t0 = at(2026, 11, 28, 1, 0, 0);
        let taken = take_sms_slot(&UserState::default(), t0, &rules).unwrap();
        // Meanwhile the password count moved and (an interval later) another send won.
        let later = t0 + TimeDelta::minutes(1);
        let current = UserState {
            password_failures: 2,
            ..take_sms_slot(&taken, later, &rules).unwrap()
        };
        let back = give_back_sms_slot(&current, &UserState::default(), t0);
        assert_eq!(back.password_failures, 2);
        assert_eq!(back.last_sms_at, Some(later));
        assert_eq!(back.sms_count, 1);
    }

    #[test]
    fn a_channel_refusal_waits_whole_seconds() {
        let now = at(2026, 11, 28, 1, 0, 0);
        let retry_at = now + TimeDelta::milliseconds(300);
        match channel_unavailable(now, retry_at) {
            ServiceError::SmsUnavailable { retry_after_secs } => assert_eq!(retry_after_secs, 1),
            other => panic!("{other:?}"),
        }
    }
}
