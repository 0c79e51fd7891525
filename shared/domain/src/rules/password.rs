//! The payment-password lock: at most `rules.password_max_failures` (5) comparisons per
//! lock window, then locked for `rules.password_lock` (24 hours). Each comparison is
//! reserved before it is made, so no burst can compare more; the stores apply these
//! functions atomically (DynamoDB: two conditional updates, see
//! `shared::adapters::dynamo::submission`).

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::Rules;
use crate::error::ServiceError;
use crate::records::{PasswordSlot, UserState};

/// The payment-password lock: `max_failures` comparisons, then locked for `lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub max_failures: u32,
    pub lock: TimeDelta,
}

impl PasswordPolicy {
    pub fn from_rules(rules: &Rules) -> Self {
        Self {
            max_failures: rules.password_max_failures.max(1),
            lock: rules.password_lock,
        }
    }

    /// The end of a lock that starts at `now`.
    pub fn lock_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.lock
    }
}

fn lock_active(state: &UserState, now: DateTime<Utc>) -> bool {
    state.password_locked_until.is_some_and(|until| now < until)
}

/// Refuses while the payment password is locked.
/// While the last slot's comparison runs (the lock is held, not final), the answer is
/// "too many at once, retry": that comparison either locks the password or frees it.
pub fn check_password_lock(state: &UserState, now: DateTime<Utc>) -> Result<(), ServiceError> {
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

/// Why no comparison slot is given at `now`, if none is: [`PasswordSlot::Busy`] while the
/// last slot's comparison runs, [`PasswordSlot::Locked`] while the lock stands.
pub fn no_slot(state: &UserState, now: DateTime<Utc>) -> Option<PasswordSlot> {
    let until = state
        .password_locked_until
        .filter(|_| lock_active(state, now))?;
    Some(if state.password_lock_holder.is_some() {
        PasswordSlot::Busy
    } else {
        PasswordSlot::Locked { until }
    })
}

/// Reserves one payment-password comparison before it is made, so a burst can never
/// compare more than `max_failures` passwords per lock window: each reservation counts
/// as a failure until its comparison succeeds. The last slot sets the lock at once,
/// held by `holder`; only that comparison's success lifts it (its failure restarts the
/// lock from the failure), so a crash in between leaves the account locked, not open.
pub fn reserve_password_slot(
    state: &UserState,
    holder: &str,
    now: DateTime<Utc>,
    policy: &PasswordPolicy,
) -> (UserState, PasswordSlot) {
    if let Some(slot) = no_slot(state, now) {
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
            password_locked_until: Some(policy.lock_until(now)),
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
    now: DateTime<Utc>,
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
    now: DateTime<Utc>,
    policy: &PasswordPolicy,
) -> Option<UserState> {
    (state.password_lock_holder.as_deref() == Some(holder)).then(|| UserState {
        password_locked_until: Some(policy.lock_until(now)),
        password_lock_holder: None,
        ..state.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shipped;
    use crate::test_support::at;

    fn policy() -> PasswordPolicy {
        PasswordPolicy::from_rules(&shipped())
    }

    #[test]
    fn the_fifth_reservation_locks_at_once_and_only_its_own_success_lifts_it() {
        let t = at(2026, 11, 28, 1, 0, 0);
        let mut s = UserState::default();
        for i in 1..5 {
            let (next, slot) = reserve_password_slot(&s, "r", t, &policy());
            assert_eq!((slot, next.password_failures), (PasswordSlot::Ordinary, i));
            s = next;
        }
        let (locked, slot) = reserve_password_slot(&s, "fifth", t, &policy());
        assert_eq!(slot, PasswordSlot::Last);
        assert_eq!(locked.password_locked_until, Some(t + TimeDelta::hours(24)));
        // While the fifth comparison runs, nobody else gets a slot.
        let (_, other) = reserve_password_slot(&locked, "sixth", t, &policy());
        assert_eq!(other, PasswordSlot::Busy);
        assert_eq!(no_slot(&locked, t), Some(PasswordSlot::Busy));
        assert!(matches!(
            check_password_lock(&locked, t),
            Err(ServiceError::TooManyRequests { .. })
        ));
        // Another request's success does not lift it; the holder's does.
        assert_eq!(after_password_match(&locked, "first", t), None);
        let lifted = after_password_match(&locked, "fifth", t).unwrap();
        assert_eq!(lifted.password_locked_until, None);
        assert_eq!(lifted.password_failures, 0);
        assert_eq!(no_slot(&lifted, t), None);
    }

    #[test]
    fn a_failed_last_slot_locks_for_exactly_24_hours_from_the_failure() {
        let t = at(2026, 11, 28, 1, 0, 0);
        let s = UserState {
            password_failures: 4,
            ..Default::default()
        };
        let (locked, _) = reserve_password_slot(&s, "fifth", t, &policy());
        let failed_at = t + TimeDelta::seconds(2);
        let after = after_last_slot_failure(&locked, "fifth", failed_at, &policy()).unwrap();
        let until = failed_at + TimeDelta::hours(24);
        assert_eq!(after.password_locked_until, Some(until));
        assert!(check_password_lock(&after, until - TimeDelta::seconds(1)).is_err());
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
        assert_eq!(no_slot(&after, until), None);
        let (next, slot) = reserve_password_slot(&after, "later", until, &policy());
        assert_eq!((slot, next.password_failures), (PasswordSlot::Ordinary, 1));
        assert_eq!(next.password_locked_until, None);
    }

    #[test]
    fn an_active_lock_gives_no_slot_and_survives_a_success() {
        let t = at(2026, 11, 28, 1, 0, 0);
        let until = t + TimeDelta::hours(3);
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

    #[test]
    fn a_policy_of_zero_failures_still_allows_one_comparison() {
        let rules = crate::config::Rules {
            password_max_failures: 0,
            ..shipped()
        };
        assert_eq!(PasswordPolicy::from_rules(&rules).max_failures, 1);
    }
}
