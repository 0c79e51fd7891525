//! The China Standard Time calendar day (UTC+8, no daylight saving): the day the daily
//! SMS cap counts, whatever the server's or the user's time zone.

use time::macros::offset;
use time::{Duration, OffsetDateTime, UtcOffset};

/// China Standard Time.
pub const CHINA_STANDARD_TIME: UtcOffset = offset!(+8);

/// The China day of `now`, as stored in `UserState::sms_day` (`2026-11-28`).
pub fn china_day(now: OffsetDateTime) -> String {
    now.to_offset(CHINA_STANDARD_TIME).date().to_string()
}

/// The next China midnight after `now`: when the day's count starts again.
pub fn next_china_midnight(now: OffsetDateTime) -> OffsetDateTime {
    let local = now.to_offset(CHINA_STANDARD_TIME);
    match local.date().next_day() {
        Some(tomorrow) => tomorrow.midnight().assume_offset(CHINA_STANDARD_TIME),
        // Only at the end of `time`'s calendar (year 9999): a day from now will do.
        None => now + Duration::DAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_china_day_turns_at_16_00_utc() {
        assert_eq!(china_day(datetime!(2026-11-28 15:59:59 UTC)), "2026-11-28");
        assert_eq!(china_day(datetime!(2026-11-28 16:00:00 UTC)), "2026-11-29");
        // The offset of the input does not matter, only the instant.
        assert_eq!(china_day(datetime!(2026-11-28 23:30:00 -5)), "2026-11-29");
    }

    #[test]
    fn the_next_midnight_is_the_start_of_the_next_china_day() {
        let midnight = datetime!(2026-11-28 16:00:00 UTC);
        assert_eq!(
            next_china_midnight(datetime!(2026-11-28 15:00:00 UTC)),
            midnight
        );
        assert_eq!(
            next_china_midnight(datetime!(2026-11-28 00:00:00 UTC)),
            midnight
        );
        // At midnight itself the next one is a day later.
        assert_eq!(next_china_midnight(midnight), midnight + Duration::DAY);
    }
}
