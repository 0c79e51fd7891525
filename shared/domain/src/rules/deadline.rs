//! The 24-hour report deadline (`rules.report_deadline`) and the collection margin
//! before it (`rules.collection_margin`): banks are asked and waited for until
//! `collect_until`, so the report (built by the next sweep at the latest) is out by
//! `report_due_by` itself. After `collect_until`, nothing more is sent and whoever has
//! not answered is NO_RESPONSE.

use chrono::{DateTime, Utc};

use crate::config::Rules;

/// The two instants of a query, fixed when it is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryDeadlines {
    /// Promised to the user: the report is out by then.
    pub report_due_by: DateTime<Utc>,
    /// The end of collection: `report_due_by` less the collection margin.
    pub collect_until: DateTime<Utc>,
}

/// The deadlines of a query submitted at `submitted_at`.
pub fn for_submission(submitted_at: DateTime<Utc>, rules: &Rules) -> QueryDeadlines {
    let report_due_by = submitted_at + rules.report_deadline;
    QueryDeadlines {
        report_due_by,
        collect_until: report_due_by - rules.collection_margin,
    }
}

/// Whether banks are still asked and waited for at `at`: strictly before
/// `collect_until`. The same boundary decides whether a retry fits, whether the
/// aggregator waits for open legs, and when the sweeper's deadline entry is due.
pub fn collecting(collect_until: DateTime<Utc>, at: DateTime<Utc>) -> bool {
    at < collect_until
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::shipped;
    use crate::test_support::at;
    use chrono::TimeDelta;

    #[test]
    fn the_report_is_due_24_hours_on_and_collection_ends_10_minutes_before() {
        let t = at(2026, 11, 28, 9, 30, 0);
        let d = for_submission(t, &shipped());
        assert_eq!(d.report_due_by, t + TimeDelta::hours(24));
        assert_eq!(
            d.collect_until,
            t + TimeDelta::hours(24) - TimeDelta::minutes(10)
        );
    }

    #[test]
    fn collection_ends_at_collect_until_itself() {
        let until = at(2026, 11, 29, 9, 20, 0);
        assert!(collecting(until, until - TimeDelta::nanoseconds(1)));
        assert!(!collecting(until, until));
        assert!(!collecting(until, until + TimeDelta::seconds(1)));
    }
}
