//! Eligibility: real-name verified, in a pilot region, no active query, not cooling down.

use super::*;

#[tokio::test]
async fn ineligible_users_are_refused_submission_and_codes() {
    let fx = Fx::new();
    let cases = [
        (BOB, "not real-name"),
        (CAROL, "outside the pilot"),
        (NOBODY, "no profile"),
    ];
    for (user, why) in cases {
        let raw = body(
            &["ICBC"],
            &VerificationId::generate().to_string(),
            "123456",
            &fx.face(user),
            PASSWORD,
        );
        let got = fx.submit(user, Some("k1"), &raw).await;
        match user {
            CAROL => assert_err!(got, ServiceError::RegionNotInPilot),
            _ => assert_err!(got, ServiceError::NotRealNameVerified),
        }
        let code = fx.try_code(user, Purpose::SubmitQuery).await.map(|_| ());
        match user {
            CAROL => assert_err!(code, ServiceError::RegionNotInPilot),
            _ => assert_err!(code, ServiceError::NotRealNameVerified),
        }
        fx.assert_nothing_recorded(user);
        assert_eq!(fx.state(user).sms_count, 0, "{why}: no SMS slot taken");
    }
    assert!(fx.sms.sent().is_empty(), "no SMS sent to ineligible users");
}

#[tokio::test]
async fn eligibility_reports_flags_and_the_active_query() {
    let fx = Fx::new();
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert!(e.real_name_verified && e.in_pilot_region && e.eligible);
    assert_eq!(e.active_query_id, None);
    assert_eq!(e.next_allowed_at, None);
    assert_eq!(e.agreement_version, AGREEMENT);

    let e = fx.svc.eligibility(&uid(BOB)).await.unwrap();
    assert!(!e.real_name_verified && !e.eligible);
    let e = fx.svc.eligibility(&uid(CAROL)).await.unwrap();
    assert!(e.real_name_verified && !e.in_pilot_region && !e.eligible);
    let e = fx.svc.eligibility(&uid(NOBODY)).await.unwrap();
    assert!(!e.real_name_verified && !e.in_pilot_region && !e.eligible);

    let raw = fx.good_body(ALICE).await;
    let (_, resp) = fx.submit(ALICE, Some("k1"), &raw).await.unwrap();
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert!(e.real_name_verified && e.in_pilot_region);
    assert_eq!(e.active_query_id.as_deref(), resp["query_id"].as_str());
    assert!(!e.eligible, "a query is in progress");

    // The report was generated: the lock is gone, the cooldown runs for 7 days.
    let next = fx.now() + TimeDelta::days(7);
    fx.store.set_state(
        &uid(ALICE),
        UserState {
            active_query_id: None,
            next_allowed_at: Some(next),
            ..fx.state(ALICE)
        },
    );
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert_eq!(e.active_query_id, None);
    assert_eq!(e.next_allowed_at, Some(next));
    assert!(!e.eligible, "cooling down");
    fx.clock.set(next);
    let e = fx.svc.eligibility(&uid(ALICE)).await.unwrap();
    assert_eq!(
        e.next_allowed_at, None,
        "a past next_allowed_at is not reported"
    );
    assert!(e.eligible);
}
