//! Retention: a report lives `rules.report_retention` (7 days) from its generation, then
//! it is deleted (the query record stays, EXPIRED) and can no longer be viewed.

use time::OffsetDateTime;

use crate::config::Rules;

/// When a report generated at `generated_at` expires.
pub fn report_expires_at(generated_at: OffsetDateTime, rules: &Rules) -> OffsetDateTime {
    generated_at + rules.report_retention
}

/// Whether a report expiring at `expires_at` is gone at `now` (from that instant on).
pub fn report_expired(expires_at: OffsetDateTime, now: OffsetDateTime) -> bool {
    now >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shipped;
    use time::macros::datetime;
    use time::Duration;

    #[test]
    fn a_report_lives_exactly_seven_days() {
        let generated = datetime!(2026-11-28 09:30:00 UTC);
        let expires = report_expires_at(generated, &shipped());
        assert_eq!(expires, generated + Duration::days(7));
        assert!(!report_expired(expires, expires - Duration::seconds(1)));
        assert!(report_expired(expires, expires));
    }
}
