//! The product rules, one file each: small pure functions of the inputs and `now`
//! (never a clock), with their unit tests beside them. Services, adapters and the
//! in-memory store call these instead of re-deriving a rule. The durations and limits
//! themselves are configuration (`shared/config/service.json`, read into
//! [`crate::config::Rules`]); what they mean is decided here.
//!
//! | Rule | File |
//! |------|------|
//! | Cooldown: one active query per user; a new one 7 days after the last report | [`cooldown`] |
//! | The 24-hour report deadline and the collection margin before it | [`deadline`] |
//! | SMS codes: 5-minute validity, attempts per code, one SMS a minute, ten a day | [`sms_code`] |
//! | The China Standard Time day the daily SMS cap counts, and its midnight | [`china_day`] |
//! | Payment-password lock: 5 comparisons, then locked 24 hours | [`password`] |
//! | Retention: a report lives 7 days, then it is deleted | [`retention`] |
//! | Idempotency keys: replay, in-progress lease, retention | [`idempotency`] |
//! | Admission to a bank or the SMS channel: rate permits, in-flight slots, circuit breaker | [`admission`] |
//! | Disputes: sent until acknowledged, given up after 72 hours; card ids | [`dispute`] |
//! | View log: every view of a report with its step-up method, the latest 50 kept | [`view_log`] |
//!
//! Masking is a property of the values, not of a use case: a card shows its first 4 and
//! last 4 digits (`model/card.rs`, `MaskedCard::masked_number`; the bank answer is refused outright if it holds a full number, `bank/card_number.rs`), a phone its first 3 and
//! last 4 (`model/phone.rs`, `PhoneNumber::masked`).
//!
//! The DynamoDB adapter has to state some of these rules as condition expressions, so
//! the table decides them atomically; those conditions name the rule they mirror, and
//! the store suites (`tests/limits_store.rs`, `tests/submission_store.rs`) hold both
//! sides to the same behaviour.

pub mod admission;
pub mod china_day;
pub mod cooldown;
pub mod deadline;
pub mod dispute;
pub mod idempotency;
pub mod password;
pub mod retention;
pub mod sms_code;
pub mod view_log;

use chrono::TimeDelta;

/// Whole seconds to wait, rounded up and at least 1 (a `Retry-After` of 0 would invite an
/// immediate retry that is refused again).
pub(crate) fn retry_after_secs(wait: TimeDelta) -> u64 {
    let secs = wait.num_seconds() + i64::from(wait.subsec_nanos() > 0);
    secs.max(1) as u64
}

#[cfg(test)]
pub(crate) fn shipped() -> crate::config::Rules {
    crate::config::ServiceConfig::parse(crate::config::DEFAULT_CONFIG)
        .expect("the shipped configuration parses")
        .rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(TimeDelta::seconds(3)), 3);
        assert_eq!(retry_after_secs(TimeDelta::milliseconds(3001)), 4);
        assert_eq!(retry_after_secs(TimeDelta::zero()), 1);
        assert_eq!(retry_after_secs(TimeDelta::seconds(-5)), 1);
    }
}
