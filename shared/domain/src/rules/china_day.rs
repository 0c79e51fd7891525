//! The China Standard Time calendar day (UTC+8, no daylight saving): the day the daily
//! SMS cap counts, whatever the server's or the user's time zone.

use chrono::{DateTime, FixedOffset, NaiveTime, TimeDelta, Utc};

/// China Standard Time.
pub const CHINA_STANDARD_TIME: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(cst) => cst,
    None => panic!("UTC+8 is a valid offset"),
};

/// The China day of `now`, as stored in `UserState::sms_day` (`2026-11-28`).
pub fn china_day(now: DateTime<Utc>) -> String {
    now.with_timezone(&CHINA_STANDARD_TIME)
        .date_naive()
        .to_string()
}

/// The next China midnight after `now`: when the day's count starts again.
pub fn next_china_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&CHINA_STANDARD_TIME).date_naive();
    match local.succ_opt() {
        // A fixed offset has no gaps or folds: a local midnight is exactly one instant.
        Some(tomorrow) => tomorrow
            .and_time(NaiveTime::MIN)
            .and_local_timezone(CHINA_STANDARD_TIME)
            .single()
            .map_or(now + TimeDelta::days(1), |t| t.with_timezone(&Utc)),
        // Only at the end of chrono's calendar: a day from now will do.
        None => now + TimeDelta::days(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    #[test]
    fn the_china_day_turns_at_16_00_utc() {
        assert_eq!(china_day(at(2026, 11, 28, 15, 59, 59)), "2026-11-28");
        assert_eq!(china_day(at(2026, 11, 28, 16, 0, 0)), "2026-11-29");
        // The offset the instant was written in does not matter, only the instant.
        let new_york = FixedOffset::west_opt(5 * 3600).unwrap();
        let evening = at(2026, 11, 28, 23, 30, 0)
            .naive_utc()
            .and_local_timezone(new_york)
            .unwrap();
        assert_eq!(china_day(evening.with_timezone(&Utc)), "2026-11-29");
    }

    #[test]
    fn the_next_midnight_is_the_start_of_the_next_china_day() {
        let midnight = at(2026, 11, 28, 16, 0, 0);
        assert_eq!(next_china_midnight(at(2026, 11, 28, 15, 0, 0)), midnight);
        assert_eq!(next_china_midnight(at(2026, 11, 28, 0, 0, 0)), midnight);
        // At midnight itself the next one is a day later.
        assert_eq!(next_china_midnight(midnight), midnight + TimeDelta::days(1));
    }
}
