//! One active query per user, and a new one only 7 days (`rules.cooldown`) after the
//! user's last report was generated.

use chrono::{DateTime, Utc};

use crate::config::Rules;
use crate::error::ServiceError;
use crate::model::ids::QueryId;
use crate::records::UserState;

/// When the user may submit again after a report generated at `generated_at`.
pub fn next_allowed_at(generated_at: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    generated_at + rules.cooldown
}

/// The user's state once `query`'s report is out: its lock released (only its own) and
/// the cooldown running from `generated_at`.
pub fn after_report(
    state: &UserState,
    query: &QueryId,
    generated_at: DateTime<Utc>,
    rules: &Rules,
) -> UserState {
    UserState {
        active_query_id: state.active_query_id.filter(|a| a != query),
        next_allowed_at: Some(next_allowed_at(generated_at, rules)),
        ..state.clone()
    }
}

/// The end of a cooldown still running at `now`.
pub fn running_until(state: &UserState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    state.next_allowed_at.filter(|t| *t > now)
}

/// Refuses while a query is active or the cooldown runs.
pub fn check_can_submit(state: &UserState, now: DateTime<Utc>) -> Result<(), ServiceError> {
    if state.active_query_id.is_some() {
        return Err(ServiceError::QueryInProgress);
    }
    match running_until(state, now) {
        Some(next_allowed_at) => Err(ServiceError::CooldownActive { next_allowed_at }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shipped;
    use crate::test_support::at;
    use chrono::TimeDelta;

    #[test]
    fn cooldown_ends_exactly_seven_days_after_the_report() {
        let generated = at(2026, 11, 1, 10, 0, 0);
        let query = QueryId::generate();
        let active = UserState {
            active_query_id: Some(query),
            ..Default::default()
        };
        let state = after_report(&active, &query, generated, &shipped());
        assert_eq!(state.active_query_id, None);
        let just_before = generated + TimeDelta::days(7) - TimeDelta::seconds(1);
        match check_can_submit(&state, just_before) {
            Err(ServiceError::CooldownActive { next_allowed_at }) => {
                assert_eq!(next_allowed_at, generated + TimeDelta::days(7))
            }
            other => panic!("expected cooldown, got {other:?}"),
        }
        assert_eq!(
            running_until(&state, just_before),
            Some(generated + TimeDelta::days(7))
        );
        assert!(check_can_submit(&state, generated + TimeDelta::days(7)).is_ok());
        assert_eq!(running_until(&state, generated + TimeDelta::days(7)), None);
    }

    #[test]
    fn an_active_query_blocks_a_new_one() {
        let state = UserState {
            active_query_id: Some(QueryId::generate()),
            ..Default::default()
        };
        assert!(matches!(
            check_can_submit(&state, at(2026, 11, 1, 0, 0, 0)),
            Err(ServiceError::QueryInProgress)
        ));
    }

    #[test]
    fn a_report_releases_only_its_own_query_lock() {
        let other = QueryId::generate();
        let state = UserState {
            active_query_id: Some(other),
            ..Default::default()
        };
        let t = at(2026, 11, 1, 10, 0, 0);
        let next = after_report(&state, &QueryId::generate(), t, &shipped());
        assert_eq!(next.active_query_id, Some(other));
        assert_eq!(next.next_allowed_at, Some(t + TimeDelta::days(7)));
    }
}
