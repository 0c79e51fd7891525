//! `POST /v1/verifications` and the SMS code a submission carries: attempts, expiry,
//! single use, purpose, owner, one code a minute.

use super::*;

#[tokio::test]
async fn a_wrong_code_counts_one_attempt_and_the_right_code_then_works() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let wrong: String = p
        .code
        .chars()
        .map(|c| char::from(b'0' + (c.to_digit(10).unwrap() as u8 + 1) % 10))
        .collect();
    let key = new_key();

    let f = face(&api, &user);
    let before = api.snapshot(&user).await;
    let reply = submit(
        &api,
        &user,
        &key,
        &submission(&p.agreement, &p.verification_id, &wrong, &f),
    )
    .await;
    assert_error(&reply, 422, "VERIFICATION_FAILED", "wrong code");
    let after = api.snapshot(&user).await;
    let expected: Changes = [(
        (
            format!("VERIF#{}", p.verification_id),
            "attempts".to_owned(),
        ),
        (n(0), n(1)),
    )]
    .into_iter()
    .collect();
    assert_eq!(
        changes(&before, &after),
        expected,
        "only the code's attempts changed"
    );
    assert!(!has_query_records(&after), "no query record");
    assert!(
        !api.nonce_used(&f.nonce).await,
        "the face token was not consumed"
    );

    // A code that is not six digits is refused without counting.
    // (Bodies the contract refuses: edited after the valid fixture is built.)
    for malformed in ["12345", "1234567", "abcdef"] {
        let mut body = p.submission(&f);
        body["verification"]["sms_code"] = malformed.into();
        assert_refused_submission(
            &api,
            &user,
            Some(&key),
            Some(body.to_string()),
            Some(&f.nonce),
            422,
            "VERIFICATION_FAILED",
            &format!("code {malformed:?}"),
        )
        .await;
    }

    let ok = submit(&api, &user, &key, &p.submission(&f)).await;
    assert_eq!(ok.status, 202, "the right code still works: {ok:?}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;

    let key = [
        ("pk", user_pk(&user)),
        (
            "sk",
            AttributeValue::S(format!("VERIF#{}", p.verification_id)),
        ),
    ];
    let db = &api.clients.dynamodb;
    let item = db
        .get_item()
        .table_name(&api.tables.main)
        .key(key[0].0, key[0].1.clone())
        .key(key[1].0, key[1].1.clone())
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the verification is stored");
    let expires_at = timestamp::parse(item["expires_at"].as_s().unwrap()).unwrap();
    db.update_item()
        .table_name(&api.tables.main)
        .key(key[0].0, key[0].1.clone())
        .key(key[1].0, key[1].1.clone())
        .update_expression("SET expires_at = :t")
        .expression_attribute_values(
            ":t",
            AttributeValue::S(timestamp::format(expires_at - TimeDelta::minutes(6))),
        )
        .send()
        .await
        .unwrap();

    assert_refused_with_fresh_face(&api, &user, &p, 422, "VERIFICATION_FAILED", "expired code")
        .await;
}

#[tokio::test]
async fn a_used_code_is_refused() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "SUBMIT_QUERY").await;
    let ok = submit(&api, &user, &new_key(), &p.submission(&face(&api, &user))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    clear_active_query(&api, &user).await;

    assert_refused_with_fresh_face(&api, &user, &p, 422, "VERIFICATION_FAILED", "reused code")
        .await;
}

#[tokio::test]
async fn a_view_report_code_does_not_submit() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    let p = Proofs::new(&api, &user, "VIEW_REPORT").await;
    assert_refused_with_fresh_face(
        &api,
        &user,
        &p,
        422,
        "VERIFICATION_FAILED",
        "VIEW_REPORT code",
    )
    .await;
}

#[tokio::test]
async fn another_users_verification_is_refused() {
    let api = Api::get().await;
    let owner = held_user(&api).await;
    let intruder = held_user(&api).await;
    let agreement = agreement_version(&api, &intruder).await;
    let p = Proofs::with_code(agreement, api.verification(&owner, "SUBMIT_QUERY").await);

    let owner_before = api.snapshot(&owner).await;
    assert_refused_with_fresh_face(
        &api,
        &intruder,
        &p,
        422,
        "VERIFICATION_FAILED",
        "another user's verification",
    )
    .await;
    assert_unchanged(
        &owner_before,
        &api.snapshot(&owner).await,
        "the owner's items",
    );

    // The owner's code is intact.
    let ok = submit(&api, &owner, &new_key(), &p.submission(&face(&api, &owner))).await;
    assert_eq!(ok.status, 202, "{ok:?}");
}

#[tokio::test]
async fn a_second_code_within_a_minute_gets_429_with_retry_after() {
    let api = Api::get().await;
    let user = held_user(&api).await;
    api.verification(&user, "SUBMIT_QUERY").await;
    let sent = sms_count(&api, &user).await;
    for purpose in ["SUBMIT_QUERY", "VIEW_REPORT"] {
        let before = api.snapshot(&user).await;
        let reply = request_code(&api, &user, purpose).await;
        assert_error(&reply, 429, "TOO_MANY_REQUESTS", purpose);
        let retry_after: u64 = reply
            .headers
            .get("retry-after")
            .expect("a Retry-After header")
            .to_str()
            .unwrap()
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(body(&reply)["error"]["retry_after_seconds"], retry_after);
        assert_unchanged(&before, &api.snapshot(&user).await, "429");
        assert_eq!(sms_count(&api, &user).await, sent, "no second SMS");
    }
}
