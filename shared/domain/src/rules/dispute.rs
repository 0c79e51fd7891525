//! Disputes ("this card is not mine", decision 157): sent to the bank until it
//! acknowledges, with backoff, and given up 72 hours after the person asked; a send in
//! flight holds the dispute for a lease, after which the sweeper sends it again.

use chrono::{DateTime, TimeDelta, Utc};

use crate::bank::retry;

/// A dispute not acknowledged this long after it was made is FAILED.
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(72);

/// How long a claimed send keeps the dispute from being sent again (well past a bank
/// call's timeout): a sender that crashed mid-call is covered by the next sweep after.
pub const SEND_LEASE: TimeDelta = TimeDelta::minutes(2);

/// Whether a dispute made at `created_at` is past its give-up time at `now`.
pub fn given_up(created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= created_at + GIVE_UP_AFTER
}

/// When to send again after send `attempt` failed transiently (the inquiries' backoff,
/// `bank::retry`), or `None` when that would be past the give-up time.
pub fn next_send_at(
    created_at: DateTime<Utc>,
    now: DateTime<Utc>,
    attempt: u32,
    jitter: f64,
) -> Option<DateTime<Utc>> {
    let at = now + retry::backoff(attempt, jitter);
    (!given_up(created_at, at)).then_some(at)
}

/// The bank's HTTP status for a dispute: acknowledged (200), refused for good (the
/// request is wrong or names no card: 400, 404, 409, any other 4xx but 401, 408 and
/// 429, and redirects, which are never followed), or worth another send (5xx, 401 —
/// a secret being rotated —, 408, 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Acknowledged,
    Refused,
    Transient,
}

pub fn reply_of(status: u16) -> Reply {
    match status {
        200 => Reply::Acknowledged,
        401 | 408 | 429 => Reply::Transient,
        300..=499 => Reply::Refused,
        _ => Reply::Transient,
    }
}

/// A report card's id: `<bank code>-<n>`, n its 1-based place among the bank's cards
/// in the report's order. Stable for the report (its content never changes), unique
/// within it, and no card data.
pub fn card_id(bank: &str, place: usize) -> String {
    format!("{bank}-{place}")
}

/// Whether `s` has the form of a card id (2–6 upper-case letters, `-`, 1 to 4 digits,
/// no leading zero).
pub fn is_card_id(s: &str) -> bool {
    let Some((bank, n)) = s.split_once('-') else {
        return false;
    };
    (2..=6).contains(&bank.len())
        && bank.bytes().all(|b| b.is_ascii_uppercase())
        && (1..=4).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
        && !n.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::at;

    #[test]
    fn gives_up_72_hours_after_the_dispute() {
        let t = at(2026, 11, 28, 12, 0, 0);
        assert!(!given_up(t, t + TimeDelta::hours(71)));
        assert!(given_up(t, t + TimeDelta::hours(72)));
        assert_eq!(next_send_at(t, t, 1, 1.0), Some(t + TimeDelta::seconds(2)));
        let late = t + TimeDelta::hours(72) - TimeDelta::seconds(1);
        assert_eq!(next_send_at(t, late, 1, 1.0), None);
    }

    #[test]
    fn replies_are_acknowledged_refused_or_worth_another_send() {
        assert_eq!(reply_of(200), Reply::Acknowledged);
        for s in [400, 403, 404, 409, 302] {
            assert_eq!(reply_of(s), Reply::Refused, "{s}");
        }
        for s in [500, 502, 503, 504, 401, 408, 429, 202] {
            assert_eq!(reply_of(s), Reply::Transient, "{s}");
        }
    }

    #[test]
    fn card_ids_have_one_form() {
        assert_eq!(card_id("ICBC", 3), "ICBC-3");
        assert!(is_card_id("ICBC-3"));
        assert!(is_card_id("CMB-1234"));
        for bad in [
            "",
            "ICBC",
            "ICBC-",
            "icbc-1",
            "ICBC-01",
            "ICBC-12345",
            "I-1",
            "ICBC-1-2",
            "ICBC-x",
        ] {
            assert!(!is_card_id(bad), "{bad}");
        }
    }
}
