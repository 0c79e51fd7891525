//! Who may query: real-name users in a pilot region.

use super::*;

#[tokio::test]
async fn users_not_real_name_or_outside_the_pilot_get_403_on_both_posts() {
    let api = Api::get().await;
    for (kind, code, real_name, in_pilot) in [
        (UserKind::NotRealName, "NOT_REAL_NAME_VERIFIED", false, true),
        (UserKind::OutsidePilot, "REGION_NOT_IN_PILOT", true, false),
    ] {
        let user = api.new_user(kind).await;
        let token = api.token(&user);
        let e = api.get_json(ELIGIBILITY, &token).await;
        assert_eq!(e.status, 200, "{e:?}");
        assert_eq!(body(&e)["real_name_verified"], real_name);
        assert_eq!(body(&e)["in_pilot_region"], in_pilot);
        assert_eq!(body(&e)["eligible"], false);
        let agreement = body(&e)["agreement_version"].as_str().unwrap().to_owned();

        let before = api.snapshot(&user).await;
        let reply = request_code(&api, &user, "SUBMIT_QUERY").await;
        assert_error(&reply, 403, code, &format!("{kind:?}: verification"));
        assert_unchanged(&before, &api.snapshot(&user).await, "403 verification");
        assert_eq!(sms_count(&api, &user).await, 0, "{kind:?}: no SMS");

        let f = face(&api, &user);
        let req = submission(
            &agreement,
            &ulid::Ulid::generate().to_string(),
            "123456",
            &f,
        );
        assert_refused_submission(
            &api,
            &user,
            Some(&new_key()),
            Some(req.to_string()),
            Some(&f.nonce),
            403,
            code,
            &format!("{kind:?}: submission"),
        )
        .await;
    }
}
