//! The app token on every route of the submission function: missing, expired, forged.

use super::*;

#[tokio::test]
async fn every_route_refuses_missing_expired_and_forged_tokens() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let agreement = agreement_version(&api, &user).await;
    let t = now();
    let token = |iss: &str, aud: &str, at: DateTime<Utc>, ttl: i64| {
        dev::app_token(&api.keys.app_private, iss, aud, &user.id, at, ttl).unwrap()
    };
    let valid = api.token(&user);
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("garbage bearer token", Some("Bearer not-a-jwt".into())),
        ("empty bearer token", Some("Bearer ".into())),
        ("token without the Bearer scheme", Some(valid.clone())),
        ("Basic credentials", Some("Basic dXNlcjpwYXNz".into())),
        (
            "expired JWT",
            Some(format!(
                "Bearer {}",
                token(
                    APP_JWT_ISSUER,
                    APP_JWT_AUDIENCE,
                    t - TimeDelta::hours(2),
                    3600
                )
            )),
        ),
        (
            "JWT not valid yet",
            Some(format!(
                "Bearer {}",
                token(
                    APP_JWT_ISSUER,
                    APP_JWT_AUDIENCE,
                    t + TimeDelta::hours(1),
                    3600
                )
            )),
        ),
        (
            "JWT signed by another key",
            Some(format!("Bearer {}", other_key_app_token(&user))),
        ),
        (
            "JWT for another audience",
            Some(format!(
                "Bearer {}",
                token(APP_JWT_ISSUER, "another-app", t, 3600)
            )),
        ),
        (
            "JWT from another issuer",
            Some(format!(
                "Bearer {}",
                token("https://evil.example", APP_JWT_AUDIENCE, t, 3600)
            )),
        ),
    ];
    let f = face(&api, &user);
    let submit_body = submission(
        &agreement,
        &ulid::Ulid::generate().to_string(),
        "123456",
        &f,
    )
    .to_string();
    let key = new_key();
    let routes: Vec<(&str, &str, Option<String>)> = vec![
        ("GET", BANKS, None),
        ("GET", ELIGIBILITY, None),
        (
            "POST",
            VERIFICATIONS,
            Some(json!({"purpose": "SUBMIT_QUERY"}).to_string()),
        ),
        ("POST", CARD_QUERIES, Some(submit_body)),
    ];
    let before = api.snapshot(&user).await;
    for (method, path, body) in &routes {
        for (what, auth) in &bad {
            let mut headers: Vec<(&str, &str)> = vec![("Idempotency-Key", key.as_str())];
            if let Some(a) = auth {
                headers.push(("Authorization", a.as_str()));
            }
            let reply = api.call(method, path, None, &headers, body.clone()).await;
            assert_error(
                &reply,
                401,
                "UNAUTHENTICATED",
                &format!("{method} {path}: {what}"),
            );
        }
    }
    assert_unchanged(&before, &api.snapshot(&user).await, "401s");
    assert_eq!(
        sms_count(&api, &user).await,
        0,
        "no SMS was sent for a refused request"
    );
    assert!(!api.nonce_used(&f.nonce).await);
    // The valid token works.
    assert_eq!(api.get_json(BANKS, &valid).await.status, 200);
}
