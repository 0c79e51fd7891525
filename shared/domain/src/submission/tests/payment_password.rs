//! The payment password: five wrong ones lock submission for 24 hours.

use super::*;

#[tokio::test]
async fn five_wrong_passwords_lock_for_24_hours() {
    let fx = Fx::new();
    let attempt = |pwd: &'static str| {
        let fx = &fx;
        async move {
            let c = fx.code(ALICE).await;
            let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), pwd);
            fx.submit(ALICE, Some(&format!("p{}", fx.now().timestamp())), &raw)
                .await
        }
    };

    for n in 1..=4 {
        assert_err!(
            attempt("000000").await,
            ServiceError::PaymentPasswordInvalid
        );
        assert_eq!(fx.state(ALICE).password_failures, n, "failures counted");
        assert_eq!(fx.state(ALICE).password_locked_until, None);
        fx.assert_nothing_recorded(ALICE);
        fx.clock.advance(TimeDelta::seconds(60));
    }
    let locked_at = fx.now();
    let until = locked_at + TimeDelta::hours(24);
    assert_err!(attempt("000000").await, ServiceError::PaymentPasswordLocked { until: u } => {
        assert_eq!(u, until)
    });
    assert_eq!(fx.state(ALICE).password_locked_until, Some(until));
    fx.assert_nothing_recorded(ALICE);

    fx.clock.advance(TimeDelta::seconds(60));
    assert_err!(attempt(PASSWORD).await, ServiceError::PaymentPasswordLocked { until: u } => {
        assert_eq!(u, until)
    });
    fx.assert_nothing_recorded(ALICE);

    // One second before the lock ends: still locked (and the code is left unused).
    fx.clock.set(until - TimeDelta::seconds(1));
    let c = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("almost"), &raw).await,
        ServiceError::PaymentPasswordLocked { .. }
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(until);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(
        fx.submit(ALICE, Some("unlocked"), &raw).await.unwrap().0,
        202
    );
    let state = fx.state(ALICE);
    assert_eq!(state.password_failures, 0);
    assert_eq!(state.password_locked_until, None);
}
