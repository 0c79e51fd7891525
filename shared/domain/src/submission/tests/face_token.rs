//! The face token of a submission: signed by the provider, for this service, user and
//! purpose, fresh, passed, its nonce used once.

use super::*;

#[tokio::test]
async fn bad_face_tokens_are_refused() {
    let fx = Fx::new();
    let c = fx.code(ALICE).await;
    let now = fx.now();
    let (other_private, _) = dev::generate_ed25519();
    let forged = fx
        .face_as(&other_private, FACE_AUDIENCE)
        .token(ALICE, "SUBMIT_QUERY", "pass", now, "forged")
        .unwrap();
    let other_issuer = dev::FaceProvider {
        issuer: "someone-else",
        ..fx.face_as(&fx.face_private, FACE_AUDIENCE)
    }
    .token(ALICE, "SUBMIT_QUERY", "pass", now, "iss")
    .unwrap();
    let other_audience = fx
        .face_as(&fx.face_private, "another-service")
        .token(ALICE, "SUBMIT_QUERY", "pass", now, "aud")
        .unwrap();
    let view_pass = fx
        .face_as(&fx.face_private, FACE_AUDIENCE)
        .token(ALICE, "VIEW_REPORT", "pass", now, "view")
        .unwrap();
    let stale = fx.face_with(
        ALICE,
        "pass",
        now - TimeDelta::minutes(5) - TimeDelta::seconds(1),
        "stale",
    );
    let other_user = fx.face_with(DAVE, "pass", now, "dave");
    let failed = fx.face_with(ALICE, "fail", now, "failed");
    let future = fx.face_with(ALICE, "pass", now + TimeDelta::minutes(5), "future");
    let empty_nonce = fx.face_with(ALICE, "pass", now, "");
    for (why, token) in [
        ("signed by another key", forged.as_str()),
        ("another issuer", &other_issuer),
        ("issued for another service", &other_audience),
        ("a pass taken to view a report", &view_pass),
        ("older than 5 minutes", &stale),
        ("another user", &other_user),
        ("result fail", &failed),
        ("issued in the future", &future),
        ("empty nonce", &empty_nonce),
        ("not a token", "garbage"),
        ("empty", ""),
    ] {
        let raw = body(&["ICBC"], &c.id, &c.code, token, PASSWORD);
        let got = fx.submit(ALICE, Some("f"), &raw).await;
        assert!(
            matches!(got, Err(ServiceError::FaceVerificationFailed)),
            "{why}: {got:?}"
        );
        fx.assert_nothing_recorded(ALICE);
    }
    // Exactly 5 minutes old is still fine, and the code survived the refusals.
    let edge = fx.face_with(ALICE, "pass", now - TimeDelta::minutes(5), "edge");
    let raw = body(&["ICBC"], &c.id, &c.code, &edge, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("f"), &raw).await.unwrap().0, 202);
}

#[tokio::test]
async fn a_face_token_nonce_is_single_use() {
    let fx = Fx::new();
    let face = fx.face(ALICE);
    let c1 = fx.code(ALICE).await;
    let raw = body(&["ICBC"], &c1.id, &c1.code, &face, PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("first"), &raw).await.unwrap().0, 202);

    fx.release_active_query(ALICE);
    fx.clock.advance(TimeDelta::seconds(60));
    let c2 = fx.code(ALICE).await;
    let again = body(&["ICBC"], &c2.id, &c2.code, &face, PASSWORD);
    assert_err!(
        fx.submit(ALICE, Some("second"), &again).await,
        ServiceError::FaceVerificationFailed
    );
    assert_eq!(fx.store.queries().len(), 1);
    assert_eq!(fx.store.consents().len(), 1);
    assert_eq!(fx.state(ALICE).active_query_id, None);

    // The fresh code was not consumed by the refusal.
    let ok = body(&["ICBC"], &c2.id, &c2.code, &fx.face(ALICE), PASSWORD);
    assert_eq!(fx.submit(ALICE, Some("third"), &ok).await.unwrap().0, 202);
}
