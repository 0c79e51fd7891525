//! The view log: every time a report is shown is recorded on its query record, with the
//! step-up method that opened it, so the person can see whether someone else did. No
//! card data; the record keeps the latest [`MAX_VIEWS`] entries and the total count.

use crate::records::ReportView;

/// Entries kept on the record (the oldest go first); `views_total` keeps counting.
pub const MAX_VIEWS: usize = 50;

/// The log after `view`: oldest first, at most [`MAX_VIEWS`] entries.
pub fn with_view(log: &[ReportView], view: ReportView) -> Vec<ReportView> {
    let keep = log.len().min(MAX_VIEWS - 1);
    let mut out = log[log.len() - keep..].to_vec();
    out.push(view);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::step_up::StepUpMethod;
    use chrono::TimeDelta;

    use crate::test_support::at;

    fn view(i: i64) -> ReportView {
        ReportView {
            at: at(2026, 11, 28, 9, 30, 0) + TimeDelta::minutes(i),
            method: if i % 2 == 0 {
                StepUpMethod::Sms
            } else {
                StepUpMethod::Face
            },
        }
    }

    #[test]
    fn views_are_appended_oldest_first() {
        let log = with_view(&[], view(0));
        let log = with_view(&log, view(1));
        assert_eq!(log, [view(0), view(1)]);
    }

    #[test]
    fn the_log_keeps_the_latest_fifty() {
        let mut log = Vec::new();
        for i in 0..MAX_VIEWS as i64 {
            log = with_view(&log, view(i));
        }
        assert_eq!(log.len(), MAX_VIEWS);
        assert_eq!(log[0], view(0));
        let log = with_view(&log, view(50));
        assert_eq!(log.len(), MAX_VIEWS);
        assert_eq!(log[0], view(1), "the oldest went");
        assert_eq!(log[MAX_VIEWS - 1], view(50));
        // A log longer than the limit (written by an older version) is cut too.
        let long: Vec<ReportView> = (0..80).map(view).collect();
        let log = with_view(&long, view(80));
        assert_eq!(log.len(), MAX_VIEWS);
        assert_eq!(log[MAX_VIEWS - 1], view(80));
        assert_eq!(log[0], view(31));
    }
}
