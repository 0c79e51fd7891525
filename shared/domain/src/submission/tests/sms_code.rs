//! The SMS code of a submission: right, fresh, unused, the user's own, for submitting.

use super::*;

#[tokio::test]
async fn a_wrong_code_fails_and_the_right_one_still_works() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    // Four wrong tries: one short of burning the code.
    for i in 1..=4 {
        let raw = body(&["ICBC"], &c.id, &wrong_code(&c.code, i), &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("w"), &raw).await,
            ServiceError::VerificationFailed
        );
        fx.assert_nothing_recorded(ALICE);
    }
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("w"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn five_wrong_codes_burn_the_code() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    for i in 1..=5 {
        let raw = body(&["ICBC"], &c.id, &wrong_code(&c.code, i), &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("w"), &raw).await,
            ServiceError::VerificationFailed
        );
    }
    let raw = body(&["ICBC"], &c.id, &c.code, &face, PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("w"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test]
async fn a_code_expires_five_minutes_after_it_was_sent() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let expires_at = START + TimeDelta::minutes(5);

    fx.clock.set(expires_at);
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("e1"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(expires_at + TimeDelta::hours(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("e2"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);

    fx.clock.set(expires_at - TimeDelta::seconds(1));
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("e3"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn a_code_for_viewing_a_report_cannot_submit() {
    let fx = Fx::new();
    let c = fx.try_code(ALICE, Purpose::ViewReport).await.unwrap();
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("v"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
}

#[tokio::test]
async fn another_users_code_cannot_submit() {
    let fx = Fx::new();
    let dave = fx.code(DAVE).await;
    let raw = body(&["ICBC"], &dave.id, &dave.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("o"), &raw).await,
        ServiceError::VerificationFailed
    );
    fx.assert_nothing_recorded(ALICE);
    assert_eq!(fx.state(DAVE).active_query_id, None);
    // Dave's code is still his.
    let raw = body(&["ICBC"], &dave.id, &dave.code, &fx.face(DAVE), PASSWORD);
    assert_eq!(fx.submit(DAVE, Some("o"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn malformed_verification_ids_and_codes_fail() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let face = fx.face(ALICE);
    let lower = c.id.to_lowercase();
    let unknown = VerificationId::generate().to_string();
    let too_long = format!("{}0", c.code);
    let fullwidth: String = c
        .code
        .chars()
        .map(|d| char::from_u32(d as u32 - '0' as u32 + '０' as u32).unwrap())
        .collect();
    let cases: Vec<(&str, &str)> = vec![
        ("not-a-ulid", &c.code),
        ("", &c.code),
        (&lower, &c.code),
        (&unknown, &c.code),
        (&c.id, &c.code[..5]),
        (&c.id, &too_long),
        (&c.id, "12345a"),
        (&c.id, ""),
        (&c.id, &fullwidth),
    ];
    for (id, code) in cases {
        let raw = body(&["ICBC"], id, code, &face, PASSWORD);
        assert_err!(
            fx.submit(ALICE, Some("m"), &raw).await,
            ServiceError::VerificationFailed
        );
        fx.assert_nothing_recorded(ALICE);
    }
}

#[tokio::test]
async fn a_used_code_cannot_be_used_again() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("first"), &raw).await.unwrap().0, 202);

    fx.release_active_query(ALICE);
    fx.clock.advance(TimeDelta::seconds(10));
    let again = body(&["ICBC"], &c.id, &c.code, &fx.face(ALICE), PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("second"), &again).await,
        ServiceError::VerificationFailed
    );
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    assert_eq!(fx.state(ALICE).active_query_id, None);
}
