//! The face-verification token a submission carries: forged, stale, failed, another
//! user's, used before.

use super::*;

#[tokio::test]
async fn forged_stale_failed_and_other_users_face_tokens_are_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let other = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let (other_private, _) = dev::generate_ed25519();
    let key = new_key();
    let cases = [
        (
            "forged (another key)",
            face_with(&other_private, &user.id, "pass", now()),
        ),
        (
            "stale (issued 301 s ago)",
            face_with(
                &api.keys.face_private,
                &user.id,
                "pass",
                now() - TimeDelta::seconds(301),
            ),
        ),
        ("another user's token", face(&api, &other)),
        (
            "issued for another service",
            face_issued(
                &api.keys.face_private,
                "another-service",
                "SUBMIT_QUERY",
                &user.id,
                "pass",
                now(),
            ),
        ),
        (
            "a pass taken to view a report",
            face_issued(
                &api.keys.face_private,
                FACE_AUDIENCE,
                "VIEW_REPORT",
                &user.id,
                "pass",
                now(),
            ),
        ),
        (
            "a failed check",
            face_with(&api.keys.face_private, &user.id, "fail", now()),
        ),
        (
            "issued in the future",
            face_with(
                &api.keys.face_private,
                &user.id,
                "pass",
                now() + TimeDelta::minutes(5),
            ),
        ),
        (
            "not a token",
            Face {
                token: "not-a-token".into(),
                nonce: ulid::Ulid::generate().to_string(),
            },
        ),
    ];
    for (what, f) in &cases {
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(p.submission(f).to_string()),
            Some(&f.nonce),
            422,
            "FACE_VERIFICATION_FAILED",
            what,
        )
        .await;
    }
    // Nothing was consumed: the code still submits with a good token.
    let ok = submit(&api, &user, &key, &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn a_used_face_token_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let f = face(&api, &user);
    let ok = submit(&api, &user, &new_key(), &p.submission(&f)).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert!(api.nonce_used(&f.nonce).await);
    clear_active_query(&api, &user).await;

    let p = Proofs::with_code(p.agreement, api.verification(&user, "SUBMIT_QUERY").await);
    let key = new_key();
    assert_refused_submission(
        &api,
        &user,
        Some(&key),
        Some(p.submission(&f).to_string()),
        None,
        422,
        "FACE_VERIFICATION_FAILED",
        "reused face token",
    )
    .await;
    // The fresh code was not consumed by the refusal.
    let ok = submit(&api, &user, &key, &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}
