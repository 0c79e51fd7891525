//! Retention: a report lives `rules.report_retention` (7 days) from its generation, then
//! it is deleted (the query record stays, EXPIRED) and can no longer be viewed.

use chrono::{DateTime, Utc};

use crate::config::Rules;

/// When a report generated at `generated_at` expires.
pub fn report_expires_at(generated_at: DateTime<Utc>, rules: &Rules) -> DateTime<Utc> {
    generated_at + rules.report_retention
}

/// Whether a report expiring at `expires_at` is gone at `now` (from that instant on).
pub fn report_expired(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= expires_at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shipped;
    use crate::test_support::at;
    use chrono::TimeDelta;

    #[test]
    fn a_report_lives_exactly_seven_days() {
        let generated = at(2026, 11, 28, 9, 30, 0);
        let expires = report_expires_at(generated, &shipped());
        assert_eq!(expires, generated + TimeDelta::days(7));
        assert!(!report_expired(expires, expires - TimeDelta::seconds(1)));
        assert!(report_expired(expires, expires));
    }
}
