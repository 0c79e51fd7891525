//! Code SMS limits: one a minute and ten a China day, per user.

use super::*;

#[tokio::test]
async fn at_most_one_code_a_minute_and_ten_a_china_day() {
    let fx = Fx::new();
    fx.code(ALICE).await;

    for (after, retry) in [(1, 59), (30, 30), (59, 1)] {
        fx.clock.set(START + TimeDelta::seconds(after));
        assert_err!(
            fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
            ServiceError::TooManyRequests { retry_after_secs } => assert_eq!(retry_after_secs, retry)
        );
    }
    // The view-report purpose shares the limit.
    assert_err!(
        fx.try_code(ALICE, Purpose::ViewReport).await.map(|_| ()),
        ServiceError::TooManyRequests {
            retry_after_secs: 1
        }
    );
    assert_eq!(fx.sms.sent().len(), 1, "refused codes are not sent");

    fx.clock.set(START + TimeDelta::seconds(60));
    fx.code(ALICE).await;
    for _ in 3..=10 {
        fx.clock.advance(TimeDelta::seconds(60));
        fx.code(ALICE).await;
    }
    assert_eq!(fx.sms.sent().len(), 10);
    assert_eq!(fx.state(ALICE).sms_count, 10);

    // The 11th the same China day (still 10:10 there): wait until China midnight.
    fx.clock.advance(TimeDelta::seconds(60));
    let china_midnight = at(2026, 11, 28, 16, 0, 0);
    let wait = (china_midnight - fx.now()).num_seconds() as u64;
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests { retry_after_secs } => assert_eq!(retry_after_secs, wait)
    );
    fx.clock.set(china_midnight - TimeDelta::seconds(1));
    assert_err!(
        fx.try_code(ALICE, Purpose::SubmitQuery).await.map(|_| ()),
        ServiceError::TooManyRequests {
            retry_after_secs: 1
        }
    );
    assert_eq!(fx.sms.sent().len(), 10);

    fx.clock.set(china_midnight);
    fx.code(ALICE).await;
    assert_eq!(fx.state(ALICE).sms_count, 1);
    assert_eq!(fx.state(ALICE).sms_day.as_deref(), Some("2026-11-29"));
}

#[tokio::test]
async fn sms_limits_are_per_user() {
    let fx = Fx::new();
    fx.code(ALICE).await;
    fx.code(DAVE).await;
    assert_eq!(fx.sms.sent().len(), 2);
    assert_eq!(
        fx.sms.sent()[1].0,
        PhoneNumber::parse("+8613900139000").unwrap()
    );
}
